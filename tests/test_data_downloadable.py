"""The downloadable corpora (JSB Chorales, POP909, MAESTRO), run offline on small archives
with the structure of the real ones, built here from the MIDI fixtures."""

from __future__ import annotations

import csv
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import symusic

from midiformers.data_scripts import ChecksumError, jsb_chorales, load_midi_dataset, maestro, pop909
from midiformers.data_scripts._common import sha256_of_file

# ----------------------------------------------------------------------------- helpers


def quarter_steps(midi: bytes | Path) -> list[list[int]]:
    """The pitches sounding at each quarter-note onset, as in the Boulanger pickles."""
    score = symusic.Score(str(midi)) if isinstance(midi, Path) else symusic.Score.from_midi(midi)
    notes = [note for track in score.tracks for note in track.notes]
    end = max(note.end for note in notes)
    return [
        sorted({n.pitch for n in notes if n.time <= tick < n.end})
        for tick in range(0, end, score.tpq)
    ]


def py2_style_pickle(data: dict) -> bytes:
    """Protocol-2 pickle naming numpy's scalar constructor as Python 2 / numpy 1 did."""
    blob = pickle.dumps(data, protocol=2)
    return blob.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_xlsx(path_or_buffer, rows: list[list[str]]) -> None:
    """A minimal one-sheet .xlsx with inline strings, like POP909's index.xlsx."""
    ns = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    cells = []
    for r, row in enumerate(rows, start=1):
        values = "".join(
            f'<c r="{chr(65 + c)}{r}" t="inlineStr"><is><t>{value}</t></is></c>'
            for c, value in enumerate(row)
        )
        cells.append(f'<row r="{r}">{values}</row>')
    sheet = f'<worksheet xmlns="{ns}"><sheetData>{"".join(cells)}</sheetData></worksheet>'
    with zipfile.ZipFile(path_or_buffer, "w") as book:
        book.writestr("xl/worksheets/sheet1.xml", sheet)
        book.writestr("xl/workbook.xml", f'<workbook xmlns="{ns}"/>')


def renamed_tracks(path: Path, names: tuple[str, ...]) -> bytes:
    """The first ``len(names)`` tracks of a MIDI file, renamed (POP909's track layout)."""
    score = symusic.Score(str(path))
    out = symusic.Score(score.tpq)
    out.tempos = score.tempos
    out.time_signatures = score.time_signatures
    for track, name in zip(score.tracks, names):
        track.name = name
        out.tracks.append(track)
    return out.dumps_midi()


# ----------------------------------------------------------------------------- JSB


@pytest.fixture(scope="module")
def jsb_pickle(tmp_path_factory, chorale_midi_paths) -> tuple[Path, dict]:
    """A JSB-style pickle: 3 / 2 / 2 chorales sampled from the fixture chorales."""
    steps = [quarter_steps(path) for path in chorale_midi_paths]
    as_numpy = [[tuple(np.float64(p) for p in step) for step in seq] for seq in steps]
    data = {
        "train": [as_numpy[0], as_numpy[1], as_numpy[2]],
        "valid": [as_numpy[1], as_numpy[0]],
        "test": [as_numpy[2], as_numpy[0][:8]],
    }
    path = tmp_path_factory.mktemp("jsb") / "JSB Chorales.pickle"
    path.write_bytes(py2_style_pickle(data))
    plain = {
        key: [[sorted(int(p) for p in step) for step in seq] for seq in value]
        for key, value in data.items()
    }
    return path, plain


def test_jsb_builder_keeps_canonical_split_and_notes(jsb_pickle, tmp_path):
    path, plain = jsb_pickle
    ds = load_midi_dataset("jsb_chorales", cache_dir=str(tmp_path), source=str(path), sha256=None)
    assert {split: len(ds[split]) for split in ds} == {"train": 3, "validation": 2, "test": 2}
    for split, key in (("train", "train"), ("validation", "valid"), ("test", "test")):
        for row in ds[split]:
            original = plain[key][row["index"]]
            assert row["id"] == f"{split}-{row['index']:03d}"
            assert row["source_split"] == key
            assert row["num_steps"] == len(original)
            # Sampling the written MIDI every quarter note gives the pickle back.
            assert quarter_steps(row["midi"]) == original
            assert row["num_notes"] > 0
            assert row["composer"] == "Johann Sebastian Bach"


def test_jsb_voices_are_one_track_each(jsb_pickle, tmp_path):
    path, _ = jsb_pickle
    ds = load_midi_dataset(
        "jsb_chorales", cache_dir=str(tmp_path), source=str(path), sha256=None, split="train"
    )
    score = symusic.Score.from_midi(ds[0]["midi"])
    assert [t.name for t in score.tracks] == list(jsb_chorales.VOICE_NAMES)
    for track in score.tracks:  # each voice is monophonic
        notes = sorted(track.notes, key=lambda n: n.time)
        assert all(a.end <= b.time for a, b in zip(notes, notes[1:]))
    soprano = [n.pitch for n in score.tracks[0].notes]
    bass = [n.pitch for n in score.tracks[3].notes]
    assert np.mean(soprano) > np.mean(bass)


def test_jsb_step_length_and_tempo(jsb_pickle, tmp_path):
    path, plain = jsb_pickle
    kwargs = {"cache_dir": str(tmp_path), "source": str(path), "sha256": None, "split": "test"}
    normal = load_midi_dataset("jsb_chorales", **kwargs)
    fast = load_midi_dataset("jsb_chorales", step_quarters=0.5, qpm=60.0, **kwargs)
    # Half-length steps at half the tempo last exactly as long in seconds.
    assert fast["duration_seconds"] == pytest.approx(normal["duration_seconds"])
    score = symusic.Score.from_midi(fast[0]["midi"])
    assert score.end() == len(plain["test"][fast[0]["index"]]) * score.tpq // 2


def test_voice_assignment_follows_voice_leading():
    # A chord, then the alto rests: the three remaining pitches keep their voices.
    voices = jsb_chorales.assign_voices([[48, 60, 64, 72], [48, 60, 72], [50, 62, 65, 71]])
    assert voices == [[72, 64, 60, 48], [72, None, 60, 48], [71, 65, 62, 50]]
    assert jsb_chorales.assign_voices([[60, 62, 64, 65, 67]]) is None


def test_jsb_checksum_mismatch_fails_clearly(jsb_pickle, tmp_path):
    path, _ = jsb_pickle
    # `url` pointing at a local file goes through the download path, with the published
    # checksum, which this hand-made pickle cannot have.
    with pytest.raises(ChecksumError, match=r"checksum mismatch .*JSB Chorales\.pickle"):
        load_midi_dataset("jsb_chorales", cache_dir=str(tmp_path), url=str(path))
    digest = sha256_of_file(path)
    ds = load_midi_dataset("jsb_chorales", cache_dir=str(tmp_path), url=str(path), sha256=digest)
    assert len(ds["train"]) == 3


def test_jsb_refuses_foreign_pickles(tmp_path):
    hostile = tmp_path / "JSB Chorales.pickle"
    hostile.write_bytes(b"cos\nsystem\n(S'echo hacked'\ntR.")
    with pytest.raises(
        ValueError, match=r"JSB Chorales\.pickle: not a readable piano-roll pickle.*os\.system"
    ):
        load_midi_dataset("jsb_chorales", cache_dir=str(tmp_path), source=str(hostile), sha256=None)
    wrong = tmp_path / "wrong" / "JSB Chorales.pickle"
    wrong.parent.mkdir()
    wrong.write_bytes(pickle.dumps({"train": []}, protocol=2))
    with pytest.raises(ValueError, match=r"expected a dict with keys \['test', 'train', 'valid'\]"):
        load_midi_dataset(
            "jsb_chorales", cache_dir=str(tmp_path), data_dir=str(wrong.parent), sha256=None
        )


# ----------------------------------------------------------------------------- POP909


@pytest.fixture(scope="module")
def pop909_zip(tmp_path_factory, valid_midi_paths, broken_midi_paths) -> Path:
    """A POP909-style GitHub archive: 10 songs (one broken), versions and index.xlsx."""
    root = f"POP909-Dataset-{pop909.COMMIT}/"
    path = tmp_path_factory.mktemp("pop909") / pop909.FILE_NAME
    index = [
        [
            "song_id",
            "name",
            "artist",
            "modify_times",
            "num_beats_per_measure",
            "num_quavers_per_beat",
        ]
    ]
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(root + "README.md", "POP909")
        for number in range(1, 11):
            song = f"{number:03d}"
            source = valid_midi_paths[number % len(valid_midi_paths)]
            data = renamed_tracks(source, pop909.TRACK_NAMES)
            if number == 7:
                data = broken_midi_paths[0].read_bytes()
            archive.writestr(f"{root}POP909/{song}/{song}.mid", data)
            archive.writestr(f"{root}POP909/{song}/beat_midi.txt", "0.0 1.0 1.0\n")
            if number % 3 == 0:
                archive.writestr(f"{root}POP909/{song}/versions/{song}-v1.mid", data)
            index.append([song, f"Song {number}", f"Artist {number % 4}", "1", "2", "2"])
        buffer = io.BytesIO()
        write_xlsx(buffer, index)
        archive.writestr(root + "POP909/index.xlsx", buffer.getvalue())
    return path


def test_pop909_seeded_split_by_song(pop909_zip, tmp_path):
    ds = load_midi_dataset("pop909", cache_dir=str(tmp_path), source=str(pop909_zip), sha256=None)
    ids = {split: sorted(ds[split]["song_id"]) for split in ds}
    # 10 songs cut 8:1:1 by a seeded shuffle; song 007 is broken and skipped.
    expected = pop909.seeded_split([f"{n:03d}" for n in range(1, 11)], 42, 0.1, 0.1)
    assert ids == {split: sorted(set(songs) - {"007"}) for split, songs in expected.items()}
    assert sum(len(v) for v in ids.values()) == 9
    row = next(r for r in ds["train"] if r["song_id"] == ids["train"][0])
    number = int(row["song_id"])
    assert row["name"] == f"Song {number}" and row["artist"] == f"Artist {number % 4}"
    assert row["version"] == "" and row["source_path"].endswith(
        f"POP909/{row['song_id']}/{row['song_id']}.mid"
    )
    tracks = [t.name for t in symusic.Score.from_midi(row["midi"]).tracks]
    assert set(tracks) <= set(pop909.TRACK_NAMES)


def test_pop909_options(pop909_zip, tmp_path):
    kwargs = {"cache_dir": str(tmp_path), "source": str(pop909_zip), "sha256": None}
    with_versions = load_midi_dataset("pop909", include_versions=True, **kwargs)
    versions = [v for split in with_versions for v in with_versions[split]["version"] if v]
    assert sorted(versions) == ["003-v1", "006-v1", "009-v1"]
    for split in with_versions:  # a version stays with its song
        songs = set(with_versions[split]["song_id"])
        assert all(v[:3] in songs for v in with_versions[split]["version"] if v)
    melody = load_midi_dataset("pop909", tracks=["MELODY"], split="train", **kwargs)
    for row in melody:
        assert [t.name for t in symusic.Score.from_midi(row["midi"]).tracks] == ["MELODY"]
    other_seed = load_midi_dataset("pop909", seed=1, split="test", **kwargs)
    expected = pop909.seeded_split([f"{n:03d}" for n in range(1, 11)], 1, 0.1, 0.1)
    assert other_seed["song_id"] == expected["test"] == ["009"]


def test_pop909_reads_extracted_folder_and_reports_skips(pop909_zip, tmp_path):
    folder = tmp_path / "extracted"
    with zipfile.ZipFile(pop909_zip) as archive:
        archive.extractall(folder)
    from midiformers.data_scripts import get_builder

    builder = get_builder(
        "pop909", cache_dir=str(tmp_path / "cache"), data_dir=str(folder), sha256=None
    )
    builder.download_and_prepare()
    assert sum(split.num_examples for split in builder.info.splits.values()) == 9
    skipped = builder.skipped_files()
    assert [item["name"] for item in skipped] == [
        f"POP909-Dataset-{pop909.COMMIT}/POP909/007/007.mid"
    ]
    assert "empty" in skipped[0]["reason"]


def test_pop909_checksum_mismatch(pop909_zip, tmp_path):
    with pytest.raises(ChecksumError, match="pop909: checksum mismatch"):
        load_midi_dataset("pop909", cache_dir=str(tmp_path), url=str(pop909_zip))


# ----------------------------------------------------------------------------- MAESTRO

MAESTRO_ROWS = [
    # composer, title, split, year
    ("Frédéric Chopin", "Ballade No. 1", "train", "2004"),
    ("Frédéric Chopin", "Etude Op. 10", "train", "2006"),
    ("Frédéric Chopin", "Nocturne", "validation", "2008"),
    ("Johann Sebastian Bach", "Prelude and Fugue", "train", "2009"),
    ("Johann Sebastian Bach", "Partita", "test", "2011"),
    ("Franz Liszt", "Sonata in B Minor", "train", "2013"),
    ("Franz Liszt", "Mephisto Waltz", "test", "2014"),
    ("Johann Sebastian Bach / Ferruccio Busoni", "Chaconne", "train", "2015"),
    ("Claude Debussy", "Estampes", "validation", "2017"),
]


@pytest.fixture(scope="module")
def maestro_zip(tmp_path_factory, valid_midi_paths) -> Path:
    """A MAESTRO-style zip: CSV + JSON metadata and .midi files under year folders; the
    last CSV row names a file the archive lacks."""
    path = tmp_path_factory.mktemp("maestro") / maestro.FILE_NAME
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        [
            "canonical_composer",
            "canonical_title",
            "split",
            "year",
            "midi_filename",
            "audio_filename",
            "duration",
        ]
    )
    with zipfile.ZipFile(path, "w") as archive:
        for index, (composer, title, split, year) in enumerate(MAESTRO_ROWS):
            name = f"{year}/MIDI-Unprocessed_{index:02d}_R1_{year}_wav--1.midi"
            writer.writerow(
                [composer, title, split, year, name, name.replace(".midi", ".wav"), "12.5"]
            )
            archive.write(valid_midi_paths[index % len(valid_midi_paths)], "maestro-v3.0.0/" + name)
        writer.writerow(
            [
                "Franz Liszt",
                "Missing",
                "train",
                "2018",
                "2018/missing.midi",
                "2018/missing.wav",
                "1.0",
            ]
        )
        archive.writestr("maestro-v3.0.0/maestro-v3.0.0.csv", buffer.getvalue())
        archive.writestr("maestro-v3.0.0/maestro-v3.0.0.json", "{}")
        archive.writestr("maestro-v3.0.0/LICENSE", "CC BY-NC-SA 4.0")
    return path


def test_maestro_official_split_and_composer_labels(maestro_zip, tmp_path):
    ds = load_midi_dataset("maestro", cache_dir=str(tmp_path), source=str(maestro_zip), sha256=None)
    expected = {
        s: sum(1 for row in MAESTRO_ROWS if row[2] == s) for s in ("train", "validation", "test")
    }
    assert {split: len(ds[split]) for split in ds} == expected
    feature = ds["train"].features["composer"]
    assert feature.names == list(maestro.COMPOSERS) and feature.num_classes == 60
    rows = {row["title"]: row for split in ds for row in ds[split]}
    for composer, title, _split, year in MAESTRO_ROWS:
        assert feature.int2str(rows[title]["composer"]) == composer
        assert rows[title]["year"] == int(year)
        assert rows[title]["csv_duration"] == pytest.approx(12.5)
    first = rows["Ballade No. 1"]
    assert first["id"] == "2004/MIDI-Unprocessed_00_R1_2004_wav--1"
    assert first["midi_filename"] == first["id"] + ".midi"


def test_maestro_top_n_composers(maestro_zip, tmp_path):
    ds = load_midi_dataset(
        "maestro", cache_dir=str(tmp_path), source=str(maestro_zip), sha256=None, top_n_composers=2
    )
    # Chopin (3) and Liszt (3 rows, one missing from the archive) beat Bach (2).
    names = ["Franz Liszt", "Frédéric Chopin"]
    for split in ds:
        assert ds[split].features["composer"].names == names
    composers = [names[c] for split in ds for c in ds[split]["composer"]]
    assert sorted(composers) == sorted(r[0] for r in MAESTRO_ROWS if r[0] in names)
    only_test = load_midi_dataset(
        "maestro",
        cache_dir=str(tmp_path),
        source=str(maestro_zip),
        sha256=None,
        top_n_composers=2,
        split="test",
    )
    assert only_test.features["composer"].names == names  # same ids as the full build


def test_maestro_skips_missing_files_and_checks_inputs(maestro_zip, tmp_path):
    from midiformers.data_scripts import get_builder

    builder = get_builder("maestro", cache_dir=str(tmp_path), source=str(maestro_zip), sha256=None)
    builder.download_and_prepare()
    assert builder.skipped_files() == [
        {"name": "2018/missing.midi", "reason": "listed in the CSV but missing from the archive"}
    ]
    with pytest.raises(ValueError, match=r"unknown composer name\(s\) \['Chopin'\]"):
        load_midi_dataset(
            "maestro",
            cache_dir=str(tmp_path),
            source=str(maestro_zip),
            sha256=None,
            composers=["Chopin"],
        )
    with pytest.raises(ChecksumError, match="maestro: checksum mismatch"):
        load_midi_dataset("maestro", cache_dir=str(tmp_path), source=str(maestro_zip))
    no_csv = tmp_path / "no_csv.zip"
    with zipfile.ZipFile(no_csv, "w") as archive:
        archive.writestr("maestro-v3.0.0/2004/a.midi", b"")
    with pytest.raises(ValueError, match=r"maestro-v3\.0\.0\.csv not found in .*no_csv\.zip"):
        load_midi_dataset("maestro", cache_dir=str(tmp_path), source=str(no_csv), sha256=None)


def test_maestro_survives_a_corrupt_archive_member(tmp_path, valid_midi_paths):
    path = tmp_path / maestro.FILE_NAME
    rows = "canonical_composer,canonical_title,split,year,midi_filename,audio_filename,duration\n"
    payloads = {}
    for index, name in enumerate(["2004/good.midi", "2004/bad.midi"]):
        rows += f"Franz Liszt,Piece {index},train,2004,{name},{name[:-5]}.wav,1.0\n"
        payloads[name] = valid_midi_paths[index].read_bytes()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("maestro-v3.0.0/maestro-v3.0.0.csv", rows)
        for name, data in payloads.items():
            archive.writestr("maestro-v3.0.0/" + name, data)
    # Flip bytes inside the stored data of bad.midi: its CRC no longer matches.
    raw = bytearray(path.read_bytes())
    start = raw.index(payloads["2004/bad.midi"]) + 100
    raw[start : start + 8] = bytes(8)
    path.write_bytes(bytes(raw))
    from midiformers.data_scripts import get_builder

    builder = get_builder(
        "maestro", cache_dir=str(tmp_path / "cache"), source=str(path), sha256=None
    )
    builder.download_and_prepare()
    assert builder.as_dataset(split="train")["title"] == ["Piece 0"]
    [skipped] = builder.skipped_files()
    assert skipped["name"] == "2004/bad.midi" and "CRC" in skipped["reason"]
