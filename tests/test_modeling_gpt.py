"""MidiGPT: the shared causal-LM checks for both position types, plus GPT-specific behaviour."""

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

from midiformers import MidiGPTConfig, MidiGPTForCausalLM, MidiGPTModel


class TestMidiGPT(CausalLMTesterMixin):
    config_class = MidiGPTConfig
    base_model_class = MidiGPTModel
    model_class = MidiGPTForCausalLM
    position_embedding_type = "absolute"
    invalid_configs = [
        ({"hidden_size": 30}, "hidden_size"),
        ({"position_embedding_type": "alibi"}, "position_embedding_type"),
        (
            {"hidden_size": 36, "num_attention_heads": 4, "position_embedding_type": "rotary"},
            "rotary",
        ),
        ({"hidden_act": "no_such_activation"}, "hidden_act"),
        ({"hidden_dropout": 1.5}, "hidden_dropout"),
        ({"max_position_embeddings": 0}, "max_position_embeddings"),
    ]

    def get_config(self, **overrides) -> MidiGPTConfig:
        values = dict(
            vocab_size=self.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=256,
            position_embedding_type=self.position_embedding_type,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            pad_token_id=PAD,
            bos_token_id=BOS,
            eos_token_id=EOS,
        )
        values.update(overrides)
        return MidiGPTConfig(**values)

    # ------------------------------------------------------------ GPT specific

    def test_sdpa_and_eager_give_the_same_logits(self):
        sdpa = self.make_model()
        eager = self.make_model(attn_implementation="eager")
        eager.load_state_dict(sdpa.state_dict())
        assert eager.config._attn_implementation == "eager"
        assert sdpa.config._attn_implementation == "sdpa"
        rows = [random_ids(1, n, self.vocab_size, seed=n)[0] for n in (7, 10, 4)]
        ids, mask = left_pad(rows)
        real = mask.bool()  # padded positions attend to nothing: their logits are arbitrary
        with torch.no_grad():
            for inputs in ({"input_ids": ids}, {"input_ids": ids, "attention_mask": mask}):
                keep = real if "attention_mask" in inputs else slice(None)
                torch.testing.assert_close(
                    eager(**inputs).logits[keep], sdpa(**inputs).logits[keep], rtol=1e-4, atol=1e-5
                )
        sdpa_tokens = self.generate(sdpa, ids, attention_mask=mask, max_new_tokens=16)
        eager_tokens = self.generate(eager, ids, attention_mask=mask, max_new_tokens=16)
        assert torch.equal(eager_tokens, sdpa_tokens)

    def test_embeddings_are_tied_by_default(self, tmp_path):
        tied = self.make_model()
        assert tied.lm_head.weight is tied.model.embed_tokens.weight
        untied = self.make_model(tie_word_embeddings=False)
        assert untied.lm_head.weight is not untied.model.embed_tokens.weight
        untied.save_pretrained(tmp_path)
        loaded = MidiGPTForCausalLM.from_pretrained(tmp_path)
        torch.testing.assert_close(loaded.lm_head.weight, untied.lm_head.weight)
        assert not torch.equal(loaded.lm_head.weight, loaded.model.embed_tokens.weight)

    def test_explicit_position_ids_match_the_default(self):
        model = self.make_model()
        rows = [random_ids(1, n, self.vocab_size, seed=n)[0] for n in (6, 3)]
        ids, mask = left_pad(rows)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            implicit = model(input_ids=ids, attention_mask=mask).logits
            explicit = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        torch.testing.assert_close(explicit, implicit)

    def test_incremental_forward_with_cache_matches_full_forward(self):
        model = self.make_model()
        ids = random_ids(2, 14, self.vocab_size)
        with torch.no_grad():
            full = model(input_ids=ids).logits
            first = model(input_ids=ids[:, :9], use_cache=True)
            rest = model(input_ids=ids[:, 9:], cache=first.cache, use_cache=True)
            assert rest.cache.get_seq_length() == 14
            no_cache = model(input_ids=ids, use_cache=False)
        assert no_cache.cache is None
        torch.testing.assert_close(torch.cat([first.logits, rest.logits], 1), full)

    def test_hidden_states_are_returned(self):
        model = self.make_model()
        out = model(input_ids=random_ids(1, 5, self.vocab_size), output_hidden_states=True)
        assert len(out.hidden_states) == model.config.num_hidden_layers + 1

    def test_mismatched_attention_mask_names_it(self):
        model = self.make_model()
        ids = random_ids(1, 5, self.vocab_size)
        with pytest.raises(ValueError, match="attention_mask"):
            model(input_ids=ids, attention_mask=torch.ones(1, 4, dtype=torch.long))

    def test_positions_beyond_the_table(self):
        model = self.make_model(max_position_embeddings=16)
        too_long = random_ids(1, 17, self.vocab_size)
        with pytest.raises(ValueError, match="max_position_embeddings"):
            model(input_ids=too_long)
        with pytest.raises(ValueError, match="max_position_embeddings"):
            self.generate(model, random_ids(1, 10, self.vocab_size), max_new_tokens=8)
        with pytest.raises(ValueError, match="max_position_embeddings"):
            model(input_ids=too_long[:, :2], position_ids=torch.tensor([[15, 16]]))
        # Left padding does not count: 20 columns but only 16 real tokens fit the table.
        ids, mask = left_pad([random_ids(1, 16, self.vocab_size)[0], too_long[0, :4]])
        extra_padding = torch.zeros(2, 4, dtype=torch.long)
        ids, mask = torch.cat([extra_padding, ids], 1), torch.cat([extra_padding, mask], 1)
        with torch.no_grad():
            assert model(input_ids=ids, attention_mask=mask).logits.shape == (2, 20, 61)


class TestMidiGPTRotary(RotaryTesterMixin, TestMidiGPT):
    position_embedding_type = "rotary"
    non_rotary = {"position_embedding_type": "absolute"}

    def test_positions_beyond_the_table(self):
        model = self.make_model(max_position_embeddings=16)
        assert model.model.embed_positions is None
        with torch.no_grad():
            out = model(input_ids=random_ids(1, 20, self.vocab_size))
        assert out.logits.shape == (1, 20, self.vocab_size)

    def test_rotary_positions_are_relative(self):
        """Shifting every position by a constant leaves rotary attention unchanged."""
        model = self.make_model()
        ids = random_ids(1, 9, self.vocab_size)
        positions = torch.arange(9).unsqueeze(0)
        with torch.no_grad():
            base = model(input_ids=ids, position_ids=positions).logits
            shifted = model(input_ids=ids, position_ids=positions + 37).logits
        torch.testing.assert_close(shifted, base, rtol=1e-4, atol=1e-4)


def test_resize_position_embeddings_keeps_learned_rows():
    """The learned position table grows (old rows kept, new ones usable) and shrinks, for the
    language model and its heads alike; rotary models have no table to resize."""
    from midiformers.modeling.modeling_gpt import MidiGPTForSequenceClassification

    config = dict(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
    for model_class in (MidiGPTForCausalLM, MidiGPTForSequenceClassification):
        model = model_class(MidiGPTConfig(max_position_embeddings=8, **config)).eval()
        learned = model.get_position_embeddings().weight.detach().clone()
        ids = random_ids(1, 12, 40)
        with pytest.raises(ValueError, match="max_position_embeddings is 8"):
            model(input_ids=ids)
        model.resize_position_embeddings(16)
        assert model.config.max_position_embeddings == 16
        torch.testing.assert_close(model.get_position_embeddings().weight[:8], learned)
        model(input_ids=ids)
        model.resize_position_embeddings(4)
        torch.testing.assert_close(model.get_position_embeddings().weight, learned[:4])
    rotary = MidiGPTForCausalLM(MidiGPTConfig(position_embedding_type="rotary", **config))
    assert rotary.get_position_embeddings() is None
    with pytest.raises(ValueError, match="rotary"):
        rotary.resize_position_embeddings(16)


def test_heads_that_do_not_split_evenly_are_refused():
    """Tensor parallelism splits q/k/v by rows: with 3 heads on 2 processes a process holds
    1.5 heads, which must fail with the reason rather than a shape error deep in a view."""
    model = MidiGPTForCausalLM(
        MidiGPTConfig(vocab_size=40, hidden_size=24, num_hidden_layers=1, num_attention_heads=3)
    ).eval()
    attention = model.model.layers[0].self_attn
    for name in ("q_proj", "k_proj", "v_proj"):  # what "colwise" leaves the first process
        whole = getattr(attention, name)
        half = torch.nn.Linear(24, 12)
        half.load_state_dict({"weight": whole.weight[:12], "bias": whole.bias[:12]})
        setattr(attention, name, half)
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        model(input_ids=random_ids(1, 5, 40))
