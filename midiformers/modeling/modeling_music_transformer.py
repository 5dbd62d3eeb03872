"""Music Transformer (Huang et al., 2018): a decoder-only Transformer with relative self-attention.

The relative attention itself (learned embeddings per distance, clipped at
``max_relative_position``, and the memory-efficient skew) lives in ``_layers.RelativeSelfAttention``
so the Conformer can reuse it. This file stacks it into pre-norm blocks with a KV cache.
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

from ._layers import (
    MidiFeedForward,
    QuestionAnsweringHead,
    RelativeSelfAttention,
    SequenceClassificationHead,
    TokenClassificationHead,
    prepare_decoder,
)
from .configuration_music_transformer import MusicTransformerConfig


class MusicTransformerDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: relative self-attention then feed-forward, each with a residual."""

    def __init__(self, config: MusicTransformerConfig, layer_idx: int):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = RelativeSelfAttention(config, layer_idx)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MidiFeedForward(
            config.hidden_size, config.intermediate_size, config.hidden_act, config.hidden_dropout
        )
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        attended, _ = self.self_attn(
            self.self_attn_layer_norm(hidden_states), attention_mask, cache, **kwargs
        )
        hidden_states = hidden_states + self.dropout(attended)
        transformed = self.mlp(self.final_layer_norm(hidden_states))
        return hidden_states + self.dropout(transformed)


class MusicTransformerPreTrainedModel(PreTrainedModel):
    """Weight initialisation, loading and gradient-checkpointing plumbing for the Music Transformer.

    The default initialisation covers every weight: the relative embeddings are an
    ``nn.Embedding`` (normal, ``initializer_range``).
    """

    config_class = MusicTransformerConfig
    config: MusicTransformerConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MusicTransformerDecoderLayer"]
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {
        "hidden_states": MusicTransformerDecoderLayer,
        "attentions": OutputRecorder(RelativeSelfAttention, index=1),
    }


class MusicTransformerModel(MusicTransformerPreTrainedModel):
    """Token embedding, a stack of relative-attention blocks and a final LayerNorm.

    No absolute positions: order enters only through the relative attention, so left padding
    (which shifts queries and keys alike) changes nothing for the real tokens.
    """

    def __init__(self, config: MusicTransformerConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(
            MusicTransformerDecoderLayer(config, i) for i in range(config.num_hidden_layers)
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
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
        """Hidden states of the last block; ``position_ids`` are accepted and unused (relative)."""
        inputs = prepare_decoder(
            self, input_ids, inputs_embeds, attention_mask, position_ids, cache, use_cache
        )
        hidden_states = self.dropout(inputs.inputs_embeds)
        for layer in self.layers:
            hidden_states = layer(
                hidden_states, attention_mask=inputs.attention_mask, cache=inputs.cache, **kwargs
            )
        return BaseModelOutputWithPast(
            last_hidden_state=self.norm(hidden_states), cache=inputs.cache
        )


class MusicTransformerForCausalLM(MusicTransformerPreTrainedModel, GenerationMixin):
    """Music Transformer with a language-modelling head (next MIDI token), ready for ``generate``."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: MusicTransformerConfig):
        super().__init__(config)
        self.model = MusicTransformerModel(config)
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
        """Next-token logits (and the shifted cross-entropy when ``labels`` are given)."""
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


class MusicTransformerForSequenceClassification(
    SequenceClassificationHead, MusicTransformerPreTrainedModel
):
    """MusicTransformer with a linear head on the last real token: one label per piece (composer,
    genre, style ...)."""

    base_model_class = MusicTransformerModel


class MusicTransformerForTokenClassification(
    TokenClassificationHead, MusicTransformerPreTrainedModel
):
    """MusicTransformer with a linear head on every token: one label per token (voice, hand, chord
    tag ...)."""

    base_model_class = MusicTransformerModel


class MusicTransformerForQuestionAnswering(QuestionAnsweringHead, MusicTransformerPreTrainedModel):
    """MusicTransformer with transformers' span-extraction head: start and end logits per token."""

    base_model_class = MusicTransformerModel


__all__ = [
    "MusicTransformerForCausalLM",
    "MusicTransformerForQuestionAnswering",
    "MusicTransformerForSequenceClassification",
    "MusicTransformerForTokenClassification",
    "MusicTransformerModel",
    "MusicTransformerPreTrainedModel",
]
