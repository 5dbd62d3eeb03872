"""Structured: a fixed TimeShift / Program / Pitch / Velocity / Duration cycle per note."""

from __future__ import annotations

from ._rules import SchemeRules


class StructuredRules(SchemeRules):
    """Structured: the shared rules; a piece starts where the cycle does (after a Duration)."""

    tokenization = "Structured"
    scheme = "structured"

    def start_types(self, graph: dict[str, set[str]]) -> set[str]:
        return set(graph["Duration"]) if "Duration" in graph else {"TimeShift"}
