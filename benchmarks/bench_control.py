"""How well a small model follows attribute controls and fills holes (issue 16).

A small GPT is trained in the same run on the offline Bach chorales with the ``mmm`` preset,
random attribute-control tokens and random infilling holes (``configs/mmm_infill.yaml`` with
controls on, every piece transposed at random: :data:`TRAINING_OVERRIDES`), then measured on
held-out chorales:

* **Attribute controls**: for each control, requests are taken from held-out bars (what a real
  bar of the corpus looks like: its note density, onset polyphony, pitch classes, note values,
  its track's repetition), a piece is generated under each request, and every generated bar
  (track, for repetition) whose value miditok computes equals the asked-for one is a hit. The
  chance rate beside it is how often bars generated *without* the control have that value, for
  the same requests. Goal: >= 80% hits.
* **Infilling**: the loss on the notes of a hole with the context on both sides (the infill
  format) against the same notes read left to right in the piece (the context before them only).
  Goal: lower. The main row masks bars ``a..b`` of one voice (a random one per piece): the infill
  prompt then holds everything left to right sees (the voices before it whole, this voice up to
  the hole) and more (the voices after it, this voice after the hole). A second row masks those
  bars of every voice, where left to right sees the earlier voices' notes *in* the hole's bars,
  which the infill prompt hides. And the share of filled notes in the key of the piece (the
  major or natural-minor scale that best fits the notes kept), next to the share of Bach's own
  notes in those bars and the 7/12 of uniformly random pitch classes.

::

    python benchmarks/bench_control.py                   # train (about 1 CPU hour), measure
    python benchmarks/bench_control.py --model outputs/x # measure a model trained before
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger("bench_control")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: benchmarks._common
from benchmarks._common import machine_description  # noqa: E402
from midiformers.evaluation.features import MAJOR_SCALE, MINOR_SCALE  # noqa: E402
from midiformers.generation.controls import control_values  # noqa: E402

RECIPE = ROOT / "configs" / "mmm_infill.yaml"
TRAINING_OVERRIDES = ["--transpose_semitones", "6"]
"""What the benchmark changes in the recipe (train.py's ``--key value`` overrides): every
chorale in all twelve keys (a random shift in -6..6 each time it is read, its pitch-class
controls moved with it), so the model meets each pitch class and control value in many
contexts. Further ``--key value`` arguments of this script go to train.py after these."""
RESULTS = ROOT / "benchmarks" / "results"
GOAL_HIT_RATE = 0.8
NOTE_PREFIXES = ("Pitch_", "PitchDrum_", "Velocity_", "Duration_")
CONTROL_NAMES = ("density", "polyphony", "pitch_classes", "durations", "repetition")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Other --key value arguments override the training recipe, as for train.py.",
    )
    parser.add_argument("--model", type=Path, help="a trained mmm model folder (skip training)")
    parser.add_argument(
        "--keep", type=Path, help="train into this folder and keep it (default: a temporary one)"
    )
    parser.add_argument("--steps", type=int, default=3000, help="training steps")
    parser.add_argument("--requests", type=int, default=12, help="requests per control")
    parser.add_argument("--bars", type=int, default=4, help="bars per generated piece")
    parser.add_argument("--pieces", type=int, default=24, help="held-out pieces for infilling")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--output", type=Path, default=RESULTS / "bench_control")
    args, args.recipe_overrides = parser.parse_known_args(argv)
    if args.model and args.recipe_overrides:
        parser.error(
            f"{' '.join(args.recipe_overrides)}: recipe overrides need training, not --model"
        )
    return args


# --------------------------------------------------------------------------- training


def train(output_dir: Path, steps: int, overrides: Sequence[str] = ()) -> Path:
    """Train the recipe's model with controls and infilling (``overrides``: train.py's
    ``--key value`` arguments); returns its folder."""
    from midiformers.training.run import main as train_main

    run = ["--output_dir", str(output_dir), "--max_steps", str(steps), "--eval_steps", str(steps)]
    run += ["--save_strategy", "no", "--num_samples", "0"]
    metrics = train_main([str(RECIPE), *run, *overrides])
    logger.info("trained %d steps: %s", steps, metrics)
    return output_dir


# --------------------------------------------------------------------------- controls


def held_out(count: int, seed: int) -> list[bytes]:
    """MIDI bytes of held-out chorales (the corpus's test split)."""
    from midiformers.data_scripts import load_midi_dataset

    test = load_midi_dataset("bach_chorales", split="test")
    order = random.Random(seed).sample(range(len(test)), min(count, len(test)))
    return [test[i]["midi"] for i in order]


def measured_units(tokenizer, score, name: str) -> list[Any]:
    """The value of control ``name`` in every non-empty bar (every track, for repetition)."""
    from midiformers.generation.controls import measure_controls

    found = []
    for track in measure_controls(tokenizer, score):
        if name == "repetition":
            found.append(control_values(track["track"]).get(name))
        else:
            found.extend(control_values(tokens).get(name) for tokens in track["bars"].values())
    return found


def same(name: str, asked: Any, got: Any, tokenizer) -> bool:
    """Whether a measured value falls in the asked-for bin."""
    if got is None:
        return False
    if name == "repetition":  # compare miditok's bins, as the tokens do
        from midiformers.generation.controls import control_token_ids

        return control_token_ids(tokenizer, repetition=asked) == control_token_ids(
            tokenizer, repetition=got
        )
    if name == "density":
        top = tokenizer.miditok.config.ac_note_density_bar_max
        return min(asked, top) == min(got, top)
    return tuple(asked) == tuple(got) if isinstance(asked, (list, tuple)) else asked == got


def opening_bars(score, bars: int):
    """The first ``bars`` bars of a score (notes cut at the last bar's end)."""
    from miditok.utils import get_bars_ticks

    ticks = get_bars_ticks(score)
    return score.clip(0, ticks[bars], clip_end=True) if len(ticks) > bars else score


def requests_for(
    tokenizer, pieces: list[bytes], name: str, count: int, rng, bars: int
) -> list[Any]:
    """``count`` values of control ``name`` read off random held-out bars, or, for the
    track-level repetition, off the held-out tracks' first ``bars`` bars (a value a track as
    long as the generated ones can have: a whole chorale repeats itself more than 4 bars do)."""
    scores = [tokenizer.load_score(piece) for piece in pieces]
    if name == "repetition":
        scores = [opening_bars(score, bars) for score in scores]
    pool = [
        value
        for score in scores
        for value in measured_units(tokenizer, score, name)
        if value is not None and value != ()
    ]
    return [pool[i] for i in rng.choice(len(pool), size=min(count, len(pool)), replace=False)]


@dataclass
class ControlRow:
    control: str
    requests: int
    units: int
    hit_rate: float
    chance_rate: float


def run_controls(generator, tokenizer, pieces, args) -> tuple[list[ControlRow], int]:
    """Hit rate of each control against the rate without it (same requests)."""
    rng = np.random.default_rng(args.seed)
    common = {"num_bars": args.bars, "do_sample": True, "top_k": 16}
    free = [
        generator(None, seed=args.seed + 1000 + i, **common)["score"] for i in range(args.requests)
    ]
    rows = []
    dropped = 0
    for name in CONTROL_NAMES:
        requests = requests_for(tokenizer, pieces, name, args.requests, rng, args.bars)
        free_units = [u for score in free for u in measured_units(tokenizer, score, name)]
        hits = units = 0
        chance = []
        for i, asked in enumerate(requests):
            output = generator(None, seed=args.seed + i, **common, **{name: asked})
            dropped += output["num_dropped_tokens"]
            got = measured_units(tokenizer, output["score"], name)
            hits += sum(same(name, asked, value, tokenizer) for value in got)
            units += len(got)
            chance.append(np.mean([same(name, asked, v, tokenizer) for v in free_units] or [0]))
        rows.append(
            ControlRow(name, len(requests), units, hits / max(units, 1), float(np.mean(chance)))
        )
        logger.info("%s", rows[-1])
    return rows, dropped


# --------------------------------------------------------------------------- infilling


def _hole_note_positions(
    tokens: Sequence[str], first: int, bars: tuple[int, int], track: int | None = None
) -> list[int]:
    """Positions of the note tokens of bars ``bars`` (piece numbering) of track ``track``
    (counted from 1; ``None``: every track) in a plain mmm sequence whose first bar is bar
    ``first`` of the piece."""
    positions, bar, number = [], None, 0
    for index, token in enumerate(tokens):
        if token == "Track_Start":
            number += 1
            bar = first - 1 if track is None or number == track else None
        elif token == "Bar_None" and bar is not None:
            bar += 1
        elif bar is not None and bars[0] <= bar <= bars[1] and token.startswith(NOTE_PREFIXES):
            positions.append(index)
    return positions


def _token_losses(model, ids: list[int]) -> np.ndarray:
    """Negative log-likelihood of every token given the ones before (entry 0 is NaN)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="none")
    return np.concatenate([[math.nan], nll.numpy()])


def key_scale(pitches: Sequence[int]) -> set[int]:
    """Pitch classes of the major or natural-minor scale that holds most of ``pitches``."""
    counts = np.bincount(np.asarray(pitches, dtype=int) % 12, minlength=12)
    best = max(
        ((scale + root) % 12 for scale in (MAJOR_SCALE, MINOR_SCALE) for root in range(12)),
        key=lambda pcs: counts[pcs].sum(),
    )
    return set(best.tolist())


def _pitches(tokens: Sequence[str]) -> list[int]:
    return [int(t.partition("_")[2]) for t in tokens if t.startswith("Pitch_")]


@dataclass
class InfillRow:
    holes: str
    pieces: int
    hole_notes: int
    loss_infill: float
    loss_left_to_right: float
    in_key_filled: float
    in_key_original: float
    in_key_random: float
    dropped_tokens: int


def run_infilling(generator, tokenizer, model, pieces, args, one_voice: bool) -> InfillRow:
    """Hole-note loss with both contexts vs left to right; key share of filled notes. Holes:
    bars ``b, b+1`` of one random voice per piece (``one_voice``) or of every voice."""
    from midiformers.generation.infilling import (
        InfillVocabulary,
        build_infill_prompt,
        infill_sequence,
    )

    vocab = InfillVocabulary(tokenizer)
    window_size = model.config.max_position_embeddings
    rng = random.Random(args.seed)
    loss_both = loss_left = 0.0
    note_tokens = used = dropped = 0
    filled_in: list[bool] = []
    original_in: list[bool] = []
    for midi in pieces:
        ids = tokenizer.encode_midi(midi)
        num_bars = bar_count(tokenizer, ids)
        if num_bars < 4:
            continue
        first = rng.randint(2, num_bars - 2)
        bars = (first, first + 1)
        track = rng.randint(1, tokenizer.convert_ids_to_tokens(ids).count("Track_Start"))
        track = track if one_voice else None
        prompt = build_infill_prompt(
            tokenizer, ids, bars=bars, tracks=track, max_length=window_size // 2
        )
        both = [*prompt.input_ids, *_with_ends(vocab, prompt.original_fills), vocab.eos]
        plain, _ = infill_sequence(vocab, prompt.piece, [], prompt.window)
        if max(len(both), len(plain)) > window_size:
            continue
        both_tokens = tokenizer.convert_ids_to_tokens(both)
        start = len(prompt.input_ids)
        holes = [i for i in range(start, len(both)) if both_tokens[i].startswith(NOTE_PREFIXES)]
        plain_tokens = tokenizer.convert_ids_to_tokens(plain)
        lefts = _hole_note_positions(plain_tokens, prompt.window[0], bars, track)
        if not holes or len(holes) != len(lefts):
            continue
        loss_both += float(_token_losses(model, both)[holes].sum())
        loss_left += float(_token_losses(model, plain)[lefts].sum())
        note_tokens += len(holes)
        in_holes = set(lefts)
        kept = [t for i, t in enumerate(plain_tokens) if i not in in_holes]
        scale = key_scale(_pitches(kept))
        output = generator(
            midi,
            infill_bars=bars,
            infill_tracks=track,
            seed=args.seed + used,
            do_sample=True,
            top_k=16,
        )
        dropped += output["num_dropped_tokens"]
        written = tokenizer.convert_ids_to_tokens(output["infill_token_ids"][start:])
        filled_in.extend(p % 12 in scale for p in _pitches(written))
        original_in.extend(p % 12 in scale for p in _pitches([plain_tokens[i] for i in lefts]))
        used += 1
    return InfillRow(
        holes="one voice" if one_voice else "every voice",
        pieces=used,
        hole_notes=len(original_in),
        loss_infill=loss_both / max(1, note_tokens),
        loss_left_to_right=loss_left / max(1, note_tokens),
        in_key_filled=float(np.mean(filled_in)) if filled_in else math.nan,
        in_key_original=float(np.mean(original_in)) if original_in else math.nan,
        in_key_random=7 / 12,
        dropped_tokens=dropped,
    )


def _with_ends(vocab, fills: list[list[int]]) -> list[int]:
    return [t for fill in fills for t in (vocab.fill_start, *fill, vocab.fill_end)]


def bar_count(tokenizer, ids: Sequence[int]) -> int:
    from midiformers.generation.controls import bars_per_track

    counts = bars_per_track(tokenizer, ids)
    return min(counts) if counts else 0


# --------------------------------------------------------------------------- report


def report(control_rows: list[ControlRow], infills: list[InfillRow], args, dropped: int) -> str:
    dropped += sum(row.dropped_tokens for row in infills)
    lines = [
        "## Control benchmark",
        "",
        f"- {machine_description()}",
        f"- model: {args.model_label}; {args.bars}-bar pieces sampled with top-k 16",
        f"- dropped tokens in every generated piece: {dropped}",
        "",
        "| control | requests | bars (tracks) measured | in the asked-for bin | without the "
        "control (chance) | goal >= 80% |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in control_rows:
        met = "met" if row.hit_rate >= GOAL_HIT_RATE else "NOT met"
        lines.append(
            f"| {row.control} | {row.requests} | {row.units} | {row.hit_rate:.0%} | "
            f"{row.chance_rate:.0%} | {met} |"
        )
    lines += [
        "",
        "Infilling, held-out chorales, two bars each (one voice, or every voice):",
        "",
        "| holes | pieces | notes in the holes | loss per note token (pitch, velocity, duration): "
        "infill (both sides) | left to right | goal: lower | filled notes in key | Bach's notes "
        "in key | random pitch classes |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row in infills:
        lower = row.loss_infill < row.loss_left_to_right
        lines.append(
            f"| {row.holes} | {row.pieces} | {row.hole_notes} | {row.loss_infill:.3f} | "
            f"{row.loss_left_to_right:.3f} | {'met' if lower else 'NOT met'} | "
            f"{row.in_key_filled:.0%} | {row.in_key_original:.0%} | {row.in_key_random:.0%} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    import midiformers  # noqa: F401  (registers the Auto classes and the pipeline)

    with tempfile.TemporaryDirectory(prefix="bench-control-") as scratch:
        overrides = [*TRAINING_OVERRIDES, *args.recipe_overrides]
        model_dir = args.model or train(args.keep or Path(scratch) / "model", args.steps, overrides)
        args.model_label = (
            str(args.model)
            if args.model
            else f"mmm_infill.yaml {' '.join(overrides)}, {args.steps} steps"
        )
        torch.set_num_threads(args.threads)  # the recipe sets its own while training
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        generator = pipeline("midi-generation", model=model, tokenizer=tokenizer)
        pieces = held_out(max(args.pieces, args.requests), args.seed)
        control_rows, dropped = run_controls(generator, tokenizer, pieces, args)
        infills = [
            run_infilling(generator, tokenizer, model, pieces[: args.pieces], args, one_voice)
            for one_voice in (True, False)
        ]
    table = report(control_rows, infills, args, dropped)
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".md").write_text(table + "\n")
    payload = {
        "controls": [asdict(row) for row in control_rows],
        "infilling": [asdict(row) for row in infills],
        "machine": machine_description(),
        "model": args.model_label,
    }
    args.output.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
