"""Shared pieces of the MIDI dataset builders: features, validation, splits, checksums.

Every builder in this folder is a ``datasets.GeneratorBasedBuilder`` subclass that derives
from :class:`MidiDatasetBuilder`. That base class validates each MIDI file with
:func:`midiformers.tokenization.load_score`, skips (and names) the bad ones instead of
failing the whole build, and records them in the cached build so that a later load can still
say how many were skipped.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import random
import sys
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import datasets

logger = logging.getLogger(__name__)

T = TypeVar("T")

SKIPPED_FILE_NAME = "skipped_files.jsonl"
"""Written next to the Arrow files of a build: one JSON line per skipped source file."""

SPLITS = ("train", "validation", "test")


class ChecksumError(ValueError):
    """A downloaded (or given) archive does not have the expected SHA-256."""


def base_features(**extra: datasets.features.FeatureType) -> datasets.Features:
    """The columns every MIDI corpus has, followed by corpus-specific ones.

    ``midi`` holds the file itself, so a Parquet export is self-contained.
    """
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "midi": datasets.Value("binary"),
            "num_notes": datasets.Value("int32"),
            "duration_seconds": datasets.Value("float32"),
            **extra,
        }
    )


@dataclass(frozen=True)
class MidiStats:
    """What the builders measure on every valid file."""

    num_notes: int
    duration_seconds: float


def inspect_midi(data: bytes, name: str) -> MidiStats:
    """Parse ``data`` with :func:`load_score` and measure it.

    Raises:
        MidiFileError: the file is unreadable, or holds no notes (a piece without notes
            is of no use to a language model and would tokenize to nothing).
    """
    from ..tokenization import MidiFileError, load_score

    score = load_score(data, name=name)
    num_notes = score.note_num()
    if num_notes == 0:
        raise MidiFileError(name, "the file contains no notes")
    seconds = score.to("second")
    duration = max((track.end() for track in seconds.tracks), default=0.0)
    return MidiStats(num_notes=int(num_notes), duration_seconds=float(duration))


def sha256_of_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str | None, what: str) -> None:
    """Fail with a clear message when ``path`` does not hash to ``expected`` (skipped if None)."""
    if expected is None:
        return
    actual = sha256_of_file(path)
    if actual.lower() != expected.lower():
        raise ChecksumError(
            f"{what}: checksum mismatch for {path}: expected sha256 {expected}, got {actual}. "
            "The download is corrupt or the file changed upstream. Delete it and retry, or pass "
            "`sha256=None` (or the new checksum) if you trust this file."
        )


def seeded_split(
    items: Sequence[T],
    seed: int,
    validation_ratio: float,
    test_ratio: float,
) -> dict[str, list[T]]:
    """Shuffle ``items`` with ``seed`` and cut them into train / validation / test.

    The sizes are ``round(n * ratio)`` for validation and test (at least one each when
    there are three or more items and the ratio is positive), the rest is train. The
    result depends only on the order of ``items`` and the seed: sort them first.
    """
    _check_ratios(validation_ratio, test_ratio)
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    n = len(shuffled)
    n_val = _split_size(n, validation_ratio)
    n_test = _split_size(n, test_ratio)
    return {
        "train": shuffled[n_val + n_test :],
        "validation": shuffled[:n_val],
        "test": shuffled[n_val : n_val + n_test],
    }


def stratified_split(
    items: Sequence[T],
    groups: Sequence[Hashable],
    seed: int,
    validation_ratio: float,
    test_ratio: float,
) -> dict[str, list[T]]:
    """:func:`seeded_split` within each group, so every class keeps its proportions."""
    by_group: dict[Hashable, list[T]] = {}
    for item, group in zip(items, groups, strict=True):
        by_group.setdefault(group, []).append(item)
    result: dict[str, list[T]] = {split: [] for split in SPLITS}
    for index, group in enumerate(sorted(by_group, key=str)):
        parts = seeded_split(by_group[group], seed + index, validation_ratio, test_ratio)
        for split in SPLITS:
            result[split].extend(parts[split])
    return result


def _split_size(n: int, ratio: float) -> int:
    if ratio <= 0 or n == 0:
        return 0
    size = round(n * ratio)
    return max(size, 1) if n >= 3 else size


def _check_ratios(validation_ratio: float, test_ratio: float) -> None:
    if validation_ratio < 0 or test_ratio < 0 or validation_ratio + test_ratio >= 1:
        raise ValueError(
            "validation_ratio and test_ratio must be >= 0 and sum to less than 1, got "
            f"validation_ratio={validation_ratio}, test_ratio={test_ratio}"
        )


def source_hash(cls: type) -> str:
    """A hash of the code that shapes a build (the builder's module, its base classes and the
    private helper modules it imports), so that a changed builder does not reuse an old cache."""
    from .. import __version__

    modules = [inspect.getmodule(klass) for klass in cls.__mro__]
    builder_module = inspect.getmodule(cls)
    modules += [
        value
        for value in vars(builder_module).values()
        if inspect.ismodule(value) and value.__name__.startswith(__package__ + "._")
    ]
    modules += [
        sys.modules[obj.__module__]
        for obj in vars(builder_module).values()
        if (getattr(obj, "__module__", None) or "").startswith(__package__ + "._")
    ]
    sources = [__version__] + [
        inspect.getsource(module)
        for module in modules
        if module is not None and module.__name__.startswith("midiformers.")
    ]
    return hashlib.sha256("\n".join(dict.fromkeys(sources)).encode()).hexdigest()[:16]


class MidiDatasetBuilder(datasets.GeneratorBasedBuilder):
    """Base class of the midiformers corpus builders.

    Subclasses implement ``_info``, ``_split_generators`` and ``_generate_examples`` as in
    any ``datasets`` builder, and build each example with :meth:`_make_example`, which
    returns ``None`` (after recording and logging the reason) for a file that cannot be used.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("hash", source_hash(type(self)))
        super().__init__(*args, **kwargs)

    def _make_example(
        self, example_id: str, data: bytes, source_name: str | None = None, **metadata: Any
    ) -> dict | None:
        """Validate and measure one MIDI file; ``None`` (recorded as skipped) if unusable.

        ``source_name`` (default: the id) is how the file is named if it is skipped.
        """
        from ..tokenization import MidiFileError

        name = source_name or example_id
        try:
            stats = inspect_midi(data, name)
        except MidiFileError as error:
            self._record_skip(name, error.reason)
            return None
        return {
            "id": example_id,
            "midi": data,
            "num_notes": stats.num_notes,
            "duration_seconds": stats.duration_seconds,
            **metadata,
        }

    def _record_skip(self, name: str, reason: str) -> None:
        """Log a skipped source file and append it to the build's skip record."""
        logger.warning("%s: skipping %s: %s", self.name, name, reason)
        if not os.path.isdir(self._output_dir):  # e.g. streaming: nothing is being built
            return
        path = os.path.join(self._output_dir, SKIPPED_FILE_NAME)
        line = json.dumps({"name": name, "reason": reason}, ensure_ascii=False) + "\n"
        # One short append per line: safe when several worker processes build shards.
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)

    def _prepare_split(self, split_generator: datasets.SplitGenerator, **kwargs: Any):
        # Give the "Generating <split> split" progress bar a total: the number of source
        # files (the one list argument of each builder's generator). datasets replaces it
        # with the number of examples written once the split is done.
        sizes = [len(v) for v in split_generator.gen_kwargs.values() if isinstance(v, list)]
        if sizes and not split_generator.split_info.num_examples:
            split_generator.split_info.num_examples = sizes[0]
        return super()._prepare_split(split_generator, **kwargs)

    def _download_and_prepare(self, dl_manager, verification_mode, **prepare_split_kwargs):
        super()._download_and_prepare(dl_manager, verification_mode, **prepare_split_kwargs)
        counts = ", ".join(
            f"{name} {split.num_examples}" for name, split in self.info.splits.items()
        )
        skipped = read_skipped(self._output_dir)
        logger.info(
            "Built %s/%s: %s pieces; %d source file(s) skipped%s",
            self.name,
            self.config.name,
            counts,
            len(skipped),
            "" if not skipped else " (" + ", ".join(item["name"] for item in skipped[:10]) + ")",
        )

    def skipped_files(self) -> list[dict[str, str]]:
        """The files skipped when this (cached) build was made: ``[{"name", "reason"}]``."""
        return read_skipped(self.cache_dir)


def read_skipped(directory: str) -> list[dict[str, str]]:
    """Read the skip record of a build directory (empty when nothing was skipped)."""
    path = os.path.join(directory, SKIPPED_FILE_NAME)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def resolve_source(
    dl_manager: datasets.DownloadManager,
    source: str | None,
    data_dir: str | None,
    url: str,
    default_name: str,
) -> str:
    """Where the raw corpus is: ``source``, else ``data_dir/default_name`` (or ``data_dir``),
    else a download of ``url`` (``datasets`` caches it)."""
    if source is not None:
        path = os.path.expanduser(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"source={source!r} does not exist")
        return path
    if data_dir is not None:
        directory = os.path.expanduser(data_dir)
        candidate = os.path.join(directory, default_name)
        if os.path.exists(candidate):
            return candidate
        if os.path.isdir(directory):
            return directory
        raise FileNotFoundError(f"data_dir={data_dir!r} does not exist")
    return dl_manager.download(url)
