"""tokenize_dataset (packing, per-piece, windows) and on-the-fly pitch transposition."""

from __future__ import annotations

import logging
import re

import datasets
import numpy as np
import pytest
import symusic

from midiformers.data_scripts import PitchTranspose, tokenize_dataset
from midiformers.data_scripts._common import base_features

COMPOSERS = ["Johann Sebastian Bach", "Scott Joplin", "Other"]


def _composer(path) -> int:
    if path.name.startswith("bach_"):
        return 0
    return 1 if "joplin" in path.name else 2


@pytest.fixture(scope="module")
def midi_dataset(valid_midi_paths) -> datasets.DatasetDict:
    """The valid fixtures as a two-split MIDI dataset with a composer label."""
    features = base_features(composer=datasets.ClassLabel(names=COMPOSERS))
    rows = {
        "id": [p.stem for p in valid_midi_paths],
        "midi": [p.read_bytes() for p in valid_midi_paths],
        "num_notes": [symusic.Score(str(p)).note_num() for p in valid_midi_paths],
        "duration_seconds": [0.0] * len(valid_midi_paths),
        "composer": [_composer(p) for p in valid_midi_paths],
    }
    full = datasets.Dataset.from_dict(rows, features=features)
    return datasets.DatasetDict(
        {"train": full.select(range(4)), "validation": full.select(range(4, len(full)))}
    )


@pytest.fixture(scope="module")
def tokenizer(midi_tokenizer):
    return midi_tokenizer


def piece_ids(tokenizer, data: bytes) -> list[int]:
    return [tokenizer.bos_token_id, *tokenizer.encode_midi(data), tokenizer.eos_token_id]


def test_pack_blocks_are_the_concatenated_pieces(midi_dataset, tokenizer):
    packed = tokenize_dataset(midi_dataset, tokenizer, max_length=64, batch_size=100)
    for split, part in packed.items():
        assert part.column_names == ["input_ids", "labels"]
        stream = [t for data in midi_dataset[split]["midi"] for t in piece_ids(tokenizer, data)]
        blocks = part["input_ids"]
        assert len(blocks) == len(stream) // 64
        assert all(len(block) == 64 for block in blocks)
        assert [t for block in blocks for t in block] == stream[: len(blocks) * 64]
        assert part["labels"] == blocks


def test_piece_mode_keeps_labels_and_truncates_with_eos(midi_dataset, tokenizer):
    pieces = tokenize_dataset(midi_dataset, tokenizer, max_length=96, mode="piece")
    train = pieces["train"]
    assert set(train.column_names) == {"input_ids", "attention_mask", "id", "composer"}
    assert train.features["composer"].names == COMPOSERS
    assert train["composer"] == midi_dataset["train"]["composer"]
    for row, data in zip(train, midi_dataset["train"]["midi"]):
        full = piece_ids(tokenizer, data)
        expected = full if len(full) <= 96 else full[:95] + [tokenizer.eos_token_id]
        assert row["input_ids"] == expected
        assert row["attention_mask"] == [1] * len(expected)


def test_chunk_mode_windows_cover_each_piece(midi_dataset, tokenizer):
    chunks = tokenize_dataset(midi_dataset["validation"], tokenizer, max_length=50, mode="chunk")
    for data, composer, piece_id in zip(
        *(midi_dataset["validation"][c] for c in ("midi", "composer", "id"))
    ):
        windows = chunks.filter(lambda row, piece_id=piece_id: row["id"] == piece_id)
        assert set(windows["composer"]) == {composer}
        assert all(len(w) <= 50 for w in windows["input_ids"])
        assert [t for w in windows["input_ids"] for t in w] == piece_ids(tokenizer, data)


def test_without_special_tokens_and_with_two_processes(midi_dataset, tokenizer):
    single = tokenize_dataset(
        midi_dataset["train"], tokenizer, max_length=80, mode="piece", add_special_tokens=False
    )
    assert single[0]["input_ids"] == tokenizer.encode_midi(midi_dataset["train"][0]["midi"])[:80]
    one = tokenize_dataset(midi_dataset, tokenizer, max_length=32, batch_size=2)
    two = tokenize_dataset(midi_dataset, tokenizer, max_length=32, batch_size=2, num_proc=2)
    for split in one:
        assert one[split]["input_ids"] == two[split]["input_ids"]


def test_unreadable_pieces_are_dropped_with_a_warning(
    midi_dataset, tokenizer, broken_midi_paths, caplog
):
    broken = datasets.Dataset.from_dict(
        {
            "id": ["broken-one", "good-one"],
            "midi": [broken_midi_paths[0].read_bytes(), midi_dataset["train"][0]["midi"]],
        }
    )
    with caplog.at_level(logging.WARNING):
        out = tokenize_dataset(broken, tokenizer, max_length=40, mode="piece")
    assert out["id"] == ["good-one"]
    assert any("broken-one" in record.getMessage() for record in caplog.records)


def test_bad_arguments_are_named(midi_dataset, tokenizer):
    with pytest.raises(ValueError, match="mode must be"):
        tokenize_dataset(midi_dataset, tokenizer, 64, mode="blocks")
    with pytest.raises(ValueError, match=r"no 'notes' column"):
        tokenize_dataset(midi_dataset, tokenizer, 64, midi_column="notes")
    with pytest.raises(ValueError, match=r"keep_columns \['genre'\]"):
        tokenize_dataset(midi_dataset, tokenizer, 64, mode="piece", keep_columns=["genre"])


# ----------------------------------------------------------------------------- transposition


def _pitch_shift_of(tokenizer, before: list[int], after: list[int]) -> int:
    """The one semitone shift that maps ``before`` to ``after`` (asserting it is uniform)."""
    shifts = set()
    for a, b in zip(before, after, strict=True):
        ta, tb = tokenizer.convert_ids_to_tokens([a, b])
        ma, mb = re.match(r"^Pitch_(\d+)$", ta), re.match(r"^Pitch_(\d+)$", tb)
        if ma:
            assert mb, f"{ta} became {tb}"
            shifts.add(int(mb.group(1)) - int(ma.group(1)))
        else:
            assert ta == tb, "only pitch tokens may change"
    assert len(shifts) <= 1
    return shifts.pop() if shifts else 0


def test_transposed_tokens_equal_tokens_of_transposed_midi(tokenizer, chorale_midi_paths):
    transpose = PitchTranspose(tokenizer, max_semitones=6)
    score = symusic.Score(str(chorale_midi_paths[0]))
    ids = tokenizer.encode_midi(score)
    for shift in (-5, -1, 3, 6):
        assert transpose.transpose(ids, shift) == tokenizer.encode_midi(score.shift_pitch(shift))


def test_drums_are_not_transposed(tokenizer, valid_midi_paths):
    band = next(p for p in valid_midi_paths if "drums" in p.name)
    ids = tokenizer.encode_midi(band)
    moved = PitchTranspose(tokenizer, 4).transpose(ids, 2)
    tokens, moved_tokens = (
        tokenizer.convert_ids_to_tokens(ids),
        tokenizer.convert_ids_to_tokens(moved),
    )
    drums = [i for i, t in enumerate(tokens) if t.startswith("PitchDrum_")]
    assert drums, "the fixture has drums"
    assert all(tokens[i] == moved_tokens[i] for i in drums)
    assert _pitch_shift_of(tokenizer, ids, moved) == 2


def test_allowed_shifts_stay_in_the_pitch_range(tokenizer):
    transpose = PitchTranspose(tokenizer, max_semitones=5)
    low, high = tokenizer.miditok.config.pitch_range
    ids = tokenizer.convert_tokens_to_ids(["Bar_None", f"Pitch_{high - 3}", f"Pitch_{low + 60}"])
    assert transpose.allowed_shifts(np.asarray(ids)).tolist() == [-5, -4, -3, -2, -1, 0, 1, 2, 3]
    with pytest.raises(ValueError, match="out of the tokenizer's range"):
        transpose.transpose(ids, 4)


def test_training_split_is_transposed_on_the_fly(midi_dataset, tokenizer):
    plain = tokenize_dataset(midi_dataset, tokenizer, max_length=64)
    augmented = tokenize_dataset(
        midi_dataset, tokenizer, max_length=64, transpose_semitones=4, seed=0
    )
    assert augmented["validation"]["input_ids"] == plain["validation"]["input_ids"]
    original = plain["train"][0]["input_ids"]
    shifts = set()
    for _ in range(12):  # every read draws a new shift; labels move with the inputs
        row = augmented["train"][0]
        assert row["labels"] == row["input_ids"]
        shift = _pitch_shift_of(tokenizer, original, row["input_ids"])
        assert -4 <= shift <= 4
        shifts.add(shift)
    assert len(shifts) > 1


def test_bpe_tokenizers_cannot_be_transposed(valid_midi_paths):
    from midiformers.tokenization import MidiTokenizer

    base = MidiTokenizer()
    trained = base.train_bpe(valid_midi_paths[:3], vocab_size=len(base) + 40)
    assert trained.miditok.is_trained  # (miditok skips training below the base vocabulary)
    with pytest.raises(ValueError, match="BPE-trained"):
        PitchTranspose(trained, 3)
