"""train.py hardening (issue 13): recipe values converted and checked before anything heavy
runs, no Hub token in any file a run writes, private repos, and which checkpoint a rerun
resumes from. Only the network edge (``HfApi`` calls) is replaced."""

from __future__ import annotations

import copy
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from huggingface_hub.hf_api import ModelInfo
from huggingface_hub.utils import filter_repo_objects
from safetensors.torch import save_file

from midiformers.hub import push_folder, push_model
from midiformers.training import RecipeError, main, parse_recipe
from midiformers.training.checkpoints import (
    INCOMPLETE_DIR,
    checkpoint_problem,
    last_complete_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "recipes" / "tiny.yaml"
FAKE_TOKEN = "hf_FAKEtoken1234567890abcdef"


def write_recipe(folder: Path, text: str) -> Path:
    recipe = folder / "recipe.yaml"
    recipe.write_text(text)
    return recipe


# ---- recipe values: converted by type, checked by range, before anything heavy ------------


def test_recipe_values_are_converted_by_field_type(tmp_path):
    recipe = write_recipe(
        tmp_path,
        "learning_rate: 1e-3\n"  # PyYAML reads this as the string '1e-3'
        "warmup_steps: '5'\n"
        "max_steps: 1e2\n"
        "per_device_train_batch_size: '8'\n"
        "plots: 'false'\n"
        "max_length: 64\n"
        "label_names: labels\n",
    )
    model_args, data_args, _, train_args, _ = parse_recipe([str(recipe)])
    assert train_args.learning_rate == 1e-3 and isinstance(train_args.learning_rate, float)
    assert train_args.warmup_steps == 5.0
    assert train_args.max_steps == 100 and isinstance(train_args.max_steps, int)
    assert train_args.per_device_train_batch_size == 8
    assert train_args.plots is False
    assert train_args.label_names == ["labels"]


def test_command_line_values_get_the_same_treatment(tmp_path):
    out = tmp_path / "with-hyphen"
    model_args, data_args, _, train_args, _ = parse_recipe(
        [str(TINY), f"--output_dir={out}", "--learning_rate", "3e-4", "--no_plots"]
        + ["--max_train_samples", "None", "--model_config", '{"hidden_size": 16}']
        + ["--label_names", "a", "b", "--push_to_hub", "--hub_private_repo"]
    )
    assert train_args.output_dir == str(out)  # a hyphen in a value stays a hyphen
    assert train_args.learning_rate == 3e-4
    assert train_args.plots is False
    assert data_args.max_train_samples is None
    assert model_args.model_config == {"hidden_size": 16}
    assert train_args.label_names == ["a", "b"]
    assert train_args.push_to_hub is True and train_args.hub_private_repo is True


def test_max_steps_minus_one_means_epochs(tmp_path):
    recipe = write_recipe(tmp_path, "max_steps: -1\nnum_train_epochs: 2\n")
    train_args = parse_recipe([str(recipe)])[3]
    assert train_args.max_steps == -1 and train_args.num_train_epochs == 2.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_steps: four\n", "max_steps: expected an integer, got 'four'"),
        ("max_steps: 4.5\n", "max_steps: expected an integer, got 4.5"),
        ("max_steps: 0\n", "max_steps: must be -1 (train for num_train_epochs) or >= 1, got 0"),
        ("max_steps: -2\n", "max_steps: must be -1 (train for num_train_epochs) or >= 1, got -2"),
        ("learning_rate: -1e-3\n", "learning_rate: must be > 0, got -0.001"),
        ("learning_rate: fast\n", "learning_rate: expected a number, got 'fast'"),
        ("per_device_train_batch_size: 0\n", "per_device_train_batch_size: must be >= 1, got 0"),
        ("adam_beta2: 1.0\n", "adam_beta2: must be in [0, 1), got 1.0"),
        ("max_length: 1\n", "max_length: must be >= 2, got 1"),
        ("sample_temperature: 0\n", "sample_temperature: must be > 0, got 0.0"),
        ("plots: maybe\n", "plots: expected true or false, got 'maybe'"),
        ("model_config: 3\n", "model_config: expected a mapping"),
        ("lr_scheduler_type: cosin\n", "lr_scheduler_type: expected one of 'linear', 'cosine'"),
        ("eval_strategy: step\n", "eval_strategy: expected one of 'no', 'steps', 'epoch'"),
        ("output_dir: [a, b]\n", "output_dir: expected a string, got ['a', 'b']"),
    ],
)
def test_bad_recipe_values_fail_in_one_line_before_the_dataset(tmp_path, text, message):
    recipe = write_recipe(tmp_path, text)
    cache = tmp_path / "datasets-cache"
    with pytest.raises(RecipeError) as error:
        main([str(recipe), "--dataset_cache_dir", str(cache)])
    assert str(error.value).startswith(f"{recipe}: {message}")
    assert "\n" not in str(error.value)
    if "cosin" in text:
        assert str(error.value).endswith("got 'cosin' (did you mean 'cosine'?)")
    assert not cache.exists(), "the dataset was built before the recipe was checked"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--max_steps", "four"], "--max_steps: expected an integer, got 'four'"),
        (["--max_steps", "0"], "--max_steps: must be -1 (train for num_train_epochs) or >= 1"),
        (["--learning_rate", "-1"], "--learning_rate: must be > 0, got -1.0"),
        (["--per_device_eval_batch_size=0"], "--per_device_eval_batch_size: must be >= 1, got 0"),
        (["--model_config", "{hidden_size: 8"], "--model_config: expected a mapping"),
        (["--max_steps"], "--max_steps needs a value"),
        (["--no_plots=yes"], "--no_plots takes no value"),
        (["--max_steps", "4", "8"], "Unexpected argument '8'"),
    ],
)
def test_bad_command_line_values_fail_before_the_dataset(tmp_path, overrides, message):
    cache = tmp_path / "datasets-cache"
    with pytest.raises(RecipeError) as error:
        main([str(TINY), "--dataset_cache_dir", str(cache), *overrides])
    assert str(error.value).startswith(message)
    assert not cache.exists()


def test_unknown_keys_are_all_named(tmp_path):
    recipe = write_recipe(tmp_path, "max_step: 3\nlearning_rat: 1e-3\n")
    with pytest.raises(RecipeError) as error:
        parse_recipe([str(recipe)])
    assert "unknown key(s) ['max_step', 'learning_rat']" in str(error.value)
    assert "Did you mean max_steps" in str(error.value)


def test_help_states_the_ranges(capsys):
    with pytest.raises(SystemExit):
        parse_recipe(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "The initial learning rate for the optimizer. Must be > 0." in text
    assert "Must be -1 (train for num_train_epochs) or >= 1." in text


def test_train_script_prints_one_line_and_no_traceback(tmp_path):
    recipe = write_recipe(tmp_path, "max_steps: four\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), str(recipe)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode != 0
    assert result.stderr.strip() == (
        f"midiformers-train: {recipe}: max_steps: expected an integer, got 'four'"
    )


# ---- secrets ------------------------------------------------------------------------------


def test_pickled_training_arguments_hold_no_token(tmp_path):
    train_args = parse_recipe([str(TINY), "--hub_token", FAKE_TOKEN])[3]
    path = tmp_path / "training_args.bin"
    torch.save(train_args, path)
    assert FAKE_TOKEN.encode() not in path.read_bytes()
    assert torch.load(path, weights_only=False).hub_token is None
    assert pickle.loads(pickle.dumps(train_args)).hub_token is None
    assert train_args.hub_token == FAKE_TOKEN  # kept in memory, for pushing
    assert copy.deepcopy(train_args).hub_token == FAKE_TOKEN
    assert FAKE_TOKEN not in train_args.to_json_string() + str(train_args)


def test_a_token_in_a_recipe_file_is_warned_about(tmp_path, caplog):
    recipe = write_recipe(tmp_path, f"hub_token: {FAKE_TOKEN}\n")
    with caplog.at_level(logging.WARNING):
        parse_recipe([str(recipe)])
    assert f"{recipe} holds hub_token" in caplog.text
    assert FAKE_TOKEN not in caplog.text


class HubEdge:
    """Stands in for the Hub's side of ``HfApi``: records the calls that would cross the
    network and, for uploads, the files that would be sent (after ``ignore_patterns``)."""

    def __init__(self, existing_public: bool = False):
        self.calls: list[tuple[str, dict]] = []
        self.existing_public = existing_public
        self.uploaded: list[str] = []

    def install(self, monkeypatch) -> HubEdge:
        edge = self

        def create_repo(api, repo_id, **kwargs):
            edge.calls.append(("create_repo", {"repo_id": repo_id, "token": api.token, **kwargs}))
            return f"https://huggingface.co/{repo_id}"

        def repo_info(api, repo_id, **kwargs):
            edge.calls.append(("repo_info", {"repo_id": repo_id, **kwargs}))
            return ModelInfo(id=repo_id, private=not edge.existing_public)

        def upload_folder(api, *, repo_id, folder_path, ignore_patterns=None, **kwargs):
            edge.calls.append(("upload_folder", {"repo_id": repo_id, "token": api.token}))
            folder = Path(folder_path)
            files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
            edge.uploaded = sorted(filter_repo_objects(files, ignore_patterns=ignore_patterns))
            return f"https://huggingface.co/{repo_id}/commit/0123abc"

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "repo_info", repo_info)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
        return self

    def call(self, name: str) -> dict:
        (found,) = [kwargs for call, kwargs in self.calls if call == name]
        return found


def training_like_folder(folder: Path) -> Path:
    """What a finished run leaves: model files, samples, checkpoints and pickles."""
    for name in ("config.json", "README.md", "metrics.json"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("{}")
    save_file({"w": torch.zeros(2)}, folder / "model.safetensors")
    for name in ("training_args.bin", "optimizer.pt", "rng_state.pth", "state.pkl"):
        (folder / name).write_bytes(b"\x80\x04pickle")
    for name in ("checkpoint-2/model.safetensors", f"{INCOMPLETE_DIR}/checkpoint-4/x.bin"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
    (folder / "samples").mkdir()
    (folder / "samples" / "step-2-0.mid").write_bytes(b"MThd")
    (folder / "sub").mkdir()
    (folder / "sub" / "training_args.bin").write_bytes(b"pickle")
    return folder


def test_push_folder_creates_a_private_repo_and_uploads_no_pickles(tmp_path, monkeypatch):
    hub = HubEdge().install(monkeypatch)
    folder = training_like_folder(tmp_path / "run")
    push_folder(folder, "me/private-gpt", token=FAKE_TOKEN, private=True)
    assert hub.call("create_repo")["private"] is True
    assert hub.call("create_repo")["token"] == FAKE_TOKEN  # the token went in memory only
    assert hub.call("upload_folder")["token"] == FAKE_TOKEN
    assert hub.uploaded == [
        "README.md",
        "config.json",
        "metrics.json",
        "model.safetensors",
        "samples/step-2-0.mid",
    ]


def test_push_model_honours_private(tmp_path, monkeypatch, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hub = HubEdge().install(monkeypatch)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    push_model(model, tokenizer, "me/tiny", private=True, token=FAKE_TOKEN)
    assert hub.call("create_repo")["private"] is True
    assert "model.safetensors" in hub.uploaded
    assert not [name for name in hub.uploaded if name.endswith((".bin", ".pt", ".pth"))]


def test_private_push_refuses_an_existing_public_repo(tmp_path, monkeypatch):
    hub = HubEdge(existing_public=True).install(monkeypatch)
    folder = training_like_folder(tmp_path / "run")
    with pytest.raises(ValueError, match="me/public-gpt already exists and is public"):
        push_folder(folder, "me/public-gpt", token=FAKE_TOKEN, private=True)
    assert [call for call, _ in hub.calls] == ["create_repo", "repo_info"]


def test_push_refuses_a_file_that_holds_the_token(tmp_path, monkeypatch):
    hub = HubEdge().install(monkeypatch)
    folder = training_like_folder(tmp_path / "run")
    (folder / "notes.txt").write_bytes(b"\x00binary " + FAKE_TOKEN.encode() + b" tail")
    with pytest.raises(ValueError, match=r"notes.txt contains your Hub token"):
        push_folder(folder, "me/gpt", token=FAKE_TOKEN)
    assert hub.calls == []
    (folder / "notes.txt").unlink()
    (folder / "optimizer.pt").write_bytes(FAKE_TOKEN.encode())  # never uploaded: not scanned
    push_folder(folder, "me/gpt", token=FAKE_TOKEN)


@pytest.fixture(scope="module")
def dataset_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("datasets-cache")


def test_no_file_of_a_run_holds_the_hub_token(tmp_path, monkeypatch, dataset_cache, capsys):
    """A whole run with --push_to_hub: every file it writes (binary ones too, and every
    training_args.bin unpickled) is free of the token; the repo is created private."""
    hub = HubEdge().install(monkeypatch)
    out = tmp_path / "run"
    args = [str(TINY), "--output_dir", str(out), "--dataset_cache_dir", str(dataset_cache)]
    args += ["--push_to_hub", "--hub_model_id", "me/tiny-gpt", "--hub_private_repo"]
    args += ["--hub_token", FAKE_TOKEN]
    main(args)

    written = [path for path in out.rglob("*") if path.is_file()]
    assert len(written) > 20 and (out / "checkpoint-4" / "training_args.bin").is_file()
    for path in written:
        assert FAKE_TOKEN.encode() not in path.read_bytes(), path
    pickled = sorted(out.rglob("training_args.bin"))
    assert len(pickled) == 3  # checkpoint-2, checkpoint-4 and the final folder
    for path in pickled:
        assert torch.load(path, weights_only=False).hub_token is None
    captured = capsys.readouterr()
    assert FAKE_TOKEN not in captured.out + captured.err

    assert hub.call("create_repo")["private"] is True
    assert hub.call("upload_folder")["token"] == FAKE_TOKEN
    assert "model.safetensors" in hub.uploaded and "README.md" in hub.uploaded
    assert not [name for name in hub.uploaded if name.endswith((".bin", ".pt", ".pth"))]
    assert not [name for name in hub.uploaded if name.startswith("checkpoint-")]


# ---- which checkpoint a rerun resumes from ------------------------------------------------


def make_checkpoint(output_dir: Path, step: int) -> Path:
    """A checkpoint as Trainer leaves it, reduced to what decides completeness."""
    folder = output_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    save_file({"weight": torch.arange(64, dtype=torch.float32)}, folder / "model.safetensors")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda f: (f / "trainer_state.json").unlink(), "no trainer_state.json"),
        (lambda f: truncate(f / "trainer_state.json", 5), "trainer_state.json is unreadable"),
        (lambda f: (f / "trainer_state.json").write_text("{}"), "has no global_step"),
        (lambda f: (f / "model.safetensors").unlink(), "no model weights"),
        (lambda f: truncate(f / "model.safetensors", 100), "model.safetensors is truncated"),
        (lambda f: truncate(f / "model.safetensors", 4), "model.safetensors is unreadable"),
    ],
)
def test_incomplete_checkpoints_are_recognised(tmp_path, damage, problem):
    folder = make_checkpoint(tmp_path, 6)
    assert checkpoint_problem(folder) is None
    damage(folder)
    assert problem in checkpoint_problem(folder)


def test_sharded_checkpoint_needs_every_shard(tmp_path):
    folder = make_checkpoint(tmp_path, 2)
    shard = folder / "model-00001-of-00002.safetensors"
    (folder / "model.safetensors").rename(shard)
    index = {"weight_map": {"a": shard.name, "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert checkpoint_problem(folder) == "shard model-00002-of-00002.safetensors is missing"
    shutil.copy(shard, folder / "model-00002-of-00002.safetensors")
    assert checkpoint_problem(folder) is None


def test_resume_skips_and_sets_aside_incomplete_checkpoints(tmp_path, caplog):
    for step in (2, 4, 6, 8):
        make_checkpoint(tmp_path, step)
    (tmp_path / "checkpoint-8" / "trainer_state.json").unlink()
    truncate(tmp_path / "checkpoint-6" / "model.safetensors", 200)
    (tmp_path / "checkpoint-2" / "model.safetensors").unlink()  # killed while rotating

    with caplog.at_level(logging.WARNING, logger="midiformers"):
        chosen = last_complete_checkpoint(tmp_path, set_aside=True)

    assert chosen == str(tmp_path / "checkpoint-4")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all("\n" not in line for line in warnings)
    for step, problem in ((8, "no trainer_state.json"), (6, "truncated"), (2, "no model")):
        (line,) = [w for w in warnings if f"checkpoint-{step} " in w]
        assert problem in line and INCOMPLETE_DIR in line
        assert (tmp_path / INCOMPLETE_DIR / f"checkpoint-{step}").is_dir()
        assert not (tmp_path / f"checkpoint-{step}").exists()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-4"]


def test_other_processes_only_skip_incomplete_checkpoints(tmp_path):
    make_checkpoint(tmp_path, 2)
    (make_checkpoint(tmp_path, 4) / "trainer_state.json").unlink()
    assert last_complete_checkpoint(tmp_path, set_aside=False) == str(tmp_path / "checkpoint-2")
    assert (tmp_path / "checkpoint-4").is_dir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").unlink()
    assert last_complete_checkpoint(tmp_path, set_aside=False) is None


def test_an_explicit_incomplete_checkpoint_is_refused_before_the_dataset(tmp_path):
    folder = make_checkpoint(tmp_path / "run", 4)
    (folder / "trainer_state.json").unlink()
    cache = tmp_path / "datasets-cache"
    args = [str(TINY), "--output_dir", str(tmp_path / "run"), "--dataset_cache_dir", str(cache)]
    with pytest.raises(RecipeError) as error:
        main([*args, "--resume_from_checkpoint", str(folder)])
    assert str(error.value) == (
        f"resume_from_checkpoint: cannot resume from {folder} (no trainer_state.json)"
    )
    assert not cache.exists()
