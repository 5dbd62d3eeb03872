"""Turning music21 corpus files into MIDI bytes, for the offline builders.

music21 is imported lazily: it is only needed by ``bach_chorales`` and
``music21_composers``, and importing it takes about a second.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


class Music21ConversionError(ValueError):
    """A corpus file that music21 cannot parse or write as MIDI."""

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason
        super().__init__(f"{name}: {reason}")

    def __reduce__(self):
        return (type(self), (self.name, self.reason))


def require_music21():
    """Import music21, or explain how to get it."""
    try:
        import music21
    except ImportError as error:  # pragma: no cover - music21 is installed in development
        raise ImportError(
            "The offline corpora (bach_chorales, music21_composers) are converted from "
            "music21's corpus: `pip install music21`."
        ) from error
    return music21


def strip_repeats(score) -> int:
    """Remove repeat barlines, repeat brackets and repeat expressions in place.

    music21's MIDI export expands repeats and raises ``ExpanderException`` on badly formed
    ones (e.g. ``bach/bwv277``); without them the piece is written as notated, once.
    Returns how many marks were removed.
    """
    music21 = require_music21()
    bar, repeat, spanner = music21.bar, music21.repeat, music21.spanner
    removed = 0
    for measure in score.recurse().getElementsByClass("Measure"):
        if isinstance(measure.leftBarline, bar.Repeat):
            measure.leftBarline = None
            removed += 1
        if isinstance(measure.rightBarline, bar.Repeat):
            measure.rightBarline = bar.Barline("regular")
            removed += 1
    for expression in list(score.recurse().getElementsByClass(repeat.RepeatExpression)):
        expression.activeSite.remove(expression)
        removed += 1
    for bracket in list(score.recurse().getElementsByClass(spanner.RepeatBracket)):
        for site in list(bracket.sites.get()):
            if hasattr(site, "remove") and bracket in site:
                site.remove(bracket)
        removed += 1
    for bracket in list(score.spannerBundle.getByClass(spanner.RepeatBracket)):
        score.spannerBundle.remove(bracket)
    return removed


def stream_to_midi_bytes(score, name: str) -> bytes:
    """Write a music21 stream as MIDI bytes; on a repeat-expansion error, strip the repeats
    and retry once.

    Raises:
        Music21ConversionError: the export still fails.
    """
    music21 = require_music21()
    try:
        return _export(music21, score, name)
    except music21.repeat.ExpanderException as error:
        removed = strip_repeats(score)
        logger.info("%s: %s; retrying without its %d repeat mark(s)", name, error, removed)
    except Music21ConversionError:
        raise
    except Exception as error:  # music21 raises many exception types on odd scores
        raise Music21ConversionError(
            name, f"MIDI export failed ({type(error).__name__}: {error})"
        ) from None
    try:
        return _export(music21, score, name)
    except Music21ConversionError:
        raise
    except Exception as error:
        raise Music21ConversionError(
            name, f"MIDI export failed even without repeats ({type(error).__name__}: {error})"
        ) from None


def _export(music21, score, name: str) -> bytes:
    return drop_empty_tracks(music21.midi.translate.streamToMidiFile(score).writestr(), name)


def drop_empty_tracks(data: bytes, name: str = "<music21 export>") -> bytes:
    """Remove the note-less track music21 adds (a conductor track named after the first
    part), so every track of the file is a voice.

    Raises:
        Music21ConversionError: music21 wrote bytes that :func:`load_score` rejects.
    """
    from ..tokenization import MidiFileError, load_score

    try:
        score = load_score(data, name=name)
    except MidiFileError as error:
        reason = f"music21 wrote unreadable MIDI ({error.reason})"
        raise Music21ConversionError(name, reason) from None
    if all(track.note_num() > 0 for track in score.tracks):
        return data
    cleaned = score.copy()
    cleaned.tracks = [track for track in score.tracks if track.note_num() > 0]
    return cleaned.dumps_midi()


def parse_corpus_file(path: str):
    """Parse a corpus file with music21. An ``Opus`` whose scores share one title (how the
    corpus stores each voice of a piece as its own ABC tune, e.g. Josquin) becomes one
    score with a part per voice; any other opus keeps its first score.

    Raises:
        Music21ConversionError: music21 cannot parse the file.
    """
    music21 = require_music21()
    try:
        parsed = music21.corpus.parse(path)
    except Exception as error:
        raise Music21ConversionError(
            path, f"music21 cannot parse it ({type(error).__name__}: {error})"
        ) from None
    if isinstance(parsed, music21.stream.Opus):
        scores = list(parsed.scores)
        if not scores:
            raise Music21ConversionError(path, "the file holds an empty opus")
        titles = {score.metadata.title if score.metadata else None for score in scores}
        if len(scores) > 1 and len(titles) == 1:
            return parsed.mergeScores()
        return scores[0]
    return parsed


def corpus_file_to_midi(path: str) -> bytes:
    """Parse a music21 corpus file and return it as MIDI bytes."""
    return stream_to_midi_bytes(parse_corpus_file(path), path)
