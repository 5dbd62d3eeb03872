"""REMI: Bar and Position tokens; positions move forward inside the bar of the current meter."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from miditok.constants import TIME_SIGNATURE
from miditok.utils import compute_ticks_per_bar
from symusic import TimeSignature

from ._compiler import BAR, POSITION, TokenSummary, split_token
from ._rules import SchemeRules, Tables

if TYPE_CHECKING:
    from ._compiler import CompiledGrammar
    from ._runtime import GrammarState


class RemiRules(SchemeRules):
    """REMI: a ``TimeSig`` comes right after its ``Bar`` and a note right after its
    ``Position``; positions move forward inside a bar and stay within the bar of the current
    time signature. The state's ``position`` register is the current position (-1 right after
    a Bar) and ``bar`` the index of the bar size in :attr:`bar_lengths`."""

    tokenization = "REMI"
    scheme = "remi"
    has_bars = True

    def adjust_graph(self, graph: dict[str, set[str]]) -> None:
        for kind, successors in graph.items():
            if kind != "Bar":
                successors.discard("TimeSig")
        graph.get("TimeSig", set()).discard("Program")

    def start_types(self, graph: dict[str, set[str]]) -> set[str]:
        return {"Bar"}

    default_meter = TIME_SIGNATURE

    def ticks_per_position(self, denominator: int) -> int:
        """Ticks of one position in a meter with this denominator."""
        return self.miditok._compute_ticks_per_pos(self.miditok._tpb_per_ts[denominator])

    @property
    def positions_per_beat(self) -> int:
        """Positions per beat of the meter's denominator (the same for every denominator)."""
        tok = self.miditok
        ticks_per_beat = tok._tpb_per_ts[TIME_SIGNATURE[1]]
        return ticks_per_beat // tok._compute_ticks_per_pos(ticks_per_beat)

    def positions_per_bar(self, numerator: int, denominator: int) -> int:
        """Positions in a bar of this time signature (miditok's own arithmetic)."""
        tok = self.miditok
        ticks_per_position = tok._compute_ticks_per_pos(tok._tpb_per_ts[denominator])
        ticks_per_bar = compute_ticks_per_bar(
            TimeSignature(0, numerator, denominator), tok.time_division
        )
        return ticks_per_bar // ticks_per_position

    def _time_signature_length(self, value: str) -> int:
        return self.positions_per_bar(*map(int, value.split("/")))

    def prepare(self, compiled: CompiledGrammar) -> None:
        """The bar size before any TimeSig, and every bar size of the vocabulary."""
        self.default_bar_length = self.positions_per_bar(*TIME_SIGNATURE)
        lengths = {self.default_bar_length}
        for token in compiled.base_tokens:
            kind, value = split_token(token)
            if kind == "TimeSig":
                lengths.add(self._time_signature_length(value))
        self.bar_lengths = sorted(lengths)  # the ``bar`` register indexes this list

    def summarize(self, summary: TokenSummary, tokens: list[str], kinds: list[str]) -> None:
        """Positions: forward from the incoming one, inside the incoming (or a new) bar."""
        position: int | None = None  # None: still in the incoming bar, before any Position
        bar_length: int | None = None
        after_bar = False
        for token, kind in zip(tokens, kinds):
            if kind == "Bar":
                position, after_bar = -1, True
            elif kind == "TimeSig":
                bar_length = self._time_signature_length(split_token(token)[1])
            elif kind == "Position":
                value = int(split_token(token)[1])
                if position is None:
                    summary.position_first = value
                elif value <= position:
                    summary.ok = False
                if bar_length is not None:
                    summary.ok &= value < bar_length
                elif after_bar:
                    summary.ok &= value < self.default_bar_length
                else:
                    summary.position_max = max(summary.position_max, value)
                position = value

    def base_updates(
        self, compiled: CompiledGrammar, kind_of: list[tuple[str, str]], update: torch.Tensor
    ) -> None:
        for i, (kind, value) in enumerate(kind_of):
            if kind == "Bar":
                update[i, POSITION] = -1
            elif kind == "Position":
                update[i, POSITION] = int(value)
            elif kind == "TimeSig":
                update[i, BAR] = self.bar_lengths.index(self._time_signature_length(value))

    def compile_tables(
        self, compiled: CompiledGrammar, tables: Tables, summaries: list[TokenSummary]
    ) -> None:
        super().compile_tables(compiled, tables, summaries)
        tables["by_position"] = self._position_table(tables)

    def _position_table(self, tables: Tables) -> torch.Tensor:
        """``(positions + 1, bar lengths, vocab)``: positions forward and inside the bar,
        indexed by (current position + 1, index of the bar length)."""
        lengths = self.bar_lengths
        num_positions = max(lengths) + 1  # current position -1 .. max
        current = torch.arange(-1, num_positions - 1).view(-1, 1, 1)
        length = torch.tensor(lengths).view(1, -1, 1)
        first = tables["position_first"].view(1, 1, -1)
        forward = (first < 0) | (first > current)
        inside = tables["position_max"].view(1, 1, -1) < length
        return forward & inside

    def initial_registers(self) -> dict[int, int]:
        return {BAR: self.bar_lengths.index(self.default_bar_length)}

    def restrict(
        self, allowed: torch.Tensor, state: GrammarState, prev: torch.Tensor, tables: Tables
    ) -> tuple[torch.Tensor, None]:
        registers = state.registers
        allowed &= tables["by_position"][registers[:, POSITION] + 1, registers[:, BAR]]
        return tables["completion"][prev], None
