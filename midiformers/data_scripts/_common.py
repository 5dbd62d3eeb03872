"""Shared pieces of the MIDI dataset builders: features, validation, splits, checksums.

Every builder in this folder is a ``datasets.GeneratorBasedBuilder`` subclass that derives
from :class:`MidiDatasetBuilder`. That base class validates each MIDI file with
:func:`midiformers.tokenization.load_score`, skips (and names) the bad ones instead of
failing the whole build, and records them in the cached build so that a later load can still
say how many were skipped (``builder.skipped_files()``, ``builder.skipped_by_category()``).
A build logs one summary of its skipped files (counts by reason, the first names), leaves
out a split whose files were all skipped, and fails with :class:`NoUsableFilesError` when
nothing at all is usable. A streamed corpus (``builder.as_streaming_dataset()``) applies the
same checks while it reads and counts what it skips as it goes (``builder.stream_skips``,
see :mod:`._streaming`).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import inspect
import json
import logging
import os
import random
import sys
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import datasets

from ._streaming import MidiExamplesIterable, StreamSkips

logger = logging.getLogger(__name__)

T = TypeVar("T")

SKIPPED_FILE_NAME = "skipped_files.jsonl"
"""Written next to the Arrow files of a build: one JSON line per skipped source file."""

SPLITS = ("train", "validation", "test")


class ChecksumError(ValueError):
    """A downloaded (or given) archive does not have the expected SHA-256."""


class NoUsableFilesError(ValueError):
    """A build found source files, but none of them could be used; says how many were
    skipped and why."""


# The first matching phrase of a skip reason names its category (checked in this order).
_CATEGORY_PHRASES = (
    ("the file is empty", "empty"),
    ("truncated", "truncated"),
    ("too short to be a midi file", "truncated"),
    ("not a midi file", "not MIDI"),
    ("no notes", "no notes"),
    ("too large", "too large"),
    ("implausibly long", "too long"),
    ("smpte", "unsupported"),
    ("corrupt", "corrupt"),
    ("cannot read", "unreadable"),
    ("cannot be read", "unreadable"),
    ("no such file", "missing"),
    ("missing from", "missing"),
)

DUPLICATE = "duplicate"
"""Category of a path dropped because it is the same file as one already kept."""


def skip_category(reason: str) -> str:
    """A short category for a skip reason (``"truncated"``, ``"not MIDI"``, ...), for counts."""
    text = reason.lower()
    for phrase, category in _CATEGORY_PHRASES:
        if phrase in text:
            return category
    return "other"


def summarize_skipped(
    records: Sequence[dict[str, str]], max_names: int = 5, with_reasons: bool = False
) -> str:
    """One line about skipped files: counts by category and the first few names (with their
    reasons if ``with_reasons``), e.g.
    ``"5 source file(s) skipped (3 truncated, 2 not MIDI): a.mid, b.mid, ... and 2 more"``.
    Duplicates (the same piece under a second name) are counted apart."""
    bad = [r for r in records if r.get("category") != DUPLICATE]
    duplicates = len(records) - len(bad)
    parts = []
    if bad or not duplicates:
        counts = Counter(r.get("category") or skip_category(r["reason"]) for r in bad)
        text = f"{len(bad)} source file(s) skipped"
        if counts:
            text += " (" + ", ".join(f"{n} {c}" for c, n in counts.most_common()) + ")"
        if bad:
            names = ", ".join(
                f"{r['name']} ({r['reason']})" if with_reasons else r["name"]
                for r in bad[:max_names]
            )
            more = len(bad) - max_names
            text += f": {names}" + (f" and {more} more" if more > 0 else "")
        parts.append(text)
    if duplicates:
        parts.append(f"{duplicates} duplicate(s) of files already included dropped")
    return "; ".join(parts)


BASE_COLUMNS = ("id", "midi", "num_notes", "duration_seconds")
"""The columns every midiformers corpus starts with (see :func:`base_features`)."""


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

    _streaming = False

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("hash", source_hash(type(self)))
        super().__init__(*args, **kwargs)
        self.stream_skips = StreamSkips(self.name)

    def as_streaming_dataset(self, split: str | None = None, base_path: str | None = None):
        """The corpus as an ``IterableDataset`` (or a dict of them per split) read straight from
        the sources: the same examples and columns as the build, nothing written to disk.

        Each source file (archive member, Parquet row group) is a shard, so ``shuffle``
        permutes files (plus its buffer), DataLoader workers and ``split_dataset_by_node``
        give each reader its own files. Bad files are skipped and counted per process in
        :attr:`stream_skips` (also reachable from the dataset with
        :func:`~midiformers.data_scripts.stream_skips`).
        """
        streaming = copy.copy(self)
        streaming._streaming = True
        start = self.stream_skips.mark()
        result = datasets.GeneratorBasedBuilder.as_streaming_dataset(streaming, split, base_path)
        if isinstance(result, datasets.IterableDatasetDict):
            for name in [name for name, part in result.items() if _has_no_sources(part)]:
                logger.warning(
                    "%s: the %s split has no source file; it is left out", self.name, name
                )
                del result[name]
        result = streaming._finish_streaming(result)
        if self.stream_skips.total > start[0]:
            logger.warning(
                "%s (streaming): while listing the sources, %s",
                self.name,
                self.stream_skips.summary(start),
            )
        return result

    def _finish_streaming(self, result):
        """What :meth:`as_dataset` changes after reading a build, applied to the stream
        (called on the streaming builder, after its ``_split_generators``)."""
        return result

    def _get_examples_iterable_for_split(self, split_generator: datasets.SplitGenerator):
        return MidiExamplesIterable(
            self._generate_examples,
            split_generator.gen_kwargs,
            getattr(self, "_generate_more_gen_kwargs", None),
            skips=self.stream_skips,
            label=f"{self.name}/{split_generator.name}",
        )

    def _make_example(
        self,
        example_id: str,
        data: bytes,
        source_name: str | None = None,
        stats: MidiStats | None = None,
        **metadata: Any,
    ) -> dict | None:
        """Validate and measure one MIDI file; ``None`` (recorded as skipped) if unusable.

        ``source_name`` (default: the id) is how the file is named if it is skipped.
        ``stats`` are measurements of exactly these bytes made earlier with
        :func:`inspect_midi` (which then is not run again).
        """
        from ..tokenization import MidiFileError

        name = source_name or example_id
        if stats is None:
            try:
                stats = self._inspect(data, name)
            except MidiFileError as error:
                self._record_skip(name, error.reason, getattr(error, "category", None))
                return None
        return {
            "id": example_id,
            "midi": data,
            "num_notes": stats.num_notes,
            "duration_seconds": stats.duration_seconds,
            **metadata,
        }

    @staticmethod
    def _inspect(data: bytes, name: str) -> MidiStats:
        """:func:`inspect_midi`, the one place where builders parse MIDI bytes."""
        return inspect_midi(data, name)

    def _record_skip(self, name: str, reason: str, category: str | None = None) -> None:
        """Record a skipped source file in the build's skip record; the build logs one
        summary at the end (see :func:`summarize_skipped`)."""
        category = category or skip_category(reason)
        if self._streaming:  # no build folder: counted per process, summarised per pass
            self.stream_skips.add(name, reason, category)
            return
        if not os.path.isdir(self._output_dir):
            logger.warning("%s: skipping %s: %s", self.name, name, reason)
            return
        logger.debug("%s: skipping %s: %s", self.name, name, reason)
        path = os.path.join(self._output_dir, SKIPPED_FILE_NAME)
        record = {"name": name, "reason": reason, "category": category}
        line = json.dumps(record, ensure_ascii=False) + "\n"
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
        with frozen_heap(kwargs.get("num_proc")):
            return super()._prepare_split(split_generator, **kwargs)

    def _download_and_prepare(self, dl_manager, verification_mode, **prepare_split_kwargs):
        # A build interrupted earlier may have left its record in the reused temporary folder.
        stale = os.path.join(self._output_dir, SKIPPED_FILE_NAME)
        if os.path.exists(stale):
            os.remove(stale)
        super()._download_and_prepare(dl_manager, verification_mode, **prepare_split_kwargs)
        skipped = read_skipped(self._output_dir)
        self._drop_empty_splits(skipped)
        counts = ", ".join(
            f"{name} {split.num_examples}" for name, split in self.info.splits.items()
        )
        message = f"Built {self.name}/{self.config.name}: {counts} pieces"
        if skipped:
            logger.warning("%s; %s", message, summarize_skipped(skipped))
        else:
            logger.info("%s; no source file skipped", message)

    def _drop_empty_splits(self, skipped: list[dict[str, str]]) -> None:
        """Leave out splits without examples (``as_dataset`` cannot read them); fail clearly
        when nothing at all could be used."""
        empty = [name for name, split in self.info.splits.items() if not split.num_examples]
        if len(empty) == len(self.info.splits):
            why = summarize_skipped(skipped) if skipped else "no source file was selected"
            raise NoUsableFilesError(
                f"{self.name}: no usable piece in {self._source_description()}: {why}"
            )
        for name in empty:
            logger.warning(
                "%s: the %s split has no usable piece (its source files were all skipped); "
                "it is left out",
                self.name,
                name,
            )
            del self.info.splits[name]

    def _resolve_source(self, dl_manager, url: str, default_name: str) -> str:
        """:func:`resolve_source` with the config's ``source`` and ``data_dir``. While
        streaming, an archive to download is still downloaded (and checksummed) once into
        this builder's download cache: its members are then read from the local copy."""
        if isinstance(dl_manager, datasets.StreamingDownloadManager):
            config = copy.copy(dl_manager.download_config)
            config.cache_dir = os.path.join(self._cache_dir_root, "downloads")
            dl_manager = datasets.DownloadManager(
                dataset_name=self.dataset_name, download_config=config
            )
        source = getattr(self.config, "source", None)
        return resolve_source(dl_manager, source, self.config.data_dir, url, default_name)

    def _source_description(self) -> str:
        """How error messages name where the corpus came from."""
        source = getattr(self.config, "source", None) or self.config.data_dir
        return repr(source) if source else "the corpus"

    def skipped_files(self) -> list[dict[str, str]]:
        """The files skipped when this (cached) build was made: ``[{"name", "reason"}]``."""
        return [
            {"name": item["name"], "reason": item["reason"]}
            for item in read_skipped(self.cache_dir)
        ]

    def skipped_by_category(self) -> dict[str, list[str]]:
        """The names of the skipped files by category (``"truncated"``, ``"not MIDI"``,
        ``"duplicate"``, ...), from the skip record of this (cached) build."""
        result: dict[str, list[str]] = {}
        for item in read_skipped(self.cache_dir):
            category = item.get("category") or skip_category(item["reason"])
            result.setdefault(category, []).append(item["name"])
        return result


def _has_no_sources(dataset: datasets.IterableDataset) -> bool:
    """Whether a freshly streamed split has no source at all (its shard lists are empty), as
    a build leaves out a split without examples."""
    kwargs = getattr(dataset._ex_iterable, "kwargs", None)
    lists = [value for value in (kwargs or {}).values() if isinstance(value, list)]
    return bool(lists) and all(not value for value in lists)


@contextlib.contextmanager
def frozen_heap(num_proc: int | None):
    """Around forking worker processes (``num_proc`` > 1): ``gc.freeze()`` the objects that
    exist, so the workers' garbage collector never writes to them and their pages stay shared
    with the parent instead of being copied into every worker (a 100k-file build with
    ``num_proc=2`` peaked at 1.2 GB without, 0.8 GB with)."""
    if not num_proc or num_proc <= 1:
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def read_skipped(directory: str) -> list[dict[str, str]]:
    """Read the skip record of a build directory (empty when nothing was skipped)."""
    path = os.path.join(directory, SKIPPED_FILE_NAME)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    return sorted(records, key=lambda record: record["name"])  # workers append in any order


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
