"""LSTM event language model (the LSTM study): embedding -> stacked LSTM -> linear head.

During generation the recurrent state ``(h, c)`` of every layer is the cache, kept in a
:class:`MidiLSTMCache` so that ``generate`` feeds only the new token at each step and beam
search reorders the state like any other cache. Padding (``attention_mask == 0``), left or
right, never touches the state: the real tokens of each row are packed before the LSTM runs.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple, logging
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.output_capturing import capture_outputs

from ._layers import (
    QuestionAnsweringHead,
    SequenceClassificationHead,
    TokenClassificationHead,
    embed_inputs,
    resolve_use_cache,
)
from .configuration_lstm import MidiLSTMConfig

logger = logging.get_logger(__name__)


class MidiLSTMStateLayer(CacheLayerMixin):
    """Recurrent state of one LSTM layer: ``keys`` holds ``h`` and ``values`` holds ``c``.

    Both are ``(batch, hidden_size)`` and are replaced (not concatenated) at every update; the
    number of positions consumed so far is counted so ``get_seq_length`` behaves as for a KV cache.
    """

    is_sliding = False
    is_compileable = False
    is_croppable = False
    supports_early_init = False

    def __init__(self, **kwargs):
        super().__init__()
        self.seen_tokens = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.is_initialized = True

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        num_new_tokens: int = 0,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new ``(h, c)`` after ``num_new_tokens`` more positions were consumed."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys, self.values = key_states, value_states
        self.seen_tokens += num_new_tokens
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.seen_tokens + query_length, 0

    def get_seq_length(self) -> int:
        return self.seen_tokens

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.keys = self.values = None
        self.is_initialized = False
        self.seen_tokens = 0

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.is_initialized:
            self.keys = self.keys.index_select(0, beam_idx.to(self.keys.device))
            self.values = self.values.index_select(0, beam_idx.to(self.values.device))

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove == 0:
            return
        raise ValueError(
            "An LSTM state cannot be rolled back: it summarises every past token, so "
            f"crop({tokens_to_remove}) is impossible (assisted decoding is not supported)."
        )

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self.keys = self.keys.repeat_interleave(repeats, dim=0)
            self.values = self.values.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.keys = self.keys[indices, ...]
            self.values = self.values[indices, ...]


class MidiLSTMCache(Cache):
    """The ``(h, c)`` state of every LSTM layer, as a transformers ``Cache``.

    ``reorder_cache`` (beam search), ``batch_repeat_interleave`` / ``batch_select_indices`` and
    ``get_seq_length`` work as for attention caches; ``crop`` is impossible for a recurrence.
    """

    def __init__(self, config=None, num_hidden_layers: int | None = None):
        if num_hidden_layers is None:
            if config is None:
                raise ValueError("MidiLSTMCache needs a config or num_hidden_layers")
            num_hidden_layers = config.num_hidden_layers
        super().__init__(layers=[MidiLSTMStateLayer() for _ in range(num_hidden_layers)])

    def get_state(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(h, c)`` of layer ``layer_idx``, each ``(batch, hidden_size)``, or None before any token."""
        layer = self.layers[layer_idx]
        if not layer.is_initialized:
            return None
        return layer.keys, layer.values

    def update_state(
        self, hidden: torch.Tensor, cell: torch.Tensor, layer_idx: int, num_new_tokens: int
    ) -> None:
        """Replace the state of layer ``layer_idx`` after ``num_new_tokens`` more positions."""
        self.update(hidden, cell, layer_idx, num_new_tokens=num_new_tokens)


@dataclass
class PackingPlan:
    """How to move each row's real tokens to the front (for packing) and back.

    ``order[b, j]`` is the original position of the ``j``-th real token of row ``b`` (padding
    positions follow, in order); ``lengths`` counts the real tokens per row.
    """

    order: torch.LongTensor
    lengths: torch.LongTensor

    @classmethod
    def from_mask(cls, token_mask: torch.Tensor) -> PackingPlan:
        """Plan for a boolean ``(batch, seq_len)`` mask of the current tokens (True = real)."""
        order = torch.sort((~token_mask).to(torch.int8), dim=1, stable=True).indices
        return cls(order=order, lengths=token_mask.sum(dim=1))

    def run(
        self,
        lstm: nn.LSTM,
        hidden_states: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run ``lstm`` over the real tokens only; padded positions output zeros, state untouched."""
        batch, seq_len, _ = hidden_states.shape
        gather_in = self.order.unsqueeze(-1).expand(-1, -1, hidden_states.shape[-1])
        compact = hidden_states.gather(1, gather_in)
        # A row without real tokens still needs length 1 for packing; its result is discarded below.
        lengths = self.lengths.clamp(min=1).cpu()
        packed = pack_padded_sequence(compact, lengths, batch_first=True, enforce_sorted=False)
        packed_out, (h, c) = lstm(packed, state)
        output, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=seq_len)
        positions = torch.arange(seq_len, device=output.device)
        valid = positions.unsqueeze(0) < self.lengths.unsqueeze(1)
        output = output * valid.unsqueeze(-1).to(output.dtype)
        gather_out = self.order.unsqueeze(-1).expand(-1, -1, output.shape[-1])
        output = torch.zeros_like(output).scatter(1, gather_out, output)
        empty = (self.lengths == 0).view(1, batch, 1)
        if bool(empty.any()):
            previous_h, previous_c = state if state is not None else (torch.zeros_like(h),) * 2
            h = torch.where(empty, previous_h, h)
            c = torch.where(empty, previous_c, c)
        return output, (h, c)


@contextlib.contextmanager
def _native_lstm_kernel():
    """Switch off oneDNN (only that flag) while the block runs."""
    previous = torch.backends.mkldnn.set_flags(_enabled=False, _fp32_precision=None)
    try:
        yield
    finally:
        torch.backends.mkldnn.set_flags(_enabled=previous[0], _fp32_precision=None)


def _decode_step_kernel(hidden_states: torch.Tensor) -> contextlib.AbstractContextManager:
    """Use PyTorch's native LSTM kernel for single-token CPU steps.

    The oneDNN kernel that CPU LSTMs use by default pays a set-up cost on every call: at hidden
    512 one step takes ~9x longer than the native kernel on one thread (far more when threads
    contend), which dominates cached generation. On 16+ tokens (prompts, training) oneDNN is
    1.5-3x faster, so it is kept there.
    """
    if hidden_states.device.type == "cpu" and hidden_states.shape[1] == 1:
        return _native_lstm_kernel()
    return contextlib.nullcontext()


class MidiLSTMLayer(GradientCheckpointingLayer):
    """One LSTM layer followed by dropout; reads and writes its ``(h, c)`` in the cache.

    Each layer is its own checkpointing unit, so gradient checkpointing stores one activation
    tensor per layer instead of the LSTM's per-step gate activations.
    """

    def __init__(self, config: MidiLSTMConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        input_size = config.embedding_size if layer_idx == 0 else config.hidden_size
        self.lstm = nn.LSTM(input_size, config.hidden_size, num_layers=1, batch_first=True)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        packing: PackingPlan | None = None,
        cache: MidiLSTMCache | None = None,
    ) -> torch.Tensor:
        state = cache.get_state(self.layer_idx) if cache is not None else None
        if state is not None:
            state = (state[0].unsqueeze(0), state[1].unsqueeze(0))
        with _decode_step_kernel(hidden_states):
            if packing is None:
                output, (h, c) = self.lstm(hidden_states, state)
            else:
                output, (h, c) = packing.run(self.lstm, hidden_states, state)
        if cache is not None:
            cache.update_state(h[0], c[0], self.layer_idx, num_new_tokens=hidden_states.shape[1])
        return self.dropout(output)


class MidiLSTMPreTrainedModel(PreTrainedModel):
    """Weight initialisation and class attributes shared by the LSTM models."""

    config_class = MidiLSTMConfig
    config: MidiLSTMConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MidiLSTMLayer"]
    _is_stateful = True
    _can_record_outputs = {"hidden_states": MidiLSTMLayer}

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # The recurrent state lives in a MidiLSTMCache that forward creates; a DynamicCache cannot hold it.
        return False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's own initialisation of embeddings, LSTMs and linear layers (the study's setup).

        The transformers default (normal, std 0.02) suits normalised Transformers; an LSTM has no
        normalisation, and with inputs that small it stalls at the unigram loss for many steps.
        """
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, nn.LSTM):
            bound = 1.0 / math.sqrt(module.hidden_size)
            for param in module.parameters():
                init.uniform_(param, -bound, bound)
        elif isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1.0 / math.sqrt(module.in_features)
                init.uniform_(module.bias, -bound, bound)


def _resolve_cache(cache: Cache | None, config: MidiLSTMConfig) -> MidiLSTMCache:
    """The cache to use: the caller's MidiLSTMCache, or a new one (also replacing an empty foreign cache)."""
    if isinstance(cache, MidiLSTMCache):
        return cache
    if cache is None or not any(getattr(layer, "is_initialized", False) for layer in cache.layers):
        return MidiLSTMCache(config)
    raise TypeError(
        f"cache: MidiLSTM keeps its recurrent state in a MidiLSTMCache, got a filled {type(cache).__name__}"
    )


def _current_token_mask(
    attention_mask: torch.Tensor | None, batch: int, seq_len: int
) -> torch.Tensor | None:
    """Boolean mask of the current tokens, or None when none of them is padding."""
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2 or attention_mask.shape[0] != batch:
        raise ValueError(
            f"attention_mask must have shape (batch={batch}, past + current tokens), "
            f"got {tuple(attention_mask.shape)}"
        )
    if attention_mask.shape[1] < seq_len:
        raise ValueError(
            f"attention_mask covers {attention_mask.shape[1]} positions but {seq_len} tokens were given"
        )
    token_mask = attention_mask[:, -seq_len:].bool()
    return None if bool(token_mask.all()) else token_mask


class MidiLSTMModel(MidiLSTMPreTrainedModel):
    """Token embedding followed by ``num_hidden_layers`` LSTM layers; returns the last layer's output."""

    def __init__(self, config: MidiLSTMConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embedding_size)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.layers = nn.ModuleList(
            [MidiLSTMLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
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
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        """Run the LSTM stack.

        ``attention_mask`` (2-D, over past + current positions) marks padding: padded tokens do not
        change the state and output zeros. ``position_ids`` is accepted for API compatibility and
        ignored (a recurrence knows the order). With ``use_cache=False`` any ``cache`` is ignored and
        the state starts from zero.
        """
        given_embeds = inputs_embeds is not None
        inputs_embeds = embed_inputs(self, input_ids, inputs_embeds)
        if given_embeds and (
            inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.embedding_size
        ):
            raise ValueError(
                "inputs_embeds must have shape (batch, seq_len, embedding_size="
                f"{self.config.embedding_size}), got {tuple(inputs_embeds.shape)}"
            )
        batch, seq_len, _ = inputs_embeds.shape
        cache = _resolve_cache(cache, self.config) if resolve_use_cache(self, use_cache) else None
        token_mask = _current_token_mask(attention_mask, batch, seq_len)
        packing = PackingPlan.from_mask(token_mask) if token_mask is not None else None

        hidden_states = self.embedding_dropout(inputs_embeds)
        for layer in self.layers:
            hidden_states = layer(hidden_states, packing=packing, cache=cache)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, cache=cache)


class MidiLSTMForCausalLM(MidiLSTMPreTrainedModel, GenerationMixin):
    """LSTM language model with a linear head over the vocabulary.

    With ``tie_word_embeddings`` the head shares the embedding matrix; if ``embedding_size`` differs
    from ``hidden_size``, a bias-free projection to ``embedding_size`` precedes the tied head.
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: MidiLSTMConfig):
        super().__init__(config)
        self.model = MidiLSTMModel(config)
        if config.uses_output_projection:
            self.output_projection = nn.Linear(
                config.hidden_size, config.embedding_size, bias=False
            )
            head_input_size = config.embedding_size
        else:
            self.output_projection = None
            head_input_size = config.hidden_size
        self.lm_head = nn.Linear(head_input_size, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

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
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        """Next-token logits; with ``labels`` (``-100`` ignored, shifted inside) also the loss."""
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
        if self.output_projection is not None:
            hidden_states = self.output_projection(hidden_states)
        logits = self.lm_head(hidden_states)

        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs
            )
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, cache=outputs.cache, hidden_states=outputs.hidden_states
        )


class MidiLSTMForSequenceClassification(SequenceClassificationHead, MidiLSTMPreTrainedModel):
    """MidiLSTM with a linear head on the last real token: one label per piece (composer,
    genre, style ...)."""

    base_model_class = MidiLSTMModel


class MidiLSTMForTokenClassification(TokenClassificationHead, MidiLSTMPreTrainedModel):
    """MidiLSTM with a linear head on every token: one label per token (voice, hand, chord
    tag ...)."""

    base_model_class = MidiLSTMModel


class MidiLSTMForQuestionAnswering(QuestionAnsweringHead, MidiLSTMPreTrainedModel):
    """MidiLSTM with transformers' span-extraction head: start and end logits per token."""

    base_model_class = MidiLSTMModel


__all__ = [
    "MidiLSTMCache",
    "MidiLSTMForCausalLM",
    "MidiLSTMForQuestionAnswering",
    "MidiLSTMForSequenceClassification",
    "MidiLSTMForTokenClassification",
    "MidiLSTMModel",
    "MidiLSTMPreTrainedModel",
]
