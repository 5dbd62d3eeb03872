"""Pretokenization: token-id Parquet shards written once (in parallel, resumable after a
kill), read back as tokenize_dataset's columns (memory-mapped or streamed), and refused with
another tokenizer."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from synthetic_midi import make_corpus
from transformers import AutoTokenizer

from midiformers import MidiTokenizer
from midiformers.data_scripts import (
    PretokenizedFolderError,
    TokenizerMismatchError,
    load_midi_dataset,
    load_pretokenized,
    pretokenize,
    tokenize_dataset,
    tokenizer_fingerprint,
)
from midiformers.data_scripts.pretokenization import MANIFEST_NAME, TEMP_PREFIX, main

SHARD_SIZE = 20  # 240 files: train 192 -> 10 shards, validation 24 -> 2, test 24 -> 2


@pytest.fixture(scope="session")
def corpus_folder(tmp_path_factory, valid_midi_paths) -> Path:
    folder = tmp_path_factory.mktemp("pretokenize-corpus")
    make_corpus(folder, valid_midi_paths, 240)
    return folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("pretokenize-cache"))


@pytest.fixture(scope="module")
def corpus(corpus_folder, cache) -> datasets.DatasetDict:
    return load_midi_dataset("midi_folder", path=str(corpus_folder), cache_dir=cache)


@pytest.fixture(scope="module")
def written(corpus, midi_tokenizer, tmp_path_factory) -> Path:
    """The corpus pretokenized in one uninterrupted, single-process run."""
    output = tmp_path_factory.mktemp("pretokenized") / "out"
    pretokenize(corpus, midi_tokenizer, output, shard_size=SHARD_SIZE)
    return output


def _tables(folder: Path) -> dict[str, list[dict]]:
    return {
        path.name: pq.read_table(path).to_pylist() for path in sorted((folder / "data").iterdir())
    }


# ----------------------------------------------------------------------------- writing


def test_shards_manifest_and_saved_tokenizer(written, corpus, midi_tokenizer):
    manifest = json.loads((written / MANIFEST_NAME).read_text())
    assert manifest["complete"] is True
    assert manifest["tokenizer"]["fingerprint"] == tokenizer_fingerprint(midi_tokenizer)
    assert {split: info["num_shards"] for split, info in manifest["splits"].items()} == {
        "train": 10,
        "validation": 2,
        "test": 2,
    }
    for split, info in manifest["splits"].items():
        assert info["num_examples"] == info["num_pieces"] == len(corpus[split])
        rows = [row for file in info["files"] for row in pq.read_table(written / file).to_pylist()]
        assert [row["id"] for row in rows] == corpus[split]["id"]
        assert sum(len(row["input_ids"]) for row in rows) == info["num_tokens"]
        assert all(row["input_ids"][0] == midi_tokenizer.bos_token_id for row in rows)
    saved = AutoTokenizer.from_pretrained(written / "tokenizer")
    assert tokenizer_fingerprint(saved) == tokenizer_fingerprint(midi_tokenizer)


def test_parallel_and_streamed_inputs_write_the_same_shards(
    corpus, corpus_folder, cache, midi_tokenizer, written, tmp_path
):
    pretokenize(corpus, midi_tokenizer, tmp_path / "parallel", shard_size=SHARD_SIZE, num_proc=2)
    assert _tables(tmp_path / "parallel") == _tables(written)
    stream = load_midi_dataset(
        "midi_folder", path=str(corpus_folder), cache_dir=cache, streaming=True
    )
    shards = {"train": 10, "validation": 2, "test": 2}
    for split, count in shards.items():
        pretokenize(stream[split], midi_tokenizer, tmp_path / split, num_shards=count)
        streamed = _tables(tmp_path / split)
        assert streamed == {k: v for k, v in _tables(written).items() if k.startswith(split)}


def test_dropped_pieces_are_counted_and_named(tmp_path, valid_midi_paths, midi_tokenizer):
    data = datasets.Dataset.from_dict(
        {"id": ["good", "bad"], "midi": [valid_midi_paths[0].read_bytes(), b"MThd broken"]}
    )
    manifest = pretokenize(data, midi_tokenizer, tmp_path / "out")
    train = manifest["splits"]["train"]
    assert (train["num_pieces"], train["num_examples"], train["num_dropped"]) == (2, 1, 1)
    assert train["dropped"][0]["name"] == "bad"


def test_default_plan_gives_every_process_a_shard(tmp_path, valid_midi_paths, midi_tokenizer):
    data = datasets.Dataset.from_dict(
        {
            "id": [p.stem for p in valid_midi_paths],
            "midi": [p.read_bytes() for p in valid_midi_paths],
        }
    )
    serial = pretokenize(data, midi_tokenizer, tmp_path / "one")
    parallel = pretokenize(data, midi_tokenizer, tmp_path / "two", num_proc=2)
    assert serial["splits"]["train"]["num_shards"] == 1
    assert parallel["splits"]["train"]["num_shards"] == 2
    rows = [
        pq.read_table(tmp_path / "two" / f).to_pylist()
        for f in parallel["splits"]["train"]["files"]
    ]
    assert (
        rows[0] + rows[1]
        == pq.read_table(tmp_path / "one" / serial["splits"]["train"]["files"][0]).to_pylist()
    )


# ----------------------------------------------------------------------------- resuming

_CHILD = r"""
import os, signal, sys
from midiformers import MidiTokenizer
from midiformers.data_scripts import load_midi_dataset
from midiformers.data_scripts import pretokenization as module

folder, cache, output, finished = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
corpus = load_midi_dataset("midi_folder", path=folder, cache_dir=cache)
done = []
write_shard, encode = module._write_shard, module._encode_batch

def counting(*args):
    dying.calls = 0
    stats = write_shard(*args)
    done.append(args[2])
    return stats

def dying(*args):
    if len(done) == finished and dying.calls == 1:  # the next shard, half written
        os.kill(os.getpid(), signal.SIGKILL)
    dying.calls += 1
    return encode(*args)

module._write_shard, module._encode_batch = counting, dying
module.pretokenize(corpus, MidiTokenizer(), output, shard_size=20, batch_size=8)
"""


def _identity(path: Path) -> tuple[int, int]:
    """Inode and modification time: a rewritten (renamed-over) file changes both."""
    info = path.stat()
    return info.st_ino, info.st_mtime_ns


def test_a_killed_run_resumes_without_redoing_finished_shards(
    corpus_folder, cache, corpus, midi_tokenizer, written, tmp_path
):
    output = tmp_path / "out"
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(corpus_folder), cache, str(output), "4"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    finished = sorted((output / "data").glob("[!.]*.parquet"))
    assert [path.name for path in finished] == [f"train-0000{i}-of-00010.parquet" for i in range(4)]
    assert list((output / "data").glob(TEMP_PREFIX + "*"))  # the shard it was writing
    with pytest.raises(PretokenizedFolderError, match=r"unfinished \(6 of 10 train shard"):
        load_pretokenized(output, midi_tokenizer, 64, split="train")
    before = {path.name: _identity(path) for path in finished}

    manifest = pretokenize(corpus, midi_tokenizer, output, shard_size=SHARD_SIZE)
    assert manifest["complete"] is True
    after = {name: _identity(output / "data" / name) for name in before}
    assert after == before  # finished shards were kept, not written again
    assert not list((output / "data").glob(TEMP_PREFIX + "*"))
    assert _tables(output) == _tables(written)
    # Once complete, running again writes nothing and keeps the same result.
    pretokenize(corpus, midi_tokenizer, output, shard_size=SHARD_SIZE)
    assert after == {name: _identity(output / "data" / name) for name in before}


def test_resuming_with_other_inputs_is_refused(written, corpus, tmp_path):
    with pytest.raises(TokenizerMismatchError, match="another tokenizer.*--overwrite"):
        pretokenize(corpus, MidiTokenizer(preset="tsd"), written, shard_size=SHARD_SIZE)
    with pytest.raises(PretokenizedFolderError, match="other splits and shards per split"):
        pretokenize(corpus, MidiTokenizer(), written, num_shards=3)
    with pytest.raises(PretokenizedFolderError, match="made from another dataset"):
        pretokenize(corpus.map(lambda row: row), MidiTokenizer(), written, shard_size=SHARD_SIZE)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(PretokenizedFolderError, match="not a pretokenized corpus"):
        pretokenize(corpus, MidiTokenizer(), tmp_path / "busy")


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("mode", ["pack", "piece", "chunk"])
def test_loaded_shards_equal_tokenize_dataset(
    written, corpus, midi_tokenizer, cache, mode, streaming
):
    expected = tokenize_dataset(corpus["validation"], midi_tokenizer, 128, mode=mode)
    loaded = load_pretokenized(
        written,
        midi_tokenizer,
        128,
        mode=mode,
        split="validation",
        streaming=streaming,
        cache_dir=cache,
    )
    kind = datasets.IterableDataset if streaming else datasets.Dataset
    assert isinstance(loaded, kind)
    assert loaded.features == expected.features
    assert list(loaded) == list(expected)


def test_streamed_shards_are_files_and_transposition_applies_to_train(written, midi_tokenizer):
    plain = load_pretokenized(written, midi_tokenizer, 128, mode="piece", streaming=True)
    assert isinstance(plain, datasets.IterableDatasetDict)
    assert plain["train"].num_shards == 10
    moved = load_pretokenized(
        written, midi_tokenizer, 128, mode="piece", streaming=True, transpose_semitones=3, seed=0
    )
    assert list(moved["validation"]) == list(plain["validation"])
    vocab = {index: token for token, index in midi_tokenizer.get_vocab().items()}
    changed = 0
    for before, after in zip(plain["train"], moved["train"]):
        assert before["id"] == after["id"]
        for a, b in zip(before["input_ids"], after["input_ids"]):
            if a != b:
                changed += 1
                assert vocab[a].startswith("Pitch_") and vocab[b].startswith("Pitch_")
    assert changed


def test_another_tokenizer_or_folder_is_refused(written, tmp_path):
    other = MidiTokenizer(preset="tsd")
    with pytest.raises(
        TokenizerMismatchError, match=r"tokenized with another tokenizer: .*'remi'.*'tsd'"
    ):
        load_pretokenized(written, other, 128)
    with pytest.raises(PretokenizedFolderError, match="not a pretokenized corpus"):
        load_pretokenized(tmp_path, other, 128)
    with pytest.raises(PretokenizedFolderError, match="no split 'dev'"):
        load_pretokenized(written, MidiTokenizer(), 128, split="dev")


# ----------------------------------------------------------------------------- command line


def test_command_line(corpus_folder, tmp_path, cache, caplog):
    output = tmp_path / "cli"
    tokenizer = tmp_path / "tok"
    MidiTokenizer(preset="tsd").save_pretrained(tokenizer)
    code = main(
        [
            str(corpus_folder),
            str(output),
            "--tokenizer",
            str(tokenizer),
            "--split",
            "test",
            "--num-proc",
            "2",
            "--num-shards",
            "2",
            "--cache-dir",
            cache,
        ]
    )
    assert code == 0
    manifest = json.loads((output / MANIFEST_NAME).read_text())
    assert list(manifest["splits"]) == ["test"] and manifest["tokenizer"]["preset"] == "tsd"
    assert manifest["splits"]["test"]["num_examples"] == 24
    with pytest.raises(SystemExit, match="neither a folder nor a preset"):
        main([str(corpus_folder), str(tmp_path / "x"), "--tokenizer", "no-such-preset"])
    with pytest.raises(SystemExit, match="not KEY=VALUE"):
        main(["bach_chorales", str(tmp_path / "x"), "-o", "max_pieces"])
    with pytest.raises(SystemExit, match="another tokenizer"):
        main([str(corpus_folder), str(output), "--split", "test", "--cache-dir", cache])
