"""Watching a piece being written: the ids ``generate`` streams, a Stop request it obeys, and a
piano roll redrawn as the piece grows.

``generate(streamer=..., stopping_criteria=[...])`` is transformers' own mechanism; the
``midi-generation`` pipeline and :func:`~midiformers.generation.generate_long` pass both on to
every ``generate`` call of a long piece.
"""

from __future__ import annotations

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
    lines: where the primer ends, or the bars being regenerated), drawn like :func:`midiformers.audio.piano_roll` on one figure kept for all
    the updates of a request: redrawing takes about a third of the time of a new figure, which
    leaves the CPU to the model while the roll grows.

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
        for mark in marks:
            self.axes.axvline(mark, color="0.3", linestyle="--", linewidth=1)
        self.marks = tuple(marks)
        self._tracks: list[Any] = []

    def draw(self, score: Any) -> np.ndarray:
        """The roll of ``score`` (a ``symusic`` Score) as a ``(H, W, 3)`` uint8 array."""
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
                collection = PolyCollection([], facecolors=f"C{index % 10}", edgecolors="none")
                self._tracks.append(self.axes.add_collection(collection))
            self._tracks[index].set_verts(boxes)
        for collection in self._tracks[len(seconds.tracks) :]:
            collection.set_verts([])
        if low > high:  # no notes: an empty octave around middle C
            low, high = 60, 72
        end = max(seconds.end(), *self.marks, 1e-3)
        self.axes.set_xlim(0, end)
        self.axes.set_ylim(low - 2, high + 3)
        self.canvas.draw()
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()
