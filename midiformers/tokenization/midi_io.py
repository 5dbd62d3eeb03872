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
import re
import struct
import sys
from pathlib import Path
from typing import NamedTuple

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
_PADDING = b"\0" * 8
"""Appended to the bytes symusic parses: its parser reads two data bytes after every channel
status, even for one-byte messages (program change), so a last track that ends with one and
no End of Track would make it read past the end of the buffer."""

# The event structure of a track, as symusic (its minimidi parser) frames it. Channel events
# are the bulk of every track, so runs of them are matched by a regular expression (C speed):
# one expression per running status, each taking the events that keep that running status
# (explicit or not). Meta and SysEx events, a change of running status and anything wrong
# are handled one event at a time in Python.
_ONCE = "+" if sys.version_info >= (3, 11) else ""  # possessive: no backtracking records
_DELTA = rb"[\x80-\xff]{0,3}" + _ONCE.encode() + rb"[\x00-\x7f]"  # at most 4 bytes
_CHANNEL_RUN = {  # by the number of data bytes of the running status
    1: re.compile(rb"(?:" + _DELTA + rb"[\xc0-\xdf]?[\x00-\x7f])*" + _ONCE.encode()),
    2: re.compile(rb"(?:" + _DELTA + rb"[\x80-\xbf\xe0-\xef]?[\x00-\x7f]{2})*" + _ONCE.encode()),
}
_CHANNEL_NAMES = {
    0x80: "note-off",
    0x90: "note-on",
    0xA0: "key-pressure",
    0xB0: "control-change",
    0xC0: "program-change",
    0xD0: "channel-pressure",
    0xE0: "pitch-bend",
}
_META_MIN_LENGTH = {0x51: (3, "set-tempo"), 0x58: (2, "time-signature"), 0x59: (2, "key-signature")}
"""Meta events whose payload symusic reads at fixed offsets, whatever their declared length."""


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


class _TrackError(Exception):
    """A problem inside a track: what and where (the offset of the event in the file)."""

    def __init__(self, what: str, offset: int):
        super().__init__(what)
        self.what = what
        self.offset = offset


class _MidiLayout(NamedTuple):
    """What :func:`_check_midi_structure` learned that the parse needs."""

    header_length: int
    escapes: tuple[int, ...]  # offsets of 0xF7 (SysEx escape) status bytes


def _check_midi_structure(data: bytes, name: str) -> _MidiLayout:
    """Validate the header, every chunk length and every event before symusic sees ``data``.

    symusic 0.5.9 trusts the file: a track chunk that claims more bytes than the file
    holds, a variable-length number or an event running past the end of its track, or a
    data byte above 127 (a note-on with pitch 200 writes outside a table) make it read or
    write outside its buffers: a segmentation fault, ``double free or corruption`` or an
    error message that changes from run to run. Here every chunk's length is checked
    against the file and every event of every track is walked (its delta time, status or
    running status, data bytes, and meta and SysEx lengths against the end of the track),
    the way symusic will walk it; a run of channel events costs one regular-expression
    match. A file with fewer tracks than its header announces is rejected (symusic would
    read it as a shorter, or empty, piece). Unknown chunks are skipped, bytes after the last
    announced track are ignored (real files have them), and so are tracks beyond the
    announced count, as symusic does; a header longer than 6 bytes is cut to 6 for symusic.
    """
    size = len(data)
    if size == 0:
        raise MidiFileError(name, "the file is empty")
    if size < _HEADER_SIZE:
        raise MidiFileError(name, f"too short to be a MIDI file ({size} bytes)")
    if data[:4] != b"MThd":
        raise MidiFileError(
            name,
            f"not a MIDI file: it does not start with 'MThd' (starts with {data[:8]!r})",
        )
    header_length, midi_format, num_tracks, division = struct.unpack(">IHHH", data[4:_HEADER_SIZE])
    if header_length < 6:
        raise MidiFileError(name, f"corrupt MIDI header (header length {header_length} < 6)")
    if header_length > size - _CHUNK_HEADER_SIZE:
        raise MidiFileError(
            name,
            f"truncated: the header chunk declares {header_length} bytes but only "
            f"{size - _CHUNK_HEADER_SIZE} remain",
        )
    if midi_format > 2:
        raise MidiFileError(name, f"corrupt MIDI header (unknown format {midi_format})")
    if division & 0x8000:
        raise MidiFileError(name, "SMPTE time division (frames per second) is not supported")
    if division == 0:
        raise MidiFileError(name, "corrupt MIDI header (0 ticks per quarter note)")
    offset = _CHUNK_HEADER_SIZE + header_length
    found = 0
    escapes: list[int] = []
    while found < num_tracks:
        remaining = size - offset
        if remaining == 0:
            raise MidiFileError(
                name,
                f"the header announces {num_tracks} track(s) but the file holds {found} "
                "(truncated or corrupt file)",
            )
        if remaining < _CHUNK_HEADER_SIZE:
            raise MidiFileError(
                name,
                f"truncated: the file ends {remaining} byte(s) into the chunk header of track "
                f"{found + 1} of {num_tracks}",
            )
        chunk_type = data[offset : offset + 4]
        (length,) = struct.unpack(">I", data[offset + 4 : offset + _CHUNK_HEADER_SIZE])
        available = remaining - _CHUNK_HEADER_SIZE
        what = f"track {found + 1} of {num_tracks}" if chunk_type == b"MTrk" else None
        if length > available:
            if what is None:
                what = (
                    f"corrupt or truncated: where track {found + 1} of {num_tracks} should "
                    f"start, a {chunk_type!r} chunk"
                )
            else:
                what = f"truncated: {what}"
            raise MidiFileError(
                name,
                f"{what} declares {length} bytes but only {available} remain "
                f"(chunk at byte {offset})",
            )
        start = offset + _CHUNK_HEADER_SIZE
        if what is not None:
            try:
                _check_track_events(data, start, start + length, escapes)
            except _TrackError as error:
                raise MidiFileError(
                    name, f"corrupt {what}: {error.what} (event at byte {error.offset})"
                ) from None
            found += 1
        offset = start + length
    return _MidiLayout(header_length, tuple(escapes))


def _check_track_events(data: bytes, start: int, end: int, escapes: list[int]) -> None:
    """Walk the events of the track ``data[start:end]``; raise :class:`_TrackError` at the
    first one symusic would read past the track's end or misread. Offsets of SysEx escape
    events (0xF7) are appended to ``escapes``."""
    position = start
    running = 0  # data bytes of a running-status event; 0: no running status
    while position < end:
        if running:
            position = _CHANNEL_RUN[running].match(data, position, end).end()
            if position >= end:
                return
        position, running = _check_event(data, position, end, running, escapes)


def _read_number(data: bytes, position: int, end: int, event: int, what: str) -> tuple[int, int]:
    """A variable-length quantity (at most 4 bytes) at ``position``: (value, next position)."""
    value = 0
    for _ in range(4):
        if position >= end:
            raise _TrackError(f"the track ends inside the {what}", event)
        byte = data[position]
        position += 1
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, position
    raise _TrackError(f"the {what} is longer than 4 bytes", event)


def _check_event(
    data: bytes, position: int, end: int, running: int, escapes: list[int]
) -> tuple[int, int]:
    """Check the one event at ``position`` that no channel-event expression took.

    Returns the position after it (``end`` after an End of Track: symusic ignores whatever
    follows it in the chunk) and the new running-status length.
    """
    event = position
    if data[position] < 0x80:  # the usual one-byte delta time
        position += 1
    else:
        position = _read_number(data, position, end, event, "delta time")[1]
    if position >= end:
        raise _TrackError("the track ends after a delta time, without an event", event)
    status = data[position]
    if status == 0xFF:  # meta event; symusic keeps the running status across it
        if position + 2 < end and data[position + 2] < 0x80:  # the usual one-byte length
            length, payload = data[position + 2], position + 3
        elif position + 1 >= end:
            raise _TrackError("the track ends inside a meta event", event)
        else:
            length, payload = _read_number(data, position + 2, end, event, "meta event length")
        meta_type = data[position + 1]
        if length > end - payload:
            raise _TrackError(
                f"a meta event (type 0x{meta_type:02x}) declares {length} bytes but only "
                f"{end - payload} remain in the track",
                event,
            )
        if meta_type == 0x2F:
            return end, running
        if meta_type in _META_MIN_LENGTH and length < _META_MIN_LENGTH[meta_type][0]:
            needed, kind = _META_MIN_LENGTH[meta_type]
            raise _TrackError(f"a {kind} meta event holds {length} bytes (needs {needed})", event)
        return payload + length, running
    if status == 0xF0 or status == 0xF7:  # SysEx, or SysEx escape: both end running status
        length, payload = _read_number(data, position + 1, end, event, "SysEx event length")
        if length > end - payload:
            raise _TrackError(
                f"a SysEx event declares {length} bytes but only {end - payload} remain in "
                "the track",
                event,
            )
        if status == 0xF7:
            escapes.append(position)
        return payload + length, 0
    if status > 0xF0:
        raise _TrackError(
            f"status byte 0x{status:02x} (a system message, which a MIDI file cannot hold)",
            event,
        )
    if status >= 0x80:
        count = 1 if 0xC0 <= status < 0xE0 else 2
        first = position + 1
        kind = f"{_CHANNEL_NAMES[status & 0xF0]} event"
    elif running:
        count, first, kind = running, position, "running-status event"
    else:
        raise _TrackError(
            f"data byte 0x{status:02x} where a status byte belongs (running status without "
            "a channel event before it)",
            event,
        )
    if first + count > end:
        raise _TrackError(f"the track ends inside a {kind}", event)
    for value in data[first : first + count]:
        if value >= 0x80:
            raise _TrackError(f"a {kind} has a data byte 0x{value:02x} above 0x7f", event)
    return first + count, count


def _symusic_bytes(data: bytes, layout: _MidiLayout) -> bytes:
    """The bytes to hand to symusic: SysEx escapes marked as SysEx (symusic reads 0xF7 as a
    one-byte message and its payload as delta times, which would shift every later event),
    an over-long header cut to the 6 bytes symusic requires, and the padding."""
    if layout.escapes:
        patched = bytearray(data)
        for offset in layout.escapes:
            patched[offset] = 0xF0
        data = bytes(patched)
    if layout.header_length > 6:
        data = (
            data[:4]
            + struct.pack(">I", 6)
            + data[8:_HEADER_SIZE]
            + data[8 + layout.header_length :]
        )
    return data + _PADDING


def _parse_midi_bytes(data: bytes | bytearray | memoryview, name: str) -> ScoreTick:
    data = bytes(data)
    layout = _check_midi_structure(data, name)
    try:
        return symusic.Score.from_midi(_symusic_bytes(data, layout))
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
