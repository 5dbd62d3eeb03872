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
    walker = _Walker(tokenizer)
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


class _Walker:
    """The grammar rules, one base token at a time."""

    def __init__(self, tokenizer: Any):
        tok = tokenizer.miditok
        self.scheme = type(tok).__name__
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
