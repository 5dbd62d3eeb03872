"""MAESTRO v3.0.0 (Hawthorne et al., ICLR 2019): 1276 piano performances as MIDI.

The MIDI-only archive ``maestro-v3.0.0-midi.zip`` holds ``maestro-v3.0.0/`` with the
performances under ``<year>/`` and the metadata ``maestro-v3.0.0.csv`` (and ``.json``):
``canonical_composer``, ``canonical_title``, ``split`` (train / validation / test: the
official split, kept as is), ``year``, ``midi_filename``, ``audio_filename``, ``duration``.

``composer`` is a ``ClassLabel`` over the 60 canonical composer names of the v3.0.0 CSV
(arrangements keep their ``"Composer / Arranger"`` name, as the CSV writes them). With
``top_n_composers=N`` only the pieces of the N composers with most pieces are kept, and
:meth:`Maestro.as_dataset` re-labels ``composer`` over those N names (alphabetical), as a
composer-conditioned model or classifier needs.

Source and checksum: URL and SHA-256 (``70470ee2…e12c``, 58,416,533 bytes) as published
for the v3.0.0 MIDI-only archive on https://magenta.tensorflow.org/datasets/maestro (the
same figure is quoted by muspy's MAESTRO loader). It could not be re-checked here (no
network); a mismatch stops the build with a clear message.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import zipfile
from collections import Counter
from dataclasses import dataclass

import datasets

from ._common import MidiDatasetBuilder, base_features, verify_sha256

logger = logging.getLogger(__name__)

URL = "https://storage.googleapis.com/magentadata/datasets/maestro/v3.0.0/maestro-v3.0.0-midi.zip"
SHA256 = "70470ee253295c8d2c71e6d9d4a815189e35c89624b76d22fce5a019d5dde12c"
FILE_NAME = "maestro-v3.0.0-midi.zip"
CSV_NAME = "maestro-v3.0.0.csv"
CSV_COLUMNS = ("canonical_composer", "canonical_title", "split", "year", "midi_filename")
SPLITS = ("train", "validation", "test")

# The sorted distinct `canonical_composer` values of maestro-v3.0.0.csv.
COMPOSERS = (
    "Alban Berg",
    "Alexander Scriabin",
    "Antonio Soler",
    "Carl Maria von Weber",
    "Charles Gounod / Franz Liszt",
    "Claude Debussy",
    "César Franck",
    "Domenico Scarlatti",
    "Edvard Grieg",
    "Felix Mendelssohn",
    "Felix Mendelssohn / Sergei Rachmaninoff",
    "Franz Liszt",
    "Franz Liszt / Camille Saint-Saëns",
    "Franz Liszt / Vladimir Horowitz",
    "Franz Schubert",
    "Franz Schubert / Franz Liszt",
    "Franz Schubert / Leopold Godowsky",
    "Fritz Kreisler / Sergei Rachmaninoff",
    "Frédéric Chopin",
    "George Enescu",
    "George Frideric Handel",
    "Georges Bizet / Ferruccio Busoni",
    "Georges Bizet / Moritz Moszkowski",
    "Georges Bizet / Vladimir Horowitz",
    "Giuseppe Verdi / Franz Liszt",
    "Henry Purcell",
    "Isaac Albéniz",
    "Isaac Albéniz / Leopold Godowsky",
    "Jean-Philippe Rameau",
    "Johann Christian Fischer / Wolfgang Amadeus Mozart",
    "Johann Pachelbel",
    "Johann Sebastian Bach",
    "Johann Sebastian Bach / Egon Petri",
    "Johann Sebastian Bach / Ferruccio Busoni",
    "Johann Sebastian Bach / Franz Liszt",
    "Johann Sebastian Bach / Myra Hess",
    "Johann Strauss / Alfred Grünfeld",
    "Johannes Brahms",
    "Joseph Haydn",
    "Leoš Janáček",
    "Ludwig van Beethoven",
    "Mikhail Glinka / Mily Balakirev",
    "Mily Balakirev",
    "Modest Mussorgsky",
    "Muzio Clementi",
    "Niccolò Paganini / Franz Liszt",
    "Nikolai Medtner",
    "Nikolai Rimsky-Korsakov / Sergei Rachmaninoff",
    "Orlando Gibbons",
    "Percy Grainger",
    "Pyotr Ilyich Tchaikovsky",
    "Pyotr Ilyich Tchaikovsky / Mikhail Pletnev",
    "Pyotr Ilyich Tchaikovsky / Sergei Rachmaninoff",
    "Richard Wagner / Franz Liszt",
    "Robert Schumann",
    "Robert Schumann / Franz Liszt",
    "Sergei Rachmaninoff",
    "Sergei Rachmaninoff / György Cziffra",
    "Sergei Rachmaninoff / Vyacheslav Gryaznov",
    "Wolfgang Amadeus Mozart",
)

_DESCRIPTION = (
    "MAESTRO v3.0.0: about 200 hours of virtuosic piano performances from the International "
    "Piano-e-Competition, as MIDI with velocities and pedals, with the official split."
)
_CITATION = """\
@inproceedings{hawthorne2018enabling,
  title     = {Enabling Factorized Piano Music Modeling and Generation with the {MAESTRO} Dataset},
  author    = {Curtis Hawthorne and Andriy Stasyuk and Adam Roberts and Ian Simon and
               Cheng-Zhi Anna Huang and Sander Dieleman and Erich Elsen and Jesse Engel and
               Douglas Eck},
  booktitle = {International Conference on Learning Representations},
  year      = {2019},
  url       = {https://openreview.net/forum?id=r1lYRjC9F7}
}"""


@dataclass
class MaestroConfig(datasets.BuilderConfig):
    """Options of the ``maestro`` builder.

    Args:
        source: a local ``maestro-v3.0.0-midi.zip`` or its extracted folder.
        url: where to download the archive from.
        sha256: expected SHA-256 of the archive (``None`` skips the check).
        top_n_composers: keep only the N composers with most pieces (over all splits;
            ties broken by name) and label ``composer`` over them.
        composers: keep only these canonical composer names (applied before ``top_n``).
    """

    source: str | None = None
    url: str = URL
    sha256: str | None = SHA256
    top_n_composers: int | None = None
    composers: tuple[str, ...] | None = None


class _Archive:
    """The MAESTRO files, from the zip or an extracted folder."""

    def __init__(self, path: str):
        self.archive = zipfile.ZipFile(path) if os.path.isfile(path) else None
        self.path = path
        names = self.archive.namelist() if self.archive else self._walk()
        csv_names = [name for name in names if name.rsplit("/", 1)[-1] == CSV_NAME]
        if not csv_names:
            self.close()
            raise ValueError(f"maestro: {CSV_NAME} not found in {path}")
        self.csv_name = min(csv_names, key=len)
        self.root = self.csv_name[: -len(CSV_NAME)]

    def _walk(self) -> list[str]:
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

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()


def read_metadata(data: bytes, name: str) -> list[dict[str, str]]:
    """Rows of the MAESTRO CSV; checks that the columns the builder needs are there."""
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    missing = [column for column in CSV_COLUMNS if column not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"maestro: {name} lacks the column(s) {missing}")
    rows = list(reader)
    bad_splits = sorted({row["split"] for row in rows} - set(SPLITS))
    if bad_splits:
        raise ValueError(f"maestro: {name} has unknown split value(s) {bad_splits}")
    return rows


def select_composers(
    rows: list[dict[str, str]], composers: tuple[str, ...] | None, top_n: int | None
) -> list[str]:
    """The composer names kept by the ``composers`` / ``top_n_composers`` options, sorted."""
    names = {row["canonical_composer"] for row in rows}
    if composers is not None:
        unknown = sorted(set(composers) - set(COMPOSERS))
        if unknown:
            raise ValueError(f"maestro: unknown composer name(s) {unknown}; see maestro.COMPOSERS")
        names &= set(composers)
    if top_n is not None:
        if top_n < 1:
            raise ValueError(f"maestro: top_n_composers must be >= 1, got {top_n}")
        counts = Counter(
            row["canonical_composer"] for row in rows if row["canonical_composer"] in names
        )
        names = {name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]}
    return sorted(names)


class Maestro(MidiDatasetBuilder):
    """MAESTRO v3.0.0 MIDI with the official split and composer labels."""

    VERSION = datasets.Version("3.0.0")
    BUILDER_CONFIG_CLASS = MaestroConfig

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTION,
            features=base_features(
                composer=datasets.ClassLabel(names=list(COMPOSERS)),
                title=datasets.Value("string"),
                year=datasets.Value("int32"),
                midi_filename=datasets.Value("string"),
                csv_duration=datasets.Value("float32"),
            ),
            homepage="https://magenta.tensorflow.org/datasets/maestro",
            citation=_CITATION,
            license="CC BY-NC-SA 4.0",
        )

    def _split_generators(self, dl_manager):
        path = self._resolve_source(dl_manager, self.config.url, FILE_NAME)
        if os.path.isfile(path):
            verify_sha256(path, self.config.sha256, "maestro")
        archive = _Archive(path)
        try:
            rows = read_metadata(archive.read(archive.csv_name), archive.csv_name)
        finally:
            archive.close()
        kept = set(select_composers(rows, self.config.composers, self.config.top_n_composers))
        self._kept_composers = sorted(kept)
        return [
            datasets.SplitGenerator(
                name=split,
                gen_kwargs={
                    "path": path,
                    "rows": [
                        r for r in rows if r["split"] == split and r["canonical_composer"] in kept
                    ],
                },
            )
            for split in SPLITS
        ]

    def _generate_examples(self, path: str, rows: list[dict[str, str]]):
        archive = _Archive(path)
        try:
            for row in rows:
                example = self._row_example(archive, row)
                if example is not None:
                    yield example["id"], example
        finally:
            archive.close()

    def _row_example(self, archive: _Archive, row: dict[str, str]) -> dict | None:
        name = row["midi_filename"]
        composer = row["canonical_composer"]
        if composer not in COMPOSERS:
            reason = f"composer {composer!r} is not a MAESTRO v3.0.0 composer name"
            self._record_skip(name, reason, "invalid data")
            return None
        try:
            data = archive.read(archive.root + name)
        except (KeyError, FileNotFoundError):
            self._record_skip(name, "listed in the CSV but missing from the archive", "missing")
            return None
        except (OSError, zipfile.BadZipFile) as error:  # e.g. a bad CRC in one member
            self._record_skip(name, f"cannot be read from the archive ({error})", "unreadable")
            return None
        return self._make_example(
            os.path.splitext(name)[0],
            data,
            source_name=name,
            composer=composer,
            title=row["canonical_title"],
            year=int(row["year"]) if row["year"].strip().isdigit() else -1,
            midi_filename=name,
            csv_duration=float(row.get("duration") or "nan"),
        )

    def _finish_streaming(self, result):
        """The stream's ``composer`` labels over the kept composers, as :meth:`as_dataset`."""
        if self.config.top_n_composers is None and self.config.composers is None:
            return result
        label = datasets.ClassLabel(names=self._kept_composers)
        if isinstance(result, datasets.IterableDataset):
            return result.cast_column("composer", label)
        return datasets.IterableDatasetDict(
            {split: part.cast_column("composer", label) for split, part in result.items()}
        )

    def as_dataset(self, split=None, **kwargs):
        """As ``GeneratorBasedBuilder.as_dataset``; with ``top_n_composers`` or ``composers``,
        ``composer`` is re-labelled over the kept names only (alphabetical ids)."""
        dataset = super().as_dataset(split=split, **kwargs)
        if self.config.top_n_composers is None and self.config.composers is None:
            return dataset
        # Label over the composers of the whole build, so every split gets the same ids.
        kept = sorted(
            {
                name
                for part in super().as_dataset(**kwargs).values()
                for name in part.features["composer"].int2str(part["composer"])
            }
        )
        if not kept:
            return dataset
        label2id = {name: i for i, name in enumerate(kept)}
        return dataset.align_labels_with_mapping(label2id, "composer")
