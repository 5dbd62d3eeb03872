"""Any Parquet dataset whose rows carry MIDI files, from the Hub or from disk.

Large MIDI corpora are published as Parquet: GigaMIDI (``Metacreation/GigaMIDI``, about
1.4M files, the MIDI bytes in a ``music`` column next to ``md5``, ``instrument_category``,
``num_tracks`` and loop annotations), and every corpus exported with
:func:`~midiformers.data_scripts.save_as_parquet` or ``push_to_hub``. This builder reads such
a dataset into the midiformers columns (``id``, ``midi``, ``num_notes``,
``duration_seconds``) plus the metadata columns you keep::

    ds = load_midi_dataset(
        "midi_parquet",
        path="Metacreation/GigaMIDI",  # a Hub dataset, a local folder, or data_files=...
        subset="v1.1.0",
        midi_column="music",
        id_column="md5",
        metadata_columns=("instrument_category", "num_tracks"),
        streaming=True,
    )

* Files: ``path`` is a Hub dataset id (``owner/name`` or ``hf://datasets/owner/name``, with
  ``revision=``), a local folder laid out like one (its ``README.md`` configs, or
  ``data/train-*.parquet``-style names, give the splits; ``subset=`` picks a config), or one
  Parquet file or glob (all ``train``). Or give ``data_files={"train": [...], ...}`` as to
  ``datasets.load_dataset``. ``datasets`` resolves all of these, so gated Hub datasets use the
  logged-in token and ``HF_HUB_OFFLINE=1`` works from the cache.
* Shards: every Parquet row group of a local file is a shard (``num_proc`` builds them in
  parallel, DataLoader workers and distributed processes read different ones); remote files
  stream one file per shard, and ``IterableDataset.reshard()`` splits them by row group.
* Bad data: a row whose MIDI is null, empty, truncated or not MIDI is skipped, named
  (``<file>#<row>``, with its id) and counted, like a bad file of the other builders; so is a
  Parquet file that cannot be read or lacks the MIDI column. Nothing crashes the build.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from dataclasses import dataclass
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.utils.file_utils import is_local_path, xopen

from ._common import BASE_COLUMNS, MidiDatasetBuilder, base_features, source_hash

logger = logging.getLogger(__name__)

_HF_URL = re.compile(r"^hf://datasets/(?P<repo>[^/@]+/[^/@]+)(?:@(?P<revision>[^/]+))?/?$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class MidiParquetConfig(datasets.BuilderConfig):
    """Options of the ``midi_parquet`` builder.

    Args:
        path: a Hub dataset id (``"owner/name"``, ``"hf://datasets/owner/name"``), a local
            folder laid out like a Hub dataset, or one Parquet file or glob; not needed with
            ``data_files=``.
        subset: the Hub config (``configs:`` in the dataset's README) to read.
        revision: Hub branch, tag or commit.
        midi_column: the column holding the MIDI files' bytes (GigaMIDI: ``"music"``).
        id_column: a column of unique names (GigaMIDI: ``"md5"``); by default ``id`` if the
            data has one, else ``<file>#<row>``.
        metadata_columns: the other columns to keep; ``None`` keeps all (except columns
            named like the midiformers ones), ``()`` none.
        batch_size: rows read at a time.
    """

    path: str | None = None
    subset: str | None = None
    revision: str | None = None
    midi_column: str = "midi"
    id_column: str | None = None
    metadata_columns: tuple[str, ...] | None = None
    batch_size: int = 256


def resolve_parquet_files(
    path: str,
    subset: str | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    token: str | bool | None = None,
) -> datasets.data_files.DataFilesDict:
    """The Parquet files per split of a Hub dataset, a local folder, a file or a glob, as
    ``datasets.load_dataset`` would find them.

    Raises:
        FileNotFoundError: nothing matches ``path``.
        ValueError: the dataset's data files are not Parquet.
    """
    match = _HF_URL.match(path)
    if match:
        path, revision = match["repo"], revision or match["revision"]
    expanded = os.path.expanduser(path)
    if expanded.endswith(".parquet") or (
        not os.path.isdir(expanded) and any(c in expanded for c in "*?[")
    ):
        found = datasets.data_files.DataFilesDict.from_patterns({"train": [expanded]})
    elif os.path.isdir(expanded) or _REPO_ID.match(path):
        try:
            probe = datasets.load_dataset_builder(
                expanded if os.path.isdir(expanded) else path,
                name=subset,
                revision=revision,
                cache_dir=cache_dir,
                token=token,
            )
        except (FileNotFoundError, ValueError) as error:
            raise FileNotFoundError(f"midi_parquet: cannot read {path!r}: {error}") from None
        except OSError as error:  # ConnectionError, offline mode, ...
            raise ConnectionError(f"midi_parquet: cannot read {path!r}: {error}") from None
        found = probe.config.data_files
        if not found:
            raise FileNotFoundError(f"midi_parquet: no data files found in {path!r}")
    else:
        raise FileNotFoundError(
            f"midi_parquet: {path!r} is neither a Parquet file, a glob, a folder nor a Hub "
            "dataset id ('owner/name')"
        )
    others = sorted({f for files in found.values() for f in files if not f.endswith(".parquet")})
    if others:
        raise ValueError(
            f"midi_parquet: {path!r} holds data files that are not Parquet, e.g. {others[0]!r}"
        )
    return found


def _open(file: str, download_config: datasets.DownloadConfig | None = None):
    return xopen(file, "rb", download_config=download_config)


def _is_binary(feature: Any) -> bool:
    return isinstance(feature, datasets.Value) and feature.dtype in ("binary", "large_binary")


class MidiParquet(MidiDatasetBuilder):
    """Parquet files whose rows carry MIDI bytes (GigaMIDI, exported corpora)."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = MidiParquetConfig

    def __init__(self, *args: Any, **kwargs: Any):
        path = kwargs.get("path")
        if kwargs.get("data_files") is None:
            if path is None:
                raise ValueError(
                    "midi_parquet: give `path=` (a Hub dataset, a folder, a Parquet file or a "
                    "glob) or `data_files=`"
                )
            kwargs["data_files"] = resolve_parquet_files(
                path,
                kwargs.get("subset"),
                kwargs.get("revision"),
                kwargs.get("cache_dir"),
                kwargs.get("token"),
            )
        kwargs.setdefault("hash", source_hash(type(self)))
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------------ schema

    def _download_config(self) -> datasets.DownloadConfig:
        return datasets.DownloadConfig(token=self.token, storage_options=self.storage_options)

    def _files(self) -> list[str]:
        return [file for files in self.config.data_files.values() for file in files]

    def _source_description(self) -> str:
        return repr(self.config.path) if self.config.path else "the data files"

    def _schema(self) -> pa.Schema:
        files = self._files()
        if not files:
            raise FileNotFoundError(
                f"midi_parquet: no Parquet files in {self._source_description()}"
            )
        try:
            with _open(files[0], self._download_config()) as handle:
                return pq.read_schema(handle)
        except (OSError, pa.ArrowException) as error:
            raise ValueError(
                f"midi_parquet: cannot read the schema of {files[0]} ({error})"
            ) from None

    def _columns(self, features: datasets.Features) -> tuple[str | None, list[str]]:
        """The id column (or None) and the metadata columns kept, checked against the data."""
        config = self.config
        available = list(features)
        if config.midi_column not in features:
            raise ValueError(
                f"midi_parquet: no MIDI column {config.midi_column!r} in "
                f"{self._source_description()}; its columns are {available} (set midi_column=)"
            )
        if not _is_binary(features[config.midi_column]):
            raise ValueError(
                f"midi_parquet: column {config.midi_column!r} holds "
                f"{features[config.midi_column]}, not MIDI bytes (binary)"
            )
        id_column = config.id_column
        if id_column is None and "id" in features and config.midi_column != "id":
            id_column = "id"
        if id_column is not None and id_column not in features:
            raise ValueError(
                f"midi_parquet: no id column {id_column!r}; the columns are {available}"
            )
        if config.metadata_columns is None:
            taken = {config.midi_column, id_column, *BASE_COLUMNS}
            kept = [column for column in available if column not in taken]
        else:
            kept = list(config.metadata_columns)
            missing = [column for column in kept if column not in features]
            if missing:
                raise ValueError(
                    f"midi_parquet: metadata column(s) {missing} not in the data; the columns "
                    f"are {available}"
                )
            clashes = [c for c in kept if c in BASE_COLUMNS or c in (config.midi_column,)]
            if clashes:
                raise ValueError(
                    f"midi_parquet: metadata column(s) {clashes} clash with the MIDI column or "
                    f"midiformers' own columns {list(BASE_COLUMNS)}; leave them out"
                )
        return id_column, kept

    def _info(self) -> datasets.DatasetInfo:
        source = datasets.Features.from_arrow_schema(self._schema())
        self._source_features = source
        _, kept = self._columns(source)
        return datasets.DatasetInfo(
            description=f"MIDI files from the Parquet data in {self._source_description()}",
            features=base_features(**{column: source[column] for column in kept}),
        )

    # ------------------------------------------------------------------ shards

    def _split_generators(self, dl_manager):
        all_files = self._files()
        prefix = _common_prefix(all_files)
        self._names = {file: file[len(prefix) :] for file in all_files}
        generators = []
        for split, files in self.config.data_files.items():
            local = dl_manager.download(list(files))
            for original, downloaded in zip(files, local):
                self._names[downloaded] = self._names[original]
            shards: list[str] = []
            groups: list[tuple[int, ...] | None] = []
            rows = 0
            for file in local:
                file_groups, file_rows = self._row_groups(file)
                shards += [file] * len(file_groups)
                groups += file_groups
                rows += file_rows
            generator = datasets.SplitGenerator(
                name=split, gen_kwargs={"files": shards, "row_groups": groups}
            )
            generator.split_info.num_examples = rows  # the progress bar's total
            generators.append(generator)
        return generators

    def _row_groups(self, file: str) -> tuple[list[tuple[int, ...] | None], int]:
        """One shard per row group of a local file (read from its footer), and its rows; a
        remote or unreadable file is one shard (its problem is reported when it is read)."""
        if not is_local_path(file):
            return [None], 0
        try:
            metadata = pq.ParquetFile(file).metadata
        except (OSError, pa.ArrowException):
            return [None], 0
        groups = [(group,) for group in range(metadata.num_row_groups)]
        return groups or [None], metadata.num_rows

    def _generate_more_gen_kwargs(self, files: list[str], row_groups: list):
        """For ``IterableDataset.reshard()``: a remote file split into its row groups."""
        for file, groups in zip(files, row_groups):
            if groups is not None:
                yield {"files": [file], "row_groups": [groups]}
                continue
            try:
                with _open(file, self._download_config()) as handle:
                    count = pq.ParquetFile(handle).metadata.num_row_groups
            except (OSError, pa.ArrowException):
                count = 0
            if count <= 1:
                yield {"files": [file], "row_groups": [None]}
            for group in range(count if count > 1 else 0):
                yield {"files": [file], "row_groups": [(group,)]}

    # ------------------------------------------------------------------ examples

    def _generate_examples(self, files: list[str], row_groups: list):
        source = getattr(self, "_source_features", None)
        if source is None:
            source = datasets.Features.from_arrow_schema(self._schema())
        id_column, kept = self._columns(source)
        wanted = [self.config.midi_column, *([id_column] if id_column else []), *kept]
        wanted = list(dict.fromkeys(wanted))
        for file, groups in zip(files, row_groups):
            name = getattr(self, "_names", {}).get(file, posixpath.basename(file))
            try:
                with _open(file, self._download_config()) as handle:
                    yield from self._file_examples(handle, name, groups, wanted, id_column, kept)
            except (OSError, pa.ArrowException) as error:
                reason = f"cannot be read as Parquet ({type(error).__name__}: {error})"
                self._record_skip(name, reason, "unreadable")

    def _file_examples(self, handle, name, groups, wanted, id_column, kept):
        parquet = pq.ParquetFile(handle)
        missing = [column for column in wanted if column not in parquet.schema_arrow.names]
        if missing:
            self._record_skip(name, f"lacks the column(s) {missing}", "invalid data")
            return
        metadata = parquet.metadata
        starts = [0]
        for group in range(metadata.num_row_groups):
            starts.append(starts[-1] + metadata.row_group(group).num_rows)
        for group in groups if groups is not None else range(metadata.num_row_groups):
            row = starts[group]
            batches = parquet.iter_batches(
                batch_size=self.config.batch_size, row_groups=[group], columns=wanted
            )
            for batch in batches:
                for record in batch.to_pylist():
                    example = self._row_example(record, f"{name}#{row}", id_column, kept)
                    row += 1
                    if example is not None:
                        yield example["id"], example

    def _row_example(
        self, record: dict, where: str, id_column: str | None, kept: list[str]
    ) -> dict | None:
        identifier = record.get(id_column) if id_column else None
        example_id = str(identifier) if identifier is not None else where
        source_name = f"{where} ({id_column} {identifier})" if identifier is not None else where
        data = record[self.config.midi_column]
        if data is None:
            self._record_skip(source_name, "no MIDI bytes (the value is null)", "empty")
            return None
        return self._make_example(
            example_id,
            bytes(data),
            source_name=source_name,
            **{column: record[column] for column in kept},
        )


def _common_prefix(files: list[str]) -> str:
    """The folder part shared by all files (so that names stay short and distinct)."""
    if not files:
        return ""
    prefix = os.path.commonprefix([posixpath.dirname(f) + "/" for f in files])
    return prefix[: prefix.rfind("/") + 1]
