"""MIDILike (and the ``performance`` preset): NoteOn / NoteOff events and sounding notes.

``NoteOff`` only for a sounding note that started before the current time (no zero-length
note; unisons stack and end first in, first out, as miditok decodes them), and every note is
closed before the sequence ends. The state counts the sounding notes per (program, pitch) and
the old ones among them (started before the last ``TimeShift``), plus running totals so that
no step scans every key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ._compiler import (
    NOTE_OFF_TYPES,
    NOTE_ON_TYPES,
    NUM_PROGRAMS,
    SPECIAL_TYPES,
    TokenSummary,
    split_token,
)
from ._rules import SchemeRules, Tables

if TYPE_CHECKING:
    from ._compiler import CompiledGrammar
    from ._runtime import GrammarState

_INCOMING_PROGRAM = -2  # the key's program is the state's current program
_ALWAYS, _IF_PROGRAM, _UNLESS_PROGRAM = range(3)  # when a note requirement applies
_REQUIREMENT_COLUMNS = (
    "req_token",
    "req_program",
    "req_pitch",
    "req_old",
    "req_total",
    "req_exact",
    "req_when",
    "req_when_program",
)


class MidiLikeRules(SchemeRules):
    """MIDILike: NoteOffs of sounding, old-enough notes; every note closed by the end, within
    the length budget (two tokens per sounding note, a TimeShift for fresh ones, ...)."""

    tokenization = "MIDILike"
    scheme = "midilike"

    def unfinished_types(self, types: set[str]) -> set[str]:
        unfinished = {"Program"}
        if self.use_velocities:
            unfinished |= {"NoteOn", "DrumOn"}
        return unfinished & types

    # ------------------------------------------------------------------ compiling

    def summarize(self, summary: TokenSummary, tokens: list[str], kinds: list[str]) -> None:
        """What the token needs from the sounding notes, and what it leaves sounding.

        If a key of the incoming program may be the same as a key under a Program inside the
        token, the token is walked again with that program coming in, and each walk's
        requirements apply only when the state's program is (or is not) that program.
        """
        walk = _walk_notes(tokens, _INCOMING_PROGRAM)
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
        merged = _walk_notes(tokens, program)
        summary.requirements = tuple((*r, _UNLESS_PROGRAM, program) for r in walk.requirements)
        if merged.ok:
            summary.requirements += tuple((*r, _IF_PROGRAM, program) for r in merged.requirements)
        else:
            summary.forbidden_programs = (program,)

    def compile_tables(
        self, compiled: CompiledGrammar, tables: Tables, summaries: list[TokenSummary]
    ) -> None:
        self.type_index = compiled.type_index
        self.program_type = compiled.type_index["Program"]
        tables.update(self._base_note_tables(compiled.base_tokens))
        tables.update(self._requirement_tables(summaries))
        tables.update(self._cost_tables(tables, len(compiled.types) + 2))
        # the largest cost after a token, less the sounding notes' 2 * notes (+1: fresh)
        self.max_cost_after = int(tables["static_cost_after"].max()) + 1

    @staticmethod
    def _base_note_tables(base_tokens: list[str]) -> Tables:
        """Per base token (+ the no-op entry): note events, their pitch, TimeShifts."""
        kind_of = [split_token(t) for t in base_tokens] + [("PAD", "None")]
        pitch = torch.zeros(len(kind_of), dtype=torch.long)
        note = torch.zeros(len(kind_of), dtype=torch.long)  # +1 note on, -1 note off
        shift = torch.zeros(len(kind_of), dtype=torch.long)
        for i, (kind, value) in enumerate(kind_of):
            if kind in SPECIAL_TYPES:
                continue
            if kind == "TimeShift":
                shift[i] = 1
            if kind in NOTE_ON_TYPES or kind in NOTE_OFF_TYPES:
                pitch[i] = int(value)
                note[i] = 1 if kind in NOTE_ON_TYPES else -1
        return {
            "base_pitch": pitch,
            "base_note": note,
            "base_starts": (note > 0).int(),
            "base_shift": shift > 0,
        }

    def _pending_cost(self, types: torch.Tensor) -> torch.Tensor:
        """Tokens owed by the last type alone (a Velocity after NoteOn; a note after a Program
        that closes nothing: NoteOn, [Velocity], TimeShift, NoteOff)."""
        pending = torch.zeros_like(types)
        if self.use_velocities:
            for kind in ("NoteOn", "DrumOn"):
                if kind in self.type_index:
                    pending = torch.where(
                        types == self.type_index[kind], torch.ones_like(pending), pending
                    )
        dangling = 5 if self.use_velocities else 4
        return torch.where(types == self.program_type, torch.full_like(pending, dangling), pending)

    def _cost_tables(self, tables: Tables, num_states: int) -> Tables:
        """The parts of the completion cost after each token that the token fixes."""
        pending = self._pending_cost(tables["last_type"])
        has_shift = tables["has_time_shift"]
        fresh = torch.where(has_shift, tables["fresh_tail"], tables["has_note_on"]).long()
        programs = torch.nonzero(tables["single_program"]).flatten()
        return {
            "pending_by_state": self._pending_cost(torch.arange(num_states)),
            "static_cost_after": 2 * tables["note_delta"] + pending + fresh,
            "keeps_fresh": (~has_shift & ~tables["has_note_on"]).long(),
            "program_token_ids": programs,
            "program_token_index": tables["new_program"][programs] + 1,
            "program_credit": -1 - pending[programs],
        }

    def _requirement_tables(self, summaries: list[TokenSummary]) -> Tables:
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
        tables = {name: req[:, i].contiguous() for i, name in enumerate(_REQUIREMENT_COLUMNS)}
        tables["req_exact"] = tables["req_exact"].bool()
        tables["forbid_token"] = forb[:, 0].contiguous()
        tables["forbid_program"] = forb[:, 1].contiguous()
        tables["simple_token"] = simple_table[:, 0].contiguous()
        tables["simple_pitch"] = simple_table[:, 2].contiguous()
        tables["simple_old"] = simple_table[:, 3].bool()
        self.simple_unique = len(set(simple_table[:, 0].tolist())) == len(simple_table)
        self.simple_all_old = bool(tables["simple_old"].all())
        return tables

    # ------------------------------------------------------------------ runtime

    def init_state(self, state: GrammarState, batch_size: int, device: torch.device) -> None:
        shape = (batch_size, NUM_PROGRAMS, 128)
        # int32 throughout, so that the per-token updates never convert types
        state.count = torch.zeros(shape, dtype=torch.int32, device=device)
        state.old_count = torch.zeros_like(state.count)
        state.per_program = torch.zeros(batch_size, NUM_PROGRAMS, dtype=torch.int32, device=device)
        state.old_per_program = torch.zeros_like(state.per_program)
        state.fresh = torch.zeros(batch_size, dtype=torch.int32, device=device)

    def advance(self, state: GrammarState, base: torch.LongTensor, tables: Tables) -> None:
        rows = torch.nonzero(tables["base_note"][base]).flatten()
        if rows.numel():
            event = base[rows]
            _note_event(state, rows, tables["base_starts"][event], tables["base_pitch"][event])
        shift = tables["base_shift"][base]
        if bool(shift.any()):
            # every sounding note is now older than the current time
            state.old_count = torch.where(shift.view(-1, 1, 1), state.count, state.old_count)
            state.old_per_program = torch.where(
                shift.unsqueeze(1), state.per_program, state.old_per_program
            )
            state.fresh = state.fresh.masked_fill(shift, 0)

    def _note_closing_cost(
        self, state: GrammarState, tables: Tables
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sounding notes, whether one started now (0/1), and the fewest tokens that finish
        the current state (two per sounding note, a TimeShift for fresh ones, ...)."""
        notes = state.per_program.sum(1)
        fresh = state.fresh.clamp(max=1)
        prev = state.prev
        current = state.old_per_program.gather(1, (state.program + 1).unsqueeze(1)).squeeze(1)
        # after a Program with a closable note, that note's NoteOff is all that is owed
        credit = (current > 0) & (prev == self.program_type)
        pending = tables["pending_by_state"][prev].masked_fill(credit, -1)
        return notes, fresh, 2 * notes + fresh + pending

    def completion_cost(self, state: GrammarState, tables: Tables) -> torch.LongTensor:
        return self._note_closing_cost(state, tables)[2]

    def restrict(
        self, allowed: torch.Tensor, state: GrammarState, prev: torch.Tensor, tables: Tables
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        notes, fresh, cost = self._note_closing_cost(state, tables)
        self._apply_note_requirements(allowed, state, tables)
        return cost, (notes, fresh)

    def restrict_to_budget(
        self,
        allowed: torch.Tensor,
        state: GrammarState,
        limit: torch.Tensor,
        aux: tuple[torch.Tensor, torch.Tensor],
        tables: Tables,
    ) -> None:
        notes, fresh = aux
        # the token-by-token bound matters only near the limit
        if not bool((limit >= 2 * notes + self.max_cost_after).all()):
            after = self._cost_after(state, notes, fresh, tables)
            allowed &= after <= limit.unsqueeze(1)

    @staticmethod
    def _cost_after(
        state: GrammarState, notes: torch.Tensor, fresh: torch.Tensor, tables: Tables
    ) -> torch.Tensor:
        """Completion cost after each candidate token (an upper bound for BPE merges)."""
        closable = state.old_per_program > 0  # (batch, programs)
        after = tables["static_cost_after"].unsqueeze(0) + (2 * notes).unsqueeze(1)
        after = after + fresh.unsqueeze(1) * tables["keeps_fresh"].unsqueeze(0)
        # a Program token of a program with a closable note pays for that note's NoteOff
        credit = closable[:, tables["program_token_index"]].long() * tables["program_credit"]
        after[:, tables["program_token_ids"]] += credit
        return after

    def _simple_violations(self, state: GrammarState, tables: Tables) -> torch.Tensor:
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
        self, allowed: torch.Tensor, state: GrammarState, tables: Tables
    ) -> None:
        """Mask the tokens whose NoteOff requirements the sounding notes break."""
        simple = tables["simple_token"]
        if simple.numel() and self.simple_unique:  # one requirement per token: write directly
            allowed[:, simple] &= ~self._simple_violations(state, tables)
            if not tables["req_token"].numel() and not tables["forbid_token"].numel():
                return
            allowed &= ~self._violations(state, tables, simple=False)
            return
        allowed &= ~self._violations(state, tables)

    def _violations(self, state: GrammarState, tables: Tables, simple: bool = True) -> torch.Tensor:
        """Tokens whose NoteOn / NoteOff requirements the rows' sounding notes break."""
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


def _note_event(
    state: GrammarState, rows: torch.Tensor, starts: torch.Tensor, pitch: torch.Tensor
) -> None:
    """Apply NoteOn (``starts`` 1) / NoteOff (0) events of the given rows to the registers.

    First in, first out: a NoteOff ends the oldest note of its key, an old one if the key has
    one; a NoteOff of a silent key changes nothing. Counts are never negative, so
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


def _walk_notes(tokens: list[str], program: int) -> _NoteWalk:
    """Note events of one token, from an incoming program (or unknown)."""
    walk = _NoteWalk()
    for token in tokens:
        kind, value = split_token(token)
        if kind == "Program":
            program = int(value)
        elif kind in NOTE_ON_TYPES:
            walk.note_on(program, int(value))
        elif kind in NOTE_OFF_TYPES:
            walk.ok &= walk.note_off(program, int(value))
        elif kind == "TimeShift":
            walk.time_shift()
    return walk


class _NoteWalk:
    """Note bookkeeping while walking one token with an unknown incoming state.

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

    def note_on(self, program: int, pitch: int) -> None:
        self.has_note_on = True
        self.delta += 1
        self._key(program, pitch).opened.append(self.shifts)

    def note_off(self, program: int, pitch: int) -> bool:
        """Whether the NoteOff can be valid (False: it ends the token's own note at once)."""
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
