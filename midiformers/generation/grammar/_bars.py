"""Pieces of exactly N bars, for schemes with ``Bar`` tokens (``MidiGrammar.with_max_bars``).

A state that counts bars holds ``bars``: ``(batch, 2)``, the Bar tokens so far and whether a
note started since the last one. With ``max_bars = N`` no token may start bar N + 1, EOS waits
until bar N has started and holds a note (so the piece has N bars when decoded and encoded
again), and under a length budget a token is only allowed if the piece can still reach the end
of bar N within the tokens left: :meth:`BarCounter.cost_table` holds, for every number of bars
still to start, last token type and note flag, the fewest tokens to a state where EOS is
allowed (a shortest path in miditok's type graph).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ._compiler import NOTE_ON_TYPES, PREV, split_token

if TYPE_CHECKING:
    from ._compiler import CompiledGrammar
    from ._runtime import GrammarState

Tables = dict[str, torch.Tensor]
_UNREACHABLE = 1 << 30
_COUNT, _FLAG = 0, 1


class BarCounter:
    """Bar bookkeeping of one compiled grammar: per-token tables and the cost tables."""

    def __init__(self, compiled: CompiledGrammar):
        self.transitions = compiled.transitions
        self.completion = compiled.completion
        self.bar_type = compiled.type_index["Bar"]
        self.note_types = [
            compiled.type_index[k] for k in NOTE_ON_TYPES if k in compiled.type_index
        ]
        self.num_states = len(compiled.types) + 2
        self.ended_type = compiled.ended_type
        self._costs: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
        compiled.tables.update(self._tables(compiled))

    @staticmethod
    def _tables(compiled: CompiledGrammar) -> Tables:
        kinds = [split_token(t)[0] for t in compiled.base_tokens] + ["PAD"]
        base_bar = torch.tensor([kind == "Bar" for kind in kinds])
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
        return {
            "bar_base_bar": base_bar.long(),
            "bar_base_note": base_note.long(),
            "bar_count": torch.tensor(count, dtype=torch.long),
            "bar_has_bar": torch.tensor(has_bar),
            "bar_note_after": torch.tensor(note_after, dtype=torch.long),
            "bar_sets_flag": torch.tensor(sets_flag, dtype=torch.long),
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

    @staticmethod
    def advance(state: GrammarState, base: torch.LongTensor, tables: Tables) -> None:
        is_bar = tables["bar_base_bar"][base]
        note = tables["bar_base_note"][base]
        bars = state.bars
        flag = torch.where(is_bar > 0, 0, bars[:, _FLAG] | note)
        state.bars = torch.stack([bars[:, _COUNT] + is_bar, flag], dim=1)

    def restrict(
        self, allowed: torch.Tensor, state: GrammarState, max_bars: int, tables: Tables
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask tokens that start bar ``max_bars + 1``; return :meth:`row_cost`."""
        row_cost, left = self.row_cost(state, max_bars)
        allowed &= tables["bar_count"].unsqueeze(0) <= left.unsqueeze(1)
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
    ) -> None:
        """Mask the tokens after which the rows cannot end bar ``max_bars`` within ``limit``."""
        cost, bound = self.cost_table(max_bars, allowed.device)
        if bool((limit >= bound[left.clamp(min=0)]).all()):
            return
        after_left = (left.unsqueeze(1) - tables["bar_count"].unsqueeze(0)).clamp(min=0)
        flag = state.bars[:, _FLAG].unsqueeze(1)
        flag = torch.where(
            tables["bar_has_bar"].unsqueeze(0),
            tables["bar_note_after"].unsqueeze(0),
            flag | tables["bar_sets_flag"].unsqueeze(0),
        )
        states, flags = cost.shape[1], cost.shape[2]
        index = (after_left * states + tables["last_type"].unsqueeze(0)) * flags + flag
        after = cost.flatten()[index]
        allowed &= after <= limit.unsqueeze(1)
