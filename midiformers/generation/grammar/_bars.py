"""Pieces of exactly N bars, for schemes with ``Bar`` tokens (``MidiGrammar.with_max_bars``).

A state that counts bars holds ``bars``: ``(batch, 4)``: the Bar tokens so far, whether a note
started since the last one, the ticks per position of the current meter (positions and
durations count in 1/8 of the meter's beat, so their length in time depends on the meter) and
``ring``, the ticks from the start of the current bar to the end of the latest note.

With ``max_bars = N``: no token may start bar N + 1; EOS waits until bar N has started and
holds a note (so the piece has N bars when decoded and encoded again); no note may sound past
the end of bar N. For the last rule the grammar keeps ``ring <= T * (1 + left)`` (``T`` the
current bar's ticks, ``left`` the bars still to start), i.e. every note ends in time if the
meter does not change: a Duration must keep it, and a TimeSig may only shorten the bars if the
notes still sounding fit (the current meter always does, so nothing gets stuck). Under a length
budget a token is only allowed if the piece can still reach the end of bar N within the tokens
left: :meth:`BarCounter.cost_table` holds, for every number of bars still to start, last token
type and note flag, the fewest tokens to a state where EOS is allowed (a shortest path in
miditok's type graph).

Schemes whose bars restart (MMM: every track is its own bars, from its ``Track_Start``) name
the restarting tokens in ``SchemeRules.bar_restart_tokens``: each track then has exactly N bars.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ._compiler import BAR, NOTE_ON_TYPES, POSITION, PREV, split_token

if TYPE_CHECKING:
    from ._compiler import CompiledGrammar
    from ._runtime import GrammarState

Tables = dict[str, torch.Tensor]
_UNREACHABLE = 1 << 30
_COUNT, _FLAG, _TICKS, _RING = 0, 1, 2, 3
_NONE = -(1 << 20)  # "no such Duration in the token" in the duration tables
_BIG = 1 << 20  # "no such TimeSig in the token"


class BarCounter:
    """Bar bookkeeping of one compiled grammar: per-token tables and the cost tables.

    The scheme's rules describe its meters: ``bar_lengths`` (positions, indexed by the ``bar``
    register), ``positions_per_bar``, ``ticks_per_position``, ``positions_per_beat`` and
    ``default_meter`` (see :class:`~.remi.RemiRules`).
    """

    def __init__(self, compiled: CompiledGrammar):
        rules = compiled.rules
        self.bar_lengths = torch.tensor(rules.bar_lengths)
        self.positions_per_beat = rules.positions_per_beat
        self.ticks_per_position = rules.ticks_per_position
        self.bar_ticks = rules.positions_per_bar
        self.initial_ticks = rules.ticks_per_position(rules.default_meter[1])
        self.transitions = compiled.transitions
        self.completion = compiled.completion
        self.bar_type = compiled.type_index["Bar"]
        self.note_types = [
            compiled.type_index[k] for k in NOTE_ON_TYPES if k in compiled.type_index
        ]
        self.num_states = len(compiled.types) + 2
        self.ended_type = compiled.ended_type
        self._costs: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
        self.has_restarts = bool(rules.bar_restart_tokens)
        compiled.tables.update(self._tables(compiled))
        compiled.tables.update(self._duration_tables(compiled))

    def _tables(self, compiled: CompiledGrammar) -> Tables:
        kinds = [split_token(t)[0] for t in compiled.base_tokens] + ["PAD"]
        base_bar = torch.tensor([kind == "Bar" for kind in kinds])
        restarts = compiled.rules.bar_restart_tokens
        base_restart = torch.tensor([t in restarts for t in compiled.base_tokens] + [False])
        base_note = torch.tensor([kind in NOTE_ON_TYPES for kind in kinds])
        expansion, length = compiled.tables["expansion"], compiled.tables["expansion_length"]
        count, has_bar, note_after, sets_flag = [], [], [], []
        for row, size in zip(expansion[:-1].tolist(), length[:-1].tolist()):
            steps = [kinds[b] for b in row[:size]]
            last_bar = max((i for i, kind in enumerate(steps) if kind == "Bar"), default=-1)
            notes = [kind in NOTE_ON_TYPES for kind in steps[last_bar + 1 :]]
            count.append(sum(kind == "Bar" for kind in steps))
            has_bar.append(last_bar >= 0)
            note_after.append(any(notes))
            sets_flag.append(any(notes) and last_bar < 0)
        base_ticks = [
            self.ticks_per_position(int(t.split("/")[1])) if kind == "TimeSig" else 0
            for kind, t in (split_token(token) for token in compiled.base_tokens)
        ]
        durations = [
            self._duration(value) if kind == "Duration" else _NONE
            for kind, value in (split_token(token) for token in compiled.base_tokens)
        ]
        initial = self.initial_bars(1, torch.device("cpu"))[0]
        return {
            "bar_initial": initial,
            "bar_base_restart": base_restart,
            "bar_restart": base_restart[expansion[:-1]].any(1),
            "bar_positions": self.bar_lengths,
            "bar_base_duration": torch.tensor([*durations, _NONE], dtype=torch.long),
            "bar_base_ticks": torch.tensor([*base_ticks, 0], dtype=torch.long),
            "bar_base_bar": base_bar.long(),
            "bar_base_note": base_note.long(),
            "bar_count": torch.tensor(count, dtype=torch.long),
            "bar_has_bar": torch.tensor(has_bar),
            "bar_note_after": torch.tensor(note_after, dtype=torch.long),
            "bar_sets_flag": torch.tensor(sets_flag, dtype=torch.long),
        }

    def _duration(self, value: str) -> int:
        """Positions a ``Duration`` token lasts (``beats.steps.resolution``)."""
        beats, steps, resolution = map(int, value.split("."))
        return (beats * resolution + steps) * self.positions_per_beat // resolution

    def _duration_tables(self, compiled: CompiledGrammar) -> Tables:
        """What each vocabulary token needs to keep every note inside bar ``max_bars``:

        * ``incoming`` / ``absolute``: the latest note end (positions of the current meter) of
          its Durations in the incoming bar, at the incoming position / after a Position;
        * ``opening``: ticks of the bar of a TimeSig that opens the token (before any Bar):
          the sounding notes must fit ``opening * (1 + left)``;
        * ``inner``: ``max(ceil(E / L) - 1 + j)`` over its notes in a bar of meter length ``L``
          that the token's TimeSig opens, ``j`` Bars into it, ending ``E`` ticks into that bar
          (or, for a note of an earlier bar of the token, how far it rings into that bar);
          the bars still to start must be at least that many;
        * ``meter`` / ``meter_bars``: the shortest bar that a TimeSig after a Bar of the token
          opens, and the most Bars before one: the notes sounding when the token starts must
          fit ``meter * (1 + left - meter_bars)`` after the incoming bar.
        """
        expansion, length = compiled.tables["expansion"], compiled.tables["expansion_length"]
        tokens = [split_token(t) for t in compiled.base_tokens] + [("PAD", "None")]
        names = ("incoming", "absolute", "opening", "inner", "meter", "meter_bars")
        columns: dict[str, list[int]] = {name: [] for name in names}
        for row, size in zip(expansion[:-1].tolist(), length[:-1].tolist()):
            found = {"incoming": _NONE, "absolute": _NONE, "opening": _BIG, "inner": _NONE}
            found.update(meter=_BIG, meter_bars=0)
            position, bars = None, 0
            ticks, bar = 0, 0  # the meter of the token's current bar (0: the incoming one)
            ends: list[int] = []  # note ends of the token's earlier bars, ticks into this bar
            for kind, value in (tokens[b] for b in row[:size]):
                if kind == "Bar":
                    ends = [end - bar for end in ends] if bar else []
                    position, bars, ticks, bar = None, bars + 1, 0, 0
                elif kind == "TimeSig":
                    numerator, denominator = map(int, value.split("/"))
                    ticks = self.ticks_per_position(denominator)
                    bar = self.bar_ticks(numerator, denominator) * ticks
                    if bars == 0:
                        found["opening"] = bar
                    else:
                        found["meter"] = min(found["meter"], bar)
                        found["meter_bars"] = max(found["meter_bars"], bars)
                    for end in ends:
                        found["inner"] = max(found["inner"], -(-end // bar) - 1 + bars)
                elif kind == "Position":
                    position = int(value)
                elif kind == "Duration":
                    span = self._duration(value)
                    if not ticks:  # the incoming bar, in its own meter
                        name = "incoming" if position is None else "absolute"
                        found[name] = max(found[name], span + (position or 0))
                    else:
                        end = (span + (position or 0)) * ticks
                        ends.append(end)
                        found["inner"] = max(found["inner"], -(-end // bar) - 1 + bars)
            for name in names:
                columns[name].append(found[name])
        return {
            f"bar_end_{name}": torch.tensor(values, dtype=torch.long)
            for name, values in columns.items()
        }

    # ------------------------------------------------------------------ costs

    def cost_table(self, max_bars: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(max_bars + 1, states, 2)`` fewest tokens to an end with ``k`` bars still to start
        from (last type, note in the current bar), and its running maximum over ``k`` (finite
        entries only), cached per ``max_bars`` and device."""
        key = (max_bars, torch.device(device))
        if key not in self._costs:
            cost = self._shortest_paths(max_bars)
            finite = cost.masked_fill(cost >= _UNREACHABLE, 0).flatten(1).amax(1)
            self._costs[key] = (cost.to(device), finite.cummax(0).values.to(device))
        return self._costs[key]

    def _shortest_paths(self, max_bars: int) -> torch.Tensor:
        """Relaxation over the small (type, flag) graph, one layer of bars still to start at a
        time (a Bar token moves to the layer below and clears the flag)."""
        states = self.num_states
        edges = self.transitions[:, :-1]  # (states, types)
        types = edges.shape[1]
        done = (self.completion[:types] == 0).tolist() + [True, False]  # start can end if empty
        cost = torch.full((max_bars + 1, states, 2), _UNREACHABLE, dtype=torch.long)
        successors = [torch.nonzero(edges[s]).flatten().tolist() for s in range(states)]
        note_types = set(self.note_types)
        table = cost.tolist()
        for k in range(max_bars + 1):
            layer = table[k]
            if k == 0:
                for s in range(states):
                    layer[s][1] = 0 if done[s] else _UNREACHABLE
                layer[self.ended_type] = [0, 0]
            changed = True
            while changed:
                changed = False
                for s in range(states - 1):  # the ended state has no successor
                    for flag in (0, 1):
                        best = layer[s][flag]
                        for t in successors[s]:
                            if t == self.bar_type:
                                if k == 0:
                                    continue
                                value = table[k - 1][t][0]
                            else:
                                value = layer[t][1 if t in note_types else flag]
                            if value + 1 < best:
                                best = value + 1
                        if best < layer[s][flag]:
                            layer[s][flag] = best
                            changed = True
        return torch.tensor(table, dtype=torch.long).clamp(max=_UNREACHABLE)

    # ------------------------------------------------------------------ runtime

    def initial_bars(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """The ``bars`` tensor of a fresh state: no bar, no note, the default meter."""
        bars = torch.zeros(batch_size, 4, dtype=torch.long, device=device)
        bars[:, _TICKS] = self.initial_ticks
        return bars

    @staticmethod
    def advance(state: GrammarState, base: torch.LongTensor, tables: Tables) -> None:
        is_bar = tables["bar_base_bar"][base]
        note = tables["bar_base_note"][base]
        new_ticks = tables["bar_base_ticks"][base]
        span = tables["bar_base_duration"][base]
        bars, registers = state.bars, state.registers
        restart = tables["bar_base_restart"][base]
        if bool(restart.any()):  # a new track (MMM): its bars count from 0
            bars = torch.where(restart.unsqueeze(1), tables["bar_initial"], bars)
        ticks, ring = bars[:, _TICKS], bars[:, _RING]
        flag = torch.where(is_bar > 0, 0, bars[:, _FLAG] | note)
        ring = torch.maximum(ring, (registers[:, POSITION] + span) * ticks)
        bar = tables["bar_positions"][registers[:, BAR]] * ticks
        ring = torch.where(is_bar > 0, (ring - bar).clamp(min=0), ring)
        ticks = torch.where(new_ticks > 0, new_ticks, ticks)
        state.bars = torch.stack([bars[:, _COUNT] + is_bar, flag, ticks, ring], dim=1)

    def restrict(
        self, allowed: torch.Tensor, state: GrammarState, max_bars: int, tables: Tables
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask tokens that start bar ``max_bars + 1`` or hold a note past the end of bar
        ``max_bars``; return :meth:`row_cost`."""
        row_cost, left = self.row_cost(state, max_bars)
        allowed &= tables["bar_count"].unsqueeze(0) <= left.unsqueeze(1)
        registers, bars = state.registers, state.bars
        ahead = left.clamp(min=0).unsqueeze(1)
        ticks = bars[:, _TICKS].unsqueeze(1)
        ring = bars[:, _RING].unsqueeze(1)
        bar = tables["bar_positions"][registers[:, BAR]].unsqueeze(1) * ticks
        position = registers[:, POSITION].unsqueeze(1)
        end = torch.maximum(
            (position + tables["bar_end_incoming"].unsqueeze(0)) * ticks,
            tables["bar_end_absolute"].unsqueeze(0) * ticks,
        )  # latest note end of the token in the incoming bar
        allowed &= end <= bar * (1 + ahead)
        allowed &= ring <= tables["bar_end_opening"].unsqueeze(0) * (1 + ahead)
        allowed &= tables["bar_end_inner"].unsqueeze(0) <= ahead
        meter_room = tables["bar_end_meter"].unsqueeze(0) * (
            1 + ahead - tables["bar_end_meter_bars"].unsqueeze(0)
        )
        allowed &= torch.maximum(ring, end) - bar <= meter_room
        return row_cost, left

    def row_cost(self, state: GrammarState, max_bars: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's fewest tokens to an end after bar ``max_bars``, and the bars it may
        still start (negative: it has too many already, and cannot end)."""
        left = max_bars - state.bars[:, _COUNT]
        cost, _ = self.cost_table(max_bars, left.device)
        prev = state.registers[:, PREV]
        row_cost = cost[left.clamp(min=0), prev, state.bars[:, _FLAG]]
        return row_cost.masked_fill(left < 0, _UNREACHABLE), left

    def restrict_to_budget(
        self,
        allowed: torch.Tensor,
        state: GrammarState,
        max_bars: int,
        limit: torch.Tensor,
        left: torch.Tensor,
        tables: Tables,
        extra_after: torch.Tensor | None = None,
    ) -> None:
        """Mask the tokens after which the rows cannot end bar ``max_bars`` within ``limit``
        (``extra_after``: ``(batch, vocab)`` tokens the scheme owes on top, see
        ``SchemeRules.extra_cost_after``)."""
        cost, bound = self.cost_table(max_bars, allowed.device)
        ceiling = bound[max_bars] if self.has_restarts else bound[left.clamp(min=0)]
        if extra_after is None and bool((limit >= ceiling).all()):
            return
        after_left = (left.unsqueeze(1) - tables["bar_count"].unsqueeze(0)).clamp(min=0)
        flag = state.bars[:, _FLAG].unsqueeze(1)
        flag = torch.where(
            tables["bar_has_bar"].unsqueeze(0),
            tables["bar_note_after"].unsqueeze(0),
            flag | tables["bar_sets_flag"].unsqueeze(0),
        )
        restart = tables["bar_restart"].unsqueeze(0)
        after_left = torch.where(restart, max_bars, after_left)
        flag = torch.where(restart, 0, flag)
        states, flags = cost.shape[1], cost.shape[2]
        index = (after_left * states + tables["last_type"].unsqueeze(0)) * flags + flag
        after = cost.flatten()[index]
        if extra_after is not None:
            after = after + extra_after
        allowed &= after <= limit.unsqueeze(1)
