"""The training stream of a ``streaming: true`` run: endless, shuffled, transposed, resumable.

A streamed corpus has no length, so the run is counted in steps (``max_steps``) and the
stream starts a new pass (``set_epoch``: the source files in a new seeded order) whenever
one ends, inside the dataset: every process of a distributed run reads its own part
(``split_dataset_by_node``) and none ever runs out before the others. Training blocks go
through a seeded shuffle buffer and, with ``transpose_semitones``, a random transposition.

Everything that decides the next block (the ``datasets`` stream's ``state_dict()``, the
pass, the blocks in the buffer, both random generators) is the stream's ``state_dict()``.
The trainer reads the stream through torchdata's ``StatefulDataLoader``
(:meth:`StreamingTrainSet.dataloader`), which collects that state from each DataLoader worker
together with the batches it sends, so its own ``state_dict()`` says where every worker stood
after the last batch the trainer took (not where the workers' read-ahead is). Every checkpoint
saves it (``data_state-<rank>.json``, see :meth:`MidiTrainer._save_rng_state`), and a resumed
run reads on from there and sees the very blocks an uninterrupted one would, with any number
of workers, without replaying the stream.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from typing import Any

import datasets
import numpy as np
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

logger = logging.getLogger("midiformers.train")

STATE_FORMAT = 2


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
        self._worker_seeded = False
        self.iterating = False
        self._loader = None  # the StatefulDataLoader reading this stream (dataloader())
        self._position: dict | None = None  # a saved loader state to continue from (load())
        self._replay = 0  # batches to read past first, when no position could be loaded

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
                worker = torch.utils.data.get_worker_info()
                if worker is not None and worker.id >= (self.dataset.num_shards or 0):
                    return  # more DataLoader workers than files: this one has none (datasets warns)
                raise EmptyStreamError(
                    "The training stream yields no example: the pieces are too short for "
                    "max_length or all failed to tokenize"
                )
            self._epoch += 1

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        if worker is not None and not self._worker_seeded:
            # each DataLoader worker reads its own shards: own draws too (once: a worker that
            # continues from a saved state keeps the generators' saved positions)
            self._rng = np.random.default_rng([self.seed, worker.id])
            if self.transform is not None:
                self.transform.rng = np.random.default_rng([self.seed, worker.id, 1])
            self._worker_seeded = True
        if worker is not None:
            # datasets keeps the epoch in memory shared with every worker (so that the main
            # process' set_epoch reaches persistent workers); here each worker runs its own
            # passes at its own pace, and a shared epoch would let one worker's pass change
            # another's file order (and which pass a resumed position belongs to)
            self.dataset._epoch = self.dataset.epoch
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
        """Where this copy of the stream stands (the process', or one DataLoader worker's):
        the ``StatefulDataLoader`` calls it between two batches."""
        return {
            "setup": self._setup(),
            "worker_seeded": self._worker_seeded,
            "epoch": self._epoch,
            "source": self.dataset.state_dict() if self.iterating else self._source_state,
            "buffer": list(self._buffer),  # a copy: the loader compares it with the last one
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
        self._worker_seeded = bool(state["worker_seeded"])
        self._epoch = int(state["epoch"])
        self._source_state = state["source"]
        self._buffer = list(state["buffer"])
        self._rng.bit_generator.state = state["rng"]
        if self.transform is not None and state.get("transform_rng") is not None:
            self.transform.rng.bit_generator.state = state["transform_rng"]

    def __getstate__(self) -> dict[str, Any]:
        """What a DataLoader worker gets: the stream, not the loader reading it."""
        return {**self.__dict__, "_loader": None, "_position": None}

    # ---------------------------------------------------------------- loading and resuming

    def dataloader(
        self,
        *,
        batch_size: int,
        collate_fn,
        num_workers: int = 0,
        snapshot_every: int = 1,
        **kwargs: Any,
    ):
        """The ``StatefulDataLoader`` the trainer reads this stream with, continuing from the
        position given to :meth:`load` (or after replaying :meth:`replay`'s batches).

        ``snapshot_every`` batches, each worker sends its state along with a batch (the
        shuffle buffer included, so not at every batch): a checkpoint between two snapshots
        holds the last one plus the count of batches since, which a resumed run reads again
        and drops. Pass the checkpoint interval in batches so that none are read twice.
        Other keyword arguments go to the loader (``pin_memory``, ``prefetch_factor``...).
        """
        with warnings.catch_warnings():  # torchdata 0.11 calls torch.set_vital (deprecated)
            warnings.filterwarnings("ignore", message=".*set_vital.*")
            loader = _StreamLoader(
                self,
                batch_size=batch_size,
                collate_fn=collate_fn,
                num_workers=num_workers,
                snapshot_every_n_steps=max(int(snapshot_every), 1),
                **kwargs,
            )
        setup = self._loader_setup(num_workers, batch_size)
        if self._position is not None:
            if self._position["setup"] != setup:  # load() was told another loader
                raise ValueError(
                    f"the stream position was saved with {self._position['setup']}, the "
                    f"loader has {setup}"
                )
            loader.load_state_dict(self._position["loader"])
            self._position = None
        loader.replay, self._replay = self._replay, 0
        self._loader = loader
        return loader

    def _loader_setup(self, num_workers: int, batch_size: int) -> dict[str, Any]:
        """What a saved position is only valid for: the stream's setup and the loader's."""
        return {**self._setup(), "num_workers": int(num_workers), "batch_size": int(batch_size)}

    def position(self) -> dict[str, Any]:
        """Where the trainer stands in the stream: the state of the loader made by
        :meth:`dataloader` (every worker's stream state after the last batch it yielded)."""
        if self._loader is None:
            raise RuntimeError("the stream is not being read: call dataloader() first")
        loader = self._loader
        return {
            "format": STATE_FORMAT,
            "setup": self._loader_setup(loader.num_workers, loader.batch_size),
            "loader": loader.state_dict(),
        }

    def save(self, path: str) -> None:
        """Write :meth:`position` to ``path`` (JSON, written under a temporary name first)."""
        temporary = f"{path}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(self.position(), handle, default=_plain)
        os.replace(temporary, path)

    def load(self, path: str, *, num_workers: int, batch_size: int) -> None:
        """Continue from the position saved in ``path`` when :meth:`dataloader` makes the
        loader (with these ``num_workers`` and ``batch_size``).

        Raises:
            ValueError: an unknown format, or a position saved by another setup (process
                count, seed, shuffle buffer, DataLoader workers, batch size).
        """
        with open(path, encoding="utf-8") as handle:
            position = json.load(handle)
        if position.get("format") != STATE_FORMAT:
            raise ValueError(f"{path}: unknown data state format {position.get('format')!r}")
        expected = self._loader_setup(num_workers, batch_size)
        if position.get("setup") != expected:
            raise ValueError(
                f"the stream position was saved with {position.get('setup')}, this run has "
                f"{expected}"
            )
        self._position = position

    def replay(self, batches: int) -> None:
        """Without a saved position: read past the first ``batches`` batches (what an
        interrupted run trained on) when the loader starts, as transformers does."""
        self._replay = int(batches)


class _StreamLoader(StatefulDataLoader):
    """A ``StatefulDataLoader`` that may first read past ``replay`` batches (once)."""

    replay = 0

    def __iter__(self):
        iterator = super().__iter__()
        while self.replay > 0:
            next(iterator)
            self.replay -= 1
        return iterator


def stream_snapshot_interval(args) -> int:
    """Batches between two snapshots of the DataLoader workers' stream states: the checkpoint
    interval in batches (``save_steps`` x ``gradient_accumulation_steps``), so that each
    checkpoint falls on a snapshot and a resumed run reads no batch twice; 1 otherwise."""
    if not args.dataloader_num_workers or args.save_strategy != "steps":
        return 1
    steps = args.save_steps
    if steps < 1:  # a fraction of max_steps, as the trainer reads it
        steps = math.ceil(args.max_steps * steps) if args.max_steps > 0 else 1
    return max(int(steps), 1) * max(int(args.gradient_accumulation_steps), 1)


def resume_stream(stream: StreamingTrainSet, checkpoint: str, args) -> None:
    """Make ``stream`` continue from the position saved in ``checkpoint`` by this process;
    when there is none or it does not fit this run, warn and replay the batches the
    checkpoint trained on instead (what transformers does), which sees the same blocks only
    if nothing else changed."""
    path = data_state_file(checkpoint, args.process_index)
    problem = None
    if not os.path.isfile(path):
        problem = f"no {os.path.basename(path)}"
    else:
        try:
            stream.load(
                path, num_workers=args.dataloader_num_workers, batch_size=args.train_batch_size
            )
        except (ValueError, KeyError, json.JSONDecodeError) as error:
            problem = str(error)
    if problem is None:
        logger.info("The training stream continues where %s stopped", checkpoint)
        return
    from transformers import TrainerState

    state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
    batches = state.global_step * args.gradient_accumulation_steps
    stream.replay(batches)
    logger.warning(
        "The training stream cannot continue from %s (%s): it starts again and reads past the "
        "%d batches already trained on",
        checkpoint,
        problem,
        batches,
    )


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
