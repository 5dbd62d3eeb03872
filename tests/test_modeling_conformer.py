"""MidiConformer: the shared causal-LM checks, plus causality of the convolution module and the
exactness of the convolution cache (decode steps, chunked prefill, beam reordering)."""

from __future__ import annotations

import pytest
import torch
from model_tester import (
    BOS,
    EOS,
    PAD,
    CausalLMTesterMixin,
    RotaryTesterMixin,
    left_pad,
    random_ids,
)
from transformers import DynamicCache

from midiformers import MidiConformerConfig, MidiConformerForCausalLM, MidiConformerModel
from midiformers.modeling.modeling_conformer import MidiConformerConvModule


class TestMidiConformer(RotaryTesterMixin, CausalLMTesterMixin):
    config_class = MidiConformerConfig
    base_model_class = MidiConformerModel
    model_class = MidiConformerForCausalLM
    attention_type = "rotary"
    non_rotary = {"attention_type": "relative"}
    invalid_configs = [
        ({"hidden_size": 30}, "hidden_size"),
        ({"attention_type": "alibi"}, "attention_type"),
        ({"conv_kernel_size": 1}, "conv_kernel_size"),
        ({"conv_kernel_size": 0}, "conv_kernel_size"),
        ({"conv_kernel_size": -3}, "conv_kernel_size"),
        ({"hidden_act": "no_such_activation"}, "hidden_act"),
        ({"hidden_dropout": 1.5}, "hidden_dropout"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"layer_types": ["hybrid"]}, "layer_types"),
        ({"layer_types": ["full_attention", "hybrid"]}, "layer_types"),
        ({"pad_token_id": 61}, "pad_token_id"),
    ]

    def get_config(self, **overrides) -> MidiConformerConfig:
        values = dict(
            vocab_size=self.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=256,
            conv_kernel_size=5,
            attention_type=self.attention_type,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            pad_token_id=PAD,
            bos_token_id=BOS,
            eos_token_id=EOS,
        )
        values.update(overrides)
        return MidiConformerConfig(**values)

    # ------------------------------------------------------- config specifics

    def test_layer_types_follow_the_depth(self):
        config = self.get_config(num_hidden_layers=3)
        assert config.layer_types == ["hybrid"] * 3
        cache = DynamicCache(config=config)
        assert len(cache.layers) == 3

    # ------------------------------------------------------------- causality

    def test_conv_module_is_causal(self):
        torch.manual_seed(0)
        module = MidiConformerConvModule(self.get_config(conv_kernel_size=4), layer_idx=0).train()
        inputs = torch.randn(2, 12, 32)
        for t in (0, 5, 10):
            changed = inputs.clone()
            changed[:, t + 1 :] = torch.randn(2, 11 - t, 32)
            torch.testing.assert_close(module(changed)[:, : t + 1], module(inputs)[:, : t + 1])
            assert not torch.allclose(module(changed)[:, t + 1 :], module(inputs)[:, t + 1 :])

    def test_conv_module_sees_kernel_size_frames(self):
        """Output t depends on inputs t-K+1 .. t and on nothing older (the receptive field)."""
        torch.manual_seed(0)
        kernel = 4
        module = MidiConformerConvModule(self.get_config(conv_kernel_size=kernel), layer_idx=0)
        inputs = torch.randn(1, 12, 32)
        t = 9
        older = inputs.clone()
        older[:, : t - kernel + 1] = torch.randn(1, t - kernel + 1, 32)
        torch.testing.assert_close(module(older)[:, t], module(inputs)[:, t])
        inside = inputs.clone()
        inside[:, t - kernel + 1] = torch.randn(1, 32)
        assert not torch.allclose(module(inside)[:, t], module(inputs)[:, t])

    @pytest.mark.parametrize("mode", ["eval", "train"])
    def test_model_is_causal(self, mode):
        """Changing tokens after t leaves every output at <= t unchanged (in train mode too,
        where a batch-statistics norm would leak the future)."""
        model = getattr(self.make_model(), mode)()
        ids = random_ids(3, 16, self.vocab_size)
        with torch.no_grad():
            reference = model(input_ids=ids, use_cache=False).logits
            for t in (0, 6, 14):
                changed = ids.clone()
                changed[:, t + 1 :] = random_ids(3, 15 - t, self.vocab_size, seed=t + 1)
                logits = model(input_ids=changed, use_cache=False).logits
                torch.testing.assert_close(logits[:, : t + 1], reference[:, : t + 1])
                assert not torch.allclose(logits[:, t + 1 :], reference[:, t + 1 :])

    @pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
    def test_packed_sequences_stay_independent(self, attn_implementation):
        """Sequences packed into one row with positions restarting at 0 (a padding-free batch)
        give each sequence's own logits: the convolution, like the attention, does not reach
        into the previous sequence's frames."""
        model = self.make_model(conv_kernel_size=4)
        model.set_attn_implementation(attn_implementation)
        rows = [random_ids(1, n, self.vocab_size, seed=n)[0] for n in (5, 2, 7)]
        packed = torch.cat(rows)[None]
        positions = torch.cat([torch.arange(len(row)) for row in rows])[None]
        with torch.no_grad():
            alone = [model(input_ids=row[None], use_cache=False).logits[0] for row in rows]
            together = model(input_ids=packed, position_ids=positions, use_cache=False).logits[0]
        torch.testing.assert_close(together, torch.cat(alone), rtol=1e-4, atol=1e-4)

    # ------------------------------------------------------------------ cache

    @pytest.mark.parametrize("kernel", [2, 7])
    def test_decode_steps_equal_full_sequence(self, kernel):
        """Token-by-token decoding from the first token reproduces every full-sequence logit,
        including the steps where fewer than kernel - 1 frames have been seen."""
        model = self.make_model(conv_kernel_size=kernel)
        ids = random_ids(2, 13, self.vocab_size)
        with torch.no_grad():
            full = model(input_ids=ids, use_cache=False).logits
            cache = DynamicCache(config=model.config)
            steps = [
                model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True).logits
                for t in range(ids.shape[1])
            ]
        assert cache.get_seq_length() == ids.shape[1]
        for layer_idx in range(model.config.num_hidden_layers):
            assert cache.get_conv_state(layer_idx).shape == (2, 32, kernel - 1)
        torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-5)

    def test_decode_steps_equal_full_sequence_left_padded(self):
        model = self.make_model(conv_kernel_size=6)
        rows = [random_ids(1, n, self.vocab_size, seed=n)[0] for n in (9, 4, 6)]
        ids, mask = left_pad(rows)
        with torch.no_grad():
            full = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            cache = DynamicCache(config=model.config)
            steps = [
                model(
                    input_ids=ids[:, t : t + 1],
                    attention_mask=mask[:, : t + 1],
                    cache=cache,
                    use_cache=True,
                ).logits
                for t in range(ids.shape[1])
            ]
        real = mask.bool()
        torch.testing.assert_close(torch.cat(steps, 1)[real], full[real], rtol=1e-4, atol=1e-5)

    @pytest.mark.parametrize("chunks", [(3, 8, 2), (1, 1, 11), (10, 3)])
    def test_chunked_prefill_equals_one_pass(self, chunks):
        model = self.make_model(conv_kernel_size=5)
        ids = random_ids(2, sum(chunks), self.vocab_size)
        with torch.no_grad():
            full = model(input_ids=ids, use_cache=False).logits
            cache = DynamicCache(config=model.config)
            pieces = [
                model(input_ids=chunk, cache=cache, use_cache=True).logits
                for chunk in ids.split(list(chunks), dim=1)
            ]
        torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=1e-4, atol=1e-5)

    def test_generate_with_prefill_chunks(self):
        model = self.make_model()
        prompt = random_ids(1, 11, self.vocab_size)
        plain = self.generate(model, prompt, max_new_tokens=16)
        chunked = self.generate(model, prompt, max_new_tokens=16, prefill_chunk_size=4)
        uncached = self.generate(model, prompt, max_new_tokens=16, use_cache=False)
        assert torch.equal(chunked, plain)
        assert torch.equal(plain, uncached)

    def test_assisted_decoding_matches_greedy(self):
        """Assisted decoding crops rejected tokens from the cache, conv states included."""
        model, assistant = self.make_model(), self.make_model(seed=1)
        prompt = random_ids(1, 8, self.vocab_size)
        greedy = self.generate(model, prompt, max_new_tokens=20)
        assisted = self.generate(model, prompt, max_new_tokens=20, assistant_model=assistant)
        assert torch.equal(assisted, greedy)

    def test_reorder_cache_reorders_conv_states(self):
        """Beam search reorders the cache: the convolution state must follow the keys/values."""
        model = self.make_model()
        ids = random_ids(3, 7, self.vocab_size)
        with torch.no_grad():
            cache = model(input_ids=ids, use_cache=True).cache
        before = [cache.get_conv_state(i).clone() for i in range(2)]
        keys = [cache.layers[i].keys.clone() for i in range(2)]
        beam_idx = torch.tensor([2, 0, 0])
        cache.reorder_cache(beam_idx)
        for i in range(2):
            torch.testing.assert_close(cache.get_conv_state(i), before[i][beam_idx])
            torch.testing.assert_close(cache.layers[i].keys, keys[i][beam_idx])
        # and the next step matches an uncached run of the reordered rows
        next_token = random_ids(3, 1, self.vocab_size, seed=5)
        with torch.no_grad():
            stepped = model(input_ids=next_token, cache=cache, use_cache=True).logits[:, -1]
            expected = model(input_ids=torch.cat([ids[beam_idx], next_token], 1)).logits[:, -1]
        torch.testing.assert_close(stepped, expected, rtol=1e-4, atol=1e-5)

    def test_use_cache_false_returns_no_cache(self):
        model = self.make_model()
        ids = random_ids(1, 5, self.vocab_size)
        with torch.no_grad():
            assert model(input_ids=ids, use_cache=False).cache is None
            assert model(input_ids=ids, use_cache=True).cache.get_seq_length() == 5

    # ------------------------------------------------------------ interfaces

    def test_embeddings_are_tied_by_default(self, tmp_path):
        tied = self.make_model()
        assert tied.lm_head.weight is tied.model.embed_tokens.weight
        untied = self.make_model(tie_word_embeddings=False)
        untied.save_pretrained(tmp_path)
        loaded = MidiConformerForCausalLM.from_pretrained(tmp_path)
        torch.testing.assert_close(loaded.lm_head.weight, untied.lm_head.weight)
        assert not torch.equal(loaded.lm_head.weight, loaded.model.embed_tokens.weight)

    def test_hidden_states_are_returned(self):
        model = self.make_model()
        out = model(input_ids=random_ids(1, 5, self.vocab_size), output_hidden_states=True)
        assert len(out.hidden_states) == model.config.num_hidden_layers + 1
        torch.testing.assert_close(
            out.hidden_states[-1],
            model.model(input_ids=random_ids(1, 5, self.vocab_size)).last_hidden_state,
        )

    def test_mismatched_attention_mask_names_it(self):
        model = self.make_model()
        ids = random_ids(1, 5, self.vocab_size)
        with pytest.raises(ValueError, match="attention_mask"):
            model(input_ids=ids, attention_mask=torch.ones(1, 4, dtype=torch.long))

    def test_inputs_embeds_match_input_ids(self):
        model = self.make_model()
        ids = random_ids(2, 6, self.vocab_size)
        with torch.no_grad():
            from_ids = model(input_ids=ids).logits
            from_embeds = model(inputs_embeds=model.get_input_embeddings()(ids)).logits
        torch.testing.assert_close(from_embeds, from_ids)
        with pytest.raises(ValueError, match="input_ids or inputs_embeds"):
            model(input_ids=ids, inputs_embeds=model.get_input_embeddings()(ids))

    def test_rotary_positions_are_relative(self):
        """Shifting every position by a constant leaves rotary attention unchanged."""
        if self.attention_type != "rotary":
            pytest.skip("relative attention has no absolute positions to shift")
        model = self.make_model()
        ids = random_ids(1, 9, self.vocab_size)
        positions = torch.arange(9).unsqueeze(0)
        with torch.no_grad():
            base = model(input_ids=ids, position_ids=positions).logits
            shifted = model(input_ids=ids, position_ids=positions + 37).logits
            moved = model(input_ids=ids, position_ids=positions.flip(-1)).logits
        torch.testing.assert_close(shifted, base, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(moved, base, rtol=1e-4, atol=1e-4)


class TestMidiConformerRelative(TestMidiConformer):
    attention_type = "relative"
    parallel_variants = ({}, {"shared_relative_embeddings": True})
    invalid_configs = [
        *TestMidiConformer.invalid_configs,
        ({"attention_type": "relative", "max_relative_position": 0}, "max_relative_position"),
    ]

    def test_uses_relative_attention(self):
        model = self.make_model()
        assert model.model.rotary_emb is None
        assert all(hasattr(block.self_attn, "relative_embeddings") for block in model.model.layers)

    def test_clipped_distances_decode_like_full_sequence(self):
        """Beyond max_relative_position the distance is clipped; the cache must clip alike."""
        model = self.make_model(max_relative_position=3)
        ids = random_ids(2, 12, self.vocab_size)
        with torch.no_grad():
            full = model(input_ids=ids, use_cache=False).logits
            cache = DynamicCache(config=model.config)
            prefix = model(input_ids=ids[:, :5], cache=cache, use_cache=True).logits
            steps = [
                model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True).logits
                for t in range(5, 12)
            ]
        torch.testing.assert_close(torch.cat([prefix, *steps], 1), full, rtol=1e-4, atol=1e-5)

    def test_shared_relative_embeddings(self):
        shared = self.make_model(shared_relative_embeddings=True)
        per_head = self.make_model()
        shared_size = shared.model.layers[0].self_attn.relative_embeddings.weight.shape
        per_head_size = per_head.model.layers[0].self_attn.relative_embeddings.weight.shape
        assert shared_size[1] * 4 == per_head_size[1]
        prompt = random_ids(1, 6, self.vocab_size)
        cached = self.generate(shared, prompt, max_new_tokens=16)
        assert torch.equal(
            cached, self.generate(shared, prompt, max_new_tokens=16, use_cache=False)
        )
