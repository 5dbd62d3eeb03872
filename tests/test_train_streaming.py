"""train.py at scale: streamed corpora, pretokenized shards, and resume that continues the
stream instead of replaying it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch
from safetensors.torch import load_file
from synthetic_midi import make_corpus

from midiformers.training import RecipeError, main
from midiformers.training.run import MidiTrainer

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "recipes" / "tiny.yaml"
QUIET = ["--num_samples", "0", "--plots", "false"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, valid_midi_paths) -> Path:
    """24 distinct MIDI files (transposed, shifted copies of the fixtures) in one folder."""
    folder = tmp_path_factory.mktemp("corpus")
    make_corpus(folder, valid_midi_paths, 24, per_folder=1000)
    return folder


def streaming_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    config = json.dumps({"validation_ratio": 0.2, "test_ratio": 0.0, "drop_labels": True})
    return [
        str(TINY),
        *("--dataset_name", "midi_folder", "--data_dir", str(corpus)),
        *("--dataset_config", config, "--streaming", "--output_dir", str(out)),
        *QUIET,
        *extra,
    ]


@pytest.fixture
def seen_batches(monkeypatch) -> list[tuple[int, list[list[int]]]]:
    """(global step, input ids) of every batch the trainer trains on."""
    seen = []
    step = MidiTrainer.training_step

    def recording_step(self, model, inputs, *args, **kwargs):
        seen.append((self.state.global_step, inputs["input_ids"].tolist()))
        return step(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(MidiTrainer, "training_step", recording_step)
    return seen


def test_streaming_run_trains_and_saves(tmp_path, corpus, seen_batches):
    out = tmp_path / "run"
    metrics = main(streaming_args(corpus, out, "--transpose_semitones", "2"))
    assert {"eval_loss", "eval_accuracy", "train_loss"} <= set(metrics)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()
    assert (out / "checkpoint-4" / "data_state-0.json").is_file()
    assert [step for step, _ in seen_batches] == [0, 1, 2, 3]
    assert all(len(ids) == 4 and len(ids[0]) == 64 for _, ids in seen_batches)


def test_streaming_without_max_steps_fails_before_reading_data(tmp_path, corpus, monkeypatch):
    import midiformers.data_scripts as data_scripts

    def never(*args, **kwargs):
        raise AssertionError("the dataset was read")

    monkeypatch.setattr(data_scripts, "load_midi_dataset", never)
    with pytest.raises(RecipeError) as error:
        main(streaming_args(corpus, tmp_path / "out", "--max_steps", "-1"))
    assert str(error.value).startswith("streaming: true needs max_steps")
    assert "\n" not in str(error.value)


def assert_same_weights(a_dir: Path, b_dir: Path) -> None:
    a, b = load_file(a_dir / "model.safetensors"), load_file(b_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


@pytest.mark.parametrize("workers", [0, 1, 2], ids=lambda n: f"{n}-workers")
def test_resumed_stream_sees_the_blocks_of_an_uninterrupted_run(
    tmp_path, corpus, seen_batches, workers
):
    """Shuffle buffer, transposition and several passes over a 9-block stream, read by the
    trainer's process or by DataLoader workers (each with its own files, buffer and draws,
    reading ahead of the trainer; with 2 workers their parts differ in length, so their passes
    drift apart): a run stopped after step 5 (its last checkpoint between two of the workers'
    snapshots, which come every save_steps) and resumed trains on the very batches of one that
    never stopped."""
    options = ["--max_train_samples", "9", "--shuffle_buffer_size", "6"]
    options += ["--transpose_semitones", "3", "--save_steps", "2", "--eval_steps", "4"]
    options += ["--dataloader_num_workers", str(workers)]
    straight = tmp_path / "straight"
    main(streaming_args(corpus, straight, "--max_steps", "8", *options))
    uninterrupted = list(seen_batches)
    seen_batches.clear()
    resumed = tmp_path / "resumed"
    main(streaming_args(corpus, resumed, "--max_steps", "5", *options))
    assert (resumed / "checkpoint-5" / "data_state-0.json").is_file()
    main(streaming_args(corpus, resumed, "--max_steps", "8", *options))
    assert [step for step, _ in seen_batches] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert seen_batches == uninterrupted
    blocks = [tuple(block) for _, ids in uninterrupted for block in ids]
    assert len(set(blocks)) < len(blocks)  # the 9 blocks came round again (several passes)
    assert_same_weights(resumed, straight)


def test_a_position_from_another_loader_replays_the_trained_batches(
    tmp_path, corpus, seen_batches, caplog
):
    """A checkpoint whose stream position does not fit the run (here: saved with another
    worker count) is not loaded: the run warns and reads past the batches already trained
    on, so it does not train on them twice."""
    options = ["--max_train_samples", "10", "--shuffle_buffer_size", "1"]
    main(streaming_args(corpus, tmp_path / "straight", "--max_steps", "6", *options))
    uninterrupted = list(seen_batches)
    seen_batches.clear()
    out = tmp_path / "resumed"
    main(streaming_args(corpus, out, "--max_steps", "4", "--dataloader_num_workers", "1", *options))
    seen_batches.clear()
    with caplog.at_level(logging.WARNING, logger="midiformers.train"):
        main(streaming_args(corpus, out, "--max_steps", "6", *options))
    assert "cannot continue" in caplog.text and "'num_workers': 1" in caplog.text
    assert "reads past the 4 batches" in caplog.text
    assert seen_batches == uninterrupted[4:]


def test_two_processes_read_disjoint_parts_that_cover_the_stream(corpus):
    """What each process of a multi-process launch trains on: its own pieces, together the whole
    stream (one pass, taken through the trainer's own split; pieces, since each process packs
    the pieces it reads into its own blocks)."""
    from midiformers.data_scripts import load_midi_dataset, tokenize_dataset
    from midiformers.tokenization import MidiTokenizer
    from midiformers.training.arguments import DataArguments
    from midiformers.training.run import _streaming_sets

    stream = load_midi_dataset(
        "midi_folder", data_dir=str(corpus), split="train", streaming=True, drop_labels=True
    )
    tokenized = tokenize_dataset(stream, MidiTokenizer(preset="remi"), 64, mode="piece")
    data_args = DataArguments(max_length=64, shuffle_buffer_size=4, max_eval_samples=1)

    def one_pass(rank: int, world_size: int) -> list[str]:
        args = SimpleNamespace(seed=0, process_index=rank, world_size=world_size)
        train, _ = _streaming_sets(tokenized, tokenized, data_args, args, None)
        train.dataset.set_epoch(0)
        return [example["id"] for example in train.dataset]

    whole = one_pass(0, 1)
    assert len(set(whole)) == len(whole) > 10
    for world_size in (2, 3):  # 3 does not divide the file count: whole files all the same
        parts = [one_pass(rank, world_size) for rank in range(world_size)]
        assert all(parts)
        assert sorted(sum(parts, [])) == sorted(whole)  # disjoint and covering


@pytest.fixture(scope="module")
def pretokenized(tmp_path_factory, corpus) -> Path:
    from midiformers.data_scripts import load_midi_dataset, pretokenize
    from midiformers.tokenization import MidiTokenizer

    out = tmp_path_factory.mktemp("pretokenized")
    dataset = load_midi_dataset(
        "midi_folder",
        data_dir=str(corpus),
        cache_dir=str(tmp_path_factory.mktemp("cache")),
        validation_ratio=0.2,
        test_ratio=0.0,
        drop_labels=True,
    )
    pretokenize(dataset, MidiTokenizer(preset="remi"), out, num_shards=2)
    return out


@pytest.mark.parametrize("streaming", [False, True], ids=["mmap", "streaming"])
def test_pretokenized_run_trains(tmp_path, pretokenized, streaming, seen_batches, monkeypatch):
    from transformers import AutoTokenizer

    # datasets sleeps 5 s whenever a Parquet stream's reader threads stop (apache/arrow#45214,
    # a crash at interpreter exit): pointless in this test, which stops two streams early
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    out = tmp_path / "run"
    args = [str(TINY), "--pretokenized_dir", str(pretokenized), "--output_dir", str(out)]
    args += ["--dataset_cache_dir", str(tmp_path / "cache"), "--streaming", str(streaming)]
    args += ["--shuffle_buffer_size", "8"]
    metrics = main([*args, *QUIET])
    assert "eval_loss" in metrics and len(seen_batches) == 4
    assert "bach_chorales" not in (out / "README.md").read_text()  # not the default corpus
    saved = AutoTokenizer.from_pretrained(out)  # the tokenizer that made the shards
    assert (
        saved.get_vocab() == AutoTokenizer.from_pretrained(pretokenized / "tokenizer").get_vocab()
    )


def test_pretokenized_with_another_tokenizer_is_refused(tmp_path, pretokenized):
    from midiformers.tokenization import MidiTokenizer

    other = tmp_path / "tsd"
    MidiTokenizer(preset="tsd").save_pretrained(other)
    args = [str(TINY), "--pretokenized_dir", str(pretokenized), "--output_dir", str(tmp_path)]
    with pytest.raises(RecipeError) as error:
        main([*args, "--tokenizer_name_or_path", str(other), *QUIET])
    message = str(error.value)
    assert message.startswith("pretokenized_dir:") and "another tokenizer" in message
    assert "\n" not in message
    assert not list(tmp_path.glob("checkpoint-*"))


def test_streaming_needs_no_length(corpus):
    """The evaluation set of a streamed run is read once, bounded, into memory."""
    from midiformers.training.streaming import bounded_eval_set

    stream = datasets.IterableDataset.from_generator(
        lambda: ({"input_ids": [i, i]} for i in range(10))
    )
    assert bounded_eval_set(stream, 3)["input_ids"] == [[0, 0], [1, 1], [2, 2]]


RECORDING_TRAIN = """
import json, os
from midiformers.training.run import MidiTrainer

step = MidiTrainer.training_step


def recording_step(self, model, inputs, *args, **kwargs):
    name = os.path.join(os.environ["RECORD_DIR"], f"rank-{self.args.process_index}.jsonl")
    with open(name, "a") as handle:
        handle.write(json.dumps(inputs["input_ids"].tolist()) + "\\n")
    return step(self, model, inputs, *args, **kwargs)


MidiTrainer.training_step = recording_step
from midiformers.training import cli

cli()
"""


def test_two_process_streaming_launch_trains_on_disjoint_blocks(tmp_path, corpus):
    """torchrun with 2 CPU processes (DDP over gloo): each trains on its own blocks and saves
    its own stream position in every checkpoint. (Within a pass: each pass deals the files out
    anew, so the small buffer keeps the 4 steps inside the first one.)"""
    script = tmp_path / "train_recording.py"
    script.write_text(RECORDING_TRAIN)
    out, records = tmp_path / "ddp", tmp_path / "records"
    records.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += [
        "--master_port",
        "29541",
        str(script),
        *streaming_args(corpus, out, "--shuffle_buffer_size", "4"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "RECORD_DIR": str(records)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    blocks = []
    for rank in (0, 1):
        batches = [json.loads(line) for line in (records / f"rank-{rank}.jsonl").open()]
        assert len(batches) == 4  # max_steps, in step with the other process
        blocks.append({tuple(block) for batch in batches for block in batch})
        assert (out / "checkpoint-4" / f"data_state-{rank}.json").is_file()
    assert len(blocks[0]) == len(blocks[1]) == 16
    assert not blocks[0] & blocks[1]


def test_a_stream_position_is_only_loaded_into_the_same_setup(tmp_path):
    from midiformers.training.streaming import StreamingTrainSet

    stream = datasets.IterableDataset.from_generator(
        lambda: ({"input_ids": [i, i]} for i in range(10))
    )
    saved = StreamingTrainSet(stream, seed=0, buffer_size=4, part=(0, 2))
    taken = iter(saved.dataloader(batch_size=1, collate_fn=lambda rows: rows[0]))
    first = [next(taken) for _ in range(3)]
    saved.save(str(tmp_path / "state.json"))
    rest = [next(taken) for _ in range(12)]  # on into the next pass
    same = StreamingTrainSet(stream, seed=0, buffer_size=4, part=(0, 2))
    same.load(str(tmp_path / "state.json"), num_workers=0, batch_size=1)
    again = iter(same.dataloader(batch_size=1, collate_fn=lambda rows: rows[0]))
    assert [next(again) for _ in range(12)] == rest and first
    others = [dict(part=(0, 1)), dict(part=(0, 2), buffer_size=8)]
    others += [dict(part=(0, 2), num_workers=1), dict(part=(0, 2), batch_size=2)]
    for other in others:
        loader = {
            "num_workers": other.pop("num_workers", 0),
            "batch_size": other.pop("batch_size", 1),
        }
        options = {"seed": 0, "buffer_size": 4, **other}
        with pytest.raises(ValueError, match="saved with"):
            StreamingTrainSet(stream, **options).load(str(tmp_path / "state.json"), **loader)


def test_more_workers_than_files_leaves_the_extra_workers_idle():
    """A worker without a file of its own ends quietly; the others' passes go on."""
    from midiformers.training.streaming import StreamingTrainSet

    stream = datasets.IterableDataset.from_generator(
        lambda shards: ({"input_ids": [shard, shard]} for shard in shards),
        gen_kwargs={"shards": [1, 2]},
    )
    train = StreamingTrainSet(stream, seed=0, buffer_size=1)
    batches = iter(train.dataloader(batch_size=1, collate_fn=lambda rows: rows[0], num_workers=3))
    assert [next(batches)["input_ids"][0] for _ in range(6)] == [1, 2, 1, 2, 1, 2]
