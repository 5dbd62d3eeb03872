"""The offline corpora (music21's Bach chorales and composers), MIDI folders, the cache,
the entry point's errors and the Parquet export."""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import pytest
import symusic

from midiformers.data_scripts import (
    BachChorales,
    get_builder,
    load_midi_dataset,
    save_as_parquet,
)
from midiformers.data_scripts._common import seeded_split, stratified_split

music21 = pytest.importorskip("music21", reason="the offline corpora are converted from music21")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("datasets_cache"))


@pytest.fixture(scope="module")
def bach(cache_dir) -> datasets.DatasetDict:
    return load_midi_dataset("bach_chorales", cache_dir=cache_dir, max_pieces=5)


# ----------------------------------------------------------------------------- bach_chorales


def test_bach_chorales_build(bach):
    from midiformers.data_scripts.bach_chorales import chorale_catalogue

    assert {split: len(bach[split]) for split in bach} == {"train": 3, "validation": 1, "test": 1}
    first_five = [entry["path"] for entry in chorale_catalogue()[:5]]
    ids = sorted(row["source_path"] for split in bach for row in bach[split])
    assert ids == sorted(first_five)
    for row in bach["train"]:
        score = symusic.Score.from_midi(row["midi"])
        assert [t.name for t in score.tracks] == ["Soprano", "Alto", "Tenor", "Bass"]
        assert row["num_notes"] == score.note_num() > 0
        assert row["duration_seconds"] > 0
        assert row["id"] == "bwv" + row["bwv"] and row["source_path"] == "bach/" + row["id"]
        assert row["composer"] == "Johann Sebastian Bach"
        assert row["title"] and row["riemenschneider"]


def test_bach_catalogue_drops_duplicate_files():
    from midiformers.data_scripts.bach_chorales import chorale_catalogue

    everything = chorale_catalogue(deduplicate=False)
    unique = chorale_catalogue()
    assert (
        len(everything) == len(list(music21.corpus.chorales.Iterator(returnType="filename"))) == 371
    )
    assert len(unique) == len({e["path"] for e in everything}) == 350
    doubled = next(e for e in unique if e["path"] == "bach/bwv267")
    assert doubled["riemenschneider"] == [5, 309] and " / " in doubled["title"]


def test_bad_repeats_are_stripped_and_retried():
    from midiformers.data_scripts._music21 import stream_to_midi_bytes

    score = music21.corpus.parse("bach/bwv277")
    with pytest.raises(music21.repeat.ExpanderException):
        music21.midi.translate.streamToMidiFile(score)
    data = stream_to_midi_bytes(score, "bach/bwv277")
    assert symusic.Score.from_midi(data).note_num() > 0


def test_build_is_cached(cache_dir, bach, monkeypatch):
    def no_rebuild(self, **kwargs):
        raise AssertionError("the cached build should have been reused")

    monkeypatch.setattr(BachChorales, "_generate_examples", no_rebuild)
    again = load_midi_dataset("bach_chorales", cache_dir=cache_dir, max_pieces=5)
    assert again["train"]["id"] == bach["train"]["id"]
    with pytest.raises(AssertionError, match="cached build"):  # other options: a new build
        load_midi_dataset("bach_chorales", cache_dir=cache_dir, max_pieces=5, seed=3)


# ----------------------------------------------------------------------------- music21_composers


def test_music21_composers_stratified(cache_dir):
    ds = load_midi_dataset(
        "music21_composers",
        cache_dir=cache_dir,
        composers=["josquin", "bach"],
        min_pieces=1,
        max_pieces_per_composer=3,
    )
    names = ["Johann Sebastian Bach", "Josquin des Prez"]
    assert ds["train"].features["composer"].names == names
    for split in ds:  # 3 pieces per composer: one in each split
        assert sorted(ds[split]["composer"]) == [0, 1]
    josquin = next(row for split in ds for row in ds[split] if row["composer"] == 1)
    # The corpus stores each Josquin voice as an ABC tune; they become one multi-track piece.
    assert len(symusic.Score.from_midi(josquin["midi"]).tracks) > 1
    assert josquin["source_path"].startswith("josquin/") and josquin["source_path"].endswith(".abc")


def test_music21_composers_selection():
    from midiformers.data_scripts.music21_composers import Music21ComposersConfig, selected_scores

    config = Music21ComposersConfig(composers=("josquin", "chopin", "mozart"), min_pieces=8)
    selected = selected_scores(config)
    assert sorted(selected) == ["josquin", "mozart"]  # chopin has a single score
    capped = selected_scores(
        Music21ComposersConfig(composers=("mozart",), max_pieces_per_composer=5)
    )
    assert len(capped["mozart"]) == 5 and set(capped["mozart"]) <= set(selected["mozart"])
    assert capped == selected_scores(
        Music21ComposersConfig(composers=("mozart",), max_pieces_per_composer=5)
    )
    with pytest.raises(ValueError, match=r"unknown composer folder\(s\) \['ryansMammoth'\]"):
        selected_scores(Music21ComposersConfig(composers=("ryansMammoth",)))


# ----------------------------------------------------------------------------- midi_folder


@pytest.fixture
def labelled_folder(tmp_path, valid_midi_paths, broken_midi_paths) -> Path:
    """bach/ (3 chorales) and other/ (4 pieces and a broken file)."""
    root = tmp_path / "music"
    for path in valid_midi_paths:
        label = "bach" if path.name.startswith("bach_") else "other"
        (root / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / label / path.name)
    shutil.copy(broken_midi_paths[-1], root / "other" / "zz_broken.mid")
    return root


def test_midi_folder_labels_and_stratified_split(labelled_folder, tmp_path):
    builder = get_builder(
        "midi_folder", cache_dir=str(tmp_path / "cache"), path=str(labelled_folder)
    )
    builder.download_and_prepare()
    ds = builder.as_dataset()
    assert ds["train"].features["label"].names == ["bach", "other"]
    rows = [row for split in ds for row in ds[split]]
    assert sorted(r["source_path"] for r in rows) == sorted(
        f"{p.parent.name}/{p.name}"
        for p in labelled_folder.glob("*/*.mid")
        if p.name != "zz_broken.mid"
    )
    for row in rows:
        assert (
            ds["train"].features["label"].int2str(row["label"]) == row["source_path"].split("/")[0]
        )
    assert [item["name"] for item in builder.skipped_files()] == ["other/zz_broken.mid"]
    # The split is drawn over the usable files only (the broken one is left out first).
    files = sorted(p for p in labelled_folder.glob("*/*.mid") if p.name != "zz_broken.mid")
    expected = stratified_split(files, [f.parent.name for f in files], 42, 0.1, 0.1)
    for split in ds:
        assert set(ds[split]["source_path"]) == {
            f"{f.parent.name}/{f.name}" for f in expected[split]
        }


def test_midi_folder_split_folders_and_globs(tmp_path, valid_midi_paths):
    root = tmp_path / "splits"
    layout = {
        "train": valid_midi_paths[:3],
        "valid": valid_midi_paths[3:5],
        "test": valid_midi_paths[5:],
    }
    for folder, paths in layout.items():
        (root / folder).mkdir(parents=True)
        for path in paths:
            shutil.copy(path, root / folder / path.name)
    ds = load_midi_dataset("midi_folder", cache_dir=str(tmp_path / "cache"), data_dir=str(root))
    assert "label" not in ds["train"].column_names
    assert {split: sorted(ds[split]["id"]) for split in ds} == {
        "train": sorted(f"train/{p.name}" for p in layout["train"]),
        "validation": sorted(f"valid/{p.name}" for p in layout["valid"]),
        "test": sorted(f"test/{p.name}" for p in layout["test"]),
    }
    only_bach = load_midi_dataset(
        "midi_folder", cache_dir=str(tmp_path / "cache"), path=str(root / "*" / "bach_*.mid")
    )
    found = sorted(row["id"] for split in only_bach for row in only_bach[split])
    assert found == sorted(
        f"{folder}/{p.name}"
        for folder, ps in layout.items()
        for p in ps
        if p.name.startswith("bach_")
    )


def test_midi_folder_seeded_split_and_rebuild_on_change(tmp_path, valid_midi_paths):
    root = tmp_path / "flat"
    root.mkdir()
    for path in valid_midi_paths:
        shutil.copy(path, root / path.name)
    cache = str(tmp_path / "cache")
    ds = load_midi_dataset("midi_folder", cache_dir=cache, path=str(root))
    expected = seeded_split(sorted(p.name for p in valid_midi_paths), 42, 0.1, 0.1)
    assert {split: sorted(ds[split]["id"]) for split in ds} == {
        k: sorted(v) for k, v in expected.items()
    }
    score = symusic.Score.from_midi(valid_midi_paths[0].read_bytes())
    score.shift_pitch(2, inplace=True)  # a new piece (an exact copy would be a duplicate)
    score.dump_midi(root / "extra.mid")
    grown = load_midi_dataset("midi_folder", cache_dir=cache, path=str(root))
    assert sum(len(grown[s]) for s in grown) == len(valid_midi_paths) + 1


def test_midi_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no MIDI files .* found in .*empty"):
        load_midi_dataset("midi_folder", cache_dir=str(tmp_path), path=str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="does not exist .expected a folder, a MIDI file"):
        load_midi_dataset("midi_folder", cache_dir=str(tmp_path), path=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="give `path=`"):
        load_midi_dataset("midi_folder", cache_dir=str(tmp_path))


# ----------------------------------------------------------------------------- entry point, export


def test_entry_point_names_bad_input(tmp_path):
    with pytest.raises(
        ValueError, match=r"Unknown MIDI corpus 'bach'; choose from \['bach_chorales'"
    ):
        load_midi_dataset("bach", cache_dir=str(tmp_path))
    with pytest.raises(
        ValueError, match=r"bach_chorales: unknown option\(s\) \['max_piece'\]; valid options are"
    ):
        load_midi_dataset("bach_chorales", cache_dir=str(tmp_path), max_piece=3)
    with pytest.raises(ValueError, match="validation_ratio and test_ratio"):
        load_midi_dataset("bach_chorales", cache_dir=str(tmp_path), max_pieces=3, test_ratio=0.95)


def test_parquet_export_round_trip(labelled_folder, tmp_path):
    ds = load_midi_dataset(
        "midi_folder", cache_dir=str(tmp_path / "cache"), path=str(labelled_folder)
    )
    files = save_as_parquet(ds, tmp_path / "export")
    assert sorted(files) == sorted(ds)
    assert all(
        Path(f).name.endswith("-00000-of-00001.parquet") for fs in files.values() for f in fs
    )
    loaded = datasets.load_dataset(
        "parquet", data_files=files, cache_dir=str(tmp_path / "parquet_cache")
    )
    for split in ds:
        assert loaded[split].features == ds[split].features
        assert loaded[split].to_list() == ds[split].to_list()
