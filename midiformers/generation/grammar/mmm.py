"""MMM: multi-track REMI with attribute controls and bar infilling (the ``mmm`` preset).

A piece is a sequence of tracks, then (when some bars were masked) the notes of each masked
bar, then EOS (the format of :mod:`midiformers.generation.infilling`)::

    Track_Start Program_x [track controls] Bar_None TimeSig_4/4 [Position_0 Tempo_t]
        [bar controls] Position_p Pitch Velocity Duration ...
        Bar_None TimeSig_4/4 [its tempo and control tokens] Infill_Bar ... Track_End
    Track_Start Program_y ... Track_End
    FillBar_Start Position_p Pitch Velocity Duration ... FillBar_End     (per Infill_Bar)
    EOS

Inside a track the REMI rules hold (:class:`~.remi.RemiRules`: positions move forward inside
the bar of the current meter), with time and bars starting again at every ``Track_Start``;
the only ``Program`` is the track's (a later one would change the whole track's instrument).
A placeholder bar keeps its ``Bar``, ``TimeSig``, tempo and control tokens and ends with
``Infill_Bar``; each fill holds the notes of one placeholder, in order: positions (inside the
placeholder's meter) and notes of the placeholder's track's program, nothing else. The grammar
never writes a placeholder itself (they come from the prompt); once there is one, no new track
starts and EOS waits for every fill. Control tokens are only written when forced
(:meth:`~._runtime.MidiGrammar.with_controls`): the track ones right after ``Program``, the
bar ones where miditok puts them, after the bar's ``Bar TimeSig`` (and ``Position_0 Tempo``
when the tempo changes there) and before its first note; a bar without notes has none.

Registers (``state.tracks``): in a fill, fills started, placeholders seen, the cursor in the
forced track controls (-1: none due) and in the forced bar controls (-1: none due, 0: due
before the bar's first note, k: k written); ``state.holes`` holds each placeholder's program
and meter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from miditok.attribute_controls import BarAttributeControl

from ._bars import _FLAG, _RING
from ._compiler import BAR, DRUMS, POSITION, PREV, PROGRAM, split_token
from ._rules import Tables
from .remi import RemiRules

if TYPE_CHECKING:
    from ._compiler import CompiledGrammar, TokenSummary
    from ._runtime import GrammarState

TRACK_START, TRACK_END = "TrackStart", "TrackEnd"
FILL_START, FILL_END, INFILL = "FillStart", "FillEnd", "Infill"
AC_TRACK, AC_BAR = "ACTrack", "ACBar"
_KINDS = {
    "Track_Start": TRACK_START,
    "Track_End": TRACK_END,
    "FillBar_Start": FILL_START,
    "FillBar_End": FILL_END,
    "Infill_Bar": INFILL,
}
IN_FILL, FILLS, HOLES, TRACK_CURSOR, BAR_CURSOR = range(5)
MAX_HOLES = 512
"""Masked bars one sequence may hold."""
FILL_COST = 2  # FillBar_Start FillBar_End: the shortest (empty) fill
_POSITION_IN_FILL = 3  # a fill's Position needs a note and FillBar_End (a track's may end it)
_TEMPO_DETOUR = 2  # Position_0 before due bar controls: its Tempo, then a Position after them
_METERS = 1024  # holes pack (program + 1) * _METERS + meter index

# codes of the base tokens in the ``mmm_base`` table
_OTHER, _TRACK_START, _TRACK_END, _INFILL, _FILL_START, _FILL_END = range(6)
_AC_TRACK, _AC_BAR, _TIME_SIG, _BAR = range(6, 10)


class MmmRules(RemiRules):
    """MMM over REMI: tracks, attribute controls and infilling (see the module docstring)."""

    tokenization = "MMM"
    scheme = "mmm"
    has_bars = True
    keeps_time = False  # every track restarts time: with_max_seconds is not modelled
    bar_restart_tokens = frozenset({"Track_Start"})

    def __init__(self, tokenizer):
        # REMI's time arithmetic lives in MMM's base tokenizer (same vocabulary and config)
        super().__init__(tokenizer.base_tokenizer)
        self.mmm = tokenizer
        self.track_controls: set[str] = set()
        self.bar_controls: set[str] = set()
        for control in tokenizer.attribute_controls:
            kind = self.bar_controls if isinstance(control, BarAttributeControl) else None
            (kind if kind is not None else self.track_controls).update(control.tokens)

    def unsupported_options(self) -> list[str]:
        config = self.miditok.config
        one_stream = config.one_token_stream_for_programs
        config.one_token_stream_for_programs = True  # MMM keeps one stream per track itself
        try:
            used = super().unsupported_options()
        finally:
            config.one_token_stream_for_programs = one_stream
        base = (config.additional_params or {}).get("base_tokenizer")
        if base != "REMI":
            used.append(f"base_tokenizer={base!r} (only REMI)")
        if self.mmm.is_trained:
            used.append("a BPE vocabulary")
        if not config.use_time_signatures:
            used.append("use_time_signatures=False")
        return used

    # ------------------------------------------------------------------ compiling

    def token_kind(self, token: str) -> str:
        if token in _KINDS:
            return _KINDS[token]
        kind = split_token(token)[0]
        if kind.startswith("ACTrack"):
            return AC_TRACK
        if kind.startswith("ACBar"):
            return AC_BAR
        return kind

    def adjust_graph(self, graph: dict[str, set[str]]) -> None:
        super().adjust_graph(graph)
        for kind in ("Track", "FillBar", "Infill"):
            graph.pop(kind, None)
        for successors in graph.values():
            successors -= {"Track", "FillBar", "Infill", "Program"}
        graph["TimeSig"] -= {"Pitch", "PitchDrum"}  # miditok writes a Position after a TimeSig
        for kind in ("TimeSig", "Tempo", "Position", "Duration"):  # where a track may stop
            if kind in graph:
                graph[kind].add(TRACK_END)
        for kind in ("TimeSig", "Tempo"):  # bar controls come after the bar's prefix
            if kind in graph:
                graph[kind].add(AC_BAR)
        graph["Duration"].add(FILL_END)
        graph[TRACK_START] = {"Program"}
        graph["Program"] = {AC_TRACK, "Bar"}
        graph[AC_TRACK] = {AC_TRACK, "Bar"}
        graph[AC_BAR] = {AC_BAR, "Position"}
        graph[INFILL] = {"Bar", TRACK_END}  # only ever read (in prompts): no way into it
        graph[FILL_START] = {"Position", FILL_END}
        graph[TRACK_END] = set()  # what follows a track or a fill depends on the registers
        graph[FILL_END] = set()

    def start_types(self, graph: dict[str, set[str]]) -> set[str]:
        return {TRACK_START}

    def unfinished_types(self, types: set[str]) -> set[str]:
        return types - {TRACK_END, FILL_END}  # EOS comes after a track or a fill

    def base_updates(
        self, compiled: CompiledGrammar, kind_of: list[tuple[str, str]], update: torch.Tensor
    ) -> None:
        super().base_updates(compiled, kind_of, update)
        default_bar = self.bar_lengths.index(self.default_bar_length)
        for i, (kind, _) in enumerate(kind_of):
            if kind in (TRACK_START, FILL_START):
                update[i, POSITION] = -1
                update[i, BAR] = default_bar
            if kind == TRACK_START:
                update[i, PROGRAM] = 0
                update[i, DRUMS] = 0
            elif kind == AC_BAR:  # the bar's notes may start at the controls' position again
                update[i, POSITION] = -1

    def compile_tables(
        self, compiled: CompiledGrammar, tables: Tables, summaries: list[TokenSummary]
    ) -> None:
        super().compile_tables(compiled, tables, summaries)
        index = compiled.type_index
        self.start_type = compiled.start_type
        kinds = (*_KINDS.values(), AC_TRACK, AC_BAR, "Program", "TimeSig", "Tempo", "Bar")
        kinds = (*kinds, "Position")
        self.types = {kind: index.get(kind, -1) for kind in kinds}  # -1: not in the vocabulary
        codes = {
            TRACK_START: _TRACK_START,
            TRACK_END: _TRACK_END,
            INFILL: _INFILL,
            FILL_START: _FILL_START,
            FILL_END: _FILL_END,
            AC_TRACK: _AC_TRACK,
            AC_BAR: _AC_BAR,
            "TimeSig": _TIME_SIG,
            "Bar": _BAR,
        }
        base = [codes.get(self.token_kind(t), _OTHER) for t in compiled.base_tokens]
        tables["mmm_base"] = torch.tensor([*base, _OTHER], dtype=torch.long)
        first = tables["first_type"]
        tables["mmm_first"] = first
        for name, kind in (
            ("track_start", TRACK_START),
            ("track_end", TRACK_END),
            ("fill_start", FILL_START),
            ("fill_end", FILL_END),
            ("infill", INFILL),
            ("ac_track", AC_TRACK),
            ("ac_bar", AC_BAR),
            ("program", "Program"),
            ("bar", "Bar"),
            ("time_sig", "TimeSig"),
            ("tempo", "Tempo"),
        ):
            tables[f"mmm_is_{name}"] = first == self.types[kind]
        notes = [index[k] for k in ("Pitch", "PitchDrum") if k in index]
        tables["mmm_is_note"] = torch.isin(first, torch.tensor(notes))
        not_in_fill = [
            self.types[k] for k in ("Bar", "TimeSig", "Tempo", TRACK_END, INFILL, AC_TRACK, AC_BAR)
        ]
        tables["mmm_not_in_fill"] = torch.isin(first, torch.tensor(not_in_fill))
        tables["mmm_is_position"] = first == index["Position"]
        position_zero = [compiled.base_vocab.get("Position_0", -1)]
        tables["mmm_position_zero"] = torch.tensor(position_zero, dtype=torch.long)
        tables.update(self._empty_controls())

    @staticmethod
    def _empty_controls() -> Tables:
        empty = torch.zeros(0, dtype=torch.long)
        return {"control_track": empty, "control_bar": empty}

    def control_tables(self, track_ids: tuple[int, ...], bar_ids: tuple[int, ...]) -> Tables:
        names = {index: token for token, index in self.mmm.vocab.items()}
        for level, ids, allowed in (
            ("track", track_ids, self.track_controls),
            ("bar", bar_ids, self.bar_controls),
        ):
            for token_id in ids:
                if names.get(token_id) not in allowed:
                    raise ValueError(
                        f"controls: id {token_id} ({names.get(token_id, 'unknown')}) is not a "
                        f"{level}-level attribute-control token of this tokenizer."
                    )
        return {
            "control_track": torch.tensor(track_ids, dtype=torch.long),
            "control_bar": torch.tensor(bar_ids, dtype=torch.long),
        }

    # ------------------------------------------------------------------ runtime

    def init_state(self, state: GrammarState, batch_size: int, device: torch.device) -> None:
        state.tracks = torch.zeros(batch_size, 5, dtype=torch.long, device=device)
        state.tracks[:, TRACK_CURSOR] = -1
        state.tracks[:, BAR_CURSOR] = -1
        state.holes = torch.zeros(batch_size, MAX_HOLES, dtype=torch.long, device=device)

    def advance(self, state: GrammarState, base: torch.LongTensor, tables: Tables) -> None:
        code = tables["mmm_base"][base]
        tracks = state.tracks.clone()
        num_track, num_bar = tables["control_track"].numel(), tables["control_bar"].numel()
        track_cursor, bar_cursor = tracks[:, TRACK_CURSOR], tracks[:, BAR_CURSOR]
        # track controls: due from the Track_Start, one per ACTrack token
        track_cursor = torch.where(code == _TRACK_START, 0 if num_track else -1, track_cursor)
        step = (code == _AC_TRACK) & (track_cursor >= 0)
        track_cursor = torch.where(step, track_cursor + 1, track_cursor)
        track_cursor = torch.where(track_cursor >= num_track, -1, track_cursor)
        track_cursor = torch.where(code == _TRACK_END, -1, track_cursor)
        # bar controls: due from the bar's TimeSig until the last one is written
        ends = (code == _BAR) | (code == _TRACK_END) | (code == _FILL_START) | (code == _FILL_END)
        bar_cursor = torch.where(ends, -1, bar_cursor)
        bar_cursor = torch.where(code == _TIME_SIG, 0 if num_bar else -1, bar_cursor)
        step = (code == _AC_BAR) & (bar_cursor >= 0)
        bar_cursor = torch.where(step, bar_cursor + 1, bar_cursor)
        bar_cursor = torch.where(bar_cursor >= num_bar, -1, bar_cursor)
        tracks[:, TRACK_CURSOR], tracks[:, BAR_CURSOR] = track_cursor, bar_cursor
        infill, fill_start = code == _INFILL, code == _FILL_START
        if bool(infill.any()):
            rows = torch.nonzero(infill).flatten()
            count = tracks[rows, HOLES]
            if int(count.max()) >= MAX_HOLES:
                raise ValueError(f"A sequence holds more than {MAX_HOLES} Infill_Bar placeholders.")
            registers = state.registers[rows]
            hole = (registers[:, PROGRAM] + 1) * _METERS + registers[:, BAR]
            state.holes[rows, count] = hole
            tracks[rows, HOLES] = count + 1
        if bool(fill_start.any()):
            rows = torch.nonzero(fill_start).flatten()
            filled = tracks[rows, FILLS].clamp(max=MAX_HOLES - 1)
            hole = state.holes[rows, filled]
            program = hole // _METERS - 1
            state.registers[rows, PROGRAM] = program
            state.registers[rows, DRUMS] = (program == -1).long()
            state.registers[rows, BAR] = hole % _METERS  # the placeholder's meter
            tracks[rows, FILLS] += 1
            if state.bars is not None:  # a fill is one bar on its own: nothing rings into it
                state.bars[rows, _RING] = 0
                state.bars[rows, _FLAG] = 1
        tracks[:, IN_FILL] = torch.where(fill_start, 1, tracks[:, IN_FILL])
        tracks[:, IN_FILL] = torch.where(code == _FILL_END, 0, tracks[:, IN_FILL])
        state.tracks = tracks

    def _forced_left(self, state: GrammarState, tables: Tables) -> torch.Tensor:
        """Forced control tokens each row still owes (those of an empty bar are not owed)."""
        tracks = state.tracks
        num_track, num_bar = tables["control_track"].numel(), tables["control_bar"].numel()
        track_cursor, bar_cursor = tracks[:, TRACK_CURSOR], tracks[:, BAR_CURSOR]
        owed = torch.where(track_cursor >= 0, num_track - track_cursor, 0)
        return owed + torch.where(bar_cursor >= 1, num_bar - bar_cursor, 0)

    def extra_cost(
        self, state: GrammarState, tables: Tables, left: torch.Tensor | None = None
    ) -> torch.Tensor:
        tracks, prev = state.tracks, state.registers[:, PREV]
        holes = (tracks[:, HOLES] - tracks[:, FILLS]).clamp(min=0)
        position = (tracks[:, IN_FILL] > 0) & (prev == self.types["Position"])
        extra = self._forced_left(state, tables) + FILL_COST * holes
        extra = extra + _POSITION_IN_FILL * position.long()
        num_bar = tables["control_bar"].numel()
        if left is None:
            return extra
        # with max_bars a track is owed (its controls too), and its last bar needs a note
        extra = extra + tables["control_track"].numel() * (prev == self.start_type).long()
        if not num_bar:
            return extra
        cursor = tracks[:, BAR_CURSOR]
        opening = (cursor == 0) | (prev == self.types["Bar"])
        owed = (left > 0) | ((left == 0) & (state.bars[:, _FLAG] == 0) & opening)
        # a Position_0 before due controls is a tempo change's: Tempo, then a Position again
        detour = _TEMPO_DETOUR * (owed & (cursor == 0) & (prev == self.types["Position"]))
        detour = detour + (owed & (cursor == 0) & (prev == self.types["Tempo"])).long()
        return extra + num_bar * owed.long() + detour

    def extra_cost_after(
        self, state: GrammarState, tables: Tables, left: torch.Tensor | None = None
    ) -> torch.Tensor:
        tracks = state.tracks
        num_track, num_bar = tables["control_track"].numel(), tables["control_bar"].numel()
        holes = (tracks[:, HOLES] - tracks[:, FILLS]).clamp(min=0).unsqueeze(1)
        extra = FILL_COST * (holes - tables["mmm_is_fill_start"].long().unsqueeze(0))
        in_fill = (tracks[:, IN_FILL] > 0).long().unsqueeze(1)
        position = tables["mmm_is_position"].long().unsqueeze(0)
        extra = extra + _POSITION_IN_FILL * in_fill * position
        track_cursor = tracks[:, TRACK_CURSOR].unsqueeze(1)
        track_left = torch.where(track_cursor >= 0, num_track - track_cursor, 0)
        bar_cursor = tracks[:, BAR_CURSOR].unsqueeze(1)
        bar_left = torch.where(bar_cursor >= 0, num_bar - bar_cursor.clamp(min=0) - 1, 0)
        extra = extra + tables["mmm_is_track_start"].long().unsqueeze(0) * num_track
        extra = extra + tables["mmm_is_program"].long().unsqueeze(0) * track_left
        extra = extra + tables["mmm_is_ac_track"].long().unsqueeze(0) * (track_left - 1).clamp(0)
        extra = extra + tables["mmm_is_ac_bar"].long().unsqueeze(0) * bar_left.clamp(min=0)
        if left is None or not num_bar:
            return extra
        # with max_bars: the bar controls of the last bar's note (see extra_cost)
        is_bar = tables["mmm_is_bar"].unsqueeze(0)
        after_left = left.unsqueeze(1) - is_bar.long()
        flag = state.bars[:, _FLAG].unsqueeze(1)
        flag_after = torch.where(is_bar, 0, flag | tables["mmm_is_note"].long().unsqueeze(0))
        opening = is_bar | tables["mmm_is_time_sig"].unsqueeze(0)
        opening = opening | ((bar_cursor == 0) & ~tables["mmm_is_ac_bar"].unsqueeze(0))
        owed = (after_left > 0) | tables["mmm_is_track_start"].unsqueeze(0)
        owed = owed | ((after_left == 0) & (flag_after == 0) & opening)
        due = owed & (bar_cursor == 0)
        detour = _TEMPO_DETOUR * (due & tables["mmm_is_position"].unsqueeze(0))
        detour = detour + (due & tables["mmm_is_tempo"].unsqueeze(0)).long()
        return extra + num_bar * owed.long() + detour

    def restrict(
        self, allowed: torch.Tensor, state: GrammarState, prev: torch.Tensor, tables: Tables
    ) -> tuple[torch.Tensor, None]:
        super().restrict(allowed, state, prev, tables)
        tracks, types = state.tracks, self.types
        vocab = tables["mmm_first"].shape[0]
        view = allowed[:, :vocab]
        in_fill = (tracks[:, IN_FILL] > 0).unsqueeze(1)
        holes_left = tracks[:, HOLES] - tracks[:, FILLS]
        view &= ~(tables["mmm_is_infill"] | tables["mmm_is_ac_track"] | tables["mmm_is_ac_bar"])
        view &= ~(in_fill & tables["mmm_not_in_fill"].unsqueeze(0))
        view &= ~(~in_fill & tables["mmm_is_fill_end"].unsqueeze(0))
        # after a track: another one (unless bars were masked), or the fills; after a fill: fills
        after_track = (prev == types[TRACK_END]).unsqueeze(1)
        after_fill = (prev == types[FILL_END]).unsqueeze(1)
        new_track = after_track & (tracks[:, HOLES] == 0).unsqueeze(1)
        new_fill = (after_track | after_fill) & (holes_left > 0).unsqueeze(1)
        view |= new_track & tables["mmm_is_track_start"].unsqueeze(0)
        view |= new_fill & tables["mmm_is_fill_start"].unsqueeze(0)
        self._force_controls(view, state, prev, tables)
        cost = tables["completion"][prev] + self.extra_cost(state, tables)
        return cost, None

    def _force_controls(
        self, view: torch.Tensor, state: GrammarState, prev: torch.Tensor, tables: Tables
    ) -> None:
        """The forced control tokens: the next due one alone, or (bar controls not started)
        the first one after the bar's prefix, and no note before it."""
        track_ids, bar_ids = tables["control_track"], tables["control_bar"]
        types = self.types
        if track_ids.numel():
            cursor = state.tracks[:, TRACK_CURSOR]
            header = (prev == types["Program"]) | (prev == types[AC_TRACK])
            rows = torch.nonzero((cursor >= 0) & header).flatten()
            if rows.numel():
                view[rows] = False
                view[rows, track_ids[cursor[rows]]] = True
        if bar_ids.numel():
            cursor = state.tracks[:, BAR_CURSOR]
            rows = torch.nonzero(cursor >= 1).flatten()
            if rows.numel():
                view[rows] = False
                view[rows, bar_ids[cursor[rows]]] = True
            due = cursor == 0
            if bool(due.any()):
                after_sig = prev == types["TimeSig"]
                position = tables["mmm_is_position"].unsqueeze(0)
                keep_zero = torch.zeros_like(view)
                keep_zero[:, tables["mmm_position_zero"].clamp(min=0)] = after_sig.unsqueeze(1)
                blocked = tables["mmm_is_note"].unsqueeze(0) | (position & ~keep_zero)
                view &= ~(due.unsqueeze(1) & blocked)
                opens = due & (after_sig | (prev == types["Tempo"]))
                view[:, bar_ids[0]] |= opens

    def restrict_to_budget(
        self,
        allowed: torch.Tensor,
        state: GrammarState,
        limit: torch.Tensor,
        aux: None,
        tables: Tables,
    ) -> None:
        after = tables["completion_after"].unsqueeze(0) + self.extra_cost_after(state, tables)
        allowed[:, : after.shape[1]] &= after <= limit.unsqueeze(1)

    def completion_cost(self, state: GrammarState, tables: Tables) -> torch.LongTensor:
        return tables["completion"][state.registers[:, PREV]] + self.extra_cost(state, tables)

    def restrict_bar_ends(
        self, allowed: torch.Tensor, state: GrammarState, left: torch.Tensor, tables: Tables
    ) -> None:
        """A track ends once its last bar has started and holds a note."""
        done = (left == 0) & (state.bars[:, _FLAG] > 0)
        vocab = tables["mmm_first"].shape[0]
        allowed[:, :vocab] &= ~(~done.unsqueeze(1) & tables["mmm_is_track_end"].unsqueeze(0))
