"""The token grammar of a :class:`~midiformers.MidiTokenizer`, compiled into tensors.

:class:`MidiGrammar` reads the tokenizer's vocabulary once (miditok's token-type graph, the value
of every token and, for a BPE vocabulary, the base tokens each merged token expands to) and keeps
per-token tables over the whole vocabulary. :class:`GrammarState` holds a few registers per
sequence (last token type, program, bar position, sounding notes) and the grammar turns a batch of
states into a ``(batch, vocab)`` mask of the tokens that keep each sequence valid, with tensor
indexing only: nothing loops over the vocabulary at generation time.

"Valid" means miditok decodes every token into music and the music is sensible:

* every scheme: token types follow miditok's type graph (a ``Pitch`` gets its ``Velocity`` and
  ``Duration``, a ``Program`` is followed by a note), drum programs (``Program_-1``) play
  ``PitchDrum`` / ``DrumOn`` tokens and other programs play pitched notes, special tokens only
  at the ends (``EOS`` only where nothing is left unfinished);
* REMI: positions move forward inside a bar and stay within the bar of the current time
  signature; a ``TimeSig`` comes right after its ``Bar`` and a note right after its ``Position``;
* MIDILike / performance: ``NoteOff`` only for a sounding note that started before the current
  time (no zero-length note; unisons stack and end first in, first out, as miditok decodes
  them), and every note is closed before the sequence ends.

With a length budget, a token is only allowed if what it leaves unfinished (a note still needing
its velocity and duration, notes still sounding) can be completed in the tokens that remain, so
sequences that stop at the limit end cleanly.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any

import miditok
import torch
from miditok.constants import TIME_SIGNATURE
from miditok.utils import compute_ticks_per_bar
from symusic import TimeSignature

__all__ = ["SUPPORTED_SCHEMES", "GrammarState", "MidiGrammar", "UnsupportedGrammarError"]

SUPPORTED_SCHEMES = {
    "REMI": "remi",
    "TSD": "tsd",
    "MIDILike": "midilike",
    "Structured": "structured",
}
"""miditok tokenization class name -> grammar scheme."""

_UNSUPPORTED_OPTIONS = (
    "use_rests",
    "use_chords",
    "use_sustain_pedals",
    "use_pitch_bends",
    "use_control_changes",
    "use_pitch_intervals",
)
_NOTE_ON_TYPES = frozenset({"Pitch", "PitchDrum", "NoteOn", "DrumOn"})
_NOTE_OFF_TYPES = frozenset({"NoteOff", "DrumOff"})
_DRUM_TYPES = frozenset({"PitchDrum", "DrumOn", "DrumOff"})
_SPECIAL_TYPES = frozenset({"PAD", "BOS", "EOS", "MASK"})

_INCOMING_PROGRAM = -2  # the key's program is the state's current program

# Special-token roles of vocabulary ids.
_REGULAR, _PAD, _BOS, _EOS, _MASK, _NEUTRAL = range(6)
_SPECIAL_ROLE = {"PAD": _PAD, "BOS": _BOS, "EOS": _EOS, "MASK": _MASK}

_UNCHANGED = -2  # "register not changed by this token" in the position / program tables
_KEEP = -99  # "register not changed" in the packed register update table
_PREV, _PROGRAM, _POSITION, _BAR, _HAS_NOTES, _DRUMS = range(6)
_ALWAYS, _IF_PROGRAM, _UNLESS_PROGRAM = range(3)  # when a note requirement applies
_NO_REQUIREMENT = -1


_GRAMMARS: dict[int, tuple] = {}  # id(miditok tokenizer) -> (weak ref, vocabulary, grammar)


class UnsupportedGrammarError(ValueError):
    """The tokenizer's scheme or options are outside what :class:`MidiGrammar` knows."""


def _split(token: str) -> tuple[str, str]:
    kind, _, value = token.partition("_")
    return kind, value


@dataclass
class _TokenSummary:
    """What one vocabulary token (a base token or a BPE merge) needs and does, in plain Python."""

    role: int = _REGULAR
    ok: bool = True
    first_type: int = -1
    last_type: int = -1
    needs_drum: int = _NO_REQUIREMENT  # 0: the incoming program must be pitched, 1: drums
    new_program: int = _UNCHANGED
    single_program: bool = False
    position_first: int = -1  # first Position before any Bar (must exceed the incoming position)
    position_max: int = -1  # largest Position before any Bar (must fit the incoming bar)
    note_delta: int = 0  # notes opened minus notes closed
    has_note_on: bool = False
    has_time_shift: bool = False
    fresh_tail: bool = False  # notes opened after the last TimeShift are still sounding
    requirements: tuple[tuple[int, ...], ...] = ()  # _MidiLikeWalk's, + when they apply
    forbidden_programs: tuple[int, ...] = ()  # incoming programs that would alias a key


class GrammarState:
    """Registers of a batch of partial sequences (one row per sequence).

    ``prev`` is the type of the last token (or the start / ended pseudo-types), ``has_notes``
    whether a note has started (EOS waits for one), ``program`` the
    current program (``drums``: whether it is ``Program_-1``), ``position`` / ``bar`` the REMI bar
    position and the index of the bar size in :attr:`MidiGrammar.bar_lengths`, and for
    MIDILike ``count`` the sounding notes per (program, pitch) (unisons stack, as in miditok's
    first-in first-out decoder) and ``old_count`` those among them that started before the
    current time (before the last ``TimeShift``), plus running totals so that no step scans
    every key: sounding notes per program (``per_program``), the old ones (``old_per_program``)
    and the notes that started now (``fresh``).
    """

    _TENSORS = (
        "registers",
        "count",
        "old_count",
        "per_program",
        "old_per_program",
        "fresh",
    )
    _REGISTERS = ("prev", "program", "position", "bar", "has_notes", "drums")

    def __init__(self, **tensors: torch.Tensor | None):
        for name in self._TENSORS:
            setattr(self, name, tensors.get(name))

    # the scalar registers live in one (batch, 5) tensor, updated by one lookup per token
    prev = property(lambda self: self.registers[:, _PREV])
    program = property(lambda self: self.registers[:, _PROGRAM])
    position = property(lambda self: self.registers[:, _POSITION])
    bar = property(lambda self: self.registers[:, _BAR])
    has_notes = property(lambda self: self.registers[:, _HAS_NOTES] > 0)
    drums = property(lambda self: self.registers[:, _DRUMS] > 0)

    def index_select(self, index: torch.LongTensor) -> GrammarState:
        """The states of rows ``index`` (e.g. beams reordered by beam search)."""
        return GrammarState(
            **{
                name: None if getattr(self, name) is None else getattr(self, name)[index]
                for name in self._TENSORS
            }
        )

    def clone(self) -> GrammarState:
        return GrammarState(
            **{
                name: None if getattr(self, name) is None else getattr(self, name).clone()
                for name in self._TENSORS
            }
        )

    @property
    def batch_size(self) -> int:
        return self.registers.shape[0]


class MidiGrammar:
    """Tensor tables of a tokenizer's grammar (see the module docstring for the rules).

    Args:
        tokenizer: a :class:`~midiformers.MidiTokenizer` (or anything with a ``miditok``
            attribute and ``len()``) using REMI, TSD, MIDILike or Structured, optionally with a
            trained BPE vocabulary.

    Raises:
        UnsupportedGrammarError: another miditok scheme, or options the grammar does not model
            (rests, chords, pedals, pitch bends, control changes, pitch intervals, bar-end tokens).
    """

    def __init__(self, tokenizer: Any):
        self.miditok: miditok.MusicTokenizer = getattr(tokenizer, "miditok", tokenizer)
        self.scheme = self._check_supported(self.miditok)
        config = self.miditok.config
        self.use_velocities = bool(config.use_velocities)
        self.base_vocab: dict[str, int] = dict(self.miditok.vocab)
        self._build_types()
        self._build_base_tables()
        expansions = self._expansions()
        self.vocab_size = len(expansions)
        self.max_expansion = max(len(e) for e in expansions)
        self._build_vocab_tables(expansions)
        self._device_tables: dict[torch.device, dict[str, torch.Tensor]] = {}

    @classmethod
    def for_tokenizer(cls, tokenizer: Any) -> MidiGrammar:
        """The compiled grammar of a tokenizer, cached while its vocabulary stays the same."""
        tok = getattr(tokenizer, "miditok", tokenizer)
        signature = (tok.is_trained, len(tok.vocab_model) if tok.is_trained else len(tok.vocab))
        cached = _GRAMMARS.get(id(tok))
        if cached is None or cached[0]() is not tok or cached[1] != signature:
            cached = (weakref.ref(tok), signature, cls(tokenizer))
            _GRAMMARS[id(tok)] = cached
            weakref.finalize(tok, _GRAMMARS.pop, id(tok), None)
        return cached[2]

    # ------------------------------------------------------------------ construction

    @staticmethod
    def _check_supported(tokenizer: miditok.MusicTokenizer) -> str:
        name = type(tokenizer).__name__
        if name not in SUPPORTED_SCHEMES:
            raise UnsupportedGrammarError(
                f"The MIDI grammar knows {sorted(SUPPORTED_SCHEMES)} tokenizations, not {name}."
            )
        config = tokenizer.config
        used = [option for option in _UNSUPPORTED_OPTIONS if getattr(config, option, False)]
        extra = config.additional_params or {}
        if extra.get("use_bar_end_tokens"):
            used.append("use_bar_end_tokens")
        if extra.get("max_bar_embedding") is not None:
            used.append("max_bar_embedding")
        if not config.use_programs or not config.one_token_stream_for_programs:
            used.append("use_programs=False or one_token_stream_for_programs=False")
        if set(config.use_note_duration_programs) != set(config.programs):
            used.append("use_note_duration_programs (not every program)")
        if used:
            raise UnsupportedGrammarError(
                f"The MIDI grammar does not model these {name} options: {', '.join(used)}."
            )
        return SUPPORTED_SCHEMES[name]

    def _build_types(self) -> None:
        """Token types, the allowed type transitions and the start state."""
        graph = {
            kind: {t for t in successors if t not in _SPECIAL_TYPES and "_" not in t}
            for kind, successors in self.miditok.tokens_types_graph.items()
            if kind not in _SPECIAL_TYPES
        }
        types = sorted({_split(t)[0] for t in self.base_vocab} - _SPECIAL_TYPES)
        missing = set(types) - set(graph)
        if missing:
            raise UnsupportedGrammarError(
                f"miditok's type graph does not describe the token types {sorted(missing)}."
            )
        if self.scheme == "remi":
            for kind, successors in graph.items():
                if kind != "Bar":
                    successors.discard("TimeSig")
            graph.get("TimeSig", set()).discard("Program")
        if self.scheme == "remi":
            start = {"Bar"}
        elif self.scheme == "structured":
            start = set(graph["Duration"]) if "Duration" in graph else {"TimeShift"}
        else:
            start = set(graph["TimeShift"])
        self.types = types
        self.type_index = {kind: i for i, kind in enumerate(types)}
        self.start_type = len(types)
        self.ended_type = len(types) + 1
        num_states = len(types) + 2
        transitions = torch.zeros(num_states, len(types) + 1, dtype=torch.bool)  # + dummy column
        for kind, successors in graph.items():
            for successor in successors:
                if successor in self.type_index:
                    transitions[self.type_index[kind], self.type_index[successor]] = True
        for kind in start:
            if kind in self.type_index:
                transitions[self.start_type, self.type_index[kind]] = True
        self.transitions = transitions
        self.graph = graph
        self.start_types = start
        self.completion = self._completion_costs()

    def _unfinished_types(self) -> set[str]:
        """Types after which a note is incomplete (the decoder would drop it)."""
        unfinished = {"Program"}
        if self.scheme == "midilike":
            if self.use_velocities:
                unfinished |= {"NoteOn", "DrumOn"}
            return unfinished
        note_parts = ["Pitch", "PitchDrum"]
        if self.use_velocities:
            unfinished |= set(note_parts)
            note_parts = ["Velocity"]
        if self.miditok.config.using_note_duration_tokens:
            unfinished |= set(note_parts)
        return unfinished & set(self.types)

    def _completion_costs(self) -> torch.LongTensor:
        """Fewest tokens after each type until nothing is unfinished (shortest path in the graph)."""
        unfinished = self._unfinished_types()
        cost = {kind: (math.inf if kind in unfinished else 0) for kind in self.types}
        for _ in range(len(self.types)):
            for kind in unfinished:
                successors = [cost[s] for s in self.graph.get(kind, ()) if s in cost]
                if successors:
                    cost[kind] = min(cost[kind], 1 + min(successors))
        if any(math.isinf(c) for c in cost.values()):
            raise UnsupportedGrammarError(f"No way to complete a note after {cost}.")
        values = [int(cost[kind]) for kind in self.types] + [0, 0]  # start, ended
        return torch.tensor(values, dtype=torch.long)

    def _positions_per_bar(self, numerator: int, denominator: int) -> int:
        """REMI positions in a bar of this time signature (miditok's own arithmetic)."""
        tok = self.miditok
        ticks_per_position = tok._compute_ticks_per_pos(tok._tpb_per_ts[denominator])
        ticks_per_bar = compute_ticks_per_bar(
            TimeSignature(0, numerator, denominator), tok.time_division
        )
        return ticks_per_bar // ticks_per_position

    def _build_base_tables(self) -> None:
        """Base (non-BPE) tokens by id, and the REMI bar size before any TimeSig."""
        size = len(self.base_vocab)
        self.base_tokens = [""] * size
        for token, index in self.base_vocab.items():
            self.base_tokens[index] = token
        self.default_bar_length = (
            self._positions_per_bar(*TIME_SIGNATURE) if self.scheme == "remi" else 0
        )
        lengths = {self.default_bar_length}
        for token in self.base_tokens:
            kind, value = _split(token)
            if kind == "TimeSig" and self.scheme == "remi":
                lengths.add(self._positions_per_bar(*map(int, value.split("/"))))
        self.bar_lengths = sorted(lengths)  # the REMI ``bar`` register indexes this list

    def _expansions(self) -> list[list[int]]:
        """Base token ids of every vocabulary id (itself, or what a BPE token decodes to)."""
        tok = self.miditok
        if not tok.is_trained:
            return [[i] for i in range(len(self.base_vocab))]
        learned = tok._vocab_learned_bytes_to_tokens
        expansions: list[list[int]] = [[] for _ in range(len(tok.vocab_model))]
        for byte_string, index in tok.vocab_model.items():
            expansions[index] = [self.base_vocab[t] for t in learned[byte_string]]
        return expansions

    @staticmethod
    def _check_drum(summary: _TokenSummary, program: int | None, drum: bool) -> bool:
        """Drum notes need Program_-1, pitched notes another program (the incoming one if the
        token has no Program before the note: recorded as a requirement)."""
        if program is not None:
            return drum == (program == -1)
        wanted = int(drum)
        if summary.needs_drum not in (_NO_REQUIREMENT, wanted):
            return False
        summary.needs_drum = wanted
        return True

    def _summarize(self, expansion: list[int]) -> _TokenSummary:
        """Walk one token's base tokens with an unknown incoming state, recording what it needs."""
        summary = _TokenSummary()
        tokens = [self.base_tokens[i] for i in expansion]
        if not tokens:
            summary.role, summary.ok = _NEUTRAL, False
            return summary
        kinds = [_split(t)[0] for t in tokens]
        if len(tokens) == 1 and kinds[0] in _SPECIAL_TYPES:
            summary.role, summary.ok = _SPECIAL_ROLE[kinds[0]], False
            return summary
        if any(kind in _SPECIAL_TYPES for kind in kinds):
            summary.ok = False
            return summary
        index = [self.type_index[kind] for kind in kinds]
        summary.first_type, summary.last_type = index[0], index[-1]
        summary.ok = all(bool(self.transitions[a, b]) for a, b in zip(index, index[1:]))
        program: int | None = None
        position: int | None = None  # None: still in the incoming bar, before any Position
        bar_length: int | None = None
        after_bar = False
        for token, kind in zip(tokens, kinds):
            value = _split(token)[1]
            if kind == "Program":
                program = int(value)
                summary.new_program = program
            elif kind in _NOTE_ON_TYPES or kind in _NOTE_OFF_TYPES:
                summary.ok &= self._check_drum(summary, program, kind in _DRUM_TYPES)
            elif kind == "Bar":
                position, after_bar = -1, True
            elif kind == "TimeSig" and self.scheme == "remi":
                bar_length = self._positions_per_bar(*map(int, value.split("/")))
            elif kind == "Position":
                value_int = int(value)
                if position is None:
                    summary.position_first = value_int
                elif value_int <= position:
                    summary.ok = False
                if bar_length is not None:
                    summary.ok &= value_int < bar_length
                elif after_bar:
                    summary.ok &= value_int < self.default_bar_length
                else:
                    summary.position_max = max(summary.position_max, value_int)
                position = value_int
        summary.single_program = len(tokens) == 1 and kinds[0] == "Program"
        if self.scheme == "midilike":
            self._summarize_notes(summary, tokens)
        return summary

    @staticmethod
    def _walk_notes(tokens: list[str], program: int) -> _MidiLikeWalk:
        """MIDILike note events of one token, from an incoming program (or unknown)."""
        walk = _MidiLikeWalk()
        for token in tokens:
            kind, value = _split(token)
            if kind == "Program":
                program = int(value)
            elif kind in _NOTE_ON_TYPES:
                walk.note_on(program, int(value))
            elif kind in _NOTE_OFF_TYPES:
                walk.ok &= walk.note_off(program, int(value))
            elif kind == "TimeShift":
                walk.time_shift()
        return walk

    def _summarize_notes(self, summary: _TokenSummary, tokens: list[str]) -> None:
        """MIDILike: what the token needs from the sounding notes, and what it leaves sounding.

        If a key of the incoming program may be the same as a key under a Program inside the
        token, the token is walked again with that program coming in, and each walk's
        requirements apply only when the state's program is (or is not) that program.
        """
        walk = self._walk_notes(tokens, _INCOMING_PROGRAM)
        summary.ok &= walk.ok
        summary.note_delta = walk.delta
        summary.has_note_on = walk.has_note_on
        summary.has_time_shift = walk.shifts > 0
        summary.fresh_tail = walk.fresh_tail()
        aliased = walk.aliased_programs()
        if len(aliased) > 1:
            summary.ok = False  # never seen in practice; not worth more variants
            return
        if not aliased:
            summary.requirements = tuple((*r, _ALWAYS, 0) for r in walk.requirements)
            return
        program = aliased[0]
        merged = self._walk_notes(tokens, program)
        summary.requirements = tuple((*r, _UNLESS_PROGRAM, program) for r in walk.requirements)
        if merged.ok:
            summary.requirements += tuple((*r, _IF_PROGRAM, program) for r in merged.requirements)
        else:
            summary.forbidden_programs = (program,)

    def _build_vocab_tables(self, expansions: list[list[int]]) -> None:
        """Tensors over the vocabulary: what each token needs from a state and what it changes."""
        summaries = [self._summarize(e) for e in expansions]
        dummy = len(self.types)

        def column(name: str, dtype: torch.dtype = torch.long) -> torch.Tensor:
            return torch.tensor([getattr(s, name) for s in summaries], dtype=dtype)

        tables: dict[str, torch.Tensor] = {
            "ok": column("ok", torch.bool),
            "first_type": torch.tensor(
                [s.first_type if s.first_type >= 0 else dummy for s in summaries]
            ),
            "last_type": torch.tensor([max(s.last_type, 0) for s in summaries]),
            "needs_drum": column("needs_drum"),
            "new_program": column("new_program"),
            "single_program": column("single_program", torch.bool),
            "position_first": column("position_first"),
            "position_max": column("position_max"),
            "note_delta": column("note_delta"),
            "has_note_on": column("has_note_on", torch.bool),
            "has_time_shift": column("has_time_shift", torch.bool),
            "fresh_tail": column("fresh_tail", torch.bool),
        }
        tables["completion_after"] = self.completion[tables["last_type"]]
        noop = len(self.base_tokens)  # the no-op entry of the base tables
        width = max(self.max_expansion, 1)
        expansion = torch.full((len(expansions) + 1, width), noop, dtype=torch.long)
        for i, e in enumerate(expansions):
            expansion[i, : len(e)] = torch.tensor(e, dtype=torch.long)
        tables["expansion"] = expansion
        tables["expansion_length"] = torch.tensor([len(e) for e in expansions] + [0])
        tables.update(self._base_step_tables())
        tables.update(self._requirement_tables(summaries))
        tables["completion"] = self.completion
        self.special_ids = {
            role: [i for i, s in enumerate(summaries) if s.role == role]
            for role in (_PAD, _BOS, _EOS, _MASK)
        }
        if not self.special_ids[_EOS]:
            raise UnsupportedGrammarError("The tokenizer has no EOS token to end sequences with.")
        tables["eos_ids"] = torch.tensor(self.special_ids[_EOS], dtype=torch.long)
        tables["pad_ids"] = torch.tensor(self.special_ids[_PAD], dtype=torch.long)
        neutral = [i for i, s in enumerate(summaries) if s.role == _NEUTRAL]
        tables["neutral_ids"] = torch.tensor(neutral, dtype=torch.long)
        tables["by_state"] = self._state_table(tables)
        if self.scheme == "remi":
            tables["by_position"] = self._position_table(tables)
        if self.scheme == "midilike":
            tables.update(self._cost_tables(tables))
            # the largest cost after a token, less the sounding notes' 2 * notes (+1: fresh)
            self.max_cost_after = int(tables["static_cost_after"].max()) + 1
        else:
            self.max_cost_after = int(tables["completion_after"].max())
        self.tables = tables
        self.summaries = summaries

    def _state_table(self, tables: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(num_states * 2, vocab)``: type transition, static validity and drum requirement,
        indexed by ``2 * last_type + (program is drums)``."""
        by_type = self.transitions[:, tables["first_type"]] & tables["ok"].unsqueeze(0)
        needs = tables["needs_drum"]
        rows = []
        for drum in (0, 1):
            rows.append(by_type & ((needs == _NO_REQUIREMENT) | (needs == drum)).unsqueeze(0))
        return torch.stack(rows, dim=1).flatten(0, 1)

    def _position_table(self, tables: dict[str, torch.Tensor]) -> torch.Tensor:
        """REMI ``(positions + 1, bar lengths, vocab)``: positions forward and inside the bar,
        indexed by (current position + 1, index of the bar length)."""
        lengths = self.bar_lengths
        num_positions = max(lengths) + 1  # current position -1 .. max
        current = torch.arange(-1, num_positions - 1).view(-1, 1, 1)
        length = torch.tensor(lengths).view(1, -1, 1)
        first = tables["position_first"].view(1, 1, -1)
        forward = (first < 0) | (first > current)
        inside = tables["position_max"].view(1, 1, -1) < length
        return forward & inside

    def _cost_tables(self, tables: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """MIDILike: the parts of the completion cost after each token that the token fixes."""
        pending = self._pending_cost(tables["last_type"], tables)
        has_shift = tables["has_time_shift"]
        fresh = torch.where(has_shift, tables["fresh_tail"], tables["has_note_on"]).long()
        programs = torch.nonzero(tables["single_program"]).flatten()
        states = torch.arange(len(self.types) + 2)
        return {
            "pending_by_state": self._pending_cost(states, tables),
            "static_cost_after": 2 * tables["note_delta"] + pending + fresh,
            "keeps_fresh": (~has_shift & ~tables["has_note_on"]).long(),
            "program_token_ids": programs,
            "program_token_index": tables["new_program"][programs] + 1,
            "program_credit": -1 - pending[programs],
        }

    def _base_step_tables(self) -> dict[str, torch.Tensor]:
        """Per base token: role, type and values used to advance a state by one base token."""
        size = len(self.base_tokens) + 1  # + a no-op entry for unknown ids
        kind_of = [_split(t) for t in self.base_tokens] + [("PAD", "None")]
        role = torch.full((size,), _REGULAR, dtype=torch.long)
        btype = torch.zeros(size, dtype=torch.long)
        program = torch.full((size,), _UNCHANGED, dtype=torch.long)
        position = torch.full((size,), _UNCHANGED, dtype=torch.long)
        bar_length = torch.zeros(size, dtype=torch.long)
        pitch = torch.zeros(size, dtype=torch.long)
        note = torch.zeros(size, dtype=torch.long)  # +1 note on, -1 note off
        shift = torch.zeros(size, dtype=torch.long)
        for i, (kind, value) in enumerate(kind_of):
            if kind in _SPECIAL_TYPES:
                role[i] = _SPECIAL_ROLE[kind]
                continue
            btype[i] = self.type_index[kind]
            if kind == "Program":
                program[i] = int(value)
            elif kind == "Bar":
                position[i] = -1
            elif kind == "Position":
                position[i] = int(value)
            elif kind == "TimeSig" and self.scheme == "remi":
                bar_length[i] = self._positions_per_bar(*map(int, value.split("/")))
            elif kind == "TimeShift":
                shift[i] = 1
            if kind in _NOTE_ON_TYPES or kind in _NOTE_OFF_TYPES:
                pitch[i] = int(value)
                note[i] = 1 if kind in _NOTE_ON_TYPES else -1
        next_prev = torch.where(role == _REGULAR, btype, _KEEP)
        next_prev[role == _EOS] = self.ended_type
        update = torch.full((size, 6), _KEEP, dtype=torch.long)
        update[:, _PREV] = next_prev
        update[:, _PROGRAM] = torch.where(program != _UNCHANGED, program, _KEEP)
        update[:, _POSITION] = torch.where(position != _UNCHANGED, position, _KEEP)
        bar_index = torch.tensor([self.bar_lengths.index(int(n)) if n else 0 for n in bar_length])
        update[:, _BAR] = torch.where(bar_length > 0, bar_index, _KEEP)
        update[:, _HAS_NOTES] = torch.where(note > 0, 1, _KEEP)
        update[:, _DRUMS] = torch.where(program != _UNCHANGED, (program == -1).long(), _KEEP)
        return {
            "base_update": update,
            "base_is_bos": role == _BOS,
            "base_pitch": pitch,
            "base_note": note,
            "base_starts": (note > 0).int(),
            "base_shift": shift > 0,
        }

    def _requirement_tables(self, summaries: list[_TokenSummary]) -> dict[str, torch.Tensor]:
        """Flat lists of (token, program, pitch, old, total, exact) note requirements and of
        forbidden incoming programs."""
        rows = [(v, *r) for v, s in enumerate(summaries) if s.ok for r in s.requirements]
        # one NoteOff of the current program's key (every base NoteOff): a cheaper check
        simple = [r for r in rows if r[1] == _INCOMING_PROGRAM and r[4:] == (1, 0, _ALWAYS, 0)]
        rows = [r for r in rows if r not in simple]
        simple_table = torch.tensor(simple, dtype=torch.long).view(-1, 8)
        forbidden = [(v, p) for v, s in enumerate(summaries) if s.ok for p in s.forbidden_programs]
        req = torch.tensor(rows, dtype=torch.long).view(-1, 8)
        forb = torch.tensor(forbidden, dtype=torch.long).view(-1, 2)
        names = (
            "req_token",
            "req_program",
            "req_pitch",
            "req_old",
            "req_total",
            "req_exact",
            "req_when",
            "req_when_program",
        )
        tables = {name: req[:, i].contiguous() for i, name in enumerate(names)}
        tables["req_exact"] = tables["req_exact"].bool()
        tables["forbid_token"] = forb[:, 0].contiguous()
        tables["forbid_program"] = forb[:, 1].contiguous()
        tables["simple_token"] = simple_table[:, 0].contiguous()
        tables["simple_pitch"] = simple_table[:, 2].contiguous()
        tables["simple_old"] = simple_table[:, 3].bool()
        self.simple_unique = len(set(simple_table[:, 0].tolist())) == len(simple_table)
        self.simple_all_old = bool(tables["simple_old"].all())
        return tables

    # ------------------------------------------------------------------ tensors

    def on(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The tables on ``device`` (copied once per device)."""
        device = torch.device(device)
        if device not in self._device_tables:
            self._device_tables[device] = {k: v.to(device) for k, v in self.tables.items()}
        return self._device_tables[device]

    @property
    def eos_ids(self) -> list[int]:
        """Vocabulary ids that end a sequence."""
        return self.special_ids[_EOS]

    @property
    def pad_ids(self) -> list[int]:
        """Vocabulary ids of padding."""
        return self.special_ids[_PAD]

    @property
    def num_programs(self) -> int:
        return 129  # -1 (drums) .. 127

    def initial_state(self, batch_size: int, device: torch.device) -> GrammarState:
        """The state before any token (the start of a piece)."""
        bar = self.bar_lengths.index(self.default_bar_length)
        registers = torch.tensor(
            [self.start_type, 0, -1, bar, 0, 0], dtype=torch.long, device=device
        )
        state = GrammarState(registers=registers.repeat(batch_size, 1))
        if self.scheme == "midilike":
            shape = (batch_size, self.num_programs, 128)
            # int32 throughout, so that the per-token updates never convert types
            state.count = torch.zeros(shape, dtype=torch.int32, device=device)
            state.old_count = torch.zeros_like(state.count)
            state.per_program = torch.zeros(
                batch_size, self.num_programs, dtype=torch.int32, device=device
            )
            state.old_per_program = torch.zeros_like(state.per_program)
            state.fresh = torch.zeros(batch_size, dtype=torch.int32, device=device)
        return state

    def _reset_rows(self, state: GrammarState, rows: torch.Tensor) -> None:
        """Put the rows flagged in ``rows`` back to the start state (a BOS token)."""
        if not bool(rows.any()):
            return
        fresh = self.initial_state(state.batch_size, state.prev.device)
        for name in GrammarState._TENSORS:
            current = getattr(state, name)
            if current is None:
                continue
            mask = rows.view(-1, *([1] * (current.dim() - 1)))
            setattr(state, name, torch.where(mask, getattr(fresh, name), current))

    # ------------------------------------------------------------------ advancing

    def advance(
        self, state: GrammarState, token_ids: torch.LongTensor, check_bos: bool = True
    ) -> GrammarState:
        """State after appending one vocabulary token per row (BPE tokens are walked base by base).

        PAD, MASK and unknown ids change nothing; BOS restarts the row (``check_bos=False``
        skips that check, for tokens sampled under the grammar, which never allows BOS); EOS
        ends the row.
        """
        tables = self.on(token_ids.device)
        expansion = tables["expansion"]  # the last row is the no-op of unknown ids
        vocab = expansion.shape[0] - 1
        ids = token_ids.clamp(max=vocab).masked_fill(token_ids < 0, vocab)
        steps = expansion[ids]
        length = int(tables["expansion_length"][ids].max()) if self.max_expansion > 1 else 1
        for k in range(length):
            self._advance_base(state, steps[:, k], tables, check_bos)
        return state

    def _advance_base(
        self,
        state: GrammarState,
        base: torch.LongTensor,
        tables: dict[str, torch.Tensor],
        check_bos: bool = True,
    ) -> None:
        if check_bos and bool(tables["base_is_bos"][base].any()):
            self._reset_rows(state, tables["base_is_bos"][base])
        update = tables["base_update"][base]
        state.registers = torch.where(update != _KEEP, update, state.registers)
        if self.scheme == "midilike":
            self._advance_notes(state, base, tables)

    def _advance_notes(
        self, state: GrammarState, base: torch.LongTensor, tables: dict[str, torch.Tensor]
    ) -> None:
        rows = torch.nonzero(tables["base_note"][base]).flatten()
        if rows.numel():
            event = base[rows]
            self._note_event(state, rows, tables["base_starts"][event], tables["base_pitch"][event])
        shift = tables["base_shift"][base]
        if bool(shift.any()):
            # every sounding note is now older than the current time
            state.old_count = torch.where(shift.view(-1, 1, 1), state.count, state.old_count)
            state.old_per_program = torch.where(
                shift.unsqueeze(1), state.per_program, state.old_per_program
            )
            state.fresh = state.fresh.masked_fill(shift, 0)

    @staticmethod
    def _note_event(
        state: GrammarState, rows: torch.Tensor, starts: torch.Tensor, pitch: torch.Tensor
    ) -> None:
        """Apply NoteOn (``starts`` 1) / NoteOff (0) events of the given rows to the registers.

        First in, first out: a NoteOff ends the oldest note of its key, an old one if the key
        has one; a NoteOff of a silent key changes nothing. Counts are never negative, so
        ``clamp(max=1)`` reads "is there one" without leaving the integer type.
        """
        program = state.program[rows] + 1
        count = state.count[rows, program, pitch]
        old = state.old_count[rows, program, pitch]
        ends = 1 - starts
        has_old = old.clamp(max=1)
        closes_old = ends * has_old
        closes_fresh = ends * (count.clamp(max=1) - has_old)
        change = starts - closes_old - closes_fresh
        state.count[rows, program, pitch] = count + change
        state.old_count[rows, program, pitch] = old - closes_old
        state.per_program[rows, program] += change
        state.old_per_program[rows, program] -= closes_old
        state.fresh[rows] += starts - closes_fresh

    # ------------------------------------------------------------------ masks

    def _note_closing_cost(
        self, state: GrammarState, tables: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """MIDILike: sounding notes, whether one started now (0/1), and the fewest tokens that
        finish the current state (two per sounding note, a TimeShift for fresh ones, ...)."""
        notes = state.per_program.sum(1)
        fresh = state.fresh.clamp(max=1)
        prev = state.prev
        current = state.old_per_program.gather(1, (state.program + 1).unsqueeze(1)).squeeze(1)
        # after a Program with a closable note, that note's NoteOff is all that is owed
        credit = (current > 0) & (prev == self.type_index["Program"])
        pending = tables["pending_by_state"][prev].masked_fill(credit, -1)
        return notes, fresh, 2 * notes + fresh + pending

    def _pending_cost(self, types: torch.Tensor, tables: dict[str, torch.Tensor]) -> torch.Tensor:
        """MIDILike: tokens owed by the last type alone (a Velocity after NoteOn; a note after a
        Program that closes nothing: NoteOn, [Velocity], TimeShift, NoteOff)."""
        pending = torch.zeros_like(types)
        if self.use_velocities:
            for kind in ("NoteOn", "DrumOn"):
                if kind in self.type_index:
                    pending = torch.where(
                        types == self.type_index[kind], torch.ones_like(pending), pending
                    )
        dangling = 5 if self.use_velocities else 4
        return torch.where(
            types == self.type_index["Program"], torch.full_like(pending, dangling), pending
        )

    def completion_cost(self, state: GrammarState) -> torch.LongTensor:
        """Fewest tokens each row needs before it may end (0: it may end now)."""
        tables = self.on(state.prev.device)
        if self.scheme == "midilike":
            return self._note_closing_cost(state, tables)[2]
        return tables["completion"][state.prev]

    def allowed_tokens(
        self,
        state: GrammarState,
        remaining: torch.Tensor | int | None = None,
        allow_empty: bool = False,
    ) -> torch.BoolTensor:
        """``(batch, vocab)`` mask of the tokens that keep each row valid.

        Args:
            state: the rows' states.
            remaining: tokens each row may still add (``None``: no limit). A token is allowed
                only if the row can still finish within the limit after it; a row already short
                of budget is steered to finish as fast as possible.
            allow_empty: allow EOS before the first note (an empty piece).
        """
        tables = self.on(state.registers.device)
        registers = state.registers
        prev = registers[:, _PREV]
        allowed = tables["by_state"][2 * prev + registers[:, _DRUMS]]
        if self.scheme == "remi":
            allowed &= tables["by_position"][registers[:, _POSITION] + 1, registers[:, _BAR]]
        if self.scheme == "midilike":
            notes, fresh, cost = self._note_closing_cost(state, tables)
            self._apply_note_requirements(allowed, state, tables)
        else:
            cost = tables["completion"][prev]
        ended = prev == self.ended_type
        any_ended = bool(ended.any())
        neutral = tables["neutral_ids"].numel() > 0
        if neutral:
            can_continue = ~ended  # BPE's bare word marker: decodes to nothing, changes nothing
        if remaining is not None:
            if isinstance(remaining, torch.Tensor):
                limit = torch.maximum(remaining.to(cost.device).expand_as(cost), cost) - 1
            else:
                limit = cost.clamp(min=int(remaining)) - 1
            if self.scheme == "midilike":
                # the token-by-token bound matters only near the limit
                if not bool((limit >= 2 * notes + self.max_cost_after).all()):
                    after = self._midilike_cost_after(state, notes, fresh, tables)
                    allowed &= after <= limit.unsqueeze(1)
            elif int(limit.min()) < self.max_cost_after:
                allowed &= tables["completion_after"].unsqueeze(0) <= limit.unsqueeze(1)
            if neutral:
                can_continue &= cost <= limit
        if any_ended:
            allowed &= ~ended.unsqueeze(1)
        if neutral:
            allowed[:, tables["neutral_ids"]] = can_continue.unsqueeze(1)
        can_end = cost <= 0
        if not allow_empty:
            # no empty piece, unless nothing else fits (e.g. no room left for a whole note)
            has_notes = registers[:, _HAS_NOTES] > 0
            if not bool(has_notes.all()):
                can_end &= has_notes | ~allowed.any(1)
        if any_ended:
            can_end |= ended
            allowed[:, tables["pad_ids"]] = ended.unsqueeze(1)
        allowed[:, tables["eos_ids"]] = can_end.unsqueeze(1)
        return allowed

    def _midilike_cost_after(
        self,
        state: GrammarState,
        notes: torch.Tensor,
        fresh: torch.Tensor,
        tables: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """Completion cost after each candidate token (an upper bound for BPE merges)."""
        closable = state.old_per_program > 0  # (batch, programs)
        after = tables["static_cost_after"].unsqueeze(0) + (2 * notes).unsqueeze(1)
        after = after + fresh.unsqueeze(1) * tables["keeps_fresh"].unsqueeze(0)
        # a Program token of a program with a closable note pays for that note's NoteOff
        credit = closable[:, tables["program_token_index"]].long() * tables["program_credit"]
        after[:, tables["program_token_ids"]] += credit
        return after

    def _simple_violations(
        self, state: GrammarState, tables: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """NoteOffs of one note of the current program: True where no (old enough) note sounds."""
        index = (state.program + 1).view(-1, 1, 1).expand(-1, 1, 128)
        old = state.old_count.gather(1, index).squeeze(1)
        if self.simple_all_old:  # every base NoteOff: an old note must sound
            return old[:, tables["simple_pitch"]] < 1
        count = state.count.gather(1, index).squeeze(1)
        pitch = tables["simple_pitch"]
        sounding = torch.where(tables["simple_old"].unsqueeze(0), old[:, pitch], count[:, pitch])
        return sounding < 1

    def _apply_note_requirements(
        self, allowed: torch.Tensor, state: GrammarState, tables: dict[str, torch.Tensor]
    ) -> None:
        """MIDILike: mask the tokens whose NoteOff requirements the sounding notes break."""
        simple = tables["simple_token"]
        if simple.numel() and self.simple_unique:  # one requirement per token: write directly
            allowed[:, simple] &= ~self._simple_violations(state, tables)
            if not tables["req_token"].numel() and not tables["forbid_token"].numel():
                return
            allowed &= ~self._violations(state, tables, simple=False)
            return
        allowed &= ~self._violations(state, tables)

    def _violations(
        self, state: GrammarState, tables: dict[str, torch.Tensor], simple: bool = True
    ) -> torch.Tensor:
        """MIDILike: tokens whose NoteOn / NoteOff requirements the rows' sounding notes break."""
        batch = state.batch_size
        vocab = tables["ok"].shape[0]
        bad = torch.zeros(batch, vocab, dtype=torch.long, device=state.prev.device)
        if simple and tables["simple_token"].numel():
            broken = self._simple_violations(state, tables).long()
            bad.index_add_(1, tables["simple_token"], broken)
        if tables["req_token"].numel():
            program = tables["req_program"].unsqueeze(0).expand(batch, -1)
            program = torch.where(program == _INCOMING_PROGRAM, state.program.unsqueeze(1), program)
            key = (program + 1) * 128 + tables["req_pitch"].unsqueeze(0)
            count = state.count.flatten(1).gather(1, key).long()
            old = state.old_count.flatten(1).gather(1, key).long()
            total = tables["req_total"].unsqueeze(0)
            broken = (old < tables["req_old"].unsqueeze(0)) | (count < total)
            broken |= tables["req_exact"].unsqueeze(0) & (count != total)
            when = tables["req_when"].unsqueeze(0)
            same = tables["req_when_program"].unsqueeze(0) == state.program.unsqueeze(1)
            broken &= (when == _ALWAYS) | ((when == _IF_PROGRAM) == same)
            bad.index_add_(1, tables["req_token"], broken.long())
        if tables["forbid_token"].numel():
            hit = tables["forbid_program"].unsqueeze(0) == state.program.unsqueeze(1)
            bad.index_add_(1, tables["forbid_token"], hit.long())
        return bad > 0

    def describe(self) -> str:
        """One line about the compiled grammar (for logs)."""
        ok = int(self.tables["ok"].sum())
        return (
            f"MidiGrammar({self.scheme}, {self.vocab_size} tokens, {ok} usable, "
            f"longest token {self.max_expansion} base tokens)"
        )


class _MidiLikeWalk:
    """Note bookkeeping while walking one MIDILike token with an unknown incoming state.

    miditok ends the oldest sounding note of a key at a NoteOff, so the token's NoteOffs first
    end the notes of the key that were sounding when the token started (those must exist, and
    be older than the current time if no TimeShift came first), then the token's own notes. A
    NoteOff after the token's own NoteOn of the key is only predictable if the incoming count
    is known exactly, so the token then requires exactly the incoming notes it ends.
    """

    def __init__(self):
        self.ok = True
        self.shifts = 0
        self.delta = 0
        self.has_note_on = False
        self.keys: dict[tuple[int, int], _KeyWalk] = {}

    def _key(self, program: int, pitch: int) -> _KeyWalk:
        return self.keys.setdefault((program, pitch), _KeyWalk())

    def note_on(self, program: int, pitch: int) -> bool:
        self.has_note_on = True
        self.delta += 1
        self._key(program, pitch).opened.append(self.shifts)
        return True

    def note_off(self, program: int, pitch: int) -> bool:
        self.delta -= 1
        key = self._key(program, pitch)
        if key.opened:
            key.exact = True  # the incoming notes must all be ended already
            return key.opened.pop(0) != self.shifts  # zero-length otherwise
        key.ended += 1
        if not self.shifts:
            key.ended_old += 1
        return True

    def time_shift(self) -> None:
        self.shifts += 1

    def fresh_tail(self) -> bool:
        return any(onset == self.shifts for key in self.keys.values() for onset in key.opened)

    @property
    def requirements(self) -> list[tuple[int, int, int, int, int]]:
        """(program, pitch, old notes needed, notes needed, whether exactly) per touched key."""
        return [
            (program, pitch, key.ended_old, key.ended, int(key.exact))
            for (program, pitch), key in self.keys.items()
            if key.ended or key.exact
        ]

    def aliased_programs(self) -> list[int]:
        """Programs whose keys would be the incoming program's keys (the requirements of both
        would then fall on one key): forbidden as incoming program when a NoteOff is involved."""
        incoming = {pitch for (program, pitch) in self.keys if program == _INCOMING_PROGRAM}
        ends = {pitch for (_, pitch), key in self.keys.items() if key.ended or key.exact}
        return sorted(
            {
                program
                for (program, pitch) in self.keys
                if program >= -1 and pitch in incoming and pitch in ends
            }
        )


@dataclass
class _KeyWalk:
    """One (program, pitch) key inside a token: incoming notes ended, the token's own onsets."""

    ended: int = 0
    ended_old: int = 0
    exact: bool = False
    opened: list[int] = field(default_factory=list)
