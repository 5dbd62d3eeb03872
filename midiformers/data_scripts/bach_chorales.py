"""Bach chorales from music21's corpus, as MIDI: the offline default corpus of midiformers.

Nothing is downloaded: music21 ships the chorales (``music21.corpus.chorales.Iterator()``
walks the 371 of the Riemenschneider edition). That edition prints some chorales twice
(e.g. BWV 267 as nos. 5 and 309 under two titles); both numbers point to the same corpus
file, so by default each file is converted once (350 pieces), which keeps duplicates out
of the test split. Converting every chorale takes about a minute, so the build is cached
like any ``datasets`` build.

Split: the sorted file names are shuffled with ``seed`` and cut 80 / 10 / 10.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import datasets

from ._common import MidiDatasetBuilder, base_features, seeded_split
from ._music21 import Music21ConversionError, corpus_file_to_midi, require_music21

_DESCRIPTION = (
    "Four-part chorales by Johann Sebastian Bach from the music21 corpus, converted to MIDI "
    "(music21 writes 10080 ticks per quarter, one track per voice)."
)
_HOMEPAGE = "https://web.mit.edu/music21/doc/moduleReference/moduleCorpusChorales.html"
_LICENSE = "The music is in the public domain; the encodings ship with music21 (BSD-3-Clause)."
COMPOSER = "Johann Sebastian Bach"


@dataclass
class BachChoralesConfig(datasets.BuilderConfig):
    """Options of the ``bach_chorales`` builder.

    Args:
        max_pieces: convert only the first ``max_pieces`` chorales (by file name), e.g. for
            tests; ``None`` converts all.
        deduplicate: convert each corpus file once even when the edition lists it twice.
        seed: seed of the train / validation / test shuffle.
        validation_ratio: share of pieces in the validation split.
        test_ratio: share of pieces in the test split.
    """

    max_pieces: int | None = None
    deduplicate: bool = True
    seed: int = 42
    validation_ratio: float = 0.1
    test_ratio: float = 0.1


def chorale_catalogue(deduplicate: bool = True) -> list[dict]:
    """The chorales of the Riemenschneider edition as ``{"path", "riemenschneider", "title"}``,
    sorted by corpus path (with ``deduplicate``, one entry per file)."""
    music21 = require_music21()
    listing = music21.corpus.chorales.ChoraleListRKBWV().byRiemenschneider
    by_bwv: dict[str, list[tuple[int, str]]] = {}
    for number, info in listing.items():
        by_bwv.setdefault(f"bach/bwv{info['bwv']}", []).append((int(number), info["title"]))
    paths = list(music21.corpus.chorales.Iterator(returnType="filename"))
    entries = []
    for path in sorted(set(paths)) if deduplicate else sorted(paths):
        numbers = sorted(by_bwv.get(path, []))
        entries.append(
            {
                "path": path,
                "riemenschneider": [number for number, _ in numbers],
                "title": " / ".join(dict.fromkeys(title for _, title in numbers)),
            }
        )
    return entries


class BachChorales(MidiDatasetBuilder):
    """The music21 Bach chorales converted to MIDI (offline, cached)."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = BachChoralesConfig

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTION,
            features=base_features(
                composer=datasets.Value("string"),
                title=datasets.Value("string"),
                bwv=datasets.Value("string"),
                riemenschneider=datasets.Sequence(datasets.Value("int32")),
                source_path=datasets.Value("string"),
            ),
            homepage=_HOMEPAGE,
            license=_LICENSE,
        )

    def _split_generators(self, dl_manager):
        entries = chorale_catalogue(self.config.deduplicate)
        if not self.config.deduplicate:
            # Duplicated files need distinct ids: tag each entry with its position.
            for index, entry in enumerate(entries):
                entry["suffix"] = f"-{index:03d}"
        if self.config.max_pieces is not None:
            entries = entries[: self.config.max_pieces]
        parts = seeded_split(
            entries, self.config.seed, self.config.validation_ratio, self.config.test_ratio
        )
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"entries": items})
            for split, items in parts.items()
        ]

    def _generate_examples(self, entries: list[dict]):
        for entry in entries:
            path = entry["path"]
            bwv = os.path.basename(path).removeprefix("bwv")
            example_id = f"bwv{bwv}{entry.get('suffix', '')}"
            try:
                data = corpus_file_to_midi(path)
            except Music21ConversionError as error:
                self._record_skip(path, error.reason, "conversion failed")
                continue
            example = self._make_example(
                example_id,
                data,
                source_name=path,
                composer=COMPOSER,
                title=entry["title"],
                bwv=bwv,
                riemenschneider=entry["riemenschneider"],
                source_path=path,
            )
            if example is not None:
                yield example_id, example
