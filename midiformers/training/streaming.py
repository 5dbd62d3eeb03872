"""The training stream of a ``streaming: true`` run: endless, shuffled, transposed, resumable.

A streamed corpus has no length, so the run is counted in steps (``max_steps``) and the
stream starts a new pass (``set_epoch``: the source files in a new seeded order) whenever
one ends, inside the dataset: every process of a distributed run reads its own part
(``split_dataset_by_node``) and none ever runs out before the others. Training blocks go
through a seeded shuffle buffer and, with ``transpose_semitones``, a random transposition.

Everything that decides the next block (the ``datasets`` stream's ``state_dict()``, the
pass, the blocks in the buffer, both random generators) is saved in every checkpoint
(``data_state-<rank>.json``, see :meth:`MidiTrainer._save_rng_state`), so a resumed run
reads on from there and sees the very blocks an uninterrupted one would, without replaying.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import datasets
import numpy as np
import torch

logger = logging.getLogger("midiformers.train")

STATE_FORMAT = 1


def data_state_file(checkpoint: str | os.PathLike, rank: int) -> str:
    """The file holding process ``rank``'s stream position in ``checkpoint``."""
    return os.path.join(os.fspath(checkpoint), f"data_state-{rank}.json")


class EmptyStreamError(RuntimeError):
    """A training stream that yields no example at all (every piece too short or unreadable)."""


class StreamingTrainSet(torch.utils.data.IterableDataset):
    """A ``datasets.IterableDataset`` of training examples as an endless, resumable stream.

    Args:
        dataset: this process' part of the tokenized training stream.
        seed: seed of the pass order (``set_epoch``), the buffer and the transposition.
        buffer_size: examples held in the shuffle buffer (0 or 1: stream order).
        transform: a :class:`~midiformers.data_scripts.PitchTranspose` applied to each
            example as it leaves the buffer, or None.
        part: ``(rank, world_size)`` of the process whose part ``dataset`` is; a saved state
            is only loaded into the same part.
    """

    def __init__(
        self,
        dataset: datasets.IterableDataset,
        *,
        seed: int,
        buffer_size: int = 1000,
        transform: Any = None,
        part: tuple[int, int] = (0, 1),
    ):
        self.dataset = dataset
        self.buffer_size = max(int(buffer_size), 1)
        self.transform = transform
        self.seed = seed
        self.part = tuple(part)
        self._rng = np.random.default_rng(seed)
        self._epoch = 0
        self._buffer: list[dict[str, Any]] = []
        self._source_state: dict | None = None
        self.iterating = False

    # ---------------------------------------------------------------- iteration

    def _source(self):
        """The stream's examples, pass after pass (a new file order each pass)."""
        while True:
            resumed = self._source_state is not None
            self.dataset.set_epoch(self._epoch)
            if resumed:
                self.dataset.load_state_dict(self._source_state)
                self._source_state = None
            count = 0
            for example in self.dataset:
                count += 1
                yield example
            if count == 0 and not resumed:
                raise EmptyStreamError(
                    "The training stream yields no example: the pieces are too short for "
                    "max_length or all failed to tokenize"
                )
            self._epoch += 1

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        if worker is not None:  # each DataLoader worker reads its own shards: own draws too
            self._rng = np.random.default_rng([self.seed, worker.id])
            if self.transform is not None:
                self.transform.rng = np.random.default_rng([self.seed, worker.id, 1])
        self.iterating = True
        for example in self._source():
            if self.buffer_size > 1:
                if len(self._buffer) < self.buffer_size:
                    self._buffer.append(example)
                    continue
                index = int(self._rng.integers(len(self._buffer)))
                example, self._buffer[index] = self._buffer[index], example
            yield self._transposed(example)

    def _transposed(self, example: dict[str, Any]) -> dict[str, Any]:
        if self.transform is None:
            return example
        moved = self.transform({key: [value] for key, value in example.items()})
        return {key: value[0] for key, value in moved.items()}

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """Where the stream stands: call it between two blocks the trainer took."""
        return {
            "format": STATE_FORMAT,
            "setup": self._setup(),
            "epoch": self._epoch,
            "source": self.dataset.state_dict() if self.iterating else self._source_state,
            "buffer": self._buffer,
            "rng": self._rng.bit_generator.state,
            "transform_rng": (
                self.transform.rng.bit_generator.state if self.transform is not None else None
            ),
        }

    def _setup(self) -> dict[str, Any]:
        """What a saved position is only valid for."""
        return {"part": list(self.part), "seed": self.seed, "buffer_size": self.buffer_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict`) at the next iteration.

        Raises:
            ValueError: the state was saved by another setup (process count, seed, buffer).
        """
        if state.get("setup") != self._setup():
            raise ValueError(
                f"the stream position was saved with {state.get('setup')}, this run has "
                f"{self._setup()}"
            )
        self._epoch = int(state["epoch"])
        self._source_state = state["source"]
        self._buffer = list(state["buffer"])
        self._rng.bit_generator.state = state["rng"]
        if self.transform is not None and state.get("transform_rng") is not None:
            self.transform.rng.bit_generator.state = state["transform_rng"]

    def save(self, path: str) -> None:
        """Write :meth:`state_dict` to ``path`` (JSON, written under a temporary name first)."""
        temporary = f"{path}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(self.state_dict(), handle, default=_plain)
        os.replace(temporary, path)

    def load(self, path: str) -> None:
        """Continue from the state saved in ``path``."""
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{path}: unknown data state format {state.get('format')!r}")
        self.load_state_dict(state)


def _plain(value: Any) -> Any:
    """JSON for the numpy scalars and arrays a stream's state may hold."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def bounded_eval_set(stream: datasets.IterableDataset, count: int) -> datasets.Dataset:
    """The first ``count`` examples of a streamed evaluation split, kept in memory."""
    rows = list(stream.take(count))
    if not rows:
        return datasets.Dataset.from_dict({})
    return datasets.Dataset.from_list(rows, features=stream.features)
