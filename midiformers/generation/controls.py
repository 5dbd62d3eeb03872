"""Attribute controls at generation time: plain arguments -> miditok's control tokens.

A tokenizer with miditok attribute controls (the ``mmm`` preset) learns, in training, control
tokens that describe each track (after its ``Program``) and each bar (before its first note).
At generation time the pipeline takes the same descriptions as plain arguments::

    generator(None, density="high", polyphony=(1, 3), pitch_classes=["C", "E", "G"],
              durations=["quarter", "eighth"], repetition=0.5)

and the grammar forces the matching tokens into every track and every bar that gets notes
(:meth:`~.grammar.MidiGrammar.with_controls`), so the model writes under them. What each
argument means, its valid values and its default are in :data:`CONTROLS` (what the demo builds
its sliders from):

* ``density``: notes per bar in each track: ``"low"`` (3), ``"medium"`` (6), ``"high"`` (12)
  or a number 0-18 (18 stands for 18 or more): ``ACBarNoteDensity`` in every bar (the track's
  ``ACTrackNoteDensityMin`` / ``Max`` only for a tokenizer without the bar-level control: a
  track whose bars all hold the same number of notes, Min = Max, is rare in real music, so a
  model has hardly seen those two tokens equal, while the bar tokens say the same thing);
* ``polyphony``: notes starting together, an int or ``(min, max)`` in 1-6:
  ``ACBarOnsetPolyphonyMin`` / ``Max`` and ``ACTrackOnsetPolyphonyMin`` / ``Max``;
* ``pitch_classes``: the pitch classes every bar uses (0-11 or names, ``"C"``, ``"F#"``,
  ``"Bb"``): ``ACBarPitchClass``;
* ``durations``: the plain note values present (``"whole"``, ``"half"``, ``"quarter"``,
  ``"eighth"``, ``"sixteenth"``; the others are absent): ``ACBarNoteDuration*`` and
  ``ACTrackNoteDuration*``;
* ``repetition``: how much each bar repeats the next ones, 0-1 (the nearest of miditok's
  bins): ``ACTrackRepetition``.

:func:`control_token_ids` turns arguments into the token ids (a one-line ``ValueError`` names
a bad value and its valid range, or a control the tokenizer has no tokens for);
:func:`read_controls` reads control tokens back from a sequence and :func:`measure_controls`
computes them from a score with miditok, e.g. to check a generated piece against the request.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from miditok.attribute_controls import BarAttributeControl

__all__ = [
    "CONTROLS",
    "ControlSpec",
    "bars_per_track",
    "check_control",
    "control_token_ids",
    "control_values",
    "measure_controls",
    "read_controls",
]

DENSITY_WORDS = {"low": 3, "medium": 6, "high": 12}
"""Notes per bar (in each track) of the density words."""
DURATION_NAMES = ("whole", "half", "quarter", "eighth", "sixteenth")
_DURATION_TOKENS = ("Whole", "Half", "Quarter", "Eight", "Sixteenth")  # miditok's spelling
_PITCH_CLASSES = {
    "C": 0, "B#": 0, "C#": 1, "DB": 1, "D": 2, "D#": 3, "EB": 3, "E": 4, "FB": 4, "F": 5,
    "E#": 5, "F#": 6, "GB": 6, "G": 7, "G#": 8, "AB": 8, "A": 9, "A#": 10, "BB": 10, "B": 11,
    "CB": 11,
}  # fmt: skip


@dataclass(frozen=True)
class ControlSpec:
    """One generation-time control, as a UI shows it.

    Attributes:
        name: the pipeline argument.
        kind: ``"level"`` (a word or a number), ``"range"`` (an int or ``(min, max)``),
            ``"set"`` (a list of choices) or ``"number"`` (a float in ``[low, high]``).
        values: the words / choices, or the ``(low, high)`` bounds of numbers.
        default: what a UI starts at (``None``: the control is off).
        help: one line for the user.
        tokens: the miditok attribute-control classes that carry it.
        fallback_tokens: classes that carry it only for a tokenizer with none of ``tokens``.
    """

    name: str
    kind: str
    values: tuple
    default: Any
    help: str
    tokens: tuple[str, ...]
    fallback_tokens: tuple[str, ...] = ()

    def carriers(self, kinds: Iterable[str]) -> list[str]:
        """The classes among ``kinds`` (a tokenizer's) that write this control."""
        kinds = set(kinds)
        return [k for k in self.tokens if k in kinds] or [
            k for k in self.fallback_tokens if k in kinds
        ]


CONTROLS: dict[str, ControlSpec] = {
    spec.name: spec
    for spec in (
        ControlSpec(
            "density",
            "level",
            (*DENSITY_WORDS, 0, 18),
            None,
            "Notes per bar in each track: low (3), medium (6), high (12), or a number 0-18.",
            ("BarNoteDensity",),
            ("TrackNoteDensity",),  # Min = Max: rare in training data (module docstring)
        ),
        ControlSpec(
            "polyphony",
            "range",
            (1, 6),
            None,
            "Notes that start together in a track: a number, or (min, max), in 1-6.",
            ("BarOnsetPolyphony", "TrackOnsetPolyphony"),
        ),
        ControlSpec(
            "pitch_classes",
            "set",
            ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"),
            None,
            "The pitch classes every bar uses (e.g. C E G), names or 0-11.",
            ("BarPitchClass",),
        ),
        ControlSpec(
            "durations",
            "set",
            DURATION_NAMES,
            None,
            "The plain note values present in each bar (the others are absent).",
            ("BarNoteDuration", "TrackNoteDuration"),
        ),
        ControlSpec(
            "repetition",
            "number",
            (0.0, 1.0),
            None,
            "How much each bar repeats the next ones: 0 (never) to 1 (always).",
            ("TrackRepetition",),
        ),
    )
}
"""The generation-time controls, in the order they are documented (a demo builds its widgets
from this table). Ranges are those of the ``mmm`` preset; a tokenizer with other miditok
ranges is checked against its own by :func:`control_token_ids`."""


# ---------------------------------------------------------------------- checking


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _density(value: Any, top: int) -> int:
    if isinstance(value, str) and value.strip().lower() in DENSITY_WORDS:
        return DENSITY_WORDS[value.strip().lower()]
    if _is_int(value) and 0 <= value <= top:
        return int(value)
    raise ValueError(
        f"density must be 'low', 'medium', 'high' or a number of notes per bar 0-{top}, "
        f"got {value!r}."
    )


def _polyphony(value: Any, low: int, high: int) -> tuple[int, int]:
    pair = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    in_range = len(pair) == 2 and all(_is_int(v) and low <= v <= high for v in pair)
    if in_range and pair[0] <= pair[1]:
        return int(pair[0]), int(pair[1])
    raise ValueError(
        f"polyphony must be an integer {low}-{high} or a (min, max) pair in {low}-{high}, "
        f"got {value!r}."
    )


def _pitch_classes(value: Any) -> tuple[int, ...]:
    items = [value] if isinstance(value, (str, numbers.Integral)) else value
    classes = set()
    try:
        for item in items:
            if _is_int(item) and 0 <= item <= 11:
                classes.add(int(item))
            elif isinstance(item, str) and item.strip().upper() in _PITCH_CLASSES:
                classes.add(_PITCH_CLASSES[item.strip().upper()])
            else:
                raise TypeError
    except TypeError:
        classes = set()
    if not classes:
        raise ValueError(
            "pitch_classes must be a list of pitch classes 0-11 or names like 'C', 'F#', "
            f"'Bb', got {value!r}."
        )
    return tuple(sorted(classes))


def _durations(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    names = set()
    try:
        for item in items:
            name = item.strip().lower() if isinstance(item, str) else None
            if name not in DURATION_NAMES:
                raise TypeError
            names.add(name)
    except TypeError:
        names = set()
    if not names:
        raise ValueError(
            f"durations must be a list of note values among {', '.join(DURATION_NAMES)}, "
            f"got {value!r}."
        )
    return tuple(name for name in DURATION_NAMES if name in names)


def _repetition(value: Any) -> float:
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if number and math.isfinite(value) and 0 <= value <= 1:
        return float(value)
    raise ValueError(f"repetition must be a number in [0, 1], got {value!r}.")


def check_control(name: str, value: Any, tokenizer: Any = None) -> Any:
    """The normalized value of one control (``None`` stays ``None``).

    Ranges come from the tokenizer's miditok configuration when given, else from the ``mmm``
    preset's (those of :data:`CONTROLS`).

    Raises:
        ValueError: an unknown control, or a value outside its range (one line, naming it).
    """
    if name not in CONTROLS:
        raise ValueError(f"Unknown control {name!r}; the controls are {', '.join(CONTROLS)}.")
    if value is None:
        return None
    config = getattr(getattr(tokenizer, "miditok", None), "config", None)
    if name == "density":
        return _density(value, getattr(config, "ac_note_density_bar_max", 18))
    if name == "polyphony":
        low = getattr(config, "ac_polyphony_min", 1)
        return _polyphony(value, low, getattr(config, "ac_polyphony_max", 6))
    if name == "pitch_classes":
        return _pitch_classes(value)
    if name == "durations":
        return _durations(value)
    return _repetition(value)


# ---------------------------------------------------------------------- tokens


def _control_tokens(control: Any, name: str, value: Any) -> list[str]:
    """The tokens of one miditok attribute control for a checked control value."""
    kind = type(control).__name__
    if name == "density":
        top = control.density_max
        number = f"{top}+" if value >= top else str(value)
        if kind == "BarNoteDensity":
            return [f"ACBarNoteDensity_{number}"]
        return [f"ACTrackNoteDensityMin_{number}", f"ACTrackNoteDensityMax_{number}"]
    if name == "polyphony":
        level = "Bar" if kind == "BarOnsetPolyphony" else "Track"
        low, high = value
        return [f"AC{level}OnsetPolyphonyMin_{low}", f"AC{level}OnsetPolyphonyMax_{high}"]
    if name == "pitch_classes":
        return [f"ACBarPitchClass_{pitch}" for pitch in value]
    if name == "durations":
        level = "Bar" if kind == "BarNoteDuration" else "Track"
        return [
            f"AC{level}NoteDuration{token}_{int(duration in value)}"
            for duration, token in zip(DURATION_NAMES, _DURATION_TOKENS)
        ]
    bins = np.asarray(control._bins)
    return [f"ACTrackRepetition_{bins[np.abs(bins - value).argmin()]:.2f}"]


def control_token_ids(tokenizer: Any, **controls: Any) -> tuple[list[int], list[int]]:
    """Token ids of the controls: ``(track-level ids, bar-level ids)``, in miditok's order.

    Every control given (not ``None``) is written with each of the tokenizer's attribute
    controls that carry it (bar and track level where both exist).

    Raises:
        ValueError: an unknown control, a value outside its range, or a control this
            tokenizer has no tokens for.
    """
    checked = {name: check_control(name, value, tokenizer) for name, value in controls.items()}
    checked = {name: value for name, value in checked.items() if value is not None}
    attribute_controls = list(getattr(tokenizer.miditok, "attribute_controls", []))
    kinds = {type(control).__name__ for control in attribute_controls}
    carriers = {name: CONTROLS[name].carriers(kinds) for name in checked}
    for name, classes in carriers.items():
        if not classes:
            spec = CONTROLS[name]
            raise ValueError(
                f"{name} needs a tokenizer with {' or '.join(spec.tokens + spec.fallback_tokens)} "
                "attribute controls (the 'mmm' preset); this tokenizer has none."
            )
    track: list[int] = []
    bar: list[int] = []
    for control in attribute_controls:
        for name, value in checked.items():
            if type(control).__name__ in carriers[name]:
                ids = [tokenizer.miditok.vocab[t] for t in _control_tokens(control, name, value)]
                (bar if isinstance(control, BarAttributeControl) else track).extend(ids)
    return track, bar


# ---------------------------------------------------------------------- reading back


def read_controls(tokenizer: Any, token_ids: Iterable[int]) -> list[dict[str, Any]]:
    """The control tokens of each track of a sequence (``mmm``; fills spliced in first).

    Returns one dict per track: ``program``, ``track`` (its track-level control tokens) and
    ``bars`` (bar index -> that bar's control tokens, for bars that have some).
    """
    ids = tokenizer.splice_fills([int(i) for i in token_ids])
    tracks: list[dict[str, Any]] = []
    bar = -1
    for token in tokenizer.convert_ids_to_tokens(ids):
        kind, _, value = token.partition("_")
        if token == "Track_Start":
            tracks.append({"program": None, "track": [], "bars": {}})
            bar = -1
        elif not tracks:
            continue
        elif kind == "Program" and tracks[-1]["program"] is None:
            tracks[-1]["program"] = int(value)
        elif kind == "Bar":
            bar += 1
        elif kind.startswith("ACTrack"):
            tracks[-1]["track"].append(token)
        elif kind.startswith("ACBar"):
            tracks[-1]["bars"].setdefault(bar, []).append(token)
    return tracks


def control_values(tokens: Iterable[str]) -> dict[str, Any]:
    """The controls that control tokens (of one bar, or of one track) say, as the pipeline's
    arguments: the inverse of :func:`control_token_ids`, e.g. to compare what a generated bar
    has (:func:`measure_controls`) with what was asked.

    Density is read from ``ACBarNoteDensity`` (a track's ``ACTrackNoteDensityMax``), polyphony
    is ``(min, max)``, pitch classes a sorted tuple, durations the tuple of note values
    present (in :data:`DURATION_NAMES` order), repetition the bin's value. Tokens of other
    kinds, and control tokens this reading does not know (a note value without a pipeline
    name, a malformed value), are ignored.
    """
    values: dict[str, Any] = {}
    pitch_classes, durations, polyphony = set(), set(), {}
    duration_names = dict(zip(_DURATION_TOKENS, DURATION_NAMES))
    for token in tokens:
        kind, _, value = str(token).partition("_")
        prefix = next((p for p in ("ACBar", "ACTrack") if kind.startswith(p)), None)
        if prefix is None:
            continue
        rest = kind.removeprefix(prefix)
        try:
            if rest in ("NoteDensity", "NoteDensityMax"):
                values["density"] = int(value.removesuffix("+"))
            elif rest in ("OnsetPolyphonyMin", "OnsetPolyphonyMax"):
                polyphony[rest[-3:]] = int(value)
            elif rest == "PitchClass":
                pitch_classes.add(int(value) % 12)
            elif rest.removeprefix("NoteDuration") in duration_names and value in ("0", "1"):
                values.setdefault("durations", ())
                if value == "1":
                    durations.add(duration_names[rest.removeprefix("NoteDuration")])
            elif rest == "Repetition":
                values["repetition"] = float(value)
        except ValueError:
            continue
    if len(polyphony) == 2:
        values["polyphony"] = (polyphony["Min"], polyphony["Max"])
    if pitch_classes:
        values["pitch_classes"] = tuple(sorted(pitch_classes))
    if durations:
        values["durations"] = tuple(name for name in DURATION_NAMES if name in durations)
    return values


def measure_controls(tokenizer: Any, score: Any) -> list[dict[str, Any]]:
    """Every control value of every track and (non-empty) bar of a score, computed by miditok
    (:meth:`~midiformers.MidiTokenizer.encode_midi` with all controls on all bars), in the
    layout of :func:`read_controls`."""
    ids = tokenizer.encode_midi(score, control_ratios=(1.0, 1.0), seed=0)
    return read_controls(tokenizer, ids)


def bars_per_track(tokenizer: Any, token_ids: Sequence[int]) -> list[int]:
    """Bars (``Bar`` tokens) of each track of an ``mmm`` sequence."""
    counts: list[int] = []
    for token in tokenizer.convert_ids_to_tokens([int(i) for i in token_ids]):
        if token == "Track_Start":
            counts.append(0)
        elif token == "Bar_None" and counts:
            counts[-1] += 1
    return counts
