"""Building blocks shared by the midiformers architectures.

This file is copied next to each modeling file when a model is saved with remote code,
so it must only import installed libraries (torch, transformers), never midiformers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN


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


def build_attention_mask(
    attention_mask: torch.Tensor | None,
    query_length: int,
    past_length: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor | None:
    """Additive 4-D mask ``(batch, 1, query, past + query)`` combining causality and padding.

    Returns ``None`` when the plain causal pattern suffices: no padding and either a fresh
    prompt (``is_causal`` kernels) or a single new token (which sees everything).
    """
    key_length = past_length + query_length
    has_padding = attention_mask is not None and not bool(attention_mask.all())
    if not has_padding and (past_length == 0 or query_length == 1):
        return None
    query_pos = torch.arange(past_length, key_length, device=device).unsqueeze(-1)
    key_pos = torch.arange(key_length, device=device).unsqueeze(0)
    allowed = (key_pos <= query_pos).unsqueeze(0).unsqueeze(0)
    if has_padding:
        allowed = allowed & attention_mask[:, None, None, -key_length:].bool()
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return mask.masked_fill(~allowed, mask_min(dtype))


def causal_mask_for_scores(
    attention_mask: torch.Tensor | None,
    query_length: int,
    key_length: int,
    dtype: torch.dtype,
    device,
) -> torch.Tensor:
    """Materialise the additive mask for eager attention when ``build_attention_mask`` gave None."""
    if attention_mask is not None:
        return attention_mask
    if query_length == 1:
        return torch.zeros((1, 1, 1, key_length), dtype=dtype, device=device)
    past_length = key_length - query_length
    query_pos = torch.arange(past_length, key_length, device=device).unsqueeze(-1)
    key_pos = torch.arange(key_length, device=device).unsqueeze(0)
    mask = torch.zeros((query_length, key_length), dtype=dtype, device=device)
    return mask.masked_fill(key_pos > query_pos, mask_min(dtype))[None, None]


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al. 2021); frequencies are computed on the fly.

    Nothing is stored as a buffer, so nothing can come back uninitialised after loading.
    """

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
        self.head_dim = head_dim
        self.base = base

    def forward(
        self, position_ids: torch.LongTensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        exponents = torch.arange(
            0, self.head_dim, 2, device=position_ids.device, dtype=torch.float32
        )
        inv_freq = 1.0 / (self.base ** (exponents / self.head_dim))
        freqs = position_ids.float().unsqueeze(-1) * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


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


class MidiSelfAttention(nn.Module):
    """Multi-head causal self-attention with an optional rotary embedding and a KV cache.

    Runs through ``scaled_dot_product_attention`` (flash / memory-efficient kernels where the
    hardware has them) unless the model was loaded with ``attn_implementation="eager"``.
    """

    def __init__(self, config, layer_idx: int, use_rotary: bool = False):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        bias = getattr(config, "attention_bias", True)
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.use_rotary = use_rotary

    def _shape(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache=None,
    ) -> torch.Tensor:
        batch, length, _ = hidden_states.shape
        query = self._shape(self.q_proj(hidden_states))
        key = self._shape(self.k_proj(hidden_states))
        value = self._shape(self.v_proj(hidden_states))
        if self.use_rotary:
            cos, sin = position_embeddings
            query = apply_rotary(query, cos, sin)
            key = apply_rotary(key, cos, sin)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        dropout = self.attention_dropout if self.training else 0.0
        if self.config._attn_implementation == "eager":
            scores = torch.matmul(query, key.transpose(-1, -2)) * self.scaling
            scores = scores + causal_mask_for_scores(
                attention_mask, length, key.shape[-2], scores.dtype, scores.device
            )
            weights = F.dropout(scores.softmax(dim=-1), p=dropout, training=self.training)
            output = torch.matmul(weights, value)
        else:
            output = F.scaled_dot_product_attention(
                query,
                key,
                value,
                attn_mask=attention_mask,
                dropout_p=dropout,
                is_causal=attention_mask is None and length > 1,
                scale=self.scaling,
            )
        output = output.transpose(1, 2).reshape(batch, length, -1)
        return self.o_proj(output)


def relative_embeddings_by_distance(
    table: torch.Tensor, key_length: int, num_heads: int, max_distance: int
) -> torch.Tensor:
    """Gather ``(num_heads, key_length, head_dim)`` relative embeddings for distances
    ``key_length - 1, ..., 1, 0`` from a ``(max_distance + 1, num_heads * head_dim)`` table,
    clipping distances beyond ``max_distance``. Costs O(L·D) memory, never O(L²·D).
    """
    distances = torch.arange(key_length - 1, -1, -1, device=table.device).clamp(max=max_distance)
    embeddings = table[distances].view(key_length, num_heads, -1)
    return embeddings.transpose(0, 1)


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
    ``config.shared_relative_embeddings``). The relative logits go through the skew for any
    query length; a decode step (one query) needs no skew. With a KV cache the queries sit at
    offsets ``past .. past + Q - 1`` of the keys, which the skew handles directly, and left padding
    shifts queries and keys alike, so distances stay right. Runs through
    ``scaled_dot_product_attention`` with the relative logits as an additive mask (the fused
    kernel still does the softmax and matmul), or eagerly with ``attn_implementation="eager"``.

    Config fields read: ``hidden_size``, ``num_attention_heads``, ``attention_dropout``,
    ``max_relative_position`` (defaults to ``max_position_embeddings``) and optionally
    ``shared_relative_embeddings`` and ``attention_bias``.
    """

    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.max_relative_position = getattr(
            config, "max_relative_position", config.max_position_embeddings
        )
        shared = getattr(config, "shared_relative_embeddings", False)
        self.num_relative_heads = 1 if shared else self.num_heads
        bias = getattr(config, "attention_bias", True)
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.relative_embeddings = nn.Embedding(
            self.max_relative_position + 1, self.num_relative_heads * self.head_dim
        )

    def _shape(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def relative_logits(self, query: torch.Tensor, key_length: int) -> torch.Tensor:
        """Unscaled ``(batch, heads, Q, K)`` relative logits of queries that end the ``K`` keys.

        Several queries use the skew; a single query (a decode step) looks its scores up by
        distance, which costs O(min(K, max_relative_position)·D) instead of O(K·D).
        """
        if query.shape[-2] == 1:
            return self._last_query_relative_logits(query, key_length)
        embeddings = relative_embeddings_by_distance(
            self.relative_embeddings.weight,
            key_length,
            self.num_relative_heads,
            self.max_relative_position,
        )
        return skew_relative_logits(self._per_head_matmul(query, embeddings))

    def _last_query_relative_logits(self, query: torch.Tensor, key_length: int) -> torch.Tensor:
        """Scores of the newest token: one dot product per distance, then a lookup per key."""
        num_distances = min(key_length, self.max_relative_position + 1)
        table = self.relative_embeddings.weight[:num_distances]
        table = table.view(num_distances, self.num_relative_heads, self.head_dim).transpose(0, 1)
        by_distance = self._per_head_matmul(query, table)
        distances = torch.arange(key_length - 1, -1, -1, device=query.device)
        return by_distance.index_select(-1, distances.clamp(max=self.max_relative_position))

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
    ) -> torch.Tensor:
        batch, length, _ = hidden_states.shape
        query = self._shape(self.q_proj(hidden_states))
        key = self._shape(self.k_proj(hidden_states))
        value = self._shape(self.v_proj(hidden_states))
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        key_length = key.shape[-2]
        bias = self.relative_logits(query * self.scaling, key_length)
        if attention_mask is not None or length > 1:
            bias = bias + causal_mask_for_scores(
                attention_mask, length, key_length, query.dtype, query.device
            )
        dropout = self.attention_dropout if self.training else 0.0
        if self.config._attn_implementation == "eager":
            scores = torch.matmul(query, key.transpose(-1, -2)) * self.scaling + bias
            weights = F.dropout(scores.softmax(dim=-1), p=dropout, training=self.training)
            output = torch.matmul(weights, value)
        else:
            output = F.scaled_dot_product_attention(
                query, key, value, attn_mask=bias, dropout_p=dropout, scale=self.scaling
            )
        output = output.transpose(1, 2).reshape(batch, length, -1)
        return self.o_proj(output)
