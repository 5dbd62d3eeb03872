"""Infilling (MMM, Ens & Pasquier 2020): regenerate chosen bars or tracks of a piece.

The token format (the ``mmm`` preset: miditok's ``MMM`` over REMI, one ``Track_Start ...
Track_End`` block per track, each track's bars in order) that training, the grammar and the
pipeline share::

    BOS
    Track_Start Program_p [track ACs] <bar 1> <bar 2> ... Track_End        one block per track,
    Track_Start Program_q [track ACs] <bar 1> ... Track_End                 in the piece's order
    FillBar_Start <notes of hole 1> FillBar_End                             one fill per
    FillBar_Start <notes of hole 2> FillBar_End                             placeholder, in order
    EOS

* **Bars** are counted from 1 as a musician counts them: bar ``n`` of a track is its ``n``-th
  ``Bar_None`` (REMI writes a ``Bar`` for every bar from time 0, empty ones included, up to the
  track's last note). A track that ends before a hole gets empty bars (``Bar_None TimeSig_x``,
  the meter read from the longest track) so that every hole has a bar to stand in.
* **A kept bar** is left exactly as miditok wrote it.
* **A hole** (masked bar) stays in its track as a *placeholder bar*: ``Bar_None TimeSig_x``,
  then the bar's tokens that are not notes, in their order (tempo changes as ``Position_p
  Tempo_t``, bar attribute controls ``ACBar...``), then ``Infill_Bar``. Keeping the Bar and
  TimeSig tokens keeps the bars counted and the meter fixed (a ``TimeSig`` written in a fill
  would change the length of every later bar of the track and move the notes after the hole);
  keeping the tempo changes keeps the piece's tempo map whatever is filled in (miditok decodes
  the tempi of the first track only, and every track carries them); keeping the bar's controls
  lets a caller condition the fill on them.
* **A fill** is ``FillBar_Start`` + the hole's notes + ``FillBar_End``: ``Position_p`` then one
  or more notes (``Pitch_x`` / ``PitchDrum_x`` on a drum track, ``Velocity_v``, ``Duration_d``)
  per onset, positions strictly increasing and inside the bar of the placeholder's meter. No
  ``Bar``, ``TimeSig``, ``Tempo``, ``Program``, attribute-control or ``Track`` token. An empty
  bar is ``FillBar_Start FillBar_End``.
* **Fills come in the order of the ``Infill_Bar`` tokens** (track by track, bar by bar), one per
  placeholder, then ``EOS``: after the last ``Track_End`` the only valid tokens are
  ``FillBar_Start`` while placeholders are left unfilled, ``EOS`` once every one is filled.
* **A whole-track infill** masks every bar of the track (up to the piece's last bar).
* **Splicing** puts each fill back into its placeholder: ``Bar_None TimeSig_x`` then the
  placeholder's tokens and the fill's notes merged by position (at one position the tempo and
  control tokens first, then the notes). Every note outside the holes is kept note for note as
  the tokenizer reads it (its onset and duration on the tokenizer's grid).

While generating, the grammar's ``mmm`` rules (``generation/grammar/mmm.py``, on by default in
the pipeline) keep the fills to this format and close them within the token budget;
:func:`check_fills` walks the same rules over what was written.

Training examples (``infilling: true`` in a recipe) are bar windows (``mode="bars"`` of
:func:`~midiformers.data_scripts.tokenize_dataset`): consecutive whole bars of every track,
each window a complete piece in the format above without holes; the collator
(:class:`~midiformers.training.infilling.DataCollatorForInfilling`) then picks random holes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from miditok.constants import MIDI_INSTRUMENTS
from symusic.core import ScoreTick, TrackTick
from transformers.utils import logging

from ..tokenization.presets import FILL_END, FILL_START, INFILL_PLACEHOLDER
from .grammar._programs import resolve_programs
from .validation import SequenceCheck, TokenError

logger = logging.get_logger(__name__)

__all__ = [
    "FILL_END",
    "FILL_START",
    "INFILL_PLACEHOLDER",
    "Hole",
    "InfillPrompt",
    "InfillVocabulary",
    "MmmPiece",
    "MmmTrack",
    "build_infill_prompt",
    "check_fills",
    "check_infilling_tokenizer",
    "decode_filled",
    "infill_sequence",
    "parse_piece",
    "select_holes",
    "splice_fills",
    "split_fills",
]


# token kinds
_OTHER, _NOTE, _NOTE_PART, _POSITION, _TEMPO, _TIMESIG, _BAR, _PROGRAM, _CONTROL = range(9)
_TRACK_START, _TRACK_END, _PLACEHOLDER, _FILL_START, _FILL_END, _SPECIAL = range(9, 15)
_KIND_OF_TYPE = {
    "Pitch": _NOTE,
    "PitchDrum": _NOTE,
    "Velocity": _NOTE_PART,
    "Duration": _NOTE_PART,
    "Position": _POSITION,
    "Tempo": _TEMPO,
    "TimeSig": _TIMESIG,
    "Bar": _BAR,
    "Program": _PROGRAM,
}
_KIND_OF_TOKEN = {
    "Track_Start": _TRACK_START,
    "Track_End": _TRACK_END,
    INFILL_PLACEHOLDER: _PLACEHOLDER,
    FILL_START: _FILL_START,
    FILL_END: _FILL_END,
}
_VELOCITY, _DURATION = 1, 2  # the value of a note part


def check_infilling_tokenizer(tokenizer: Any) -> None:
    """Raise a ``ValueError`` unless ``tokenizer`` writes the infilling format (the ``mmm``
    preset: miditok's MMM over REMI with the infill tokens, no BPE)."""
    miditok = getattr(tokenizer, "miditok", None)
    if miditok is None:
        raise ValueError(
            f"Infilling needs a midiformers MidiTokenizer, got {type(tokenizer).__name__}."
        )
    name = type(miditok).__name__
    vocab = miditok.vocab
    missing = [t for t in (INFILL_PLACEHOLDER, FILL_START, FILL_END) if t not in vocab]
    base = (miditok.config.additional_params or {}).get("base_tokenizer")
    if name != "MMM" or base != "REMI" or missing:
        what = f"miditok {name}" + (f" over {base}" if base else "")
        lacks = f" without {', '.join(missing)}" if missing else ""
        raise ValueError(
            f"Infilling needs a tokenizer with infill tokens ({INFILL_PLACEHOLDER}, {FILL_START}, "
            f"{FILL_END} in miditok's MMM over REMI); this one is {what}{lacks}: use the mmm "
            "preset (MidiTokenizer(preset='mmm'))."
        )
    if miditok.is_trained:
        raise ValueError(
            "Infilling works on base tokens; this tokenizer is BPE-trained (a token may merge "
            "notes with bar or track tokens). Use an mmm tokenizer without BPE."
        )


class InfillVocabulary:
    """The ids and kinds of the tokens the infilling format is made of, read once from a
    :class:`~midiformers.MidiTokenizer` of the ``mmm`` preset.

    Raises:
        ValueError: the tokenizer cannot write the format (see
            :func:`check_infilling_tokenizer`).
    """

    def __init__(self, tokenizer: Any):
        check_infilling_tokenizer(tokenizer)
        miditok = tokenizer.miditok
        config = miditok.config
        vocab: dict[str, int] = miditok.vocab
        size = max(vocab.values()) + 1
        self.size = size
        self.kind = np.full(size, _OTHER, dtype=np.int8)
        self.value = np.full(size, -1, dtype=np.int64)
        self.drum = np.zeros(size, dtype=bool)
        self.names = [""] * size
        self.positions_per_beat = int(config.max_num_pos_per_beat)
        positions: dict[int, int] = {}
        for token, index in vocab.items():
            self.names[index] = token
            kind_name, _, value = token.partition("_")
            if token in _KIND_OF_TOKEN:
                kind = _KIND_OF_TOKEN[token]
            elif index in miditok.special_tokens_ids:
                kind = _SPECIAL
            elif kind_name.startswith("AC"):
                kind = _CONTROL
            else:
                kind = _KIND_OF_TYPE.get(kind_name, _OTHER)
            self.kind[index] = kind
            if kind == _POSITION:
                self.value[index] = int(value)
                positions[int(value)] = index
            elif kind == _TIMESIG:  # positions in a bar of this meter
                self.value[index] = int(value.split("/")[0]) * self.positions_per_beat
            elif kind == _PROGRAM:
                self.value[index] = int(value)
            if kind_name == "PitchDrum":
                self.drum[index] = True
            elif kind_name in ("Velocity", "Duration"):
                self.value[index] = _VELOCITY if kind_name == "Velocity" else _DURATION
        self.position_id = np.full(max(positions) + 1, -1, dtype=np.int64)
        for value, index in positions.items():
            self.position_id[value] = index
        self.track_start = vocab["Track_Start"]
        self.track_end = vocab["Track_End"]
        self.bar = vocab["Bar_None"]
        self.placeholder = vocab[INFILL_PLACEHOLDER]
        self.fill_start = vocab[FILL_START]
        self.fill_end = vocab[FILL_END]
        self.bos = tokenizer.bos_token_id
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id
        self.use_velocities = bool(config.use_velocities)
        self.use_durations = bool(config.using_note_duration_tokens)
        self.note_length = 1 + self.use_velocities + self.use_durations
        self.default_bar_positions = 4 * self.positions_per_beat

    def kind_of(self, token_id: int) -> int:
        return int(self.kind[token_id]) if 0 <= token_id < self.size else _OTHER

    def bar_positions(self, bar: Sequence[int]) -> int:
        """Positions in a bar (``Bar_None TimeSig_x ...``) of its meter."""
        if len(bar) > 1 and self.kind_of(bar[1]) == _TIMESIG:
            return int(self.value[bar[1]])
        return self.default_bar_positions


# ----------------------------------------------------------------------------- the piece


@dataclass
class MmmTrack:
    """One ``Track_Start ... Track_End`` block: its header (``Track_Start Program_p`` and the
    track's attribute controls) and its bars (each starting with ``Bar_None``)."""

    header: list[int]
    bars: list[list[int]]
    program: int


@dataclass
class MmmPiece:
    """A piece of the ``mmm`` preset's tokens, track by track and bar by bar."""

    tracks: list[MmmTrack]

    @property
    def num_bars(self) -> int:
        """Bars of the longest track."""
        return max((len(track.bars) for track in self.tracks), default=0)

    @property
    def programs(self) -> list[int]:
        """The program of each track, in order (two tracks may share one)."""
        return [track.program for track in self.tracks]


def parse_piece(vocab: InfillVocabulary, ids: Iterable[int], strict: bool = True) -> MmmPiece:
    """Split token ids of the ``mmm`` preset (``BOS`` / ``EOS`` / padding around them allowed)
    into tracks and bars.

    Args:
        vocab: the tokenizer's :class:`InfillVocabulary`.
        ids: the ids of one piece without placeholders or fills.
        strict: raise on anything else; with ``False`` (training data), stop at the first token
            outside a complete track (a truncated last track is left out).

    Raises:
        ValueError: with ``strict``, a token outside a ``Track_Start ... Track_End`` block, a
            track that never ends, or placeholders / fills already in the piece.
    """
    ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
    start, end = 0, len(ids)
    while start < end and ids[start] in (vocab.bos, vocab.pad):
        start += 1
    while end > start and ids[end - 1] in (vocab.eos, vocab.pad):
        end -= 1
    tracks: list[MmmTrack] = []
    index = start
    while index < end:
        if ids[index] != vocab.track_start:
            if not strict:
                break
            raise ValueError(
                f"token {index} ({_name(vocab, ids[index])}) is outside any Track_Start ... "
                "Track_End block: these are not the tokens of one mmm piece."
            )
        try:
            close = ids.index(vocab.track_end, index + 1, end)
        except ValueError:
            if not strict:
                break
            raise ValueError(f"track {len(tracks) + 1} has no Track_End.") from None
        body = ids[index:close]
        marks = [i for i in body if vocab.kind_of(i) in (_PLACEHOLDER, _FILL_START, _FILL_END)]
        if marks:
            if not strict:
                break
            raise ValueError(
                f"track {len(tracks) + 1} already holds {_name(vocab, marks[0])}: give the piece "
                "itself, without placeholders or fills."
            )
        tracks.append(_track(vocab, body))
        index = close + 1
    return MmmPiece(tracks)


def _name(vocab: InfillVocabulary, token_id: int) -> str:
    return vocab.names[token_id] if 0 <= token_id < vocab.size else f"id {token_id}"


def _track(vocab: InfillVocabulary, body: list[int]) -> MmmTrack:
    starts = [i for i, token in enumerate(body) if token == vocab.bar]
    header = body[: starts[0]] if starts else body
    bars = [body[a:b] for a, b in zip(starts, [*starts[1:], len(body)])]
    program = next((int(vocab.value[t]) for t in header if vocab.kind_of(t) == _PROGRAM), 0)
    return MmmTrack(header, bars, program)


# ----------------------------------------------------------------------------- holes


@dataclass(frozen=True, order=True)
class Hole:
    """A masked bar: ``track`` indexes the piece's tracks (from 0), ``bar`` counts from 1."""

    track: int
    bar: int


def select_holes(
    piece: MmmPiece,
    bars: tuple[int, int] | None = None,
    programs: Iterable[int | str] | int | str | None = None,
    tracks: Iterable[int] | int | None = None,
) -> list[Hole]:
    """The holes for "bars ``a``..``b`` of the tracks playing ``programs``" (or of the tracks
    ``tracks``).

    Args:
        piece: the parsed piece.
        bars: ``(a, b)``, first and last bar, counted from 1, both included (``None``: every
            bar of the chosen tracks, a whole-track infill).
        programs: General MIDI program numbers (``-1`` for drums) or names, as ``programs=`` of
            the pipeline takes them; every track playing one of them is infilled (``None``:
            every track).
        tracks: track numbers counted from 1 in the piece's order (the order of its
            ``Track_Start`` blocks), to pick one of several tracks playing the same program
            (the four voices of a chorale); not with ``programs``.

    Raises:
        ValueError: none of them given, both ``programs`` and ``tracks``, a bar range that is
            not ``1 <= a <= b <= bars in the piece``, an unknown program, a program no track of
            the piece plays, or a track number outside the piece.
    """
    if bars is None and programs is None and tracks is None:
        raise ValueError(
            "Give the bars to infill (infill_bars), the tracks (infill_programs or "
            "infill_tracks), or both."
        )
    if programs is not None and tracks is not None:
        raise ValueError("Give infill_programs or infill_tracks, not both.")
    count = piece.num_bars
    if count == 0:
        raise ValueError("The piece has no bars to infill.")
    first, last = 1, count
    if bars is not None:
        first, last = check_bar_range(bars)
        if last > count:
            raise ValueError(
                f"infill_bars: bars {first}-{last} are outside the piece, which has {count} "
                f"bar{'s' if count > 1 else ''} (1-{count})."
            )
    chosen: Iterable[int] = range(len(piece.tracks))
    if tracks is not None:
        numbers = check_track_numbers(tracks)
        total = len(piece.tracks)
        outside = [n for n in numbers if n > total]
        if outside:
            raise ValueError(
                f"infill_tracks: track {outside[0]} is outside the piece, which has {total} "
                f"track{'s' if total > 1 else ''} (1-{total})."
            )
        chosen = [n - 1 for n in numbers]
    if programs is not None:
        wanted = resolve_infill_programs(programs)
        present = piece.programs
        absent = [p for p in wanted if p not in present]
        if absent:
            raise ValueError(
                f"infill_programs: no track of the piece plays program {absent[0]}; its tracks "
                f"play {sorted(set(present))}."
            )
        chosen = [i for i, program in enumerate(present) if program in wanted]
    return [Hole(track, bar) for track in chosen for bar in range(first, last + 1)]


def check_bar_range(bars: Any) -> tuple[int, int]:
    """``(a, b)`` with ``1 <= a <= b`` (ints), or a one-line ``ValueError`` naming
    ``infill_bars``."""
    valid = (
        isinstance(bars, (tuple, list))
        and len(bars) == 2
        and all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in bars)
    )
    if not valid or not 1 <= bars[0] <= bars[1]:
        raise ValueError(
            "infill_bars must be (first, last): two bar numbers counted from 1 with first <= "
            f"last, got {bars!r}."
        )
    return int(bars[0]), int(bars[1])


def check_track_numbers(tracks: Any) -> tuple[int, ...]:
    """Track numbers counted from 1 (an int or a non-empty list of ints) -> sorted, without
    repeats, or a one-line ``ValueError`` naming ``infill_tracks`` (the piece's track count is
    checked by :func:`select_holes`)."""

    def is_int(value: Any) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    numbers = [tracks] if is_int(tracks) else tracks
    valid = isinstance(numbers, (list, tuple, range)) and len(numbers) > 0
    if not valid or not all(is_int(n) and n >= 1 for n in numbers):
        raise ValueError(
            "infill_tracks must be track numbers counted from 1 in the piece's order (1, 2, ... "
            f"up to its number of tracks): an int or a non-empty list of ints, got {tracks!r}."
        )
    return tuple(sorted({int(n) for n in numbers}))


def resolve_infill_programs(programs: Any) -> tuple[int, ...]:
    """Program numbers or names (as ``programs=``) -> sorted numbers; errors name
    ``infill_programs``."""
    try:
        return resolve_programs(programs, range(-1, 128))
    except ValueError as error:
        raise ValueError(str(error).replace("programs:", "infill_programs:", 1)) from None


# ----------------------------------------------------------------------------- bars


def _groups(
    vocab: InfillVocabulary, tokens: Iterable[int]
) -> tuple[list[tuple[int, list[int]]], list[tuple[int, list[int]]]]:
    """A bar's tokens after its ``Bar`` / ``TimeSig``, split by position into the tokens that
    are not notes (tempo, controls) and the notes; the position is -1 before any Position."""
    others: list[tuple[int, list[int]]] = []
    notes: list[tuple[int, list[int]]] = []
    position = -1
    for token in tokens:
        kind = vocab.kind_of(token)
        if kind == _POSITION:
            position = int(vocab.value[token])
            continue
        target = notes if kind in (_NOTE, _NOTE_PART) else others
        if target and target[-1][0] == position:
            target[-1][1].append(token)
        else:
            target.append((position, [token]))
    return others, notes


def _render(vocab: InfillVocabulary, groups: Iterable[tuple[int, list[int]]]) -> list[int]:
    out: list[int] = []
    last = -1
    for position, tokens in groups:
        if position >= 0 and position != last:
            out.append(int(vocab.position_id[position]))
            last = position
        out += tokens
    return out


def _head(vocab: InfillVocabulary, bar: list[int]) -> list[int]:
    return bar[:2] if len(bar) > 1 and vocab.kind_of(bar[1]) == _TIMESIG else bar[:1]


def mask_bar(vocab: InfillVocabulary, bar: list[int]) -> tuple[list[int], list[int]]:
    """A bar -> (its placeholder bar, its fill body without ``FillBar_Start`` / ``End``)."""
    head = _head(vocab, bar)
    others, notes = _groups(vocab, bar[len(head) :])
    return [*head, *_render(vocab, others), vocab.placeholder], _render(vocab, notes)


def fill_bar(vocab: InfillVocabulary, bar: list[int], fill: Sequence[int]) -> list[int]:
    """The bar with its notes replaced by the fill's (the bar's tempo and control tokens kept;
    fill tokens that are not notes, and notes past the end of the bar, are left out)."""
    head = _head(vocab, bar)
    others, _ = _groups(vocab, bar[len(head) :])
    _, notes = _groups(vocab, fill)
    positions = vocab.bar_positions(bar)
    notes = [(p, tokens) for p, tokens in notes if 0 <= p < positions]
    merged = sorted(
        [(p, 0, tokens) for p, tokens in others] + [(p, 1, tokens) for p, tokens in notes],
        key=lambda item: (item[0], item[1]),
    )
    return [*head, *_render(vocab, [(p, tokens) for p, _, tokens in merged])]


def _empty_bar(vocab: InfillVocabulary, piece: MmmPiece, index: int) -> list[int]:
    """An empty bar ``index`` (from 0) with the meter of the longest track that has it."""
    for track in sorted(piece.tracks, key=lambda t: -len(t.bars)):
        if index < len(track.bars):
            return _head(vocab, track.bars[index])
    return [vocab.bar]


def _bars_of(vocab: InfillVocabulary, piece: MmmPiece, track: int, upto: int) -> list[list[int]]:
    """The track's bars, with empty bars added so that it has at least ``upto`` bars."""
    bars = piece.tracks[track].bars
    extra = [_empty_bar(vocab, piece, i) for i in range(len(bars), upto)]
    return [*bars, *extra]


# ----------------------------------------------------------------------------- sequences


def _layout(
    vocab: InfillVocabulary,
    piece: MmmPiece,
    holes: Sequence[Hole],
    window: tuple[int, int] | None = None,
) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """The tracks with placeholders (bars ``window`` = (first, last) counted from 1, all by
    default), the original fill bodies of the holes in fill order, and the placeholder bars."""
    by_track: dict[int, set[int]] = {}
    for hole in holes:
        by_track.setdefault(hole.track, set()).add(hole.bar - 1)
    first, last = (1, piece.num_bars) if window is None else window
    context: list[int] = []
    fills: list[list[int]] = []
    placeholders: list[list[int]] = []
    for index, track in enumerate(piece.tracks):
        masked = by_track.get(index, set())
        bars = _bars_of(vocab, piece, index, max(masked, default=-1) + 1)
        chosen = range(first - 1, min(last, len(bars)))
        if not chosen:
            continue
        context += track.header
        for bar in chosen:
            if bar in masked:
                placeholder, fill = mask_bar(vocab, bars[bar])
                context += placeholder
                placeholders.append(placeholder)
                fills.append(fill)
            else:
                context += bars[bar]
        context.append(vocab.track_end)
    return context, fills, placeholders


def _fill_section(vocab: InfillVocabulary, fills: Iterable[Sequence[int]]) -> list[int]:
    return [t for fill in fills for t in (vocab.fill_start, *fill, vocab.fill_end)]


def infill_sequence(
    vocab: InfillVocabulary,
    piece: MmmPiece,
    holes: Sequence[Hole],
    window: tuple[int, int] | None = None,
) -> tuple[list[int], int]:
    """The training sequence of ``piece`` with ``holes``: ``BOS``, the tracks with
    placeholders, one fill per placeholder, ``EOS``. Returns it and the index of its first
    ``FillBar_Start`` (where the fills begin)."""
    context, fills, _ = _layout(vocab, piece, sorted(holes), window)
    prefix = [vocab.bos, *context]
    return [*prefix, *_fill_section(vocab, fills), vocab.eos], len(prefix)


@dataclass
class InfillPrompt:
    """What the model is given to infill a piece, and what is needed to put the fills back.

    Attributes:
        input_ids: ``BOS`` + the tracks with placeholders (bars ``window`` of the piece), to be
            continued with the fills and ``EOS``.
        piece: the whole piece.
        holes: the masked bars, in fill order.
        window: ``(first, last)`` bars of the piece in the prompt (counted from 1).
        bar_positions: positions in each hole's bar (its meter), in fill order.
        drums: whether each hole is on a drum track (its notes are ``PitchDrum``).
        original_fills: what each hole held (the fill bodies of the piece itself).
    """

    input_ids: list[int]
    piece: MmmPiece
    holes: list[Hole]
    window: tuple[int, int]
    bar_positions: list[int] = field(default_factory=list)
    drums: list[bool] = field(default_factory=list)
    original_fills: list[list[int]] = field(default_factory=list)

    @property
    def num_holes(self) -> int:
        return len(self.holes)


def build_infill_prompt(
    tokenizer: Any,
    source: Any,
    bars: tuple[int, int] | None = None,
    programs: Iterable[int | str] | int | str | None = None,
    max_length: int | None = None,
    reserve: int = 0,
    vocab: InfillVocabulary | None = None,
    *,
    tracks: Iterable[int] | int | None = None,
) -> InfillPrompt:
    """The infilling prompt for bars ``a``..``b`` of the tracks playing ``programs`` (or of the
    tracks ``tracks``).

    Args:
        tokenizer: a :class:`~midiformers.MidiTokenizer` of the ``mmm`` preset.
        source: the piece: a MIDI path, bytes, ``symusic.Score``, or its token ids (a list or
            1-D tensor, ``BOS`` / ``EOS`` allowed).
        bars: ``(a, b)``: first and last bar to regenerate, counted from 1, both included
            (``None``: whole tracks).
        programs: the tracks to regenerate, by General MIDI program (numbers, ``-1`` for drums,
            or names; every track playing one); ``None``: every track.
        max_length: the model's context; the prompt then holds the bars around the holes (as
            many before and after as fit, alternately) so that it plus ``reserve`` tokens fit
            (only the holes' bars when even they do not).
        reserve: tokens kept free in ``max_length`` for the fills.
        vocab: the tokenizer's :class:`InfillVocabulary` (built when not given).
        tracks: the tracks to regenerate by number, counted from 1 in the piece's order (the
            order of its ``Track_Start`` blocks); not with ``programs``.

    Raises:
        ValueError: a tokenizer without infill tokens, bars outside the piece, a program no
            track plays, a track number outside the piece, or both ``programs`` and ``tracks``.
    """
    vocab = vocab or InfillVocabulary(tokenizer)
    if hasattr(source, "tolist") and not hasattr(source, "tracks"):
        source = source.tolist()
    if isinstance(source, (list, tuple)):
        tokenizer.check_ids([int(i) for i in source], name="infill source")
        ids = list(source)
    else:
        ids = tokenizer.encode_midi(source)
    piece = parse_piece(vocab, ids)
    if not piece.tracks:
        raise ValueError("The piece has no notes to infill around.")
    holes = sorted(select_holes(piece, bars, programs, tracks))
    window = _window(vocab, piece, holes, max_length, reserve)
    context, fills, placeholders = _layout(vocab, piece, holes, window)
    return InfillPrompt(
        input_ids=[vocab.bos, *context],
        piece=piece,
        holes=holes,
        window=window,
        bar_positions=[vocab.bar_positions(bar) for bar in placeholders],
        drums=[piece.tracks[h.track].program == -1 for h in holes],
        original_fills=fills,
    )


def _window(
    vocab: InfillVocabulary,
    piece: MmmPiece,
    holes: Sequence[Hole],
    max_length: int | None,
    reserve: int,
) -> tuple[int, int]:
    """The bars of the prompt: the holes' bars, widened on both sides while they fit."""
    count = max(piece.num_bars, max(h.bar for h in holes))
    if max_length is None:
        return 1, count
    first = min(h.bar for h in holes)
    last = max(h.bar for h in holes)

    def size(a: int, b: int) -> int:
        return 1 + len(_layout(vocab, piece, holes, (a, b))[0]) + reserve

    if size(first, last) > max_length:
        logger.info(
            "Infilling bars %d-%d: the prompt and %d tokens for the fills exceed the model's "
            "context of %d; the model sees a sliding window.",
            first,
            last,
            reserve,
            max_length,
        )
        return first, last
    grew = True
    while grew:
        grew = False
        for a, b in ((first - 1, last), (first, last + 1)):
            if a >= 1 and b <= count and size(a, b) <= max_length:
                first, last, grew = a, b, True
    return first, last


# ----------------------------------------------------------------------------- fills


def split_fills(vocab: InfillVocabulary, generated: Iterable[int]) -> list[list[int]]:
    """The complete fills (bodies between ``FillBar_Start`` and ``FillBar_End``) of generated
    ids, in order, up to the first ``EOS``; an unfinished last fill is left out."""
    fills: list[list[int]] = []
    current: list[int] | None = None
    for token in generated:
        token = int(token)
        if token == vocab.eos:
            break
        if token == vocab.fill_start:
            current = []
        elif token == vocab.fill_end:
            if current is not None:
                fills.append(current)
            current = None
        elif current is not None:
            current.append(token)
    return fills


def splice_fills(
    vocab: InfillVocabulary,
    piece: MmmPiece,
    holes: Sequence[Hole],
    fills: Sequence[Sequence[int]],
) -> list[int]:
    """Token ids (``BOS`` ... ``EOS``) of the whole piece with each hole's notes replaced by
    its fill (in fill order; a hole without a fill becomes an empty bar). Every bar outside
    the holes is kept token for token."""
    holes = sorted(holes)
    if len(fills) > len(holes):
        raise ValueError(f"{len(fills)} fills for {len(holes)} holes.")
    fill_of = {hole: fills[i] if i < len(fills) else [] for i, hole in enumerate(holes)}
    out = [vocab.bos]
    for index, track in enumerate(piece.tracks):
        mine = [h for h in holes if h.track == index]
        bars = _bars_of(vocab, piece, index, max((h.bar for h in mine), default=0))
        out += track.header
        for number, bar in enumerate(bars, start=1):
            hole = Hole(index, number)
            out += fill_bar(vocab, bar, fill_of[hole]) if hole in fill_of else bar
        out.append(vocab.track_end)
    out.append(vocab.eos)
    return out


def decode_filled(tokenizer: Any, vocab: InfillVocabulary, ids: Sequence[int]) -> ScoreTick:
    """Decode a filled piece (:func:`splice_fills`) into a ``symusic.Score`` with one track per
    track of the piece, in order: a track left without notes (a whole track filled with
    silence) stays as an empty track instead of vanishing, so track ``i`` is still track ``i``."""
    score = tokenizer.to_score(ids)
    tracks = parse_piece(vocab, ids).tracks
    empty = [
        index
        for index, track in enumerate(tracks)
        if not any(vocab.kind_of(t) == _NOTE for bar in track.bars for t in bar)
    ]
    if empty and len(score.tracks) + len(empty) == len(tracks):
        for index in empty:
            program = tracks[index].program
            name = "Drums" if program == -1 else MIDI_INSTRUMENTS[program]["name"]
            score.tracks.insert(index, TrackTick(name, max(program, 0), program == -1))
    return score


# ----------------------------------------------------------------------------- fill rules

_OUT, _OPEN, _AFTER_POSITION, _IN_NOTE, _AFTER_NOTE, _ENDED = range(6)


class _FillWalker:
    """The rules of the fill section, one token at a time (the grammar's ``mmm`` rules apply
    the same ones while generating; this plain walk is the reference they are checked against).
    """

    def __init__(
        self, vocab: InfillVocabulary, bar_positions: Sequence[int], drums: Sequence[bool]
    ):
        self.vocab = vocab
        self.bar_positions = list(bar_positions)
        self.drums = list(drums)
        self.num_holes = len(self.bar_positions)
        self.filled = 0  # fills closed
        self.stage = _OUT
        self.position = -1
        self.parts = 0  # tokens of the current note written

    def _next_part(self) -> int:
        """The note part due after ``parts`` tokens of a note."""
        return _VELOCITY if self.parts == 1 and self.vocab.use_velocities else _DURATION

    def reason(self, token: int) -> str | None:
        """Why ``token`` may not come next (``None``: it may)."""
        vocab = self.vocab
        kind = vocab.kind_of(token)
        if self.stage == _ENDED:
            return "after EOS"
        if self.stage == _OUT:
            if self.filled < self.num_holes:
                if token == vocab.fill_start:
                    return None
                return f"expected {FILL_START} ({self.filled} of {self.num_holes} fills written)"
            return None if token == vocab.eos else f"expected EOS after the {self.num_holes} fills"
        if self.stage == _IN_NOTE:
            due = kind == _NOTE_PART and vocab.value[token] == self._next_part()
            return None if due else "the note is not complete"
        if kind == _NOTE and self.stage in (_AFTER_POSITION, _AFTER_NOTE):
            if bool(vocab.drum[token]) != self.drums[self.filled]:
                track = "a drum track" if self.drums[self.filled] else "a pitched track"
                return f"{_name(vocab, token)} in a fill of {track}"
            return None
        if self.stage == _AFTER_POSITION:
            return "a Position needs a note"
        if token == vocab.fill_end:
            return None
        if kind == _POSITION:
            value = int(vocab.value[token])
            if value <= self.position:
                return f"Position_{value} does not move forward from Position_{self.position}"
            if value >= self.bar_positions[self.filled]:
                return f"Position_{value} is beyond the bar ({self.bar_positions[self.filled]})"
            return None
        return f"{_name(vocab, token)} cannot be in a fill"

    def step(self, token: int) -> None:
        """Advance past an allowed token."""
        vocab = self.vocab
        kind = vocab.kind_of(token)
        if token == vocab.eos:
            self.stage = _ENDED
        elif token == vocab.fill_start:
            self.stage, self.position = _OPEN, -1
        elif token == vocab.fill_end:
            self.stage = _OUT
            self.filled += 1
        elif kind == _POSITION:
            self.stage, self.position = _AFTER_POSITION, int(vocab.value[token])
        elif kind in (_NOTE, _NOTE_PART):
            self.parts = self.parts + 1 if kind == _NOTE_PART else 1
            done = self.parts >= vocab.note_length
            self.stage = _AFTER_NOTE if done else _IN_NOTE


def check_fills(
    vocab: InfillVocabulary, prompt: InfillPrompt, generated: Iterable[int]
) -> SequenceCheck:
    """Check what a model generated after an infilling prompt against the fill rules.

    ``errors`` lists the tokens that do not become music as written (out of place, a position
    outside the bar or not moving forward, a pitched note on a drum track, anything but notes
    in a fill, fills beyond the placeholders); the tokens of a fill left unfinished count too,
    since :func:`split_fills` leaves it out. Trailing ``EOS`` / padding frame the sequence.
    """
    walker = _FillWalker(vocab, prompt.bar_positions, prompt.drums)
    result = SequenceCheck()
    open_fill: list[int] = []
    for index, token in enumerate(int(t) for t in generated):
        result.num_tokens += 1
        if walker.stage == _ENDED:
            if token not in (vocab.eos, vocab.pad):
                result.errors.append(TokenError(index, _name(vocab, token), "after EOS"))
            continue
        if not 0 <= token < vocab.size:
            result.num_invalid_ids += 1
            continue
        reason = walker.reason(token)
        if reason is not None:
            result.errors.append(TokenError(index, _name(vocab, token), reason))
            continue
        walker.step(token)
        open_fill = [] if walker.stage in (_OUT, _ENDED) else [*open_fill, index]
        result.num_note_tokens += vocab.kind_of(token) == _NOTE
    for index in open_fill:
        result.errors.append(TokenError(index, "", "the fill never ends"))
    return result
