"""The architecture registry (``midiformers.ARCHITECTURES``) is what every consumer reads.

A throwaway architecture defined here, one registry line added for the test, is picked up by
train.py's model types and tasks, model building, the generation window, the demo's composer
list, model cards and the architecture comparison, with no other change anywhere.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub.dataclasses import strict
from model_tester import ModelTesterMixin
from torch import nn
from transformers import GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput
from transformers.utils.type_validators import interval

from midiformers import ARCHITECTURES, Architecture, architecture_for
from midiformers.modeling import register_auto_classes

TESTS = Path(__file__).resolve().parent
BENCHMARKS = TESTS.parent / "benchmarks"


@strict
class ToyConfig(PreTrainedConfig):
    """A cumulative-sum bag of embeddings: the smallest causal LM worth registering."""

    model_type = "midiformers_registry_test_toy"

    vocab_size: int = interval(min=1)(default=32)
    embedding_size: int = interval(min=1)(default=8)
    hidden_size: int = interval(min=1)(default=8)
    num_hidden_layers: int = interval(min=1)(default=1)
    head_bias: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2


class ToyModel(PreTrainedModel):
    config_class = ToyConfig
    base_model_prefix = "model"

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embedding_size)
        self.proj = nn.Linear(config.embedding_size, config.hidden_size)
        self.post_init()

    def forward(self, input_ids: torch.LongTensor, **kwargs) -> BaseModelOutput:
        hidden = self.proj(self.embed_tokens(input_ids).cumsum(1))
        return BaseModelOutput(last_hidden_state=hidden)


class ToyForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = ToyConfig
    base_model_prefix = "model"

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        self.model = ToyModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=config.head_bias)
        self.post_init()

    def forward(self, input_ids: torch.LongTensor, labels=None, **kwargs) -> CausalLMOutput:
        logits = self.lm_head(self.model(input_ids).last_hidden_state)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size)
        return CausalLMOutput(loss=loss, logits=logits)


TOY = Architecture(
    "toy",
    "Toy",
    ToyConfig,
    ToyModel,
    ToyForCausalLM,
    recurrent=True,
    variants={"bias": {"head_bias": True}, "no bias": {"head_bias": False}},
)
"""The one registry line of the throwaway architecture."""


@pytest.fixture
def toy(monkeypatch):
    """The registry with the toy architecture added (removed again after the test)."""
    monkeypatch.setitem(ARCHITECTURES, TOY.name, TOY)
    register_auto_classes()
    return TOY


def load_comparison():
    """``benchmarks/compare_architectures.py`` (not an installed package), imported by path."""
    sys.path.insert(0, str(BENCHMARKS))  # for its ``from _common import ...``
    try:
        spec = importlib.util.spec_from_file_location(
            "compare_architectures", BENCHMARKS / "compare_architectures.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(spec.name, module)  # dataclasses look their module up there
        spec.loader.exec_module(sys.modules[spec.name])
    finally:
        sys.path.remove(str(BENCHMARKS))
    return sys.modules[spec.name]


def test_lookup_by_short_name_or_model_type():
    for arch in ARCHITECTURES.values():
        assert architecture_for(arch.name) is arch
        assert architecture_for(arch.model_type) is arch
        assert arch.model_type == f"midiformers_{arch.name}"
    with pytest.raises(ValueError, match="unknown architecture 'gpt2'; known: lstm, gpt"):
        architecture_for("gpt2")
    assert architecture_for("gpt2", missing_ok=True) is None
    with pytest.raises(ValueError, match="task must be one of"):
        Architecture("x", "X", ToyConfig, ToyModel, ToyForCausalLM, task="translation")


def test_every_architecture_has_a_shared_tester():
    """A registry line without a test_modeling_<name>.py using the shared tester fails here."""
    tested = set()
    for path in sorted(TESTS.glob("test_modeling_*.py")):
        module = importlib.import_module(path.stem)
        tested |= {
            value.config_class
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, ModelTesterMixin)
            and hasattr(value, "config_class")
        }
    assert tested == {arch.config_class for arch in ARCHITECTURES.values()}


def test_train_py_reads_the_registry(toy, midi_tokenizer):
    from midiformers.training.arguments import DataArguments, ModelArguments
    from midiformers.training.run import TASKS, build_model, resolve_model_type, task_for

    assert resolve_model_type("toy") == resolve_model_type(toy.model_type) == toy.model_type
    assert task_for(toy.model_type) is TASKS["causal"]
    model_args = ModelArguments(model_type="toy", model_config={"hidden_size": 12})
    model = build_model(
        model_args, DataArguments(), midi_tokenizer, TASKS["causal"], toy.model_type, None
    )
    assert type(model) is ToyForCausalLM
    assert model.config.hidden_size == 12 and model.config.vocab_size == len(midi_tokenizer)

    composer_toy = dataclasses.replace(toy, conditioning="composer")
    ARCHITECTURES[toy.name] = composer_toy  # the fixture's monkeypatch restores the registry
    assert task_for(toy.model_type) is TASKS["vae"]
    ARCHITECTURES[toy.name] = dataclasses.replace(toy, task="sequence-classification")
    assert task_for(toy.model_type) is TASKS["classification"]


def test_generation_demo_and_cards_read_the_registry(toy):
    from midiformers.app.models import ModelEntry
    from midiformers.generation import context_length
    from midiformers.hub import make_model_card

    config = ToyConfig(id2label={0: "bach", 1: "chopin"})
    config.max_position_embeddings = 24
    model = ToyForCausalLM(config)
    assert context_length(model) is None  # recurrent: no window, whatever the config says
    ARCHITECTURES[toy.name] = dataclasses.replace(toy, recurrent=False)
    assert context_length(model) == 24

    assert ModelEntry("toy", "toy", config).composers == []
    ARCHITECTURES[toy.name] = dataclasses.replace(toy, conditioning="composer")
    assert ModelEntry("toy", "toy", config).composers == ["bach", "chopin"]

    assert "pipeline_tag: text-generation" in str(make_model_card(toy.model_type))
    ARCHITECTURES[toy.name] = dataclasses.replace(toy, task="sequence-classification")
    assert "pipeline_tag: text-classification" in str(make_model_card(toy.model_type))


def test_architecture_comparison_reads_the_registry(toy, midi_tokenizer):
    compare = load_comparison()
    variants = compare.registered_variants()
    generators = [a for a in ARCHITECTURES.values() if a.generates and not a.conditioning]
    assert list(dict.fromkeys(v.model_type for v in variants)) == [a.name for a in generators]
    toys = [v for v in variants if v.model_type == "toy"]
    assert [v.name for v in toys] == ["Toy (bias)", "Toy (no bias)"]
    config, count = compare.matched_config(toys[1], compare.QUICK, midi_tokenizer)
    assert config["hidden_size"] % 8 == 0 and "num_attention_heads" not in config  # recurrent
    assert abs(count - compare.QUICK.parameters) / compare.QUICK.parameters < 0.05

    ARCHITECTURES[toy.name] = dataclasses.replace(toy, conditioning="composer")
    assert "toy" not in {v.model_type for v in compare.registered_variants()}
