"""Corrupt MIDI never takes the process down.

Every prefix of every real fixture and thousands of seeded mutants (bit flips, chunk-length
lies, corrupt events inside truthfully sized tracks, random bytes) go through ``load_score``
and a sample of them through the tokenizer, the ``midi_folder`` builder and the demo's upload
path, in child processes (``tests/midi_fuzz.py``): a native crash in symusic fails a test
that names the mutation instead of killing pytest. Every case must end in a result or a
``MidiFileError``, the same one in every run.
"""

from __future__ import annotations

import re
import struct
from collections import Counter, defaultdict

import pytest
import symusic
from midi_fuzz import MUTATION_KINDS, Case, Outcome, mutants, prefixes, run

from midiformers.tokenization import midi_io
from midiformers.tokenization.midi_io import MidiFileError, load_score

SEED = 0
MUTANTS_PER_KIND = 200  # per fixture, through load_score (every prefix as well)
PERTURBED_HEAP = {"MALLOC_PERTURB_": "165"}  # glibc fills the heap: stray reads change


def _midi(*tracks: bytes, header_length: int = 6, num_tracks: int | None = None) -> bytes:
    """A format-1 file at 480 ticks per quarter holding these track bodies."""
    count = len(tracks) if num_tracks is None else num_tracks
    header = struct.pack(">HHH", 1, count, 480) + b"\0" * (header_length - 6)
    data = b"MThd" + struct.pack(">I", header_length) + header
    return data + b"".join(b"MTrk" + struct.pack(">I", len(t)) + t for t in tracks)


NOTE = bytes.fromhex("00 90 3c 40  81 70 80 3c 00")  # C4 for 240 ticks
END = bytes.fromhex("00 ff 2f 00")


def _bad(outcomes: list[Outcome]) -> list[str]:
    return [
        f"{o.target} {o.case_id}: {o.status} ({o.detail})"
        for o in outcomes
        if o.status not in ("accepted", "rejected")
    ]


@pytest.fixture(scope="module")
def light_cases(valid_midi_paths) -> list[Case]:
    """Every prefix of every valid fixture, and ``MUTANTS_PER_KIND`` mutants of each kind."""
    cases = []
    for path in valid_midi_paths:
        data = path.read_bytes()
        cases += prefixes(path.stem, data)
        kinds = [kind for kind in MUTATION_KINDS if kind != "prefix"]
        cases += mutants(path.stem, data, kinds, MUTANTS_PER_KIND, seed=SEED)
    return cases


@pytest.fixture(scope="module")
def light_runs(light_cases) -> tuple[list[Outcome], list[Outcome]]:
    """``load_score`` on every light case, twice: the second time with a perturbed heap."""
    work = [("load_score", case) for case in light_cases]
    return run(work), run(work, env=PERTURBED_HEAP)


def test_load_score_never_crashes_hangs_or_raises_anything_else(light_runs, light_cases):
    first, second = light_runs
    assert len(first) == len(light_cases) > 15_000
    assert _bad(first + second) == []
    kinds = Counter((o.kind, o.status) for o in first)
    for kind in MUTATION_KINDS:  # the mutants do reach both outcomes (except prefixes)
        assert kinds[(kind, "rejected")] > 0, kinds
    assert kinds[("bit_flip", "accepted")] > 0 and kinds[("track_edit", "accepted")] > 0


def test_outcomes_are_the_same_in_every_run(light_runs):
    first, second = light_runs
    differ = [
        f"{a.case_id}: {a.status} {a.detail!r} / {b.status} {b.detail!r}"
        for a, b in zip(first, second)
        if (a.status, a.detail) != (b.status, b.detail)
    ]
    assert differ == []


def test_every_truncated_file_is_rejected(light_runs):
    """A file cut anywhere, even between two tracks, is never read as a shorter piece."""
    first, _ = light_runs
    cut = [o for o in first if o.kind == "prefix"]
    assert cut and [o.case_id for o in cut if o.status != "rejected"] == []
    unclear = [
        o.case_id
        for o in cut
        if not re.search(r"truncated|empty|too short|announces|corrupt track", o.detail)
    ]
    assert unclear == []


def test_corrupt_events_are_rejected_before_the_parser_sees_them(light_runs):
    """The walk rejects every mutant itself: symusic's own errors never show through."""
    first, _ = light_runs
    assert [o.detail for o in first if "corrupt or truncated MIDI data" in o.detail] == []


HAZARDS = {
    # a track that claims more bytes than the file holds (the reported crash)
    "long track": (
        _midi(NOTE + END)[:-3],
        "truncated: track 1 of 1 declares 13 bytes but only 10 remain",
    ),
    # channel 16, pitch 200: symusic writes outside its note table (free(): invalid pointer)
    "pitch above 127": (
        _midi(bytes.fromhex("00 9f c8 40  10 8f c8 00") + END),
        "a note-on event has a data byte 0xc8 above 0x7f",
    ),
    "meta past the track": (
        _midi(bytes.fromhex("00 ff 03 20") + b"abc"),
        "a meta event (type 0x03) declares 32 bytes but only 3 remain",
    ),
    "SysEx past the track": (
        _midi(bytes.fromhex("00 f0 10 7e 7f") + END),
        "a SysEx event declares 16 bytes but only 6 remain",
    ),
    "delta time at the end": (_midi(NOTE + bytes.fromhex("81 81")), "ends inside the delta time"),
    "five-byte delta time": (
        _midi(bytes.fromhex("80 80 80 80 00 90 3c 40") + END),
        "the delta time is longer than 4 bytes",
    ),
    "event without status": (
        _midi(bytes.fromhex("00 3c 40") + END),
        "running status without a channel event before it",
    ),
    "running status after SysEx": (
        _midi(NOTE + bytes.fromhex("00 f0 01 f7  00 3c 00") + END),
        "running status without a channel event before it",
    ),
    "system message": (_midi(bytes.fromhex("00 f4") + bytes(8) + END), "status byte 0xf4"),
    "short tempo": (_midi(bytes.fromhex("00 ff 51 00") + END), "set-tempo meta event holds 0"),
    "note cut by the track end": (_midi(NOTE + bytes.fromhex("00 90 3c")), "inside a note-on"),
    "missing track": (_midi(NOTE + END, num_tracks=2), "announces 2 track(s) but the file holds 1"),
}


def test_each_hazard_is_rejected_with_a_precise_reason():
    work = [("load_score", Case(name, "hazard", data)) for name, (data, _) in HAZARDS.items()]
    outcomes = run(work)
    assert _bad(outcomes) == []
    for outcome, (_data, reason) in zip(outcomes, HAZARDS.values()):
        assert outcome.status == "rejected" and reason in outcome.detail, outcome


def _notes(score) -> list[tuple]:
    return [(n.time, n.duration, n.pitch, n.velocity) for t in score.tracks for n in t.notes]


def test_quirks_of_real_files_are_read_like_the_plain_file():
    plain = _midi(bytes.fromhex("00 ff 03 01 41") + NOTE + END, NOTE + END)
    expected = symusic.Score.from_midi(plain)
    tempo_track = bytes.fromhex("00 ff 51 03 07 a1 20") + END
    quirks = {
        "trailing garbage": plain + b"\0\0garbage after the last track",
        "unknown chunk": plain[:14] + b"XFIH" + struct.pack(">I", 3) + b"abc" + plain[14:],
        "header length 8": _midi(
            bytes.fromhex("00 ff 03 01 41") + NOTE + END, NOTE + END, header_length=8
        ),
        "more tracks than announced": plain + b"MTrk" + struct.pack(">I", 13) + NOTE + END,
        "no End of Track": _midi(bytes.fromhex("00 ff 03 01 41") + NOTE + END, NOTE),
        "data after End of Track": _midi(
            bytes.fromhex("00 ff 03 01 41") + NOTE + END + b"\xff\xff", NOTE + END
        ),
        # a SysEx escape packet: symusic alone would read its payload as delta times
        "SysEx escape": _midi(
            bytes.fromhex("00 ff 03 01 41  00 f7 03 41 42 43") + NOTE + END, NOTE + END
        ),
        # running status goes on across a meta event, as in symusic and mido
        "running status across a meta event": _midi(
            bytes.fromhex("00 ff 03 01 41"),
            bytes.fromhex("00 90 3c 40  00 ff 01 01 78  81 70 3c 00") + END,
        ),
    }
    for name, data in quirks.items():
        score = load_score(data, name=name)
        if name == "running status across a meta event":
            assert _notes(score) == [(0, 240, 60, 64)], name
        else:
            assert score == expected, name
    with_tempo = load_score(_midi(tempo_track, NOTE + END))
    assert [round(t.qpm) for t in with_tempo.tempos] == [120]


def test_valid_fixtures_parse_exactly_as_symusic_reads_them(valid_midi_paths, no_notes_midi_path):
    for path in [*valid_midi_paths, no_notes_midi_path]:
        data = path.read_bytes()
        assert load_score(data) == symusic.Score.from_midi(data), path.name


def test_fast_walk_agrees_with_the_event_by_event_walk(light_cases, monkeypatch):
    """The regular expressions that take runs of channel events are only a shortcut: walking
    every event in Python gives the same verdicts and messages."""

    def verdict(data: bytes):
        try:
            return midi_io._check_midi_structure(data, "x")
        except MidiFileError as error:
            return error.reason

    fast = [verdict(case.data) for case in light_cases[::3]]
    nothing = re.compile(b"")  # matches no event: every event goes through _check_event
    monkeypatch.setattr(midi_io, "_CHANNEL_RUN", {1: nothing, 2: nothing})
    slow = [verdict(case.data) for case in light_cases[::3]]
    assert fast == slow
    assert sum(isinstance(v, str) for v in fast) and sum(not isinstance(v, str) for v in fast)


def _sample(outcomes: list[Outcome], cases: list[Case], per_group: int) -> list[Case]:
    """Up to ``per_group`` accepted and ``per_group`` rejected cases per fixture and kind."""
    by_id = {case.id: case for case in cases}
    taken: dict[tuple, int] = defaultdict(int)
    sample = []
    for outcome in outcomes:
        group = (outcome.case_id.split("/")[0], outcome.kind, outcome.status)
        if taken[group] < per_group:
            taken[group] += 1
            sample.append(by_id[outcome.case_id])
    return sample


@pytest.mark.slow
def test_tokenizer_builder_and_demo_survive_mutants(
    light_runs, light_cases, valid_midi_paths, tiny_model_dir
):
    """One child runs the tokenizer, then builds a MIDI folder, then feeds the demo: each
    case ends in a result or a clean rejection, and a file that ``load_score`` rejects is
    rejected by all three, the builder and the tokenizer with the same reason."""
    pytest.importorskip("gradio", reason="the demo needs the app extra")
    first, _ = light_runs
    verdict = {o.case_id: o for o in first}
    originals = [Case(path.stem, "original", path.read_bytes()) for path in valid_midi_paths]
    work = [("tokenizer", case) for case in _sample(first, light_cases, 3) + originals]
    built = _sample(first, light_cases, 1)
    work += [("builder", case) for case in built + originals]
    work += [("demo", case) for case in _sample(first, light_cases, 1)[::2] + originals[:1]]
    outcomes = run(work, model_dir=tiny_model_dir, case_timeout=120)
    assert _bad(outcomes) == []
    for outcome in outcomes:
        if outcome.kind == "original":
            assert outcome.status == "accepted", outcome
            continue
        expected = verdict[outcome.case_id]
        if expected.status == "rejected":
            assert outcome.status == "rejected", outcome
            if outcome.target in ("tokenizer", "builder"):
                assert outcome.detail == expected.detail, outcome
            else:
                assert outcome.detail.startswith("**Primer rejected.** "), outcome
    by_target = Counter((o.target, o.status) for o in outcomes)
    for target in ("tokenizer", "builder", "demo"):
        assert by_target[(target, "accepted")] and by_target[(target, "rejected")], by_target
    # the builder skips (and lists) exactly the unreadable files and those without notes
    skipped = {o.case_id for o in outcomes if o.target == "builder" and o.status == "rejected"}
    unusable = {
        c.id
        for c in built
        if verdict[c.id].status == "rejected" or verdict[c.id].detail.startswith("0 notes")
    }
    assert skipped == unusable and len(unusable) > 5


def test_the_runner_names_the_case_that_crashed_or_hung():
    """A native crash or a hang costs one case, not the run, and is reported by name."""
    benign = Case("benign", "valid", _midi(NOTE + END))
    work = [
        ("load_score", benign),
        ("_segfault", Case("segfault", "test", b"")),
        ("load_score", benign),
        ("_hang", Case("hang", "test", b"")),
        ("load_score", benign),
    ]
    outcomes = run(work, case_timeout=3)
    assert [o.status for o in outcomes] == ["accepted", "crash", "accepted", "hang", "accepted"]
    assert "SIGSEGV" in outcomes[1].detail and outcomes[1].case_id == "segfault"
    assert "no answer within 3 s" in outcomes[3].detail
