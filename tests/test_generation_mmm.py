"""The ``mmm`` preset (multi-track REMI with attribute controls and infilling tokens) and its
grammar: miditok's encodings are valid sequences, sequences sampled under the grammar (random
logits, an untrained tiny model) decode with zero dropped tokens, with exact bar counts,
instrument sets and infill prompts, and the tokenizer saves and loads (remote code too)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from test_generation_grammar import sample_random
from test_generation_pipeline import GPT, tiny_model
from transformers import pipeline

import midiformers  # noqa: F401  (registers the task)
from midiformers import MidiTokenizer
from midiformers.generation import (
    MidiGrammar,
    MidiGrammarLogitsProcessor,
    UnsupportedGrammarError,
    check_sequence,
)
from midiformers.generation.controls import bars_per_track, read_controls
from midiformers.generation.infilling import (
    InfillVocabulary,
    build_infill_prompt,
    check_fills,
)
from midiformers.tokenization.presets import FILL_END, FILL_START, INFILL_PLACEHOLDER

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mmm() -> MidiTokenizer:
    return MidiTokenizer(preset="mmm")


def ids_of(tokenizer: MidiTokenizer, tokens: str) -> list[int]:
    return tokenizer.convert_tokens_to_ids(tokens.split())


def trimmed(tokenizer: MidiTokenizer, row: list[int]) -> list[int]:
    """The row up to its EOS (random sampling goes on with EOS / PAD after it)."""
    return row[: row.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in row else row


def programs_of_tracks(tokenizer: MidiTokenizer, row: list[int]) -> list[int]:
    return [track["program"] for track in read_controls(tokenizer, row)]


def test_preset_builds_an_mmm_tokenizer(mmm):
    assert type(mmm.miditok).__name__ == "MMM" and mmm.miditok.one_token_stream
    assert mmm.supports_infilling
    assert mmm.attribute_controls == [
        "density",
        "polyphony",
        "pitch_classes",
        "durations",
        "repetition",
    ]
    for token in (INFILL_PLACEHOLDER, FILL_START, FILL_END, "Track_Start", "Track_End"):
        assert token in mmm.get_vocab()
    remi = MidiTokenizer(preset="remi")
    assert not remi.supports_infilling and remi.attribute_controls == []


@pytest.mark.parametrize("ratios", [None, (1.0, 1.0), (0.5, (0.2, 0.8))])
def test_encodings_are_valid_and_decode_every_note(mmm, valid_midi_paths, ratios):
    """miditok's own encodings (with or without control tokens) pass the checker, and the
    control tokens change nothing in the decoded music."""
    for path in valid_midi_paths:
        plain = mmm.encode_midi(path)
        ids = mmm.encode_midi(path, control_ratios=ratios, seed=3)
        check = check_sequence(mmm, [mmm.bos_token_id, *ids, mmm.eos_token_id])
        assert check.is_valid, (path.name, check.errors[:3])
        score, report = mmm.to_score(ids, return_report=True)
        assert report.num_dropped == 0
        assert score == mmm.to_score(plain)
        assert check.num_note_tokens == score.note_num() > 0
        assert len(score.tracks) == ids.count(mmm.convert_tokens_to_ids("Track_Start"))


def test_tracks_of_one_program_stay_apart(mmm, chorale_midi_paths):
    """Four voices on one program are four tracks (the one-stream presets merge them)."""
    path = chorale_midi_paths[0]
    assert len(mmm.to_score(mmm(path).input_ids).tracks) == 4
    remi = MidiTokenizer(preset="remi")
    assert len(remi.to_score(remi(path).input_ids).tracks) == 1


def test_checker_catches_misplaced_mmm_tokens(mmm):
    head = "Track_Start Program_0 Bar_None TimeSig_4/4"
    note = "Position_0 Pitch_60 Velocity_63 Duration_1.0.8"
    good = f"{head} {note} Track_End Track_Start Program_-1 Bar_None TimeSig_4/4 Track_End"
    assert check_sequence(mmm, ids_of(mmm, good)).is_valid
    broken = {
        "a Program inside a track": f"{head} {note} Program_5 {note} Track_End",
        "not closed by Track_End": f"{head} {note} Track_Start Program_1 Track_End",
        "track control after": f"{head} {note} ACTrackRepetition_0.11 Track_End",
        "bar control after the bar's first note": f"{head} {note} ACBarNoteDensity_1 Track_End",
        "outside every track": f"{head} {note} Track_End Bar_None",
        "does not match Program": f"{head} Position_0 PitchDrum_36 Velocity_63 "
        "Duration_1.0.8 Track_End",
        "no FillBar_Start": f"{head} Infill_Bar Track_End",
        "without an Infill_Bar": f"{head} {note} Track_End FillBar_Start {note} FillBar_End",
        "positions and notes only": f"{head} Infill_Bar Track_End FillBar_Start Bar_None "
        f"{note} FillBar_End",
    }
    for reason, tokens in broken.items():
        errors = check_sequence(mmm, ids_of(mmm, tokens)).errors
        assert any(reason in error.reason for error in errors), (reason, errors)


CASES = {
    "free": {},
    "bars": {"max_bars": 2},
    "one bar": {"max_bars": 1},
    "programs": {"programs": [0, "drums"]},
    "bars and programs": {"max_bars": 3, "programs": [33]},
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("new_tokens", [16, 40, 160])
def test_random_logits_decode_cleanly(mmm, case, new_tokens):
    options = CASES[case]
    processor = MidiGrammarLogitsProcessor(mmm, max_new_tokens=new_tokens, **options)
    batch = sample_random(mmm, processor, 12, new_tokens, seed=new_tokens)
    notes = 0
    for row in batch.tolist():
        row = trimmed(mmm, row)
        check = check_sequence(mmm, row)
        assert check.is_valid, check.errors[:3]
        score, report = mmm.to_score(row, return_report=True)
        assert report.num_invalid == 0 and score.note_num() == check.num_note_tokens
        tokens = mmm.convert_ids_to_tokens(row)
        assert INFILL_PLACEHOLDER not in tokens and FILL_START not in tokens
        if "max_bars" in options:
            closed = tokens.count("Track_Start") == tokens.count("Track_End")
            counts = bars_per_track(mmm, row)
            assert all(n == options["max_bars"] for n in (counts if closed else counts[:-1]))
        if "programs" in options:
            allowed = set(processor.grammar.programs)
            assert set(programs_of_tracks(mmm, row)) <= allowed
        notes += score.note_num()
    assert notes > 0 and processor.num_fallbacks == 0


def test_a_budget_too_small_for_the_bars_is_refused(mmm):
    processor = MidiGrammarLogitsProcessor(mmm, max_new_tokens=8, max_bars=3)
    with pytest.raises(ValueError, match="max_bars=3 needs at least"):
        sample_random(mmm, processor, 2, 2)


def test_without_programs_random_logits_choose_others(mmm):
    """The programs test above can fail: unconstrained, other programs come up."""
    batch = sample_random(mmm, MidiGrammarLogitsProcessor(mmm, max_new_tokens=40), 8, 40)
    programs = {p for row in batch.tolist() for p in programs_of_tracks(mmm, row)}
    assert programs - {0, -1, 33}


def test_every_track_gets_exactly_the_asked_bars(mmm):
    """With a budget for several tracks, each one has N bars, the last one included."""
    processor = MidiGrammarLogitsProcessor(mmm, max_new_tokens=400, max_bars=2)
    batch = sample_random(mmm, processor, 8, 400, seed=1)
    tracks = 0
    for row in batch.tolist():
        row = trimmed(mmm, row)
        counts = bars_per_track(mmm, row)  # the budget's end closes the last track too
        assert counts and all(n == 2 for n in counts), counts
        assert mmm.convert_ids_to_tokens(row).count("Track_End") == len(counts)
        tracks += len(counts)
    assert tracks > 8  # several tracks in some pieces


@pytest.mark.parametrize(
    ("piece", "bars", "programs"),
    [
        ("band_with_drums.mid", (1, 2), None),
        ("band_with_drums.mid", None, ["drums"]),
        ("tempo_and_meter_changes.mid", (2, 4), None),
        ("bach_bwv66.6.mid", (3, 3), None),
    ],
)
def test_infill_prompts_get_one_fill_per_placeholder(mmm, midi_dir, piece, bars, programs):
    prompt = build_infill_prompt(mmm, midi_dir / "valid" / piece, bars=bars, programs=programs)
    budget = 30 * prompt.num_holes + 1
    processor = MidiGrammarLogitsProcessor(mmm, max_new_tokens=budget)
    start = torch.tensor([prompt.input_ids] * 6)
    batch = sample_random(mmm, processor, 6, budget, seed=2, prompt=start)
    vocab = InfillVocabulary(mmm)
    for row in batch.tolist():
        row = trimmed(mmm, row)
        generated = row[len(prompt.input_ids) :]
        tokens = mmm.convert_ids_to_tokens(generated)
        assert tokens.count(FILL_START) == tokens.count(FILL_END) == prompt.num_holes
        assert "Track_Start" not in tokens and INFILL_PLACEHOLDER not in tokens
        check = check_sequence(mmm, row)
        assert check.is_valid, check.errors[:3]
        assert check_fills(vocab, prompt, generated).num_dropped == 0  # the fill rules agree
        assert mmm.to_score(row).note_num() == check.num_note_tokens
    assert processor.num_fallbacks == 0


@pytest.mark.parametrize(("program", "drums"), [(-1, True), (0, False), (33, False)])
def test_fills_play_their_placeholders_instrument(mmm, midi_dir, program, drums):
    """A drum track's holes are filled with drum notes, a pitched track's with pitches."""
    path = midi_dir / "valid" / "band_with_drums.mid"
    prompt = build_infill_prompt(mmm, path, bars=(1, 2), programs=[program])
    processor = MidiGrammarLogitsProcessor(mmm, max_new_tokens=120)
    start = torch.tensor([prompt.input_ids] * 4)
    batch = sample_random(mmm, processor, 4, 120, seed=5, prompt=start)
    notes = [
        token
        for row in batch.tolist()
        for token in mmm.convert_ids_to_tokens(trimmed(mmm, row)[len(prompt.input_ids) :])
        if token.startswith(("Pitch_", "PitchDrum_"))
    ]
    assert notes and all(token.startswith("PitchDrum_") == drums for token in notes)


def test_untrained_model_pipeline_bars_and_programs(mmm):
    model = tiny_model(*GPT, mmm)
    generator = pipeline("midi-generation", model=model, tokenizer=mmm)
    pieces = generator(
        num_bars=2, programs=[0, "drums"], max_new_tokens=160, num_return_sequences=3, seed=0
    )
    for piece in pieces:
        assert piece["num_dropped_tokens"] == 0
        counts = bars_per_track(mmm, piece["token_ids"])
        ended = piece["token_ids"][-1] == mmm.eos_token_id
        assert all(n == 2 for n in (counts if ended else counts[:-1]))
        assert set(programs_of_tracks(mmm, piece["token_ids"])) <= {0, -1}
    assert any(piece["num_notes"] for piece in pieces)


def test_unmodelled_options_are_refused(mmm, valid_midi_paths):
    grammar = MidiGrammar.for_tokenizer(mmm)
    with pytest.raises(UnsupportedGrammarError, match="max_seconds"):
        grammar.with_max_seconds(10)
    bpe = MidiTokenizer(preset="mmm")
    bpe.train_bpe(valid_midi_paths[:2], vocab_size=len(bpe) + 20)
    with pytest.raises(UnsupportedGrammarError, match="BPE"):
        MidiGrammar(bpe)


def test_save_and_load_round_trip(mmm, valid_midi_paths, tmp_path):
    mmm.save_pretrained(tmp_path)
    loaded = MidiTokenizer.from_pretrained(tmp_path)
    path = valid_midi_paths[0]
    assert loaded.encode_midi(path) == mmm.encode_midi(path)
    with_controls = mmm.encode_midi(path, control_ratios=(1.0, 0.5), seed=1)
    assert loaded.encode_midi(path, control_ratios=(1.0, 0.5), seed=1) == with_controls
    assert loaded.get_vocab() == mmm.get_vocab()
    assert loaded.supports_infilling and loaded.attribute_controls == mmm.attribute_controls


def test_remote_code_load_in_a_process_without_midiformers(mmm, valid_midi_paths, tmp_path):
    saved = tmp_path / "saved"
    mmm.save_pretrained(saved)
    path = valid_midi_paths[0]
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["midiformers"] = None  # any import of midiformers now fails
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained({str(saved)!r}, trust_remote_code=True)
        assert "midiformers" not in type(tok).__module__, type(tok).__module__
        ids = tok.encode_midi({str(path)!r}, control_ratios=(1.0, 1.0), seed=0)
        print(json.dumps([ids, tok.to_score(ids).note_num(), tok.attribute_controls,
                          tok.supports_infilling]))
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
    ids, notes, controls, infilling = json.loads(result.stdout.strip().splitlines()[-1])
    assert ids == mmm.encode_midi(path, control_ratios=(1.0, 1.0), seed=0)
    assert notes == mmm.to_score(ids).note_num() > 0
    assert controls == mmm.attribute_controls and infilling
