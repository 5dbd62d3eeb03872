"""Pretokenize once, train many times: a corpus as token-id Parquet shards.

Tokenizing MIDI costs far more than training a small model reads: on a large corpus it is
worth doing once. :func:`pretokenize` writes each piece's token ids (with BOS / EOS) and its
``id`` / label columns to ``OUTPUT/data/<split>-XXXXX-of-YYYYY.parquet`` (the Hub layout), in
parallel (``num_proc``), with a progress bar. Every shard is written under a temporary name
and renamed when complete, so an interrupted run (Ctrl-C, a killed job) resumes where it
stopped without redoing finished shards. ``OUTPUT/pretokenized.json`` (the manifest) records
the tokenizer's fingerprint (a hash of its saved configuration and vocabulary), the plan
(shards per split) and, once done, the counts.

:func:`load_pretokenized` gives the shards back with the columns :func:`tokenize_dataset`
returns (packed blocks with ``labels``, or pieces / windows with ``attention_mask``), as a
memory-mapped ``Dataset`` or a streamed ``IterableDataset`` (one shard per file); the
context length and mode are chosen at load time. A tokenizer whose fingerprint differs from
the manifest's is refused: its ids would mean other tokens.

Command line: ``midiformers-pretokenize CORPUS OUTPUT_DIR [--tokenizer FOLDER_OR_PRESET]``.
"""

from __future__ import annotations

import argparse
import ast
import glob
import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.utils import tqdm as hf_tqdm

from ._common import frozen_heap
from .processing import (
    Mode,
    PitchTranspose,
    _check_mode,
    _column_names,
    _encode_batch,
    _special_ids,
    apply_transform,
    default_keep_columns,
    encoded_features,
    shape_token_split,
)

logger = logging.getLogger(__name__)

MANIFEST_NAME = "pretokenized.json"
FORMAT = "midiformers-pretokenized"
FORMAT_VERSION = 1
DATA_DIR = "data"
TOKENIZER_DIR = "tokenizer"
TEMP_PREFIX = ".tmp-"
ROWS_PER_GROUP = 200  # pieces buffered before a row group is written (bounds memory)
MAX_DROPPED_NAMES = 100
_METADATA_KEY = b"midiformers"
_VERSION_KEYS = ("miditok_version", "symusic_version", "hf_tokenizers_version")

AnyDataset = datasets.Dataset | datasets.IterableDataset


class TokenizerMismatchError(ValueError):
    """Pretokenized data read (or resumed) with a tokenizer other than the one that made it."""


class PretokenizedFolderError(ValueError):
    """A folder that is not (or not yet completely) a pretokenized corpus, or that holds a
    different pretokenization than the one asked for."""


# ----------------------------------------------------------------------------- fingerprint


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of what decides a tokenizer's ids: its saved miditok state (configuration,
    vocabulary, BPE model) without version numbers, its full vocabulary with added tokens,
    its special tokens and its input limits. Equal for a tokenizer and its saved copy."""
    state: dict[str, Any] = {
        "class": type(tokenizer).__name__,
        "vocab": sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]),
        "special": {
            name: getattr(tokenizer, name, None)
            for name in ("bos_token_id", "eos_token_id", "pad_token_id")
        },
        "limits": [
            getattr(tokenizer, "max_file_size", None),
            getattr(tokenizer, "max_quarters", None),
        ],
    }
    miditok = getattr(tokenizer, "miditok", None)
    if miditok is not None:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "miditok.json")
            miditok.save(path)
            with open(path, encoding="utf-8") as handle:
                saved = json.load(handle)
        state["miditok"] = {k: v for k, v in saved.items() if k not in _VERSION_KEYS}
    text = json.dumps(state, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _tokenizer_record(tokenizer: Any) -> dict[str, Any]:
    return {
        "fingerprint": tokenizer_fingerprint(tokenizer),
        "class": type(tokenizer).__name__,
        "preset": getattr(tokenizer, "preset", None),
        "vocab_size": len(tokenizer),
    }


def check_tokenizer(
    manifest: dict[str, Any], tokenizer: Any, where: str, resuming: bool = False
) -> None:
    """Refuse ``tokenizer`` unless it is the one the manifest was made with.

    Raises:
        TokenizerMismatchError: the fingerprints differ; the message says how.
    """
    expected = manifest["tokenizer"]
    actual = _tokenizer_record(tokenizer)
    if actual["fingerprint"] != expected["fingerprint"]:
        raise TokenizerMismatchError(
            f"{where} was tokenized with another tokenizer: fingerprint "
            f"{expected['fingerprint']} ({expected['class']}, preset {expected['preset']!r}, "
            f"{expected['vocab_size']} tokens), this one is {actual['fingerprint']} "
            f"({actual['class']}, preset {actual['preset']!r}, {actual['vocab_size']} tokens). "
            f"Its ids would mean other tokens: use the tokenizer saved in "
            f"{os.path.join(where, TOKENIZER_DIR)}, or "
            + (
                "pass overwrite=True (--overwrite) to start again."
                if resuming
                else "pretokenize again with this one."
            )
        )


# ----------------------------------------------------------------------------- writing


@dataclass
class _Plan:
    """What one split becomes: ``num_shards`` output files."""

    split: str
    num_shards: int
    source_shards: int | None = None
    files: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.files = [
            f"{DATA_DIR}/{self.split}-{index:05d}-of-{self.num_shards:05d}.parquet"
            for index in range(self.num_shards)
        ]


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a pretokenized folder.

    Raises:
        PretokenizedFolderError: the folder holds no (readable) manifest.
    """
    file = os.path.join(os.fspath(path), MANIFEST_NAME)
    try:
        with open(file, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        raise PretokenizedFolderError(
            f"{path} is not a pretokenized corpus (no {MANIFEST_NAME}); make one with "
            "`midiformers-pretokenize` or pretokenize()"
        ) from None
    except (OSError, json.JSONDecodeError) as error:
        raise PretokenizedFolderError(f"{file} cannot be read ({error})") from None
    if manifest.get("format") != FORMAT:
        raise PretokenizedFolderError(f"{file} is not a {FORMAT} manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise PretokenizedFolderError(
            f"{file} has format version {manifest['format_version']}; this midiformers reads "
            f"up to {FORMAT_VERSION}: upgrade midiformers"
        )
    return manifest


def _write_json(path: str, content: dict[str, Any]) -> None:
    temporary = os.path.join(os.path.dirname(path), f"{TEMP_PREFIX}{os.getpid()}-manifest")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    os.replace(temporary, path)


def _as_dict(dataset: Any) -> dict[str, AnyDataset]:
    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return dict(dataset)
    if isinstance(dataset, (datasets.Dataset, datasets.IterableDataset)):
        return {str(dataset.split or "train"): dataset}
    raise TypeError(
        "pretokenize expects a Dataset, DatasetDict, IterableDataset or IterableDatasetDict "
        f"(e.g. from load_midi_dataset), got {type(dataset).__name__}"
    )


def _source_record(part: AnyDataset) -> dict[str, Any]:
    if isinstance(part, datasets.Dataset):
        return {"kind": "dataset", "fingerprint": part._fingerprint, "num_rows": len(part)}
    info = part.info
    return {
        "kind": "stream",
        "fingerprint": None,
        "builder": info.builder_name,
        "config": info.config_name,
        "num_shards": part.num_shards,
    }


def _default_num_shards(part: AnyDataset, shard_size: int, num_proc: int | None) -> int:
    """One output shard per ``shard_size`` pieces (a built dataset) or source shards (a
    stream), and at least one per process."""
    units = len(part) if isinstance(part, datasets.Dataset) else part.num_shards
    return max(1, min(units, max(math.ceil(units / shard_size), num_proc or 1)))


def pretokenize(
    dataset: datasets.DatasetDict
    | datasets.Dataset
    | datasets.IterableDatasetDict
    | datasets.IterableDataset,
    tokenizer: Any,
    output_dir: str | os.PathLike,
    *,
    num_shards: int | None = None,
    shard_size: int = 1000,
    num_proc: int | None = None,
    add_special_tokens: bool = True,
    keep_columns: Sequence[str] | None = None,
    midi_column: str = "midi",
    batch_size: int = 64,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Tokenize a MIDI corpus into token-id Parquet shards under ``output_dir``.

    Args:
        dataset: a built or streamed corpus (from :func:`load_midi_dataset`) with a ``midi``
            column; every split is written.
        tokenizer: a :class:`~midiformers.tokenization.MidiTokenizer`; saved to
            ``output_dir/tokenizer`` and fingerprinted in the manifest.
        output_dir: the folder to write (or to resume).
        num_shards: output shards per split. By default one per ``shard_size`` pieces (a
            built dataset) or per ``shard_size`` source shards (a stream, whose shards are
            files or row groups), and at least ``num_proc``. A resumed run keeps the plan it
            started with.
        shard_size: see ``num_shards``.
        num_proc: processes tokenizing shards in parallel.
        add_special_tokens: BOS and EOS around each piece (as :func:`tokenize_dataset`).
        keep_columns: columns stored beside the ids (default: ``id`` and label columns).
        midi_column: the column holding the MIDI bytes.
        batch_size: pieces tokenized per batch.
        overwrite: start again even if ``output_dir`` holds another pretokenization.

    Returns:
        The manifest (also written to ``output_dir/pretokenized.json``).

    Raises:
        TokenizerMismatchError: resuming a folder made with another tokenizer.
        PretokenizedFolderError: ``output_dir`` holds a different pretokenization (other
            splits, shard counts, source or options); pass ``overwrite=True`` or another folder.
    """
    output = os.fspath(output_dir)
    splits = _as_dict(dataset)
    first = next(iter(splits.values()))
    columns = _column_names(first)
    if midi_column not in columns:
        raise ValueError(f"the dataset has no {midi_column!r} column (columns: {columns})")
    keep = list(keep_columns) if keep_columns is not None else default_keep_columns(columns)
    missing = [c for c in keep if c not in columns]
    if missing:
        raise ValueError(f"keep_columns {missing} are not columns of the dataset ({columns})")
    features = encoded_features(first.features, keep)
    previous = _previous_manifest(output, overwrite)
    plans = {}
    for split, part in splits.items():
        count = num_shards
        if count is None and previous and split in previous.get("splits", {}):
            count = previous["splits"][split]["num_shards"]
        count = count or _default_num_shards(part, shard_size, num_proc)
        if isinstance(part, datasets.IterableDataset) and count > part.num_shards:
            raise ValueError(
                f"num_shards={count} for split {split!r}: a stream can be cut into at most its "
                f"{part.num_shards} source shard(s)"
            )
        plans[split] = _Plan(split, count)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tokenizer": _tokenizer_record(tokenizer),
        "add_special_tokens": add_special_tokens,
        "midi_column": midi_column,
        "keep_columns": keep,
        "features": features.to_dict(),
        "sources": {split: _source_record(part) for split, part in splits.items()},
        "splits": {
            split: {"num_shards": plan.num_shards, "files": plan.files}
            for split, plan in plans.items()
        },
        "complete": False,
    }
    if previous is not None:
        _check_resumable(previous, manifest, tokenizer, output)
    os.makedirs(os.path.join(output, DATA_DIR), exist_ok=True)
    _remove_temporary_files(output)
    _write_json(os.path.join(output, MANIFEST_NAME), manifest)
    tokenizer.save_pretrained(os.path.join(output, TOKENIZER_DIR))
    tasks = [
        (split, index)
        for split, plan in plans.items()
        for index, file in enumerate(plan.files)
        if not os.path.exists(os.path.join(output, file))
    ]
    done = sum(plan.num_shards for plan in plans.values()) - len(tasks)
    if done:
        logger.info("%s: resuming, %d shard(s) already written are kept", output, done)
    options = _ShardOptions(
        output=output,
        tokenizer=tokenizer,
        features=features,
        keep=keep,
        add_special_tokens=add_special_tokens,
        midi_column=midi_column,
        batch_size=batch_size,
        num_shards={split: plan.num_shards for split, plan in plans.items()},
        files={split: plan.files for split, plan in plans.items()},
    )
    _run_tasks(tasks, splits, options, num_proc, total=done + len(tasks), done=done)
    return _finish(output, manifest, plans)


def _previous_manifest(output: str, overwrite: bool) -> dict[str, Any] | None:
    if not os.path.exists(os.path.join(output, MANIFEST_NAME)):
        if os.path.isdir(output) and os.listdir(output) and not overwrite:
            raise PretokenizedFolderError(
                f"{output} exists and is not a pretokenized corpus; choose an empty or new "
                "folder (or overwrite=True)"
            )
        return None
    if overwrite:
        data = os.path.join(output, DATA_DIR)
        for name in os.listdir(data) if os.path.isdir(data) else []:
            os.remove(os.path.join(data, name))
        return None
    return read_manifest(output)


def _check_resumable(
    previous: dict[str, Any], manifest: dict[str, Any], tokenizer: Any, output: str
) -> None:
    check_tokenizer(previous, tokenizer, output, resuming=True)
    again = "pass overwrite=True (--overwrite) to start again, or choose another folder"
    plan = {split: info["num_shards"] for split, info in manifest["splits"].items()}
    before_plan = {split: info["num_shards"] for split, info in previous["splits"].items()}
    compared = [
        ("splits and shards per split", before_plan, plan),
        *[(key.replace("_", " "), previous.get(key), manifest[key]) for key in _OPTION_KEYS],
    ]
    for what, before, now in compared:
        if before != now:
            raise PretokenizedFolderError(
                f"{output} holds a pretokenization with other {what} ({before!r} there, "
                f"{now!r} now); {again}"
            )
    for split, source in manifest["sources"].items():
        before = previous.get("sources", {}).get(split, {})
        if before.get("fingerprint") != source.get("fingerprint"):
            raise PretokenizedFolderError(
                f"{output}: its {split} split was made from another dataset (fingerprint "
                f"{before.get('fingerprint')} there, {source.get('fingerprint')} now); {again}"
            )


_OPTION_KEYS = ("add_special_tokens", "midi_column", "keep_columns", "features")


def _remove_temporary_files(output: str) -> None:
    """Shards an interrupted run was writing: never complete, so never kept."""
    for path in glob.glob(os.path.join(output, DATA_DIR, TEMP_PREFIX + "*")):
        os.remove(path)


@dataclass
class _ShardOptions:
    output: str
    tokenizer: Any
    features: datasets.Features
    keep: list[str]
    add_special_tokens: bool
    midi_column: str
    batch_size: int
    num_shards: dict[str, int]
    files: dict[str, list[str]]


_WORKER: dict[str, Any] = {}


def _init_worker(splits: dict[str, AnyDataset], options: _ShardOptions) -> None:
    _WORKER["splits"] = splits
    _WORKER["options"] = options


def _worker_shard(task: tuple[str, int]) -> tuple[str, int, dict[str, Any]]:
    split, index = task
    return split, index, _write_shard(_WORKER["splits"][split], split, index, _WORKER["options"])


def _run_tasks(
    tasks: list[tuple[str, int]],
    splits: dict[str, AnyDataset],
    options: _ShardOptions,
    num_proc: int | None,
    total: int,
    done: int,
) -> None:
    progress = hf_tqdm(total=total, initial=done, unit=" shards", desc="Pretokenizing")
    counts = {"pieces": 0, "tokens": 0}

    def advance(stats: dict[str, Any]) -> None:
        counts["pieces"] += stats["examples"]
        counts["tokens"] += stats["tokens"]
        progress.set_postfix(counts, refresh=False)
        progress.update(1)

    with progress:
        if not num_proc or num_proc <= 1 or len(tasks) <= 1:
            for split, index in tasks:
                advance(_write_shard(splits[split], split, index, options))
            return
        from multiprocess import Pool

        with (
            frozen_heap(num_proc),
            Pool(min(num_proc, len(tasks)), _init_worker, (splits, options)) as pool,
        ):
            for _split, _index, stats in pool.imap_unordered(_worker_shard, tasks):
                advance(stats)


def _shard_of(part: AnyDataset, num_shards: int, index: int) -> AnyDataset:
    if isinstance(part, datasets.Dataset):
        return part.shard(num_shards, index, contiguous=True)
    return part.shard(num_shards, index)


def _write_shard(part: AnyDataset, split: str, index: int, options: _ShardOptions) -> dict:
    """Tokenize shard ``index`` of ``split`` into its Parquet file (temporary name, then
    renamed: a file under the final name is always complete)."""
    final = os.path.join(options.output, options.files[split][index])
    temporary = os.path.join(
        os.path.dirname(final), f"{TEMP_PREFIX}{os.getpid()}-{os.path.basename(final)}"
    )
    shard = _shard_of(part, options.num_shards[split], index)
    schema = options.features.arrow_schema
    stats: dict[str, Any] = {"pieces": 0, "examples": 0, "tokens": 0, "dropped": 0}
    dropped: list[dict[str, str]] = []
    buffer: dict[str, list] = {name: [] for name in options.features}
    columns = [options.midi_column, *options.keep]
    if "id" not in columns and "id" in (shard.column_names or []):
        columns.append("id")  # names dropped pieces
    with pq.ParquetWriter(temporary, schema) as writer:
        for batch in shard.select_columns(columns).iter(batch_size=options.batch_size):
            stats["pieces"] += len(batch[options.midi_column])
            encoded = _encode_batch(
                batch,
                options.tokenizer,
                options.add_special_tokens,
                options.midi_column,
                options.keep,
                dropped,
            )
            for name in buffer:
                buffer[name].extend(encoded[name])
            stats["examples"] += len(encoded["input_ids"])
            stats["tokens"] += sum(len(ids) for ids in encoded["input_ids"])
            if len(buffer["input_ids"]) >= ROWS_PER_GROUP:
                writer.write_table(_table(buffer, options.features, schema))
                buffer = {name: [] for name in options.features}
        if buffer["input_ids"] or not stats["examples"]:
            writer.write_table(_table(buffer, options.features, schema))
        stats["dropped"] = len(dropped)
        stats["dropped_names"] = dropped[:MAX_DROPPED_NAMES]
        writer.add_key_value_metadata({_METADATA_KEY: json.dumps(stats).encode()})
    os.replace(temporary, final)
    return stats


def _table(buffer: dict[str, list], features: datasets.Features, schema: pa.Schema) -> pa.Table:
    others = datasets.Features({k: v for k, v in features.items() if k != "input_ids"})
    encoded = others.encode_batch({k: v for k, v in buffer.items() if k != "input_ids"})
    encoded["input_ids"] = buffer["input_ids"]
    return pa.Table.from_pydict(encoded, schema=schema)


def shard_stats(path: str) -> dict[str, Any]:
    """The counts a finished shard carries in its Parquet metadata."""
    metadata = pq.read_metadata(path).metadata or {}
    return json.loads(metadata.get(_METADATA_KEY, b"{}"))


def _finish(output: str, manifest: dict[str, Any], plans: dict[str, _Plan]) -> dict[str, Any]:
    for split, plan in plans.items():
        totals = {"pieces": 0, "examples": 0, "tokens": 0, "dropped": 0}
        names: list[dict[str, str]] = []
        for file in plan.files:
            stats = shard_stats(os.path.join(output, file))
            for key in totals:
                totals[key] += stats.get(key, 0)
            names += stats.get("dropped_names", [])
        manifest["splits"][split].update(
            num_pieces=totals["pieces"],
            num_examples=totals["examples"],
            num_tokens=totals["tokens"],
            num_dropped=totals["dropped"],
            dropped=names[:MAX_DROPPED_NAMES],
        )
        if totals["dropped"]:
            logger.warning(
                "Pretokenized %s: %d of %d pieces could not be tokenized and were dropped: %s",
                split,
                totals["dropped"],
                totals["pieces"],
                ", ".join(item["name"] for item in names[:5]),
            )
        logger.info(
            "Pretokenized %s: %d pieces, %d tokens in %d shard(s)",
            split,
            totals["examples"],
            totals["tokens"],
            plan.num_shards,
        )
    manifest["complete"] = True
    _write_json(os.path.join(output, MANIFEST_NAME), manifest)
    return manifest


# ----------------------------------------------------------------------------- reading


def load_pretokenized(
    path: str | os.PathLike,
    tokenizer: Any,
    max_length: int,
    *,
    mode: Mode = "pack",
    split: str | None = None,
    streaming: bool = False,
    transpose_semitones: int = 0,
    augment_splits: Sequence[str] = ("train",),
    seed: int | None = None,
    batch_size: int = 64,
    cache_dir: str | None = None,
) -> (
    datasets.DatasetDict
    | datasets.Dataset
    | datasets.IterableDatasetDict
    | datasets.IterableDataset
):
    """Read a folder written by :func:`pretokenize` as :func:`tokenize_dataset` would have
    returned the corpus: ``mode``, ``max_length`` and the transposition are chosen here.

    Args:
        path: the folder given to :func:`pretokenize`.
        tokenizer: the tokenizer that will read the ids (checked against the manifest;
            ``AutoTokenizer.from_pretrained(path + "/tokenizer")`` is the one that made them).
        max_length, mode, transpose_semitones, augment_splits, seed, batch_size: as for
            :func:`tokenize_dataset`.
        split: return only this split.
        streaming: an ``IterableDataset`` reading the shards as it goes (one shard per file,
            so DataLoader workers and ``split_dataset_by_node`` read different files)
            instead of a memory-mapped ``Dataset``.
        cache_dir: where ``datasets`` keeps the Arrow copy (non-streaming).

    Raises:
        TokenizerMismatchError: ``tokenizer`` is not the one the shards were made with.
        PretokenizedFolderError: not a pretokenized folder, an unfinished one, or no such split.
    """
    folder = os.fspath(path)
    manifest = read_manifest(folder)
    check_tokenizer(manifest, tokenizer, folder)
    _check_mode(mode, max_length, manifest["add_special_tokens"])
    splits = manifest["splits"]
    if split is not None and split not in splits:
        raise PretokenizedFolderError(f"{folder} has no split {split!r}; it has {sorted(splits)}")
    wanted = [split] if split is not None else list(splits)
    for name in wanted:
        missing = [f for f in splits[name]["files"] if not os.path.exists(os.path.join(folder, f))]
        if missing or not manifest.get("complete"):
            raise PretokenizedFolderError(
                f"{folder}: the pretokenization is unfinished ({len(missing)} of "
                f"{splits[name]['num_shards']} {name} shard(s) missing); run pretokenize (or "
                "midiformers-pretokenize) again with the same arguments to finish it"
            )
    features = datasets.Features.from_dict(manifest["features"])
    data_files = {name: [os.path.join(folder, f) for f in splits[name]["files"]] for name in wanted}
    loaded = datasets.load_dataset(
        "parquet",
        data_files=data_files,
        features=features,
        streaming=streaming,
        cache_dir=cache_dir,
    )
    transform = None
    if transpose_semitones:
        transform = PitchTranspose(tokenizer, transpose_semitones, seed=seed)
    keep = [] if mode == "pack" else list(manifest["keep_columns"])
    eos = _special_ids(tokenizer, manifest["add_special_tokens"])[1]
    result = {}
    for name, part in loaded.items():
        shaped = shape_token_split(
            part,
            max_length,
            mode=mode,
            eos=eos,
            keep=keep,
            batch_size=batch_size,
            split=name,
            tokenizer=tokenizer,
        )
        chosen = transform if name in augment_splits else None
        result[name] = apply_transform(shaped, chosen, batch_size)
    if split is not None:
        return result[split]
    kind = datasets.IterableDatasetDict if streaming else datasets.DatasetDict
    return kind(result)


# ----------------------------------------------------------------------------- command line


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _corpus_arguments(corpus: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A corpus name, or a path: a folder of MIDI files (``midi_folder``) or Parquet data
    (``midi_parquet``: a ``.parquet`` file, a glob, or a folder holding Parquet files)."""
    from . import BUILDERS

    if corpus in BUILDERS:
        return corpus, options
    expanded = os.path.expanduser(corpus)
    parquet = expanded.endswith(".parquet") or (
        os.path.isdir(expanded)
        and (
            glob.glob(os.path.join(expanded, "*.parquet"))
            or glob.glob(os.path.join(expanded, "*", "*.parquet"))
        )
    )
    if parquet:
        return "midi_parquet", {"path": corpus, **options}
    if os.path.exists(expanded) or glob.has_magic(expanded):
        return "midi_folder", {"path": corpus, **options}
    raise SystemExit(
        f"midiformers-pretokenize: {corpus!r} is neither a corpus name ({', '.join(BUILDERS)}) "
        "nor an existing folder or file"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="midiformers-pretokenize",
        description="Tokenize a MIDI corpus once into token-id Parquet shards (resumable).",
    )
    parser.add_argument(
        "corpus",
        metavar="CORPUS",
        help="a corpus name (bach_chorales, midi_folder, ...), a folder of MIDI files, or "
        "Parquet data with a MIDI column",
    )
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="the folder to write or resume")
    parser.add_argument(
        "--tokenizer",
        default="remi",
        help="a saved tokenizer folder (e.g. a trained model's) or a preset name (default remi)",
    )
    parser.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a corpus option, e.g. -o max_pieces=8 or -o midi_column=music (repeatable)",
    )
    parser.add_argument("--split", action="append", help="only this split (repeatable)")
    parser.add_argument("--num-proc", type=int, default=None, help="parallel processes")
    parser.add_argument("--num-shards", type=int, default=None, help="output shards per split")
    parser.add_argument("--shard-size", type=int, default=1000, help="pieces per output shard")
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="read the corpus as a stream instead of building it first",
    )
    parser.add_argument("--cache-dir", default=None, help="datasets cache for the corpus build")
    parser.add_argument(
        "--overwrite", action="store_true", help="start again if OUTPUT_DIR holds another run"
    )
    return parser


def _load_tokenizer(spec: str) -> Any:
    from ..tokenization import PRESETS, MidiTokenizer

    if os.path.isdir(os.path.expanduser(spec)):
        return MidiTokenizer.from_pretrained(os.path.expanduser(spec))
    if spec in PRESETS:
        return MidiTokenizer(preset=spec)
    raise SystemExit(
        f"midiformers-pretokenize: --tokenizer {spec!r} is neither a folder nor a preset "
        f"({', '.join(PRESETS)})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``midiformers-pretokenize`` console script."""
    from . import load_midi_dataset

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"midiformers-pretokenize: --option {item!r} is not KEY=VALUE")
        options[key.strip()] = _value(value)
    name, options = _corpus_arguments(args.corpus, options)
    tokenizer = _load_tokenizer(args.tokenizer)
    try:
        corpus = load_midi_dataset(
            name,
            cache_dir=args.cache_dir,
            num_proc=args.num_proc,
            streaming=args.streaming,
            **options,
        )
        if args.split:
            unknown = sorted(set(args.split) - set(corpus))
            if unknown:
                raise SystemExit(
                    f"midiformers-pretokenize: no split {unknown}; the corpus has {sorted(corpus)}"
                )
            corpus = type(corpus)({split: corpus[split] for split in args.split})
        manifest = pretokenize(
            corpus,
            tokenizer,
            args.output_dir,
            num_shards=args.num_shards,
            shard_size=args.shard_size,
            num_proc=args.num_proc,
            overwrite=args.overwrite,
        )
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"midiformers-pretokenize: {error}") from None
    for split, info in manifest["splits"].items():
        logger.info(
            "%s: %d pieces, %d tokens, %d shard(s)",
            split,
            info["num_examples"],
            info["num_tokens"],
            info["num_shards"],
        )
    logger.info("Wrote %s", os.path.join(args.output_dir, MANIFEST_NAME))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
