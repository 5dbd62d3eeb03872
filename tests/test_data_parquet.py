"""The midi_parquet builder: Parquet datasets whose rows carry MIDI bytes (GigaMIDI-shaped
test data written here), from a folder laid out like a Hub dataset (offline), data_files, a
file or a glob; options, row-group shards, and the bad-data policy."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
from synthetic_midi import write_midi_parquet

from midiformers.data_scripts import NoUsableFilesError, get_builder, load_midi_dataset
from midiformers.data_scripts.midi_parquet import resolve_parquet_files

GIGAMIDI = {"midi_column": "music", "id_column": "md5"}

README = """---
configs:
  - config_name: v1
    default: true
    data_files:
      - split: train
        path: v1/train/*.parquet
      - split: test
        path: v1/test/*.parquet
  - config_name: small
    data_files:
      - split: train
        path: small/*.parquet
---
# A GigaMIDI-shaped dataset
"""


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory, valid_midi_paths, broken_midi_paths) -> Path:
    """A local folder laid out like a Hub dataset repository with two configs."""
    folder = tmp_path_factory.mktemp("hub-dataset")
    (folder / "README.md").write_text(README)
    train = valid_midi_paths[:5] + broken_midi_paths[:2]
    write_midi_parquet(folder / "v1" / "train" / "0000.parquet", train[:4], row_group_size=2)
    write_midi_parquet(
        folder / "v1" / "train" / "0001.parquet", train[4:], row_group_size=2, start=4
    )
    write_midi_parquet(folder / "v1" / "test" / "0000.parquet", valid_midi_paths[5:], start=10)
    write_midi_parquet(folder / "small" / "0000.parquet", valid_midi_paths[:1])
    return folder


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def test_hub_shaped_folder_offline(hub_folder, tmp_path, offline, valid_midi_paths):
    builder = get_builder(
        "midi_parquet",
        cache_dir=str(tmp_path),
        path=str(hub_folder),
        metadata_columns=("instrument_category", "num_tracks"),
        **GIGAMIDI,
    )
    builder.download_and_prepare()
    ds = builder.as_dataset()
    assert {split: len(part) for split, part in ds.items()} == {"train": 5, "test": 2}
    assert list(ds["train"].features) == [
        "id",
        "midi",
        "num_notes",
        "duration_seconds",
        "instrument_category",
        "num_tracks",
    ]
    row = ds["train"][0]
    assert row["id"] == "00000000" and row["midi"] == valid_midi_paths[0].read_bytes()
    assert row["num_notes"] > 0 and row["instrument_category"] == "no-drums"
    assert ds["test"]["id"] == ["0000000a", "0000000b"]
    # The broken rows are skipped and named by file, row and id.
    assert sorted(r["name"] for r in builder.skipped_files()) == [
        "train/0001.parquet#1 (md5 00000005)",
        "train/0001.parquet#2 (md5 00000006)",
    ]
    small = load_midi_dataset(
        "midi_parquet", cache_dir=str(tmp_path), path=str(hub_folder), subset="small", **GIGAMIDI
    )
    assert list(small) == ["train"] and len(small["train"]) == 1


def test_data_files_glob_and_single_file(hub_folder, tmp_path):
    files = {"train": str(hub_folder / "v1" / "train" / "*.parquet")}
    from_files = load_midi_dataset(
        "midi_parquet", cache_dir=str(tmp_path), data_files=files, split="train", **GIGAMIDI
    )
    from_glob = load_midi_dataset(
        "midi_parquet",
        cache_dir=str(tmp_path),
        path=files["train"],
        split="train",
        **GIGAMIDI,
    )
    assert from_files["id"] == from_glob["id"] == [f"{i:08x}" for i in range(5)]
    one = load_midi_dataset(
        "midi_parquet",
        cache_dir=str(tmp_path),
        path=str(hub_folder / "small" / "0000.parquet"),
        **GIGAMIDI,
    )
    # Without metadata_columns every other column is kept; md5 becomes the id.
    assert list(one["train"].features)[4:] == ["title", "instrument_category", "num_tracks"]


def test_default_ids_and_label_features(tmp_path, valid_midi_paths):
    """An exported midiformers corpus (ClassLabel in the Parquet metadata, an ``id``
    column) reads back with its labels; rows without an id column are named file#row."""
    table = datasets.Dataset.from_dict(
        {
            "id": ["a", "b"],
            "midi": [p.read_bytes() for p in valid_midi_paths[:2]],
            "composer": [1, 0],
        },
        features=datasets.Features(
            {
                "id": datasets.Value("string"),
                "midi": datasets.Value("binary"),
                "composer": datasets.ClassLabel(names=["Bach", "Haydn"]),
            }
        ),
    )
    table.to_parquet(str(tmp_path / "export" / "train.parquet"))
    ds = load_midi_dataset("midi_parquet", cache_dir=str(tmp_path), path=str(tmp_path / "export"))
    assert ds["train"]["id"] == ["a", "b"]
    assert ds["train"].features["composer"] == datasets.ClassLabel(names=["Bach", "Haydn"])
    assert ds["train"]["composer"] == [1, 0]
    write_midi_parquet(tmp_path / "plain" / "x.parquet", valid_midi_paths[:2])
    plain = load_midi_dataset(
        "midi_parquet", cache_dir=str(tmp_path), path=str(tmp_path / "plain"), midi_column="music"
    )
    assert plain["train"]["id"] == ["x.parquet#0", "x.parquet#1"]


def test_row_groups_are_shards_and_num_proc_builds_them(hub_folder, tmp_path):
    options = {"path": str(hub_folder), **GIGAMIDI}
    stream = load_midi_dataset("midi_parquet", streaming=True, cache_dir=str(tmp_path), **options)
    assert stream["train"].num_shards == 2 + 2  # two files of two row groups each
    serial = load_midi_dataset("midi_parquet", cache_dir=str(tmp_path / "a"), **options)
    parallel = load_midi_dataset(
        "midi_parquet", cache_dir=str(tmp_path / "b"), num_proc=2, **options
    )
    for split in serial:
        assert list(parallel[split]) == list(serial[split]) == list(stream[split])


def test_bad_files_are_skipped_and_named(tmp_path, valid_midi_paths):
    folder = tmp_path / "data"
    write_midi_parquet(folder / "a.parquet", valid_midi_paths[:2])
    (folder / "b.parquet").write_bytes(b"PAR1 this is not parquet")
    write_midi_parquet(folder / "c.parquet", valid_midi_paths[2:3])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"music": [None, b""], "md5": ["n", "e"]}), folder / "d.parquet")
    pq.write_table(pa.table({"other": [1]}), folder / "e.parquet")
    builder = get_builder(
        "midi_parquet",
        cache_dir=str(tmp_path / "cache"),
        path=str(folder),
        metadata_columns=(),
        **GIGAMIDI,
    )
    builder.download_and_prepare()
    assert len(builder.as_dataset(split="train")) == 3
    skipped = {r["name"]: r["reason"] for r in builder.skipped_files()}
    assert set(skipped) == {"b.parquet", "d.parquet#0 (md5 n)", "d.parquet#1 (md5 e)", "e.parquet"}
    assert "cannot be read as Parquet" in skipped["b.parquet"]
    assert "null" in skipped["d.parquet#0 (md5 n)"]
    assert "lacks the column(s) ['music', 'md5']" in skipped["e.parquet"]
    assert builder.skipped_by_category()["unreadable"] == ["b.parquet"]


def test_nothing_usable_fails_with_the_reasons(tmp_path, broken_midi_paths):
    write_midi_parquet(tmp_path / "d" / "x.parquet", broken_midi_paths)
    with pytest.raises(NoUsableFilesError, match=r"no usable piece .* 5 source file\(s\) skipped"):
        load_midi_dataset(
            "midi_parquet", cache_dir=str(tmp_path), path=str(tmp_path / "d"), **GIGAMIDI
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, r"no MIDI column 'midi' .* columns are \['md5', 'music'"),
        ({"midi_column": "title"}, r"column 'title' holds .*string.*, not MIDI bytes"),
        ({"midi_column": "music", "id_column": "sha"}, r"no id column 'sha'"),
        ({"midi_column": "music", "metadata_columns": ("genre",)}, r"\['genre'\] not in the data"),
        (
            {"midi_column": "music", "metadata_columns": ("num_tracks", "music")},
            r"\['music'\] clash with the MIDI column",
        ),
    ],
)
def test_options_are_checked(hub_folder, tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        get_builder("midi_parquet", cache_dir=str(tmp_path), path=str(hub_folder), **options)


def test_sources_that_are_not_parquet_datasets(tmp_path, offline):
    with pytest.raises(ValueError, match="give `path=`"):
        get_builder("midi_parquet", cache_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="neither a Parquet file"):
        resolve_parquet_files(str(tmp_path / "missing"))
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "train.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not Parquet"):
        resolve_parquet_files(str(tmp_path / "csv"))
    # A Hub id (hf:// form with a revision) goes to the Hub; offline it fails and says where.
    with pytest.raises(OSError, match="cannot read 'someone/no-such-midi-dataset'"):
        resolve_parquet_files("hf://datasets/someone/no-such-midi-dataset@main")
