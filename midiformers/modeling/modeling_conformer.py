"""Causal Conformer-lite MIDI language model (Gulati et al., 2020, made autoregressive).

Each block is macaron-shaped: half-step feed-forward, causal multi-head self-attention (rotary
or Music-Transformer relative positions), a causal convolution module, a second half-step feed-forward and a final LayerNorm. During
generation a hybrid `DynamicCache` holds, per block, the attention keys/values and the last
`conv_kernel_size - 1` frames seen by the depthwise convolution, so cached decoding gives the
same outputs as running the whole sequence again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils import can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from ._config_fields import check_rope_scaling_needs_rotary
from ._layers import (
    MidiFeedForward,
    MidiSelfAttention,
    QuestionAnsweringHead,
    RelativeSelfAttention,
    RotaryEmbedding,
    SequenceClassificationHead,
    TokenClassificationHead,
    prepare_decoder,
)
from .configuration_conformer import MidiConformerConfig


class MidiConformerConvModule(nn.Module):
    """Causal Conformer convolution module.

    LayerNorm -> pointwise (2·hidden) + GLU -> causal depthwise conv -> LayerNorm -> Swish ->
    pointwise (the block applies the dropout on this residual branch). The paper's BatchNorm would mix statistics over time (and over the
    batch), leaking future frames into the past; a LayerNorm over channels normalises every
    frame on its own, so it is causal and identical in training and generation.
    """

    def __init__(self, config: MidiConformerConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.kernel_size = config.conv_kernel_size
        hidden_size = config.hidden_size
        self.layer_norm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.pointwise_in = nn.Linear(hidden_size, 2 * hidden_size)
        self.depthwise = nn.Conv1d(
            hidden_size, hidden_size, kernel_size=self.kernel_size, groups=hidden_size
        )
        self.depthwise_norm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.act = ACT2FN["silu"]
        self.pointwise_out = nn.Linear(hidden_size, hidden_size)

    def _depthwise(
        self, frames: torch.Tensor, length: int, position_ids: torch.LongTensor | None = None
    ) -> torch.Tensor:
        """Depthwise conv of ``(batch, hidden, length + K - 1)`` frames into ``length`` outputs.

        A decode step has exactly one window: a multiply-sum is far cheaper there than the
        general convolution kernel, which dominates the cost of a step on CPU otherwise.
        With ``position_ids`` given, no output reaches back past its sequence's position 0
        (:meth:`_depthwise_within_sequences`).
        """
        if length == 1:
            weight = self.depthwise.weight.squeeze(1)
            return (frames * weight).sum(-1, keepdim=True) + self.depthwise.bias[:, None]
        if position_ids is not None:
            return self._depthwise_within_sequences(frames, length, position_ids)
        return self.depthwise(frames.contiguous())

    def _depthwise_within_sequences(
        self, frames: torch.Tensor, length: int, position_ids: torch.LongTensor
    ) -> torch.Tensor:
        """The depthwise conv, one kernel tap at a time, each tap masked where it would read a
        frame before the current sequence began (``distance > position``).

        Sequences packed into one row (padding-free batches, where positions restart at 0)
        thus stay independent, as in the attention; a row holding one sequence gives the
        plain convolution. Backward keeps only views of ``frames`` and the small masks.
        """
        weight = self.depthwise.weight.squeeze(1)
        positions = position_ids[:, None, -length:]
        output = self.depthwise.bias[:, None].to(frames.dtype)
        for tap in range(self.kernel_size):
            term = frames[..., tap : tap + length] * weight[:, tap, None]
            distance = self.kernel_size - 1 - tap
            if distance:
                term = term * (positions >= distance).to(term.dtype)
            output = output + term
        return output

    def forward(
        self,
        hidden_states: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        position_ids: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        """Convolve ``(batch, length, hidden)`` causally; ``padding_mask`` is 1 on real tokens.

        ``position_ids`` are the caller's positions, if any: where they restart at 0 (packed
        sequences) the convolution does not see the frames of the previous sequence.
        """
        length = hidden_states.shape[1]
        frames = F.glu(self.pointwise_in(self.layer_norm(hidden_states)), dim=-1)
        if padding_mask is not None:
            # Padded frames become zeros, exactly the causal zero context of an unpadded row.
            frames = frames * padding_mask[:, :, None].to(frames.dtype)
        frames = frames.transpose(1, 2)
        if cache is not None:
            # Returns the cached K-1 frames followed by the new ones (only the new ones at prefill).
            frames = cache.update_conv_state(
                frames, self.layer_idx, conv_kernel_size=self.kernel_size - 1
            )
        # Exactly K - 1 frames of context: zeros at the start of the sequence, and only the tail
        # when a cache that records its past (assisted decoding) returns more.
        window = length + self.kernel_size - 1
        if frames.shape[-1] < window:
            frames = F.pad(frames, (window - frames.shape[-1], 0))
        frames = frames[..., -window:]
        frames = self._depthwise(frames, length, position_ids).transpose(1, 2)
        frames = self.act(self.depthwise_norm(frames))
        return self.pointwise_out(frames)


class MidiConformerBlock(GradientCheckpointingLayer):
    """Macaron Conformer block: ½ FFN, self-attention, convolution, ½ FFN, LayerNorm."""

    def __init__(self, config: MidiConformerConfig, layer_idx: int):
        super().__init__()
        hidden_size, eps = config.hidden_size, config.layer_norm_eps
        self.ffn_in_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.ffn_in = MidiFeedForward(
            hidden_size, config.intermediate_size, config.hidden_act, config.hidden_dropout
        )
        self.attn_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.use_rotary = config.attention_type == "rotary"
        if self.use_rotary:
            self.self_attn = MidiSelfAttention(config, layer_idx, use_rotary=True)
        else:
            self.self_attn = RelativeSelfAttention(config, layer_idx)
        self.conv_module = MidiConformerConvModule(config, layer_idx)
        self.ffn_out_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.ffn_out = MidiFeedForward(
            hidden_size, config.intermediate_size, config.hidden_act, config.hidden_dropout
        )
        self.final_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def _dropout(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Residual-branch dropout, skipped outright at inference (cheaper per decode step)."""
        return self.dropout(hidden_states) if self.training else hidden_states

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        position_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        half_step = self._dropout(self.ffn_in(self.ffn_in_norm(hidden_states)))
        hidden_states = hidden_states.add(half_step, alpha=0.5)
        rotary = {"position_embeddings": position_embeddings} if self.use_rotary else {}
        attended, _ = self.self_attn(
            self.attn_norm(hidden_states),
            attention_mask=attention_mask,
            cache=cache,
            **rotary,
            **kwargs,
        )
        hidden_states = hidden_states + self._dropout(attended)
        convolved = self.conv_module(
            hidden_states, padding_mask=padding_mask, cache=cache, position_ids=position_ids
        )
        hidden_states = hidden_states + self._dropout(convolved)
        half_step = self._dropout(self.ffn_out(self.ffn_out_norm(hidden_states)))
        hidden_states = hidden_states.add(half_step, alpha=0.5)
        return self.final_norm(hidden_states)


class MidiConformerPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading glue shared by the Conformer models."""

    config_class = MidiConformerConfig
    config: MidiConformerConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MidiConformerBlock"]
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_flash_attn = True  # rotary attention only: relative attention raises
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {
        "hidden_states": MidiConformerBlock,
        "attentions": [
            OutputRecorder(MidiSelfAttention, index=1),
            OutputRecorder(RelativeSelfAttention, index=1),
        ],
    }


class MidiConformerModel(MidiConformerPreTrainedModel):
    """Stack of causal Conformer blocks over token embeddings (no language-model head)."""

    def __init__(self, config: MidiConformerConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.dropout = nn.Dropout(config.hidden_dropout)
        # Checked again here: rope_parameters may have been set after the config was built.
        check_rope_scaling_needs_rotary(config, config.attention_type == "rotary", "attention_type")
        self.rotary_emb = None
        if config.attention_type == "rotary":
            self.rotary_emb = RotaryEmbedding(config)
        self.layers = nn.ModuleList(
            MidiConformerBlock(config, layer_idx) for layer_idx in range(config.num_hidden_layers)
        )
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """Hidden states of the last block.

        ``position_ids`` place the rotary attention, and where they restart at 0 they separate
        sequences packed into one row (padding-free batches) in attention and convolution alike.
        """
        given_positions = position_ids
        inputs = prepare_decoder(
            self, input_ids, inputs_embeds, attention_mask, position_ids, cache, use_cache
        )
        position_embeddings = None
        if self.rotary_emb is not None:
            position_embeddings = self.rotary_emb(inputs.inputs_embeds, inputs.position_ids)
        hidden_states = self.dropout(inputs.inputs_embeds)
        for block in self.layers:
            hidden_states = block(
                hidden_states,
                attention_mask=inputs.attention_mask,
                padding_mask=inputs.padding_mask,
                position_embeddings=position_embeddings,
                cache=inputs.cache,
                position_ids=given_positions,
                **kwargs,
            )
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, cache=inputs.cache)


class MidiConformerForCausalLM(MidiConformerPreTrainedModel, GenerationMixin):
    """Conformer-lite with a next-token head; generates through `GenerationMixin`."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: MidiConformerConfig):
        super().__init__(config)
        self.model = MidiConformerModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Next-token logits; with ``labels`` (-100 ignored) also the shifted cross-entropy."""
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs
            )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class MidiConformerForSequenceClassification(
    SequenceClassificationHead, MidiConformerPreTrainedModel
):
    """MidiConformer with a linear head on the last real token: one label per piece (composer,
    genre, style ...)."""

    base_model_class = MidiConformerModel


class MidiConformerForTokenClassification(TokenClassificationHead, MidiConformerPreTrainedModel):
    """MidiConformer with a linear head on every token: one label per token (voice, hand, chord
    tag ...)."""

    base_model_class = MidiConformerModel


class MidiConformerForQuestionAnswering(QuestionAnsweringHead, MidiConformerPreTrainedModel):
    """MidiConformer with transformers' span-extraction head: start and end logits per token."""

    base_model_class = MidiConformerModel


__all__ = [
    "MidiConformerForCausalLM",
    "MidiConformerForQuestionAnswering",
    "MidiConformerForSequenceClassification",
    "MidiConformerForTokenClassification",
    "MidiConformerModel",
    "MidiConformerPreTrainedModel",
]
