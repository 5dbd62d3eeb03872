"""LoRA fine-tuning (peft): adapters on every attention model, only adapter weights train,
the saved adapter reloads (PEFT's Auto class, a fresh process), merging, the demo, bad options."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from midiformers.modeling import ARCHITECTURES
from midiformers.training import RecipeError, main
from midiformers.training.lora import (
    LORA_DEFAULTS,
    LORA_TARGET_MODULES,
    apply_lora,
    load_lora,
    merge_lora,
)

ROOT = Path(__file__).resolve().parents[1]

TINY = dict(
    vocab_size=60,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=128,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
EXTRA = {"vae": dict(num_encoder_layers=1, latent_size=8, id2label={0: "a", 1: "b"})}


def tiny_model(name: str):
    arch = ARCHITECTURES[name]
    torch.manual_seed(0)
    return arch.model_class(arch.config_class(**TINY, **EXTRA.get(name, {})))


def batch(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    ids = torch.randint(
        3, TINY["vocab_size"], (4, 12), generator=torch.Generator().manual_seed(seed)
    )
    inputs = {"input_ids": ids, "labels": ids}
    if name == "vae":
        inputs["composer_labels"] = torch.tensor([0, 1, 0, 1])
    return inputs


def settings(**overrides):
    return {**LORA_DEFAULTS, "lora_dropout": 0.0, "lora_target_modules": None, **overrides}


def test_every_attention_architecture_has_lora_targets():
    attention = {
        name for name, arch in ARCHITECTURES.items() if arch.generates and not arch.recurrent
    }
    assert attention == set(LORA_TARGET_MODULES)


@pytest.mark.parametrize("name", sorted(LORA_TARGET_MODULES))
def test_lora_trains_only_adapter_weights(name):
    model = tiny_model(name)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    peft_model = apply_lora(model, settings(), "unused")
    trainable = [key for key, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in key or ".lora_B." in key for key in trainable)
    if name == "vae":  # the decoder only: encoder, posterior and prior stay as trained
        assert not any("encoder_layers" in key for key in trainable)
    if name == "music_transformer":
        assert not any("relative_embeddings" in key for key in trainable)
    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1
    )
    peft_model.train()
    for step in range(3):
        peft_model(**batch(name, step)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for key, value in peft_model.get_base_model().state_dict().items():
        if "lora_" in key:
            continue
        original = key.replace(".base_layer.", ".")
        assert torch.equal(value, before[original]), key  # bit-identical
    lora_b = [p for key, p in peft_model.named_parameters() if ".lora_B." in key]
    assert all(p.abs().sum() > 0 for p in lora_b)  # zero at the start: they trained


@pytest.mark.parametrize("name", sorted(LORA_TARGET_MODULES))
def test_merged_model_gives_the_adapted_logits(name):
    peft_model = apply_lora(tiny_model(name), settings(), "unused")
    for key, param in peft_model.named_parameters():  # a non-zero adapter
        if ".lora_B." in key:
            torch.nn.init.normal_(param, std=0.1)
    peft_model.eval()
    inputs = {k: v for k, v in batch(name).items() if k != "labels"}
    with torch.no_grad():
        adapted = peft_model(**inputs).logits
        with peft_model.disable_adapter():
            base = peft_model(**inputs).logits
        merged = peft_model.merge_and_unload()(**inputs).logits
    assert not torch.allclose(adapted, base, atol=1e-4)
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ train.py with lora: true


@pytest.fixture(scope="module")
def midi_folder(tmp_path_factory, valid_midi_paths) -> Path:
    folder = tmp_path_factory.mktemp("my-pieces")
    for path in valid_midi_paths:
        shutil.copy(path, folder / path.name)
    return folder


def lora_args(base: Path, data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        str(ROOT / "configs" / "lora_finetune.yaml"),
        "--model_name_or_path",
        str(base),
        "--data_dir",
        str(data),
        "--output_dir",
        str(out),
        "--dataset_cache_dir",
        str(cache),
        "--dataset_config",
        '{"validation_ratio": 0.3, "test_ratio": 0.0}',
        "--max_length",
        "64",
        "--max_steps",
        "3",
        "--per_device_train_batch_size",
        "2",
        "--per_device_eval_batch_size",
        "2",
        "--learning_rate",
        "0.05",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--num_samples",
        "0",
        "--plots",
        "false",
        "--use_cpu",
        "--disable_tqdm",
        "true",
        *extra,
    ]


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_model_dir, midi_folder) -> Path:
    """The recipe configs/lora_finetune.yaml, shortened, on the tiny GPT and the fixtures."""
    out = tmp_path_factory.mktemp("adapter")
    cache = tmp_path_factory.mktemp("lora-datasets")
    main(lora_args(tiny_model_dir, midi_folder, out, cache))
    return out


def probe_ids() -> torch.Tensor:
    return torch.randint(4, 200, (2, 16), generator=torch.Generator().manual_seed(1))


def test_output_folder_holds_the_adapter_only(adapter_dir, tiny_model_dir):
    import json

    names = {path.name for path in adapter_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= names
    assert "tokenizer_config.json" in names
    assert "model.safetensors" not in names and "config.json" not in names
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]) == tiny_model_dir.resolve()
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    assert weights and all("lora_" in key for key in weights)
    assert any(w.abs().sum() > 0 for key, w in weights.items() if "lora_B" in key)


def test_saved_adapter_reloads_in_a_fresh_process(adapter_dir, tmp_path):
    from midiformers.tokenization import MidiTokenizer  # noqa: F401

    model = load_lora(adapter_dir).eval()
    with torch.no_grad():
        expected = model(probe_ids()).logits
    script = (
        "import sys, torch, midiformers\n"
        "from peft import AutoPeftModelForCausalLM\n"
        "model = AutoPeftModelForCausalLM.from_pretrained(sys.argv[1]).eval()\n"
        "ids = torch.load(sys.argv[2])\n"
        "with torch.no_grad():\n"
        "    torch.save(model(ids).logits, sys.argv[3])\n"
    )
    torch.save(probe_ids(), tmp_path / "ids.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", script, str(adapter_dir), str(tmp_path / "ids.pt")]
    result = subprocess.run(
        [*command, str(tmp_path / "logits.pt")], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "logits.pt"), expected)


def test_merge_writes_a_plain_model_with_the_same_logits(adapter_dir, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from midiformers.training.lora import main as lora_cli

    merged_dir = tmp_path / "merged"
    lora_cli([str(adapter_dir), str(merged_dir)])
    assert (merged_dir / "config.json").is_file() and (merged_dir / "model.safetensors").is_file()
    assert not (merged_dir / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    adapted = load_lora(adapter_dir).eval()
    with torch.no_grad():
        expected = adapted(probe_ids()).logits
        torch.testing.assert_close(merged(probe_ids()).logits, expected, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(base(probe_ids()).logits, expected, atol=1e-4)
    assert len(AutoTokenizer.from_pretrained(merged_dir)) == merged.config.vocab_size
    with pytest.raises(RecipeError, match="not a LoRA adapter folder"):
        merge_lora(tiny_model_dir, tmp_path / "nothing")


def test_demo_loads_an_adapter_folder(adapter_dir):
    from midiformers.app.models import resolve_models

    entries, notices = resolve_models([str(adapter_dir)])
    assert notices == [] and len(entries) == 1
    assert entries[0].config.model_type == "midiformers_gpt"
    pipe = entries[0].pipeline()
    expected = load_lora(adapter_dir, merge=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            pipe.model(probe_ids()).logits, expected(probe_ids()).logits, atol=1e-5, rtol=1e-5
        )


def test_lora_run_resumes_like_an_uninterrupted_one(tiny_model_dir, midi_folder, tmp_path, caplog):
    def run(out: Path, steps: int) -> None:
        extra = ["--max_steps", str(steps), "--save_strategy", "steps", "--save_steps", "2"]
        main(lora_args(tiny_model_dir, midi_folder, out, tmp_path / "cache", *extra))

    run(tmp_path / "straight", 4)
    run(tmp_path / "resumed", 2)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="midiformers.train"):
        run(tmp_path / "resumed", 4)  # continues from checkpoint-2 (adapter + optimizer)
    assert any(
        "Resuming from" in r.getMessage() and "checkpoint-2" in r.getMessage()
        for r in caplog.records
    )
    straight = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], msg=key)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lora_r", "0"], "lora_r: must be >= 1"),
        (["--lora_dropout", "1.5"], "lora_dropout: must be in [0, 1)"),
        (["--lora_target_modules", "q_prj"], "did you mean 'q_proj'"),
        (["--lora_target_modules", "[]"], "at least one module"),
        (["--lora", "false"], "lora_r, lora_alpha, lora_dropout set but lora is false"),
    ],
)
def test_bad_lora_options_are_one_line_errors(
    extra, message, tiny_model_dir, midi_folder, tmp_path
):
    args = lora_args(tiny_model_dir, midi_folder, tmp_path / "out", tmp_path / "cache", *extra)
    with pytest.raises(RecipeError) as error:
        main(args)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_lora_needs_a_model_to_adapt(tmp_path):
    with pytest.raises(RecipeError, match="lora: true needs model_name_or_path"):
        main(["--lora", "--output_dir", str(tmp_path / "out")])


def test_lora_on_a_recurrent_model_is_refused(tmp_path, midi_tokenizer):
    from midiformers import MidiLSTMConfig, MidiLSTMForCausalLM

    folder = tmp_path / "lstm"
    config = MidiLSTMConfig(vocab_size=len(midi_tokenizer), embedding_size=8, hidden_size=8)
    MidiLSTMForCausalLM(config).save_pretrained(folder)
    args = ["--lora", "--model_name_or_path", str(folder), "--output_dir", str(tmp_path / "o")]
    with pytest.raises(RecipeError, match="model_type is 'gpt' but .* holds a 'lstm' model"):
        main(args)
    with pytest.raises(RecipeError, match="LoRA has no default target modules"):
        main([*args, "--model_type", "lstm"])
