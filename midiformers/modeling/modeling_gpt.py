"""MidiGPT: a pre-norm decoder-only Transformer over MIDI tokens.

Absolute (learned) or rotary positions, attention through transformers' attention interface
(eager, sdpa, flex, flash), dynamic or static caches, compiled decoding, and left-padding-aware
positions, so a left-padded row of a batch gives the same logits as the same row alone.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
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
    RotaryEmbedding,
    SequenceClassificationHead,
    TokenClassificationHead,
    is_later_pipeline_stage,
    prepare_decoder,
)
from .configuration_gpt import MidiGPTConfig


class MidiGPTBlock(GradientCheckpointingLayer):
    """Pre-norm block: ``x + attn(LN(x))`` then ``x + ffn(LN(x))``, dropout on both branches."""

    def __init__(self, config: MidiGPTConfig, layer_idx: int):
        super().__init__()
        use_rotary = config.position_embedding_type == "rotary"
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = MidiSelfAttention(config, layer_idx, use_rotary=use_rotary)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MidiFeedForward(
            config.hidden_size, config.intermediate_size, config.hidden_act, config.hidden_dropout
        )
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        attended, _ = self.self_attn(
            self.attention_norm(hidden_states),
            attention_mask=attention_mask,
            position_embeddings=position_embeddings,
            cache=cache,
            **kwargs,
        )
        hidden_states = hidden_states + self.dropout(attended)
        return hidden_states + self.dropout(self.mlp(self.ffn_norm(hidden_states)))


class MidiGPTPreTrainedModel(PreTrainedModel):
    """Base class: the config class and the capabilities transformers reads (backends, compile)."""

    config_class = MidiGPTConfig
    config: MidiGPTConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MidiGPTBlock"]
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {
        "hidden_states": MidiGPTBlock,
        "attentions": OutputRecorder(MidiSelfAttention, index=1),
    }

    def get_position_embeddings(self) -> nn.Embedding | None:
        """The base model's learned position table (None with rotary positions)."""
        return self.model.get_position_embeddings()

    def resize_position_embeddings(self, new_num_position_embeddings: int) -> None:
        """Resize the base model's learned position table (see ``MidiGPTModel``)."""
        self.model.resize_position_embeddings(new_num_position_embeddings)


class MidiGPTModel(MidiGPTPreTrainedModel):
    """Token (+ absolute position) embeddings, ``num_hidden_layers`` blocks and a final norm."""

    def __init__(self, config: MidiGPTConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        # Checked again here: rope_parameters may have been set after the config was built.
        check_rope_scaling_needs_rotary(
            config, config.position_embedding_type == "rotary", "position_embedding_type"
        )
        if config.position_embedding_type == "absolute":
            self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
            self.rotary_emb = None
        else:
            self.embed_positions = None
            self.rotary_emb = RotaryEmbedding(config)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(
            [MidiGPTBlock(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def get_position_embeddings(self) -> nn.Embedding | None:
        """The learned position table (None with rotary positions)."""
        return self.embed_positions

    def resize_position_embeddings(self, new_num_position_embeddings: int) -> None:
        """Grow or shrink the learned position table to ``new_num_position_embeddings`` rows and
        set ``config.max_position_embeddings``: learned rows are kept, new rows initialised."""
        if self.embed_positions is None:
            raise ValueError(
                "resize_position_embeddings: position_embedding_type 'rotary' has no position "
                "table; rotary positions need no resizing"
            )
        old = self.embed_positions.weight
        self.config.max_position_embeddings = new_num_position_embeddings
        resized = nn.Embedding(new_num_position_embeddings, old.shape[1])
        resized.to(device=old.device, dtype=old.dtype)
        self._init_weights(resized)
        kept = min(new_num_position_embeddings, old.shape[0])
        with torch.no_grad():
            resized.weight[:kept] = old[:kept]
        self.embed_positions = resized

    def _check_positions(
        self, position_ids: torch.LongTensor, total_length: int | torch.Tensor, given: bool
    ) -> None:
        """Fail clearly when an absolute position falls outside the learned table.

        Positions derived from the mask never exceed ``total_length - 1``, so the exact check
        (a device synchronisation on GPUs) runs only when the sequence is longer than the table,
        or when positions were passed in and live on the CPU, where the check is free. Skipped
        inside a compiled graph, where it would be a data-dependent branch.
        """
        if torch.compiler.is_compiling():
            return
        limit = self.config.max_position_embeddings
        if int(total_length) <= limit and not (given and position_ids.device.type == "cpu"):
            return
        largest = int(position_ids.max())
        if largest >= limit:
            raise ValueError(
                f"position {largest} is beyond the learned position table: "
                f"max_position_embeddings is {limit}. Use shorter sequences, a model with a larger "
                f"max_position_embeddings, or position_embedding_type='rotary'."
            )

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
        positions_given = position_ids is not None
        inputs = prepare_decoder(
            self, input_ids, inputs_embeds, attention_mask, position_ids, cache, use_cache
        )
        hidden_states = inputs.inputs_embeds
        position_embeddings = None
        if self.rotary_emb is not None:
            position_embeddings = self.rotary_emb(hidden_states, inputs.position_ids)
        elif not is_later_pipeline_stage(self):  # a later stage's input already holds them
            total_length = inputs.past_length + hidden_states.shape[1]
            self._check_positions(inputs.position_ids, total_length, positions_given)
            hidden_states = hidden_states + self.embed_positions(inputs.position_ids)
        hidden_states = self.dropout(hidden_states)
        for layer in self.layers:
            hidden_states = layer(
                hidden_states,
                attention_mask=inputs.attention_mask,
                position_embeddings=position_embeddings,
                cache=inputs.cache,
                **kwargs,
            )
        return BaseModelOutputWithPast(
            last_hidden_state=self.norm(hidden_states), cache=inputs.cache
        )


class MidiGPTForCausalLM(MidiGPTPreTrainedModel, GenerationMixin):
    """MidiGPT with a language-modelling head (tied to the token embedding by default)."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: MidiGPTConfig):
        super().__init__(config)
        self.model = MidiGPTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

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
        """Next-token logits; with ``labels`` (``-100`` ignored) also the shifted cross-entropy."""
        outputs = self.model(
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


class MidiGPTForSequenceClassification(SequenceClassificationHead, MidiGPTPreTrainedModel):
    """MidiGPT with a linear head on the last real token: one label per piece (composer,
    genre, style ...)."""

    base_model_class = MidiGPTModel


class MidiGPTForTokenClassification(TokenClassificationHead, MidiGPTPreTrainedModel):
    """MidiGPT with a linear head on every token: one label per token (voice, hand, chord
    tag ...)."""

    base_model_class = MidiGPTModel


class MidiGPTForQuestionAnswering(QuestionAnsweringHead, MidiGPTPreTrainedModel):
    """MidiGPT with transformers' span-extraction head: start and end logits per token."""

    base_model_class = MidiGPTModel


__all__ = [
    "MidiGPTForCausalLM",
    "MidiGPTForQuestionAnswering",
    "MidiGPTForSequenceClassification",
    "MidiGPTForTokenClassification",
    "MidiGPTModel",
    "MidiGPTPreTrainedModel",
]
