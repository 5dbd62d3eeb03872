"""Attribute controls: the tokens round-trip through the tokenizer (the values read back match
what miditok computes from the decoded music, and what the notes of each bar say), asked-for
controls appear as the right tokens in every track and every bar with notes (random logits, an
untrained model through the pipeline), bad values give one-line errors, and training data gets
random control tokens, deterministically under a seed."""

from __future__ import annotations

import inspect
import random

import datasets
import numpy as np
import pytest
import symusic
import torch
from miditok.utils import get_bars_ticks
from test_generation_grammar import sample_random
from test_generation_pipeline import GPT, tiny_model
from transformers import pipeline

import midiformers  # noqa: F401  (registers the task)
from midiformers import MidiTokenizer
from midiformers.data_scripts import tokenize_dataset
from midiformers.data_scripts.processing import PitchTranspose
from midiformers.generation import (
    CONTROLS,
    MidiGrammar,
    MidiGrammarLogitsProcessor,
    UnsupportedGrammarError,
    check_generation_options,
    check_sequence,
    control_token_ids,
)
from midiformers.generation.controls import (
    bars_per_track,
    check_control,
    control_values,
    measure_controls,
    read_controls,
)
from midiformers.generation.pipeline import MidiGenerationPipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ASKED = {
    "density": "low",
    "polyphony": (1, 2),
    "pitch_classes": ["C", "E", "G"],
    "durations": ["quarter", "eighth"],
    "repetition": 0.3,
}


@pytest.fixture(scope="module")
def mmm() -> MidiTokenizer:
    return MidiTokenizer(preset="mmm")


def names(tokenizer: MidiTokenizer, ids: list[int]) -> list[str]:
    return tokenizer.convert_ids_to_tokens(ids)


# ---------------------------------------------------------------------- round trip


def by_type(tokens: list[str], like: list[str] | None = None) -> dict[str, list[str]]:
    """Control tokens grouped by type (``ACBarPitchClass``: every class of the bar), keeping
    only the types present in ``like``."""
    groups: dict[str, list[str]] = {}
    for token in tokens:
        groups.setdefault(token.split("_")[0], []).append(token)
    if like is not None:
        groups = {kind: groups.get(kind, []) for kind in by_type(like)}
    return {kind: sorted(values) for kind, values in groups.items()}


@pytest.mark.parametrize("ratios", [(1.0, 1.0), (0.5, 0.3), ((0.0, 1.0), (0.0, 1.0))])
def test_control_tokens_round_trip(mmm, valid_midi_paths, ratios):
    """Encode with random controls, decode, compute every control of the decoded music with
    miditok: each control token written matches its track's or bar's value."""
    compared = 0
    for seed, path in enumerate(valid_midi_paths):
        ids = mmm.encode_midi(path, control_ratios=ratios, seed=seed)
        written = read_controls(mmm, ids)
        measured = measure_controls(mmm, mmm.to_score(ids))
        assert [t["program"] for t in written] == [t["program"] for t in measured]
        for mine, truth in zip(written, measured):
            assert by_type(mine["track"]) == by_type(truth["track"], like=mine["track"])
            for bar, tokens in mine["bars"].items():
                assert by_type(tokens) == by_type(truth["bars"][bar], like=tokens), (path, bar)
                compared += 1
    assert compared > 20


def test_bar_controls_count_each_bar_on_its_own(mmm, chorale_midi_paths):
    """Density and pitch classes of a bar are those of its own notes, read straight from the
    score, also when the bars in between have no controls (miditok 3.1.0 alone counts the
    notes of the skipped bars too)."""
    path = chorale_midi_paths[0]
    ids = mmm.encode_midi(path, control_ratios=(0.0, 0.3), seed=7)
    score = mmm.to_score(ids)
    bars = np.array([*get_bars_ticks(score, only_notes_onsets=True), score.end() + 1])
    checked = 0
    for track, written in zip(score.tracks, read_controls(mmm, ids)):
        onsets = track.notes.numpy()["time"]
        pitches = track.notes.numpy()["pitch"]
        for bar, tokens in written["bars"].items():
            inside = (onsets >= bars[bar]) & (onsets < bars[bar + 1])
            density = [t for t in tokens if t.startswith("ACBarNoteDensity_")]
            if density:
                assert density == [f"ACBarNoteDensity_{int(inside.sum())}"]
                checked += 1
            classes = sorted(int(t.split("_")[1]) for t in tokens if "PitchClass" in t)
            if classes:
                assert classes == sorted({int(p) % 12 for p in pitches[inside]})
                checked += 1
    assert checked > 10


def test_encoding_with_controls_is_seeded(mmm, valid_midi_paths):
    path = valid_midi_paths[0]
    state = random.getstate()
    first = mmm.encode_midi(path, control_ratios=(0.5, 0.5), seed=11)
    assert random.getstate() == state  # the global RNG is left alone
    assert mmm.encode_midi(path, control_ratios=(0.5, 0.5), seed=11) == first
    others = {tuple(mmm.encode_midi(path, control_ratios=(0.5, 0.5), seed=s)) for s in range(4)}
    assert len(others) > 1


# ---------------------------------------------------------------------- generation


def assert_controls_everywhere(tokenizer, row, track_ids, bar_ids) -> int:
    """Every track opens with exactly the track controls; every bar with notes holds exactly
    the bar controls. Returns the bars with notes seen."""
    track_tokens, bar_tokens = names(tokenizer, track_ids), names(tokenizer, bar_ids)
    bars_with_notes = 0
    for track in read_controls(tokenizer, row):
        assert track["track"] == track_tokens
    current: list[str] | None = None
    for token in names(tokenizer, tokenizer.splice_fills(row)):
        if token in ("Bar_None", "Track_Start"):
            current = []
        elif token.startswith("ACBar") and current is not None:
            current.append(token)
        elif token.startswith(("Pitch_", "PitchDrum_")) and current is not None:
            assert current == bar_tokens
            bars_with_notes += 1
            current = None  # one check per bar
    return bars_with_notes


@pytest.mark.parametrize(
    "asked",
    [ASKED, {"density": 4}, {"pitch_classes": [0, 7]}, {"repetition": 1.0, "polyphony": 3}],
)
@pytest.mark.parametrize("max_bars", [None, 2])
def test_random_logits_write_the_asked_controls(mmm, asked, max_bars):
    track_ids, bar_ids = control_token_ids(mmm, **asked)
    grammar = MidiGrammar.for_tokenizer(mmm).with_controls(track_ids, bar_ids)
    processor = MidiGrammarLogitsProcessor(grammar, max_new_tokens=120, max_bars=max_bars)
    batch = sample_random(mmm, processor, 10, 120, seed=len(asked))
    bars = 0
    for row in batch.tolist():
        check = check_sequence(mmm, row)
        assert check.is_valid, check.errors[:3]
        bars += assert_controls_everywhere(mmm, row, track_ids, bar_ids)
    assert bars > 0 and processor.num_fallbacks == 0


@pytest.mark.parametrize("max_bars", [1, 4])
@pytest.mark.parametrize("slack", [0, 3, 12])
def test_tight_budgets_still_close_every_track(mmm, max_bars, slack):
    """With the fewest tokens that can reach the last bar (plus a little), every row still
    writes its controls, reaches bar N of each track and closes it: the grammar's costs count
    the controls it forces."""
    grammar = MidiGrammar.for_tokenizer(mmm).with_controls(*control_token_ids(mmm, **ASKED))
    grammar = grammar.with_max_bars(max_bars)
    state = grammar.initial_state(1, torch.device("cpu"))
    grammar.advance(state, torch.tensor([mmm.bos_token_id]))
    budget = int(grammar.completion_cost(state)) + slack
    processor = MidiGrammarLogitsProcessor(grammar, max_new_tokens=budget)
    batch = sample_random(mmm, processor, 16, budget, seed=slack)
    for row in batch.tolist():
        assert check_sequence(mmm, row).is_valid
        assert bars_per_track(mmm, row) and set(bars_per_track(mmm, row)) == {max_bars}
        assert assert_controls_everywhere(mmm, row, *control_token_ids(mmm, **ASKED)) > 0
    assert processor.num_fallbacks == 0


def test_without_controls_no_control_token_is_written(mmm):
    """The check above can fail: without controls the grammar writes none, and rows written
    under some controls do not pass as written under others."""
    batch = sample_random(mmm, MidiGrammarLogitsProcessor(mmm, max_new_tokens=80), 8, 80)
    assert not any(t.startswith("AC") for row in batch.tolist() for t in names(mmm, row))
    grammar = MidiGrammar.for_tokenizer(mmm).with_controls(*control_token_ids(mmm, **ASKED))
    rows = sample_random(mmm, MidiGrammarLogitsProcessor(grammar, max_new_tokens=80), 8, 80)
    with pytest.raises(AssertionError):
        for row in rows.tolist():
            assert_controls_everywhere(mmm, row, *control_token_ids(mmm, density="high"))


def test_pipeline_controls_with_an_untrained_model(mmm):
    model = tiny_model(*GPT, mmm)
    generator = pipeline("midi-generation", model=model, tokenizer=mmm)
    pieces = generator(**ASKED, num_bars=2, max_new_tokens=150, num_return_sequences=3, seed=0)
    track_ids, bar_ids = control_token_ids(mmm, **ASKED)
    for piece in pieces:
        assert piece["num_dropped_tokens"] == 0
        assert_controls_everywhere(mmm, piece["token_ids"], track_ids, bar_ids)
    assert any(piece["num_notes"] for piece in pieces)


def test_control_tokens_follow_miditok(mmm):
    track_ids, bar_ids = control_token_ids(mmm, **ASKED)
    assert names(mmm, track_ids) == [
        "ACTrackOnsetPolyphonyMin_1",
        "ACTrackOnsetPolyphonyMax_2",
        "ACTrackNoteDurationWhole_0",
        "ACTrackNoteDurationHalf_0",
        "ACTrackNoteDurationQuarter_1",
        "ACTrackNoteDurationEight_1",
        "ACTrackNoteDurationSixteenth_0",
        "ACTrackRepetition_0.33",
    ]
    assert names(mmm, bar_ids)[:5] == [
        "ACBarOnsetPolyphonyMin_1",
        "ACBarOnsetPolyphonyMax_2",
        "ACBarPitchClass_0",
        "ACBarPitchClass_4",
        "ACBarPitchClass_7",
    ]
    top = mmm.miditok.config.ac_note_density_bar_max
    assert names(mmm, control_token_ids(mmm, density=top)[1]) == [f"ACBarNoteDensity_{top}+"]
    assert control_token_ids(mmm) == ([], [])


@pytest.mark.parametrize(
    "asked",
    [
        {"density": 5, "polyphony": (1, 3), "pitch_classes": (0, 4, 7)},
        {"durations": ("quarter", "eighth"), "repetition": 0.33},
        {"density": 18, "durations": ("whole",), "polyphony": (2, 2)},
    ],
)
def test_control_values_read_back_what_was_asked(mmm, asked):
    track_ids, bar_ids = control_token_ids(mmm, **asked)
    read = control_values(names(mmm, bar_ids)) | control_values(names(mmm, track_ids))
    assert read == asked
    assert control_values(["Pitch_60", "Bar_None"]) == {}


def test_control_values_ignore_tokens_it_cannot_read():
    hostile = [
        "ACBarNoteDurationThirtySecond_1",  # a miditok note value the pipeline has no name for
        "ACBarNoteDensity_many",
        "ACBarPitchClass_",
        "ACTrackRepetition_nan?",
        "ACBarOnsetPolyphonyMin_1",  # half a pair
        "AC",
        "",
    ]
    assert control_values(hostile) == {}
    assert control_values([*hostile, "ACBarPitchClass_4"]) == {"pitch_classes": (4,)}


def test_control_values_of_a_measured_bar_match_its_notes(mmm):
    """A bar of C E G quarter notes (one at a time) measured by miditok reads back as such."""
    score = symusic.Score(480)
    track = symusic.Track(program=0)
    for i, pitch in enumerate((60, 64, 67, 72)):
        track.notes.append(symusic.Note(i * 480, 480, pitch, 80))
    score.tracks.append(track)
    bars = measure_controls(mmm, score)[0]["bars"]
    assert control_values(bars[0]) == {
        "density": 4,
        "polyphony": (1, 1),
        "pitch_classes": (0, 4, 7),
        "durations": ("quarter",),
    }


# ---------------------------------------------------------------------- errors


BAD = [
    ("density", "huge", "density must be 'low', 'medium', 'high' or a number"),
    ("density", 99, "density must be"),
    ("density", True, "density must be"),
    ("polyphony", 0, "polyphony must be an integer 1-6"),
    ("polyphony", (3, 2), "polyphony must be"),
    ("polyphony", [1, 2, 3], "polyphony must be"),
    ("pitch_classes", ["H"], "pitch_classes must be a list of pitch classes 0-11"),
    ("pitch_classes", [], "pitch_classes must be"),
    ("pitch_classes", 12, "pitch_classes must be"),
    ("durations", ["long"], "durations must be a list of note values among whole"),
    ("durations", [], "durations must be"),
    ("repetition", 1.5, r"repetition must be a number in \[0, 1\]"),
    ("repetition", float("nan"), "repetition must be"),
    ("repetition", "high", "repetition must be"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD)
def test_bad_values_give_one_line_errors(mmm, name, value, message):
    for call in (
        lambda: check_control(name, value),
        lambda: check_generation_options(**{name: value}),
        lambda: control_token_ids(mmm, **{name: value}),
    ):
        with pytest.raises(ValueError, match=message) as error:
            call()
        assert "\n" not in str(error.value)


def test_pipeline_checks_controls_before_generating(mmm, valid_midi_paths):
    model = tiny_model(*GPT, mmm)
    generator = pipeline("midi-generation", model=model, tokenizer=mmm)
    with pytest.raises(ValueError, match="polyphony must be"):
        generator(polyphony=7)
    with pytest.raises(ValueError, match="needs the grammar"):
        generator(density="low", grammar=False)
    with pytest.raises(ValueError, match="cannot be combined with infill"):
        generator(valid_midi_paths[0], density="low", infill_bars=(1, 1))
    remi = MidiTokenizer(preset="remi")
    plain = pipeline("midi-generation", model=tiny_model(*GPT, remi), tokenizer=remi)
    with pytest.raises(ValueError, match="density needs a tokenizer with .* attribute controls"):
        plain(density="low")
    with pytest.raises(UnsupportedGrammarError, match="no attribute-control tokens"):
        MidiGrammar.for_tokenizer(remi).with_controls([5])
    grammar = MidiGrammar.for_tokenizer(mmm)
    with pytest.raises(ValueError, match="not a bar-level attribute-control token"):
        grammar.with_controls(bar_ids=mmm.convert_tokens_to_ids(["Pitch_60"]))
    with pytest.raises(ValueError, match="not a track-level"):
        grammar.with_controls(control_token_ids(mmm, density=3)[1])


# ---------------------------------------------------------------------- the table


def test_controls_table_describes_the_pipeline_arguments(mmm):
    parameters = inspect.signature(MidiGenerationPipeline._sanitize_parameters).parameters
    for name, spec in CONTROLS.items():
        assert name in parameters and spec.name == name and spec.help
        assert spec.kind in ("level", "range", "set", "number")
        if spec.kind == "level":  # the words, then the number range
            values = [*(v for v in spec.values if isinstance(v, str)), *spec.values[-2:]]
        elif spec.kind == "set":
            values = [list(spec.values), [spec.values[0]]]
        else:
            values = list(spec.values)
        for value in values:  # every value a UI offers turns into tokens
            track_ids, bar_ids = control_token_ids(mmm, **{name: value})
            assert track_ids or bar_ids
        assert spec.default is None or check_control(name, spec.default) is not None
    assert set(CONTROLS) == set(mmm.attribute_controls)


# ---------------------------------------------------------------------- training data


def chorale_dataset(paths) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {"id": [p.stem for p in paths], "midi": [p.read_bytes() for p in paths]}
    )


def control_count(tokenizer, dataset) -> int:
    return sum(t.startswith("AC") for ids in dataset["input_ids"] for t in names(tokenizer, ids))


def test_training_data_gets_random_controls_under_a_seed(mmm, chorale_midi_paths):
    data = chorale_dataset(chorale_midi_paths)
    first = tokenize_dataset(data, mmm, 256, mode="piece", seed=3)
    again = tokenize_dataset(data, mmm, 256, mode="piece", seed=3)
    other = tokenize_dataset(data, mmm, 256, mode="piece", seed=4)
    assert first["input_ids"] == again["input_ids"] != other["input_ids"]
    assert control_count(mmm, first) > 0
    none = tokenize_dataset(data, mmm, 256, mode="piece", seed=3, control_ratios=None)
    assert control_count(mmm, none) == 0
    every = tokenize_dataset(data, mmm, 4096, mode="piece", seed=3, control_ratios=(1.0, 1.0))
    assert control_count(mmm, every) > control_count(mmm, first)
    remi = MidiTokenizer(preset="remi")  # no controls to add: "auto" adds none
    assert tokenize_dataset(data, remi, 256, mode="piece", seed=3)["input_ids"]
    with pytest.raises(ValueError, match="this tokenizer has no attribute controls"):
        tokenize_dataset(data, remi, 256, mode="piece", control_ratios=(0.5, 0.5))
    with pytest.raises(ValueError, match="bars_ratio must be a number in"):
        tokenize_dataset(data, mmm, 256, mode="piece", control_ratios=(0.5, 2))


def test_transposition_moves_pitch_class_controls(mmm, chorale_midi_paths):
    ids = mmm.encode_midi(chorale_midi_paths[0], control_ratios=(1.0, 1.0), seed=0)
    transpose = PitchTranspose(mmm, 6)
    for shift in (-5, 2, 6):
        moved = transpose.transpose(ids, shift)
        score, truth = mmm.to_score(moved), measure_controls(mmm, mmm.to_score(moved))
        assert score.note_num() == mmm.to_score(ids).note_num()
        for mine, measured in zip(read_controls(mmm, moved), truth):
            for bar, tokens in mine["bars"].items():
                classes = [t for t in tokens if "PitchClass" in t]
                assert classes == [t for t in measured["bars"][bar] if "PitchClass" in t]


def test_recipe_ratios():
    from midiformers.training.arguments import DataArguments

    assert DataArguments().control_ratios == ((0.0, 1.0), (0.0, 1.0))
    args = DataArguments(control_tracks_ratio=0.25, control_bars_ratio=1.0)
    assert args.control_ratios == (0.25, 1.0)
