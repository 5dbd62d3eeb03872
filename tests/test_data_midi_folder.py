"""MIDI folders that fight back: symbolic-link loops, files reached twice, dangling links,
folders of broken files, a single file as ``path``; and the skip report every builder shares."""

from __future__ import annotations

import glob
import logging
import os
import shutil
from pathlib import Path

import datasets
import pytest
import symusic

from midiformers.data_scripts import NoUsableFilesError, get_builder, load_midi_dataset
from midiformers.data_scripts._common import (
    MidiDatasetBuilder,
    base_features,
    skip_category,
    summarize_skipped,
)
from midiformers.data_scripts._walk import find_files, split_pattern
from midiformers.data_scripts.midi_folder import MIDI_EXTENSIONS

needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="POSIX")


def _piece(source: Path, shift: int, target: Path) -> Path:
    """Write ``source`` moved by ``shift`` semitones to ``target``: a distinct piece."""
    score = symusic.Score.from_midi(source.read_bytes())
    score.shift_pitch(shift, inplace=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    score.dump_midi(target)
    return target


def _pieces(folder: Path, source: Path, names: list[str]) -> list[Path]:
    return [_piece(source, i, folder / name) for i, name in enumerate(names)]


def _build(tmp_path: Path, **config) -> tuple[MidiDatasetBuilder, datasets.DatasetDict]:
    builder = get_builder("midi_folder", cache_dir=str(tmp_path / "cache"), **config)
    builder.download_and_prepare()
    return builder, builder.as_dataset()


def _all_rows(ds: datasets.DatasetDict) -> list[dict]:
    return [row for split in ds for row in ds[split]]


def _assert_each_piece_once(ds: datasets.DatasetDict, expected_names: set[str]) -> None:
    """Every real piece is one example, and no bytes appear in two splits."""
    rows = _all_rows(ds)
    assert sorted(r["source_path"] for r in rows) == sorted(expected_names)
    by_split = {split: {bytes(r["midi"]) for r in ds[split]} for split in ds}
    splits = list(by_split)
    for i, first in enumerate(splits):
        for second in splits[i + 1 :]:
            assert not by_split[first] & by_split[second], (first, second)


# ----------------------------------------------------------------------------- link structures


@needs_symlinks
@pytest.mark.timeout(60)
def test_one_link_loop_lists_each_file_once(tmp_path, chorale_midi_paths):
    root = tmp_path / "songs"
    names = [f"a/a{i}.mid" for i in range(4)] + [f"b/b{i}.mid" for i in range(4)]
    _pieces(root, chorale_midi_paths[0], names)
    (root / "a" / "loop").symlink_to("..")  # songs/a/loop/a/loop/... forever
    builder, ds = _build(tmp_path, path=str(root))
    _assert_each_piece_once(ds, set(names))
    assert {split: len(ds[split]) for split in ds} == {"train": 4, "validation": 2, "test": 2}
    assert builder.skipped_files() == []  # a loop drops nothing: its files were never listed


@needs_symlinks
@pytest.mark.timeout(60)
@pytest.mark.parametrize("as_glob", [False, True], ids=["folder", "glob"])
def test_two_link_loops_terminate(tmp_path, chorale_midi_paths, as_glob):
    # Two loops make the paths grow exponentially: glob.glob("**") never returns here.
    root = tmp_path / "songs"
    names = ["a/x.mid", "a/y.mid", "b/z.mid"]
    _pieces(root, chorale_midi_paths[0], names)
    (root / "a" / "up").symlink_to("..")
    (root / "b" / "up").symlink_to("..")
    (root / "b" / "top").symlink_to(str(tmp_path))  # above the root: would walk it again
    path = str(root / "**" / "*.mid") if as_glob else str(root)
    _builder, ds = _build(tmp_path, path=path)
    _assert_each_piece_once(ds, set(names))


@pytest.mark.timeout(60)
def test_link_diamonds_are_walked_once(tmp_path):
    # Each level links twice to the next: 2**14 paths to the deepest file, 15 real folders.
    levels = 14
    for level in range(levels + 1):
        (tmp_path / f"d{level}").mkdir()
    for level in range(levels):
        for side in ("left", "right"):
            (tmp_path / f"d{level}" / side).symlink_to(tmp_path / f"d{level + 1}")
    (tmp_path / f"d{levels}" / "deep.mid").write_bytes(b"MThd")
    result = find_files(str(tmp_path / "d0"), MIDI_EXTENSIONS)
    assert [f.relative for f in result.files] == ["/".join(["left"] * levels + ["deep.mid"])]
    assert result.folders_walked == levels + 1 and result.duplicates == []


@needs_symlinks
def test_a_file_linked_twice_is_one_example(tmp_path, chorale_midi_paths):
    root = tmp_path / "songs"
    names = ["x.mid", "y.mid", "z.mid", "w.mid"]
    _pieces(root, chorale_midi_paths[1], names)
    (root / "also_x.mid").symlink_to("x.mid")
    (root / "sub").mkdir()
    (root / "sub" / "x_again.mid").symlink_to(root / "x.mid")
    os.link(root / "y.mid", root / "y_hard.mid")  # a hard link is the same file too
    builder, ds = _build(tmp_path, path=str(root), deduplicate=False)
    _assert_each_piece_once(ds, set(names))  # real names win over link names
    assert builder.skipped_by_category() == {
        "duplicate": ["also_x.mid", "sub/x_again.mid", "y_hard.mid"]
    }


@needs_symlinks
def test_a_file_linked_into_two_split_folders_stays_in_one(tmp_path, chorale_midi_paths):
    root = tmp_path / "songs"
    _pieces(root, chorale_midi_paths[0], ["train/a.mid", "train/b.mid", "test/c.mid"])
    (root / "test" / "a.mid").symlink_to(root / "train" / "a.mid")
    builder, ds = _build(tmp_path, path=str(root))
    assert {split: sorted(ds[split]["id"]) for split in ds} == {
        "train": ["train/a.mid", "train/b.mid"],
        "test": ["test/c.mid"],
    }
    assert builder.skipped_by_category() == {"duplicate": ["test/a.mid"]}


@needs_symlinks
def test_links_leading_outside_are_followed(tmp_path, chorale_midi_paths):
    outside = tmp_path / "elsewhere"
    _pieces(outside, chorale_midi_paths[0], ["o1.mid", "o2.mid"])
    root = tmp_path / "songs"
    _pieces(root, chorale_midi_paths[1], ["mine.mid"])
    (root / "more").symlink_to(outside)
    (root / "single.mid").symlink_to(outside / "o1.mid")  # o1 again, by a second way
    builder, ds = _build(tmp_path, path=str(root))
    _assert_each_piece_once(ds, {"mine.mid", "more/o2.mid", "single.mid"})
    assert builder.skipped_by_category() == {"duplicate": ["more/o1.mid"]}


@needs_symlinks
@pytest.mark.timeout(60)
def test_dangling_links_loops_and_fifos_are_reported(tmp_path, chorale_midi_paths):
    root = tmp_path / "songs"
    _pieces(root, chorale_midi_paths[0], ["a.mid", "b.mid", "c.mid"])
    (root / "gone.mid").symlink_to("deleted.mid")
    (root / "gone_folder").symlink_to(tmp_path / "unmounted")
    (root / "self.mid").symlink_to("self.mid")
    os.mkfifo(root / "pipe.mid")  # opening it would block forever
    (root / "notes.txt").symlink_to("nowhere.txt")  # not music: not reported
    builder, ds = _build(tmp_path, path=str(root))
    _assert_each_piece_once(ds, {"a.mid", "b.mid", "c.mid"})
    assert builder.skipped_by_category() == {
        "dangling link": ["gone.mid", "gone_folder"],
        "not a regular file": ["pipe.mid"],
        "link loop": ["self.mid"],
    }
    reasons = {item["name"]: item["reason"] for item in builder.skipped_files()}
    assert "'deleted.mid' does not exist" in reasons["gone.mid"]


@needs_symlinks
def test_links_to_the_root_or_above_are_not_followed(tmp_path, chorale_midi_paths):
    root = tmp_path / "songs"
    _pieces(root, chorale_midi_paths[0], ["a/x.mid"])
    _pieces(tmp_path / "beside", chorale_midi_paths[0], ["not_mine.mid"])
    (root / "a" / "parent").symlink_to(tmp_path)
    (root / "a" / "root").symlink_to(root)
    result = find_files(str(root), MIDI_EXTENSIONS)
    assert [f.relative for f in result.files] == ["a/x.mid"]
    assert result.folder_links_not_followed == 2


def test_glob_patterns_match_like_glob(tmp_path):
    layout = [
        "x.mid",
        "a/y.MID",
        "a/b/z.midi",
        "a/b/c/deep.mid",
        "b/q.mid",
        "b/readme.txt",
        ".hidden/h.mid",
        "a/.h.mid",
        "ab/k.kar",
    ]
    for name in layout:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    patterns = ["**/*", "**/*.mid", "*/*.mid", "a/**/*", "a/*/*.midi", "[ab]*/*", "**/b/*", "*"]
    for pattern in patterns:
        full = str(tmp_path / pattern)
        root, components = split_pattern(full)
        expected = sorted(
            os.path.relpath(p, root).replace(os.sep, "/")
            for p in glob.glob(full, recursive=True)
            if os.path.isfile(p) and p.lower().endswith(MIDI_EXTENSIONS)
        )
        found = find_files(root, MIDI_EXTENSIONS, components)
        assert [f.relative for f in found.files] == expected, pattern
    assert split_pattern("*.mid") == (".", ["*.mid"])
    assert split_pattern("/m/songs/**/x?.mid") == ("/m/songs", ["**", "x?.mid"])


# ----------------------------------------------------------------------------- errors, one file


def test_a_folder_of_broken_files_says_why(tmp_path, broken_midi_paths, no_notes_midi_path):
    root = tmp_path / "broken"
    root.mkdir()
    for path in [*broken_midi_paths, no_notes_midi_path]:
        shutil.copy(path, root / path.name)
    for _attempt in range(2):  # nothing half-built is cached: the second try says the same
        with pytest.raises(NoUsableFilesError) as caught:
            load_midi_dataset("midi_folder", cache_dir=str(tmp_path / "cache"), path=str(root))
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(f"midi_folder: no readable MIDI file in {str(root)!r}: ")
        assert "6 source file(s) skipped (" in message
        assert "2 not MIDI" in message and "1 empty" in message and "1 no notes" in message
        assert "empty.mid (the file is empty)" in message and "and 1 more" in message


def test_a_split_folder_of_broken_files_is_left_out(tmp_path, valid_midi_paths, broken_midi_paths):
    root = tmp_path / "songs"
    for path in valid_midi_paths[:3]:
        (root / "train").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / "train" / path.name)
    (root / "test").mkdir()
    for path in broken_midi_paths[:2]:
        shutil.copy(path, root / "test" / path.name)
    builder, ds = _build(tmp_path, path=str(root))
    assert list(ds) == ["train"] and len(ds["train"]) == 3
    assert sorted(name for names in builder.skipped_by_category().values() for name in names) == [
        f"test/{p.name}" for p in broken_midi_paths[:2]
    ]


def test_a_single_file_is_a_dataset(tmp_path, valid_midi_paths, broken_midi_paths):
    source = valid_midi_paths[0]
    ds = load_midi_dataset("midi_folder", cache_dir=str(tmp_path / "cache"), path=str(source))
    assert list(ds) == ["train"]  # one file: everything in train
    assert ds["train"]["id"] == [source.name]
    assert bytes(ds["train"][0]["midi"]) == source.read_bytes()
    renamed = tmp_path / "piece.bin"  # named explicitly, so any extension will do
    shutil.copy(source, renamed)
    again = load_midi_dataset("midi_folder", cache_dir=str(tmp_path / "cache"), path=str(renamed))
    assert again["train"]["id"] == ["piece.bin"]
    broken = broken_midi_paths[0]
    with pytest.raises(NoUsableFilesError, match=rf"{broken.name} \("):
        load_midi_dataset("midi_folder", cache_dir=str(tmp_path / "cache"), path=str(broken))


@needs_symlinks
def test_a_dangling_link_as_path_is_named(tmp_path):
    (tmp_path / "link.mid").symlink_to("gone.mid")
    with pytest.raises(FileNotFoundError, match=r"link\.mid' cannot be used: dangling symbolic"):
        load_midi_dataset("midi_folder", cache_dir=str(tmp_path), path=str(tmp_path / "link.mid"))
    (tmp_path / "only_links").mkdir()
    (tmp_path / "only_links" / "a.mid").symlink_to("gone.mid")
    with pytest.raises(FileNotFoundError, match=r"no MIDI files .*: 1 source file\(s\) skipped"):
        load_midi_dataset("midi_folder", cache_dir=str(tmp_path), path=str(tmp_path / "only_links"))


def test_identical_copies_are_one_piece_unless_asked(tmp_path, chorale_midi_paths):
    root = tmp_path / "songs"
    _pieces(root, chorale_midi_paths[0], ["a.mid", "b.mid", "c.mid"])
    shutil.copy(root / "a.mid", root / "a (copy).mid")
    builder, ds = _build(tmp_path, path=str(root))
    _assert_each_piece_once(ds, {"a (copy).mid", "b.mid", "c.mid"})  # first in name order
    assert builder.skipped_by_category() == {"duplicate": ["a.mid"]}
    _builder, kept = _build(tmp_path, path=str(root), deduplicate=False)
    assert sum(len(kept[split]) for split in kept) == 4


def test_oversized_files_are_skipped_unread(tmp_path, valid_midi_paths):
    root = tmp_path / "songs"
    root.mkdir()
    for path in valid_midi_paths[:3]:
        shutil.copy(path, root / path.name)
    with open(root / "huge.mid", "wb") as handle:
        handle.truncate(40 * 2**20)  # sparse: 40 MiB of nothing, cheap to make
    builder, _ds = _build(tmp_path, path=str(root))
    assert builder.skipped_by_category() == {"too large": ["huge.mid"]}


# ----------------------------------------------------------------------------- the skip report


def test_skip_report_is_logged_once_per_build(
    tmp_path, valid_midi_paths, broken_midi_paths, caplog
):
    root = tmp_path / "songs"
    root.mkdir()
    for path in [*valid_midi_paths, *broken_midi_paths]:
        shutil.copy(path, root / path.name)
    shutil.copy(valid_midi_paths[0], root / "zz_copy.mid")
    cache = str(tmp_path / "cache")
    with caplog.at_level(logging.INFO, logger="midiformers"):
        load_midi_dataset("midi_folder", cache_dir=cache, path=str(root))
    warnings = [r.getMessage() for r in _ours(caplog.records) if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    [warning] = warnings
    assert "5 source file(s) skipped (" in warning and "1 empty" in warning
    assert "2 not MIDI" in warning and "more" not in warning
    assert "empty.mid, header_without_tracks.mid, random_bytes.mid, text_renamed.mid" in warning
    assert "1 duplicate(s) of files already included dropped" in warning
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="midiformers"):  # cached: told, not warned
        load_midi_dataset("midi_folder", cache_dir=cache, path=str(root))
    assert not [r for r in _ours(caplog.records) if r.levelno >= logging.WARNING]
    assert "5 source file(s) skipped" in caplog.text


def _ours(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [record for record in records if record.name.startswith("midiformers")]


class _Blobs(MidiDatasetBuilder):
    """A toy corpus: examples are the byte strings of ``config.data_files``-free gen_kwargs."""

    VERSION = datasets.Version("0.0.1")
    BLOBS: dict[str, list[tuple[str, bytes]]] = {}

    def _info(self):
        return datasets.DatasetInfo(features=base_features())

    def _split_generators(self, dl_manager):
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"blobs": blobs})
            for split, blobs in self.BLOBS.items()
        ]

    def _generate_examples(self, blobs):
        for name, data in blobs:
            example = self._make_example(name, data)
            if example is not None:
                yield name, example


def test_builders_share_the_skip_report_and_empty_split_rules(
    tmp_path, valid_midi_paths, broken_midi_paths
):
    good = [(p.name, p.read_bytes()) for p in valid_midi_paths[:2]]
    bad = [(p.name, p.read_bytes()) for p in broken_midi_paths]
    _Blobs.BLOBS = {"train": good, "test": bad[:2], "validation": bad[2:]}
    builder = _Blobs(cache_dir=str(tmp_path / "a"))
    builder.download_and_prepare()
    assert list(builder.as_dataset()) == ["train"]  # the empty splits are left out
    by_category = builder.skipped_by_category()
    assert sorted(n for names in by_category.values() for n in names) == sorted(n for n, _ in bad)
    assert by_category["empty"] == ["empty.mid"]
    _Blobs.BLOBS = {"train": bad}
    with pytest.raises(NoUsableFilesError, match=r": no usable piece in the corpus: 5 source file"):
        _Blobs(cache_dir=str(tmp_path / "b")).download_and_prepare()


def test_skip_categories_and_summary():
    assert skip_category("the file is empty") == "empty"
    assert skip_category("not a MIDI file: it does not start with 'MThd'") == "not MIDI"
    assert skip_category("the header announces 1 track(s) but ... (truncated or corrupt)") == (
        "truncated"
    )
    assert skip_category("the file contains no notes") == "no notes"
    assert skip_category("something new") == "other"
    records = [
        {"name": f"f{i}.mid", "reason": "the file is empty", "category": "empty"} for i in range(7)
    ] + [{"name": "g.mid", "reason": "the same file as f.mid", "category": "duplicate"}]
    assert summarize_skipped(records, max_names=2) == (
        "7 source file(s) skipped (7 empty): f0.mid, f1.mid and 5 more; "
        "1 duplicate(s) of files already included dropped"
    )
