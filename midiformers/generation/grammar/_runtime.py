"""The runtime shared by every scheme: states of a batch, advancing them, the allowed-token mask.

Everything here is tensor indexing over the compiled tables: nothing loops over the
vocabulary at generation time. The scheme's rules object adds its own masks and bookkeeping.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterable
from typing import Any

import miditok
import torch

from ._bars import BarCounter
from ._compiler import (
    BAR,
    DRUMS,
    EOS,
    HAS_NOTES,
    KEEP,
    NUM_PROGRAMS,
    PAD,
    POSITION,
    PREV,
    PROGRAM,
    CompiledGrammar,
    UnsupportedGrammarError,
)
from ._programs import ProgramTables, resolve_programs, restrict_programs
from ._rules import SchemeRules
from ._seconds import Clock

_GRAMMARS: dict[int, tuple] = {}  # id(miditok tokenizer) -> (weak ref, vocabulary, grammar)


class GrammarState:
    """Registers of a batch of partial sequences (one row per sequence).

    ``prev`` is the type of the last token (or the start / ended pseudo-types), ``has_notes``
    whether a note has started (EOS waits for one), ``program`` the current program
    (``drums``: whether it is ``Program_-1``), ``position`` / ``bar`` the REMI bar position and
    the index of the bar size in the REMI rules' ``bar_lengths``. The scalar registers live in
    one ``(batch, registers)`` tensor, updated by one lookup per token. MIDILike states also
    hold ``count`` / ``old_count``, ``per_program`` / ``old_per_program`` and ``fresh`` (the
    sounding notes, see :mod:`.midilike`); states that count bars hold ``bars`` (see
    :mod:`._bars`), states that keep time ``clock`` (see :mod:`._seconds`); MMM states hold
    ``tracks`` and ``holes`` (see :mod:`.mmm`).
    """

    _TENSORS = (
        "registers",
        "count",
        "old_count",
        "per_program",
        "old_per_program",
        "fresh",
        "bars",
        "clock",
        "tracks",
        "holes",
    )

    def __init__(self, **tensors: torch.Tensor | None):
        for name in self._TENSORS:
            setattr(self, name, tensors.get(name))

    prev = property(lambda self: self.registers[:, PREV])
    program = property(lambda self: self.registers[:, PROGRAM])
    position = property(lambda self: self.registers[:, POSITION])
    bar = property(lambda self: self.registers[:, BAR])
    has_notes = property(lambda self: self.registers[:, HAS_NOTES] > 0)
    drums = property(lambda self: self.registers[:, DRUMS] > 0)

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
    """Tensor tables of a tokenizer's grammar (see :mod:`midiformers.generation.grammar`).

    Args:
        tokenizer: a :class:`~midiformers.MidiTokenizer` (or anything with a ``miditok``
            attribute and ``len()``) using REMI, TSD, MIDILike or Structured, optionally with a
            trained BPE vocabulary.

    Raises:
        UnsupportedGrammarError: another miditok scheme, or options the grammar does not model
            (rests, chords, pedals, pitch bends, control changes, pitch intervals, bar-end tokens).

    ``grammar.with_max_bars(n)`` is the same grammar for pieces of exactly ``n`` bars.
    """

    max_bars: int | None = None
    """Bars of every piece (``None``: any number), see :meth:`with_max_bars`."""
    max_seconds: float | None = None
    """Seconds every piece lasts, about (``None``: any), see :meth:`with_max_seconds`."""
    programs: tuple[int, ...] | None = None
    """The programs notes may use (``None``: any), see :meth:`with_programs`."""
    controls: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    """Control token ids forced in every track and bar (``None``: none), see
    :meth:`with_controls`."""
    _program_masks: dict[torch.device, dict[str, torch.Tensor]] | None = None
    _control_tables: dict[torch.device, dict[str, torch.Tensor]] | None = None

    def __init__(self, tokenizer: Any):
        self.miditok: miditok.MusicTokenizer = getattr(tokenizer, "miditok", tokenizer)
        self.rules = SchemeRules.for_tokenizer(self.miditok)
        self.scheme = self.rules.scheme
        compiled = CompiledGrammar(self.miditok, self.rules)
        self.compiled = compiled
        self.base_vocab = compiled.base_vocab
        self.vocab_size = compiled.vocab_size
        self.max_expansion = compiled.max_expansion
        self.start_type = compiled.start_type
        self.ended_type = compiled.ended_type
        self.special_ids = compiled.special_ids
        self.bars = BarCounter(compiled) if self.rules.has_bars else None
        self.tables = compiled.tables
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

    def with_max_bars(self, max_bars: int | None) -> MidiGrammar:
        """This grammar for pieces of exactly ``max_bars`` bars (sharing the compiled tables).

        No token may start bar ``max_bars + 1``; EOS waits until bar ``max_bars`` has started
        and holds a note; no Duration lets a note sound past the end of bar ``max_bars``;
        under a length budget the piece is steered to reach it in time. The bars of every
        token count, prompt and ``context_ids`` included. Notes may ring into later bars as
        long as they end in time in the current meter; a TimeSig that would shorten the bars
        too much for the notes still sounding is refused.

        Raises:
            UnsupportedGrammarError: the scheme has no Bar tokens (only REMI and MMM have
                them; MMM counts the bars of each track).
            ValueError: ``max_bars`` is not a positive integer.
        """
        if max_bars is not None:
            if self.bars is None:
                raise UnsupportedGrammarError(
                    f"max_bars needs a tokenization with Bar tokens (REMI); "
                    f"{type(self.miditok).__name__} has none: limit the length with "
                    "max_new_tokens instead."
                )
            if isinstance(max_bars, bool) or not isinstance(max_bars, int) or max_bars < 1:
                raise ValueError(f"max_bars must be a positive integer, got {max_bars!r}.")
            if self.max_seconds is not None:
                raise ValueError("Give max_bars or max_seconds, not both.")
        if max_bars == self.max_bars:
            return self
        view = copy.copy(self)
        view.max_bars = max_bars
        return view

    def with_max_seconds(self, max_seconds: float | None) -> MidiGrammar:
        """This grammar for pieces of about ``max_seconds`` seconds (sharing the compiled tables).

        Time is read from TimeShift tokens (TSD, MIDILike, performance, Structured) or Bar and
        Position tokens (REMI), at the tempo of the Tempo tokens (120 bpm before any) in beats
        of the current meter. Every note ends by ``max_seconds``; time only moves while a note
        can still fit; EOS waits until a note ends within one beat (at the tempo and meter then)
        of ``max_seconds``. So the decoded piece ends between ``max_seconds`` minus one beat and
        ``max_seconds``, unless the length budget runs out first (rows falling behind the pace
        the budget allows start fewer notes, see :meth:`._seconds.Clock.hurry`). The prompt and
        ``context_ids`` count. See :mod:`._seconds`.

        Raises:
            UnsupportedGrammarError: a BPE vocabulary (not modelled yet).
            ValueError: ``max_seconds`` is not a positive number.
        """
        if max_seconds is not None:
            if (
                isinstance(max_seconds, bool)
                or not isinstance(max_seconds, (int, float))
                or not 0 < max_seconds < float("inf")
            ):
                raise ValueError(
                    f"max_seconds must be a positive number of seconds, got {max_seconds!r}."
                )
            if not self.rules.keeps_time:
                raise UnsupportedGrammarError(
                    f"max_seconds is not modelled for the {self.scheme} scheme; use max_bars "
                    "or max_new_tokens."
                )
            self._clock()  # refuses what it cannot model
            if self.max_bars is not None:
                raise ValueError("Give max_bars or max_seconds, not both.")
            max_seconds = float(max_seconds)
        if max_seconds == self.max_seconds:
            return self
        view = copy.copy(self)
        view.max_seconds = max_seconds
        return view

    def _clock(self) -> Clock:
        clock = getattr(self.compiled, "clock", None)
        if clock is None:
            clock = self.compiled.clock = Clock(self.compiled)
        return clock

    def with_programs(self, programs: Iterable[int | str] | None) -> MidiGrammar:
        """This grammar with notes only for ``programs`` (sharing the compiled tables).

        ``programs``: General MIDI program numbers (0-127, -1 for drums) or instrument names
        (``"Acoustic Grand Piano"``, ``"drums"``; case-insensitive). Every token holding a
        ``Program`` outside the set is masked (BPE merges included), and so is a note played
        with an incoming program outside it (0 before any Program token). Prompt notes of
        other programs are kept (MIDILike: one still sounding gets its NoteOff).

        Raises:
            ValueError: an unknown name or number, a program without a Program token, or an
                empty set.
        """
        if programs is None:
            resolved = None
        else:
            tables = self._program_tables()
            if not tables.available:
                raise UnsupportedGrammarError(
                    f"programs needs a tokenizer with Program tokens (use_programs=True); "
                    f"this {type(self.miditok).__name__} tokenizer has none."
                )
            resolved = resolve_programs(programs, tables.available)
        if resolved == self.programs:
            return self
        view = copy.copy(self)
        view.programs = resolved
        view._program_masks = {} if resolved is not None else None
        return view

    def with_controls(
        self, track_ids: Iterable[int] = (), bar_ids: Iterable[int] = ()
    ) -> MidiGrammar:
        """This grammar with attribute-control tokens forced (sharing the compiled tables).

        ``track_ids`` come right after every track's ``Program``, in this order; ``bar_ids``
        open every bar that gets notes, where miditok writes them (after ``Bar TimeSig`` and a
        tempo change at the bar's start), in this order. Any other control token is masked.
        Empty sequences (or both empty) force nothing; ``with_controls()`` removes controls.

        Raises:
            UnsupportedGrammarError: the scheme has no attribute controls (only MMM).
            ValueError: an id that is not a track-level (bar-level) control token.
        """
        track_ids, bar_ids = tuple(int(i) for i in track_ids), tuple(int(i) for i in bar_ids)
        controls = (track_ids, bar_ids) if track_ids or bar_ids else None
        if controls is not None:
            self.rules.control_tables(*controls)  # checks the ids
        if controls == self.controls:
            return self
        view = copy.copy(self)
        view.controls = controls
        view._control_tables = {} if controls is not None else None
        return view

    def _program_tables(self) -> ProgramTables:
        tables = getattr(self.compiled, "program_tables", None)
        if tables is None:
            tables = self.compiled.program_tables = ProgramTables(self.compiled)
        return tables

    def _programs_on(self, device: torch.device) -> dict[str, torch.Tensor]:
        if device not in self._program_masks:
            masks = self._program_tables().masks(self.programs)
            self._program_masks[device] = {k: v.to(device) for k, v in masks.items()}
        return self._program_masks[device]

    # ------------------------------------------------------------------ tensors

    def on(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The tables on ``device`` (copied once per device)."""
        device = torch.device(device)
        if device not in self._device_tables:
            self._device_tables[device] = {k: v.to(device) for k, v in self.tables.items()}
        if self.controls is None:
            return self._device_tables[device]
        if device not in self._control_tables:
            forced = self.rules.control_tables(*self.controls)
            self._control_tables[device] = {
                **self._device_tables[device],
                **{k: v.to(device) for k, v in forced.items()},
            }
        return self._control_tables[device]

    @property
    def eos_ids(self) -> list[int]:
        """Vocabulary ids that end a sequence."""
        return self.special_ids[EOS]

    @property
    def pad_ids(self) -> list[int]:
        """Vocabulary ids of padding."""
        return self.special_ids[PAD]

    @property
    def num_programs(self) -> int:
        return NUM_PROGRAMS

    def initial_state(self, batch_size: int, device: torch.device) -> GrammarState:
        """The state before any token (the start of a piece)."""
        values = [self.start_type, 0, -1, 0, 0, 0]
        for register, value in self.rules.initial_registers().items():
            values[register] = value
        registers = torch.tensor(values, dtype=torch.long, device=device)
        state = GrammarState(registers=registers.repeat(batch_size, 1))
        self.rules.init_state(state, batch_size, device)
        if self.max_bars is not None:
            state.bars = self.bars.initial_bars(batch_size, device)
        if self.max_seconds is not None:
            state.clock = self._clock().initial_clock(batch_size, device)
        return state

    def _reset_rows(self, state: GrammarState, rows: torch.Tensor) -> None:
        """Put the rows flagged in ``rows`` back to the start state (a BOS token)."""
        if not bool(rows.any()):
            return
        fresh = self.initial_state(state.batch_size, state.prev.device)
        if state.bars is not None and fresh.bars is None:
            fresh.bars = self.bars.initial_bars(state.batch_size, state.bars.device)
        if state.clock is not None and fresh.clock is None:
            fresh.clock = self._clock().initial_clock(state.batch_size, state.clock.device)
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
        state.registers = torch.where(update != KEEP, update, state.registers)
        self.rules.advance(state, base, tables)
        if state.bars is not None:
            BarCounter.advance(state, base, tables)
        if state.clock is not None:
            self._clock().advance(state, base, self.max_seconds or float("inf"))

    # ------------------------------------------------------------------ masks

    def completion_cost(self, state: GrammarState) -> torch.LongTensor:
        """Fewest tokens each row needs before it may end (0: it may end now)."""
        tables = self.on(state.prev.device)
        if self.max_bars is not None:
            cost, left = self.bars.row_cost(self._counting(state), self.max_bars)
            extra = self.rules.extra_cost(state, tables, left)
            return cost if extra is None else cost + extra
        return self.rules.completion_cost(state, tables)

    def _counting(self, state: GrammarState) -> GrammarState:
        if state.bars is None:
            raise ValueError(
                "This state does not count bars: build it with the grammar of with_max_bars()."
            )
        return state

    def _timed(self, state: GrammarState) -> GrammarState:
        if state.clock is None:
            raise ValueError(
                "This state does not keep time: build it with the grammar of with_max_seconds()."
            )
        return state

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
        prev = registers[:, PREV]
        allowed = tables["by_state"][2 * prev + registers[:, DRUMS]]
        cost, aux = self.rules.restrict(allowed, state, prev, tables)
        if self.programs is not None:
            closable = state.old_per_program > 0 if state.old_per_program is not None else None
            masks = self._programs_on(allowed.device)
            restrict_programs(allowed, registers[:, PROGRAM], masks, closable)
        if self.max_seconds is not None:
            self._clock().restrict(allowed, self._timed(state), self.max_seconds)
        if self.max_bars is not None:
            cost, bars_left = self.bars.restrict(
                allowed, self._counting(state), self.max_bars, tables
            )
            extra = self.rules.extra_cost(state, tables, bars_left)
            if extra is not None:
                cost = cost + extra
            self.rules.restrict_bar_ends(allowed, state, bars_left, tables)
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
            self.rules.restrict_to_budget(allowed, state, limit, aux, tables)
            if self.max_bars is not None:
                self.bars.restrict_to_budget(
                    allowed,
                    state,
                    self.max_bars,
                    limit,
                    bars_left,
                    tables,
                    self.rules.extra_cost_after(state, tables, bars_left),
                )
            if self.max_seconds is not None:
                self._clock().hurry(allowed, state, self.max_seconds, limit)
            if neutral:
                can_continue &= cost <= limit
        if any_ended:
            allowed &= ~ended.unsqueeze(1)
        if neutral:
            allowed[:, tables["neutral_ids"]] = can_continue.unsqueeze(1)
        can_end = cost <= 0
        if self.max_seconds is not None:  # EOS near the limit (or when nothing else fits)
            others = allowed.clone()
            others[:, tables["eos_ids"]] = False
            can_end &= self._clock().done(state) | ~others.any(1)
        if not allow_empty:
            # no empty piece, unless nothing else fits (e.g. no room left for a whole note)
            has_notes = registers[:, HAS_NOTES] > 0
            if not bool(has_notes.all()):
                can_end &= has_notes | ~allowed.any(1)
        if any_ended:
            can_end |= ended
            allowed[:, tables["pad_ids"]] = ended.unsqueeze(1)
        allowed[:, tables["eos_ids"]] = can_end.unsqueeze(1)
        return allowed
