"""Reading MIDI input safely: one loader for paths, bytes and ``symusic.Score`` objects.

Every feature that takes music from a user (tokenizer, dataset builders, the demo) goes
through :func:`load_score`, so a bad file always fails the same way: a
:class:`MidiFileError` that names the file and says what is wrong with it, instead of a
stack trace from the MIDI parser.

This file is copied next to the tokenizer for ``trust_remote_code`` loading: it imports
nothing from midiformers.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import symusic
from symusic.core import ScoreQuarter, ScoreSecond, ScoreTick

__all__ = [
    "DEFAULT_MAX_FILE_SIZE",
    "DEFAULT_MAX_QUARTERS",
    "MidiFileError",
    "MidiSource",
    "load_score",
]

DEFAULT_MAX_FILE_SIZE = 32 * 1024 * 1024
"""Largest MIDI file accepted by default (32 MiB). Real MIDI files are rarely above a few
MiB; anything much larger is almost always not music and would take minutes to tokenize."""

DEFAULT_MAX_QUARTERS = 100_000
"""Latest accepted event, in quarter notes (about 14 hours at 120 bpm). A corrupt delta time
can put one note days into a file; tokenizing the silence before it would take minutes and
millions of tokens."""

MidiSource = (
    str | os.PathLike | bytes | bytearray | memoryview | ScoreTick | ScoreQuarter | ScoreSecond
)
"""What :func:`load_score` accepts: a path, the raw bytes of a file, or a ``symusic.Score``."""

_HEADER_SIZE = 14  # "MThd" + length (4 bytes) + format, track count, division (2 bytes each)
_CHUNK_HEADER_SIZE = 8


class MidiFileError(ValueError):
    """A MIDI input that cannot be read: empty, truncated, corrupt, too large or not MIDI.

    Attributes:
        name: the file name (or the name given for in-memory data).
        reason: what is wrong, in a few words.
    """

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason
        super().__init__(f"{name}: {reason}")

    def __reduce__(self):
        return (type(self), (self.name, self.reason))


def _check_midi_structure(data: bytes | memoryview, name: str) -> None:
    """Validate the header and the chunk layout, which symusic accepts too leniently.

    symusic reads a header that announces tracks but has none as an empty score; mido and
    most players reject such a file, and silently training on it would hide the problem.
    Only chunk headers are visited, so this costs a few microseconds per file.
    """
    size = len(data)
    if size == 0:
        raise MidiFileError(name, "the file is empty")
    if size < _HEADER_SIZE:
        raise MidiFileError(name, f"too short to be a MIDI file ({size} bytes)")
    if bytes(data[:4]) != b"MThd":
        raise MidiFileError(
            name,
            f"not a MIDI file: it does not start with 'MThd' (starts with {bytes(data[:8])!r})",
        )
    header_length, midi_format, num_tracks, division = struct.unpack(">IHHH", data[4:_HEADER_SIZE])
    if header_length < 6:
        raise MidiFileError(name, f"corrupt MIDI header (header length {header_length} < 6)")
    if midi_format > 2:
        raise MidiFileError(name, f"corrupt MIDI header (unknown format {midi_format})")
    if division & 0x8000:
        raise MidiFileError(name, "SMPTE time division (frames per second) is not supported")
    if division == 0:
        raise MidiFileError(name, "corrupt MIDI header (0 ticks per quarter note)")
    offset = 8 + header_length
    found_tracks = 0
    while offset + _CHUNK_HEADER_SIZE <= size and found_tracks < num_tracks:
        chunk_type = bytes(data[offset : offset + 4])
        (chunk_length,) = struct.unpack(">I", data[offset + 4 : offset + 8])
        offset += _CHUNK_HEADER_SIZE + chunk_length
        if chunk_type == b"MTrk":
            found_tracks += 1
    if found_tracks < num_tracks and offset <= size:
        raise MidiFileError(
            name,
            f"the header announces {num_tracks} track(s) but the file holds {found_tracks} "
            "(truncated or corrupt file)",
        )


def _parse_midi_bytes(data: bytes | memoryview, name: str) -> ScoreTick:
    _check_midi_structure(data, name)
    try:
        return symusic.Score.from_midi(bytes(data))
    except Exception as error:  # symusic raises RuntimeError with its own wording
        reason = str(error).replace("MiniMidi: ", "").replace(": iostream error", "")
        raise MidiFileError(name, f"corrupt or truncated MIDI data ({reason})") from None


def _check_size(size: int, name: str, max_file_size: int | None) -> None:
    if max_file_size is not None and size > max_file_size:
        raise MidiFileError(
            name,
            f"file too large ({size / 2**20:.1f} MiB > {max_file_size / 2**20:.1f} MiB); "
            "raise `max_file_size` if this is really a MIDI file",
        )


def _check_length(score: ScoreTick, name: str, max_quarters: float | None) -> ScoreTick:
    if max_quarters is not None and score.ticks_per_quarter > 0:
        quarters = score.end() / score.ticks_per_quarter
        if quarters > max_quarters:
            raise MidiFileError(
                name,
                f"implausibly long: an event lies {quarters:.0f} quarter notes in "
                f"(> {max_quarters:.0f}); corrupt delta times? Raise `max_quarters` if not",
            )
    return score


def load_score(
    source: MidiSource,
    name: str | None = None,
    max_file_size: int | None = DEFAULT_MAX_FILE_SIZE,
    copy: bool = True,
    max_quarters: float | None = DEFAULT_MAX_QUARTERS,
) -> ScoreTick:
    """Load a MIDI source into a tick-based ``symusic.Score``.

    Args:
        source: a path (``str`` or ``os.PathLike``), the bytes of a MIDI file, or a
            ``symusic.Score`` (tick, quarter or second based).
        name: how to call the source in error messages; defaults to the path, or to
            ``"<bytes>"`` / ``"<Score>"`` for in-memory input.
        max_file_size: largest accepted file in bytes (``None`` for no limit).
        copy: when ``source`` is already a tick ``Score``, return a deep copy (the default)
            so that callers may modify the result, e.g. hand it to miditok, which mutates
            its input. Pass ``False`` only if the result is never modified.
        max_quarters: latest accepted event time in quarter notes (``None``: no limit).

    Returns:
        A ``symusic.ScoreTick``.

    Raises:
        MidiFileError: the file is missing, empty, too large or too long, truncated,
            corrupt or not MIDI; the message names the file and the reason.
        TypeError: ``source`` is none of the accepted types.
    """
    if isinstance(source, ScoreTick):
        score = source.copy(deep=True) if copy else source
        return _check_length(score, name or "<Score>", max_quarters)
    if isinstance(source, (ScoreQuarter, ScoreSecond)):
        return _check_length(source.to("tick"), name or "<Score>", max_quarters)
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = name or "<bytes>"
        _check_size(len(source), name, max_file_size)
        return _check_length(_parse_midi_bytes(source, name), name, max_quarters)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = name or str(path)
        try:
            _check_size(path.stat().st_size, name, max_file_size)
            data = path.read_bytes()
        except FileNotFoundError:
            raise MidiFileError(name, "no such file") from None
        except IsADirectoryError:
            raise MidiFileError(name, "is a directory, not a MIDI file") from None
        except OSError as error:
            raise MidiFileError(name, f"cannot read the file ({error.strerror or error})") from None
        return _check_length(_parse_midi_bytes(data, name), name, max_quarters)
    raise TypeError(
        "Expected a MIDI file path, the bytes of a MIDI file or a symusic.Score, "
        f"got {type(source).__name__}"
    )
