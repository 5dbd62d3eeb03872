"""Tests for midiformers.MidiTokenizer and midiformers.tokenization.load_score."""

from __future__ import annotations

import collections
import json
import logging
import os
import struct
import subprocess
import sys
import textwrap

import miditok
import numpy as np
import pytest
import symusic
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, DataCollatorForLanguageModeling

from midiformers import MidiFileError, MidiTokenizer, load_score
from midiformers.tokenization import MIDITOK_FILE_NAME, PRESETS, DecodeReport
from midiformers.tokenization.presets import TIME_SIGNATURE_RANGE

SPECIAL_TOKENS = ("PAD_None", "BOS_None", "EOS_None", "MASK_None")


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, MidiTokenizer]:
    """One tokenizer per preset, built once for the module."""
    return {name: MidiTokenizer(preset=name) for name in PRESETS}


def _notes_by_instrument_and_pitch(score: symusic.Score) -> dict[tuple[int, int], list]:
    """(program or -1 for drums, pitch) -> sorted [(onset, duration)] in quarter notes."""
    tpq = score.ticks_per_quarter
    notes = collections.defaultdict(list)
    for track in score.tracks:
        program = -1 if track.is_drum else track.program
        for note in track.notes:
            notes[(program, note.pitch)].append((note.time / tpq, note.duration / tpq))
    return {key: sorted(value) for key, value in notes.items()}


def _metered_score(meters: list[tuple[int, int]], bars: int = 2, tpq: int = 480) -> symusic.Score:
    """A piano piece playing each (numerator, denominator) meter for ``bars`` bars, one note
    per beat, with a time signature at the start of each meter."""
    score = symusic.Score(tpq)
    score.tempos.append(symusic.Tempo(0, 100))
    track = symusic.Track(program=0)
    time = 0
    for numerator, denominator in meters:
        score.time_signatures.append(symusic.TimeSignature(time, numerator, denominator))
        beat = tpq * 4 // denominator
        for _ in range(bars):
            for index in range(numerator):
                track.notes.append(symusic.Note(time, beat, 60 + index, 80))
                time += beat
    score.tracks.append(track)
    return score


def _meters_in_quarters(score: symusic.Score) -> list[tuple[float, int, int]]:
    tpq = score.ticks_per_quarter
    return [(s.time / tpq, s.numerator, s.denominator) for s in score.time_signatures]


def _overlaps_same_pitch(notes: list[tuple[float, float]], index: int) -> bool:
    onset, duration = notes[index]
    return any(
        other_onset < onset + duration and onset < other_onset + other_duration
        for j, (other_onset, other_duration) in enumerate(notes)
        if j != index
    )


# --------------------------------------------------------------------------- load_score


def test_load_score_accepts_paths_bytes_and_scores(valid_midi_paths):
    path = valid_midi_paths[0]
    from_str = load_score(str(path))
    from_path = load_score(path)
    from_bytes = load_score(path.read_bytes())
    from_quarter = load_score(symusic.Score(path).to("quarter"))
    assert from_str == from_path == from_bytes
    assert from_quarter.note_num() == from_path.note_num() > 0
    assert isinstance(from_quarter, symusic.core.ScoreTick)


@pytest.mark.parametrize("as_bytes", [False, True])
def test_broken_files_raise_midi_file_error_naming_the_file(broken_midi_paths, as_bytes):
    for path in broken_midi_paths:
        source = path.read_bytes() if as_bytes else path
        with pytest.raises(MidiFileError) as info:
            load_score(source, name=path.name if as_bytes else None)
        assert isinstance(info.value, ValueError)
        assert path.name in str(info.value)
        assert info.value.reason and info.value.reason in str(info.value)


def test_broken_files_reasons(midi_dir):
    broken = midi_dir / "broken"
    expected = {
        "empty.mid": "empty",
        "text_renamed.mid": "not a MIDI file",
        "random_bytes.mid": "not a MIDI file",
        "truncated.mid": "truncated",
        "header_without_tracks.mid": r"announces 1 track\(s\) but the file holds 0",
    }
    for name, reason in expected.items():
        with pytest.raises(MidiFileError, match=reason):
            load_score(broken / name)


def test_empty_string_is_not_a_path(midi_tokenizer):
    for empty in ("", "  "):
        with pytest.raises(MidiFileError, match="an empty string is not a MIDI file path"):
            midi_tokenizer(empty)
    with pytest.raises(MidiFileError, match="an empty string is not a MIDI file path"):
        midi_tokenizer.train_bpe([""], vocab_size=len(midi_tokenizer) + 10)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(MidiFileError, match="no such file"):
        load_score(tmp_path / "missing.mid")
    with pytest.raises(MidiFileError, match="directory"):
        load_score(tmp_path)
    with pytest.raises(TypeError, match="symusic.Score"):
        load_score(12)


def test_size_and_length_limits(valid_midi_paths, tmp_path):
    path = valid_midi_paths[0]
    size = path.stat().st_size
    with pytest.raises(MidiFileError, match="too large"):
        MidiTokenizer(max_file_size=size - 1)(path)
    assert MidiTokenizer(max_file_size=size)(path).input_ids
    # One note 2**21 quarters in (tpq 1): a corrupt delta time worth millions of tokens.
    track = b"\x81\x80\x80\x00\x90\x3c\x64\x0a\x80\x3c\x00\x00\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, 1)
    far_note = header + b"MTrk" + struct.pack(">I", len(track)) + track
    with pytest.raises(MidiFileError, match="implausibly long"):
        MidiTokenizer()(far_note)
    assert load_score(far_note, max_quarters=None).note_num() == 1


# --------------------------------------------------------------------------- encoding


def test_single_and_batch_encoding(midi_tokenizer, valid_midi_paths):
    path = valid_midi_paths[0]
    content = midi_tokenizer.encode_midi(path)
    single = midi_tokenizer(path)
    assert single.input_ids == [midi_tokenizer.bos_token_id, *content, midi_tokenizer.eos_token_id]
    assert single.attention_mask == [1] * len(single.input_ids)
    assert midi_tokenizer(path, add_special_tokens=False).input_ids == content
    assert midi_tokenizer.tokenize(path) == midi_tokenizer.convert_ids_to_tokens(content)
    batch = midi_tokenizer([str(p) for p in valid_midi_paths[:3]])
    assert batch.input_ids[0] == single.input_ids
    assert len(batch.input_ids) == 3
    assert midi_tokenizer([]).input_ids == []


def test_ids_are_within_vocabulary_and_specials_are_distinct(tokenizers, valid_midi_paths):
    for tokenizer in tokenizers.values():
        assert tokenizer.pad_token_id == 0
        ids = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id}
        assert len(ids) == 3
        assert len(tokenizer) == tokenizer.vocab_size == len(tokenizer.miditok)
        encoded = tokenizer(valid_midi_paths[-1]).input_ids
        assert all(0 <= i < len(tokenizer) for i in encoded)
        assert tokenizer.pad_token_id not in encoded


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_padding_truncation_and_tensors(midi_tokenizer, valid_midi_paths, padding_side):
    paths = valid_midi_paths[:3]
    lengths = [len(midi_tokenizer(p).input_ids) for p in paths]
    batch = midi_tokenizer(paths, padding=True, padding_side=padding_side, return_tensors="pt")
    assert isinstance(batch.input_ids, torch.Tensor)
    assert batch.input_ids.shape == (3, max(lengths))
    assert batch.attention_mask.sum(dim=1).tolist() == lengths
    shortest = int(np.argmin(lengths))
    row, mask = batch.input_ids[shortest], batch.attention_mask[shortest]
    pad_positions = (mask == 0).nonzero().flatten().tolist()
    assert all(row[i] == midi_tokenizer.pad_token_id for i in pad_positions)
    if padding_side == "left":
        assert pad_positions == list(range(len(pad_positions)))
        assert row[-1] == midi_tokenizer.eos_token_id
    else:
        assert pad_positions == list(range(lengths[shortest], max(lengths)))
        assert row[0] == midi_tokenizer.bos_token_id

    truncated = midi_tokenizer(paths, truncation=True, max_length=16, return_tensors="np")
    assert isinstance(truncated.input_ids, np.ndarray)
    assert truncated.input_ids.shape == (3, 16)
    assert (truncated.input_ids[:, 0] == midi_tokenizer.bos_token_id).all()
    assert (truncated.input_ids[:, -1] == midi_tokenizer.eos_token_id).all()
    padded = midi_tokenizer(paths[0], padding="max_length", max_length=lengths[0] + 5)
    assert padded.input_ids[-5:] == [midi_tokenizer.pad_token_id] * 5


def test_pad_and_data_collator(midi_tokenizer, valid_midi_paths):
    features = [midi_tokenizer(p) for p in valid_midi_paths[:3]]
    lengths = [len(f.input_ids) for f in features]
    padded = midi_tokenizer.pad(features, return_tensors="pt")
    assert padded.input_ids.shape == (3, max(lengths))
    collator = DataCollatorForLanguageModeling(midi_tokenizer, mlm=False)
    batch = collator([{"input_ids": f.input_ids} for f in features])
    assert batch["input_ids"].shape == batch["labels"].shape == (3, max(lengths))
    for row, length in enumerate(lengths):
        assert batch["labels"][row, :length].tolist() == features[row].input_ids
        assert (batch["labels"][row, length:] == -100).all()


def test_token_id_lists_pass_through(midi_tokenizer):
    ids = [5, 6, 7]
    assert midi_tokenizer(ids).input_ids == [
        midi_tokenizer.bos_token_id,
        *ids,
        midi_tokenizer.eos_token_id,
    ]
    batch = midi_tokenizer([[5, 6], [7]], padding=True, return_tensors="pt")
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    with pytest.raises(ValueError, match="pairs"):
        midi_tokenizer(ids, ids)
    with pytest.raises(TypeError, match="MIDI file paths"):
        midi_tokenizer([1.5])


def test_token_id_lists_outside_the_vocabulary_are_rejected(midi_tokenizer):
    size = len(midi_tokenizer)
    for bad in (size, size + 100, -1):
        with pytest.raises(ValueError, match=f"token id {bad} is outside .*vocab size {size}"):
            midi_tokenizer([5, bad, 6])
        with pytest.raises(ValueError, match=f"token id {bad} is outside"):
            midi_tokenizer([[5, 6], [7, bad]], padding=True)


def test_encoding_never_mutates_the_callers_score(tokenizers, valid_midi_paths):
    for path in valid_midi_paths:
        score = symusic.Score(path)
        reference = score.copy(deep=True)
        for tokenizer in tokenizers.values():
            tokenizer(score)
            tokenizer([score, score])
            assert score == reference, f"{tokenizer.preset} modified the Score of {path.name}"


def test_file_without_notes_gives_special_tokens_and_a_warning(
    midi_tokenizer, no_notes_midi_path, caplog
):
    with caplog.at_level(logging.WARNING):
        encoded = midi_tokenizer(no_notes_midi_path)
    assert encoded.input_ids == [midi_tokenizer.bos_token_id, midi_tokenizer.eos_token_id]
    assert no_notes_midi_path.name in caplog.text and "no notes" in caplog.text


def test_broken_files_through_the_tokenizer(midi_tokenizer, broken_midi_paths):
    for path in broken_midi_paths:
        with pytest.raises(MidiFileError, match=path.name):
            midi_tokenizer(path)
        with pytest.raises(MidiFileError, match=path.name):
            midi_tokenizer([broken_midi_paths[0].parent.parent / "edge" / "no_notes.mid", path])


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_round_trip_keeps_notes(tokenizers, valid_midi_paths, preset):
    """Encode, decode, encode again: every note survives within the preset's resolution.

    Tolerances, in quarter notes, derived from the preset's ``beat_res``: onsets within half
    a step of the finest grid (0.5 / max resolution); durations within one step of the
    coarsest duration grid (1 / min resolution) after miditok's 12-beat cap for Duration
    tokens (note-on/off schemes cannot tell apart overlapping notes of the same pitch and
    instrument, so those durations are not compared). A second round trip is exact.
    """
    tokenizer = tokenizers[preset]
    beat_res = tokenizer.miditok.config.beat_res
    onset_tolerance = 0.5 / max(beat_res.values()) + 1e-9
    duration_tolerance = 1.0 / min(beat_res.values()) + 1e-9
    max_duration = max(end for _, end in beat_res)
    note_on_off = isinstance(tokenizer.miditok, miditok.MIDILike)
    for path in valid_midi_paths:
        original = _notes_by_instrument_and_pitch(load_score(path))
        first = tokenizer.to_score(tokenizer(path).input_ids)
        decoded = _notes_by_instrument_and_pitch(first)
        assert decoded.keys() == original.keys(), path.name
        for key, notes in original.items():
            assert len(decoded[key]) == len(notes), (path.name, key)
            for index, ((onset, duration), (onset2, duration2)) in enumerate(
                zip(notes, decoded[key])
            ):
                assert abs(onset - onset2) <= onset_tolerance, (path.name, key, onset, onset2)
                if note_on_off and _overlaps_same_pitch(notes, index):
                    continue
                expected = duration if note_on_off else min(duration, max_duration)
                assert abs(expected - duration2) <= duration_tolerance, (path.name, key, onset)
        second = tokenizer.to_score(tokenizer(first).input_ids)
        assert _notes_by_instrument_and_pitch(second) == decoded, path.name


@pytest.mark.parametrize("preset", ["remi", "tsd", "midilike"])
def test_tempo_and_meter_changes_survive(tokenizers, valid_midi_paths, preset):
    path = next(p for p in valid_midi_paths if p.name == "tempo_and_meter_changes.mid")
    original = load_score(path)
    decoded = tokenizers[preset].to_score(tokenizers[preset](path).input_ids)
    bins = tokenizers[preset].miditok.tempos
    # miditok picks the nearest bin in microseconds per quarter: within half a bin ratio
    half_bin = max(b / a for a, b in zip(bins, bins[1:])) ** 0.5 + 1e-3

    def quarters(event, score):
        return event.time / score.ticks_per_quarter

    assert len(decoded.tempos) == len(original.tempos) == 3
    for before, after in zip(original.tempos, decoded.tempos):
        assert quarters(before, original) == quarters(after, decoded)
        assert max(before.qpm / after.qpm, after.qpm / before.qpm) <= half_bin
    signatures = [
        (quarters(t, original), t.numerator, t.denominator) for t in original.time_signatures
    ]
    assert [
        (quarters(t, decoded), t.numerator, t.denominator) for t in decoded.time_signatures
    ] == (signatures)


METERED_PRESETS = [
    name for name in sorted(PRESETS) if PRESETS[name].config.get("use_time_signatures")
]
REAL_METERS = [(2, 2), (3, 2), (4, 2), (5, 8), (7, 8), (9, 8), (7, 4)]


def test_presets_document_their_meters_and_tempi(tokenizers):
    assert METERED_PRESETS == ["midilike", "mmm", "remi", "tsd"]
    for numerator, denominator in REAL_METERS + [(3, 4), (4, 4), (6, 8), (12, 8)]:
        assert numerator in TIME_SIGNATURE_RANGE[denominator]
    for name in ("remi", "performance"):
        tempos = list(tokenizers[name].miditok.tempos)
        assert tempos[0] == 30 and tempos[-1] == 480 and {60, 120, 240} <= set(tempos)


@pytest.mark.parametrize("preset", METERED_PRESETS)
def test_real_meters_survive_the_round_trip(tokenizers, preset, caplog):
    """2/2, 3/2, 4/2, 5/8, 7/8, 9/8 and 7/4 (alone, and one after the other) come back as
    written, notes included, and nothing is reported as out of range."""
    tokenizer = tokenizers[preset]
    pieces = [_metered_score([meter]) for meter in REAL_METERS] + [_metered_score(REAL_METERS)]
    with caplog.at_level(logging.WARNING):
        for score in pieces:
            decoded = tokenizer.to_score(tokenizer(score).input_ids)
            assert _meters_in_quarters(decoded) == _meters_in_quarters(score)
            assert _notes_by_instrument_and_pitch(decoded) == _notes_by_instrument_and_pitch(score)
    assert "outside this tokenizer's range" not in caplog.text


def test_meters_and_tempi_outside_the_range_warn_once_per_file(tmp_path, caplog):
    tokenizer = MidiTokenizer(preset="tsd")
    odd = _metered_score([(11, 16), (3, 4), (11, 16), (5, 16)])
    odd.tempos.append(symusic.Tempo(480, 500))
    odd.tempos.append(symusic.Tempo(960, 10))
    paths = [tmp_path / "odd.mid", tmp_path / "odd_again.mid"]
    for path in paths:
        odd.dump_midi(path)
    with caplog.at_level(logging.WARNING):
        ids = tokenizer([str(p) for p in paths]).input_ids
    warnings = [r.getMessage() for r in caplog.records if "outside this tokenizer" in r.message]
    assert len(warnings) == 2
    for path, message in zip(paths, warnings):
        assert message.startswith(f"{path}: ")
        for change in ("time signature 11/16 -> 4/4", "time signature 5/16 -> 3/4"):
            assert change in message
        assert "tempo 500 bpm -> 480 bpm" in message and "tempo 10 bpm -> 30 bpm" in message
        assert message.count("11/16") == 1
    # what the warning says it became is what the tokens hold
    decoded = tokenizer.to_score(ids[0])
    assert [(n, d) for _, n, d in _meters_in_quarters(decoded)] == [(4, 4), (3, 4)]
    assert [round(t.qpm) for t in decoded.tempos] == [101, 480, 30]  # 100.91 is a bin


def test_a_saved_tokenizer_keeps_its_own_meters_and_tempi(tmp_path):
    """A folder saved with miditok's old default ranges loads with those ranges, not the new
    preset defaults (the vocabulary a model was trained on must not move)."""
    old_ranges = {
        "time_signature_range": {8: [3, 12, 6], 4: [5, 6, 3, 2, 1, 4]},
        "tempo_range": (40, 250),
        "num_tempos": 32,
        "log_tempos": False,
    }
    old = MidiTokenizer(preset="remi", **old_ranges)
    old.save_pretrained(tmp_path)
    assert len(old) < len(MidiTokenizer(preset="remi"))
    seven_eight = _metered_score([(7, 8)])
    for reloaded in (
        MidiTokenizer.from_pretrained(tmp_path),
        AutoTokenizer.from_pretrained(tmp_path),
    ):
        assert reloaded.get_vocab() == old.get_vocab()
        assert reloaded.miditok.time_signatures == old.miditok.time_signatures
        assert list(reloaded.miditok.tempos) == list(old.miditok.tempos)
        assert reloaded(seven_eight).input_ids == old(seven_eight).input_ids
        assert reloaded.out_of_range_events(seven_eight) == ["time signature 7/8 -> 4/4"]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_drums_stay_drums(tokenizers, valid_midi_paths, preset):
    path = next(p for p in valid_midi_paths if p.name == "band_with_drums.mid")
    original = load_score(path)
    decoded = tokenizers[preset].to_score(tokenizers[preset](path).input_ids)
    drums = [t for t in decoded.tracks if t.is_drum]
    assert len(drums) == 1
    assert len(drums[0].notes) == sum(len(t.notes) for t in original.tracks if t.is_drum)
    assert "Program_-1" in tokenizers[preset].decode(tokenizers[preset](path).input_ids)


# --------------------------------------------------------------------------- decoding


def test_decode_gives_readable_tokens(midi_tokenizer, valid_midi_paths):
    ids = midi_tokenizer(valid_midi_paths[0]).input_ids
    text = midi_tokenizer.decode(ids)
    tokens = text.split(" ")
    assert tokens[0] == "BOS_None" and tokens[-1] == "EOS_None"
    assert tokens == midi_tokenizer.convert_ids_to_tokens(ids)
    assert any(t.startswith("Pitch_") for t in tokens)
    assert midi_tokenizer.decode(ids, skip_special_tokens=True).split(" ") == tokens[1:-1]
    assert midi_tokenizer.convert_tokens_to_ids(tokens) == ids
    assert midi_tokenizer.decode([ids[:4], ids[:2]]) == [" ".join(tokens[:4]), " ".join(tokens[:2])]
    size = len(midi_tokenizer)
    assert midi_tokenizer.decode([size, -1]) == f"UNK_{size} UNK_-1"
    with pytest.raises(ValueError, match="not in this MidiTokenizer"):
        midi_tokenizer.convert_tokens_to_ids("Pitch_999")


def test_to_score_drops_special_and_invalid_ids(valid_midi_paths, caplog):
    tokenizer = MidiTokenizer()
    content = tokenizer.encode_midi(valid_midi_paths[0])
    clean = tokenizer.to_score(content)
    pad, bos, eos, mask = (tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS)
    invalid = [-7, len(tokenizer), len(tokenizer) + 100]
    middle = len(content) // 2
    noisy = [
        pad,
        pad,
        bos,
        *content[:middle],
        mask,
        invalid[0],
        *content[middle:],
        eos,
        *invalid[1:],
    ]
    with caplog.at_level(logging.WARNING):
        score, report = tokenizer.to_score(torch.tensor([noisy]), return_report=True)
    assert report == DecodeReport(
        num_ids=len(noisy), num_special=5, num_invalid=len(invalid), num_notes=clean.note_num()
    )
    assert score == clean and caplog.text == ""  # the caller has the report
    with caplog.at_level(logging.WARNING):
        assert tokenizer.to_score(noisy) == clean
    size = len(tokenizer)
    assert f"dropped 3 id(s) outside the tokenizer's vocabulary (ids 0-{size - 1})" in caplog.text
    assert "the first is -7" in caplog.text
    assert tokenizer.last_decode_report == report
    assert tokenizer.last_decode_dropped == 5 + len(invalid)
    only_noise, report = tokenizer.to_score([pad] * 4 + invalid, return_report=True)
    assert only_noise.note_num() == 0 and report.num_dropped == 4 + len(invalid)
    with pytest.raises(ValueError, match="one sequence"):
        tokenizer.to_score([[1, 2], [3, 4]])


def test_to_midi_writes_a_readable_file(midi_tokenizer, valid_midi_paths, tmp_path):
    ids = midi_tokenizer(valid_midi_paths[0]).input_ids
    target = tmp_path / "out" / "nested" / "piece.mid"
    written = midi_tokenizer.to_midi(ids, target)
    assert written == target and target.is_file()

    # MIDI cannot hold overlapping notes of one pitch on one channel: compare the onsets.
    def onsets(score):
        notes = _notes_by_instrument_and_pitch(score)
        return {key: [onset for onset, _ in value] for key, value in notes.items()}

    assert onsets(symusic.Score(target)) == onsets(midi_tokenizer.to_score(ids))
    other = tmp_path / "decoded.mid"
    assert midi_tokenizer.decode(ids, output_path=other) == midi_tokenizer.decode(ids)
    assert other.read_bytes() == target.read_bytes()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ids=st.lists(st.integers(min_value=-3, max_value=700), max_size=120))
def test_decoding_arbitrary_ids_never_fails(midi_tokenizer, ids):
    score, report = midi_tokenizer.to_score(ids, return_report=True)
    assert report.num_ids == len(ids)
    assert report.num_notes == score.note_num()
    assert isinstance(midi_tokenizer.decode(ids), str)


# --------------------------------------------------------------------------- fuzzing
# Mutated and truncated MIDI bytes reach symusic's native parser only after the validator
# in midi_io; they are fuzzed in child processes by tests/test_robustness.py, so that a
# native crash fails a test instead of killing pytest.


# --------------------------------------------------------------------------- construction


def test_overrides_and_from_miditok(valid_midi_paths):
    tokenizer = MidiTokenizer(preset="performance", use_velocities=True, max_file_size=None)
    assert tokenizer.miditok.config.use_velocities
    assert any(t.startswith("Velocity_") for t in tokenizer.get_vocab())
    assert not any(
        t.startswith("Velocity_") for t in MidiTokenizer(preset="performance").get_vocab()
    )

    config = miditok.TokenizerConfig(use_programs=True, beat_res={(0, 4): 4})
    wrapped = MidiTokenizer.from_miditok(miditok.TSD(config))
    assert (
        wrapped(valid_midi_paths[0]).input_ids[1:-1]
        == wrapped.miditok.encode(symusic.Score(valid_midi_paths[0])).ids
    )
    with pytest.raises(ValueError, match="Unknown preset"):
        MidiTokenizer(preset="nope")
    with pytest.raises(ValueError, match="single token stream"):
        MidiTokenizer.from_miditok(miditok.REMI())
    with pytest.raises(ValueError, match="single token stream"):
        MidiTokenizer.from_miditok(miditok.CPWord(config))
    no_bos = miditok.TokenizerConfig(use_programs=True, special_tokens=["PAD"])
    with pytest.raises(ValueError, match="BOS"):
        MidiTokenizer.from_miditok(miditok.REMI(no_bos))


# --------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("preset", ["performance", "structured"])
def test_save_and_reload(tmp_path, valid_midi_paths, preset):
    tokenizer = MidiTokenizer(preset=preset, use_velocities=True, padding_side="left")
    files = tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / MIDITOK_FILE_NAME).is_file() and not (tmp_path / "tokenizer.json").exists()
    assert str(tmp_path / MIDITOK_FILE_NAME) in files
    reloaded = MidiTokenizer.from_pretrained(tmp_path)
    auto = AutoTokenizer.from_pretrained(tmp_path)
    for loaded in (reloaded, auto):
        assert type(loaded) is MidiTokenizer
        assert loaded.get_vocab() == tokenizer.get_vocab()
        assert loaded.miditok.config.use_velocities
        assert loaded.padding_side == "left"
        assert loaded(valid_midi_paths).input_ids == tokenizer(valid_midi_paths).input_ids


def test_bpe_training_survives_save_and_reload(tmp_path, chorale_midi_paths, valid_midi_paths):
    base = MidiTokenizer()
    tokenizer = MidiTokenizer()
    base_size = len(tokenizer)
    tokenizer.train_bpe(chorale_midi_paths, vocab_size=base_size + 50)
    assert len(tokenizer) == base_size + 50 == len(tokenizer.get_vocab())
    for token in SPECIAL_TOKENS:
        assert tokenizer.convert_tokens_to_ids(token) == base.convert_tokens_to_ids(token)

    path = chorale_midi_paths[0]
    ids = tokenizer(path).input_ids
    assert len(ids) < len(base(path).input_ids)
    assert max(ids) >= base_size and "+" in tokenizer.decode(ids)
    expected = _notes_by_instrument_and_pitch(base.to_score(base(path).input_ids))
    assert _notes_by_instrument_and_pitch(tokenizer.to_score(ids)) == expected

    tokenizer.save_pretrained(tmp_path)
    for reloaded in (
        MidiTokenizer.from_pretrained(tmp_path),
        AutoTokenizer.from_pretrained(tmp_path),
    ):
        assert len(reloaded) == len(tokenizer) and reloaded.miditok.is_trained
        assert reloaded(path).input_ids == ids
        assert _notes_by_instrument_and_pitch(reloaded.to_score(ids)) == expected
    with pytest.raises(MidiFileError):
        MidiTokenizer().train_bpe([valid_midi_paths[0], chorale_midi_paths[0].parent.parent], 600)


def test_tokenizer_config_has_remote_code_entry(tmp_path):
    MidiTokenizer().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "MidiTokenizer"
    assert config["auto_map"]["AutoTokenizer"][0] == "tokenization_midi.MidiTokenizer"
    for name in ("tokenization_midi.py", "midi_io.py", "presets.py"):
        assert (tmp_path / name).is_file()


def test_auto_tokenizer_in_a_process_without_midiformers(tmp_path, valid_midi_paths):
    """trust_remote_code loading where ``import midiformers`` fails, fully offline."""
    tokenizer = MidiTokenizer(preset="tsd")
    tokenizer.train_bpe(valid_midi_paths[:3], vocab_size=len(tokenizer) + 20)
    saved = tmp_path / "saved"
    tokenizer.save_pretrained(saved)
    path = valid_midi_paths[0]
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["midiformers"] = None  # any import of midiformers now fails
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained({str(saved)!r}, trust_remote_code=True)
        assert "midiformers" not in type(tok).__module__, type(tok).__module__
        ids = tok({str(path)!r}).input_ids
        print(ids)
        print(tok.to_score(ids).note_num())
        """
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "PYTHONPATH": "",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert json.loads(lines[-2]) == tokenizer(path).input_ids
    assert int(lines[-1]) == tokenizer.to_score(tokenizer(path).input_ids).note_num() > 0
