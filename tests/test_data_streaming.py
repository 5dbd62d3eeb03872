"""Streaming corpora: the same examples as the build, real shards (one source file each) for
DataLoader workers and distributed processes, a shuffle buffer, bad files counted as read."""

from __future__ import annotations

import csv
import io
import logging
import os
import pickle
import random
import zipfile
from pathlib import Path

import datasets
import pytest
import torch
from datasets.distributed import split_dataset_by_node
from synthetic_midi import make_corpus, write_midi_parquet

from midiformers.data_scripts import (
    get_builder,
    load_midi_dataset,
    stream_skips,
    tokenize_dataset,
)
from midiformers.data_scripts import maestro as maestro_module
from midiformers.data_scripts import midi_folder as midi_folder_module
from midiformers.data_scripts import pop909 as pop909_module


@pytest.fixture(scope="session")
def generated_folder(tmp_path_factory, valid_midi_paths, broken_midi_paths) -> Path:
    """240 distinct generated MIDI files in 5 sub-folders, plus two broken files."""
    folder = tmp_path_factory.mktemp("generated")
    make_corpus(folder, valid_midi_paths, 240)
    (folder / "000" / "zz_truncated.mid").write_bytes(broken_midi_paths[-1].read_bytes())
    (folder / "001" / "zz_empty.mid").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("streaming-cache"))


# ----------------------------------------------------------------------------- small sources


def _jsb_pickle(folder: Path) -> Path:
    rng = random.Random(0)
    chorales = {
        split: [
            [sorted(rng.sample(range(48, 80), 4)) for _ in range(rng.randint(8, 16))]
            for _ in range(count)
        ]
        for split, count in (("train", 4), ("valid", 2), ("test", 2))
    }
    chorales["test"][1][3] = [60, 200]  # a pitch outside MIDI: skipped and named
    path = folder / "JSB Chorales.pickle"
    path.write_bytes(pickle.dumps(chorales, protocol=2))
    return path


def _pop909_zip(folder: Path, valid: list[Path], broken: list[Path]) -> Path:
    root = f"POP909-Dataset-{pop909_module.COMMIT}/POP909/"
    path = folder / pop909_module.FILE_NAME
    with zipfile.ZipFile(path, "w") as archive:
        for number in range(1, 11):
            song = f"{number:03d}"
            data = (broken[0] if number == 7 else valid[number % len(valid)]).read_bytes()
            archive.writestr(f"{root}{song}/{song}.mid", data)
    return path


def _maestro_zip(folder: Path, valid: list[Path]) -> Path:
    rows = [
        ("Frédéric Chopin", "train"),
        ("Frédéric Chopin", "train"),
        ("Frédéric Chopin", "validation"),
        ("Franz Liszt", "train"),
        ("Franz Liszt", "test"),
        ("Claude Debussy", "train"),
    ]
    path = folder / maestro_module.FILE_NAME
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(maestro_module.CSV_COLUMNS + ("duration",))
    with zipfile.ZipFile(path, "w") as archive:
        for index, (composer, split) in enumerate(rows):
            name = f"2004/piece_{index}.midi"
            writer.writerow([composer, f"Piece {index}", split, "2004", name, "1.0"])
            archive.write(valid[index % len(valid)], "maestro-v3.0.0/" + name)
        archive.writestr("maestro-v3.0.0/maestro-v3.0.0.csv", table.getvalue())
    return path


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, valid_midi_paths, broken_midi_paths, generated_folder):
    """Options of a small instance of every corpus."""
    folder = tmp_path_factory.mktemp("sources")
    parquet = folder / "parquet"
    files = valid_midi_paths + broken_midi_paths
    write_midi_parquet(parquet / "data" / "train-00000-of-00002.parquet", files[:6], 4)
    write_midi_parquet(parquet / "data" / "train-00001-of-00002.parquet", files[6:], 3, 6)
    write_midi_parquet(parquet / "data" / "test-00000-of-00001.parquet", valid_midi_paths[:2])
    return {
        "bach_chorales": {"max_pieces": 4},
        "music21_composers": {"composers": ("ciconia", "corelli", "webern"), "min_pieces": 1},
        "jsb_chorales": {"source": str(_jsb_pickle(folder)), "sha256": None},
        "pop909": {
            "source": str(_pop909_zip(folder, valid_midi_paths, broken_midi_paths)),
            "sha256": None,
        },
        "maestro": {
            "source": str(_maestro_zip(folder, valid_midi_paths)),
            "sha256": None,
            "top_n_composers": 2,
        },
        "midi_folder": {"path": str(generated_folder)},
        "midi_parquet": {"path": str(parquet), "midi_column": "music", "id_column": "md5"},
    }


# ----------------------------------------------------------------------------- same examples


@pytest.mark.parametrize(
    "name",
    [
        "bach_chorales",
        "music21_composers",
        "jsb_chorales",
        "pop909",
        "maestro",
        "midi_folder",
        "midi_parquet",
    ],
)
def test_streaming_gives_the_built_examples(name, corpora, cache):
    built = load_midi_dataset(name, cache_dir=cache, **corpora[name])
    builder = get_builder(name, cache_dir=cache, **corpora[name])
    streamed = builder.as_streaming_dataset()
    assert isinstance(streamed, datasets.IterableDatasetDict)
    assert sorted(streamed) == sorted(built)
    for split in built:
        assert streamed[split].features == built[split].features
        assert list(streamed[split]) == list(built[split])
    # Bad sources are skipped, named and counted while streaming as in the build.
    assert sorted(stream_skips(streamed["train"]).names()) == sorted(
        record["name"] for record in builder.skipped_files()
    )


def test_split_argument_and_composer_relabelling(corpora, cache):
    streamed = load_midi_dataset(
        "maestro", cache_dir=cache, split="train", streaming=True, **corpora["maestro"]
    )
    assert isinstance(streamed, datasets.IterableDataset) and streamed.split == "train"
    labels = streamed.features["composer"]
    assert labels.names == ["Franz Liszt", "Frédéric Chopin"]
    assert sorted(labels.int2str(row["composer"]) for row in streamed) == [
        "Franz Liszt",
        "Frédéric Chopin",
        "Frédéric Chopin",
    ]


def test_streamed_tokens_equal_built_tokens(corpora, cache, midi_tokenizer):
    options = corpora["midi_parquet"]
    built = load_midi_dataset("midi_parquet", cache_dir=cache, **options)
    streamed = load_midi_dataset("midi_parquet", cache_dir=cache, streaming=True, **options)
    for mode in ("pack", "piece"):
        expected = tokenize_dataset(built, midi_tokenizer, 128, mode=mode)
        actual = tokenize_dataset(streamed, midi_tokenizer, 128, mode=mode)
        assert isinstance(actual, datasets.IterableDatasetDict)
        for split in expected:
            assert actual[split].features == expected[split].features
            assert list(actual[split]) == list(expected[split])


# ----------------------------------------------------------------------------- shards


@pytest.fixture
def reads(monkeypatch, tmp_path):
    """Record which process reads which MIDI file of a folder (also in forked workers)."""
    log = tmp_path / "reads.log"
    original = midi_folder_module._read

    def recording(path: str) -> bytes:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()} {Path(path).name}\n")
        return original(path)

    def read() -> list[tuple[int, str]]:
        if not log.exists():
            return []
        lines = log.read_text(encoding="utf-8").split()
        result = [(int(pid), name) for pid, name in zip(lines[::2], lines[1::2])]
        log.unlink()
        return result

    monkeypatch.setattr(midi_folder_module, "_read", recording)
    return read


def _stream(folder: Path, cache: str, reads) -> datasets.IterableDataset:
    stream = load_midi_dataset(
        "midi_folder", path=str(folder), cache_dir=cache, split="train", streaming=True
    )
    reads()  # forget the reads of the check before the split
    return stream


def test_each_source_file_is_a_shard(generated_folder, cache):
    built = load_midi_dataset("midi_folder", path=str(generated_folder), cache_dir=cache)
    streamed = load_midi_dataset(
        "midi_folder", path=str(generated_folder), cache_dir=cache, streaming=True
    )
    for split in built:
        assert streamed[split].num_shards == len(built[split])
    assert len(built["train"]) == 192  # 240 files, 80 / 10 / 10; the broken ones skipped


def test_two_processes_read_disjoint_shards_that_cover_the_corpus(generated_folder, cache, reads):
    stream = _stream(generated_folder, cache, reads)
    everything = sorted(row["id"] for row in stream)
    reads()
    seen = []
    for rank in (0, 1):
        part = split_dataset_by_node(stream, rank=rank, world_size=2)
        ids = [row["id"] for row in part]
        files = [name for _pid, name in reads()]
        assert sorted(files) == sorted(Path(i).name for i in ids)  # only its own files
        seen.append(ids)
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == everything
    assert abs(len(seen[0]) - len(seen[1])) <= 1


def test_accelerate_gives_each_process_its_own_files(generated_folder, cache):
    """What the Trainer does under ``accelerate launch`` with ``dispatch_batches=False``."""
    from accelerate.data_loader import prepare_data_loader

    stream = load_midi_dataset(
        "midi_folder", path=str(generated_folder), cache_dir=cache, split="train", streaming=True
    ).select_columns(["id"])
    seen = []
    for rank in (0, 1):
        loader = prepare_data_loader(
            torch.utils.data.DataLoader(stream, batch_size=8),
            num_processes=2,
            process_index=rank,
            dispatch_batches=False,
            put_on_device=False,
        )
        seen.append([i for batch in loader for i in batch["id"]])
    assert not set(seen[0]) & set(seen[1])
    assert len(seen[0]) + len(seen[1]) == 192


def test_dataloader_workers_read_different_files(generated_folder, cache, reads):
    stream = _stream(generated_folder, cache, reads).select_columns(["id"])
    loader = torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=2, multiprocessing_context="fork"
    )
    ids = [row["id"] for row in loader]
    assert len(ids) == len(set(ids)) == 192
    by_file: dict[str, set[int]] = {}
    for pid, name in reads():
        by_file.setdefault(name, set()).add(pid)
    assert len(by_file) == 192 and all(len(pids) == 1 for pids in by_file.values())
    assert len(set().union(*by_file.values())) == 2  # two workers, each with its files


def test_shuffle_buffer_reads_only_what_it_holds(generated_folder, cache, reads):
    stream = _stream(generated_folder, cache, reads)
    shuffled = stream.shuffle(seed=3, buffer_size=16)
    first = next(iter(shuffled))
    # The buffer (16) and one example prefetched from each of the (up to 10) files the
    # buffer is fed from: far from the 192 files of the corpus.
    assert len(reads()) <= 16 + 2 * 10
    order = [row["id"] for row in shuffled]
    assert order[0] == first["id"]
    assert sorted(order) == sorted(row["id"] for row in stream)
    assert order != [row["id"] for row in stream]
    assert order == [row["id"] for row in stream.shuffle(seed=3, buffer_size=16)]
    shuffled.set_epoch(1)
    assert [row["id"] for row in shuffled] != order


# ----------------------------------------------------------------------------- bad files


def test_bad_rows_are_skipped_named_counted_and_summarised(corpora, cache, caplog):
    stream = load_midi_dataset(
        "midi_parquet", cache_dir=cache, streaming=True, split="train", **corpora["midi_parquet"]
    )
    skips = stream_skips(stream.shuffle(seed=0, buffer_size=4).map(lambda row: row))
    assert skips is not None and skips.total == 0
    with caplog.at_level(logging.WARNING, logger="midiformers"):
        rows = list(stream.shuffle(seed=1, buffer_size=4))  # readers in threads: one summary
    assert len(rows) == 7  # the valid fixtures; the five broken ones are skipped
    assert skips.total == 5
    assert skips.by_category() == {"truncated": 2, "not MIDI": 2, "empty": 1}
    names = skips.names()
    assert all("#" in name and "(md5 " in name for name in names)
    summaries = [r.message for r in caplog.records if "(streaming, this process)" in r.message]
    assert len(summaries) == 1 and f"{skips.total} source file(s) skipped" in summaries[0]
