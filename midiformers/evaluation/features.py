"""Musical features of one piece, computed on a ``symusic.Score`` with numpy.

These are the per-piece quantities behind the metric modules in ``evaluation/metrics/``
(pitch-class entropy, pitch range, polyphony, note density, n-gram repetition, scale and
groove consistency, empty-beat rate) and the features whose distributions
:func:`overlapping_area` compares. The definitions follow MusPy (Dong et al. 2020) and
Yang & Lerch (2020), computed on note events instead of a piano roll so they do not depend
on a time-step resolution (except where a grid is part of the definition, as for grooves).

A feature that is undefined for a piece (entropy of a piece without notes, grooves of a
one-bar piece, ...) is ``nan``; the set statistics skip such values and count them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from midiformers.tokenization import load_score

DEFAULT_GRID = 12
"""Grid steps per quarter note for grooves and n-gram events (16ths and 8th-note triplets)."""

MAJOR_SCALE = np.array([0, 2, 4, 5, 7, 9, 11])
MINOR_SCALE = np.array([0, 2, 3, 5, 7, 8, 10])  # natural minor

__all__ = [
    "DEFAULT_GRID",
    "FEATURES",
    "NoteArrays",
    "empty_beat_rate",
    "groove_consistency",
    "load_pieces",
    "ngram_repetition",
    "note_arrays",
    "note_density",
    "distance_overlapping_area",
    "note_events",
    "overlapping_area",
    "pitch_class_entropy",
    "pitch_range",
    "polyphony",
    "scale_consistency",
    "set_statistics",
]


@dataclass(frozen=True)
class NoteArrays:
    """The notes of a piece as int64 arrays sorted by (onset, pitch), and its timing."""

    time: np.ndarray
    duration: np.ndarray
    pitch: np.ndarray
    ticks_per_quarter: int
    seconds: float
    bar_quarters: float

    @property
    def end(self) -> int:
        """Tick at which the last note ends (0 without notes)."""
        return int((self.time + self.duration).max()) if len(self.time) else 0

    def __len__(self) -> int:
        return len(self.time)


def _concatenate(tracks: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = [track.notes.numpy() for track in tracks if len(track.notes)]
    if not arrays:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    time, duration, pitch = (
        np.concatenate([a[key].astype(np.int64) for a in arrays])
        for key in ("time", "duration", "pitch")
    )
    order = np.lexsort((pitch, time))
    return time[order], duration[order], pitch[order]


def _last_note_end_seconds(score: Any, keep: list[bool]) -> float:
    """When the last kept note ends, in seconds (through the score's tempo map)."""
    ends = [
        float((notes["time"] + notes["duration"]).max())
        for track, kept in zip(score.to("second").tracks, keep)
        if kept and len(track.notes)
        for notes in (track.notes.numpy(),)
    ]
    return max(ends, default=0.0)


def note_arrays(score: Any, pitched_only: bool = True) -> NoteArrays:
    """Flatten a tick ``Score`` into sorted note arrays.

    Args:
        score: a ``symusic.Score`` in ticks.
        pitched_only: leave out drum tracks, whose "pitches" name instruments.
    """
    keep = [not (pitched_only and track.is_drum) for track in score.tracks]
    time, duration, pitch = _concatenate([t for t, k in zip(score.tracks, keep) if k])
    seconds = _last_note_end_seconds(score, keep) if len(time) else 0.0
    bar_quarters = 4.0
    if len(score.time_signatures):
        signature = score.time_signatures[0]
        bar_quarters = signature.numerator * 4.0 / signature.denominator
    return NoteArrays(time, duration, pitch, int(score.ticks_per_quarter), seconds, bar_quarters)


def pitch_class_entropy(score: Any) -> float:
    """Shannon entropy (bits) of the pitch-class histogram; log2(12) when all are equally used."""
    notes = note_arrays(score)
    if not len(notes):
        return math.nan
    counts = np.bincount(notes.pitch % 12, minlength=12).astype(float)
    probabilities = counts[counts > 0] / counts.sum()
    return float(-(probabilities * np.log2(probabilities)).sum())


def pitch_range(score: Any) -> float:
    """Highest minus lowest pitch, in semitones."""
    notes = note_arrays(score)
    return float(notes.pitch.max() - notes.pitch.min()) if len(notes) else math.nan


def _sounding_profile(notes: NoteArrays) -> tuple[np.ndarray, np.ndarray]:
    """Number of sounding notes on each interval between consecutive note boundaries."""
    keep = notes.duration > 0
    starts, ends = notes.time[keep], notes.time[keep] + notes.duration[keep]
    boundaries = np.unique(np.concatenate([starts, ends]))
    changes = np.zeros(len(boundaries), dtype=np.int64)
    np.add.at(changes, np.searchsorted(boundaries, starts), 1)
    np.add.at(changes, np.searchsorted(boundaries, ends), -1)
    return np.cumsum(changes)[:-1], np.diff(boundaries)


def polyphony(score: Any) -> tuple[float, float]:
    """(polyphony, polyphony rate) over the time at least one pitched note sounds.

    Polyphony is the average number of notes sounding together, polyphony rate the fraction
    of that time with two or more (MusPy's definitions without the piano-roll grid).
    """
    notes = note_arrays(score)
    if not len(notes) or not (notes.duration > 0).any():
        return math.nan, math.nan
    counts, lengths = _sounding_profile(notes)
    sounding = counts > 0
    covered = lengths[sounding].sum()
    mean = float((counts * lengths).sum() / covered)
    rate = float(lengths[counts > 1].sum() / covered)
    return mean, rate


def note_density(score: Any) -> tuple[float, float]:
    """(notes per second, notes per beat) over the piece, drums included; a beat is a quarter."""
    notes = note_arrays(score, pitched_only=False)
    if not len(notes) or notes.end == 0:
        return math.nan, math.nan
    beats = notes.end / notes.ticks_per_quarter
    return len(notes) / notes.seconds, len(notes) / beats


def _grid(ticks: np.ndarray, ticks_per_quarter: int, grid: int) -> np.ndarray:
    return np.rint(ticks * grid / ticks_per_quarter).astype(np.int64)


def note_events(score: Any, grid: int = DEFAULT_GRID) -> list[tuple[int, int, int]]:
    """The piece as a sequence of note events ``(pitch, duration, time to the next onset)``.

    Times are on a grid of ``grid`` steps per quarter note, so the events do not depend on
    the file's resolution; the last note's "next onset" is its own end, so a legato phrase
    repeated exactly gives repeated events. Drums are included (as their key numbers).
    """
    notes = note_arrays(score, pitched_only=False)
    if not len(notes):
        return []
    onsets = _grid(notes.time, notes.ticks_per_quarter, grid)
    durations = _grid(notes.duration, notes.ticks_per_quarter, grid)
    following = np.append(onsets[1:], onsets[-1] + durations[-1])
    return list(
        zip(notes.pitch.tolist(), durations.tolist(), (following - onsets).tolist(), strict=True)
    )


def ngram_repetition(
    score: Any, n: int = 4, tokenizer: Any = None, grid: int = DEFAULT_GRID
) -> float:
    """Fraction of repeated n-grams: ``1 - distinct n-grams / n-grams`` (the LSTM study's rate).

    Computed on :func:`note_events`, or on a tokenizer's token ids when ``tokenizer`` (a
    :class:`~midiformers.MidiTokenizer`) is given. ``nan`` for fewer than ``n`` events.
    """
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    sequence = tokenizer.encode_midi(score) if tokenizer is not None else note_events(score, grid)
    total = len(sequence) - n + 1
    if total <= 0:
        return math.nan
    distinct = len({tuple(sequence[i : i + n]) for i in range(total)})
    return 1.0 - distinct / total


def scale_consistency(score: Any) -> float:
    """Largest fraction of pitched notes inside one major or natural-minor scale (24 tried)."""
    notes = note_arrays(score)
    if not len(notes):
        return math.nan
    counts = np.bincount(notes.pitch % 12, minlength=12)
    best = 0
    for scale in (MAJOR_SCALE, MINOR_SCALE):
        for root in range(12):
            best = max(best, int(counts[(scale + root) % 12].sum()))
    return best / len(notes)


def groove_consistency(score: Any, grid: int = DEFAULT_GRID) -> float:
    """1 - mean Hamming distance between the onset patterns of adjacent bars / bar length.

    Each bar (the first time signature's length, 4/4 by default) becomes a binary vector of
    ``grid`` steps per quarter note marking onsets (drums included). 1.0 when every bar has
    the same rhythm (Wu & Yang 2020, as in MusPy). ``nan`` for pieces shorter than two bars.
    """
    notes = note_arrays(score, pitched_only=False)
    bar_steps = int(round(notes.bar_quarters * grid))
    if not len(notes) or bar_steps <= 0:
        return math.nan
    onsets = np.unique(_grid(notes.time, notes.ticks_per_quarter, grid))
    num_bars = int(onsets[-1] // bar_steps) + 1
    if num_bars < 2:
        return math.nan
    patterns = np.zeros((num_bars, bar_steps), dtype=bool)
    patterns[onsets // bar_steps, onsets % bar_steps] = True
    distances = (patterns[1:] != patterns[:-1]).sum(axis=1)
    return float(1.0 - distances.mean() / bar_steps)


def empty_beat_rate(score: Any) -> float:
    """Fraction of beats (quarter notes, up to the last note's end) where no note sounds."""
    notes = note_arrays(score, pitched_only=False)
    if not len(notes) or notes.end == 0:
        return math.nan
    quarter = notes.ticks_per_quarter
    num_beats = math.ceil(notes.end / quarter)
    difference = np.zeros(num_beats + 1, dtype=np.int64)
    sounding = notes.duration > 0
    first = notes.time[sounding] // quarter
    last = -(-(notes.time[sounding] + notes.duration[sounding]) // quarter)  # ceil division
    np.add.at(difference, first, 1)
    np.add.at(difference, last, -1)
    occupied = np.cumsum(difference)[:num_beats] > 0
    return float(1.0 - occupied.mean())


def _first(pair: Callable[[Any], tuple[float, float]]) -> Callable[[Any], float]:
    return lambda score: pair(score)[0]


def _second(pair: Callable[[Any], tuple[float, float]]) -> Callable[[Any], float]:
    return lambda score: pair(score)[1]


FEATURES: dict[str, Callable[[Any], float]] = {
    "pitch_class_entropy": pitch_class_entropy,
    "pitch_range": pitch_range,
    "polyphony": _first(polyphony),
    "polyphony_rate": _second(polyphony),
    "notes_per_second": _first(note_density),
    "notes_per_beat": _second(note_density),
    "ngram_repetition": ngram_repetition,
    "scale_consistency": scale_consistency,
    "groove_consistency": groove_consistency,
    "empty_beat_rate": empty_beat_rate,
}
"""Scalar per-piece features, by name; :func:`overlapping_area` compares their distributions."""


# ------------------------------------------------------------------------------ sets


def load_pieces(sources: Sequence[Any], what: str = "predictions") -> list[Any]:
    """Parse MIDI paths / bytes / Scores into tick Scores, naming a bad one in the error.

    Raises:
        MidiFileError: an unreadable source (the message names the file, or ``what[i]``).
        TypeError: ``sources`` is a single item rather than a list of them.
    """
    if isinstance(sources, (str, bytes, bytearray)) or not isinstance(sources, Sequence):
        raise TypeError(f"{what} must be a list of MIDI sources, got {type(sources).__name__}")
    scores = []
    for index, source in enumerate(
        tqdm(sources, desc=f"reading {what}", leave=False, disable=len(sources) < 64)
    ):
        name = str(source) if isinstance(source, str) else f"{what}[{index}]"
        scores.append(load_score(source, name=name, copy=False))
    return scores


def set_statistics(
    name: str, values: Sequence[float], return_per_piece: bool = False
) -> dict[str, Any]:
    """Mean and standard deviation of a feature over a set, skipping undefined (nan) values."""
    array = np.asarray(values, dtype=float)
    defined = array[~np.isnan(array)]
    result: dict[str, Any] = {
        name: float(defined.mean()) if len(defined) else math.nan,
        f"{name}_std": float(defined.std()) if len(defined) else math.nan,
        "num_pieces": len(array),
        "num_undefined": int(len(array) - len(defined)),
    }
    if return_per_piece:
        result[f"{name}_per_piece"] = array.tolist()
    return result


def _kde(values: np.ndarray, bandwidth: float, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density of ``values`` on ``grid``, normalised to sum to 1 there."""
    standardized = (grid[:, None] - values[None, :]) / bandwidth
    density = np.exp(-0.5 * standardized**2).sum(axis=1)
    return density / np.trapezoid(density, grid)


def _scott_bandwidth(values: np.ndarray, floor: float) -> float:
    spread = values.std(ddof=1) if len(values) > 1 else 0.0
    return max(float(spread) * len(values) ** (-1 / 5), floor)


def overlapping_area(a: Sequence[float], b: Sequence[float], num_points: int = 4096) -> float:
    """Overlapping area of the Gaussian-KDE densities of two samples of a scalar (0 to 1).

    Bandwidths follow Scott's rule, floored at 1% of the pooled range so that constant samples
    still have a density; identical samples give 1.0. ``nan`` values are ignored; ``nan``
    when either sample has no defined value.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if not len(a) or not len(b):
        return math.nan
    pooled = np.concatenate([a, b])
    low, high = float(pooled.min()), float(pooled.max())
    if high == low:
        return 1.0
    floor = 0.01 * (high - low)
    bandwidths = _scott_bandwidth(a, floor), _scott_bandwidth(b, floor)
    margin = 5 * max(bandwidths)
    grid = np.linspace(low - margin, high + margin, num_points)
    overlap = np.minimum(_kde(a, bandwidths[0], grid), _kde(b, bandwidths[1], grid))
    return float(min(1.0, np.trapezoid(overlap, grid)))


def distance_overlapping_area(
    generated: Sequence[float], reference: Sequence[float], num_points: int = 4096
) -> float:
    """Yang & Lerch's overlap: intra-set distances of ``reference`` vs inter-set distances.

    The distances are absolute differences between pieces' values: all pairs within the
    reference set, and all (generated, reference) pairs. A generated set drawn from the
    reference distribution gives a high overlap (not exactly 1 for identical sets: the
    inter-set distances then include each piece's zero distance to itself).
    """
    generated, reference = np.asarray(generated, dtype=float), np.asarray(reference, dtype=float)
    generated, reference = generated[~np.isnan(generated)], reference[~np.isnan(reference)]
    if len(reference) < 2 or not len(generated):
        return math.nan
    upper = np.triu_indices(len(reference), k=1)
    intra = np.abs(reference[:, None] - reference[None, :])[upper]
    inter = np.abs(generated[:, None] - reference[None, :]).ravel()
    return overlapping_area(intra, inter, num_points=num_points)
