"""Any folder (or glob) of MIDI files as a dataset, the way ``imagefolder`` works for images.

* Files: ``path`` is a folder (searched recursively), a glob pattern (``"songs/**/*.mid"``)
  or one MIDI file. Symbolic links are followed, wherever they lead, but each real file
  becomes one example however many names reach it, link loops end the walk of that branch,
  and hidden names (``.x``) are ignored. Dangling links and link loops are reported with the
  bad files (see :meth:`~MidiDatasetBuilder.skipped_by_category`).
* Validation: every file goes through :func:`~midiformers.tokenization.load_score` before
  the split; unusable files are skipped and reported once per build (counts by reason and
  the first names), files with the very same bytes as another are dropped as duplicates
  (``deduplicate=False`` keeps them), and a folder without any usable file is an error
  that says why each file was skipped.
* Splits: when every file sits under a ``train/``, ``validation/`` (or ``valid/``, ``val/``,
  ``dev/``) or ``test/`` folder, those are the splits; otherwise a seeded shuffle of the
  usable files cuts train / validation / test (stratified by label when there are labels).
  Validation and test get ``round(n * ratio)`` files, at least one each from three files
  on: a single file, or two, all go to ``train``.
* Labels: when every file sits in a sub-folder (below the split folder, if any), the name
  of its parent folder becomes ``label``, a ``ClassLabel`` (``composers/bach/x.mid`` gets
  ``bach``). ``drop_labels=True`` turns this off.
"""

from __future__ import annotations

import glob
import hashlib
import io
import logging
import os
import struct
from dataclasses import dataclass
from typing import NamedTuple

import datasets
from datasets.utils import tqdm as hf_tqdm

from ._common import (
    DUPLICATE,
    SPLITS,
    MidiDatasetBuilder,
    MidiStats,
    NoUsableFilesError,
    base_features,
    seeded_split,
    skip_category,
    source_hash,
    stratified_split,
    summarize_skipped,
)
from ._walk import FoundFile, Problem, WalkResult, find_files, link_problem, split_pattern

logger = logging.getLogger(__name__)

MIDI_EXTENSIONS = (".mid", ".midi", ".kar", ".smf")
SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}


@dataclass
class MidiFolderConfig(datasets.BuilderConfig):
    """Options of the ``midi_folder`` builder.

    Args:
        path: a folder (searched recursively), a glob pattern such as
            ``"songs/**/*.mid"``, or a single MIDI file; ``data_dir`` is used when ``path``
            is not given.
        drop_labels: never add a ``label`` column.
        deduplicate: drop a file whose bytes equal those of another file (the one first in
            name order is kept), so that copies of a piece cannot land in two splits.
        seed: seed of the split when the files are not in split folders.
        validation_ratio: share of files in the validation split (seeded split only).
        test_ratio: share of files in the test split (seeded split only).
    """

    path: str | None = None
    drop_labels: bool = False
    deduplicate: bool = True
    seed: int = 42
    validation_ratio: float = 0.1
    test_ratio: float = 0.1


class _File(NamedTuple):
    # Tuples, not dataclasses: a folder of a million files keeps one per file in memory (the
    # full path is not kept: it is the scan's root joined with ``relative``).
    relative: str  # to the root, with "/" separators
    split: str | None
    label: str | None
    size: int = 0


def _path(root: str, relative: str) -> str:
    """The path of a file found under ``root`` (the walk's own path of it)."""
    return os.path.join(root, *relative.split("/"))


_RECORD = struct.Struct("<32sIdHH")  # sha256, num_notes, duration_seconds, label, split
_NONE = 0xFFFF  # no label / no split folder


class _Piece(NamedTuple):
    """A file that passed :func:`~._common.inspect_midi`, with the digest of its bytes.

    Kept between the check and the build as one ``bytes`` record (:meth:`pack`): the name,
    a NUL (never in a file name, so records sort by name) and the fixed fields; a tuple of
    Python objects per file took 3-4 times the memory of a million-file folder."""

    relative: str
    sha256: bytes
    num_notes: int
    duration_seconds: float
    label: int  # index into the sorted label names, or _NONE
    split: int  # index into SPLITS, or _NONE

    @property
    def stats(self) -> MidiStats:
        return MidiStats(self.num_notes, self.duration_seconds)

    def pack(self) -> bytes:
        fixed = _RECORD.pack(
            self.sha256, self.num_notes, self.duration_seconds, self.label, self.split
        )
        return self.relative.encode("utf-8", "surrogateescape") + b"\0" + fixed

    @classmethod
    def unpack(cls, record: bytes) -> _Piece:
        relative = record[: -_RECORD.size - 1].decode("utf-8", "surrogateescape")
        return cls(relative, *_RECORD.unpack(record[-_RECORD.size :]))


@dataclass
class FolderScan:
    """The MIDI files of a folder, file or glob, and what was left out while finding them."""

    location: str
    drop_labels: bool
    root: str
    files: list[_File]
    problems: list[Problem]
    duplicates: list[tuple[str, str]]  # (dropped name, kept name): one real file, two names
    folders_walked: int = 0
    folder_links_not_followed: int = 0

    def skip_records(self) -> list[dict[str, str]]:
        """The problems and duplicate names, as skip records (``name``, ``reason``,
        ``category``)."""
        records = [
            {"name": p.name, "reason": p.reason, "category": p.category} for p in self.problems
        ]
        records += [
            {
                "name": dropped,
                "reason": f"the same file as {kept} (reached again through a link)",
                "category": DUPLICATE,
            }
            for dropped, kept in self.duplicates
        ]
        return records


def _find(location: str) -> WalkResult:
    """Walk a folder, take a single file, or walk the fixed part of a glob pattern."""
    expanded = os.path.expanduser(location)
    if os.path.isdir(expanded):
        return find_files(expanded, MIDI_EXTENSIONS)
    if os.path.isfile(expanded):  # one file, whatever its extension: the user named it
        root, name = os.path.split(expanded)
        found = FoundFile(expanded, name, os.stat(expanded).st_size)
        return WalkResult(root=root or ".", files=[found])
    if os.path.lexists(expanded):
        problem = link_problem(expanded, location)
        reason = problem.reason if problem.category != "unreadable" else "not a regular file"
        raise FileNotFoundError(f"midi_folder: path {location!r} cannot be used: {reason}")
    if glob.has_magic(expanded):
        root, pattern = split_pattern(expanded)
        if not os.path.isdir(root):
            return WalkResult(root=root)
        return find_files(root, MIDI_EXTENSIONS, pattern)
    raise FileNotFoundError(
        f"midi_folder: {location!r} does not exist (expected a folder, a MIDI file or a "
        "glob pattern such as 'songs/**/*.mid')"
    )


def scan_midi_folder(pattern_or_dir: str, drop_labels: bool = False) -> FolderScan:
    """Find the MIDI files with their split folder and label (``None`` where absent).

    Symbolic links are followed (to anywhere), each real file is listed once, and dangling
    links, link loops and unreadable folders are reported in ``problems``.

    Raises:
        FileNotFoundError: the location does not exist, or holds no MIDI file.
    """
    walk = _find(pattern_or_dir)
    scan = FolderScan(
        location=pattern_or_dir,
        drop_labels=drop_labels,
        root=walk.root,
        files=[],
        problems=walk.problems,
        duplicates=walk.duplicates,
        folders_walked=walk.folders_walked,
        folder_links_not_followed=walk.folder_links_not_followed,
    )
    if not walk.files:
        found = f": {summarize_skipped(scan.skip_records())}" if scan.skip_records() else ""
        raise FileNotFoundError(
            f"midi_folder: no MIDI files ({', '.join(MIDI_EXTENSIONS)}) found in "
            f"{pattern_or_dir!r}{found}"
        )
    # Split folders only when every file is in one; otherwise "valid/" may well be a label.
    use_splits = all(
        "/" in found.relative and found.relative.split("/", 1)[0].lower() in SPLIT_FOLDERS
        for found in walk.files
    )
    # Labels only when every file is in a sub-folder (below its split folder, if any).
    minimum = 3 if use_splits else 2
    labelled = not drop_labels and all(
        found.relative.count("/") + 1 >= minimum for found in walk.files
    )
    found_files, walk.files = walk.files, []
    for index, found in enumerate(found_files):
        found_files[index] = None  # one list at a time: a folder may hold millions of files
        pieces = found.relative.split("/")
        split = SPLIT_FOLDERS[pieces[0].lower()] if use_splits else None
        label = pieces[-2] if labelled else None
        scan.files.append(_File(found.relative, split, label, found.size))
    return scan


def folder_fingerprint(scan: FolderScan | str) -> str:
    """A hash of the file names, sizes and modification times (and of the problems found):
    a changed folder is rebuilt."""
    if isinstance(scan, str):
        scan = scan_midi_folder(scan)
    digest = hashlib.sha256()
    for file in scan.files:
        info = os.stat(_path(scan.root, file.relative))
        digest.update(f"{file.relative}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    for record in scan.skip_records():
        digest.update(f"{record['name']}\0{record['reason']}\n".encode())
    return digest.hexdigest()[:16]


class MidiFolder(MidiDatasetBuilder):
    """A folder of MIDI files, with labels and splits from its sub-folders."""

    VERSION = datasets.Version("1.1.0")
    BUILDER_CONFIG_CLASS = MidiFolderConfig

    def __init__(self, *args, **kwargs):
        location = kwargs.get("path") or kwargs.get("data_dir")
        if location is not None and "hash" not in kwargs:
            scan = scan_midi_folder(location, kwargs.get("drop_labels", False))
            self._folder_scan = scan
            kwargs["hash"] = source_hash(type(self)) + "-" + folder_fingerprint(scan)
        super().__init__(*args, **kwargs)

    def _location(self) -> str:
        location = self.config.path or self.config.data_dir
        if location is None:
            raise ValueError(
                "midi_folder: give `path=` (a folder, a MIDI file or a glob) or `data_dir=`"
            )
        return location

    def _source_description(self) -> str:
        return repr(self._location())

    def _scan(self) -> FolderScan:
        """The scan the cache fingerprint was computed from (made once per builder)."""
        scan = getattr(self, "_folder_scan", None)
        if (
            scan is None
            or scan.location != self._location()
            or scan.drop_labels != self.config.drop_labels
        ):
            scan = scan_midi_folder(self._location(), self.config.drop_labels)
            self._folder_scan = scan
        return scan

    def _info(self) -> datasets.DatasetInfo:
        labels = sorted({file.label for file in self._scan().files if file.label is not None})
        extra = {"label": datasets.ClassLabel(names=labels)} if labels else {}
        return datasets.DatasetInfo(
            description=f"MIDI files from {self._location()}",
            features=base_features(**extra, source_path=datasets.Value("string")),
        )

    def _split_generators(self, dl_manager):
        scan = self._scan()
        self._folder_scan = None  # its file list is turned into piece records below
        logger.info(
            "midi_folder: %d MIDI file(s) in %r (%d folder(s) walked, %d folder link(s) not "
            "followed: loops or folders walked already)",
            len(scan.files),
            scan.location,
            scan.folders_walked,
            scan.folder_links_not_followed,
        )
        records = scan.skip_records()
        for record in records:
            self._record_skip(**record)
        pieces = self._usable_pieces(scan, records)
        if not pieces:
            raise NoUsableFilesError(
                f"midi_folder: no readable MIDI file in {scan.location!r}: "
                f"{summarize_skipped(records, with_reasons=True)}"
            )
        parts = self._split(pieces)
        return [
            datasets.SplitGenerator(
                name=split, gen_kwargs={"pieces": sorted(items), "root": scan.root}
            )
            for split, items in parts.items()
            if items or split == "train"
        ]

    def _usable_pieces(self, scan: FolderScan, records: list[dict[str, str]]) -> list[bytes]:
        """Validate every file before splitting, so that the ratios apply to usable files and
        no split ends up empty because its files were broken. With ``deduplicate``, a file
        whose bytes equal an earlier one's (in name order) is dropped as a duplicate. Takes
        the scan's file list apart as it goes (each file becomes a :class:`_Piece` record)."""
        from ..tokenization import DEFAULT_MAX_FILE_SIZE, MidiFileError

        labels = {name: index for index, name in enumerate(self._label_names())}
        pieces: list[bytes] = []
        first_with: dict[bytes, int] = {}  # digest -> index in pieces
        files, scan.files = scan.files, []
        progress = hf_tqdm(total=len(files), desc="Checking MIDI files", unit=" files")
        for index, file in enumerate(files):
            files[index] = None  # one list at a time: a folder may hold millions of files
            progress.update()
            skip = None
            if file.size > DEFAULT_MAX_FILE_SIZE:
                skip = (
                    f"file too large ({file.size / 2**20:.1f} MiB > "
                    f"{DEFAULT_MAX_FILE_SIZE / 2**20:.1f} MiB)",
                    "too large",
                )
            else:
                try:
                    data = _read(_path(scan.root, file.relative))
                    stats = self._inspect(data, file.relative)
                except OSError as error:
                    skip = (f"cannot read the file ({error.strerror or error})", "unreadable")
                except MidiFileError as error:
                    skip = (error.reason, getattr(error, "category", None))
            if skip is None:
                digest = hashlib.sha256(data).digest()
                if self.config.deduplicate and digest in first_with:
                    earlier = _Piece.unpack(pieces[first_with[digest]]).relative
                    skip = (f"the same bytes as {earlier}", DUPLICATE)
                else:
                    first_with.setdefault(digest, len(pieces))
            if skip is not None:
                reason, category = skip
                category = category or skip_category(reason)
                self._record_skip(file.relative, reason, category)
                records.append({"name": file.relative, "reason": reason, "category": category})
                continue
            piece = _Piece(
                file.relative,
                digest,
                stats.num_notes,
                stats.duration_seconds,
                _NONE if file.label is None else labels[file.label],
                _NONE if file.split is None else SPLITS.index(file.split),
            )
            pieces.append(piece.pack())
        progress.close()
        return pieces

    def _label_names(self) -> list[str]:
        """The label names, in ClassLabel order (none without labels)."""
        label = self.info.features.get("label")
        return list(label.names) if label is not None else []

    def _split(self, pieces: list[bytes]) -> dict[str, list[bytes]]:
        config = self.config
        first = _Piece.unpack(pieces[0])
        if first.split != _NONE:
            splits = [SPLITS[_Piece.unpack(record).split] for record in pieces]
            parts = {
                split: [r for r, s in zip(pieces, splits, strict=True) if s == split]
                for split in SPLITS
            }
            return {split: items for split, items in parts.items() if items}
        if first.label != _NONE:
            names = self._label_names()
            labels = [names[_Piece.unpack(record).label] for record in pieces]
            return stratified_split(
                pieces, labels, config.seed, config.validation_ratio, config.test_ratio
            )
        return seeded_split(pieces, config.seed, config.validation_ratio, config.test_ratio)

    def _generate_examples(self, pieces: list[bytes], root: str):
        names = self._label_names()
        for record in pieces:
            piece = _Piece.unpack(record)
            path = _path(root, piece.relative)
            try:
                data = _read(path)
            except OSError as error:
                self._record_skip(
                    piece.relative, f"cannot read the file ({error.strerror or error})"
                )
                continue
            # Checked before the split; measured again only if the file changed since.
            same = hashlib.sha256(data).digest() == piece.sha256
            metadata = {"source_path": piece.relative}
            if names:
                metadata["label"] = names[piece.label]
            example = self._make_example(
                piece.relative, data, stats=piece.stats if same else None, **metadata
            )
            if example is not None:
                yield example["id"], example


def _read(path: str) -> bytes:
    # io.open: datasets wraps this module's `open` for remote files (fsspec); these are local.
    with io.open(path, "rb") as handle:  # noqa: UP020
        return handle.read()
