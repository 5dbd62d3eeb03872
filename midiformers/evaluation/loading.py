"""Find and load the musical ``evaluate`` modules shipped with midiformers, offline.

``evaluate.load(metric_path("pitch_class_entropy"))`` works like any local metric;
:func:`load_metric` wraps it so that ``compute`` also takes ``symusic.Score`` objects and
``os.PathLike`` paths, which Arrow (where ``evaluate`` keeps its inputs) cannot hold.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

METRICS_DIR = Path(__file__).resolve().parent / "metrics"

METRIC_NAMES = (
    "pitch_class_entropy",
    "pitch_range",
    "polyphony",
    "note_density",
    "ngram_repetition",
    "scale_consistency",
    "groove_consistency",
    "empty_beat_rate",
    "overlapping_area",
)
"""Every metric module shipped in ``midiformers/evaluation/metrics``."""

PIECE_METRICS = METRIC_NAMES[:-1]
"""The metrics computed piece by piece (all but ``overlapping_area``, which compares sets)."""

__all__ = ["METRIC_NAMES", "PIECE_METRICS", "MidiMetric", "load_metric", "metric_path"]


def metric_path(name: str) -> str:
    """The folder of metric ``name``, for ``evaluate.load`` (hyphens are accepted for ``_``).

    Raises:
        ValueError: no such metric; the message lists them.
    """
    key = name.replace("-", "_")
    if key not in METRIC_NAMES:
        raise ValueError(f"Unknown midiformers metric {name!r}; choose from {list(METRIC_NAMES)}")
    path = METRICS_DIR / key
    if not (path / f"{key}.py").is_file():
        raise FileNotFoundError(f"The script of metric {key!r} is missing from {path}")
    return str(path)


def _is_path(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike))


def _as_bytes(source: Any, name: str) -> bytes:
    from midiformers.tokenization import load_score

    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    return load_score(source, name=name, copy=False).dumps_midi()


def normalize_sources(sets: dict[str, Sequence[Any]]) -> dict[str, list]:
    """Turn each list of MIDI sources into what the modules' Arrow features hold.

    All paths stay paths (strings); any other mix becomes MIDI bytes: Scores are serialised
    and paths are read (and checked, so a bad file is named in the error).

    Raises:
        TypeError: an input is not a list of MIDI sources.
        ValueError: an input list is empty.
        MidiFileError: a path or Score cannot be read or written as MIDI.
    """
    for what, sources in sets.items():
        if isinstance(sources, (str, bytes, bytearray, os.PathLike)) or not isinstance(
            sources, Sequence
        ):
            raise TypeError(
                f"{what} must be a list of MIDI paths, bytes or symusic.Score objects, "
                f"got {type(sources).__name__}"
            )
        if not sources:
            raise ValueError(f"{what} is empty: give at least one MIDI piece")
    if all(_is_path(source) for sources in sets.values() for source in sources):
        return {what: [os.fspath(s) for s in sources] for what, sources in sets.items()}
    return {
        what: [
            _as_bytes(source, os.fspath(source) if _is_path(source) else f"{what}[{i}]")
            for i, source in enumerate(sources)
        ]
        for what, sources in sets.items()
    }


class MidiMetric:
    """An ``evaluate`` metric module whose ``compute`` takes MIDI paths, bytes or Scores.

    Attributes:
        name: the metric's name.
        module: the underlying ``evaluate.EvaluationModule`` (its ``description``,
            ``citation`` and ``inputs_description`` document it).
    """

    def __init__(self, name: str, module: Any):
        self.name = name
        self.module = module

    @property
    def compares_sets(self) -> bool:
        """Whether the metric compares a generated set with a reference set."""
        return self.name not in PIECE_METRICS

    def compute(
        self, predictions: Sequence[Any], references: Sequence[Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Compute the metric.

        Args:
            predictions: the (generated) pieces: MIDI paths, bytes or ``symusic.Score``.
            references: the reference pieces, for ``overlapping_area`` only.
            kwargs: the module's options (see ``self.module.inputs_description``).
        """
        if not self.compares_sets:
            if references is not None:
                raise ValueError(f"{self.name} scores pieces one by one; it takes no references")
            inputs = normalize_sources({"predictions": predictions})
            return self.module.compute(predictions=inputs["predictions"], **kwargs)
        if references is None:
            raise ValueError(f"{self.name} compares two sets: give references too")
        inputs = normalize_sources({"predictions": predictions, "references": references})
        return self.module.compute(
            predictions=[inputs["predictions"]], references=[inputs["references"]], **kwargs
        )

    def __repr__(self) -> str:
        return f"MidiMetric({self.name!r})"


def load_metric(name: str, **kwargs: Any) -> MidiMetric:
    """Load a midiformers metric offline (``kwargs`` go to ``evaluate.load``).

    Example::

        entropy = load_metric("pitch_class_entropy")
        entropy.compute(predictions=["a.mid", score_b, midi_bytes_c])
        load_metric("overlapping_area").compute(predictions=generated, references=real)
    """
    import evaluate

    kwargs.setdefault("keep_in_memory", True)
    key = name.replace("-", "_")
    return MidiMetric(key, evaluate.load(metric_path(key), **kwargs))
