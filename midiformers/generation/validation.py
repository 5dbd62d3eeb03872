"""Check a token sequence token by token: which tokens the decoder would drop or misplace.

:func:`check_sequence` walks the tokens in plain Python with the rules of
:mod:`midiformers.generation.grammar`, written out independently of its tensor tables, so it
doubles as the reference the processor is tested against. The pipeline reports its count of
dropped tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SequenceCheck", "TokenError", "check_sequence", "expand_tokens"]

_SPECIAL_TYPES = {"PAD", "BOS", "EOS", "MASK"}
_NOTE_ON = {"Pitch", "PitchDrum", "NoteOn", "DrumOn"}
_NOTE_OFF = {"NoteOff", "DrumOff"}
_DRUMS = {"PitchDrum", "DrumOn", "DrumOff"}
_FILL_MARK = "fill:"  # marks a fill's tokens once spliced into their placeholder's bar
_NOT_IN_FILL = {"Bar", "TimeSig", "Tempo", "Program", "Track", "Infill", "FillBar"}


@dataclass(frozen=True)
class TokenError:
    """One token that breaks the grammar: its index in the id sequence and why."""

    index: int
    token: str
    reason: str


@dataclass
class SequenceCheck:
    """What :func:`check_sequence` found in one sequence of ids.

    Attributes:
        num_tokens: ids in the sequence.
        num_special_dropped: PAD / BOS / EOS / MASK ids inside the piece (the leading BOS and
            padding and the trailing EOS and padding frame the piece and are not counted).
        num_invalid_ids: ids outside the vocabulary.
        errors: tokens that break the grammar (decoded into nothing, or into misplaced music).
        num_note_tokens: notes the tokens describe (``Pitch`` / ``NoteOn`` tokens).
    """

    num_tokens: int = 0
    num_special_dropped: int = 0
    num_invalid_ids: int = 0
    errors: list[TokenError] = field(default_factory=list)
    num_note_tokens: int = 0

    @property
    def num_grammar_errors(self) -> int:
        """Ids with at least one grammar error."""
        return len({error.index for error in self.errors})

    @property
    def num_dropped(self) -> int:
        """Ids that do not become sound as written: specials inside, unknown ids, grammar errors."""
        return self.num_special_dropped + self.num_invalid_ids + self.num_grammar_errors

    @property
    def is_valid(self) -> bool:
        return self.num_dropped == 0


def expand_tokens(tokenizer: Any, token_id: int) -> list[str]:
    """Base miditok tokens of one id (one token, or the tokens a BPE token stands for)."""
    tok = tokenizer.miditok
    if tok.is_trained:
        return list(tok._vocab_learned_bytes_to_tokens[tok._model.id_to_token(token_id)])
    return [tok[token_id]]


def _special_ids(tokenizer: Any) -> dict[int, str]:
    names = {}
    for name in ("pad", "bos", "eos", "mask"):
        token_id = getattr(tokenizer, f"{name}_token_id", None)
        if token_id is not None:
            names[int(token_id)] = name.upper()
    return names


def _frame(ids: list[int], special: dict[int, str]) -> tuple[int, int]:
    """Bounds of the piece inside leading BOS / PAD and trailing EOS / PAD."""
    start, end = 0, len(ids)
    while start < end and special.get(ids[start]) in ("BOS", "PAD"):
        start += 1
    while end > start and special.get(ids[end - 1]) in ("EOS", "PAD"):
        end -= 1
    return start, end


def check_sequence(tokenizer: Any, token_ids: Any) -> SequenceCheck:
    """Check one sequence of ids of a :class:`~midiformers.MidiTokenizer` against its grammar."""
    if hasattr(token_ids, "tolist"):
        token_ids = token_ids.tolist()
    ids = [int(i) for i in token_ids]
    special = _special_ids(tokenizer)
    size = tokenizer.vocab_size
    start, end = _frame(ids, special)
    result = SequenceCheck(num_tokens=len(ids))
    walker = _MmmWalker(tokenizer) if _is_mmm(tokenizer) else _Walker(tokenizer)
    for index in range(start, end):
        token_id = ids[index]
        if token_id in special:
            result.num_special_dropped += 1
            continue
        if not 0 <= token_id < size:
            result.num_invalid_ids += 1
            continue
        for token in expand_tokens(tokenizer, token_id):
            walker.step(index, token)
    walker.finish()
    result.errors = walker.errors
    result.num_note_tokens = walker.num_note_tokens
    return result


def _is_mmm(tokenizer: Any) -> bool:
    return type(tokenizer.miditok).__name__ == "MMM"


class _Walker:
    """The grammar rules, one base token at a time."""

    def __init__(self, tokenizer: Any, scheme: str | None = None):
        tok = tokenizer.miditok
        self.scheme = scheme or type(tok).__name__
        self.graph = tok.tokens_types_graph
        self.config = tok.config
        self.positions_per_beat = int(self.config.max_num_pos_per_beat)
        self.errors: list[TokenError] = []
        self.num_note_tokens = 0
        self.prev: str | None = None
        self.prev_prev: str | None = None
        self.program = 0
        self.position = -1
        self.bar_positions = 4 * self.positions_per_beat
        self.time = 0
        self.sounding: dict[tuple[int, int], list[tuple[int, list[int]]]] = {}
        self.unfinished: list[int] = []  # indices of the note still being written
        self.last_note: list[int] = []  # indices of the last NoteOn (and its Velocity)

    # ------------------------------------------------------------------ rules

    def _follows(self, kind: str) -> str | None:
        """Why ``kind`` may not come next, or None."""
        if self.prev is None:
            first = {
                "REMI": {"Bar"},
                "Structured": {"TimeShift"},
            }.get(self.scheme, self.graph.get("TimeShift", set()))
            return None if kind in first else f"a {self.scheme} piece cannot start with {kind}"
        if kind not in self.graph.get(self.prev, set()):
            return f"{kind} cannot follow {self.prev}"
        if self.scheme == "REMI" and kind == "TimeSig" and self.prev != "Bar":
            return "TimeSig must directly follow Bar"
        if self.scheme == "REMI" and self.prev == "TimeSig" and kind == "Program":
            return "a note needs a Position after TimeSig"
        return None

    def _unfinished_after(self, kind: str) -> bool:
        """Whether a note is left incomplete after a token of this type."""
        if kind == "Program":
            return True
        if self.scheme == "MIDILike":
            return kind in ("NoteOn", "DrumOn") and self.config.use_velocities
        if kind in ("Pitch", "PitchDrum"):
            return self.config.use_velocities or self.config.using_note_duration_tokens
        if kind == "Velocity":
            return self.config.using_note_duration_tokens
        return False

    def step(self, index: int, token: str) -> None:
        kind, _, value = token.partition("_")
        reasons = [self._follows(kind)]
        if kind == "Program":
            self.program = int(value)
        elif kind in _NOTE_ON or kind in _NOTE_OFF:
            if (kind in _DRUMS) != (self.program == -1):
                reasons.append(f"{kind} does not match Program_{self.program}")
            if kind in _NOTE_ON:
                self.num_note_tokens += 1
            if self.scheme == "MIDILike":
                reasons.append(self._note_event(index, kind, int(value)))
        elif kind == "Bar":
            self.position = -1
        elif kind == "TimeSig" and self.scheme == "REMI":
            self.bar_positions = int(value.split("/")[0]) * self.positions_per_beat
        elif kind == "Position":
            reasons.append(self._position(int(value)))
        elif kind == "TimeShift":
            self.time += 1
        elif kind == "Velocity" and self.prev in ("NoteOn", "DrumOn"):
            self.last_note.append(index)  # lost with its note if the note never ends
        for reason in filter(None, reasons):
            self.errors.append(TokenError(index, token, reason))
        self.unfinished = [*self.unfinished, index] if self._unfinished_after(kind) else []
        self.prev_prev, self.prev = self.prev, kind

    def _position(self, value: int) -> str | None:
        if value <= self.position:
            return f"Position_{value} does not move forward from Position_{self.position}"
        self.position = value
        if value >= self.bar_positions:
            return f"Position_{value} is beyond the bar ({self.bar_positions} positions)"
        return None

    def _note_event(self, index: int, kind: str, pitch: int) -> str | None:
        key = (self.program, pitch)
        notes = self.sounding.setdefault(key, [])
        if kind in _NOTE_ON:  # unisons stack; miditok ends them first in, first out
            self.last_note = [index]
            notes.append((self.time, self.last_note))
            return None
        if not notes:
            return f"{kind}_{pitch} for a note that is not sounding"
        onset, _ = notes[0]
        if onset == self.time:
            return f"{kind}_{pitch} at the time its note started (zero length)"
        notes.pop(0)
        return None

    def finish(self) -> None:
        """Errors for what the end leaves unfinished."""
        for index in self.unfinished:
            self.errors.append(TokenError(index, "", "the piece ends before this note is complete"))
        for (program, pitch), notes in self.sounding.items():
            for _, indices in notes:
                for index in indices:
                    self.errors.append(
                        TokenError(index, "", f"note {pitch} of program {program} never ends")
                    )


class _MmmWalker:
    """MMM: tracks of REMI (each walked by its own :class:`_Walker`, from its ``Program``),
    attribute controls where miditok writes them, and infilling (each ``Infill_Bar`` placeholder
    replaced by its ``FillBar_Start ... FillBar_End`` content, as ``to_score`` splices it).

    The tokens are collected first (a placeholder's content comes after the tracks), then the
    spliced tracks are walked in :meth:`finish`.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.errors: list[TokenError] = []
        self.num_note_tokens = 0
        self.tracks: list[list[tuple[int, str]]] = []  # from each Track_Start
        self.fills: list[list[tuple[int, str]]] = []  # from each FillBar_Start
        self.outside: list[tuple[int, str]] = []  # tokens outside every track and fill
        self.closed = True  # no track or fill open
        self.in_fills = False

    def _error(self, index: int, token: str, reason: str) -> None:
        self.errors.append(TokenError(index, token, reason))

    def step(self, index: int, token: str) -> None:
        if token == "Track_Start":
            if not self.closed:
                self._error(index, token, "the track before is not closed by Track_End")
            if self.in_fills:
                self._error(index, token, "a track after the fills (decoded as fill content)")
            self.tracks.append([(index, token)])
            self.closed = False
        elif token == "FillBar_Start":
            if not self.closed:
                self._error(index, token, "FillBar_Start inside a track or fill")
            self.in_fills = True
            self.fills.append([])
            self.closed = False
        elif token in ("Track_End", "FillBar_End"):
            if self.closed:
                self._error(index, token, f"{token} outside a track or fill")
            elif (token == "FillBar_End") != self.in_fills:
                self._error(
                    index, token, f"{token} does not close a {'fill' if self.in_fills else 'track'}"
                )
            self.closed = True
        elif self.closed:
            self._error(index, token, "a token outside every track and fill")
        elif self.in_fills:
            self.fills[-1].append((index, token))
        else:
            self.tracks[-1].append((index, token))

    def finish(self) -> None:
        fills = list(self.fills)
        for track in self.tracks:
            spliced: list[tuple[int, str]] = []
            for index, token in track:
                spliced.append((index, token))
                if token != "Infill_Bar":
                    continue
                if fills:
                    spliced += [(i, _FILL_MARK + t) for i, t in fills.pop(0)]
                else:
                    self._error(
                        index, token, "no FillBar_Start ... FillBar_End for this placeholder"
                    )
            self._walk_track(spliced)
        for fill in fills:
            for index, token in fill:
                self._error(index, token, "a fill without an Infill_Bar placeholder")

    def _walk_track(self, track: list[tuple[int, str]]) -> None:
        """``Track_Start Program_x [track controls]``, then REMI bars with bar controls; a
        placeholder bar's fill (marked tokens) goes where its ``Infill_Bar`` is."""
        program: int | None = None
        walker = _Walker(self.tokenizer, scheme="REMI")
        controls_open = False  # bar controls may come now (after the bar's prefix)
        placeholder = False  # the bar is a placeholder: only its fill's notes may follow
        for index, token in track[1:]:
            in_fill = token.startswith(_FILL_MARK)
            token = token.removeprefix(_FILL_MARK)
            kind, _, value = token.partition("_")
            if kind == "Program":
                if program is not None or walker.prev is not None:
                    self._error(index, token, "a Program inside a track changes its instrument")
                else:
                    program = walker.program = int(value)
                continue
            if program is None:
                self._error(index, token, "a track starts with Track_Start Program_x")
                program = 0
            if in_fill and (kind in _NOT_IN_FILL or kind.startswith("AC")):
                self._error(index, token, "a fill holds positions and notes only")
                continue
            if placeholder and not in_fill and kind != "Bar":
                self._error(index, token, "Infill_Bar ends its bar (its notes are in its fill)")
            if token == "Infill_Bar":
                if walker.prev in (None, "Bar"):
                    self._error(index, token, "Infill_Bar comes after its bar's Bar and TimeSig")
                placeholder, controls_open = True, False
                walker.position = -1  # the fill's positions count from the bar's start
                continue
            if kind == "Bar":
                placeholder = False
            if kind.startswith("ACTrack"):
                if walker.prev is not None:
                    self._error(index, token, "a track control after the track's first bar")
                continue
            if kind.startswith("ACBar"):
                prefix = walker.prev in ("TimeSig", "Tempo") and walker.position <= 0
                if not (controls_open or prefix):
                    self._error(index, token, "a bar control after the bar's first note")
                controls_open = True
                walker.position = -1  # the notes start at the bar's start again
                continue
            if controls_open and kind not in ("Position", "Infill"):
                self._error(index, token, "bar controls are followed by a Position")
            controls_open = False
            walker.step(index, token)
        walker.finish()
        self.errors += walker.errors
        self.num_note_tokens += walker.num_note_tokens
