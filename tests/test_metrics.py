"""The musical metrics: known answers on hand-made Scores, properties, inputs and errors.

Every expected value is derived from the metric's definition for a piece built here with
symusic (e.g. twelve pitch classes used once each: entropy log2 12).
"""

from __future__ import annotations

import math
from pathlib import Path

import evaluate
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from symusic import Note, Score, Tempo, TimeSignature, Track

from midiformers import MidiFileError
from midiformers.evaluation import METRIC_NAMES, PIECE_METRICS, load_metric, metric_path
from midiformers.evaluation import features as F

TPQ = 480


def make_score(
    notes: list[tuple[float, float, int]],
    tempo: float = 120.0,
    signature: tuple[int, int] | None = (4, 4),
    drums: list[tuple[float, float, int]] = (),
) -> Score:
    """A Score from (onset in quarters, duration in quarters, pitch) triples."""
    score = Score(TPQ)
    track = Track(name="piano", program=0)
    for onset, duration, pitch in notes:
        track.notes.append(Note(round(onset * TPQ), round(duration * TPQ), pitch, 80))
    score.tracks.append(track)
    if drums:
        kit = Track(name="drums", program=0, is_drum=True)
        for onset, duration, pitch in drums:
            kit.notes.append(Note(round(onset * TPQ), round(duration * TPQ), pitch, 100))
        score.tracks.append(kit)
    score.tempos.append(Tempo(0, tempo))
    if signature:
        score.time_signatures.append(TimeSignature(0, *signature))
    return score


def melody(pitches: list[int], duration: float = 1.0) -> Score:
    """Legato notes of equal length, one after the other."""
    return make_score([(i * duration, duration, p) for i, p in enumerate(pitches)])


CHROMATIC = melody(list(range(60, 72)))
C_MAJOR = melody([60, 62, 64, 65, 67, 69, 71, 72])
CHORDS = make_score([(beat, 1, p) for beat in range(8) for p in (48, 55, 64, 72)])


@pytest.fixture(scope="module")
def metrics() -> dict:
    return {name: load_metric(name) for name in METRIC_NAMES}


# --------------------------------------------------------------------- known answers


def test_pitch_class_entropy(metrics):
    entropy = metrics["pitch_class_entropy"]
    assert entropy.compute(predictions=[CHROMATIC])["pitch_class_entropy"] == pytest.approx(
        math.log2(12)
    )
    assert entropy.compute(predictions=[melody([60, 72, 48])])["pitch_class_entropy"] == 0.0
    two_classes = melody([60, 67, 60, 67])
    assert entropy.compute(predictions=[two_classes])["pitch_class_entropy"] == pytest.approx(1.0)
    result = entropy.compute(predictions=[CHROMATIC, two_classes])
    assert result["pitch_class_entropy"] == pytest.approx((math.log2(12) + 1) / 2)
    assert result["pitch_class_entropy_std"] == pytest.approx((math.log2(12) - 1) / 2)


def test_pitch_range_ignores_drums(metrics):
    score = make_score([(0, 1, 48), (1, 1, 72), (2, 1, 60)], drums=[(0, 0.25, 35), (1, 0.25, 81)])
    assert metrics["pitch_range"].compute(predictions=[score])["pitch_range"] == 24.0


def test_polyphony(metrics):
    polyphony = metrics["polyphony"]
    chords = polyphony.compute(predictions=[CHORDS])
    assert chords["polyphony"] == pytest.approx(4.0) and chords["polyphony_rate"] == 1.0
    solo = polyphony.compute(predictions=[make_score([(0, 1, 60), (3, 1, 62)])])  # a rest between
    assert solo["polyphony"] == pytest.approx(1.0) and solo["polyphony_rate"] == 0.0
    # [0, 2) and [1, 3): 4 quarters of notes over 3 sounding quarters, 1 of them with two notes.
    overlap = polyphony.compute(predictions=[make_score([(0, 2, 60), (1, 2, 64)])])
    assert overlap["polyphony"] == pytest.approx(4 / 3)
    assert overlap["polyphony_rate"] == pytest.approx(1 / 3)


def test_note_density_per_second_and_per_beat(metrics):
    density = metrics["note_density"]
    eight_quarters = [(i, 1, 60 + i) for i in range(8)]
    fast = density.compute(predictions=[make_score(eight_quarters, tempo=120)])
    assert fast["notes_per_second"] == pytest.approx(2.0)  # 8 notes in 8 beats of 0.5 s
    assert fast["notes_per_beat"] == pytest.approx(1.0)
    slow = density.compute(predictions=[make_score(eight_quarters, tempo=60)])
    assert slow["notes_per_second"] == pytest.approx(1.0)
    assert slow["notes_per_beat"] == pytest.approx(1.0)
    with_drums = make_score(eight_quarters, drums=[(i, 0.25, 36) for i in range(8)])
    assert density.compute(predictions=[with_drums])["notes_per_beat"] == pytest.approx(2.0)


@pytest.mark.parametrize("n", [2, 4])
def test_ngram_repetition_counts_repeated_patterns(metrics, n):
    repeats = 5
    pattern = melody([60, 64, 67, 72] * repeats)  # 20 equal note events, period 4
    total = 4 * repeats - n + 1
    expected = 1 - 4 / total  # only the 4 rotations of the pattern are distinct
    result = metrics["ngram_repetition"].compute(predictions=[pattern], n=n)
    assert result["ngram_repetition"] == pytest.approx(expected)
    assert metrics["ngram_repetition"].compute(predictions=[CHROMATIC], n=n)[
        "ngram_repetition"
    ] == pytest.approx(0.0)


def test_ngram_repetition_default_is_4_and_short_pieces_are_undefined(metrics):
    pattern = melody([60, 62] * 4)  # 8 events, 5 four-grams, 2 distinct
    result = metrics["ngram_repetition"].compute(predictions=[pattern, melody([60, 62])])
    assert result["ngram_repetition"] == pytest.approx(1 - 2 / 5)
    assert result["num_pieces"] == 2 and result["num_undefined"] == 1


def test_ngram_repetition_on_tokens(metrics, midi_tokenizer):
    pattern = melody([60, 64, 67, 72] * 4)
    ids = midi_tokenizer.encode_midi(pattern)
    grams = [tuple(ids[i : i + 4]) for i in range(len(ids) - 3)]
    expected = 1 - len(set(grams)) / len(grams)
    result = metrics["ngram_repetition"].compute(predictions=[pattern], tokenizer=midi_tokenizer)
    assert expected > 0 and result["ngram_repetition"] == pytest.approx(expected)


def test_scale_consistency(metrics):
    scale = metrics["scale_consistency"]
    assert scale.compute(predictions=[C_MAJOR])["scale_consistency"] == 1.0
    assert scale.compute(predictions=[CHROMATIC])["scale_consistency"] == pytest.approx(7 / 12)
    # One F sharp among C major's notes: 7 of 8 notes fit C major (and G major).
    with_f_sharp = melody([60, 62, 64, 65, 66, 67, 69, 71])
    assert scale.compute(predictions=[with_f_sharp])["scale_consistency"] == pytest.approx(7 / 8)


def test_groove_consistency(metrics):
    groove = metrics["groove_consistency"]
    steady = melody([60] * 12)  # three 4/4 bars of quarter notes
    assert groove.compute(predictions=[steady])["groove_consistency"] == 1.0
    # Bar 1: onsets on beats 1-4; bar 2: beats 1 and 3. Two of 4 * 12 grid steps differ.
    two_bars = make_score([(b, 1, 60) for b in range(4)] + [(4, 2, 62), (6, 2, 64)])
    result = groove.compute(predictions=[two_bars])["groove_consistency"]
    assert result == pytest.approx(1 - 2 / (4 * F.DEFAULT_GRID))
    coarse = groove.compute(predictions=[two_bars], grid=1)["groove_consistency"]
    assert coarse == pytest.approx(1 - 2 / 4)
    # Six quarter notes: two identical bars in 3/4, but bars of 4 and 2 onsets in 4/4.
    six = [(b, 1, 60) for b in range(6)]
    waltz = groove.compute(predictions=[make_score(six, signature=(3, 4))])
    assert waltz["groove_consistency"] == 1.0
    common = groove.compute(predictions=[make_score(six, signature=(4, 4))])
    assert common["groove_consistency"] == pytest.approx(1 - 2 / (4 * F.DEFAULT_GRID))
    single_bar = groove.compute(predictions=[melody([60, 62])])
    assert single_bar["num_undefined"] == 1 and math.isnan(single_bar["groove_consistency"])


def test_empty_beat_rate(metrics):
    rate = metrics["empty_beat_rate"]
    gap = make_score([(0, 1, 60), (2, 1, 62), (3, 1, 64)])  # beat 2 of 4 is silent
    assert rate.compute(predictions=[gap])["empty_beat_rate"] == pytest.approx(1 / 4)
    long_note = make_score([(0, 2, 60), (3, 1, 62)])  # a held note fills beats 1 and 2
    assert rate.compute(predictions=[long_note])["empty_beat_rate"] == pytest.approx(1 / 4)
    assert rate.compute(predictions=[CHORDS])["empty_beat_rate"] == 0.0


def test_overlapping_area_identical_and_disjoint_sets(metrics):
    overlap = metrics["overlapping_area"]
    real = [CHROMATIC, C_MAJOR, CHORDS, melody([60, 64, 67, 72] * 3)]
    same = overlap.compute(predictions=real, references=list(real))
    assert same["overlapping_area"] == pytest.approx(1.0)
    assert all(
        value == pytest.approx(1.0) for key, value in same.items() if key.startswith("overlap")
    )
    assert same["num_predictions"] == same["num_references"] == 4
    solos = [melody([60 + i, 62, 64 + i, 65]) for i in range(3)]
    chords = [make_score([(b, 1, p + i) for b in range(4) for p in (48, 55, 64)]) for i in range(3)]
    apart = overlap.compute(predictions=solos, references=chords, features=["polyphony"])
    assert apart["overlapping_area_polyphony"] < 0.01
    assert set(apart) == {
        "overlapping_area",
        "overlapping_area_polyphony",
        "num_predictions",
        "num_references",
    }


def test_overlapping_area_distance_method(metrics):
    overlap = metrics["overlapping_area"]
    real = [melody([60 + i, 64, 67 + i % 3, 72] * (1 + i)) for i in range(6)]
    close = overlap.compute(predictions=real, references=real, method="distances")
    far = overlap.compute(predictions=[CHORDS] * 3, references=real, method="distances")
    assert 0.5 < close["overlapping_area"] <= 1.0
    assert far["overlapping_area"] < close["overlapping_area"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    a=st.lists(st.floats(-50, 50), min_size=1, max_size=12),
    b=st.lists(st.floats(-50, 50), min_size=1, max_size=12),
)
def test_overlapping_area_is_symmetric_and_bounded(a, b):
    forward, backward = F.overlapping_area(a, b), F.overlapping_area(b, a)
    assert 0.0 <= forward <= 1.0
    assert forward == pytest.approx(backward, abs=1e-9)
    assert F.overlapping_area(a, a) == pytest.approx(1.0)


# ------------------------------------------------------------------------- properties

piece_notes = st.lists(
    st.tuples(
        st.integers(0, 31).map(lambda q: q / 2),  # onsets on eighth notes
        st.integers(1, 8).map(lambda q: q / 2),
        st.integers(36, 90),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(notes=piece_notes, shift=st.integers(-12, 12))
def test_features_are_bounded_and_transposition_invariant(notes, shift):
    score = make_score(notes)
    moved = make_score([(onset, duration, pitch + shift) for onset, duration, pitch in notes])
    for name, feature in F.FEATURES.items():
        value = feature(score)
        assert value == pytest.approx(feature(moved), nan_ok=True), name
        if name in ("polyphony_rate", "scale_consistency", "empty_beat_rate", "ngram_repetition"):
            assert math.isnan(value) or 0.0 <= value <= 1.0, name
    assert 0.0 <= F.pitch_class_entropy(score) <= math.log2(12) + 1e-12
    assert 7 / 12 - 1e-12 <= F.scale_consistency(score) <= 1.0
    assert F.polyphony(score)[0] >= 1.0


# ------------------------------------------------------------------------------ inputs


def test_paths_bytes_and_scores_give_the_same_values(metrics, chorale_midi_paths, tmp_path):
    path = chorale_midi_paths[0]
    data = path.read_bytes()
    score = Score(str(path))
    values = [
        metrics["polyphony"].compute(predictions=[source]) for source in (path, str(path), data)
    ]
    values.append(metrics["polyphony"].compute(predictions=[score]))
    values.append(metrics["polyphony"].compute(predictions=[score.to("quarter")]))
    assert all(value == pytest.approx(values[0]) for value in values)
    mixed = metrics["polyphony"].compute(predictions=[path, data, score], return_per_piece=True)
    assert mixed["polyphony_per_piece"] == pytest.approx([values[0]["polyphony"]] * 3)


def test_real_chorales_look_like_chorales(metrics, chorale_midi_paths):
    """Four voices, one key: polyphony near 4 and almost every note in one scale."""
    result = metrics["polyphony"].compute(predictions=chorale_midi_paths)
    assert 3.0 < result["polyphony"] <= 4.0
    scale = metrics["scale_consistency"].compute(predictions=chorale_midi_paths)
    assert scale["scale_consistency"] > 0.85


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_modules_load_with_evaluate_directly(name, chorale_midi_paths):
    module = evaluate.load(metric_path(name), keep_in_memory=True)
    assert isinstance(module, evaluate.Metric)
    assert module.description.strip()
    paths = [str(p) for p in chorale_midi_paths]
    data = [p.read_bytes() for p in chorale_midi_paths]
    if name in PIECE_METRICS:
        from_paths, from_bytes = (module.compute(predictions=s) for s in (paths, data))
    else:
        from_paths = module.compute(predictions=[paths], references=[paths[:2]])
        from_bytes = module.compute(predictions=[data], references=[data[:2]])
    assert from_paths == pytest.approx(from_bytes, nan_ok=True)


def test_metric_path_accepts_hyphens_and_rejects_unknown_names():
    assert Path(metric_path("pitch-class-entropy")).name == "pitch_class_entropy"
    with pytest.raises(ValueError, match="choose from"):
        metric_path("harmonicity")
    with pytest.raises(ValueError, match="Unknown midiformers metric"):
        load_metric("harmonicity")


def test_bad_inputs_fail_clearly(metrics, broken_midi_paths, tmp_path):
    entropy = metrics["pitch_class_entropy"]
    broken = broken_midi_paths[0]
    with pytest.raises(MidiFileError, match=broken.name):
        entropy.compute(predictions=[str(broken)])
    with pytest.raises(MidiFileError, match=broken.name):
        entropy.compute(predictions=[CHROMATIC, broken])  # mixed input: read in the wrapper
    with pytest.raises(MidiFileError, match="no such file"):
        entropy.compute(predictions=[tmp_path / "missing.mid"])
    with pytest.raises(MidiFileError, match=r"predictions\[1\]"):
        entropy.module.compute(predictions=[CHROMATIC.dumps_midi(), b"not midi at all"])
    with pytest.raises(TypeError, match="list of MIDI"):
        entropy.compute(predictions=str(broken))
    with pytest.raises(ValueError, match="empty"):
        entropy.compute(predictions=[])
    with pytest.raises(ValueError, match="unknown option"):
        metrics["ngram_repetition"].compute(predictions=[CHROMATIC], ngram=3)
    with pytest.raises(ValueError, match="takes no references"):
        entropy.compute(predictions=[CHROMATIC], references=[CHROMATIC])
    with pytest.raises(ValueError, match="give references"):
        metrics["overlapping_area"].compute(predictions=[CHROMATIC])
    with pytest.raises(ValueError, match="unknown feature"):
        metrics["overlapping_area"].compute(
            predictions=[CHROMATIC], references=[CHROMATIC], features=["loudness"]
        )


def test_pieces_without_notes_are_undefined_not_zero(metrics, no_notes_midi_path):
    result = metrics["pitch_class_entropy"].compute(predictions=[no_notes_midi_path, CHROMATIC])
    assert result["num_undefined"] == 1
    assert result["pitch_class_entropy"] == pytest.approx(math.log2(12))
