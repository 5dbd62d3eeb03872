"""Watching a piece being written: the ids ``generate`` streams, a Stop request it obeys, and a
piano roll redrawn as the piece grows.

``generate(streamer=..., stopping_criteria=[...])`` is transformers' own mechanism; the
``midi-generation`` pipeline and :func:`~midiformers.generation.generate_long` pass both on to
every ``generate`` call of a long piece.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from ..audio import _note_boxes

__all__ = ["LivePianoRoll", "StopOnEvent", "TokenCollector"]


class TokenCollector(BaseStreamer):
    """Keeps the ids a generation of one sequence streams, to be read from another thread.

    ``generate`` puts its prompt first, then one id per step, and ends with ``end()``. A piece
    longer than the model's window is written by several ``generate`` calls (a sliding window),
    each putting its window's prompt first: every first ``put`` after an ``end`` is a prompt
    and is skipped, so :meth:`ids` holds exactly the generated ids, in order.
    """

    def __init__(self) -> None:
        self._ids: list[int] = []
        self._lock = threading.Lock()
        self._prompt_next = True

    def put(self, value: torch.Tensor) -> None:
        if self._prompt_next:
            self._prompt_next = False
            return
        with self._lock:
            self._ids.append(int(value.reshape(-1)[0]))  # a batch of one

    def end(self) -> None:
        self._prompt_next = True

    def ids(self) -> list[int]:
        """The ids generated so far (a copy)."""
        with self._lock:
            return list(self._ids)


class StopOnEvent(StoppingCriteria):
    """Ends ``generate`` for every row once ``event`` is set (the page's Stop button)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        stop = self.event.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class LivePianoRoll:
    """The piano roll of a piece (time in seconds, one colour per track, ``marks`` as dashed
    lines: where the primer ends, or the bars being regenerated), drawn like
    :func:`midiformers.audio.piano_roll` on one figure kept for all the updates of a request.

    The axes (labels, ticks, grid) are drawn only when the limits change and kept as a
    background; an update with the same limits pastes it and draws just the notes and marks
    (about a tenth of a full draw: text is most of it). While the piece grows, :meth:`draw`
    takes the length it is expected to reach (``room``) and widens the limits only when the
    notes leave them, so most updates are that cheap and the CPU stays with the model.

    Not thread-safe: one instance per request, drawn from one thread.
    """

    def __init__(
        self,
        marks: Sequence[float] = (),
        width: float = 10.0,
        height: float = 3.5,
        dpi: int = 100,
    ):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure  # no pyplot: thread-safe inside a web server

        self.figure = Figure(figsize=(width, height), dpi=dpi)
        # Fixed margins (room for three-digit pitches): the axes stay put as the roll grows.
        self.figure.subplots_adjust(left=0.065, right=0.99, bottom=0.14, top=0.97)
        self.canvas = FigureCanvasAgg(self.figure)
        self.axes = self.figure.add_subplot()
        self.axes.set_xlabel("time (s)")
        self.axes.set_ylabel("MIDI pitch")
        self.axes.grid(axis="y", alpha=0.3)
        self.axes.set_axisbelow(True)  # the grid under the notes, in both kinds of draw
        # Notes and marks are "animated": a full draw leaves them out (the background), and
        # every draw then paints them over it.
        self._marks = [
            self.axes.axvline(mark, color="0.3", linestyle="--", linewidth=1, animated=True)
            for mark in marks
        ]
        self.marks = tuple(marks)
        self._tracks: list[Any] = []
        self._limits: tuple[tuple[float, float], tuple[float, float]] | None = None
        self._background: Any = None
        self.full_draws = 0
        """How many draws redrew the axes (the others only pasted them)."""

    def draw(self, score: Any, room: float | None = None) -> np.ndarray:
        """The roll of ``score`` (a ``symusic`` Score) as a ``(H, W, 3)`` uint8 array.

        ``room``: the piece is still growing and expected to last about ``room`` seconds; the
        time axis then reaches at least that far, and both axes keep their limits while the
        notes fit. ``None``: the limits fit the piece (the finished roll).
        """
        from matplotlib.collections import PolyCollection

        seconds = score.to("second")
        low, high = 127, 0
        for index, track in enumerate(seconds.tracks):
            notes = track.notes.numpy()
            boxes = _note_boxes(notes) if len(notes["time"]) else np.zeros((0, 4, 2))
            if len(notes["time"]):
                low = min(low, int(notes["pitch"].min()))
                high = max(high, int(notes["pitch"].max()))
            if index == len(self._tracks):
                collection = PolyCollection(
                    [], facecolors=f"C{index % 10}", edgecolors="none", animated=True
                )
                self._tracks.append(self.axes.add_collection(collection))
            self._tracks[index].set_verts(boxes)
        for collection in self._tracks[len(seconds.tracks) :]:
            collection.set_verts([])
        if low > high:  # no notes: an empty octave around middle C
            low, high = 60, 72
        end = max(seconds.end(), *self.marks, 1e-3)
        limits = self._limits_for(end, low, high, room)
        if limits != self._limits:
            self.axes.set_xlim(*limits[0])
            self.axes.set_ylim(*limits[1])
            self.canvas.draw()  # the axes without the notes and marks
            self._background = self.canvas.copy_from_bbox(self.figure.bbox)
            self._limits = limits
            self.full_draws += 1
        else:
            self.canvas.restore_region(self._background)
        for artist in (*self._tracks, *self._marks):
            self.axes.draw_artist(artist)
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()

    def _limits_for(
        self, end: float, low: int, high: int, room: float | None
    ) -> tuple[tuple[float, float], tuple[float, float]]:
        """(x limits, y limits): fitted to the piece, or while it grows the current ones as
        long as the notes fit in them, else those widened to a frame with room to grow."""
        fitted = ((0.0, end), (low - 2.0, high + 3.0))
        if room is None:
            return fitted
        right = _round_up(max(room, end) * 1.1)
        bottom, top = fitted[1][0] - ROLL_PITCH_ROOM, fitted[1][1] + ROLL_PITCH_ROOM
        if self._limits is not None:
            (_, old_right), (old_bottom, old_top) = self._limits
            if end <= old_right and old_bottom <= fitted[1][0] and fitted[1][1] <= old_top:
                return self._limits
            right, bottom, top = max(right, old_right), min(bottom, old_bottom), max(top, old_top)
        return (0.0, right), (bottom, top)


ROLL_PITCH_ROOM = 4
"""Semitones above and below the notes of a growing roll, so a new pitch seldom widens it."""


def _round_up(seconds: float) -> float:
    """``seconds`` rounded up to a multiple of half a power of ten (32 -> 35, 8.3 -> 8.5)."""
    step = 10.0 ** math.floor(math.log10(max(seconds, 1e-3))) / 2
    return step * math.ceil(seconds / step - 1e-9)
