"""MIDI corpora as ``datasets`` builders, and their processing into model inputs.

``datasets`` 5.x has no loading scripts: each corpus is a ``GeneratorBasedBuilder``
subclass in this package, and :func:`load_midi_dataset` is the one-line entry point::

    from midiformers.data_scripts import load_midi_dataset, tokenize_dataset

    ds = load_midi_dataset("bach_chorales")  # offline, cached after the first build
    lm = tokenize_dataset(ds, tokenizer, max_length=512, transpose_semitones=5)

Corpora: ``jsb_chorales``, ``pop909``, ``maestro`` (downloaded, checksum-verified),
``bach_chorales``, ``music21_composers`` (offline, from music21's corpus) and
``midi_folder`` (your own files) and ``midi_parquet`` (Parquet datasets with a column of MIDI
bytes, from the Hub or disk, e.g. GigaMIDI). Every example has ``id``, ``midi`` (the file's bytes),
``num_notes``, ``duration_seconds`` and corpus metadata (``composer`` where known).

Every file goes through :func:`~midiformers.tokenization.load_score` before it becomes an
example; unusable ones are skipped, summarised once per build in the log, and listed by
``get_builder(...).skipped_files()`` / ``.skipped_by_category()`` after the build.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import datasets

from ._common import (
    ChecksumError,
    MidiDatasetBuilder,
    NoUsableFilesError,
    read_skipped,
    summarize_skipped,
)
from ._streaming import StreamSkips, stream_skips
from .bach_chorales import BachChorales, BachChoralesConfig
from .export import save_as_parquet
from .jsb_chorales import JsbChorales, JsbChoralesConfig
from .maestro import Maestro, MaestroConfig
from .midi_folder import MidiFolder, MidiFolderConfig
from .midi_parquet import MidiParquet, MidiParquetConfig
from .music21_composers import Music21Composers, Music21ComposersConfig
from .pop909 import Pop909, Pop909Config
from .pretokenization import (
    PretokenizedFolderError,
    TokenizerMismatchError,
    load_pretokenized,
    pretokenize,
    tokenizer_fingerprint,
)
from .processing import PitchTranspose, tokenize_dataset

logger = logging.getLogger(__name__)

BUILDERS: dict[str, type[MidiDatasetBuilder]] = {
    "bach_chorales": BachChorales,
    "jsb_chorales": JsbChorales,
    "maestro": Maestro,
    "midi_folder": MidiFolder,
    "midi_parquet": MidiParquet,
    "music21_composers": Music21Composers,
    "pop909": Pop909,
}

__all__ = [
    "BUILDERS",
    "BachChorales",
    "BachChoralesConfig",
    "ChecksumError",
    "JsbChorales",
    "JsbChoralesConfig",
    "Maestro",
    "MaestroConfig",
    "MidiDatasetBuilder",
    "MidiFolder",
    "MidiFolderConfig",
    "MidiParquet",
    "MidiParquetConfig",
    "NoUsableFilesError",
    "Music21Composers",
    "Music21ComposersConfig",
    "PitchTranspose",
    "PretokenizedFolderError",
    "TokenizerMismatchError",
    "Pop909",
    "Pop909Config",
    "get_builder",
    "load_midi_dataset",
    "load_pretokenized",
    "pretokenize",
    "StreamSkips",
    "save_as_parquet",
    "stream_skips",
    "tokenize_dataset",
    "tokenizer_fingerprint",
]


def get_builder(
    name: str, cache_dir: str | None = None, data_dir: str | None = None, **config: Any
) -> MidiDatasetBuilder:
    """Instantiate the builder of corpus ``name`` with config options ``config``.

    Raises:
        ValueError: unknown corpus or option; the message lists the valid ones.
    """
    if name not in BUILDERS:
        raise ValueError(f"Unknown MIDI corpus {name!r}; choose from {sorted(BUILDERS)}")
    builder_class = BUILDERS[name]
    fields = {field.name for field in dataclasses.fields(builder_class.BUILDER_CONFIG_CLASS)}
    options = fields - {"name", "version", "data_dir", "data_files", "description"}
    if name == "midi_parquet":
        options.add("data_files")  # as in datasets.load_dataset("parquet", data_files=...)
    unknown = sorted(set(config) - options)
    if unknown:
        raise ValueError(
            f"{name}: unknown option(s) {unknown}; valid options are {sorted(options)}"
        )
    for key, value in config.items():  # lists would make the cache id unhashable
        if isinstance(value, list):
            config[key] = tuple(value)
    return builder_class(cache_dir=cache_dir, data_dir=data_dir, **config)


def load_midi_dataset(
    name: str,
    *,
    cache_dir: str | None = None,
    data_dir: str | None = None,
    split: str | None = None,
    num_proc: int | None = None,
    download_mode: datasets.DownloadMode | str | None = None,
    streaming: bool = False,
    **config: Any,
) -> (
    datasets.DatasetDict
    | datasets.Dataset
    | datasets.IterableDatasetDict
    | datasets.IterableDataset
):
    """Build (or load from the cache) a MIDI corpus as a ``DatasetDict``, or stream it.

    Args:
        name: one of :data:`BUILDERS` (``"bach_chorales"``, ``"jsb_chorales"``, ``"pop909"``,
            ``"maestro"``, ``"music21_composers"``, ``"midi_folder"``, ``"midi_parquet"``).
        cache_dir: where ``datasets`` caches downloads and builds (default: its own cache).
        data_dir: a folder holding the already downloaded corpus (or, for ``midi_folder``,
            the MIDI files).
        split: return only this split (a ``Dataset``).
        num_proc: processes used to build the splits (the conversions are CPU-bound).
        download_mode: ``"force_redownload"`` rebuilds a cached corpus.
        streaming: read the sources as they are iterated instead of building: an
            ``IterableDatasetDict`` (an ``IterableDataset`` with ``split=``) with the same
            columns and examples as the build, one shard per source file (see
            :meth:`MidiDatasetBuilder.as_streaming_dataset`); ``num_proc`` is unused.
        config: options of the corpus' config class (e.g. ``max_pieces=8`` for
            ``bach_chorales``, ``top_n_composers=12`` for ``maestro``).
    """
    builder = get_builder(name, cache_dir=cache_dir, data_dir=data_dir, **config)
    if streaming:
        return builder.as_streaming_dataset(split=split)
    builder.download_and_prepare(download_mode=download_mode, num_proc=num_proc)
    dataset = builder.as_dataset(split=split)
    skipped = read_skipped(builder.cache_dir)
    counts = ", ".join(
        f"{split} {info.num_examples}" for split, info in builder.info.splits.items()
    )
    logger.info(
        "Loaded %s (%s): %s pieces; %s",
        name,
        builder.cache_dir,
        counts,
        summarize_skipped(skipped) if skipped else "no source file skipped",
    )
    return dataset
