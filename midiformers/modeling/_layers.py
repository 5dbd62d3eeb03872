"""Building blocks shared by the midiformers architectures.

This file is copied next to each modeling file when a model is saved with remote code,
so it must only import installed libraries (torch, transformers), never midiformers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.distributed.pipeline_parallel import PipelineIdentityLayer
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import (
    GenericForQuestionAnswering,
    GenericForSequenceClassification,
    GenericForTokenClassification,
)
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import logging

logger = logging.get_logger(__name__)


def mask_min(dtype: torch.dtype) -> float:
    """Large finite negative number used for masked attention scores (no NaN on empty rows)."""
    return torch.finfo(dtype).min


def position_ids_from_mask(
    attention_mask: torch.Tensor | None, past_length: int, query_length: int, device: torch.device
) -> torch.LongTensor:
    """Positions of the current tokens, counting only real tokens so left padding is ignored."""
    if attention_mask is None:
        return torch.arange(past_length, past_length + query_length, device=device).unsqueeze(0)
    positions = attention_mask.long().cumsum(-1) - 1
    positions = positions.clamp(min=0)
    return positions[:, -query_length:]


def rope_parameters(config) -> dict:
    """The config's ``rope_parameters`` (transformers' RoPE settings: ``rope_type``, ``factor``
    ...), or plain RoPE with ``config.rope_theta`` when the config has none."""
    parameters = getattr(config, "rope_parameters", None)
    if parameters:
        return parameters
    return {"rope_type": "default", "rope_theta": getattr(config, "rope_theta", 10000.0)}


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al. 2021), the way transformers' Llama builds it.

    ``config.rope_parameters`` selects any of transformers' RoPE types (``"linear"``,
    ``"dynamic"``, ``"yarn"``, ``"longrope"``, ``"llama3"``) to stretch a model past its training
    length; without it, plain RoPE with base ``config.rope_theta``. The frequencies are
    non-persistent buffers that transformers' ``_init_weights`` refills after loading.
    ``forward(x, position_ids)`` returns ``(cos, sin)`` in ``x``'s dtype.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.max_seq_len_cached = self.original_max_seq_len = config.max_position_embeddings
        self.rope_type = rope_parameters(config).get("rope_type", "default")
        init_fn = self.compute_default_rope_parameters
        if self.rope_type != "default":
            init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        inv_freq, self.attention_scaling = init_fn(config)
        self.inv_freq = nn.Buffer(inv_freq, persistent=False)
        self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(
        config, device=None, **kwargs
    ) -> tuple[torch.Tensor, float]:
        """Inverse frequencies of plain RoPE for one attention head (scaling factor 1)."""
        head_dim = config.hidden_size // config.num_attention_heads
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
        base = rope_parameters(config)["rope_theta"]
        exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).to(device, torch.float)
        return 1.0 / (base ** (exponents / head_dim)), 1.0

    @dynamic_rope_update
    def forward(
        self, x: torch.Tensor, position_ids: torch.LongTensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.inv_freq.to(device=x.device, dtype=torch.float)
        freqs = position_ids[..., None].float() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(x.dtype), sin.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` of shape ``(batch, heads, seq, head_dim)`` by positions given as cos/sin."""
    cos = cos.unsqueeze(1)
    sin = sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin


class MidiFeedForward(nn.Module):
    """Position-wise feed-forward: Linear -> activation -> dropout -> Linear."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str, dropout: float):
        super().__init__()
        self.fc_in = nn.Linear(hidden_size, intermediate_size)
        self.act = ACT2FN[hidden_act]
        self.fc_out = nn.Linear(intermediate_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.dropout(self.act(self.fc_in(hidden_states))))


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    position_bias: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention in plain PyTorch, the backend that returns the attention weights.

    ``position_bias`` (relative positions) is added to the scores like in the sdpa and flex
    backends of transformers; ``attention_mask`` is additive (float) or boolean (True = keep).
    """
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if position_bias is not None:
        scores = scores + position_bias
    if attention_mask is not None:
        attention_mask = attention_mask[:, :, :, : key.shape[-2]]
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, mask_min(scores.dtype))
        else:
            scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


def attention_function(config) -> Callable:
    """The attention backend ``config._attn_implementation`` selects (eager, sdpa, flex, ...)."""
    return ALL_ATTENTION_FUNCTIONS.get_interface(
        config._attn_implementation, eager_attention_forward
    )


def split_heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """``(..., length, heads * head_dim) -> (..., heads, length, head_dim)``.

    The head count is read from the tensor, never from the config: under tensor parallelism the
    q/k/v projections are split by output rows (``"colwise"``), so each process holds only its
    share of the heads, as in transformers' Llama.
    """
    if x.shape[-1] % head_dim:
        raise ValueError(
            f"the attention projection gives {x.shape[-1]} features, not a whole number of heads "
            f"of {head_dim}: with tensor parallelism, num_attention_heads must be a multiple of "
            "the number of processes"
        )
    return x.view(*x.shape[:-1], -1, head_dim).transpose(-3, -2)


class MidiSelfAttention(nn.Module):
    """Multi-head self-attention with an optional rotary embedding and a KV cache.

    The backend is transformers' attention interface: ``attn_implementation`` = ``"eager"``
    (returns the weights), ``"sdpa"``, ``"flex_attention"`` or a flash kernel where installed.
    Returns ``(output, weights)``; the weights are None except with eager attention. The head
    count follows the projections' outputs, so the module runs unchanged on the heads that
    tensor parallelism gives one process (q/k/v ``"colwise"``, ``o_proj`` ``"rowwise"``).
    """

    def __init__(self, config, layer_idx: int, use_rotary: bool = False, is_causal: bool = True):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = is_causal
        bias = getattr(config, "attention_bias", True)
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.use_rotary = use_rotary

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache=None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        query = split_heads(self.q_proj(hidden_states), self.head_dim)
        key = split_heads(self.k_proj(hidden_states), self.head_dim)
        value = split_heads(self.v_proj(hidden_states), self.head_dim)
        if self.use_rotary:
            cos, sin = position_embeddings
            query = apply_rotary(query, cos, sin)
            key = apply_rotary(key, cos, sin)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        output, weights = attention_function(self.config)(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        output = output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(output), weights


def relative_embeddings_by_distance(
    table: torch.Tensor, key_length: int, head_dim: int, max_distance: int
) -> torch.Tensor:
    """Gather ``(heads, key_length, head_dim)`` relative embeddings for distances
    ``key_length - 1, ..., 1, 0`` from a ``(distances, heads * head_dim)`` table whose row ``d``
    holds distance ``d``, clipping distances beyond ``max_distance`` (the table needs
    ``min(key_length, max_distance + 1)`` rows). The head count is the table's width over
    ``head_dim``. Costs O(L·D) memory, never O(L²·D).
    """
    distances = torch.arange(key_length - 1, -1, -1, device=table.device).clamp(max=max_distance)
    embeddings = table[distances].view(key_length, -1, head_dim)
    return embeddings.transpose(0, 1)


class RelativePositionEmbedding(nn.Embedding):
    """The learned relative-position table of one attention layer: row ``d`` holds distance
    ``d`` (``0 .. max_relative_position``), ``heads * head_dim`` wide in the heads' order of the
    q/k/v projections, or ``head_dim`` wide when the heads share it.

    ``forward(num_distances)`` returns the rows of distances ``0 .. num_distances - 1`` (a view,
    no copy). The attention reads the table through this call, not through ``.weight``, so that
    under tensor parallelism transformers' ``"local_params"`` style hands each process the
    columns of its own heads (the per-head table is split by columns, ``"embedding_colwise"``,
    like the heads). An ``nn.Embedding`` so that transformers initialises it like one.
    """

    def forward(self, num_distances: int) -> torch.Tensor:
        return self.weight[:num_distances]


def skew_relative_logits(logits: torch.Tensor) -> torch.Tensor:
    """The "skew" of Huang et al. (2018), generalised to queries that follow cached keys.

    ``logits[..., i, r]`` is query ``i``'s score against the embedding of distance ``K - 1 - r``
    (``K`` keys, the last ``Q`` of which are the queries). Returns ``out[..., i, j]`` = the score
    for distance ``K - Q + i - j``, i.e. the query-key distance, by padding one column, reshaping
    and slicing (no index tensor, no extra O(Q·K·D) memory). Entries with ``j > K - Q + i``
    (future keys) hold arbitrary values and must be masked.
    """
    *batch, query_length, key_length = logits.shape
    if query_length == 1:
        return logits
    padded = F.pad(logits, (1, 0)).reshape(*batch, query_length * (key_length + 1))
    return padded[..., query_length:].reshape(*batch, query_length, key_length)


class RelativeSelfAttention(nn.Module):
    """Causal multi-head self-attention with learned relative position logits (Music Transformer).

    Scores are ``(q·k + q·E[clip(i - j)]) / sqrt(d)`` with one embedding ``E[d]`` per distance
    ``0 .. max_relative_position`` (per head, or shared across heads when
    ``config.shared_relative_embeddings``). Without a cache the relative logits go through the
    memory-efficient skew; with a cache (dynamic or static) they are looked up by the distance
    between each query's cache slot and each key's, which also covers a static cache whose
    keys run past the queries. Left padding shifts queries and keys alike, so distances stay
    right. The logits reach the attention backend as transformers' ``position_bias``: an
    additive score bias for eager, SDPA's float mask and flex attention's ``score_mod``.

    Config fields read: ``hidden_size``, ``num_attention_heads``, ``attention_dropout``,
    ``max_relative_position`` (defaults to ``max_position_embeddings``) and optionally
    ``shared_relative_embeddings`` and ``attention_bias``.

    Like :class:`MidiSelfAttention`, the head count follows the tensors: under tensor
    parallelism a process holds its heads' q/k/v rows and, for per-head relative embeddings,
    the same heads' columns of the table (a shared table stays whole on every process).
    """

    is_causal = True

    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.max_relative_position = getattr(
            config, "max_relative_position", config.max_position_embeddings
        )
        shared = getattr(config, "shared_relative_embeddings", False)
        num_relative_heads = 1 if shared else config.num_attention_heads
        bias = getattr(config, "attention_bias", True)
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.relative_embeddings = RelativePositionEmbedding(
            self.max_relative_position + 1, num_relative_heads * self.head_dim
        )

    def relative_logits(
        self,
        query: torch.Tensor,
        key_length: int,
        query_offset: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unscaled ``(batch, heads, Q, K)`` relative logits.

        ``query_offset`` is the key slot of the first query; None means the queries end the
        ``K`` keys. Several such queries use the skew; otherwise (a decode step, or a cache
        whose slots run past the queries) the scores are looked up by distance, which costs
        O(min(K, max_relative_position)·D) per query.
        """
        if query_offset is None and query.shape[-2] > 1:
            embeddings = relative_embeddings_by_distance(
                self.relative_embeddings(min(key_length, self.max_relative_position + 1)),
                key_length,
                self.head_dim,
                self.max_relative_position,
            )
            return skew_relative_logits(self._per_head_matmul(query, embeddings))
        if query_offset is None:
            query_offset = key_length - query.shape[-2]
        return self._relative_logits_by_distance(query, key_length, query_offset)

    def _relative_logits_by_distance(
        self, query: torch.Tensor, key_length: int, query_offset: int | torch.Tensor
    ) -> torch.Tensor:
        """One dot product per distance, then a gather per (query, key) pair."""
        num_distances = min(key_length, self.max_relative_position + 1)
        table = self.relative_embeddings(num_distances)
        table = table.view(num_distances, -1, self.head_dim).transpose(0, 1)
        by_distance = self._per_head_matmul(query, table)
        query_slots = torch.arange(query.shape[-2], device=query.device) + query_offset
        distances = query_slots[:, None] - torch.arange(key_length, device=query.device)
        distances = distances.clamp(0, num_distances - 1)
        return by_distance.gather(-1, distances.expand(*by_distance.shape[:-1], key_length))

    @staticmethod
    def _per_head_matmul(query: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """``(B, H, Q, D) x (H or 1, N, D) -> (B, H, Q, N)`` without copying embeddings per batch."""
        if embeddings.shape[0] == 1:
            return torch.matmul(query, embeddings[0].transpose(0, 1))
        return torch.einsum("bhqd,hnd->bhqn", query, embeddings)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache=None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        implementation = self.config._attn_implementation or "eager"
        if "flash" in implementation:
            raise ValueError(
                f"attn_implementation={implementation!r} cannot add the relative position bias; "
                "use 'eager', 'sdpa' or 'flex_attention'"
            )
        input_shape = hidden_states.shape[:-1]
        query = split_heads(self.q_proj(hidden_states), self.head_dim)
        key = split_heads(self.k_proj(hidden_states), self.head_dim)
        value = split_heads(self.v_proj(hidden_states), self.head_dim)
        query_offset = None
        if cache is not None:
            query_offset = cache.get_seq_length(self.layer_idx)
            if isinstance(query_offset, torch.Tensor):
                query_offset = query_offset.clone()  # a static cache advances it in place
            key, value = cache.update(key, value, self.layer_idx)
        bias = self.relative_logits(query * self.scaling, key.shape[-2], query_offset)
        output, weights = attention_function(self.config)(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            position_bias=bias,
            **kwargs,
        )
        output = output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(output), weights


@dataclass
class DecoderInputs:
    """What every decoder's forward needs before its first block (see :func:`prepare_decoder`).

    ``attention_mask`` is the mask for the attention backend (None: plain causal), and
    ``padding_mask`` the 2-D mask of the current tokens for convolutions (None: no padding).
    """

    inputs_embeds: torch.Tensor
    cache: Cache | None
    position_ids: torch.LongTensor
    past_length: int | torch.Tensor
    attention_mask: torch.Tensor | None
    padding_mask: torch.Tensor | None


def is_later_pipeline_stage(model: nn.Module) -> bool:
    """Whether transformers' pipeline parallelism (``DistributedConfig(pp_size=...)``) made this
    process a stage after the first: its split replaces the layers of other stages by
    ``PipelineIdentityLayer`` (the first stage always keeps layer 0) and feeds a later stage the
    previous stage's hidden states as ``inputs_embeds``, where no embedding may be added again.
    """
    return isinstance(model.layers[0], PipelineIdentityLayer)


def first_local_layer(model: nn.Module) -> int:
    """Index of the first layer this process runs: 0, or the first layer of its stage under
    transformers' pipeline parallelism, where the cache fills only the layers a stage runs."""
    for index, layer in enumerate(model.layers):
        if not isinstance(layer, PipelineIdentityLayer):
            return index
    return 0


def embed_inputs(
    model: nn.Module, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor | None
) -> torch.Tensor:
    """``inputs_embeds``, or the embedding of ``input_ids``: exactly one must be given."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError(
            f"{type(model).__name__}: pass exactly one of input_ids or inputs_embeds, "
            f"got {'both' if input_ids is not None else 'neither'}"
        )
    return model.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds


def resolve_use_cache(model: nn.Module, use_cache: bool | None) -> bool:
    """Cache by default at inference only (``config.use_cache``), never while checkpointing."""
    if use_cache is None:
        use_cache = model.config.use_cache and not model.training
    if use_cache and model.gradient_checkpointing and model.training and torch.is_grad_enabled():
        logger.warning_once("use_cache=True is incompatible with gradient checkpointing: off.")
        use_cache = False
    return bool(use_cache)


def prepare_decoder(
    model: nn.Module,
    input_ids: torch.LongTensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor | dict | None,
    position_ids: torch.LongTensor | None,
    cache: Cache | None,
    use_cache: bool | None,
) -> DecoderInputs:
    """The decoder preamble shared by every attention model: embeddings, cache, positions, mask.

    ``attention_mask`` is 2-D over past + current tokens (1 = real token), or what ``generate``
    prepares for a static cache: a 4-D mask, or a dict of masks per layer type (hybrid caches).
    The masks come from transformers' ``create_causal_mask`` for the configured attention
    backend, with no data-dependent Python branch, so the step compiles with ``fullgraph=True``.
    The cache's past length is read from the first layer this process runs (a later
    pipeline-parallel stage fills no other).
    """
    inputs_embeds = embed_inputs(model, input_ids, inputs_embeds)
    batch, length = inputs_embeds.shape[:2]
    if not resolve_use_cache(model, use_cache):
        cache = None
    elif cache is None:
        cache = DynamicCache(config=model.config)
    layer_idx = first_local_layer(model)
    past_length = cache.get_seq_length(layer_idx) if cache is not None else 0
    given_mask = attention_mask
    if isinstance(attention_mask, dict):
        given_mask = None
        causal_mask = attention_mask.get("full_attention")
        padding_mask = attention_mask.get("linear_attention")
    elif attention_mask is not None and attention_mask.dim() == 4:
        given_mask, causal_mask, padding_mask = None, attention_mask, None
    else:
        if attention_mask is not None and (
            attention_mask.dim() != 2
            or attention_mask.shape[0] != batch
            or (isinstance(past_length, int) and attention_mask.shape[1] != past_length + length)
        ):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, expected (batch={batch}, "
                f"past + current tokens={past_length} + {length}) like the cache and input"
            )
        causal_mask = create_causal_mask(
            config=model.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
            layer_idx=layer_idx or None,  # None: transformers' choice of layer
        )
        # Unlike create_recurrent_attention_mask, keep single tokens: a step may be padding.
        padding_mask = None if attention_mask is None else attention_mask[:, -length:]
    if position_ids is None:
        if given_mask is not None:
            position_ids = position_ids_from_mask(
                given_mask, past_length, length, inputs_embeds.device
            )
        else:
            position_ids = (torch.arange(length, device=inputs_embeds.device) + past_length)[None]
    return DecoderInputs(
        inputs_embeds=inputs_embeds,
        cache=cache,
        position_ids=position_ids,
        past_length=past_length,
        attention_mask=causal_mask,
        padding_mask=padding_mask,
    )


class SequenceClassificationHead(GenericForSequenceClassification):
    """transformers' sequence-classification head (a linear layer on the last real token), over
    the architecture's own ``base_model_class``: built directly rather than through ``AutoModel``,
    so it needs no Auto registration and also loads as remote code."""

    base_model_class: type[nn.Module]

    def __init__(self, config):
        super(GenericForSequenceClassification, self).__init__(config)
        self.num_labels = config.num_labels
        self.model = self.base_model_class(config)
        self.score = nn.Linear(config.hidden_size, self.num_labels, bias=False)
        self.post_init()


class TokenClassificationHead(GenericForTokenClassification):
    """transformers' token-classification head (dropout + linear per token) over the
    architecture's ``base_model_class``, built directly like :class:`SequenceClassificationHead`."""

    base_model_class: type[nn.Module]

    def __init__(self, config):
        super(GenericForTokenClassification, self).__init__(config)
        self.num_labels = config.num_labels
        self.model = self.base_model_class(config)
        dropout = getattr(config, "classifier_dropout", None)
        self.dropout = nn.Dropout(config.hidden_dropout if dropout is None else dropout)
        self.score = nn.Linear(config.hidden_size, self.num_labels)
        self.post_init()


class QuestionAnsweringHead(GenericForQuestionAnswering):
    """transformers' span-extraction head (start and end logits per token) over the
    architecture's ``base_model_class``, built directly like :class:`SequenceClassificationHead`."""

    base_model_class: type[nn.Module]

    def __init__(self, config):
        super(GenericForQuestionAnswering, self).__init__(config)
        self.model = self.base_model_class(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()
