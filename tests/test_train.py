"""train.py end to end: a tiny recipe in a subprocess, accelerate with 2 CPU processes,
resume, and the errors that must come before any training starts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from midiformers.training import RecipeError, main

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "recipes" / "tiny.yaml"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def dataset_cache(tmp_path_factory) -> Path:
    """One datasets cache for the module, so the chorales are converted once."""
    return tmp_path_factory.mktemp("datasets-cache")


def run_train(
    args: list[str],
    cache: Path,
    launcher: list[str] | None = None,
    script: list[str] | None = None,
    expect_success: bool = True,
    recipe: Path = TINY,
):
    """Run train.py (or ``script``, a stand-in for it) with the tiny recipe in a subprocess."""
    entry = script or [str(ROOT / "train.py")]
    command = [*(launcher or [sys.executable]), *entry, str(recipe), *args]
    command += ["--dataset_cache_dir", str(cache)]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "0",
    }
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if expect_success:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_train_script_leaves_a_complete_output_folder(tmp_path, dataset_cache):
    import symusic
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    result = run_train(["--output_dir", str(out)], dataset_cache)
    assert "Done: 4 steps" in result.stdout + result.stderr
    for name in ("config.json", "model.safetensors", "tokenizer_config.json", "README.md"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"eval_loss", "eval_accuracy", "eval_perplexity", "train_loss"} <= set(metrics)
    assert metrics["eval_perplexity"] == pytest.approx(torch.tensor(metrics["eval_loss"]).exp())
    for plot in ("loss.png", "accuracy.png", "perplexity.png"):
        assert (out / plot).read_bytes()[:8] == PNG_SIGNATURE, plot
    samples = sorted((out / "samples").glob("*.mid"))
    assert len(samples) >= 2  # one per evaluation (steps 2 and 4)
    for sample in samples:
        symusic.Score(str(sample))  # parses as MIDI
    card = (out / "README.md").read_text()
    assert "music-generation" in card and "eval_loss" in card
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.vocab_size == len(tokenizer)


def test_accelerate_launch_two_cpu_processes(tmp_path, dataset_cache):
    from transformers import AutoModelForCausalLM

    if shutil.which("accelerate") is None:
        pytest.skip("the accelerate command is not on PATH")
    out = tmp_path / "ddp"
    launcher = [
        "accelerate",
        "launch",
        "--config_file",
        str(ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"),
        "--main_process_port",
        "29517",
    ]
    args = [
        "--output_dir",
        str(out),
        "--num_samples",
        "0",
        "--include_num_input_tokens_seen",
        "all",
    ]
    # As a recipe that says nothing of use_cpu: train.py turns it on for processes without a GPU.
    recipe = tmp_path / "tiny_without_use_cpu.yaml"
    recipe.write_text(TINY.read_text().replace("use_cpu: true\n", ""))
    assert "use_cpu" not in recipe.read_text()
    run_train(args, dataset_cache, launcher, recipe=recipe)
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    # Tokens are counted over the process group: 2 processes x 4 steps x 4 blocks x 64 tokens.
    assert state["num_input_tokens_seen"] == 2 * 4 * 4 * 64
    assert AutoModelForCausalLM.from_pretrained(out / "checkpoint-4") is not None
    assert AutoModelForCausalLM.from_pretrained(out) is not None


FSDP_ON_CPU = (
    "accelerate 1.15 applies FSDP to GPU-class devices only: on CPU processes it runs DDP or "
    "one unsynchronised copy of the run per process (train.py refuses that launch)"
)


def fsdp_launcher(port: int, *options: str) -> list[str]:
    config = ROOT / "configs" / "accelerate" / "fsdp.yaml"
    return ["accelerate", "launch", "--config_file", str(config), "--num_processes", "2"] + [
        "--main_process_port",
        str(port),
        *options,
    ]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason=f"needs 2 GPUs: {FSDP_ON_CPU}")
def test_accelerate_fsdp2_two_processes(tmp_path, dataset_cache):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "fsdp"
    args = ["--output_dir", str(out), "--num_samples", "0", "--use_cpu", "false"]
    run_train(args, dataset_cache, fsdp_launcher(29527))
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert AutoModelForCausalLM.from_pretrained(out) is not None


@pytest.mark.parametrize("use_cpu", ["true", "false"])
def test_fsdp_launch_on_cpu_processes_is_refused(tmp_path, dataset_cache, use_cpu):
    """Checked on torch 2.13 + accelerate 1.15: with use_cpu the FSDP config trains as DDP,
    without it both processes train the whole run alone; train.py stops either way."""
    if shutil.which("accelerate") is None:
        pytest.skip("the accelerate command is not on PATH")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: FSDP may run")
    out = tmp_path / "fsdp-cpu"
    launcher = fsdp_launcher(29537 + (use_cpu == "true"), "--mixed_precision", "no")
    args = ["--output_dir", str(out), "--num_samples", "0", "--use_cpu", use_cpu]
    result = run_train(args, dataset_cache, launcher, expect_success=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "asks for FSDP" in line]
    assert lines and "cpu_2proc.yaml" in lines[0], result.stderr[-3000:]
    assert not (out / "model.safetensors").exists()


FSDP2_SCRIPT = """
import sys
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from midiformers.modeling import ARCHITECTURES

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
mesh = init_device_mesh("cpu", (world,))
tiny = dict(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64, hidden_dropout=0.0,
            attention_dropout=0.0, pad_token_id=0, bos_token_id=1, eos_token_id=2)
extra = {"vae": dict(num_encoder_layers=1, latent_size=8, id2label={0: "a", 1: "b"})}
for name in sys.argv[1:]:
    arch = ARCHITECTURES[name]
    config = arch.config_class(**tiny, **extra.get(name, {}))
    torch.manual_seed(0)
    sharded, reference = arch.model_class(config), arch.model_class(config)
    reference.load_state_dict(sharded.state_dict())
    sharded.eval(), reference.eval()  # gradients still flow; the VAE uses its posterior mean
    for module in sharded.modules():
        if type(module).__name__ in sharded._no_split_modules:
            fully_shard(module, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    # SGD: AdamW would blow float noise in always-zero gradients (k_proj.bias) up to lr steps
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (sharded, reference)]
    for step in range(2):
        ids = torch.randint(3, 40, (4, 12), generator=torch.Generator().manual_seed(step))
        batch = {"input_ids": ids, "labels": ids}
        if name == "vae":
            batch["composer_labels"] = torch.tensor([0, 1, 0, 1])
        local = {key: value.chunk(world)[rank] for key, value in batch.items()}
        sharded(**local).loss.backward()
        reference(**batch).loss.backward()
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad()
    full = {key: value.full_tensor() for key, value in sharded.state_dict().items()}
    local_sizes = [p.to_local().numel() for p in sharded.parameters()]
    assert sum(local_sizes) < sum(p.numel() for p in reference.parameters())  # sharded
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(full[key], value, atol=1e-5, rtol=1e-4, msg=key)
    if rank == 0:
        print("FSDP2 OK", name, flush=True)
dist.destroy_process_group()
"""


def test_models_train_with_torch_fsdp2_on_two_cpu_processes(tmp_path):
    """torch's FSDP2 (``fully_shard`` per block, gloo) on 2 CPU processes trains every
    attention model exactly as one process on the whole batch: the models are FSDP2-ready;
    only accelerate keeps FSDP off CPUs."""
    script = tmp_path / "fsdp2.py"
    script.write_text(FSDP2_SCRIPT)
    names = ["gpt", "music_transformer", "conformer", "vae"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", "29547", str(script), *names]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in names:
        assert f"FSDP2 OK {name}" in result.stdout


RESUME_ARGS = ["--num_samples", "0", "--plots", "false", "--save_steps", "2", "--eval_steps", "4"]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, dataset_cache) -> Path:
    """Eight uninterrupted steps: what every resumed run must end with."""
    out = tmp_path_factory.mktemp("straight")
    run_train(["--output_dir", str(out), "--max_steps", "8", *RESUME_ARGS], dataset_cache)
    return out


def assert_same_weights(a_dir: Path, b_dir: Path) -> None:
    a, b = load_file(a_dir / "model.safetensors"), load_file(b_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_resume_matches_an_uninterrupted_run(tmp_path, dataset_cache, straight_run):
    resumed = tmp_path / "resumed"
    run_train(["--output_dir", str(resumed), "--max_steps", "4", *RESUME_ARGS], dataset_cache)
    second = run_train(
        ["--output_dir", str(resumed), "--max_steps", "8", *RESUME_ARGS], dataset_cache
    )
    assert "Resuming from" in second.stdout + second.stderr
    state = json.loads((resumed / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    assert_same_weights(resumed, straight_run)


KILLED_WHILE_SAVING = """
import os, signal, sys
from transformers.trainer_callback import TrainerState

save_state = TrainerState.save_to_json
# Ctrl-C raises KeyboardInterrupt even when this process was started with SIGINT ignored (as a
# background job of a non-interactive shell is)
signal.signal(signal.SIGINT, signal.default_int_handler)


def save_or_die(self, json_path):
    # trainer_state.json is the last file of a checkpoint: die just before it is written
    if os.path.basename(os.path.dirname(json_path)) == os.environ["KILL_AT_CHECKPOINT"]:
        os.kill(os.getpid(), int(os.environ["KILL_SIGNAL"]))
    save_state(self, json_path)


TrainerState.save_to_json = save_or_die
from midiformers.training import cli

cli()
"""


@pytest.mark.parametrize("kill", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_while_saving_a_checkpoint_resumes_from_the_last_complete_one(
    tmp_path, dataset_cache, straight_run, monkeypatch, kill
):
    from transformers.trainer_utils import get_last_checkpoint

    out = tmp_path / "killed"
    args = ["--output_dir", str(out), "--max_steps", "8", *RESUME_ARGS]
    monkeypatch.setenv("KILL_AT_CHECKPOINT", "checkpoint-6")
    monkeypatch.setenv("KILL_SIGNAL", str(int(kill)))
    script = ["-c", KILLED_WHILE_SAVING]
    killed = run_train(args, dataset_cache, script=script, expect_success=False)
    if kill == signal.SIGINT:  # Ctrl-C: a KeyboardInterrupt from inside the save
        assert killed.returncode != 0 and "KeyboardInterrupt" in killed.stderr
    else:
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    partial = out / "checkpoint-6"
    assert (partial / "model.safetensors").is_file() and (partial / "optimizer.pt").is_file()
    assert not (partial / "trainer_state.json").exists()
    assert get_last_checkpoint(out) == str(partial)  # what transformers alone would resume from

    monkeypatch.delenv("KILL_AT_CHECKPOINT")
    monkeypatch.delenv("KILL_SIGNAL")
    rerun = run_train(args, dataset_cache)
    log = rerun.stdout + rerun.stderr
    (warning,) = [line for line in log.splitlines() if "Incomplete checkpoint" in line]
    assert str(partial) in warning and "no trainer_state.json" in warning
    assert f"Resuming from {out / 'checkpoint-4'}" in log
    assert (out / "incomplete-checkpoints" / "checkpoint-6" / "model.safetensors").is_file()
    for step in (6, 8):
        state = json.loads((out / f"checkpoint-{step}" / "trainer_state.json").read_text())
        assert state["global_step"] == step
    assert "Done: 8 steps" in log
    assert_same_weights(out, straight_run)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--model_type", "transformer_xl"], "Unknown model_type 'transformer_xl'"),
        (["--learning_rat", "1e-3"], "Did you mean learning_rate"),
        (["--max_length", "512"], "max_position_embeddings (128)"),
        (["--model_config", '{"hidden_size": 30}'], "hidden_size"),
        (
            ["--model_config", '{"num_layers": 2}'],
            "unknown key(s) for midiformers_gpt: 'num_layers'",
        ),
        (["--push_to_hub"], "push_to_hub needs hub_model_id"),
        (["--torch_num_threads", "0"], "--torch_num_threads: must be >= 1, got 0"),
    ],
)
def test_bad_recipes_fail_before_training(tmp_path, dataset_cache, overrides, message):
    args = [str(TINY), "--output_dir", str(tmp_path), "--dataset_cache_dir", str(dataset_cache)]
    with pytest.raises(RecipeError) as error:
        main([*args, *overrides])
    assert message in str(error.value)
    assert not list(tmp_path.glob("checkpoint-*"))


def test_torch_num_threads_sets_the_threads_and_the_final_evaluation_is_not_repeated(
    tmp_path, dataset_cache, monkeypatch
):
    """The recipe's ``torch_num_threads`` is what torch trains with; a run that ends with an
    evaluation reports that one instead of evaluating (and sampling) the same model again."""
    from midiformers.training.run import MidiTrainer

    evaluations, threads = [], []
    evaluate = MidiTrainer.evaluate

    def counting_evaluate(self, *args, **kwargs):
        evaluations.append(self.state.global_step)
        threads.append(torch.get_num_threads())
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(MidiTrainer, "evaluate", counting_evaluate)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = tmp_path / "run"
        args = [str(TINY), "--output_dir", str(out), "--dataset_cache_dir", str(dataset_cache)]
        metrics = main([*args, "--torch_num_threads", "1", "--plots", "false"])
    finally:
        torch.set_num_threads(before)
    assert evaluations == [2, 4] and threads == [1, 1]
    logged = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    last_eval = [entry for entry in logged if "eval_loss" in entry][-1]
    assert last_eval["step"] == 4 and metrics["eval_loss"] == last_eval["eval_loss"]
    assert json.loads((out / "metrics.json").read_text())["eval_loss"] == last_eval["eval_loss"]
    assert sorted(path.name for path in (out / "samples").glob("*.mid")) == [
        "step-2-0.mid",
        "step-4-0.mid",
    ]


def test_unknown_recipe_key_names_the_file(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model_type: gpt\nnum_layers: 3\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: unknown key\(s\) \['num_layers'\]"):
        main([str(recipe)])


def test_dataset_without_usable_pieces(tmp_path, broken_midi_paths):
    folder = tmp_path / "broken"
    folder.mkdir()
    for path in broken_midi_paths:
        shutil.copy(path, folder / path.name)
    args = [str(TINY), "--output_dir", str(tmp_path / "out"), "--dataset_name", "midi_folder"]
    args += ["--data_dir", str(folder), "--dataset_config", "{}"]
    args += ["--dataset_cache_dir", str(tmp_path / "cache")]
    with pytest.raises(RecipeError) as error:
        main(args)
    message = str(error.value)
    assert "midi_folder" in message and "\n" not in message
    assert "no usable pieces" in message or "no readable MIDI file" in message


@pytest.mark.parametrize("recipe", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_describes_a_valid_run(recipe):
    from transformers import AutoConfig

    from midiformers.data_scripts import get_builder
    from midiformers.tokenization.presets import PRESETS
    from midiformers.training.arguments import parse_recipe
    from midiformers.training.run import resolve_model_type

    model_args, data_args, tok_args, train_args, _ = parse_recipe([str(recipe)])
    model_type = resolve_model_type(model_args.model_type)
    config = AutoConfig.for_model(model_type, **(model_args.model_config or {}))
    positions = getattr(config, "max_position_embeddings", None)
    assert positions is None or data_args.max_length <= positions
    assert tok_args.tokenizer_preset in PRESETS
    data_dir = None
    if data_args.dataset_name == "midi_folder":  # the recipe names the user's own folder
        data_dir = str(ROOT / "tests" / "fixtures" / "midi" / "valid")
    get_builder(data_args.dataset_name, data_dir=data_dir, **(data_args.dataset_config or {}))
    assert train_args.output_dir.startswith("outputs/")
    assert recipe.read_text().startswith("#"), "a recipe says what it reproduces"
