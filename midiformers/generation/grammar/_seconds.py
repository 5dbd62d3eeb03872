"""Pieces of about S seconds (``MidiGrammar.with_max_seconds``).

A state that keeps time holds ``clock``: ``(batch, 10)`` float64 columns: the current time in
seconds ``T`` (REMI: of the current position), the tempo (quarter notes per minute, 120 before
any Tempo token, as miditok decodes), the meter's denominator (4 before any TimeSig; miditok
counts time in beats of it, so a beat lasts ``60 / tempo * 4 / denominator`` seconds), the REMI
position and bar length (positions), whether a REMI Bar has started, the latest note end in
seconds, ``done`` and the time of the last Tempo token (one tempo per time: miditok decodes
several at one tick in no reliable order) and the musical tokens so far (for the pace).

Time moves with TimeShift tokens (TSD, MIDILike, performance, Structured) or Bar / Position
tokens (REMI). With ``max_seconds = S``:

* every note ends by ``S`` (a Duration may not reach past it; MIDILike notes close at the
  current time, which never passes it); a Tempo token stretches the notes still sounding
  (their ticks are fixed), so a slower tempo is refused when they would then end after ``S``;
* time only moves while a note can still start and end by ``S`` afterwards: ``T + room <= S``,
  ``room`` the shortest note in seconds at the current tempo (the shortest Duration, or, for
  MIDILike, two of the shortest TimeShift: one to get past the NoteOn, one to spare; one when
  a note is sounding); a Tempo or TimeSig is refused when it would break that, and a note (or
  a Program token leading to one) may only start when it can end in time;
* EOS waits for ``done``: the latest note ends within one beat (at the current tempo and
  meter) of ``S``; once a row is done, a Tempo or TimeSig that would undo it (a faster tempo
  shortens the notes still sounding, a shorter beat narrows the margin) is refused. So the
  decoded piece ends between ``S`` minus one beat and ``S``;
* under a length budget, a row that cannot end yet and has few tokens left starts no note that
  cannot end within that beat, so time moves on (:meth:`Clock.hurry`: a rough count, no
  guarantee: a budget too small for the music still ends the piece early).

BPE vocabularies are refused (a merged token moves time by an amount that depends on the
tempo in force, not modelled here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ._compiler import NOTE_OFF_TYPES, NOTE_ON_TYPES, UnsupportedGrammarError, split_token

if TYPE_CHECKING:
    from ._compiler import CompiledGrammar
    from ._runtime import GrammarState

_T, _TEMPO, _DEN, _POS, _BARLEN, _STARTED, _END, _DONE, _TEMPO_AT, _TOKENS = range(10)
_OTHER, _SHIFT, _BAR, _POSITION, _TEMPO_TOKEN, _TIMESIG, _DURATION, _NOTE_ON, _NOTE_OFF = range(9)
_PROGRAM = 9
DEFAULT_TEMPO = 120.0
_EPS = 1e-9


def _beats(value: str) -> float:
    """``"beats.steps.resolution"`` -> beats."""
    beats, steps, resolution = map(int, value.split("."))
    return beats + steps / resolution


class Clock:
    """Time bookkeeping of one compiled grammar: per-token tables and the rules above."""

    def __init__(self, compiled: CompiledGrammar):
        tok = compiled.miditok
        if tok.is_trained:
            raise UnsupportedGrammarError(
                "max_seconds does not support BPE vocabularies yet (a merged token moves time "
                "by an amount that depends on the tempo); use a tokenizer without BPE, or "
                "max_bars / max_new_tokens."
            )
        rules = compiled.rules
        self.has_bars = rules.has_bars
        self.positions_per_beat = rules.positions_per_beat if rules.has_bars else 1
        self.default_bar = float(rules.default_bar_length) if rules.has_bars else 0.0
        self.note_off = any(kind in compiled.type_index for kind in NOTE_OFF_TYPES)
        kinds, values = [], []
        for token in [*compiled.base_tokens, "PAD_None"]:  # + the no-op row
            kind, value = split_token(token)
            code, number = _OTHER, 0.0
            if kind == "TimeShift":
                code, number = _SHIFT, _beats(value)
            elif kind == "Bar":
                code = _BAR
            elif kind == "Position":
                code, number = _POSITION, float(value)
            elif kind == "Tempo":
                code, number = _TEMPO_TOKEN, float(value)
            elif kind == "TimeSig":
                code, number = _TIMESIG, float(value.split("/")[1])
                values.append(number)
                kinds.append(code)
                continue
            elif kind == "Duration":
                code, number = _DURATION, _beats(value)
            elif kind == "Program":
                code, number = _PROGRAM, float(value)
            elif kind in NOTE_ON_TYPES:
                code = _NOTE_ON
            elif kind in NOTE_OFF_TYPES:
                code = _NOTE_OFF
            kinds.append(code)
            values.append(number)
        bar_lengths = [
            float(rules.positions_per_bar(*map(int, split_token(t)[1].split("/"))))
            if split_token(t)[0] == "TimeSig" and rules.has_bars
            else 0.0
            for t in [*compiled.base_tokens, "PAD_None"]
        ]
        durations = [v for k, v in zip(kinds, values) if k == _DURATION]
        shifts = [v for k, v in zip(kinds, values) if k == _SHIFT and v > 0]
        if not durations and not shifts and not rules.has_bars:
            raise UnsupportedGrammarError("max_seconds needs TimeShift or Bar/Position tokens.")
        if durations:
            self.room, self.room_sounding = min(durations), min(durations)
        else:  # MIDILike: a note needs a TimeShift after its NoteOn
            self.room, self.room_sounding = 2 * min(shifts), min(shifts)
        self.max_note = max(durations or shifts)  # beats the longest note can last
        self.max_shift = max(shifts, default=0.0)
        self.cpu_tables = {
            "kind": torch.tensor(kinds, dtype=torch.long),
            "value": torch.tensor(values, dtype=torch.float64),
            "bar_length": torch.tensor(bar_lengths, dtype=torch.float64),
        }
        self._device_tables: dict[torch.device, dict[str, torch.Tensor]] = {}

    def on(self, device: torch.device) -> dict[str, torch.Tensor]:
        device = torch.device(device)
        if device not in self._device_tables:
            self._device_tables[device] = {k: v.to(device) for k, v in self.cpu_tables.items()}
        return self._device_tables[device]

    def initial_clock(self, batch_size: int, device: torch.device) -> torch.Tensor:
        clock = torch.zeros(batch_size, 10, dtype=torch.float64, device=device)
        clock[:, _TEMPO] = DEFAULT_TEMPO
        clock[:, _DEN] = 4.0
        clock[:, _BARLEN] = self.default_bar
        clock[:, _TEMPO_AT] = -1.0
        return clock

    @staticmethod
    def _beat(tempo: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
        """Seconds of one beat of the meter's denominator."""
        return 60.0 / tempo * 4.0 / denominator

    def advance(self, state: GrammarState, base: torch.LongTensor, max_seconds: float) -> None:
        tables = self.on(base.device)
        kind, value = tables["kind"][base], tables["value"][base]
        clock = state.clock
        t, tempo, den = clock[:, _T], clock[:, _TEMPO], clock[:, _DEN]
        pos, barlen, started, end = (
            clock[:, _POS],
            clock[:, _BARLEN],
            clock[:, _STARTED],
            clock[:, _END],
        )
        beat = self._beat(tempo, den)
        per_position = beat / self.positions_per_beat
        t = torch.where(kind == _SHIFT, t + value * beat, t)
        t = torch.where(kind == _POSITION, t + (value - pos) * per_position, t)
        t = torch.where(kind == _BAR, t + started * (barlen - pos) * per_position, t)
        pos = torch.where(kind == _POSITION, value, torch.where(kind == _BAR, 0.0, pos))
        started = torch.where(kind == _BAR, 1.0, started)
        is_tempo = kind == _TEMPO_TOKEN
        ringing = (end - t).clamp(min=0) * tempo / value.clamp(min=1.0)  # at the new tempo
        end = torch.where(is_tempo & (end > t), t + ringing, end)
        tempo = torch.where(is_tempo, value, tempo)
        tempo_at = torch.where(is_tempo, t, clock[:, _TEMPO_AT])
        tokens = clock[:, _TOKENS] + (kind != _OTHER).double()  # musical tokens so far
        den = torch.where(kind == _TIMESIG, value, den)
        barlen = torch.where(kind == _TIMESIG, tables["bar_length"][base], barlen)
        end = torch.where(kind == _DURATION, torch.maximum(end, t + value * beat), end)
        end = torch.where(kind == _NOTE_OFF, torch.maximum(end, t), end)
        beat = self._beat(tempo, den)
        done = end >= max_seconds - beat - _EPS
        state.clock = torch.stack(
            [t, tempo, den, pos, barlen, started, end, done.double(), tempo_at, tokens], dim=1
        )

    def restrict(self, allowed: torch.Tensor, state: GrammarState, max_seconds: float) -> None:
        """Mask (in place) the tokens that move time, start or hold notes past the limits."""
        tables = self.on(allowed.device)
        vocab = tables["kind"].shape[0] - 1
        kind, value = tables["kind"][:vocab].unsqueeze(0), tables["value"][:vocab].unsqueeze(0)
        clock = state.clock
        t, tempo, den = (clock[:, c].unsqueeze(1) for c in (_T, _TEMPO, _DEN))
        pos, barlen, started = (clock[:, c].unsqueeze(1) for c in (_POS, _BARLEN, _STARTED))
        end = clock[:, _END].unsqueeze(1)
        beat = self._beat(tempo, den)
        per_position = beat / self.positions_per_beat
        limit = max_seconds + _EPS
        room = torch.full_like(t, self.room)
        if self.note_off and state.count is not None:  # MIDILike: a sounding note needs less
            sounding = state.count.flatten(1).sum(1) > 0
            room = torch.where(sounding.unsqueeze(1), self.room_sounding, room)
        moved = torch.where(kind == _SHIFT, t + value * beat, t)
        moved = torch.where(kind == _POSITION, t + (value - pos) * per_position, moved)
        moved = torch.where(kind == _BAR, t + started * (barlen - pos) * per_position, moved)
        moves = (kind == _SHIFT) | (kind == _POSITION) | (kind == _BAR)
        ok = ~moves | (moved + room * beat <= limit)
        ok &= (kind != _DURATION) | (t + value * beat <= limit)
        notes_fit = t + self.room * beat <= limit  # (batch, 1): a new note can end in time
        ok &= (kind != _NOTE_ON) | notes_fit
        # a Program leads to a note: a new one, or (MIDILike) the NoteOff of a sounding one
        program_ok = notes_fit.expand(-1, vocab)
        if self.note_off and state.old_per_program is not None:
            index = (tables["value"][:vocab].long() + 1).clamp(min=0)
            index = torch.where(tables["kind"][:vocab] == _PROGRAM, index, 0)
            program_ok = program_ok | (state.old_per_program[:, index] > 0)
        ok &= (kind != _PROGRAM) | program_ok
        new_beat = torch.where(
            kind == _TEMPO_TOKEN,
            self._beat(value.clamp(min=1.0), den),
            self._beat(tempo, value.clamp(min=1.0)),
        )
        changes = (kind == _TEMPO_TOKEN) | (kind == _TIMESIG)
        ok &= ~changes | (t + self.room * new_beat <= limit)
        ringing = (end - t).clamp(min=0) * tempo / value.clamp(min=1.0)
        ok &= (kind != _TEMPO_TOKEN) | (t + ringing <= limit)  # notes sounding slow down too
        # one tempo per time: miditok decodes several at one tick in no reliable order
        ok &= (kind != _TEMPO_TOKEN) | (clock[:, _TEMPO_AT].unsqueeze(1) != t)
        # a row that may end keeps that: no Tempo or TimeSig that takes it away
        new_end = torch.where((kind == _TEMPO_TOKEN) & (end > t), t + ringing, end)
        keeps = new_end >= max_seconds - new_beat - _EPS
        done = clock[:, _DONE].unsqueeze(1) > 0
        ok &= ~changes | ~done | keeps
        allowed[:, :vocab] &= ok

    def hurry(
        self, allowed: torch.Tensor, state: GrammarState, max_seconds: float, limit: torch.Tensor
    ) -> None:
        """Under a length budget: rows that may not end yet and have few tokens left for the
        way to the end (fewer than the rest of the way at the pace so far, or than four times a
        rough count of the fewest tokens, + 16) start no new note (no Program, no
        note-on) unless it can end within a beat of the limit, and change no tempo or meter,
        so time moves on."""
        tables = self.on(allowed.device)
        vocab = tables["kind"].shape[0] - 1
        clock = state.clock
        t, tempo, den = clock[:, _T], clock[:, _TEMPO], clock[:, _DEN]
        beat = self._beat(tempo, den)
        target = max_seconds - beat  # a note must end after this
        reach = t + self.max_note * beat  # the latest a note starting now can end
        if self.has_bars:
            step = clock[:, _BARLEN] / self.positions_per_beat * beat
        else:
            step = self.max_shift * beat
        moves = ((target - reach) / step.clamp(min=1e-6)).clamp(min=0).ceil()
        need = moves + 5  # + a Position / TimeShift, Program, note-on, Velocity, Duration
        if self.note_off and state.count is not None:  # + Program and NoteOff per sounding note
            need = need + 2 * state.count.flatten(1).sum(1).double()
        # the pace so far: tokens per second; the rest of the way at that pace must fit
        pace = clock[:, _TOKENS] / t.clamp(min=beat)
        need = torch.maximum(4 * need + 16, pace * (target - t))
        hurry = (clock[:, _DONE] <= 0) & (reach < target) & (limit.double() < need)
        if not bool(hurry.any()):
            return
        kind = tables["kind"][:vocab]
        starts = (kind == _PROGRAM) | (kind == _NOTE_ON) | (kind == _TEMPO_TOKEN)
        starts |= kind == _TIMESIG
        others = allowed[:, :vocab] & ~starts.unsqueeze(0)
        hurry &= others.any(1)  # never leave a row without a token
        allowed[:, :vocab] &= ~(hurry.unsqueeze(1) & starts.unsqueeze(0))

    @staticmethod
    def done(state: GrammarState) -> torch.Tensor:
        """Rows whose latest note ends within a beat of the limit (EOS may come)."""
        return state.clock[:, _DONE] > 0

    @staticmethod
    def elapsed(state: GrammarState) -> torch.Tensor:
        """Seconds the rows have reached."""
        return state.clock[:, _T]
