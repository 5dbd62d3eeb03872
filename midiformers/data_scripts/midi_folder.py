"""Any folder (or glob) of MIDI files as a dataset, the way ``imagefolder`` works for images.

* Splits: when every file sits under a ``train/``, ``validation/`` (or ``valid/``, ``val/``,
  ``dev/``) or ``test/`` folder, those are the splits; otherwise a seeded shuffle cuts
  train / validation / test (stratified by label when there are labels).
* Labels: when every file sits in a sub-folder (below the split folder, if any), the name
  of its parent folder becomes ``label``, a ``ClassLabel`` (``composers/bach/x.mid`` gets
  ``bach``). ``drop_labels=True`` turns this off.
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass

import datasets

from ._common import (
    MidiDatasetBuilder,
    base_features,
    seeded_split,
    source_hash,
    stratified_split,
)

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
        path: a folder (searched recursively) or a glob pattern such as ``"songs/**/*.mid"``;
            ``data_dir`` is used when ``path`` is not given.
        drop_labels: never add a ``label`` column.
        seed: seed of the split when the files are not in split folders.
        validation_ratio: share of files in the validation split (seeded split only).
        test_ratio: share of files in the test split (seeded split only).
    """

    path: str | None = None
    drop_labels: bool = False
    seed: int = 42
    validation_ratio: float = 0.1
    test_ratio: float = 0.1


@dataclass(frozen=True)
class _File:
    path: str
    relative: str  # to the root, with "/" separators
    split: str | None
    label: str | None


def _root_and_files(pattern_or_dir: str) -> tuple[str, list[str]]:
    """The folder the relative names start from, and the MIDI files found."""
    expanded = os.path.expanduser(pattern_or_dir)
    if glob.has_magic(expanded):
        root = expanded
        while glob.has_magic(root):
            root = os.path.dirname(root)
        found = glob.glob(expanded, recursive=True)
    elif os.path.isdir(expanded):
        root = expanded
        found = [
            os.path.join(folder, name)
            for folder, _dirs, names in os.walk(expanded)
            for name in names
        ]
    else:
        raise FileNotFoundError(f"midi_folder: {pattern_or_dir!r} is neither a folder nor a glob")
    files = sorted(
        path for path in found if os.path.isfile(path) and path.lower().endswith(MIDI_EXTENSIONS)
    )
    return root or ".", files


def scan_midi_folder(pattern_or_dir: str, drop_labels: bool = False) -> list[_File]:
    """List the MIDI files with their split folder and label (``None`` where absent)."""
    root, paths = _root_and_files(pattern_or_dir)
    if not paths:
        raise FileNotFoundError(
            f"midi_folder: no MIDI files ({', '.join(MIDI_EXTENSIONS)}) found in {pattern_or_dir!r}"
        )
    relatives = [os.path.relpath(path, root).replace(os.sep, "/") for path in paths]
    parts = [relative.split("/") for relative in relatives]
    # Split folders only when every file is in one; otherwise "valid/" may well be a label.
    use_splits = all(len(p) > 1 and p[0].lower() in SPLIT_FOLDERS for p in parts)
    files = []
    for path, relative, pieces in zip(paths, relatives, parts):
        split = None
        if use_splits:
            split = SPLIT_FOLDERS[pieces[0].lower()]
            pieces = pieces[1:]
        label = pieces[-2] if len(pieces) > 1 else None
        files.append(_File(path, relative, split, label))
    if drop_labels or any(file.label is None for file in files):
        files = [_File(f.path, f.relative, f.split, None) for f in files]
    return files


def folder_fingerprint(pattern_or_dir: str) -> str:
    """A hash of the file names, sizes and modification times: a changed folder is rebuilt."""
    digest = hashlib.sha256()
    _root, paths = _root_and_files(pattern_or_dir)
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


class MidiFolder(MidiDatasetBuilder):
    """A folder of MIDI files, with labels and splits from its sub-folders."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = MidiFolderConfig

    def __init__(self, *args, **kwargs):
        location = kwargs.get("path") or kwargs.get("data_dir")
        if location is not None and "hash" not in kwargs:
            kwargs["hash"] = source_hash(type(self)) + "-" + folder_fingerprint(location)
        super().__init__(*args, **kwargs)

    def _location(self) -> str:
        location = self.config.path or self.config.data_dir
        if location is None:
            raise ValueError("midi_folder: give `path=` (a folder or a glob) or `data_dir=`")
        return location

    def _files(self) -> list[_File]:
        return scan_midi_folder(self._location(), self.config.drop_labels)

    def _info(self) -> datasets.DatasetInfo:
        labels = sorted({file.label for file in self._files() if file.label is not None})
        extra = {"label": datasets.ClassLabel(names=labels)} if labels else {}
        return datasets.DatasetInfo(
            description=f"MIDI files from {self._location()}",
            features=base_features(**extra, source_path=datasets.Value("string")),
        )

    def _split_generators(self, dl_manager):
        files = self._files()
        if files[0].split is not None:
            parts = {
                split: [f for f in files if f.split == split]
                for split in ("train", "validation", "test")
            }
            parts = {split: items for split, items in parts.items() if items}
        elif files[0].label is not None:
            parts = stratified_split(
                files,
                [f.label for f in files],
                self.config.seed,
                self.config.validation_ratio,
                self.config.test_ratio,
            )
        else:
            parts = seeded_split(
                files, self.config.seed, self.config.validation_ratio, self.config.test_ratio
            )
        return [
            datasets.SplitGenerator(
                name=split, gen_kwargs={"files": sorted(items, key=lambda f: f.relative)}
            )
            for split, items in parts.items()
            if items or split == "train"
        ]

    def _generate_examples(self, files: list[_File]):
        has_labels = "label" in self.info.features
        for file in files:
            try:
                with open(file.path, "rb") as handle:
                    data = handle.read()
            except OSError as error:
                self._record_skip(
                    file.relative, f"cannot read the file ({error.strerror or error})"
                )
                continue
            metadata = {"source_path": file.relative}
            if has_labels:
                metadata["label"] = file.label
            example = self._make_example(file.relative, data, **metadata)
            if example is not None:
                yield example["id"], example
