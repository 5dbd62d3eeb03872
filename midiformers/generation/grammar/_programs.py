"""Instrument sets (``MidiGrammar.with_programs``): only the chosen programs play notes.

Every preset writes a ``Program_x`` token before each note (or, with ``program_changes``, when
the instrument changes); drums are ``Program_-1``. With a set of programs the grammar masks
every vocabulary token holding a ``Program`` outside the set (BPE merges included) and every
token that plays a note with the incoming program while that program is outside the set (the
program before any ``Program`` token is 0, as miditok decodes it). With MIDILike, a note of
another program that a prompt left sounding can still be closed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from miditok.constants import MIDI_INSTRUMENTS

from ._compiler import NOTE_ON_TYPES, NUM_PROGRAMS, split_token

if TYPE_CHECKING:
    from ._compiler import CompiledGrammar

DRUM_NAMES = frozenset({"drums", "drum", "drum kit", "percussion"})
_BY_NAME = {info["name"].lower(): program for program, info in enumerate(MIDI_INSTRUMENTS)}


def resolve_programs(programs: Iterable[int | str], available: Iterable[int]) -> tuple[int, ...]:
    """General MIDI program numbers (0-127, -1 for drums) or names (``"Acoustic Grand Piano"``,
    ``"drums"``; case-insensitive) -> sorted program numbers.

    Raises:
        ValueError: an empty set, an unknown name or number, or a program the tokenizer has no
            ``Program`` token for.
    """
    if isinstance(programs, (str, int)):
        programs = [programs]
    available = set(available)
    result: set[int] = set()
    for program in programs:
        if isinstance(program, str):
            name = program.strip().lower()
            if name in DRUM_NAMES:
                number = -1
            elif name in _BY_NAME:
                number = _BY_NAME[name]
            elif name.lstrip("-").isdigit():
                number = int(name)
            else:
                raise ValueError(
                    f"programs: unknown instrument {program!r}; give a General MIDI program "
                    "number (0-127, -1 for drums) or name (e.g. 'Acoustic Grand Piano', 'drums')."
                )
        elif isinstance(program, int) and not isinstance(program, bool):
            number = program
        else:
            raise ValueError(
                f"programs: {program!r} is neither a program number (0-127, -1 for drums) "
                "nor an instrument name."
            )
        if not -1 <= number <= 127:
            raise ValueError(
                f"programs: {number} is not a General MIDI program (0-127, or -1 for drums)."
            )
        if number not in available:
            raise ValueError(
                f"programs: the tokenizer has no Program_{number} token (its programs: "
                f"{sorted(available)})."
            )
        result.add(number)
    if not result:
        raise ValueError("programs: give at least one program.")
    return tuple(sorted(result))


class ProgramTables:
    """Which programs each vocabulary token plays, computed once per compiled grammar."""

    def __init__(self, compiled: CompiledGrammar):
        expansion = compiled.tables["expansion"][:-1].tolist()
        length = compiled.tables["expansion_length"][:-1].tolist()
        tokens = [split_token(t) for t in compiled.base_tokens]
        self.available = sorted(int(v) for kind, v in tokens if kind == "Program")
        contains = torch.zeros(len(expansion), NUM_PROGRAMS, dtype=torch.bool)
        incoming = torch.zeros(len(expansion), dtype=torch.bool)
        for i, (row, size) in enumerate(zip(expansion, length)):
            seen_program = False
            for kind, value in (tokens[b] for b in row[:size]):
                if kind == "Program":
                    contains[i, int(value) + 1] = True
                    seen_program = True
                elif not seen_program and kind in NOTE_ON_TYPES:
                    incoming[i] = True
        self.contains = contains  # (vocab, programs + 1): Program_x tokens in the token
        single = compiled.tables["single_program"]
        self.single = torch.where(single, contains.int().argmax(1), -1)  # a bare Program_x: x + 1
        self.uses_incoming = incoming  # plays a note with the incoming program

    def masks(self, programs: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """``token_ok`` (vocab): no Program outside ``programs``; ``incoming_ok`` (programs + 1,
        indexed by program + 1): the incoming program may play; ``uses_incoming`` (vocab)."""
        wanted = torch.zeros(NUM_PROGRAMS, dtype=torch.bool)
        wanted[torch.tensor(programs) + 1] = True
        return {
            "token_ok": ~(self.contains & ~wanted).any(1),
            "incoming_ok": wanted,
            "uses_incoming": self.uses_incoming,
            "single": self.single,
        }


def restrict_programs(
    allowed: torch.Tensor,
    program: torch.Tensor,
    tables: dict[str, torch.Tensor],
    closable: torch.Tensor | None = None,
) -> None:
    """Mask (in place) the tokens that would play a program outside the set. ``closable``
    (MIDILike: ``(batch, programs + 1)`` notes that a NoteOff may end): a bare ``Program_x``
    outside the set stays allowed while a note of ``x`` (from the prompt) can be closed; the
    note after it can then only be a NoteOff (a NoteOn would use ``x``)."""
    vocab = tables["token_ok"].shape[0]
    token_ok = tables["token_ok"].unsqueeze(0)
    if closable is not None:
        single = tables["single"]
        closes = closable[:, single.clamp(min=0)] & (single >= 0).unsqueeze(0)
        token_ok = token_ok | closes
    allowed[:, :vocab] &= token_ok
    incoming_bad = ~tables["incoming_ok"][program + 1]  # (batch,)
    allowed[:, :vocab] &= ~(incoming_bad.unsqueeze(1) & tables["uses_incoming"].unsqueeze(0))
