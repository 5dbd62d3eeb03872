"""Music Transformer: the shared causal-LM checks plus relative attention, skew and cache tests."""

from __future__ import annotations

import pytest
import torch
from model_tester import CausalLMTesterMixin, left_pad, random_ids
from transformers import DynamicCache

from midiformers import MusicTransformerConfig, MusicTransformerForCausalLM, MusicTransformerModel
from midiformers.modeling._layers import (
    RelativeSelfAttention,
    relative_embeddings_by_distance,
    skew_relative_logits,
)


def naive_relative_logits(
    query: torch.Tensor, table: torch.Tensor, key_length: int, max_distance: int
) -> torch.Tensor:
    """O(Q·K·D) reference: gather the embedding of every clipped query-key distance.

    Returns ``(batch, heads, Q, K)`` with NaN where the key lies in the query's future.
    """
    batch, heads, query_length, head_dim = query.shape
    past = key_length - query_length
    table = table.view(table.shape[0], -1, head_dim)  # (distances, relative heads, head_dim)
    out = torch.full((batch, heads, query_length, key_length), float("nan"), dtype=query.dtype)
    for i in range(query_length):
        for j in range(past + i + 1):
            embedding = table[min(past + i - j, max_distance)]  # (relative heads, head_dim)
            out[:, :, i, j] = (query[:, :, i] * embedding.unsqueeze(0)).sum(-1)
    return out


def tiny_config(**overrides) -> MusicTransformerConfig:
    kwargs = dict(
        vocab_size=61,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=256,
        max_relative_position=16,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    kwargs.update(overrides)
    return MusicTransformerConfig(**kwargs)


class TestMusicTransformer(CausalLMTesterMixin):
    config_class = MusicTransformerConfig
    base_model_class = MusicTransformerModel
    model_class = MusicTransformerForCausalLM
    invalid_configs = [
        ({"hidden_size": 30}, "hidden_size"),
        ({"max_relative_position": 0}, "max_relative_position"),
        ({"max_relative_position": -4}, "max_relative_position"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"hidden_act": "nope"}, "hidden_act"),
        ({"attention_dropout": 1.0}, "attention_dropout"),
        ({"pad_token_id": 61}, "pad_token_id"),
        ({"eos_token_id": [2, 99]}, "eos_token_id"),
        ({"shared_relative_embeddings": "yes"}, "shared_relative_embeddings"),
    ]

    parallel_variants = ({}, {"shared_relative_embeddings": True})

    def get_config(self, **overrides):
        # max_relative_position below the generated lengths, so clipping is exercised everywhere.
        return tiny_config(**{"vocab_size": self.vocab_size, **overrides})


# ------------------------------------------------------------------------ the skew


@pytest.mark.parametrize(
    ("query_length", "key_length", "max_distance", "relative_heads"),
    [
        (9, 9, 20, 3),  # prompt, no clipping, per head
        (9, 9, 4, 3),  # prompt, clipped
        (4, 11, 5, 3),  # chunked prefill after 7 cached keys
        (1, 13, 6, 3),  # decode step
        (7, 7, 3, 1),  # shared across heads
        (5, 12, 30, 1),
    ],
)
def test_skew_equals_naive_gather(query_length, key_length, max_distance, relative_heads):
    generator = torch.Generator().manual_seed(query_length * 100 + key_length)
    heads, head_dim = 3, 8
    query = torch.randn(2, heads, query_length, head_dim, generator=generator)
    table = torch.randn(max_distance + 1, relative_heads * head_dim, generator=generator)
    embeddings = relative_embeddings_by_distance(table, key_length, head_dim, max_distance)
    assert embeddings.shape == (relative_heads, key_length, head_dim)
    skewed = skew_relative_logits(torch.matmul(query, embeddings.transpose(-1, -2)))
    expected = naive_relative_logits(query, table, key_length, max_distance)
    causal = ~expected.isnan()
    torch.testing.assert_close(skewed[causal], expected[causal])


@pytest.mark.parametrize(
    ("query_length", "key_length", "max_distance", "shared"),
    [
        (10, 10, 3, False),  # prompt through the skew, clipped
        (3, 12, 20, True),  # chunked prefill through the skew
        (1, 12, 3, False),  # decode step through the lookup by distance, clipped
        (1, 5, 20, False),  # decode step, fewer keys than distances
        (1, 9, 4, True),
    ],
)
def test_attention_module_relative_logits_match_naive(
    query_length, key_length, max_distance, shared
):
    config = tiny_config(max_relative_position=max_distance, shared_relative_embeddings=shared)
    attention = RelativeSelfAttention(config, layer_idx=0)
    table = attention.relative_embeddings.weight.detach()
    query = torch.randn(2, 4, query_length, 8)
    expected = naive_relative_logits(query, table, key_length, max_distance)
    with torch.no_grad():
        got = attention.relative_logits(query, key_length)
    assert got.shape == (2, 4, query_length, key_length)
    causal = ~expected.isnan()
    torch.testing.assert_close(got[causal], expected[causal])


# ----------------------------------------------------------------- cache correctness


def spread_model(seed: int = 0, **overrides) -> MusicTransformerForCausalLM:
    torch.manual_seed(seed)
    model = MusicTransformerForCausalLM(tiny_config(**overrides))
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.15)
    return model.eval()


def run_in_chunks(model, ids, chunks, attention_mask=None) -> torch.Tensor:
    """Feed ``ids`` chunk by chunk through one cache; return the concatenated logits."""
    cache, logits, start = DynamicCache(config=model.config), [], 0
    with torch.no_grad():
        for size in chunks:
            end = start + size
            mask = None if attention_mask is None else attention_mask[:, :end]
            out = model(ids[:, start:end], attention_mask=mask, cache=cache, use_cache=True)
            cache, start = out.cache, end
            logits.append(out.logits)
    assert start == ids.shape[1] and cache.get_seq_length() == start
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("shared", [False, True])
def test_decode_steps_equal_full_sequence(shared):
    model = spread_model(max_relative_position=6, shared_relative_embeddings=shared)
    ids = random_ids(2, 24, 61)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
    stepped = run_in_chunks(model, ids, [1] * 24)
    torch.testing.assert_close(stepped, full, rtol=1e-4, atol=1e-5)


def test_chunked_prefill_equals_full_sequence():
    model = spread_model(max_relative_position=5)
    ids = random_ids(2, 23, 61, seed=3)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
    for chunks in ([8, 8, 7], [3, 11, 1, 8], [1, 22]):
        torch.testing.assert_close(run_in_chunks(model, ids, chunks), full, rtol=1e-4, atol=1e-5)


def test_chunked_prefill_with_left_padding():
    model = spread_model(max_relative_position=4)
    rows = [random_ids(1, n, 61, seed=n)[0] for n in (12, 7, 15)]
    ids, mask = left_pad(rows)
    with torch.no_grad():
        full = model(ids, attention_mask=mask, use_cache=False).logits
    chunked = run_in_chunks(model, ids, [6, 4, 1, 4], attention_mask=mask)
    for i, row in enumerate(rows):
        torch.testing.assert_close(chunked[i, -len(row) :], full[i, -len(row) :])


def test_past_key_values_keyword_still_works():
    model = spread_model()
    ids = random_ids(1, 10, 61)
    with torch.no_grad():
        prefix = model(ids[:, :9], use_cache=True)
        with pytest.warns(FutureWarning, match="past_key_values"):
            new = model(ids[:, 9:], past_key_values=prefix.cache, use_cache=True).logits
        full = model(ids).logits
    torch.testing.assert_close(new[:, -1], full[:, -1], rtol=1e-4, atol=1e-5)


def test_use_cache_false_returns_no_cache():
    model = spread_model()
    assert model(random_ids(1, 5, 61), use_cache=False).cache is None
    assert model(random_ids(1, 5, 61), use_cache=True).cache.get_seq_length() == 5


# ------------------------------------------------------------------------- clipping


def test_distances_beyond_the_maximum_are_clipped():
    """A table of 12 distances whose rows 4..12 all equal row 4 behaves as clipping at 4."""
    clipped = spread_model(max_relative_position=4)
    wide = spread_model(max_relative_position=12)
    state = clipped.state_dict()
    for name, table in state.items():
        if name.endswith("relative_embeddings.weight"):
            state[name] = torch.cat([table, table[-1:].expand(8, -1)])
    wide.load_state_dict(state)
    ids = random_ids(2, 30, 61)
    with torch.no_grad():
        torch.testing.assert_close(wide(ids).logits, clipped(ids).logits)
        # and the far distances matter when they are not tied to the last row
        for layer in wide.model.layers:
            layer.self_attn.relative_embeddings.weight[5:].normal_(0.0, 0.5)
        assert not torch.allclose(wide(ids).logits, clipped(ids).logits, atol=1e-3)


def test_longer_than_max_position_embeddings_runs_and_caches():
    model = spread_model(max_position_embeddings=16, max_relative_position=3)
    ids = random_ids(1, 40, 61)
    with torch.no_grad():
        full = model(ids).logits
    assert torch.isfinite(full).all()
    torch.testing.assert_close(run_in_chunks(model, ids, [20, 1, 1, 18]), full)


# ------------------------------------------------------------------ implementations


def test_eager_and_sdpa_agree_in_logits_and_gradients():
    ids = random_ids(2, 14, 61)
    _, mask = left_pad([ids[0], ids[1, 5:]])
    results = {}
    for implementation in ("sdpa", "eager"):
        torch.manual_seed(0)
        model = MusicTransformerForCausalLM._from_config(
            tiny_config(max_relative_position=5), attn_implementation=implementation
        ).train()
        assert model.config._attn_implementation == implementation
        # Padded positions attend to nothing (arbitrary logits): nothing is predicted from them.
        labels = ids.masked_fill(mask == 0, -100)
        labels[:, 1:][mask[:, :-1] == 0] = -100
        out = model(ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        results[implementation] = (out.logits.detach()[mask.bool()], grads)
    (sdpa_logits, sdpa_grads), (eager_logits, eager_grads) = results["sdpa"], results["eager"]
    torch.testing.assert_close(sdpa_logits, eager_logits, rtol=1e-4, atol=1e-5)
    assert any("relative_embeddings" in name for name in sdpa_grads)
    for name, grad in eager_grads.items():
        torch.testing.assert_close(sdpa_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_relative_embedding_shapes_per_head_and_shared():
    per_head = MusicTransformerModel(tiny_config(max_relative_position=7))
    shared = MusicTransformerModel(
        tiny_config(max_relative_position=7, shared_relative_embeddings=True)
    )
    head_dim = 32 // 4
    assert per_head.layers[0].self_attn.relative_embeddings.weight.shape == (8, 4 * head_dim)
    assert shared.layers[0].self_attn.relative_embeddings.weight.shape == (8, head_dim)
    difference = per_head.num_parameters() - shared.num_parameters()
    assert difference == 2 * 8 * 3 * head_dim
