"""Benchmark the offline data path: building ``bach_chorales`` and tokenizing it.

Measures, in one run on this machine:

* the build time of ``bach_chorales`` from music21's corpus into a fresh cache, with
  ``num_proc`` 1 and 2, and the time to load the cached build again;
* ``tokenize_dataset`` throughput (pieces/s and tokens/s, REMI, packed blocks) with
  ``num_proc`` 1 and 2, with ``datasets`` caching disabled so nothing is reused.

Wall time depends on what else the machine runs, so the table also gives the CPU time
(this process and its worker processes) and the load average. Prints a Markdown table::

    python benchmarks/bench_data.py                # full corpus (a few minutes)
    python benchmarks/bench_data.py --max-pieces 40
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time

import datasets

from midiformers.data_scripts import load_midi_dataset, tokenize_dataset
from midiformers.data_scripts.bach_chorales import chorale_catalogue
from midiformers.tokenization import MidiTokenizer


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (pool workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def time_build(max_pieces: int | None, num_proc: int, cache_dir: str) -> tuple[float, float, dict]:
    start, cpu = time.perf_counter(), cpu_seconds()
    ds = load_midi_dataset(
        "bach_chorales", cache_dir=cache_dir, max_pieces=max_pieces, num_proc=num_proc
    )
    return time.perf_counter() - start, cpu_seconds() - cpu, ds


def time_tokenize(ds, tokenizer, num_proc: int, max_length: int) -> tuple[float, float, int]:
    start, cpu = time.perf_counter(), cpu_seconds()
    out = tokenize_dataset(ds, tokenizer, max_length=max_length, num_proc=num_proc, batch_size=16)
    seconds = time.perf_counter() - start
    tokens = sum(len(out[split]) * max_length for split in out)
    return seconds, cpu_seconds() - cpu, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-pieces", type=int, default=None, help="default: all chorales")
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-length", type=int, default=1024)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    datasets.disable_progress_bars()

    chorale_catalogue()  # import music21 and read its catalogue outside the timings
    rows = []
    with tempfile.TemporaryDirectory() as root:
        ds = None
        for num_proc in args.num_proc:
            cache_dir = os.path.join(root, f"build-{num_proc}")
            seconds, cpu, ds = time_build(args.max_pieces, num_proc, cache_dir)
            pieces = sum(len(ds[split]) for split in ds)
            rate = f"{pieces / seconds:.1f} pieces/s"
            rows.append((f"build bach_chorales, num_proc={num_proc}", seconds, cpu, rate))
            cached, cpu, _ = time_build(args.max_pieces, num_proc, cache_dir)
            rows.append(
                (f"load cached build, num_proc={num_proc}", cached, cpu, f"{pieces} pieces")
            )

        tokenizer = MidiTokenizer()
        datasets.disable_caching()
        pieces = sum(len(ds[split]) for split in ds)
        for num_proc in args.num_proc:
            seconds, cpu, tokens = time_tokenize(ds, tokenizer, num_proc, args.max_length)
            rows.append(
                (
                    f"tokenize_dataset (REMI, pack {args.max_length}), num_proc={num_proc}",
                    seconds,
                    cpu,
                    f"{pieces / seconds:.1f} pieces/s, {tokens / seconds / 1000:.0f}k tokens/s",
                )
            )

    machine = platform.processor() or platform.machine()
    print(f"\nbach_chorales: {pieces} pieces; {machine}, {os.cpu_count()} CPUs")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}\n")
    print("| step | wall s | CPU s | throughput (wall) |")
    print("|---|---:|---:|---|")
    for name, seconds, cpu, throughput in rows:
        print(f"| {name} | {seconds:.2f} | {cpu:.2f} | {throughput} |")


if __name__ == "__main__":
    main()
