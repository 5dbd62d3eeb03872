"""TSD: TimeShift, then Program, Pitch, Velocity and Duration per note (the shared rules)."""

from __future__ import annotations

from ._rules import SchemeRules


class TsdRules(SchemeRules):
    """TSD: token types follow miditok's graph, a piece starts like a TimeShift's successor,
    a note is complete after its Duration. Nothing beyond the shared registers is tracked."""

    tokenization = "TSD"
    scheme = "tsd"
