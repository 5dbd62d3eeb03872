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
  be at least 5x faster.

Each step runs in its own process so its peak memory is its own. Prints Markdown tables and
writes them to ``benchmarks/results/bench_scale.{md,json}``::

    python benchmarks/bench_scale.py --sizes 1000 10000           # a few minutes
    python benchmarks/bench_scale.py --sizes 10000 100000         # the issue's sizes

LoRA vs full fine-tuning (trainable parameters, step time, memory) belongs in the same
table; see :func:`lora_rows`, the place for those rows.
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


def lora_rows(args: argparse.Namespace) -> list[dict]:
    """LoRA vs full fine-tuning of the default model (issue 15, item 5): trainable
    parameters, step time and peak memory of each. To be filled in by the PEFT work: return
    rows shaped like ``{"name": "LoRA r=8", "trainable": int, "step_seconds": float,
    "peak_mb": float}``; :func:`main` prints them in their own table."""
    return []


STEPS = {
    "build": step_build,
    "pretokenize": step_pretokenize,
    "stream": step_stream,
    "model": step_model,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--chorales", type=int, default=30, help="music21 chorales as sources")
    parser.add_argument("--stream-batches", type=int, default=300)
    parser.add_argument("--model-steps", type=int, default=10)
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
    from benchmarks._common import machine_description

    recipe = _recipe()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_scale-"))
    work.mkdir(parents=True, exist_ok=True)
    pieces = source_pieces(args.chorales)
    rows: list[dict] = []
    model = run_step("model", recipe=recipe, steps=args.model_steps)
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
        for num_proc in args.num_proc:
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
        for num_proc in args.num_proc:
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
        for kind in ("pretokenized", "raw MIDI"):
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
    report = format_report(rows, model, lora_rows(args), recipe, machine_description())
    print(report)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "bench_scale.md").write_text(report)
        (RESULTS / "bench_scale.json").write_text(
            json.dumps({"rows": rows, "model": model, "recipe": recipe}, indent=2)
        )
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)


def _number(value, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def format_report(rows: list, model: dict, lora: list, recipe: dict, machine: str) -> str:
    """The Markdown report: the model's consumption, one row per step, memory ratios."""
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    lines = [machine, f"Load average when the report was written: {load}.", ""]
    lines.append(
        f"Default model (configs/default.yaml, {model['parameters']:,} parameters, batch "
        f"{recipe['per_device_train_batch_size']} x {recipe['max_length']}): "
        f"{model['step_seconds'] * 1000:.0f} ms for its fastest training step (median "
        f"{model['median_step_seconds'] * 1000:.0f} ms) = {model['tokens_per_s']:,.0f} tokens/s "
        f"consumed at most ({model['torch_threads']} torch threads)."
    )
    lines += [
        "",
        "| files | step | num_proc / workers | wall s | startup s | files/s | tokens/s "
        "| x model | peak MB | with mapped files |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        tokens = row.get("tokens_per_s")
        ratio = tokens / model["tokens_per_s"] if tokens else None
        startup = None
        if "open_seconds" in row:
            startup = row["open_seconds"] + (row.get("first_batch_seconds") or 0.0)
        lines.append(
            f"| {row['size']:,} | {row['step']} | {row['procs']} | {row['seconds']:.1f} | "
            f"{_number(startup, 1)} | {_number(row.get('files_per_s'))} | {_number(tokens)} | "
            f"{_number(ratio, 1) if ratio else '-'} | {row['peak_mb']:.0f} | "
            f"{row['peak_with_files_mb']:.0f} |"
        )
    lines += [
        "",
        "Streaming: `startup s` is opening the stream (for raw MIDI, listing and checking every "
        "file) plus the first batch (workers starting, shuffle buffer of "
        f"{SHUFFLE_BUFFER} blocks filling); `tokens/s` is the rate after the first batch, "
        f"batches of {recipe['per_device_train_batch_size']} x {recipe['max_length']} through a "
        "DataLoader with the default data collator. `x model` is that rate over the default "
        "model's training consumption measured above. `peak MB`: the anonymous memory of the "
        "step's process and workers (proportional set size, so pages forked workers share count "
        "once); `with mapped files` adds the pages of memory-mapped Arrow / Parquet files it "
        "read, which the kernel can drop and reread.",
    ]
    sizes = sorted({row["size"] for row in rows})
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        lines += ["", f"Peak memory, {large:,} vs {small:,} files (goal: within 20%):", ""]
        for step, procs in dict.fromkeys((r["step"], r["procs"]) for r in rows):
            peaks = {
                r["size"]: r["peak_mb"] for r in rows if (r["step"], r["procs"]) == (step, procs)
            }
            if small in peaks and large in peaks:
                change = peaks[large] / peaks[small] - 1
                lines.append(
                    f"- {step} ({procs}): {peaks[small]:.0f} -> {peaks[large]:.0f} MB "
                    f"({change:+.0%})"
                )
    lines += ["", "LoRA vs full fine-tuning:"]
    if lora:
        lines += ["", "| run | trainable parameters | step s | peak MB |", "|---|---:|---:|---:|"]
        lines += [
            f"| {r['name']} | {r['trainable']:,} | {r['step_seconds']:.3f} | {r['peak_mb']:.0f} |"
            for r in lora
        ]
    else:
        lines.append("not measured yet (see lora_rows in benchmarks/bench_scale.py).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
