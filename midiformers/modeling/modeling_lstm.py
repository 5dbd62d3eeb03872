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
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import (
    Cache,
    DynamicCache,
    LinearAttentionCacheLayerMixin,
    LinearAttentionLayer,
)
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


class MidiLSTMStateLayer(LinearAttentionLayer):
    """Recurrent state of one LSTM layer, in transformers' fixed-size recurrent-state layer.

    ``(h, c)`` is kept as one ``(batch, 2, hidden_size)`` recurrent state, copied in place at
    every update, so the layer is as static as transformers' ``StaticCache`` layers and a compiled
    decode step reads and writes it without a graph break. It also counts the positions consumed
    (a tensor, advanced in place) so ``get_seq_length`` and resuming ``generate`` from a returned
    cache work as for a KV cache.
    """

    def __init__(self, **kwargs):
        super().__init__(number_of_states=1)
        self.seen_tokens: torch.Tensor | None = None

    def update_recurrent_state(
        self, recurrent_states: torch.Tensor, state_idx: int = 0, num_new_tokens: int = 0, **kwargs
    ) -> torch.Tensor:
        """Store the new state after ``num_new_tokens`` more positions were consumed."""
        if self.seen_tokens is None:
            self.seen_tokens = torch.zeros((), dtype=torch.long, device=recurrent_states.device)
        self.seen_tokens.add_(num_new_tokens)
        return super().update_recurrent_state(recurrent_states, state_idx)

    def get_seq_length(self) -> int:
        return 0 if self.seen_tokens is None else int(self.seen_tokens)

    def reset(self) -> None:
        super().reset()
        if self.seen_tokens is not None:
            self.seen_tokens.zero_()

    @property
    def is_croppable(self) -> bool:
        return False

    @property
    def is_compileable(self) -> bool:
        # Compiled decoding is asked for with cache_implementation="static" (transformers' own
        # recurrent-state layers); the default cache keeps generate's default (eager) path.
        return False

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove == 0:
            return
        raise ValueError(
            "An LSTM state cannot be rolled back: it summarises every past token, so "
            f"crop({tokens_to_remove}) is impossible (assisted decoding is not supported)."
        )

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_recurrent_states_initialized[0]:
            self.recurrent_states[0] = self.recurrent_states[0].repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_recurrent_states_initialized[0]:
            self.recurrent_states[0] = self.recurrent_states[0][indices, ...]


class MidiLSTMCache(Cache):
    """The ``(h, c)`` state of every LSTM layer, as a transformers ``Cache``.

    ``reorder_cache`` (beam search), ``batch_repeat_interleave`` / ``batch_select_indices`` and
    ``get_seq_length`` work as for attention caches; ``crop`` is impossible for a recurrence.
    The model also runs on transformers' own ``DynamicCache`` / ``StaticCache`` built from its
    config (recurrent-state layers, ``config.layer_types``), which is what
    ``generate(cache_implementation="static")`` uses.
    """

    def __init__(self, config=None, num_hidden_layers: int | None = None):
        if num_hidden_layers is None:
            if config is None:
                raise ValueError("MidiLSTMCache needs a config or num_hidden_layers")
            num_hidden_layers = config.num_hidden_layers
        super().__init__(layers=[MidiLSTMStateLayer() for _ in range(num_hidden_layers)])

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.layers[layer_idx].get_seq_length()

    def get_state(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(h, c)`` of layer ``layer_idx``, each ``(batch, hidden_size)``, or None before any token."""
        state = read_state(self, layer_idx)
        return None if state is None else (state[:, 0], state[:, 1])


def read_state(cache: Cache, layer_idx: int) -> torch.Tensor | None:
    """The ``(batch, 2, hidden_size)`` state of layer ``layer_idx``, or None before the first token.

    Read from the layer itself: ``Cache.get_recurrent_state`` only answers for layers that also
    hold a convolution state. After ``reset()`` the state is zeros, which is also where an LSTM
    starts.
    """
    layer = cache.layers[layer_idx]
    if not layer.is_recurrent_states_initialized[0]:
        return None
    return layer.recurrent_states[0]


class LSTMKernel(nn.Module):
    """One unidirectional LSTM layer: the parameters of ``nn.LSTM(num_layers=1)`` under the same
    names (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``, so checkpoints load
    unchanged) and the same kernel (``torch._VF.lstm``, what ``nn.LSTM`` calls).

    Not an ``nn.LSTM`` because ``torch.compile`` refuses to trace through any ``nn.RNNBase``
    module, even to read its weights; compiled graphs use :meth:`step_by_step` instead.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size))

    def weights(self) -> list[torch.Tensor]:
        return [self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0]

    def forward(
        self,
        inputs: torch.Tensor | PackedSequence,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor | PackedSequence, tuple[torch.Tensor, torch.Tensor]]:
        """Batch-first ``(batch, seq, input_size)`` or packed input, state ``(h, c)`` each
        ``(1, batch, hidden_size)`` (zeros when None); returns what ``nn.LSTM`` returns."""
        packed = isinstance(inputs, PackedSequence)
        data = inputs.data if packed else inputs
        batch = int(inputs.batch_sizes[0]) if packed else data.shape[0]
        if state is None:
            zeros = data.new_zeros(1, batch, self.hidden_size)
            state = (zeros, zeros)
        elif packed and inputs.sorted_indices is not None:
            state = tuple(s.index_select(1, inputs.sorted_indices) for s in state)
        if packed:
            output, h, c = torch._VF.lstm(
                data, inputs.batch_sizes, state, self.weights(), True, 1, 0.0, self.training, False
            )
            if inputs.unsorted_indices is not None:
                h, c = (s.index_select(1, inputs.unsorted_indices) for s in (h, c))
            output = PackedSequence(
                output, inputs.batch_sizes, inputs.sorted_indices, inputs.unsorted_indices
            )
            return output, (h, c)
        output, h, c = torch._VF.lstm(
            data, state, self.weights(), True, 1, 0.0, self.training, False, True
        )
        return output, (h, c)

    def step_by_step(
        self,
        hidden_states: torch.Tensor,
        state: torch.Tensor | None,
        token_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The recurrence written out one position at a time, for compiled graphs.

        The same gates (PyTorch's order: input, forget, cell, output) in plain tensor ops trace
        into one graph, where the fused kernel and packing (lengths on the host) cannot; padded
        positions (``token_mask`` False) keep the state and output zeros, as packing does.
        ``state`` is ``(batch, 2, hidden_size)``; returns the output and the final ``(h, c)``.
        """
        batch, length, _ = hidden_states.shape
        if state is None:
            h = c = hidden_states.new_zeros(batch, self.hidden_size)
        else:
            h, c = state[:, 0], state[:, 1]
        inputs = F.linear(hidden_states, self.weight_ih_l0, self.bias_ih_l0)
        outputs = []
        for position in range(length):
            gates = inputs[:, position] + F.linear(h, self.weight_hh_l0, self.bias_hh_l0)
            in_gate, forget_gate, cell_gate, out_gate = gates.chunk(4, dim=-1)
            new_c = forget_gate.sigmoid() * c + in_gate.sigmoid() * cell_gate.tanh()
            new_h = out_gate.sigmoid() * new_c.tanh()
            if token_mask is None:
                h, c = new_h, new_c
                outputs.append(new_h)
            else:
                real = token_mask[:, position, None]
                h, c = torch.where(real, new_h, h), torch.where(real, new_c, c)
                outputs.append(new_h * real.to(new_h.dtype))
        return torch.stack(outputs, dim=1), (h, c)


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
        lstm: LSTMKernel,
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
        self.lstm = LSTMKernel(input_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        packing: PackingPlan | None = None,
        cache: Cache | None = None,
        token_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        state = read_state(cache, self.layer_idx) if cache is not None else None
        if torch.compiler.is_compiling():
            output, (h, c) = self.lstm.step_by_step(hidden_states, state, token_mask)
        else:
            if state is not None:
                state = (
                    state[:, 0].unsqueeze(0).contiguous(),
                    state[:, 1].unsqueeze(0).contiguous(),
                )
            with _decode_step_kernel(hidden_states):
                if packing is None:
                    output, (h, c) = self.lstm(hidden_states, state)
                else:
                    output, (h, c) = packing.run(self.lstm, hidden_states, state)
            h, c = h[0], c[0]
        if cache is not None:
            cache.update_recurrent_state(
                torch.stack((h, c), dim=1), self.layer_idx, num_new_tokens=hidden_states.shape[1]
            )
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

    _can_compile_fullgraph = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's own initialisation of embeddings, LSTMs and linear layers (the study's setup).

        The transformers default (normal, std 0.02) suits normalised Transformers; an LSTM has no
        normalisation, and with inputs that small it stalls at the unigram loss for many steps.
        """
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, LSTMKernel):
            bound = 1.0 / math.sqrt(module.hidden_size)
            for param in module.parameters():
                init.uniform_(param, -bound, bound)
        elif isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1.0 / math.sqrt(module.in_features)
                init.uniform_(module.bias, -bound, bound)


def _resolve_cache(cache: Cache | None, config: MidiLSTMConfig) -> Cache:
    """The cache to run on: the caller's recurrent-state cache (a ``MidiLSTMCache``, or
    transformers' ``DynamicCache`` / ``StaticCache`` built from this config), else a new
    ``MidiLSTMCache`` (also in place of an empty cache of another layout)."""
    if cache is None or isinstance(cache, MidiLSTMCache):
        return cache if cache is not None else MidiLSTMCache(config)
    layers = cache.layers
    if len(layers) == config.num_hidden_layers and all(
        isinstance(layer, LinearAttentionCacheLayerMixin) for layer in layers
    ):
        return cache
    if not any(getattr(layer, "is_initialized", False) for layer in layers):
        return MidiLSTMCache(config)
    raise TypeError(
        f"cache: MidiLSTM keeps its recurrent state in a MidiLSTMCache (or a cache built from its "
        f"config), got a filled {type(cache).__name__} of attention layers"
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
    if torch.compiler.is_compiling():
        return token_mask  # no data-dependent branch in a graph: the step loop takes any mask
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
        packing = None
        if token_mask is not None and not torch.compiler.is_compiling():
            packing = PackingPlan.from_mask(token_mask)

        hidden_states = self.embedding_dropout(inputs_embeds)
        for layer in self.layers:
            hidden_states = layer(
                hidden_states, packing=packing, cache=cache, token_mask=token_mask
            )
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

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        """transformers' caches, except that the default dynamic one is a :class:`MidiLSTMCache`
        (which also counts positions, so ``generate`` can resume from it); a static cache is
        transformers' ``StaticCache`` of recurrent-state layers, which compiled decoding needs."""
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)
        cache = model_kwargs.get("cache")
        if type(cache) is DynamicCache and not getattr(cache, "_is_user_defined", False):
            model_kwargs["cache"] = MidiLSTMCache(self.config)

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        cache: Cache | None = None,
        is_first_iteration: bool | None = False,
        **kwargs,
    ) -> dict:
        """transformers' preparation, plus two things a recurrence needs.

        Resuming from a returned :class:`MidiLSTMCache` feeds only the positions it has not
        consumed (transformers cannot tell for recurrent states). A cached decode step drops the
        attention mask: its one new token is always real, and a mask that grows by a column per
        step would make a compiled step recompile every time.
        """
        if is_first_iteration and next_sequence_length is None and isinstance(cache, MidiLSTMCache):
            seen = cache.get_seq_length()
            if 0 < seen < input_ids.shape[1]:
                next_sequence_length = input_ids.shape[1] - seen
        model_inputs = super().prepare_inputs_for_generation(
            input_ids,
            next_sequence_length=next_sequence_length,
            cache=cache,
            is_first_iteration=is_first_iteration,
            **kwargs,
        )
        if cache is not None and next_sequence_length == 1 and not is_first_iteration:
            model_inputs.pop("attention_mask", None)
        return model_inputs

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
