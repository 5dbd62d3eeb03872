"""Tokenization throughput: ``MidiTokenizer`` against bare miditok, measured in the same run.

Tokenizes the MIDI fixtures and (when music21 is installed) Bach chorales from music21's
corpus, converted to MIDI once into a temporary folder. Both tokenizers read the same files
from disk, file by file in alternation; each file's best CPU time over ``--repeats`` runs
is kept, which evens out a busy machine. Prints a Markdown table: files/s, tokens/s and
the ratio to bare miditok (goal: the wrapper keeps >= 0.9x).

    python benchmarks/bench_tokenizer.py --limit 100 --preset remi
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import miditok
import transformers
from tqdm.auto import tqdm

from midiformers import MidiTokenizer
from midiformers.tokenization import PRESETS

try:
    from _common import machine_description
except ImportError:  # run from another folder
    from benchmarks._common import machine_description

logger = logging.getLogger("bench_tokenizer")
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "midi" / "valid"


def chorale_files(limit: int, folder: Path) -> list[Path]:
    """Write up to ``limit`` music21 Bach chorales as MIDI files (skipping unexportable ones)."""
    try:
        from music21 import corpus
    except ImportError:
        logger.warning("music21 is not installed: benchmarking the fixtures only")
        return []
    paths = []
    chorales = corpus.chorales.Iterator(returnType="filename")
    with tqdm(total=limit, desc="converting chorales") as progress:
        for index, work in enumerate(chorales):
            if len(paths) >= limit:
                break
            target = folder / f"chorale_{index:03d}.mid"
            try:
                corpus.parse(work).write("midi", fp=target)
            except Exception as error:  # music21 refuses some repeat structures
                logger.info("skipping %s: %s", work, error)
                continue
            paths.append(target)
            progress.update()
    return paths


def encode_bare(tokenizer: miditok.MusicTokenizer, path: Path) -> int:
    return len(tokenizer.encode(path).ids)


def encode_wrapper(tokenizer: MidiTokenizer, path: Path) -> int:
    return len(tokenizer(path).input_ids)


def per_file_best(paths: list[Path], runs: dict, repeats: int) -> dict[str, tuple[float, int]]:
    """Per method: (sum over files of the best of ``repeats`` CPU times, tokens produced).

    Methods alternate file by file, so both see the same machine state; CPU time and the
    per-file minimum discount other processes competing for the cores.
    """
    best = {name: [float("inf")] * len(paths) for name in runs}
    tokens = {name: [0] * len(paths) for name in runs}
    for _ in tqdm(range(repeats), desc="timing"):
        for index, path in enumerate(paths):
            for name, (function, tokenizer) in runs.items():
                start = time.process_time()
                tokens[name][index] = function(tokenizer, path)
                elapsed = time.process_time() - start
                best[name][index] = min(best[name][index], elapsed)
    return {name: (sum(best[name]), sum(tokens[name])) for name in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100, help="music21 chorales to add (0: none)")
    parser.add_argument("--preset", default="remi", choices=sorted(PRESETS))
    parser.add_argument("--repeats", type=int, default=5, help="runs per file; best is kept")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", module="miditok")
    transformers.logging.set_verbosity_error()  # no "longer than model_max_length" notices

    with tempfile.TemporaryDirectory() as folder:
        fixtures = sorted(FIXTURES.glob("*.mid"))
        chorales = chorale_files(args.limit, Path(folder))
        paths = fixtures + chorales
        wrapper = MidiTokenizer(preset=args.preset)
        bare = wrapper.miditok  # the very same miditok tokenizer, called directly
        runs = {
            "miditok (bare `encode`)": (encode_bare, bare),
            "MidiTokenizer (`tok(path)`)": (encode_wrapper, wrapper),
        }
        best = per_file_best(paths, runs, args.repeats)

    reference_seconds = best["miditok (bare `encode`)"][0]
    print("\n" + machine_description())
    print(
        f"Data: {len(paths)} MIDI files ({len(fixtures)} fixtures + {len(chorales)} Bach "
        f"chorales), preset `{args.preset}`, best CPU time of {args.repeats} runs per file; "
        "MidiTokenizer tokens include BOS/EOS\n"
    )
    print("| tokenizer | files/s | tokens/s | throughput vs miditok |")
    print("|---|---:|---:|---:|")
    for name, (seconds, tokens) in best.items():
        print(
            f"| {name} | {len(paths) / seconds:,.0f} | {tokens / seconds:,.0f} | "
            f"{reference_seconds / seconds:.2f}x |"
        )


if __name__ == "__main__":
    main()
