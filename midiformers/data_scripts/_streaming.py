"""Streaming support shared by the builders: skip counts kept while streaming, and the
examples iterable that keeps them (and the builder's shards) through shuffles and splits.

A streamed corpus has no build folder to record its bad files in, so each process counts
them as it goes (:class:`StreamSkips`), logs the first few names, and logs one summary when
a pass over its shards ends (or stops early). :func:`stream_skips` finds the counter of a
streamed dataset, also after ``map``, ``shuffle`` or ``split_dataset_by_node``.

The shards of a streamed corpus are the entries of the list arguments of the builder's
``_generate_examples`` (one source file, archive member or Parquet row group each), exactly
as ``datasets`` shards a build with ``num_proc``: DataLoader workers and the processes of a
distributed run each read their own files.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from copy import deepcopy
from itertools import islice
from typing import Any

import datasets
from datasets.iterable_dataset import ExamplesIterable
from datasets.utils.sharding import _shuffle_gen_kwargs

logger = logging.getLogger(__name__)

MAX_NAMES_KEPT = 1000
"""Skipped files named per category in :class:`StreamSkips` (the counts go on)."""
NAMES_LOGGED = 5
"""Skipped files logged one by one per process before only the counts go on."""


class StreamSkips:
    """Counts of the source files skipped while streaming, by category, with the first names.

    One counter per streamed builder and process: DataLoader workers and distributed
    processes each count (and log) their own shards.
    """

    def __init__(self, name: str = "corpus"):
        self.name = name
        self.counts: Counter[str] = Counter()
        self.records: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._passes = 0  # passes under way (a shuffle reads several shards in threads)
        self._pass_start = (0, 0)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        """Files skipped so far in this process."""
        return sum(self.counts.values())

    def add(self, name: str, reason: str, category: str) -> None:
        """Count one skipped file (and keep its name while fewer than ``MAX_NAMES_KEPT``)."""
        with self._lock:
            self.counts[category] += 1
            if self.counts[category] <= MAX_NAMES_KEPT:
                self.records.append({"name": name, "reason": reason, "category": category})
        if self.total <= NAMES_LOGGED:
            logger.warning("%s: skipping %s: %s", self.name, name, reason)
        else:
            logger.debug("%s: skipping %s: %s", self.name, name, reason)

    def by_category(self) -> dict[str, int]:
        """``{category: count}`` of the files skipped so far (``"truncated"``, ...)."""
        return dict(self.counts.most_common())

    def names(self, category: str | None = None) -> list[str]:
        """Names of skipped files kept so far (all categories, or one)."""
        return [r["name"] for r in self.records if category in (None, r["category"])]

    def mark(self) -> tuple[int, int]:
        """A position to summarise from later (see :meth:`summary`)."""
        return self.total, len(self.records)

    def begin_pass(self) -> None:
        """A reader starts a pass over some shards."""
        with self._lock:
            if self._passes == 0:
                self._pass_start = self.mark()
            self._passes += 1

    def end_pass(self, label: str) -> None:
        """A reader is done; when no other pass of this process is under way, log one summary
        of what they skipped."""
        with self._lock:
            self._passes -= 1
            if self._passes or self.total == self._pass_start[0]:
                return
            start = self._pass_start
        logger.warning("%s (streaming, this process): %s", label, self.summary(start))

    def summary(self, since: tuple[int, int] = (0, 0)) -> str:
        """One line about the files skipped since ``since`` (default: all)."""
        from ._common import summarize_skipped

        records = self.records[since[1] :]
        text = summarize_skipped(records)
        missing = self.total - since[0] - len(records)
        if missing > 0:
            text += f" (+{missing} more not named)"
        return text

    def __repr__(self) -> str:
        return f"StreamSkips({self.name!r}, total={self.total}, {self.by_category()})"


class MidiExamplesIterable(ExamplesIterable):
    """``datasets``' examples iterable over a builder's generator, which keeps its skip
    counter when shuffled, sharded or resharded, and logs a skip summary after each pass."""

    def __init__(
        self,
        generate_examples_fn: Any,
        kwargs: dict,
        generate_more_kwargs_fn: Any = None,
        *,
        skips: StreamSkips,
        label: str,
    ):
        super().__init__(generate_examples_fn, kwargs, generate_more_kwargs_fn)
        self.skips = skips
        self.label = label

    def _like(self, kwargs: dict) -> MidiExamplesIterable:
        return MidiExamplesIterable(
            self.generate_examples_fn,
            kwargs,
            self.generate_more_kwargs_fn,
            skips=self.skips,
            label=self.label,
        )

    def __iter__(self):
        self.skips.begin_pass()
        try:
            yield from self._iter_shards()
        finally:
            self.skips.end_pass(self.label)

    def _shard_kwargs(self, index: int) -> dict:
        """The generator's arguments for shard ``index`` alone."""
        return {
            key: [value[index]] if isinstance(value, list) else value
            for key, value in self.kwargs.items()
        }

    def _iter_shards(self):
        """``ExamplesIterable.__iter__`` (same order, same state), with each shard's arguments
        made when its turn comes: datasets makes a dict and a list for every shard when a pass
        starts and keeps them for the whole pass (about 300 bytes per file of a folder)."""
        state = self._state_dict
        shard_start = state["shard_idx"] if state else 0
        shards = self.num_shards
        for index in range(shard_start, shards):
            kwargs = self._shard_kwargs(index) if shards > 1 else dict(self.kwargs)
            example_start = state["shard_example_idx"] if state else 0
            for key_example in islice(self.generate_examples_fn(**kwargs), example_start, None):
                if state:
                    state["shard_example_idx"] += 1
                yield key_example
            if state:
                state["shard_idx"] += 1
                state["shard_example_idx"] = 0

    def shuffle_data_sources(self, generator) -> MidiExamplesIterable:
        return self._like(_shuffle_gen_kwargs(deepcopy(generator), self.kwargs))

    def shard_data_sources(
        self, num_shards: int, index: int, contiguous: bool = True
    ) -> MidiExamplesIterable:
        # datasets' version lists every shard's arguments first (see _iter_shards)
        indices = self.split_shard_indices_by_worker(num_shards, index, contiguous=contiguous)
        return self._like(
            {
                key: [value[i] for i in indices] if isinstance(value, list) else value
                for key, value in self.kwargs.items()
            }
        )

    def reshard_data_sources(self) -> MidiExamplesIterable:
        return self._like(super().reshard_data_sources().kwargs)


def stream_skips(dataset: datasets.IterableDataset) -> StreamSkips | None:
    """The skip counter of a streamed midiformers corpus (also after ``map``, ``shuffle``,
    ``take`` or ``split_dataset_by_node``); ``None`` for other datasets.

    The counts are those of this process: DataLoader workers count in their own copies.
    """
    todo = [getattr(dataset, "_ex_iterable", None)]
    while todo:
        iterable = todo.pop()
        if iterable is None:
            continue
        if isinstance(iterable, MidiExamplesIterable):
            return iterable.skips
        todo.append(getattr(iterable, "ex_iterable", None))
        todo.extend(getattr(iterable, "ex_iterables", None) or [])
    return None
