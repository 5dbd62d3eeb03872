"""Benchmark the data path at scale: a synthetic corpus of N MIDI files, built, pretokenized
and streamed, against what the default model consumes in training.

The corpus is made from real pieces (the test fixtures and some of music21's Bach chorales):
file ``i`` is piece ``i % P`` transposed by -6..+6 semitones, time-stretched (tempo x0.8 to
x1.25) and shifted by ``i`` ticks, so every file is distinct. For each size it measures, in
one run on this machine:

* building it as a ``midi_folder`` dataset with ``num_proc`` 1 and 2 (files/s);
* pretokenizing the build with ``num_proc`` 1 and 2 (files/s, tokens/s);
* the streaming input pipeline (tokens/s into a DataLoader, batches of the default recipe):
  from the pretokenized shards, and from the raw MIDI files tokenized on the fly;
* peak memory of every step (anonymous proportional set size of its process and workers,
  sampled; the pages of memory-mapped files it read are shown apart): the goal is flat,
  within 20%, from the smallest to the largest corpus;
* the default model's training throughput (``configs/default.yaml``: tokens per second of
  forward + backward + AdamW step on this machine), against which the input pipeline should
  be at least 5x faster;
* LoRA vs full fine-tuning of the default model and of a Conformer of the same size:
  trainable parameters, step time, gradient + optimizer memory and peak memory.

Each step runs in its own process so its peak memory is its own. Prints Markdown tables and
writes them to ``benchmarks/results/bench_scale.{md,json}``::

    python benchmarks/bench_scale.py --sizes 1000 10000           # a few minutes
    python benchmarks/bench_scale.py --sizes 10000 100000         # the issue's sizes
    python benchmarks/bench_scale.py --only lora                  # LoRA rows alone, ~2 min

``--only data`` / ``--only lora`` measure one part and keep the other's saved results.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "midi" / "valid"
RESULTS = ROOT / "benchmarks" / "results"
SHUFFLE_BUFFER = 256  # blocks; small against the batches read, so the rate is the steady one
DEFAULT_RECIPE = ROOT / "configs" / "default.yaml"
DATA_STEPS = ("build", "pretokenize", "stream-pretokenized", "stream-raw")
STEP_ORDER = ("build midi_folder", "pretokenize", "stream pretokenized", "stream raw MIDI")


# ----------------------------------------------------------------------------- corpus


def source_pieces(num_chorales: int) -> list[bytes]:
    """Real pieces: the valid test fixtures and the first music21 Bach chorales."""
    pieces = [path.read_bytes() for path in sorted(FIXTURES.glob("*.mid"))]
    if num_chorales:
        from midiformers.data_scripts._music21 import corpus_file_to_midi
        from midiformers.data_scripts.bach_chorales import chorale_catalogue

        for entry in chorale_catalogue()[:num_chorales]:
            pieces.append(corpus_file_to_midi(entry["path"]))
    return pieces


def make_corpus(folder: Path, size: int, pieces: list[bytes], per_folder: int = 1000) -> int:
    """Write ``size`` distinct files (transposed, time-stretched, shifted copies); bytes."""
    import symusic

    scores = [symusic.Score.from_midi(data) for data in pieces]
    total = 0
    for index in range(size):
        score = scores[index % len(scores)].copy()
        variant = index // len(scores)
        score = score.shift_pitch(variant % 13 - 6).shift_time(index)
        stretch = 0.8 + 0.45 * ((variant * 7919) % 100) / 100
        for tempo in score.tempos:
            tempo.qpm = tempo.qpm * stretch
        target = folder / f"{index // per_folder:04d}" / f"piece_{index:07d}.mid"
        target.parent.mkdir(parents=True, exist_ok=True)
        score.dump_midi(str(target))
        total += target.stat().st_size
    return total


# ----------------------------------------------------------------------------- steps


def _quiet() -> None:
    import datasets

    logging.basicConfig(level=logging.ERROR)
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def step_build(corpus: str, cache: str, num_proc: int) -> dict:
    from midiformers.data_scripts import load_midi_dataset

    start = time.perf_counter()
    ds = load_midi_dataset("midi_folder", path=corpus, cache_dir=cache, num_proc=num_proc)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "examples": sum(len(part) for part in ds.values())}


def step_pretokenize(corpus: str, cache: str, output: str, num_proc: int) -> dict:
    from midiformers import MidiTokenizer
    from midiformers.data_scripts import load_midi_dataset, pretokenize

    ds = load_midi_dataset("midi_folder", path=corpus, cache_dir=cache)  # the cached build
    start = time.perf_counter()
    manifest = pretokenize(ds, MidiTokenizer(), output, num_proc=num_proc)
    seconds = time.perf_counter() - start
    splits = manifest["splits"].values()
    return {
        "seconds": seconds,
        "examples": sum(info["num_examples"] for info in splits),
        "tokens": sum(info["num_tokens"] for info in splits),
    }


def _consume(dataset, batch_size: int, num_workers: int, max_batches: int) -> dict:
    import torch
    from transformers import default_data_collator

    loader = torch.utils.data.DataLoader(
        dataset,  # Python lists: the collator makes the tensors, as the Trainer's does
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=default_data_collator,
    )
    start = time.perf_counter()
    first = None
    batches = tokens = first_tokens = 0
    for batch in loader:
        batches += 1
        tokens += int(batch["input_ids"].numel())
        seconds = time.perf_counter() - start  # not counting the readers' shutdown
        if first is None:  # workers starting, shuffle buffer filling
            first, first_tokens = seconds, tokens
        if batches >= max_batches:
            break
    steady = seconds - (first or 0.0)
    return {
        "seconds": seconds,
        "first_batch_seconds": first,
        "batches": batches,
        "tokens": tokens,
        "steady_tokens_per_s": (tokens - first_tokens) / steady if steady > 0 else None,
    }


def step_stream(
    kind: str, corpus: str, pretokenized: str, recipe: dict, num_workers: int, max_batches: int
) -> dict:
    from midiformers import MidiTokenizer
    from midiformers.data_scripts import load_midi_dataset, load_pretokenized, tokenize_dataset

    tokenizer = MidiTokenizer()
    length, batch_size = recipe["max_length"], recipe["per_device_train_batch_size"]
    start = time.perf_counter()
    if kind == "pretokenized":
        stream = load_pretokenized(pretokenized, tokenizer, length, split="train", streaming=True)
    else:
        raw = load_midi_dataset("midi_folder", path=corpus, split="train", streaming=True)
        stream = tokenize_dataset(raw, tokenizer, length)
    stream = stream.shuffle(seed=0, buffer_size=SHUFFLE_BUFFER)
    opened = time.perf_counter() - start
    result = _consume(stream, batch_size, num_workers, max_batches)
    result["open_seconds"] = opened
    return result


def step_model(recipe: dict, steps: int) -> dict:
    """Training throughput of the default recipe's model on random token batches."""
    import torch

    from midiformers import MidiGPTConfig, MidiGPTForCausalLM, MidiTokenizer

    tokenizer = MidiTokenizer(preset=recipe.get("tokenizer_preset", "remi"))
    config = MidiGPTConfig(vocab_size=len(tokenizer), **recipe["model_config"])
    model = MidiGPTForCausalLM(config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch, length = recipe["per_device_train_batch_size"], recipe["max_length"]
    ids = torch.randint(4, len(tokenizer), (batch, length))
    timings = []
    for _ in range(steps + 3):
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        timings.append(time.perf_counter() - start)
    # The fastest step after warm-up: the most the model can consume here (the machine may be
    # busy), so the input pipeline's margin over it is the conservative one.
    step = min(timings[3:])
    return {
        "step_seconds": step,
        "median_step_seconds": sorted(timings[3:])[len(timings[3:]) // 2],
        "tokens_per_s": batch * length / step,
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch_threads": torch.get_num_threads(),
    }


def _fine_tuning_setup(recipe: dict, arch: str, lora_dropout: float | None):
    """The default recipe's model dimensions as ``arch``, fully trainable (``lora_dropout``
    None) or wrapped with LoRA as ``train.py`` does with ``lora: true`` (r=8, alpha 16, the
    architecture's default target modules), with its AdamW and a batch of random tokens."""
    import peft  # noqa: F401  (imported in every setup: its modules are not the adapters' cost)
    import torch

    from midiformers import MidiTokenizer
    from midiformers.modeling import ARCHITECTURES
    from midiformers.training.lora import LORA_DEFAULTS, apply_lora

    tokenizer = MidiTokenizer(preset=recipe.get("tokenizer_preset", "remi"))
    spec = ARCHITECTURES[arch]
    torch.manual_seed(0)
    model = spec.model_class(spec.config_class(vocab_size=len(tokenizer), **recipe["model_config"]))
    if lora_dropout is not None:
        settings = {**LORA_DEFAULTS, "lora_dropout": lora_dropout, "lora_target_modules": None}
        model = apply_lora(model, settings, "base")
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    batch, length = recipe["per_device_train_batch_size"], recipe["max_length"]
    ids = torch.randint(4, len(tokenizer), (batch, length))

    def step() -> float:
        start = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    def saved_for_backward() -> int:
        """Bytes of the tensors one forward pass keeps for the backward pass (each storage
        once: several ops may keep the same tensor)."""
        storages: dict[int, int] = {}

        def keep(tensor):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            loss = model(input_ids=ids, labels=ids).loss
        del loss
        return sum(storages.values())

    step.saved_for_backward = saved_for_backward
    return model, optimizer, step


def step_lora_memory(
    recipe: dict, arch: str, lora_dropout: float | None, steps: int, threads: int
) -> dict:
    """Parameters and memory of one fine-tuning setup, alone in its process: what the
    training steps add to the process' resident memory once the model is built."""
    import resource

    import psutil
    import torch

    torch.set_num_threads(threads)
    model, optimizer, step = _fine_tuning_setup(recipe, arch, lora_dropout)
    before = psutil.Process().memory_info().rss
    for _ in range(steps):
        step()
    high = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB
    saved = step.saved_for_backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    state_bytes = sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if torch.is_tensor(value) and value.dim()
    )
    base = model.get_base_model() if lora_dropout is not None else model
    return {
        "arch": arch,
        "lora_dropout": lora_dropout,
        "base_parameters": sum(
            p.numel() for name, p in base.named_parameters() if "lora_" not in name
        ),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in trainable),
        "gradient_mb": sum(p.numel() * p.element_size() for p in trainable) / 2**20,
        "optimizer_state_mb": state_bytes / 2**20,
        "steps_add_mb": max(high - before, 0) / 2**20,
        "saved_for_backward_mb": saved / 2**20,
    }


def step_lora_timing(recipe: dict, setups: list, rounds: int, threads: int) -> dict:
    """Step times of every setup in one process, one step of each in turn for ``rounds``
    rounds (after two warm-up steps each), so that a busy spell of the machine hits all."""
    import torch

    torch.set_num_threads(threads)
    steps = [_fine_tuning_setup(recipe, arch, dropout)[2] for arch, dropout in setups]
    for step in steps:
        step(), step()
    timings: list[list[float]] = [[] for _ in setups]
    for _ in range(rounds):
        for times, step in zip(timings, steps):
            times.append(step())
    return {
        "step_seconds": [min(times) for times in timings],
        "median_step_seconds": [sorted(times)[len(times) // 2] for times in timings],
        "torch_threads": torch.get_num_threads(),
    }


def lora_rows(
    recipe: dict, archs: list[str], rounds: int, memory_steps: int, threads: int
) -> list[dict]:
    """LoRA vs full fine-tuning (issue 15, item 5) of each architecture in ``archs`` at the
    default recipe's dimensions: trainable parameters, memory (each setup alone in its
    process) and step time (all setups in one process, in turn). The first architecture also
    runs LoRA without dropout, which shows what the adapters' dropout costs."""
    from midiformers.training.lora import LORA_DEFAULTS

    dropout = LORA_DEFAULTS["lora_dropout"]
    setups = [(arch, value) for arch in archs for value in (None, dropout)]
    if dropout:
        setups.insert(2, (archs[0], 0.0))
    rows = [
        run_step(
            "lora_memory",
            recipe=recipe,
            arch=arch,
            lora_dropout=value,
            steps=memory_steps,
            threads=threads,
        )
        for arch, value in setups
    ]
    timing = run_step("lora_timing", recipe=recipe, setups=setups, rounds=rounds, threads=threads)
    for index, row in enumerate(rows):
        row["step_seconds"] = timing["step_seconds"][index]
        row["median_step_seconds"] = timing["median_step_seconds"][index]
        row["torch_threads"] = timing["torch_threads"]
        row["rounds"] = rounds
    return rows


STEPS = {
    "build": step_build,
    "pretokenize": step_pretokenize,
    "stream": step_stream,
    "model": step_model,
    "lora_memory": step_lora_memory,
    "lora_timing": step_lora_timing,
}


# ----------------------------------------------------------------------------- runner


def _memory(pid: int) -> tuple[int, int]:
    """(anonymous, total) proportional set size of a process in bytes: the memory it needs,
    and that plus the pages of memory-mapped files it has read (Arrow tables, Parquet),
    which the kernel can drop. Forked workers share pages: PSS counts each page once."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
            fields = dict(line.split(":", 1) for line in handle.read().splitlines()[1:])
        return (
            int(fields["Pss_Anon"].split()[0]) * 1024,
            int(fields["Pss"].split()[0]) * 1024,
        )
    except (OSError, KeyError, ValueError):  # not Linux >= 5.9: PSS only
        import psutil

        pss = psutil.Process(pid).memory_full_info().pss
        return pss, pss


def _tree_memory(process) -> tuple[int, int]:
    """:func:`_memory` summed over a process and its children."""
    import psutil

    anonymous = total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error, OSError):
            anon, pss = _memory(member.pid)
            anonymous += anon
            total += pss
    return anonymous, total


def run_step(name: str, **kwargs) -> dict:
    """Run one step in a child process; its result plus the peak memory (MB) of the child and
    its workers, sampled every 50 ms: anonymous, and with mapped files (see :func:`_memory`)."""
    import psutil

    command = [sys.executable, __file__, "--step", name, "--kwargs", json.dumps(kwargs)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    process = psutil.Process(child.pid)
    peak = [0, 0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            with contextlib.suppress(psutil.Error):
                anonymous, total = _tree_memory(process)
                peak[0], peak[1] = max(peak[0], anonymous), max(peak[1], total)
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = child.communicate()
    done.set()
    sampler.join()
    if child.returncode:
        raise RuntimeError(f"step {name} failed ({child.returncode}); see its output above")
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_mb"] = peak[0] / 2**20
    result["peak_with_files_mb"] = peak[1] / 2**20
    return result


def _run_child(name: str, kwargs: str) -> None:
    _quiet()
    result = STEPS[name](**json.loads(kwargs))
    print(json.dumps(result))


def _recipe() -> dict:
    import yaml

    with open(DEFAULT_RECIPE, encoding="utf-8") as handle:
        recipe = yaml.safe_load(handle)
    return {
        key: recipe[key]
        for key in ("model_config", "max_length", "per_device_train_batch_size", "tokenizer_preset")
    }


def data_rows(args: argparse.Namespace, recipe: dict) -> list[dict]:
    """Build, pretokenize and stream a synthetic corpus of each size in ``args.sizes``."""
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_scale-"))
    work.mkdir(parents=True, exist_ok=True)
    pieces = source_pieces(args.chorales)
    rows: list[dict] = []
    for size in args.sizes:
        corpus = work / f"corpus-{size}"
        if corpus.exists():
            shutil.rmtree(corpus)
        start = time.perf_counter()
        size_bytes = make_corpus(corpus, size, pieces)
        print(
            f"corpus of {size} files ({size_bytes / 2**20:.0f} MiB) written in "
            f"{time.perf_counter() - start:.0f} s",
            file=sys.stderr,
        )
        for num_proc in args.num_proc if "build" in args.data_steps else []:
            cache = work / f"cache-{size}-{num_proc}"
            shutil.rmtree(cache, ignore_errors=True)
            result = run_step("build", corpus=str(corpus), cache=str(cache), num_proc=num_proc)
            rows.append(
                {
                    "size": size,
                    "step": "build midi_folder",
                    "procs": num_proc,
                    **result,
                    "files_per_s": size / result["seconds"],
                }
            )
        cache = work / f"cache-{size}-{args.num_proc[0]}"
        for num_proc in args.num_proc if "pretokenize" in args.data_steps else []:
            output = work / f"pretokenized-{size}-{num_proc}"
            shutil.rmtree(output, ignore_errors=True)
            result = run_step(
                "pretokenize",
                corpus=str(corpus),
                cache=str(cache),
                output=str(output),
                num_proc=num_proc,
            )
            rows.append(
                {
                    "size": size,
                    "step": "pretokenize",
                    "procs": num_proc,
                    **result,
                    "files_per_s": result["examples"] / result["seconds"],
                    "tokens_per_s": result["tokens"] / result["seconds"],
                }
            )
        pretokenized = work / f"pretokenized-{size}-{args.num_proc[0]}"
        kinds = {"stream-pretokenized": "pretokenized", "stream-raw": "raw MIDI"}
        for kind in [kinds[step] for step in kinds if step in args.data_steps]:
            for workers in args.workers:
                result = run_step(
                    "stream",
                    kind=kind,
                    corpus=str(corpus),
                    pretokenized=str(pretokenized),
                    recipe=recipe,
                    num_workers=workers,
                    max_batches=args.stream_batches,
                )
                rows.append(
                    {
                        "size": size,
                        "step": f"stream {kind}",
                        "procs": workers,
                        **result,
                        "tokens_per_s": result["steady_tokens_per_s"],
                    }
                )
        for path in glob.glob(str(work / f"cache-{size}-*")):
            shutil.rmtree(path, ignore_errors=True)
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def _when() -> dict:
    """The machine and its load average now: what a part of the report was measured on."""
    from benchmarks._common import machine_description

    return {"machine": machine_description(), "load": list(os.getloadavg())}


def _previous(path: Path) -> dict:
    """The results saved by an earlier run (the part ``--only`` does not measure again)."""
    if not path.is_file():
        return {}
    saved = json.loads(path.read_text())
    if "data_runs" not in saved and saved.get("rows"):  # written before runs were kept
        first = (RESULTS / "bench_scale.md").read_text().splitlines()[:2]
        load = [float(x) for x in first[1].split(":", 1)[1].strip(" .").split(",")]
        saved["data_runs"] = [{"machine": first[0], "load": load, "model": saved.pop("model")}]
        for row in saved["rows"]:
            row["run"] = 0
    return saved


def _merge_rows(results: dict, rows: list[dict], run: dict) -> None:
    """Add a data run to ``results``: its rows replace the saved rows of the same size, step
    and process count; the others stay, marked with the run they come from."""
    runs = results.setdefault("data_runs", [])
    runs.append(run)
    for row in rows:
        row["run"] = len(runs) - 1
    measured = {(row["size"], row["step"], row["procs"]) for row in rows}
    kept = [
        row
        for row in results.get("rows", [])
        if (row["size"], row["step"], row["procs"]) not in measured
    ]
    order = {step: index for index, step in enumerate(STEP_ORDER)}
    results["rows"] = sorted(
        kept + rows, key=lambda row: (row["size"], order.get(row["step"], 99), row["procs"])
    )
    used = sorted({row["run"] for row in results["rows"]})  # drop runs no row comes from
    renumber = {old: new for new, old in enumerate(used)}
    results["data_runs"] = [runs[old] for old in used]
    for row in results["rows"]:
        row["run"] = renumber[row["run"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only",
        choices=("data", "lora"),
        help="measure one part (data: build / pretokenize / stream and the model's "
        "consumption; lora: LoRA vs full fine-tuning, a minute or two) and keep the other "
        "part's saved results",
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--chorales", type=int, default=30, help="music21 chorales as sources")
    parser.add_argument("--stream-batches", type=int, default=300)
    parser.add_argument(
        "--data-steps",
        nargs="+",
        choices=DATA_STEPS,
        default=list(DATA_STEPS),
        help="the data part's steps to run (pretokenize needs build, stream-pretokenized "
        "needs pretokenize)",
    )
    parser.add_argument("--model-steps", type=int, default=10)
    parser.add_argument("--lora-archs", nargs="+", default=["gpt", "conformer"])
    parser.add_argument("--lora-rounds", type=int, default=20, help="timed steps per setup")
    parser.add_argument("--lora-steps", type=int, default=3, help="steps of a memory run")
    parser.add_argument(
        "--lora-threads", type=int, default=1, help="torch threads (the default recipe's 1)"
    )
    parser.add_argument("--work-dir", default=None, help="default: a temporary folder")
    parser.add_argument("--no-save", action="store_true", help="do not write benchmarks/results")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--kwargs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        _run_child(args.step, args.kwargs)
        return
    _quiet()
    sys.path.insert(0, str(ROOT))
    recipe = _recipe()
    results = _previous(RESULTS / "bench_scale.json") if args.only else {}
    results["recipe"] = recipe
    if args.only != "lora":
        model = run_step("model", recipe=recipe, steps=args.model_steps)
        rows = data_rows(args, recipe)
        if set(args.data_steps) == set(DATA_STEPS):  # a whole run replaces the saved one
            results.pop("rows", None)
            results.pop("data_runs", None)
        _merge_rows(results, rows, {**_when(), "model": model})
    if args.only != "data":
        results["lora"] = lora_rows(
            recipe, args.lora_archs, args.lora_rounds, args.lora_steps, args.lora_threads
        )
        results["lora_machine"] = _when()
    report = format_report(results)
    print(report)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "bench_scale.md").write_text(report)
        (RESULTS / "bench_scale.json").write_text(json.dumps(results, indent=2))


def _number(value, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _measured_on(part: dict) -> list[str]:
    load = ", ".join(f"{value:.1f}" for value in part["load"])
    return [part["machine"], f"Load average at the end of the measurement: {load}.", ""]


def format_report(results: dict) -> str:
    """The Markdown report: the data part (the model's consumption, one row per step, memory
    ratios) and the LoRA part, each with the machine and load it was measured under."""
    lines: list[str] = []
    if results.get("rows"):
        lines += _data_report(results["rows"], results["data_runs"], results["recipe"])
    lines += ["", "LoRA vs full fine-tuning:", ""]
    if results.get("lora"):
        lines += _measured_on(results["lora_machine"])
        lines += _lora_report(results["lora"], results["recipe"])
    else:
        lines.append("not measured (python benchmarks/bench_scale.py --only lora).")
    return "\n".join(lines).lstrip("\n") + "\n"


def _lora_report(rows: list[dict], recipe: dict) -> list[str]:
    lines = [
        "| model | fine-tuning | parameters | trainable | step ms (fastest) | step ms (median) "
        "| x full | gradients + AdamW state MB | saved for backward MB | steps add MB "
        "| peak MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    full = {row["arch"]: row for row in rows if row["lora_dropout"] is None}
    for row in rows:
        base = full.get(row["arch"])
        ratio = row["step_seconds"] / base["step_seconds"] if base else None
        lora = row["lora_dropout"] is not None
        share = f" ({row['trainable'] / row['base_parameters']:.1%})" if lora else ""
        setup = f"LoRA r=8, dropout {row['lora_dropout']:g}" if lora else "full"
        lines.append(
            f"| {row['arch']} | {setup} | "
            f"{row['parameters']:,} | {row['trainable']:,}{share} | "
            f"{row['step_seconds'] * 1000:.0f} | {row['median_step_seconds'] * 1000:.0f} | "
            f"{_number(ratio, 2)} | {row['gradient_mb'] + row['optimizer_state_mb']:.2f} | "
            f"{row['saved_for_backward_mb']:.0f} | {row['steps_add_mb']:.0f} | "
            f"{row['peak_mb']:.0f} |"
        )
    model = recipe["model_config"]
    lines += [
        "",
        f"The default recipe's dimensions ({model['hidden_size']} hidden, "
        f"{model['num_hidden_layers']} layers), batch {recipe['per_device_train_batch_size']} x "
        f"{recipe['max_length']}: forward + backward + AdamW step on random tokens, "
        f"{rows[0]['torch_threads']} torch thread(s). LoRA as train.py's `lora: true` (r=8, "
        "alpha 16, the architecture's default target modules); `trainable` in brackets is the "
        "share of the base model's weights. Step times: every setup in one process, one step "
        f"of each in turn, {rows[0]['rounds']} rounds (`x full`: fastest over fastest). Memory: "
        "each setup alone in its own process (peft imported in all): `gradients + AdamW state` "
        "is what training keeps per trainable weight, counted from the tensors; `saved for "
        "backward` the activations one forward pass keeps for the backward pass (LoRA's "
        "dropout keeps a dropped-out copy of each adapted layer's input); `steps add` is the "
        "resident-memory high-water mark of the training steps above the process with "
        "its model built (those, the forward's temporaries and the allocator's slack); `peak` is the whole process (anonymous PSS, sampled).",
    ]
    return lines


def _data_report(rows: list, runs: list[dict], recipe: dict) -> list[str]:
    lines: list[str] = []
    several = len(runs) > 1
    for index, run in enumerate(runs):
        model = run["model"]
        if several:
            lines += [f"Run {index} (the `run` column):", ""]
        lines += _measured_on(run)
        lines += [
            f"Default model (configs/default.yaml, {model['parameters']:,} parameters, batch "
            f"{recipe['per_device_train_batch_size']} x {recipe['max_length']}): "
            f"{model['step_seconds'] * 1000:.0f} ms for its fastest training step (median "
            f"{model['median_step_seconds'] * 1000:.0f} ms) = {model['tokens_per_s']:,.0f} "
            f"tokens/s consumed at most ({model['torch_threads']} torch threads).",
            "",
        ]
    run_head, run_rule = ("| run ", "|---:") if several else ("", "")
    lines += [
        f"{run_head}| files | step | num_proc / workers | wall s | startup s | files/s | tokens/s "
        "| x model | peak MB | with mapped files |",
        f"{run_rule}|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        model = runs[row.get("run", 0)]["model"]
        tokens = row.get("tokens_per_s")
        ratio = tokens / model["tokens_per_s"] if tokens else None
        startup = None
        if "open_seconds" in row:
            startup = row["open_seconds"] + (row.get("first_batch_seconds") or 0.0)
        run_cell = f"| {row.get('run', 0)} " if several else ""
        lines.append(
            f"{run_cell}| {row['size']:,} | {row['step']} | {row['procs']} | "
            f"{row['seconds']:.1f} | {_number(startup, 1)} | {_number(row.get('files_per_s'))} | "
            f"{_number(tokens)} | {_number(ratio, 1) if ratio else '-'} | "
            f"{row['peak_mb']:.0f} | {row['peak_with_files_mb']:.0f} |"
        )
    lines += [
        "",
        "Streaming: `startup s` is opening the stream (for raw MIDI, listing and checking every "
        "file) plus the first batch (workers starting, shuffle buffer of "
        f"{SHUFFLE_BUFFER} blocks filling); `tokens/s` is the rate after the first batch, "
        f"batches of {recipe['per_device_train_batch_size']} x {recipe['max_length']} through a "
        "DataLoader with the default data collator. `x model` is that rate over the default "
        "model's training consumption measured in the same run. `peak MB`: the anonymous memory of the "
        "step's process and workers (proportional set size, so pages forked workers share count "
        "once); `with mapped files` adds the pages of memory-mapped Arrow / Parquet files it "
        "read, which the kernel can drop and reread.",
    ]
    sizes = sorted({row["size"] for row in rows})
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        lines += ["", f"Peak memory, {large:,} vs {small:,} files (goal: within 20%):", ""]
        for step, procs in dict.fromkeys((r["step"], r["procs"]) for r in rows):
            same = [r for r in rows if (r["step"], r["procs"]) == (step, procs)]
            peaks = {r["size"]: r["peak_mb"] for r in same}
            if small in peaks and large in peaks:
                change = peaks[large] / peaks[small] - 1
                run = f", run {same[0].get('run', 0)}" if several else ""
                lines.append(
                    f"- {step} ({procs}{run}): {peaks[small]:.0f} -> {peaks[large]:.0f} MB "
                    f"({change:+.0%})"
                )
    return lines


if __name__ == "__main__":
    main()
