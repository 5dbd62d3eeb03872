"""MidiLSTM: the shared causal-LM checks plus the recurrent-state (cache) and padding behaviour."""

from __future__ import annotations

import pytest
import torch
from model_tester import BOS, EOS, PAD, CausalLMTesterMixin, left_pad, random_ids
from transformers import DynamicCache

from midiformers import MidiLSTMConfig, MidiLSTMForCausalLM, MidiLSTMModel
from midiformers.modeling.modeling_lstm import MidiLSTMCache


class TestMidiLSTM(CausalLMTesterMixin):
    config_class = MidiLSTMConfig
    base_model_class = MidiLSTMModel
    model_class = MidiLSTMForCausalLM
    invalid_configs = [
        ({"hidden_size": 0}, "hidden_size"),
        ({"embedding_size": -4}, "embedding_size"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"hidden_size": 32.5}, "hidden_size"),
        ({"hidden_dropout": 1.0}, "hidden_dropout"),
        ({"hidden_dropout": -0.1}, "hidden_dropout"),
        ({"embedding_dropout": 1.5}, "embedding_dropout"),
        ({"initializer_range": 0.0}, "initializer_range"),
    ]

    def get_config(self, **overrides) -> MidiLSTMConfig:
        """Tiny LSTM; the mixin's attention/position settings do not apply and are not set."""
        values = dict(
            vocab_size=self.vocab_size,
            embedding_size=16,
            hidden_size=32,
            num_hidden_layers=2,
            hidden_dropout=0.0,
            embedding_dropout=0.0,
            pad_token_id=PAD,
            bos_token_id=BOS,
            eos_token_id=EOS,
        )
        values.update(overrides)
        return MidiLSTMConfig(**values)

    # ------------------------------------------------------------- LSTM specific

    def test_defaults_follow_the_lstm_study(self):
        config = MidiLSTMConfig()
        sizes = (config.embedding_size, config.hidden_size, config.num_hidden_layers)
        assert sizes == (256, 512, 2)
        assert 0 < config.hidden_dropout < 1
        assert config.tie_word_embeddings is False
        assert config.model_type == "midiformers_lstm"

    def test_chunked_forward_with_cache_equals_full_forward(self):
        model = self.make_model()
        ids = random_ids(2, 15, self.vocab_size)
        with torch.no_grad():
            full = model(input_ids=ids, use_cache=False)
            assert full.cache is None
            first = model(input_ids=ids[:, :9], use_cache=True)
            assert isinstance(first.cache, MidiLSTMCache)
            assert first.cache.get_seq_length() == 9
            steps = [first.logits]
            cache = first.cache
            for t in range(9, 15):
                out = model(input_ids=ids[:, t : t + 1], cache=cache)
                cache = out.cache
                steps.append(out.logits)
        assert cache.get_seq_length() == 15
        torch.testing.assert_close(torch.cat(steps, dim=1), full.logits, rtol=1e-5, atol=1e-5)

    def test_padding_never_changes_the_state(self):
        """Left, right and inner padding: real positions and the final state match the bare row."""
        model = self.make_model()
        row = random_ids(1, 7, self.vocab_size, seed=3)[0]
        ids = torch.full((3, 10), PAD, dtype=torch.long)
        mask = torch.zeros((3, 10), dtype=torch.long)
        real = [list(range(3, 10)), list(range(0, 7)), [0, 1, 3, 4, 6, 7, 9]]
        for i, positions in enumerate(real):
            ids[i, positions] = row
            mask[i, positions] = 1
        with torch.no_grad():
            padded = model(input_ids=ids, attention_mask=mask, use_cache=True)
            alone = model(input_ids=row.unsqueeze(0), use_cache=True)
        for i, positions in enumerate(real):
            torch.testing.assert_close(
                padded.logits[i, positions], alone.logits[0], rtol=1e-4, atol=1e-5
            )
            for layer in range(model.config.num_hidden_layers):
                for got, want in zip(padded.cache.get_state(layer), alone.cache.get_state(layer)):
                    torch.testing.assert_close(got[i], want[0], rtol=1e-4, atol=1e-5)

    def test_left_padded_prompt_then_cached_steps_match_unpadded_rows(self):
        model = self.make_model()
        rows = [random_ids(1, n, self.vocab_size, seed=n)[0] for n in (5, 9, 2)]
        ids, mask = left_pad(rows)
        follow = random_ids(3, 4, self.vocab_size, seed=11)
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, use_cache=True)
            cache, logits = out.cache, []
            for t in range(follow.shape[1]):
                mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], dim=1)
                out = model(input_ids=follow[:, t : t + 1], attention_mask=mask, cache=cache)
                cache = out.cache
                logits.append(out.logits)
            stepped = torch.cat(logits, dim=1)
            for i, row in enumerate(rows):
                alone = model(input_ids=torch.cat([row, follow[i]]).unsqueeze(0)).logits[0]
                torch.testing.assert_close(stepped[i], alone[-4:], rtol=1e-4, atol=1e-5)

    def test_gradient_checkpointing_with_padding_same_gradients(self):
        ids = random_ids(3, 12, self.vocab_size)
        mask = torch.ones_like(ids)
        mask[0, 8:] = 0
        mask[1, :3] = 0
        labels = ids.masked_fill(mask == 0, -100)

        def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
            model = self.make_model().train()
            if checkpointing:
                model.activation_checkpointing_enable()
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            return {n: p.grad for n, p in model.named_parameters()}

        plain, checkpointed = gradients(False), gradients(True)
        for name in plain:
            torch.testing.assert_close(checkpointed[name], plain[name], msg=name)

    def test_beam_search_with_one_beam_equals_greedy(self):
        model = self.make_model()
        prompt = random_ids(2, 6, self.vocab_size)
        greedy = self.generate(model, prompt, max_new_tokens=16)
        one_beam = self.generate(model, prompt, max_new_tokens=16, num_beams=1)
        assert torch.equal(one_beam, greedy)

    def test_beam_search_returns_ranked_sequences(self):
        model = self.make_model()
        prompt = random_ids(2, 6, self.vocab_size)
        with torch.no_grad():
            out = model.generate(
                prompt,
                do_sample=False,
                num_beams=4,
                num_return_sequences=3,
                max_new_tokens=10,
                min_new_tokens=10,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=PAD,
            )
        assert out.sequences.shape == (6, 16)
        assert torch.equal(out.sequences[:3, :6], prompt[:1].expand(3, -1))
        assert len({tuple(s.tolist()) for s in out.sequences[:3]}) == 3
        scores = out.sequences_scores.view(2, 3)
        assert bool((scores[:, :-1] >= scores[:, 1:]).all())

    def test_generation_continues_from_a_returned_cache(self):
        model = self.make_model()
        prompt = random_ids(1, 5, self.vocab_size)
        straight = self.generate(model, prompt, max_new_tokens=12)
        with torch.no_grad():
            first = model.generate(
                prompt,
                do_sample=False,
                max_new_tokens=6,
                min_new_tokens=6,
                return_dict_in_generate=True,
                pad_token_id=PAD,
            )
        assert first.cache.get_seq_length() == 5 + 6 - 1
        resumed = self.generate(model, first.sequences, cache=first.cache, max_new_tokens=6)
        assert torch.equal(resumed, straight)

    def test_tied_embeddings_add_a_projection_when_sizes_differ(self, tmp_path):
        projected = self.make_model(tie_word_embeddings=True)
        assert projected.lm_head.weight is projected.model.embed_tokens.weight
        assert projected.output_projection.weight.shape == (16, 32)
        same_size = self.make_model(tie_word_embeddings=True, embedding_size=32)
        assert same_size.output_projection is None
        assert same_size.lm_head.weight is same_size.model.embed_tokens.weight
        untied = self.make_model()
        assert untied.output_projection is None
        assert untied.lm_head.weight.shape == (self.vocab_size, 32)

        projected.save_pretrained(tmp_path)
        loaded = MidiLSTMForCausalLM.from_pretrained(tmp_path).eval()
        assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
        ids = random_ids(2, 8, self.vocab_size)
        with torch.no_grad():
            torch.testing.assert_close(
                loaded(input_ids=ids).logits, projected(input_ids=ids).logits
            )

    def test_initialisation_is_pytorch_style(self):
        """Unit-scale embeddings and uniform(+-1/sqrt(hidden)) LSTM weights, not normal(0.02)."""
        model = self.model_class(self.get_config(vocab_size=400, embedding_size=64))
        embedding_std = model.model.embed_tokens.weight.std().item()
        assert 0.9 < embedding_std < 1.1
        bound = 1.0 / model.config.hidden_size**0.5
        for layer in model.model.layers:
            for param in layer.lstm.parameters():
                assert param.abs().max() <= bound
                assert param.std() > 0.5 * bound / 3**0.5

    def test_dropout_is_active_only_in_training(self):
        model = self.make_model(hidden_dropout=0.5, embedding_dropout=0.1)
        ids = random_ids(2, 8, self.vocab_size)
        with torch.no_grad():
            assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)
            model.train()
            torch.manual_seed(0)
            first = model(input_ids=ids).logits
            torch.manual_seed(1)
            assert not torch.equal(first, model(input_ids=ids).logits)

    def test_hidden_states_are_returned_per_layer(self):
        model = self.make_model()
        ids = random_ids(2, 8, self.vocab_size)
        with torch.no_grad():
            out = model.model(input_ids=ids, output_hidden_states=True)
        assert len(out.hidden_states) == model.config.num_hidden_layers + 1
        assert out.hidden_states[0].shape == (2, 8, 16)
        assert out.hidden_states[-1].shape == (2, 8, 32)

    def test_bad_inputs_raise_precise_errors(self):
        model = self.make_model()
        ids = random_ids(2, 8, self.vocab_size)
        with pytest.raises(ValueError, match="attention_mask"):
            model(input_ids=ids, attention_mask=torch.ones(2, 5, dtype=torch.long))
        with pytest.raises(ValueError, match="attention_mask"):
            model(input_ids=ids, attention_mask=torch.ones(3, 8, dtype=torch.long))
        with pytest.raises(ValueError, match="inputs_embeds"):
            model(inputs_embeds=torch.zeros(2, 8, 32))
        with pytest.raises(ValueError, match="exactly one"):
            model()
        filled = DynamicCache()
        filled.update(torch.zeros(2, 1, 3, 4), torch.zeros(2, 1, 3, 4), 0)
        with pytest.raises(TypeError, match="MidiLSTMCache"):
            model(input_ids=ids, cache=filled)

    def test_state_cannot_be_cropped(self):
        model = self.make_model()
        with torch.no_grad():
            cache = model(input_ids=random_ids(1, 4, self.vocab_size), use_cache=True).cache
        cache.crop(0)
        with pytest.raises(ValueError, match="rolled back"):
            cache.crop(-1)


class TestMidiLSTMStaticAndCompiled:
    """The LSTM's ``(h, c)`` is fixed-size, so it runs on transformers' static cache and its decode
    step compiles (``torch.compile(fullgraph=True)``, ``generate(compile_config=...)``)."""

    tester = TestMidiLSTM()

    def test_caches_built_from_the_config_hold_the_state(self):
        """transformers' DynamicCache and StaticCache built from the config are recurrent-state
        caches the model runs on in place, with the same logits as its own MidiLSTMCache."""
        from transformers import StaticCache

        model = self.tester.make_model()
        ids = random_ids(2, 9, self.tester.vocab_size)
        with torch.no_grad():
            reference = model(input_ids=ids, use_cache=False).logits
            for cache in (
                DynamicCache(config=model.config),
                StaticCache(config=model.config, max_cache_len=4),
            ):
                first = model(input_ids=ids[:, :6], cache=cache, use_cache=True)
                assert first.cache is cache
                steps = [first.logits]
                steps += [model(input_ids=ids[:, t : t + 1], cache=cache).logits for t in (6, 7, 8)]
                torch.testing.assert_close(torch.cat(steps, 1), reference, rtol=1e-5, atol=1e-5)

    def test_compiled_generate_equals_uncached_greedy(self):
        """``generate(cache_implementation="static", compile_config=...)`` decodes with the
        compiled step (fullgraph, no recompilation per step) and gives the uncached tokens, on
        left-padded rows too."""
        from transformers import CompileConfig

        torch._dynamo.reset()
        model = self.tester.make_model()
        rows = [random_ids(1, n, self.tester.vocab_size, seed=n)[0] for n in (5, 8, 3)]
        ids, mask = left_pad(rows)
        compile_config = CompileConfig(fullgraph=True, dynamic=False, backend="eager")
        compile_config._compile_all_devices = True  # transformers compiles on GPUs only otherwise
        uncached = self.tester.generate(model, ids, attention_mask=mask, use_cache=False)
        compiled = self.tester.generate(
            model,
            ids,
            attention_mask=mask,
            cache_implementation="static",
            compile_config=compile_config,
        )
        assert hasattr(model, "_compiled_call"), "generate did not use the compiled step"
        assert torch.equal(compiled, uncached)

    def test_compiled_step_with_padding_mask_matches_packing(self):
        """A compiled forward given a padding mask (no host-side packing in a graph) steps through
        the positions and leaves padded ones out of the state, like the packed eager path."""
        torch._dynamo.reset()
        model = self.tester.make_model()
        rows = [random_ids(1, n, self.tester.vocab_size, seed=n)[0] for n in (6, 3)]
        ids, mask = left_pad(rows)
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        with torch.no_grad():
            eager = model(input_ids=ids, attention_mask=mask, use_cache=True)
            traced = compiled(input_ids=ids, attention_mask=mask, use_cache=True)
        real = mask.bool()
        torch.testing.assert_close(traced.logits[real], eager.logits[real], rtol=1e-5, atol=1e-5)
        for layer in range(model.config.num_hidden_layers):
            for got, want in zip(traced.cache.get_state(layer), eager.cache.get_state(layer)):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
