"""POP909 (Wang et al., ISMIR 2020): 909 Chinese pop songs as piano arrangements in MIDI.

Each song ``NNN`` is ``POP909/NNN/NNN.mid`` with the tracks ``MELODY``, ``BRIDGE`` and
``PIANO`` (alternative arrangements live in ``POP909/NNN/versions/``, and song name and
artist in ``POP909/index.xlsx``).

Split: POP909 has no official split. The sorted song ids are shuffled with ``seed``
(``random.Random(seed).shuffle``, default 42) and cut 8:1:1, i.e. 727 / 91 / 91 songs for
the full corpus. Alternative versions follow their song, so no song leaks across splits.

Source and checksum: the GitHub archive of music-x-lab/POP909-Dataset at commit
``d83e6ed`` ("add paper link", 2020-08-28, the head of the repository), so the content
cannot move. Its SHA-256 (``fe3d861f…03ea``, 50,105,665 bytes) is the one a third party
recorded after downloading this exact archive (a public data inventory, 2026-10-08); the
authors publish none and it could not be re-checked here (no network). GitHub does not
promise byte-stable archives: on a mismatch the build stops and says so; pass
``sha256=None`` to accept the new bytes, or ``source=`` a local zip or extracted folder.
"""

from __future__ import annotations

import io
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from xml.etree import ElementTree

import datasets
import symusic

from ._common import MidiDatasetBuilder, base_features, seeded_split, verify_sha256

COMMIT = "d83e6edba6872a704f5d3b8b32f5cb540088dae6"
URL = f"https://codeload.github.com/music-x-lab/POP909-Dataset/zip/{COMMIT}"
SHA256 = "fe3d861f6eeaee6b40987e64ae26552b4c7b824f6fa40d29b0c5e5ebd62b03ea"
FILE_NAME = f"POP909-Dataset-{COMMIT}.zip"
TRACK_NAMES = ("MELODY", "BRIDGE", "PIANO")

logger = logging.getLogger(__name__)

_SONG_RE = re.compile(r"(?:^|/)POP909/(\d{3})/(?:(\1)|versions/(\1-v\d+))\.midi?$")
_INDEX_RE = re.compile(r"(?:^|/)POP909/index\.xlsx$")
_XLSX_NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}

_DESCRIPTION = (
    "POP909: 909 popular songs as piano arrangements (MELODY / BRIDGE / PIANO tracks), with a "
    "deterministic seeded 8:1:1 split by song id."
)
_CITATION = """\
@inproceedings{wang2020pop909,
  title     = {POP909: A Pop-song Dataset for Music Arrangement Generation},
  author    = {Ziyu Wang and Ke Chen and Junyan Jiang and Yiyi Zhang and Maoran Xu and
               Shuqi Dai and Guxian Bin and Gus Xia},
  booktitle = {Proceedings of the 21st International Society for Music Information Retrieval Conference},
  year      = {2020}
}"""


@dataclass
class Pop909Config(datasets.BuilderConfig):
    """Options of the ``pop909`` builder.

    Args:
        source: a local archive (zip) or extracted folder holding ``POP909/``.
        url: where to download the archive from.
        sha256: expected SHA-256 of the archive (``None`` skips the check).
        seed: seed of the 8:1:1 song split.
        include_versions: also add the alternative arrangements in ``versions/``.
        tracks: keep only these tracks (e.g. ``("MELODY",)``); ``None`` keeps all and
            stores the original file unchanged.
    """

    source: str | None = None
    url: str = URL
    sha256: str | None = SHA256
    seed: int = 42
    include_versions: bool = False
    tracks: tuple[str, ...] | None = None
    validation_ratio: float = 0.1
    test_ratio: float = 0.1


class _Corpus:
    """Read members of the corpus from a zip archive or an extracted folder alike."""

    def __init__(self, path: str):
        self.path = path
        self.archive = None
        if os.path.isfile(path):
            if not zipfile.is_zipfile(path):
                raise ValueError(f"pop909: {path} is neither a folder nor a zip archive")
            self.archive = zipfile.ZipFile(path)

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()

    def names(self) -> list[str]:
        if self.archive is not None:
            return self.archive.namelist()
        names = []
        for root, _dirs, files in os.walk(self.path):
            for file in files:
                names.append(
                    os.path.relpath(os.path.join(root, file), self.path).replace(os.sep, "/")
                )
        return names

    def read(self, name: str) -> bytes:
        if self.archive is not None:
            return self.archive.read(name)
        with open(os.path.join(self.path, name), "rb") as handle:
            return handle.read()


def read_xlsx_rows(data: bytes) -> list[dict[str, str]]:
    """Rows of the first sheet of an .xlsx file as dicts keyed by the header row.

    Enough for POP909's ``index.xlsx`` (inline or shared strings) without pulling in a
    spreadsheet library.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as book:
        shared = []
        if "xl/sharedStrings.xml" in book.namelist():
            root = ElementTree.fromstring(book.read("xl/sharedStrings.xml"))
            shared = [
                "".join(t.text or "" for t in item.iter(f"{{{_XLSX_NS['m']}}}t")) for item in root
            ]
        sheet = ElementTree.fromstring(book.read("xl/worksheets/sheet1.xml"))
    table = []
    for row in sheet.iter(f"{{{_XLSX_NS['m']}}}row"):
        values = {}
        for cell in row.findall("m:c", _XLSX_NS):
            column = re.sub(r"\d", "", cell.get("r", ""))
            values[column] = _cell_text(cell, shared)
        table.append(values)
    if not table:
        return []
    header = table[0]
    return [{header[c]: row.get(c, "") for c in header} for row in table[1:]]


def _cell_text(cell: ElementTree.Element, shared: list[str]) -> str:
    kind = cell.get("t")
    if kind == "inlineStr":
        return "".join(t.text or "" for t in cell.iter(f"{{{_XLSX_NS['m']}}}t"))
    value = cell.find("m:v", _XLSX_NS)
    text = value.text if value is not None and value.text is not None else ""
    return shared[int(text)] if kind == "s" and text else text


def keep_tracks(data: bytes, tracks: tuple[str, ...], name: str) -> bytes:
    """Re-write a MIDI file with only the tracks whose names are in ``tracks``."""
    from ..tokenization import load_score

    score = load_score(data, name=name)
    wanted = {track.upper() for track in tracks}
    kept = symusic.Score(score.tpq)
    kept.tempos = score.tempos
    kept.time_signatures = score.time_signatures
    kept.key_signatures = score.key_signatures
    for track in score.tracks:
        if track.name.strip().upper() in wanted:
            kept.tracks.append(track)
    return kept.dumps_midi()


class Pop909(MidiDatasetBuilder):
    """POP909 with a seeded 8:1:1 split by song."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = Pop909Config

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTION,
            features=base_features(
                song_id=datasets.Value("string"),
                version=datasets.Value("string"),
                name=datasets.Value("string"),
                artist=datasets.Value("string"),
                source_path=datasets.Value("string"),
            ),
            homepage="https://github.com/music-x-lab/POP909-Dataset",
            citation=_CITATION,
            license="MIT (arrangements and annotations, Music X Lab)",
        )

    def _split_generators(self, dl_manager):
        path = self._resolve_source(dl_manager, self.config.url, FILE_NAME)
        if os.path.isfile(path):
            verify_sha256(path, self.config.sha256, "pop909")
        corpus = _Corpus(path)
        try:
            names = corpus.names()
            index = self._read_index(corpus, names)
        finally:
            corpus.close()
        songs: dict[str, list[tuple[str, str]]] = {}
        for name in sorted(names):
            match = _SONG_RE.search(name)
            if match is None:
                continue
            version = match.group(3) or ""
            if version and not self.config.include_versions:
                continue
            songs.setdefault(match.group(1), []).append((name, version))
        if not songs:
            raise ValueError(f"pop909: no POP909/NNN/NNN.mid files found in {path}")
        parts = seeded_split(
            sorted(songs), self.config.seed, self.config.validation_ratio, self.config.test_ratio
        )
        return [
            datasets.SplitGenerator(
                name=split,
                gen_kwargs={
                    "path": path,
                    "files": [
                        (song, member, version) for song in ids for member, version in songs[song]
                    ],
                    "index": {song: index.get(song, {}) for song in ids},
                },
            )
            for split, ids in parts.items()
        ]

    def _read_index(self, corpus: _Corpus, names: list[str]) -> dict[str, dict[str, str]]:
        member = next((name for name in names if _INDEX_RE.search(name)), None)
        if member is None:
            logger.warning("pop909: no POP909/index.xlsx; song names and artists left empty")
            return {}
        try:
            rows = read_xlsx_rows(corpus.read(member))
        except (zipfile.BadZipFile, ElementTree.ParseError, KeyError) as error:
            logger.warning(
                "pop909: %s is unreadable (%s); names and artists left empty", member, error
            )
            return {}
        return {row.get("song_id", "").zfill(3): row for row in rows}

    def _generate_examples(self, path: str, files: list[tuple[str, str, str]], index: dict):
        corpus = _Corpus(path)
        try:
            yield from self._examples(corpus, files, index)
        finally:
            corpus.close()

    def _examples(self, corpus: _Corpus, files: list[tuple[str, str, str]], index: dict):
        for song, member, version in files:
            example_id = version or song
            try:
                data = corpus.read(member)
            except (OSError, zipfile.BadZipFile) as error:  # e.g. a bad CRC in one member
                self._record_skip(
                    member, f"cannot be read from the archive ({error})", "unreadable"
                )
                continue
            if self.config.tracks is not None:
                from ..tokenization import MidiFileError

                try:
                    data = keep_tracks(data, tuple(self.config.tracks), member)
                except MidiFileError as error:
                    self._record_skip(member, error.reason)
                    continue
            info = index.get(song, {})
            example = self._make_example(
                example_id,
                data,
                source_name=member,
                song_id=song,
                version=version,
                name=info.get("name", ""),
                artist=info.get("artist", ""),
                source_path=member,
            )
            if example is not None:
                yield example_id, example
