"""Shared checks that every causal midiformers architecture must pass (the transformers
``ModelTesterMixin`` idea): subclass :class:`CausalLMTesterMixin` in ``test_modeling_<arch>.py``,
set the class attributes and override :meth:`get_config` with tiny dimensions.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from datasets import Dataset
from huggingface_hub.errors import StrictDataclassError
from transformers import (
    AutoConfig,
    AutoModel,
    Trainer,
    TrainingArguments,
    default_data_collator,
)
from transformers.integrations.tensor_parallel import ALL_PARALLEL_STYLES

import midiformers  # noqa: F401  (registers the Auto classes)
from midiformers.modeling._layers import RelativePositionEmbedding

PAD, BOS, EOS = 0, 1, 2

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")

OUT_OF_RANGE: tuple[tuple[str, object], ...] = (
    ("vocab_size", 0),
    ("hidden_size", 0),
    ("embedding_size", -4),
    ("num_hidden_layers", 0),
    ("num_encoder_layers", 0),
    ("num_attention_heads", 0),
    ("intermediate_size", 0),
    ("max_position_embeddings", 0),
    ("max_relative_position", 0),
    ("hidden_dropout", 1.0),
    ("attention_dropout", -0.1),
    ("embedding_dropout", 1.5),
    ("classifier_dropout", 1.0),
    ("initializer_range", 0.0),
    ("layer_norm_eps", 0.0),
    ("rope_theta", -1.0),
    ("hidden_act", "no_such_activation"),
    ("pad_token_id", -1),
    ("bos_token_id", -1),
    ("eos_token_id", [EOS, "2"]),
)
"""A value outside its range for every common field; each config must reject those it has."""


def spread_weights(model: torch.nn.Module, seed: int = 0, std: float = 0.15) -> None:
    """Re-draw matrix weights with a larger spread so greedy argmaxes are far from ties."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def random_ids(batch: int, length: int, vocab_size: int, seed: int = 0) -> torch.LongTensor:
    """Token ids that avoid the special ids (pad, bos, eos)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab_size, (batch, length), generator=generator)


def left_pad(rows: list[torch.LongTensor]) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Left-pad 1-D id tensors with PAD; return ids and attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = row
        mask[i, width - len(row) :] = 1
    return ids, mask


class ModelTesterMixin:
    """Checks shared by every midiformers model, whatever its head.

    Subclasses set ``config_class``, ``base_model_class`` (the headless model, or None),
    ``model_class``, ``auto_class_name`` and ``invalid_configs`` (constructor kwargs that
    must fail, with the field name the message must contain), and override
    :meth:`get_config` (tiny dimensions) and, for non-causal heads, :meth:`model_inputs`.
    """

    config_class: type
    base_model_class: type | None
    model_class: type
    auto_class_name: str = "AutoModelForCausalLM"
    vocab_size: int = 61
    invalid_configs: list[tuple[dict, str]] = []
    wrongly_typed_fields: tuple[tuple[str, object], ...] = (
        ("hidden_size", "wide"),
        ("use_cache", "yes"),
    )
    """Fields given a value of the wrong type, which the config must reject by name."""

    def get_config(self, **overrides):
        raise NotImplementedError

    def model_inputs(self, batch: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
        """Inputs for one forward pass with labels (causal LM: the ids are the labels)."""
        ids = random_ids(batch, length, self.vocab_size, seed=seed)
        return {"input_ids": ids, "labels": ids.clone()}

    def make_model(self, seed: int = 0, spread: bool = True, **overrides):
        torch.manual_seed(seed)
        model = self.model_class(self.get_config(**overrides))
        if spread:
            spread_weights(model, seed=seed)
        return model.eval()

    def auto_class(self):
        import transformers

        return getattr(transformers, self.auto_class_name)

    @staticmethod
    def without_labels(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in inputs.items() if k != "labels"}

    # ------------------------------------------------------------------ config

    def test_model_type_is_namespaced(self):
        config = self.get_config()
        assert config.model_type.startswith("midiformers_")
        assert AutoConfig.for_model(config.model_type).__class__ is self.config_class
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "pad_token_id"):
            assert hasattr(config, name), name

    def test_config_field_types_are_checked(self):
        # @strict only checks types when annotations are real objects: a config module with
        # `from __future__ import annotations` silently accepts these.
        for field, value in self.wrongly_typed_fields:
            with pytest.raises(Exception) as info:
                self.get_config(**{field: value})
            assert field in str(info.value), (field, str(info.value))

    def test_invalid_configs_name_the_field(self):
        for kwargs, field in self.invalid_configs:
            with pytest.raises(Exception) as info:
                self.get_config(**kwargs)
            assert field in str(info.value), (kwargs, str(info.value))

    def test_common_field_ranges(self):
        """Every model checks the fields they share alike: ranges declared on the fields
        (so later assignments are checked too), special ids inside the vocabulary."""
        fields = {field.name: field for field in dataclasses.fields(self.config_class)}
        checked = 0
        for name, value in OUT_OF_RANGE:
            if name not in fields:
                continue
            assert fields[name].metadata.get("validator"), f"{name} declares no range"
            with pytest.raises(StrictDataclassError, match=f"field '{name}'"):
                self.get_config(**{name: value})
            config = self.get_config()
            with pytest.raises(StrictDataclassError, match=f"field '{name}'"):
                setattr(config, name, value)
            checked += 1
        assert checked >= 6
        vocab_size = self.get_config().vocab_size
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            with pytest.raises(StrictDataclassError, match=rf"{name} \({vocab_size}\) must lie in"):
                self.get_config(**{name: vocab_size})
            self.get_config(**{name: None})
        # transformers' "no end-of-sequence token": generate never stops early.
        assert self.get_config(eos_token_id=-1).eos_token_id == -1

    def test_config_saved_before_loads(self, tmp_path):
        """A config.json written before the field validators (tests/fixtures/configs, saved by
        the previous code) still loads, as the same class, and builds a model."""
        from midiformers.modeling import architecture_for

        name = architecture_for(self.config_class.model_type).name
        shutil.copy(os.path.join(FIXTURES, "configs", f"{name}.json"), tmp_path / "config.json")
        saved = json.loads((tmp_path / "config.json").read_text())
        config = AutoConfig.from_pretrained(tmp_path)
        assert type(config) is self.config_class
        for key, value in saved.items():
            if key not in ("auto_map", "transformers_version", "dtype", "id2label"):
                assert getattr(config, key) == value, key
        self.auto_class().from_config(config)

    # ------------------------------------------------------------ persistence

    def test_save_load_round_trip(self, tmp_path):
        model = self.make_model()
        model.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").exists()
        assert "auto_map" in json.loads((tmp_path / "config.json").read_text())
        loaded = self.auto_class().from_pretrained(tmp_path).eval()
        assert type(loaded) is self.model_class
        inputs = self.without_labels(self.model_inputs(2, 11))
        with torch.no_grad():
            torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits)

    def test_listed_in_the_registry(self):
        from midiformers.modeling import ARCHITECTURES, architecture_for

        arch = architecture_for(self.config_class.model_type)
        assert ARCHITECTURES[arch.name] is arch
        assert (arch.config_class, arch.model_class) == (self.config_class, self.model_class)
        assert arch.auto_class == self.auto_class_name
        assert architecture_for(arch.name) is arch and arch.display_name

    def test_auto_classes(self):
        config = self.get_config()
        if self.base_model_class is not None:
            assert type(AutoModel.from_config(config)) is self.base_model_class
        assert type(self.auto_class().from_config(config)) is self.model_class

    def test_remote_code_load_without_midiformers(self, tmp_path):
        model = self.make_model()
        model.save_pretrained(tmp_path / "model")
        inputs = self.without_labels(self.model_inputs(2, 11))
        torch.save(inputs, tmp_path / "inputs.pt")
        script = textwrap.dedent(
            f"""
            import sys
            sys.modules["midiformers"] = None  # the package must not be importable here
            import torch
            import transformers
            auto_class = getattr(transformers, {self.auto_class_name!r})
            model = auto_class.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)
            assert not type(model).__module__.startswith("midiformers"), type(model).__module__
            inputs = torch.load({str(tmp_path / "inputs.pt")!r})
            with torch.no_grad():
                torch.save(model.eval()(**inputs).logits, {str(tmp_path / "logits.pt")!r})
            """
        )
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_MODULES_CACHE": str(tmp_path / "modules"),
            "PYTHONPATH": "",
        }
        result = subprocess.run(
            [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr[-3000:]
        with torch.no_grad():
            expected = model(**inputs).logits
        torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected)

    # ---------------------------------------------------------------- training

    def test_gradient_checkpointing_same_gradients(self):
        inputs = self.model_inputs(2, 12)

        def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
            model = self.make_model().train()
            if checkpointing:
                model.activation_checkpointing_enable()
                assert model.is_activation_checkpointing
                assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
            torch.manual_seed(0)
            model(**inputs).loss.backward()
            return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

        plain, checkpointed = gradients(False), gradients(True)
        assert plain.keys() == checkpointed.keys() and plain
        for name in plain:
            torch.testing.assert_close(checkpointed[name], plain[name], msg=name)

    def test_trainer_step(self, tmp_path):
        model = self.make_model(spread=False).train()
        inputs = self.model_inputs(8, 16)
        dataset = Dataset.from_dict({k: v.tolist() for k, v in inputs.items()})
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        args = TrainingArguments(
            output_dir=str(tmp_path),
            max_steps=1,
            per_device_train_batch_size=4,
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=dataset, data_collator=default_data_collator
        )
        result = trainer.train()
        assert trainer.state.global_step == 1
        assert torch.isfinite(torch.tensor(result.training_loss))
        changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
        assert changed


class CausalLMTesterMixin(ModelTesterMixin):
    """Behaviour every causal LM of midiformers shares: loss, generation and caching."""

    new_tokens: int = 64

    def requires_attentions(self) -> None:
        if "attentions" not in (self.model_class._can_record_outputs or {}):
            pytest.skip(f"{self.model_class.__name__} has no attention layers to record")

    def requires_compile(self) -> None:
        if not self.model_class._can_compile_fullgraph:
            pytest.skip(f"{self.model_class.__name__} does not declare _can_compile_fullgraph")

    def generate(self, model, input_ids, attention_mask=None, use_cache=True, **kwargs):
        kwargs.setdefault("do_sample", False)
        kwargs.setdefault("max_new_tokens", self.new_tokens)
        kwargs.setdefault("min_new_tokens", kwargs["max_new_tokens"])
        with torch.no_grad():
            return model.generate(
                input_ids,
                attention_mask=attention_mask,
                use_cache=use_cache,
                pad_token_id=PAD,
                **kwargs,
            )

    # ----------------------------------------------------------------- forward

    def test_forward_shapes_and_loss(self):
        model = self.make_model()
        ids = random_ids(2, 12, self.vocab_size)
        labels = ids.clone()
        labels[0, :4] = -100
        out = model(input_ids=ids, labels=labels)
        assert out.logits.shape == (2, 12, self.vocab_size)
        shift_logits = out.logits[:, :-1].reshape(-1, self.vocab_size)
        shift_labels = labels[:, 1:].reshape(-1)
        expected = torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
        torch.testing.assert_close(out.loss, expected)
        base = self.base_model_class(model.config)
        hidden = base(input_ids=ids).last_hidden_state
        assert hidden.shape[:2] == (2, 12)

    def test_num_items_in_batch_is_honoured(self):
        model = self.make_model()
        ids = random_ids(2, 10, self.vocab_size)
        mean_loss = model(input_ids=ids, labels=ids).loss
        items = 2 * 9
        summed = model(input_ids=ids, labels=ids, num_items_in_batch=torch.tensor(2 * items)).loss
        torch.testing.assert_close(summed, mean_loss / 2)

    def test_logits_to_keep(self):
        model = self.make_model()
        ids = random_ids(2, 9, self.vocab_size)
        full = model(input_ids=ids).logits
        last = model(input_ids=ids, logits_to_keep=1).logits
        assert last.shape == (2, 1, self.vocab_size)
        torch.testing.assert_close(last, full[:, -1:], rtol=1e-4, atol=1e-5)

    def test_overfit_one_batch(self):
        torch.manual_seed(0)
        model = self.model_class(self.get_config()).train()
        pattern = torch.arange(3, 3 + 8).repeat(4)
        ids = torch.stack([pattern, pattern.roll(3)])
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(30):
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        assert losses[-1] < 0.5 * losses[0], losses

    def continuation_kwargs(self, first) -> dict:
        """Extra inputs a forward that continues from ``first``'s cache needs (none by default)."""
        return {}

    def test_past_key_values_alias_is_the_cache(self):
        """``past_key_values=`` (the pre-5.x name) is the cache, with transformers' warning."""
        model = self.make_model()
        ids = random_ids(2, 10, self.vocab_size)

        def next_logits(alias: bool) -> torch.Tensor:
            with torch.no_grad():
                first = model(input_ids=ids[:, :7], use_cache=True)
                name = "past_key_values" if alias else "cache"
                extra = {name: first.cache, **self.continuation_kwargs(first)}
                return model(input_ids=ids[:, 7:], use_cache=True, **extra).logits

        with pytest.warns(FutureWarning, match="past_key_values"):
            via_alias = next_logits(alias=True)
        via_cache = next_logits(alias=False)
        torch.testing.assert_close(via_alias, via_cache)
        with torch.no_grad():
            fresh = model(input_ids=ids[:, 7:], use_cache=True).logits
        assert not torch.allclose(via_alias, fresh, atol=1e-3), "the alias cache was ignored"

    # ----------------------------------------------------------------- outputs

    def test_attentions_one_per_layer(self):
        self.requires_attentions()
        model = self.make_model(attn_implementation="eager")
        inputs = self.without_labels(self.model_inputs(2, 7))
        with torch.no_grad():
            out = model(**inputs, output_attentions=True)
        config = model.config
        assert len(out.attentions) == config.num_hidden_layers
        for weights in out.attentions:
            assert weights.shape == (2, config.num_attention_heads, 7, 7)
            torch.testing.assert_close(
                weights.sum(-1), torch.ones(2, config.num_attention_heads, 7)
            )
            assert torch.all(weights.triu(diagonal=1) == 0), "a query attends to a future key"

    def test_hidden_states_one_per_layer_plus_input(self):
        model = self.make_model()
        inputs = self.without_labels(self.model_inputs(2, 7))
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)
            base = model.model(**inputs, output_hidden_states=True)
        assert len(out.hidden_states) == model.config.num_hidden_layers + 1
        assert all(h.shape[:2] == (2, 7) for h in out.hidden_states)
        torch.testing.assert_close(base.hidden_states[-1], base.last_hidden_state)
        assert model(**inputs).hidden_states is None

    def test_tuple_output(self):
        model = self.make_model()
        inputs = self.model_inputs(2, 7)
        with torch.no_grad():
            as_dict = model(**inputs, use_cache=False)
            as_tuple = model(**inputs, use_cache=False, return_dict=False)
            base_tuple = model.model(**self.without_labels(inputs), return_dict=False)
        assert isinstance(as_tuple, tuple) and isinstance(base_tuple, tuple)
        torch.testing.assert_close(as_tuple[0], as_dict.loss)
        torch.testing.assert_close(as_tuple[1], as_dict.logits)
        torch.testing.assert_close(base_tuple[0], model.model(**self.without_labels(inputs))[0])

    def real_token_logits(self, attn_implementation: str) -> torch.Tensor:
        """Logits of the real tokens of a left-padded batch under one attention backend."""
        model = self.make_model(attn_implementation=attn_implementation)
        assert model.config._attn_implementation == attn_implementation
        rows = [random_ids(1, n, self.vocab_size, seed=n)[0] for n in (7, 10, 4)]
        ids, mask = left_pad(rows)
        extra = self.without_labels(self.model_inputs(3, 4))
        extra.pop("input_ids")
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask, **extra).logits[mask.bool()]

    def test_eager_and_sdpa_agree_with_left_padding(self):
        self.requires_attentions()
        torch.testing.assert_close(
            self.real_token_logits("sdpa"), self.real_token_logits("eager"), rtol=1e-4, atol=1e-5
        )

    @pytest.mark.slow
    def test_flex_attention_agrees_with_eager_with_left_padding(self):
        """flex_attention compiles its kernel on first use (seconds on CPU), hence ``slow``."""
        self.requires_attentions()
        torch.testing.assert_close(
            self.real_token_logits("flex_attention"),
            self.real_token_logits("eager"),
            rtol=1e-4,
            atol=1e-5,
        )

    # -------------------------------------------------------------- generation

    def test_generate_returns_attentions_and_hidden_states(self):
        self.requires_attentions()
        model = self.make_model(attn_implementation="eager")
        prompt = random_ids(2, 5, self.vocab_size)
        out = self.generate(
            model,
            prompt,
            max_new_tokens=4,
            output_attentions=True,
            output_hidden_states=True,
            return_dict_in_generate=True,
        )
        layers = model.config.num_hidden_layers
        assert len(out.attentions) == len(out.hidden_states) == 4
        assert all(len(step) == layers for step in out.attentions)
        assert all(len(step) == layers + 1 for step in out.hidden_states)
        assert out.attentions[0][0].shape[-2:] == (5, 5)  # the prompt
        assert out.attentions[-1][0].shape[-2:] == (1, 8)  # the last step: one query, 8 keys

    def test_assisted_decoding_equals_greedy(self):
        if not all(getattr(layer, "is_croppable", True) for layer in self.cache_layers()):
            pytest.skip("assisted decoding rolls the cache back, which this cache cannot do")
        model = self.make_model(attn_implementation="eager")
        prompt = random_ids(1, 8, self.vocab_size).repeat(1, 2)  # repeats for prompt lookup
        greedy = self.generate(model, prompt, max_new_tokens=12)
        for assist in (
            {"prompt_lookup_num_tokens": 3},
            {"assistant_model": self.make_model(seed=1)},
        ):
            out = self.generate(
                model,
                prompt,
                max_new_tokens=12,
                output_attentions=True,
                return_dict_in_generate=True,
                **assist,
            )
            assert torch.equal(out.sequences, greedy), next(iter(assist))

    def cache_layers(self) -> list:
        model = self.make_model()
        with torch.no_grad():
            cache = model(**self.without_labels(self.model_inputs(1, 3)), use_cache=True).cache
        return list(cache.layers)

    def test_static_cache_greedy_equals_uncached(self):
        self.requires_compile()
        model = self.make_model()
        rows = [random_ids(1, n, self.vocab_size, seed=n)[0] for n in (5, 8, 3)]
        ids, mask = left_pad(rows)
        uncached = self.generate(
            model, ids, attention_mask=mask, use_cache=False, max_new_tokens=16
        )
        static = self.generate(
            model, ids, attention_mask=mask, max_new_tokens=16, cache_implementation="static"
        )
        assert torch.equal(static, uncached)

    def test_compiled_decode_step_has_no_graph_break(self):
        """``torch.compile(fullgraph=True)`` traces the static-cache decode step in one graph.

        The ``eager`` backend checks the tracing (any graph break raises) without paying for
        code generation; the compiled steps must give the uncompiled logits.
        """
        self.requires_compile()
        from transformers import StaticCache

        torch._dynamo.reset()
        model = self.make_model()
        ids = random_ids(2, 9, self.vocab_size)
        with torch.no_grad():
            cache = StaticCache(config=model.config, max_cache_len=16)
            first = model(input_ids=ids[:, :6], cache=cache, use_cache=True)
            extra = self.continuation_kwargs(first)
            reference = model(input_ids=ids, use_cache=False, **extra).logits[:, 6:]
            step = torch.compile(model, fullgraph=True, backend="eager")
            logits = [
                step(
                    input_ids=ids[:, t : t + 1],
                    position_ids=torch.full((2, 1), t),
                    cache=cache,
                    use_cache=True,
                    **extra,
                ).logits
                for t in range(6, 9)
            ]
        torch.testing.assert_close(torch.cat(logits, 1), reference, rtol=1e-4, atol=1e-5)

    def test_greedy_cached_equals_uncached(self):
        model = self.make_model()
        prompt = random_ids(1, 8, self.vocab_size)
        cached = self.generate(model, prompt, use_cache=True)
        uncached = self.generate(model, prompt, use_cache=False)
        assert cached.shape == (1, 8 + self.new_tokens)
        assert torch.equal(cached, uncached)

    def test_left_padded_batch_generation(self):
        model = self.make_model()
        rows = [random_ids(1, n, self.vocab_size, seed=n)[0] for n in (5, 8, 3)]
        ids, mask = left_pad(rows)
        cached = self.generate(model, ids, attention_mask=mask, use_cache=True)
        uncached = self.generate(model, ids, attention_mask=mask, use_cache=False)
        assert torch.equal(cached, uncached)
        for i, row in enumerate(rows):
            alone = self.generate(model, row.unsqueeze(0), use_cache=True)
            assert torch.equal(cached[i, ids.shape[1] :], alone[0, len(row) :]), f"row {i}"

    def test_left_padded_logits_equal_unpadded(self):
        model = self.make_model()
        rows = [random_ids(1, n, self.vocab_size, seed=n)[0] for n in (6, 9, 4)]
        ids, mask = left_pad(rows)
        with torch.no_grad():
            padded = model(input_ids=ids, attention_mask=mask).logits
            for i, row in enumerate(rows):
                alone = model(input_ids=row.unsqueeze(0)).logits[0]
                torch.testing.assert_close(padded[i, -len(row) :], alone, rtol=1e-4, atol=1e-4)

    def test_sampling_modes(self):
        model = self.make_model()
        prompt = random_ids(2, 6, self.vocab_size)
        for kwargs in ({"top_k": 5}, {"top_p": 0.9}, {"temperature": 0.7, "top_k": 0}):
            torch.manual_seed(0)
            out = self.generate(model, prompt, do_sample=True, max_new_tokens=12, **kwargs)
            assert out.shape == (2, 18)
            assert int(out.max()) < self.vocab_size
        torch.manual_seed(0)
        first = self.generate(model, prompt, do_sample=True, max_new_tokens=12, top_k=5)
        torch.manual_seed(0)
        again = self.generate(model, prompt, do_sample=True, max_new_tokens=12, top_k=5)
        assert torch.equal(first, again)

    def test_beam_search_cached_equals_uncached(self):
        model = self.make_model()
        prompt = random_ids(2, 6, self.vocab_size)
        beams = dict(num_beams=3, max_new_tokens=16)
        cached = self.generate(model, prompt, use_cache=True, **beams)
        uncached = self.generate(model, prompt, use_cache=False, **beams)
        assert cached.shape == (2, 22)
        assert torch.equal(cached, uncached)

    # ------------------------------------------------------------- parallelism

    parallel_variants: tuple[dict, ...] = ({},)
    """Config overrides whose tensor-parallel plans differ; each is split for real."""

    def split_model(self, variant: dict):
        """The tiny model of ``variant``, skipping models that declare no tensor-parallel plan."""
        if not self.get_config(**variant).base_model_tp_plan:
            pytest.skip(
                f"{self.model_class.__name__} declares no tensor-parallel plan: a recurrence has "
                "no heads or feed-forward width to split"
            )
        return self.make_model(**variant)

    def test_tp_plan_names_real_modules(self):
        """Every rule of the plan names a parameter or module of the model (no typo, no rule
        for another variant), with a style transformers knows."""
        for variant in self.parallel_variants:
            model = self.split_model(variant)
            plan = model.tp_plan
            names = {layer_wildcard(name) for name, _ in model.named_parameters()}
            names |= {layer_wildcard(name) for name, _ in model.named_modules()}
            assert set(plan) - names == set(), variant
            assert set(plan.values()) <= set(ALL_PARALLEL_STYLES), variant

    def test_tp_plan_splits_every_attention_and_feed_forward(self):
        """q/k/v split by output rows, o_proj by input columns, each feed-forward likewise, so
        every block needs one all-reduce per residual branch; per-head relative embeddings go
        with their heads and a shared table stays whole with its gradient summed."""
        for variant in self.parallel_variants:
            model = self.split_model(variant)
            plan = model.tp_plan
            split = 0
            for name, module in model.named_modules():
                generic = layer_wildcard(name)
                if all(hasattr(module, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")):
                    styles = [plan.get(f"{generic}.{p}") for p in ("q_proj", "k_proj", "v_proj")]
                    assert styles == ["colwise"] * 3, (name, styles)
                    assert plan.get(f"{generic}.o_proj") == "rowwise", name
                    split += 1
                if hasattr(module, "fc_in") and hasattr(module, "fc_out"):
                    assert plan.get(f"{generic}.fc_in") == "colwise", name
                    assert plan.get(f"{generic}.fc_out") == "rowwise", name
                    split += 1
                if isinstance(module, RelativePositionEmbedding):
                    if model.config.shared_relative_embeddings:
                        assert plan.get(generic) == "replicated_with_grad_allreduce", name
                    else:
                        assert plan.get(f"{generic}.weight") == "embedding_colwise", name
                        assert plan.get(generic) == "local_params", name
            assert split >= 2 * model.config.num_hidden_layers, variant

    @pytest.mark.slow
    def test_tensor_and_pipeline_parallel_match_one_process(self, tmp_path):
        """transformers' own tensor parallelism (``DistributedConfig(tp_size=2)``) and, where the
        model declares a pipeline plan, its pipeline parallelism (``pp_size=2``), run on two CPU
        processes (gloo): left-padded logits, every gradient and greedy tokens (dynamic and
        static cache) equal those of the whole model in one process."""
        for variant in self.parallel_variants:
            self.split_model(variant)
        if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
            pytest.skip("torch.distributed with the gloo backend is not available")
        names = []
        for index, variant in enumerate(self.parallel_variants):
            self.make_model(seed=index, **variant).save_pretrained(tmp_path / f"model_{index}")
            names.append(f"model_{index}")
        rows = [random_ids(1, n, self.vocab_size, seed=n)[0] for n in (7, 4)]
        ids, mask = left_pad(rows)
        inputs = {
            "forward": self.model_inputs(2, 9),
            "prompt": {"input_ids": ids, "attention_mask": mask},
        }
        torch.save(inputs, tmp_path / "inputs.pt")
        spec = {"auto_class": self.auto_class_name, "models": names, "new_tokens": 8}
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "parallel_worker.py")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += ["--nproc-per-node", "2", worker, str(tmp_path)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        for rank in (0, 1):
            reports = json.loads((tmp_path / f"result_{rank}.json").read_text())
            assert [r["model"] for r in reports] == names
            for report, variant in zip(reports, self.parallel_variants):
                assert report["problems"] == [], (variant, report["problems"])
                assert report["pipeline"] == bool(self.get_config(**variant).base_model_pp_plan)


def layer_wildcard(name: str) -> str:
    """A parameter or module name with its layer numbers as ``*``, the way parallel plans
    name them (``model.layers.3.mlp.fc_in`` -> ``model.layers.*.mlp.fc_in``)."""
    return ".".join("*" if part.isdigit() else part for part in name.split("."))


class RotaryTesterMixin:
    """RoPE behaviour of models whose config declares ``rope_parameters`` as transformers' Llama
    does: mix into a ``CausalLMTesterMixin`` subclass whose configuration uses rotary positions."""

    non_rotary: dict = {}
    """Config overrides that select the architecture's positions without RoPE."""

    def test_rope_scaling_without_rotary_positions_is_refused(self):
        linear = {"rope_type": "linear", "factor": 2.0}
        with pytest.raises(StrictDataclassError, match="only apply to rotary"):
            self.get_config(rope_parameters=linear, **self.non_rotary)
        config = self.get_config(**self.non_rotary)
        config.rope_parameters = linear  # set after the config's checks ran
        with pytest.raises(ValueError, match="only apply to rotary"):
            self.model_class(config)

    def rotary_model(self, **overrides):
        model = self.make_model(**overrides)
        if model.model.rotary_emb is None:
            pytest.skip(f"{type(model).__name__} is configured without rotary positions")
        return model

    def test_rope_theta_lives_in_rope_parameters(self, tmp_path):
        """``rope_theta=`` (the constructor argument, or the key of a config.json written before
        ``rope_parameters``) is folded into ``rope_parameters``; ``config.rope_theta`` reads and
        sets it, and the frequencies follow it."""
        model = self.rotary_model(rope_theta=500.0)
        config = model.config
        assert config.rope_parameters == {"rope_type": "default", "rope_theta": 500.0}
        assert config.rope_theta == 500.0
        head_dim = config.hidden_size // config.num_attention_heads
        expected = 500.0 ** (-torch.arange(0, head_dim, 2).float() / head_dim)
        torch.testing.assert_close(model.model.rotary_emb.inv_freq, expected)

        config.save_pretrained(tmp_path)
        saved = json.loads((tmp_path / "config.json").read_text())
        assert "rope_theta" not in saved and saved["rope_parameters"]["rope_theta"] == 500.0
        saved.pop("rope_parameters")
        saved["rope_theta"] = 250.0  # how a config.json looked before rope_parameters
        (tmp_path / "config.json").write_text(json.dumps(saved))
        older = AutoConfig.from_pretrained(tmp_path)
        assert older.rope_parameters == {"rope_type": "default", "rope_theta": 250.0}

        config.rope_theta = 40.0
        assert config.rope_parameters["rope_theta"] == 40.0
        with pytest.raises(ValueError, match="rope_theta"):
            config.rope_theta = 0.0
        with pytest.raises(StrictDataclassError, match="rope_theta"):
            self.get_config(rope_parameters={"rope_type": "default", "rope_theta": -1.0})
        with pytest.raises(KeyError, match="factor"):  # transformers' own validate_rope
            self.get_config(rope_parameters={"rope_type": "linear"})

    def test_linear_rope_scaling_stretches_positions(self, tmp_path):
        """Linear scaling by 2 at positions 2p equals plain RoPE at p, and the scaled frequencies
        come back after loading."""
        linear = {"rope_type": "linear", "factor": 2.0}
        plain = self.rotary_model()
        scaled = self.rotary_model(rope_parameters=linear)
        ids = random_ids(1, 9, self.vocab_size)
        positions = torch.arange(9).unsqueeze(0)
        with torch.no_grad():
            reference = plain(input_ids=ids, position_ids=positions).logits
            stretched = scaled(input_ids=ids, position_ids=2 * positions).logits
            assert not torch.allclose(scaled(input_ids=ids).logits, reference, atol=1e-4)
        torch.testing.assert_close(stretched, reference, rtol=1e-4, atol=1e-4)
        scaled.save_pretrained(tmp_path)
        loaded = self.auto_class().from_pretrained(tmp_path).eval()
        assert loaded.config.rope_parameters["rope_type"] == "linear"
        torch.testing.assert_close(
            loaded.model.rotary_emb.inv_freq, scaled.model.rotary_emb.inv_freq
        )
        with torch.no_grad():
            torch.testing.assert_close(
                loaded(input_ids=ids, position_ids=2 * positions).logits, reference
            )

    def test_dynamic_rope_changes_only_past_the_training_length(self):
        """Dynamic NTK scaling is plain RoPE up to ``max_position_embeddings`` and rescales the
        frequencies for longer inputs."""
        limit = 16
        plain = self.rotary_model(max_position_embeddings=limit)
        dynamic = self.rotary_model(
            max_position_embeddings=limit, rope_parameters={"rope_type": "dynamic", "factor": 4.0}
        )
        short, long = (
            random_ids(1, limit, self.vocab_size),
            random_ids(1, 2 * limit, self.vocab_size),
        )
        with torch.no_grad():
            torch.testing.assert_close(
                dynamic(input_ids=short).logits, plain(input_ids=short).logits
            )
            assert not torch.allclose(
                dynamic(input_ids=long).logits, plain(input_ids=long).logits, atol=1e-4
            )

    def test_rope_scaling_set_the_deprecated_way(self):
        """``config.rope_scaling = {...}`` (the 4.x attribute, still what many scripts set) becomes
        standardised ``rope_parameters`` that the model uses."""
        plain = self.rotary_model(max_position_embeddings=32)
        config = self.get_config(max_position_embeddings=32)
        with pytest.warns(FutureWarning, match="rope_scaling"):
            config.rope_scaling = {"type": "yarn", "factor": 4.0}
        assert config.rope_parameters["rope_type"] == "yarn"
        assert config.rope_parameters["original_max_position_embeddings"] == 32
        model = self.model_class(config).eval()
        assert model.model.rotary_emb.rope_type == "yarn"
        assert model.model.rotary_emb.attention_scaling > 1.0  # yarn's attention temperature
        assert not torch.allclose(model.model.rotary_emb.inv_freq, plain.model.rotary_emb.inv_freq)
