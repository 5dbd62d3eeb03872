"""Composer-labelled pieces from music21's corpus: composer conditioning without MAESTRO.

Offline. The corpus keeps one folder per composer: palestrina (1318 files), bach (413
scores), monteverdi (49 scores), beethoven (26), mozart (16), haydn (9), josquin (8) and
smaller ones; collections that are not one composer (folk-tune books, the Trecento
repertory, demos) are left out, and so are Roman-numeral analyses (``.rntxt``), which are
not music. Composers with at least ``min_pieces`` scores are kept, each capped at
``max_pieces_per_composer`` (a seeded sample) so that classes are not wildly unbalanced,
and each composer's pieces are split 80 / 10 / 10 with a seeded shuffle (stratified).

With the defaults (min 8, cap 50) that is 7 composers and about 210 pieces. Some scores
(Beethoven's string quartets) take music21 tens of seconds each, so the first build takes
several minutes; it is cached like any ``datasets`` build.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import datasets

from ._common import MidiDatasetBuilder, base_features, stratified_split
from ._music21 import Music21ConversionError, corpus_file_to_midi, require_music21

# music21 corpus folder -> composer name. Only folders that hold one composer's music.
COMPOSER_FOLDERS = {
    "bach": "Johann Sebastian Bach",
    "beach": "Amy Beach",
    "beethoven": "Ludwig van Beethoven",
    "chopin": "Frédéric Chopin",
    "ciconia": "Johannes Ciconia",
    "corelli": "Arcangelo Corelli",
    "cpebach": "Carl Philipp Emanuel Bach",
    "handel": "George Frideric Handel",
    "haydn": "Joseph Haydn",
    "joplin": "Scott Joplin",
    "josquin": "Josquin des Prez",
    "monteverdi": "Claudio Monteverdi",
    "mozart": "Wolfgang Amadeus Mozart",
    "palestrina": "Giovanni Pierluigi da Palestrina",
    "schoenberg": "Arnold Schoenberg",
    "schubert": "Franz Schubert",
    "schumann_clara": "Clara Schumann",
    "schumann_robert": "Robert Schumann",
    "verdi": "Giuseppe Verdi",
    "weber": "Carl Maria von Weber",
    "webern": "Anton Webern",
}
SCORE_EXTENSIONS = (".mxl", ".xml", ".musicxml", ".krn", ".abc", ".mid", ".midi")

_DESCRIPTION = (
    "Composer-labelled scores from the music21 corpus converted to MIDI, with a split "
    "stratified by composer."
)


@dataclass
class Music21ComposersConfig(datasets.BuilderConfig):
    """Options of the ``music21_composers`` builder.

    Args:
        min_pieces: keep composers with at least this many scores in the corpus.
        max_pieces_per_composer: convert at most this many scores per composer (a seeded
            sample); ``None`` converts all.
        composers: restrict to these corpus folders (e.g. ``("bach", "mozart")``).
        seed: seed of the sampling and of the split.
        validation_ratio: share of each composer's pieces in the validation split.
        test_ratio: share of each composer's pieces in the test split.
    """

    min_pieces: int = 8
    max_pieces_per_composer: int | None = 50
    composers: tuple[str, ...] | None = None
    seed: int = 42
    validation_ratio: float = 0.1
    test_ratio: float = 0.1


def composer_scores(folders: tuple[str, ...] | None = None) -> dict[str, list[str]]:
    """Corpus score paths (relative, sorted) per composer folder."""
    music21 = require_music21()
    if folders is not None:
        unknown = sorted(set(folders) - set(COMPOSER_FOLDERS))
        if unknown:
            raise ValueError(
                f"music21_composers: unknown composer folder(s) {unknown}; "
                f"choose from {sorted(COMPOSER_FOLDERS)}"
            )
    root = os.path.dirname(music21.corpus.__file__)
    scores: dict[str, list[str]] = {}
    for folder in folders or sorted(COMPOSER_FOLDERS):
        paths = music21.corpus.getComposer(folder)
        relative = [
            os.path.relpath(str(path), root).replace(os.sep, "/")
            for path in paths
            if str(path).lower().endswith(SCORE_EXTENSIONS)
        ]
        scores[folder] = sorted(relative)
    return scores


def selected_scores(config: Music21ComposersConfig) -> dict[str, list[str]]:
    """The scores the config keeps: composers above ``min_pieces``, capped and sampled."""
    selected = {}
    for folder, paths in composer_scores(config.composers).items():
        if len(paths) < config.min_pieces:
            continue
        cap = config.max_pieces_per_composer
        if cap is not None and len(paths) > cap:
            paths = sorted(random.Random(f"{config.seed}-{folder}").sample(paths, cap))
        selected[folder] = paths
    if not selected:
        raise ValueError(
            f"music21_composers: no composer has at least min_pieces={config.min_pieces} scores"
        )
    return selected


class Music21Composers(MidiDatasetBuilder):
    """Composer-labelled music21 corpus scores as MIDI (offline, cached)."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = Music21ComposersConfig

    def _info(self) -> datasets.DatasetInfo:
        names = sorted(COMPOSER_FOLDERS[folder] for folder in selected_scores(self.config))
        return datasets.DatasetInfo(
            description=_DESCRIPTION,
            features=base_features(
                composer=datasets.ClassLabel(names=names),
                source_path=datasets.Value("string"),
            ),
            homepage="https://web.mit.edu/music21/doc/about/referenceCorpus.html",
            license="See each work in the music21 corpus reference; most are public domain.",
        )

    def _split_generators(self, dl_manager):
        selected = selected_scores(self.config)
        items = [(folder, path) for folder, paths in selected.items() for path in paths]
        parts = stratified_split(
            items,
            [folder for folder, _ in items],
            self.config.seed,
            self.config.validation_ratio,
            self.config.test_ratio,
        )
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"items": sorted(pieces)})
            for split, pieces in parts.items()
        ]

    def _generate_examples(self, items: list[tuple[str, str]]):
        for folder, path in items:
            example_id = os.path.splitext(path)[0]
            try:
                data = corpus_file_to_midi(path)
            except Music21ConversionError as error:
                self._record_skip(path, error.reason, "conversion failed")
                continue
            example = self._make_example(
                example_id,
                data,
                source_name=path,
                composer=COMPOSER_FOLDERS[folder],
                source_path=path,
            )
            if example is not None:
                yield example_id, example
