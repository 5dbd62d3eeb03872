"""Training for infilling: a data collator that masks random bars or tracks of every example.

Examples are pieces of the ``mmm`` preset's tokens (with ``infilling: true`` a recipe cuts
them into bar windows of every track, ``mode="bars"`` of
:func:`~midiformers.data_scripts.tokenize_dataset`, so that each example starts with its
tracks' headers and holds whole bars). :class:`DataCollatorForInfilling` rewrites each one into
the infilling format of :mod:`midiformers.generation.infilling` (placeholders in the tracks,
then the fills) with random holes, as MMM trains (Ens & Pasquier, 2020):

* with probability ``infill_probability`` an example gets holes, otherwise it stays a plain
  piece (the model keeps writing music from scratch); with ``loss_on="fills"`` every one does;
* holes are, with probability ``track_probability``, every bar of one random track (a whole-track
  infill), otherwise a span of 1 to ``max_bars`` consecutive bars in a random non-empty subset
  of the tracks;
* labels are the input ids (the loss is on every token, as MMM trains) or, with
  ``loss_on="fills"``, only on the fills and the final ``EOS``; padding is never scored;
* a rewritten example longer than ``max_length`` (each hole adds about three tokens) loses
  bars at its edges, away from the holes, then holes with their bars, until it fits: a fill
  is never cut. Only a single bar longer than ``max_length`` is truncated, without holes.

``Trainer`` uses the same collator for evaluation: evaluation examples get holes from the same
seeded stream, so an evaluation loss moves a little with the holes drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from ..generation.infilling import Hole, InfillVocabulary, MmmPiece, infill_sequence, parse_piece

__all__ = ["IGNORE_INDEX", "DataCollatorForInfilling"]

IGNORE_INDEX = -100
"""Label of the tokens the loss skips (transformers' convention)."""


@dataclass
class DataCollatorForInfilling:
    """Batches of infilling examples with random holes (see the module docstring).

    Args:
        tokenizer: a :class:`~midiformers.MidiTokenizer` of the ``mmm`` preset.
        max_length: the longest example (the training block size).
        infill_probability: share of examples that get holes.
        track_probability: share of those whose holes are one whole track.
        max_bars: the longest span of masked bars otherwise.
        loss_on: ``"all"`` (every token) or ``"fills"`` (the fills and ``EOS`` only; every
            example then gets holes, whatever ``infill_probability``).
        seed: seed of the holes (``None``: fresh randomness); each DataLoader worker draws
            its own stream from it.
        pad_to_multiple_of: pad every batch to a multiple of this length.

    Raises:
        ValueError: a tokenizer without infill tokens, or an option out of range.
    """

    tokenizer: Any
    max_length: int
    infill_probability: float = 0.75
    track_probability: float = 0.25
    max_bars: int = 4
    loss_on: Literal["all", "fills"] = "all"
    seed: int | None = None
    pad_to_multiple_of: int | None = None
    vocab: InfillVocabulary = field(init=False, repr=False)

    def __post_init__(self):
        self.vocab = InfillVocabulary(self.tokenizer)
        for name in ("infill_probability", "track_probability"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}.")
        if self.max_bars < 1:
            raise ValueError(f"max_bars must be >= 1, got {self.max_bars!r}.")
        if self.max_length < 4:
            raise ValueError(f"max_length must be >= 4, got {self.max_length!r}.")
        if self.loss_on not in ("all", "fills"):
            raise ValueError(f"loss_on must be 'all' or 'fills', got {self.loss_on!r}.")
        self._generators: dict[int, np.random.Generator] = {}

    # ------------------------------------------------------------------ randomness

    def _rng(self) -> np.random.Generator:
        """This process' (or DataLoader worker's) generator."""
        info = torch.utils.data.get_worker_info()
        worker = -1 if info is None else info.id
        if worker not in self._generators:
            entropy = None if self.seed is None else [self.seed, worker + 1]
            self._generators[worker] = np.random.default_rng(entropy)
        return self._generators[worker]

    def draw_holes(self, piece: MmmPiece, rng: np.random.Generator) -> list[Hole]:
        """Random holes for one piece (none with probability ``1 - infill_probability``)."""
        count = piece.num_bars
        tracks = [i for i, track in enumerate(piece.tracks) if track.bars]
        plain = self.loss_on == "all" and rng.random() >= self.infill_probability
        if not tracks or plain:
            return []
        if rng.random() < self.track_probability:
            track = int(rng.choice(tracks))
            return [Hole(track, bar) for bar in range(1, count + 1)]
        span = int(rng.integers(1, min(self.max_bars, count) + 1))
        first = int(rng.integers(1, count - span + 2))
        chosen = [t for t in tracks if rng.random() < 0.5] or [int(rng.choice(tracks))]
        return [Hole(t, bar) for t in chosen for bar in range(first, first + span)]

    # ------------------------------------------------------------------ examples

    def example(self, ids: Sequence[int], holes: Sequence[Hole] | None = None) -> dict:
        """One example: ``input_ids`` and ``labels`` (lists), with ``holes`` (drawn when
        ``None``), fitted to ``max_length``."""
        ids = [int(i) for i in ids]
        piece = parse_piece(self.vocab, ids, strict=False)
        if not piece.tracks:  # not a whole track in it: a plain (truncated) sequence
            return self._plain(ids)
        if holes is None:
            holes = self.draw_holes(piece, self._rng())
        fitted = self._fit(piece, sorted(holes))
        if fitted is None:
            return self._plain(ids)
        sequence, fill_start = fitted
        labels = list(sequence)
        if self.loss_on == "fills":
            labels[:fill_start] = [IGNORE_INDEX] * fill_start
        return {"input_ids": sequence, "labels": labels}

    def _plain(self, ids: list[int]) -> dict:
        ids = ids[: self.max_length]
        labels = list(ids) if self.loss_on == "all" else [IGNORE_INDEX] * len(ids)
        return {"input_ids": ids, "labels": labels}

    def _fit(self, piece: MmmPiece, holes: list[Hole]) -> tuple[list[int], int] | None:
        """The infilling sequence of the widest bar window that fits ``max_length``: bars away
        from the holes go first, then the last holes with their bars."""
        first, last = 1, piece.num_bars
        while True:
            inside = [h for h in holes if first <= h.bar <= last]
            sequence, fill_start = infill_sequence(self.vocab, piece, inside, (first, last))
            if len(sequence) <= self.max_length:
                if not inside:  # no fills: the EOS is where they would start
                    fill_start = len(sequence) - 1
                return sequence, fill_start
            if inside and last > max(h.bar for h in inside):
                last -= 1
            elif inside and first < min(h.bar for h in inside):
                first += 1
            elif last > first:
                last -= 1
            else:
                return None

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [self.example(example["input_ids"]) for example in examples]
        length = max(len(row["input_ids"]) for row in rows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        pad = self.vocab.pad
        batch = {"input_ids": [], "attention_mask": [], "labels": []}
        for row in rows:
            missing = length - len(row["input_ids"])
            batch["input_ids"].append(row["input_ids"] + [pad] * missing)
            batch["attention_mask"].append([1] * len(row["input_ids"]) + [0] * missing)
            batch["labels"].append(row["labels"] + [IGNORE_INDEX] * missing)
        return {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}
