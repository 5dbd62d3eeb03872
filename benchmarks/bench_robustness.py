"""Robustness: corrupt MIDI through every reader, each case in a child process, and what the
check that makes this safe costs.

For each valid fixture, ``--n`` mutants of each kind (prefixes, bit flips, chunk-length lies,
corrupt events inside truthfully sized tracks, random bytes; see ``tests/midi_fuzz.py``) go
through symusic alone (``Score.from_midi`` without any check: the baseline), ``load_score``,
the tokenizer, the ``midi_folder`` builder and the demo's upload path. Every target runs in
child processes that report each case, so a native crash or a hang (``--case-timeout``)
costs one case. The cheap targets run twice, the second time with glibc filling the heap
(``MALLOC_PERTURB_``), so an outcome that depends on stray memory shows up as a change.

Prints two Markdown tables: target x mutation kind -> cases, clean errors, accepted, crashes
and hangs (goal: 0 and 0 for everything but the baseline); and the validator's time per file
and per MB against symusic's parse of the same bytes, measured in the same run (a ratio).
Results go to ``benchmarks/results/bench_robustness.{json,md}``::

    python benchmarks/bench_robustness.py --n 50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import timeit
from collections import Counter
from pathlib import Path

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.bench_robustness
    from _common import machine_description
except ImportError:
    from benchmarks._common import machine_description

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import midi_fuzz  # noqa: E402  (tests/midi_fuzz.py: mutants and the child-process runner)

FIXTURES = ROOT / "tests" / "fixtures" / "midi" / "valid"
RESULTS = Path(__file__).resolve().parent / "results"
TARGET_NAMES = {
    "symusic": "symusic alone (no check)",
    "load_score": "load_score",
    "tokenizer": "MidiTokenizer",
    "builder": "midi_folder builder",
    "demo": "demo upload",
}
TWICE = ("symusic", "load_score")  # cheap enough to run a second time, heap perturbed
STATUSES = ("rejected", "accepted", "crash", "hang", "unexpected")


def tiny_model(folder: Path) -> Path:
    """A saved tiny random GPT with the default tokenizer, for the demo target."""
    import torch

    from midiformers import MidiGPTConfig, MidiGPTForCausalLM, MidiTokenizer

    tokenizer = MidiTokenizer()
    config = MidiGPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    MidiGPTForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def fuzz(args, model_dir: Path) -> dict:
    """Every target on the same mutants; counts by target and kind, and the cases that
    crashed, hung, raised something else or changed between runs."""
    cases = []
    for path in sorted(FIXTURES.glob("*.mid")):
        cases += midi_fuzz.mutants(path.stem, path.read_bytes(), args.kinds, args.n, args.seed)
    results = {"cases_per_target": len(cases), "targets": {}}
    for target in args.targets:
        work = [(target, case) for case in cases]
        stats = midi_fuzz.RunStats()
        start = time.perf_counter()
        options = {"model_dir": model_dir, "case_timeout": args.case_timeout, "stats": stats}
        outcomes = midi_fuzz.run(work, **options)
        changed = None
        if target in TWICE:
            again = midi_fuzz.run(work, env={"MALLOC_PERTURB_": "165"}, **options)
            changed = [
                f"{a.case_id}: {a.status} {a.detail!r} -> {b.status} {b.detail!r}"
                for a, b in zip(outcomes, again)
                if (a.status, a.detail) != (b.status, b.detail)
            ]
            # a case that crashed or hung in either run counts as such
            outcomes = [b if b.status in ("crash", "hang") else a for a, b in zip(outcomes, again)]
        counts = {
            kind: {s: sum(o.kind == kind and o.status == s for o in outcomes) for s in STATUSES}
            for kind in args.kinds
        }
        results["targets"][target] = {
            "seconds": round(time.perf_counter() - start, 1),
            "children": stats.children,
            "counts": counts,
            "changed_between_runs": None if changed is None else len(changed),
            "examples": {
                "bad": [
                    f"{o.case_id}: {o.status} ({o.detail})"
                    for o in outcomes
                    if o.status in ("crash", "hang", "unexpected")
                ][:20],
                "changed": (changed or [])[:10],
            },
        }
        bad = Counter(o.status for o in outcomes if o.status in ("crash", "hang", "unexpected"))
        print(f"{target}: {len(work)} cases in {results['targets'][target]['seconds']} s, {bad}")
    return results


def best_seconds(function, budget: float = 0.3) -> float:
    """The best time of one call over a few repeats of enough calls to fill ``budget``."""
    number = max(1, int(budget / max(timeit.timeit(function, number=1), 1e-6)))
    return min(timeit.repeat(function, number=number, repeat=5)) / number


def long_piece(target_bytes: int = 1 << 20) -> bytes:
    """The longest chorale repeated until the file holds ``target_bytes`` (written by symusic)."""
    import symusic

    score = symusic.Score(str(FIXTURES / "bach_bwv4.8.mid"))
    piece, length = score.copy(), score.end()
    while len(piece.dumps_midi()) < target_bytes:
        shifted = score.shift_time(piece.end() + length // 8)
        for track, more in zip(piece.tracks, shifted.tracks):
            track.notes.extend(more.notes)
            track.controls.extend(more.controls)
    return piece.dumps_midi()


def validator_cost() -> list[dict]:
    """Per file: the validator, symusic's parse, ``load_score`` (both) and the tokenizer."""
    import symusic

    from midiformers import MidiTokenizer
    from midiformers.tokenization import load_score, midi_io

    tokenizer = MidiTokenizer()
    files = [(path.name, path.read_bytes()) for path in sorted(FIXTURES.glob("*.mid"))]
    files.append(("bach_bwv4.8 repeated to 1 MiB", long_piece()))
    rows = []
    for name, data in files:
        check = best_seconds(lambda data=data: midi_io._check_midi_structure(data, "x"))
        parse = best_seconds(lambda data=data: symusic.Score.from_midi(data))
        load = best_seconds(lambda data=data: load_score(data, max_quarters=None))
        tokenize = best_seconds(lambda data=data: tokenizer(data), budget=1.0)
        rows.append(
            {
                "file": name,
                "bytes": len(data),
                "validator_us": check * 1e6,
                "symusic_parse_us": parse * 1e6,
                "load_score_us": load * 1e6,
                "tokenizer_us": tokenize * 1e6,
            }
        )
        print(f"{name}: validator {check * 1e6:.0f} us, symusic {parse * 1e6:.0f} us")
    return rows


def markdown(results: dict) -> str:
    kinds = results["kinds"]
    lines = [
        results["machine"],
        "",
        f"`python benchmarks/bench_robustness.py --n {results['n']} --seed {results['seed']}`: "
        f"{results['fuzz']['cases_per_target']} mutants of the {results['fixtures']} valid "
        f"fixtures through each target, took {results['seconds'] / 60:.1f} min. Clean errors "
        "are `MidiFileError`s (symusic's own `RuntimeError` for the baseline); a crash is a "
        "child killed by a signal; a hang, a case still running after "
        f"{results['case_timeout']:.0f} s. *Changed* counts cases whose outcome or message "
        "differed in a second run with a perturbed heap.",
        "",
        "| target | mutation | cases | clean errors | accepted | crashes | hangs | other errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for target, result in results["fuzz"]["targets"].items():
        for kind in kinds:
            c = result["counts"][kind]
            cases = c["rejected"] + c["accepted"] + c["crash"] + c["hang"] + c["unexpected"]
            lines.append(
                f"| {TARGET_NAMES[target]} | {kind} | {cases} | {c['rejected']} | "
                f"{c['accepted']} | **{c['crash']}** | **{c['hang']}** | {c['unexpected']} |"
            )
    lines += ["", "| target | seconds | child processes | outcomes changed between runs |"]
    lines += ["|---|---:|---:|---:|"]
    for target, result in results["fuzz"]["targets"].items():
        changed = result["changed_between_runs"]
        lines.append(
            f"| {TARGET_NAMES[target]} | {result['seconds']} | {result['children']} | "
            f"{'-' if changed is None else changed} |"
        )
    lines += [
        "",
        "Cost of the check (`_check_midi_structure`: every chunk and every event) against "
        "symusic's parse of the same bytes (`Score.from_midi`), best of 5:",
        "",
        "| file | KiB | check µs | symusic parse µs | check / parse | check ms/MB | parse ms/MB "
        "| check / (load + tokenize) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["validator_cost"]:
        mb = row["bytes"] / 1e6
        lines.append(
            f"| {row['file']} | {row['bytes'] / 1024:.1f} | {row['validator_us']:.0f} | "
            f"{row['symusic_parse_us']:.0f} | "
            f"{row['validator_us'] / row['symusic_parse_us']:.2f} | "
            f"{row['validator_us'] / 1e3 / mb:.1f} | {row['symusic_parse_us'] / 1e3 / mb:.1f} | "
            f"{row['validator_us'] / (row['load_score_us'] + row['tokenizer_us']):.1%} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="mutants per fixture and kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", nargs="+", default=list(midi_fuzz.MUTATION_KINDS))
    parser.add_argument("--targets", nargs="+", default=list(TARGET_NAMES))
    parser.add_argument("--case-timeout", type=float, default=60.0)
    parser.add_argument("--output", type=Path, default=RESULTS / "bench_robustness")
    args = parser.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-robustness-") as tmp:
        model_dir = tiny_model(Path(tmp) / "tiny-gpt")
        fuzzing = fuzz(args, model_dir)
    results = {
        "machine": machine_description(),
        "python": platform.python_version(),
        "n": args.n,
        "seed": args.seed,
        "kinds": args.kinds,
        "fixtures": len(list(FIXTURES.glob("*.mid"))),
        "case_timeout": args.case_timeout,
        "fuzz": fuzzing,
        "validator_cost": validator_cost(),
        "load_average": os.getloadavg(),
    }
    results["seconds"] = time.perf_counter() - start
    table = markdown(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(table)
    print(table)
    return results


if __name__ == "__main__":
    main()
