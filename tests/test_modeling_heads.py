"""Sequence-classification, token-classification and span (question-answering) heads over every
causal architecture: built on the architecture's own base model (no Auto lookup), padding-aware,
trainable, and saved and loaded like the language models."""

from __future__ import annotations

import json

import pytest
import torch
from model_tester import BOS, EOS, PAD, left_pad, random_ids

from midiformers import (
    MidiConformerConfig,
    MidiGPTConfig,
    MidiLSTMConfig,
    MusicTransformerConfig,
)
from midiformers.modeling import (
    modeling_conformer,
    modeling_gpt,
    modeling_lstm,
    modeling_music_transformer,
)

VOCAB = 40
COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, pad_token_id=PAD)
COMMON.update(bos_token_id=BOS, eos_token_id=EOS, hidden_dropout=0.0)
ATTENTION = dict(num_attention_heads=4, intermediate_size=64, attention_dropout=0.0)

ARCHITECTURES = {
    "gpt": (modeling_gpt, "MidiGPT", MidiGPTConfig, ATTENTION),
    "music_transformer": (
        modeling_music_transformer,
        "MusicTransformer",
        MusicTransformerConfig,
        {**ATTENTION, "max_relative_position": 8},
    ),
    "conformer": (
        modeling_conformer,
        "MidiConformer",
        MidiConformerConfig,
        {**ATTENTION, "conv_kernel_size": 3},
    ),
    "lstm": (modeling_lstm, "MidiLSTM", MidiLSTMConfig, {"embedding_size": 16}),
}
HEADS = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")


def build(name: str, head: str, **overrides) -> torch.nn.Module:
    module, prefix, config_class, extra = ARCHITECTURES[name]
    config = config_class(**{**COMMON, **extra, "num_labels": 3, **overrides})
    torch.manual_seed(0)
    return getattr(module, prefix + head)(config).eval()


@pytest.mark.parametrize("name", ARCHITECTURES)
@pytest.mark.parametrize("head", HEADS)
def test_head_wraps_the_architectures_own_base_model(name, head):
    module, prefix, _, _ = ARCHITECTURES[name]
    model = build(name, head)
    assert type(model.model) is getattr(module, prefix + "Model")
    assert head[3:] in type(model).__name__ and model.loss_type in head


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_sequence_classification_reads_the_last_real_token(name):
    """Left or right padding gives each row the logits it gets alone."""
    model = build(name, "ForSequenceClassification")
    rows = [random_ids(1, n, VOCAB, seed=n)[0] for n in (6, 3)]
    with torch.no_grad():
        alone = torch.cat([model(input_ids=row[None]).logits for row in rows])
        ids, mask = left_pad(rows)
        left = model(input_ids=ids, attention_mask=mask).logits
        right_ids = torch.stack([torch.cat([r, torch.full((6 - len(r),), PAD)]) for r in rows])
        right = model(input_ids=right_ids, attention_mask=(right_ids != PAD).long()).logits
    assert alone.shape == (2, 3)
    torch.testing.assert_close(left, alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(right, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_heads_train(name):
    """Each head returns a loss for its labels, with gradients down to the token embedding."""
    ids = random_ids(2, 5, VOCAB)
    labels = {
        "ForSequenceClassification": {"labels": torch.tensor([0, 2])},
        "ForTokenClassification": {"labels": torch.randint(0, 3, (2, 5))},
        "ForQuestionAnswering": {
            "start_positions": torch.tensor([1, 0]),
            "end_positions": torch.tensor([3, 4]),
        },
    }
    for head in HEADS:
        model = build(name, head).train()
        output = model(input_ids=ids, **labels[head])
        output.loss.backward()
        assert torch.isfinite(output.loss)
        assert model.get_input_embeddings().weight.grad.abs().sum() > 0
        if head == "ForQuestionAnswering":
            assert output.start_logits.shape == output.end_logits.shape == (2, 5)
        else:
            expected = (2, 3) if head == "ForSequenceClassification" else (2, 5, 3)
            assert output.logits.shape == expected


@pytest.mark.parametrize("name", ARCHITECTURES)
@pytest.mark.parametrize("head", HEADS)
def test_head_round_trip(name, head, tmp_path):
    model = build(name, head)
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    ids = random_ids(2, 5, VOCAB)
    with torch.no_grad():
        before, after = model(input_ids=ids), loaded(input_ids=ids)
    key = "start_logits" if head == "ForQuestionAnswering" else "logits"
    torch.testing.assert_close(after[key], before[key])


@pytest.mark.parametrize("name", ARCHITECTURES)
@pytest.mark.parametrize("head", HEADS)
def test_auto_classes_build_and_load_each_head(name, head, tmp_path):
    """The registry lists every head, and transformers' Auto class of the task builds it,
    saves it with its ``auto_map`` and loads it back."""
    import transformers

    from midiformers.modeling import architecture_for

    auto_name = "AutoModel" + head
    head_class = architecture_for(name).heads[auto_name]
    auto_class = getattr(transformers, auto_name)
    model = build(name, head)
    assert type(auto_class.from_config(model.config)) is head_class is type(model)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"][auto_name].endswith("." + head_class.__name__)
    assert type(auto_class.from_pretrained(tmp_path)) is head_class
