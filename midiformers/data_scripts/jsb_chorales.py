"""JSB Chorales: the Boulanger-Lewandowski et al. (ICML 2012) benchmark, as MIDI.

The release is one Python 2 pickle, ``JSB Chorales.pickle``: a dict with ``train`` (229),
``valid`` (76) and ``test`` (77) chorales; each chorale is a list of time steps (a quarter
note each), and each step lists the MIDI pitches sounding at that instant. This builder
keeps that split and writes each chorale as a MIDI file: one track per voice (soprano,
alto, tenor, bass) when no step holds more than four pitches, else one track; consecutive
steps of the same pitch in a voice become one held note (the pickle does not tell held
from repeated notes), unless ``merge_repeated=False``.

Source and checksum:

* The original address, http://www-etud.iro.umontreal.ca/~boulanni/JSB%20Chorales.pickle
  (linked from http://www-etud.iro.umontreal.ca/~boulanni/icml2012), no longer resolves.
* The default URL is the Internet Archive's raw capture of that file from 2014-12-11.
  Its SHA-256 (``69dc4c3e…051c``, 2,051,809 bytes) is the one a third party recorded after
  downloading that capture (a public data inventory, fetched 2026-10-08); the authors never
  published a checksum, and it could not be re-checked here (no network). If the archive
  serves different bytes the build stops with a checksum error; pass ``sha256=None`` to
  accept them, or ``source=`` a local copy.
* The pickle references numpy scalars, so it is read with a restricted unpickler that
  only allows the numpy types such a file needs: no arbitrary code can run.
"""

from __future__ import annotations

import io
import itertools
import pickle
from dataclasses import dataclass

import datasets
import symusic

from ._common import MidiDatasetBuilder, base_features, verify_sha256

ORIGINAL_URL = "http://www-etud.iro.umontreal.ca/~boulanni/JSB%20Chorales.pickle"
URL = (
    "https://web.archive.org/web/20141211164413id_/"
    "http://www-etud.iro.umontreal.ca:80/~boulanni/JSB%20Chorales.pickle"
)
SHA256 = "69dc4c3e52800959ac0ab3b82aa3e5f55285ce64f1705acb3e3a8ef77a5c051c"
FILE_NAME = "JSB Chorales.pickle"
COMPOSER = "Johann Sebastian Bach"
SPLIT_NAMES = {"train": "train", "valid": "validation", "test": "test"}
VOICE_NAMES = ("Soprano", "Alto", "Tenor", "Bass")
_VOICE_CENTRES = (72, 65, 58, 50)  # typical pitch of each voice, for the first assignment
TICKS_PER_QUARTER = 480

_DESCRIPTION = (
    "JSB Chorales (Boulanger-Lewandowski et al., 2012): 382 four-part chorales by J. S. Bach "
    "as quarter-note piano rolls with the canonical 229 / 76 / 77 split, converted to MIDI."
)
_CITATION = """\
@inproceedings{boulangerlewandowski2012modeling,
  author    = {Nicolas Boulanger-Lewandowski and Yoshua Bengio and Pascal Vincent},
  title     = {Modeling Temporal Dependencies in High-Dimensional Sequences: Application to
               Polyphonic Music Generation and Transcription},
  booktitle = {Proceedings of the 29th International Conference on Machine Learning},
  year      = {2012}
}"""


@dataclass
class JsbChoralesConfig(datasets.BuilderConfig):
    """Options of the ``jsb_chorales`` builder.

    Args:
        source: a local ``JSB Chorales.pickle`` to use instead of downloading.
        url: where to download the pickle from.
        sha256: expected SHA-256 of the pickle (``None`` skips the check).
        step_quarters: length of one time step in quarter notes (the data are sampled
            every quarter note, so 1.0 plays them at notated speed).
        qpm: tempo written into the MIDI files (the data carry none).
        merge_repeated: join consecutive steps of the same pitch in a voice into one note.
        program: General MIDI program of every track (0 = acoustic grand piano).
        velocity: velocity of every note.
    """

    source: str | None = None
    url: str = URL
    sha256: str | None = SHA256
    step_quarters: float = 1.0
    qpm: float = 120.0
    merge_repeated: bool = True
    program: int = 0
    velocity: int = 80


class _PianoRollUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy names a Python 2 piano-roll pickle uses."""

    def find_class(self, module: str, name: str):
        allowed = _allowed_globals()
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: not a type a JSB piano-roll pickle needs"
        )


def _allowed_globals() -> dict:
    import codecs

    import numpy

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    allowed = {("numpy", "dtype"): numpy.dtype, ("numpy", "ndarray"): numpy.ndarray}
    for package in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(package, "scalar")] = multiarray.scalar
        allowed[(package, "_reconstruct")] = multiarray._reconstruct
    allowed[("_codecs", "encode")] = codecs.encode
    return allowed


def load_piano_roll_pickle(data: bytes, name: str) -> dict[str, list[list[list[int]]]]:
    """Read a Boulanger-Lewandowski piano-roll pickle into ``{split: [[pitches per step]]}``.

    Raises:
        ValueError: the file is not such a pickle; the message names it and says why.
    """
    try:
        raw = _PianoRollUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as error:
        raise ValueError(f"{name}: not a readable piano-roll pickle ({error})") from None
    if not isinstance(raw, dict) or set(SPLIT_NAMES) - set(raw):
        found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"{name}: expected a dict with keys {sorted(SPLIT_NAMES)}, found {found}")
    result = {}
    for split in SPLIT_NAMES:
        try:
            result[split] = [
                [sorted({int(round(float(p))) for p in step}) for step in sequence]
                for sequence in raw[split]
            ]
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"{name}: split {split!r} is not a list of pitch lists ({error})"
            ) from None
    return result


def assign_voices(steps: list[list[int]], num_voices: int = 4) -> list[list[int | None]] | None:
    """Give each sounding pitch of each step to one of ``num_voices`` voices (high to low).

    A full step is assigned in pitch order; a step with fewer pitches keeps the order and
    picks the voices whose previous pitches are nearest. Returns ``None`` when a step has
    more pitches than voices (the chorale is then written as one track).
    """
    if any(len(step) > num_voices for step in steps):
        return None
    last: list[float] = list(_VOICE_CENTRES[:num_voices])
    last += [60.0] * (num_voices - len(last))
    assigned = []
    for step in steps:
        pitches = sorted(step, reverse=True)
        voices = _nearest_voices(pitches, last, num_voices)
        row: list[int | None] = [None] * num_voices
        for voice, pitch in zip(voices, pitches):
            row[voice] = pitch
            last[voice] = pitch
        assigned.append(row)
    return assigned


def _nearest_voices(pitches: list[int], last: list[float], num_voices: int) -> tuple[int, ...]:
    if len(pitches) == num_voices:
        return tuple(range(num_voices))
    return min(
        itertools.combinations(range(num_voices), len(pitches)),
        key=lambda voices: sum(abs(p - last[v]) for v, p in zip(voices, pitches)),
    )


def _voice_notes(pitches: list[int | None], step_ticks: int, velocity: int, merge: bool):
    """Notes of one voice: ``pitches[i]`` sounds during step ``i`` (``None`` = rest)."""
    notes = []
    start = 0
    for index in range(1, len(pitches) + 1):
        ended = index == len(pitches) or pitches[index] != pitches[start] or not merge
        if ended:
            if pitches[start] is not None:
                notes.append(
                    symusic.Note(
                        start * step_ticks, (index - start) * step_ticks, pitches[start], velocity
                    )
                )
            start = index
    return notes


def piano_roll_to_midi(steps: list[list[int]], config: JsbChoralesConfig) -> tuple[bytes, int]:
    """Write one chorale as MIDI bytes; also return the number of tracks."""
    step_ticks = max(1, round(config.step_quarters * TICKS_PER_QUARTER))
    score = symusic.Score(TICKS_PER_QUARTER)
    score.tempos.append(symusic.Tempo(0, qpm=config.qpm))
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    voices = assign_voices(steps)
    if voices is None:
        columns = {"Chorale": None}
    else:
        columns = {name: index for index, name in enumerate(VOICE_NAMES)}
    for track_name, column in columns.items():
        track = symusic.Track(name=track_name, program=config.program, is_drum=False)
        if column is None:  # one polyphonic track: each pitch is its own "voice"
            for pitch in sorted({p for step in steps for p in step}):
                line = [pitch if pitch in step else None for step in steps]
                track.notes.extend(
                    _voice_notes(line, step_ticks, config.velocity, config.merge_repeated)
                )
        else:
            line = [row[column] for row in voices]
            track.notes.extend(
                _voice_notes(line, step_ticks, config.velocity, config.merge_repeated)
            )
        track.notes.sort()
        score.tracks.append(track)
    return score.dumps_midi(), len(columns)


class JsbChorales(MidiDatasetBuilder):
    """JSB Chorales (Boulanger-Lewandowski 2012 split) converted to MIDI."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = JsbChoralesConfig

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTION,
            features=base_features(
                composer=datasets.Value("string"),
                source_split=datasets.Value("string"),
                index=datasets.Value("int32"),
                num_steps=datasets.Value("int32"),
                num_tracks=datasets.Value("int32"),
            ),
            homepage="http://www-etud.iro.umontreal.ca/~boulanni/icml2012",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager):
        path = self._resolve_source(dl_manager, self.config.url, FILE_NAME)
        verify_sha256(path, self.config.sha256, "jsb_chorales")
        with open(path, "rb") as handle:
            chorales = load_piano_roll_pickle(handle.read(), str(path))
        return [
            datasets.SplitGenerator(
                name=SPLIT_NAMES[key],
                gen_kwargs={"source_split": key, "sequences": list(enumerate(chorales[key]))},
            )
            for key in SPLIT_NAMES
        ]

    def _generate_examples(self, source_split: str, sequences: list[tuple[int, list[list[int]]]]):
        for index, steps in sequences:
            example_id = f"{SPLIT_NAMES[source_split]}-{index:03d}"
            bad = [p for step in steps for p in step if not 0 <= p <= 127]
            if bad:
                reason = f"pitch {bad[0]} is outside the MIDI range 0-127"
                self._record_skip(example_id, reason, "invalid data")
                continue
            data, num_tracks = piano_roll_to_midi(steps, self.config)
            example = self._make_example(
                example_id,
                data,
                composer=COMPOSER,
                source_split=source_split,
                index=index,
                num_steps=len(steps),
                num_tracks=num_tracks,
            )
            if example is not None:
                yield example_id, example
