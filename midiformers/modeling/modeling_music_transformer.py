"""Music Transformer (Huang et al., 2018): a decoder-only Transformer with relative self-attention.

The relative attention itself (learned embeddings per distance, clipped at
``max_relative_position``, and the memory-efficient skew) lives in ``_layers.RelativeSelfAttention``
so the Conformer can reuse it. This file stacks it into pre-norm blocks with a KV cache.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils import logging
from transformers.utils.deprecation import deprecate_kwarg

from ._layers import MidiFeedForward, RelativeSelfAttention, build_attention_mask
from .configuration_music_transformer import MusicTransformerConfig

logger = logging.get_logger(__name__)


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
        use_cache: bool | None = False,
    ) -> torch.Tensor:
        attended = self.self_attn(self.self_attn_layer_norm(hidden_states), attention_mask, cache)
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

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
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
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(
                "MusicTransformerModel needs exactly one of input_ids or inputs_embeds"
            )
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        use_cache = self._resolve_use_cache(use_cache)
        if not use_cache:
            cache = None
        elif cache is None:
            cache = DynamicCache(config=self.config)
        past_length = cache.get_seq_length() if cache is not None else 0
        mask = build_attention_mask(
            attention_mask,
            inputs_embeds.shape[1],
            past_length,
            inputs_embeds.dtype,
            inputs_embeds.device,
        )
        hidden_states = self.dropout(inputs_embeds)
        for layer in self.layers:
            hidden_states = layer(
                hidden_states, attention_mask=mask, cache=cache, use_cache=use_cache
            )
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states), cache=cache)

    def _resolve_use_cache(self, use_cache: bool | None) -> bool:
        """Config default, switched off while gradient checkpointing recomputes the blocks."""
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            logger.warning_once("use_cache=True is incompatible with gradient checkpointing; off.")
            use_cache = False
        return bool(use_cache)


class MusicTransformerForCausalLM(MusicTransformerPreTrainedModel, GenerationMixin):
    """Music Transformer with a language-modelling head (next MIDI token), ready for ``generate``."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: MusicTransformerConfig):
        super().__init__(config)
        self.model = MusicTransformerModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
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
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache)


__all__ = [
    "MusicTransformerForCausalLM",
    "MusicTransformerModel",
    "MusicTransformerPreTrainedModel",
]
