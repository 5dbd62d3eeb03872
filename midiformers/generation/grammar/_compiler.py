"""The table compiler shared by every scheme: a tokenizer's vocabulary into tensors.

:class:`CompiledGrammar` reads miditok's token-type graph, the value of every token and, for a
BPE vocabulary, the base tokens each merged token expands to, and walks every vocabulary token
once with an unknown incoming state (:class:`TokenSummary`). The scheme's rules object adds what
only its scheme needs (REMI bar positions, MIDILike note bookkeeping) through its hooks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import miditok
import torch

if TYPE_CHECKING:
    from ._rules import SchemeRules

NOTE_ON_TYPES = frozenset({"Pitch", "PitchDrum", "NoteOn", "DrumOn"})
NOTE_OFF_TYPES = frozenset({"NoteOff", "DrumOff"})
DRUM_TYPES = frozenset({"PitchDrum", "DrumOn", "DrumOff"})
SPECIAL_TYPES = frozenset({"PAD", "BOS", "EOS", "MASK"})
NUM_PROGRAMS = 129  # -1 (drums) .. 127

# Special-token roles of vocabulary ids.
REGULAR, PAD, BOS, EOS, MASK, NEUTRAL = range(6)
SPECIAL_ROLE = {"PAD": PAD, "BOS": BOS, "EOS": EOS, "MASK": MASK}

UNCHANGED = -2  # "register not changed by this token" in the position / program tables
KEEP = -99  # "register not changed" in the packed register update table
# the scalar registers of GrammarState, columns of its (batch, NUM_REGISTERS) tensor
PREV, PROGRAM, POSITION, BAR, HAS_NOTES, DRUMS = range(6)
NUM_REGISTERS = 6
NO_REQUIREMENT = -1


class UnsupportedGrammarError(ValueError):
    """The tokenizer's scheme or options are outside what :class:`MidiGrammar` knows."""


def split_token(token: str) -> tuple[str, str]:
    """``"Pitch_60"`` -> ``("Pitch", "60")``."""
    kind, _, value = token.partition("_")
    return kind, value


@dataclass
class TokenSummary:
    """What one vocabulary token (a base token or a BPE merge) needs and does, in plain Python."""

    role: int = REGULAR
    ok: bool = True
    first_type: int = -1
    last_type: int = -1
    needs_drum: int = NO_REQUIREMENT  # 0: the incoming program must be pitched, 1: drums
    new_program: int = UNCHANGED
    single_program: bool = False
    position_first: int = -1  # first Position before any Bar (must exceed the incoming position)
    position_max: int = -1  # largest Position before any Bar (must fit the incoming bar)
    note_delta: int = 0  # notes opened minus notes closed
    has_note_on: bool = False
    has_time_shift: bool = False
    fresh_tail: bool = False  # notes opened after the last TimeShift are still sounding
    requirements: tuple[tuple[int, ...], ...] = ()  # MIDILike NoteOff requirements
    forbidden_programs: tuple[int, ...] = ()  # incoming programs that would alias a key


class CompiledGrammar:
    """Per-token tables of one tokenizer under one scheme's rules.

    Attributes:
        types: the non-special token types; a state's ``prev`` register indexes them, then
            ``start_type`` and ``ended_type``.
        transitions: ``(types + 2, types + 1)`` allowed type successions (+ a dummy column).
        completion: fewest tokens after each type until no note is left unfinished.
        base_vocab / base_tokens: the base (non-BPE) vocabulary, both ways.
        vocab_size / max_expansion: vocabulary ids, and base tokens in the longest one.
        tables: tensors over the vocabulary (see :meth:`_vocab_tables`) and the base tokens.
        special_ids: vocabulary ids of each special role (PAD, BOS, EOS, MASK).
    """

    def __init__(self, tokenizer: miditok.MusicTokenizer, rules: SchemeRules):
        self.miditok = tokenizer
        self.rules = rules
        self.base_vocab: dict[str, int] = dict(tokenizer.vocab)
        self.base_tokens = [""] * len(self.base_vocab)
        for token, index in self.base_vocab.items():
            self.base_tokens[index] = token
        self._build_types()
        rules.prepare(self)
        expansions = self._expansions()
        self.vocab_size = len(expansions)
        self.max_expansion = max(len(e) for e in expansions)
        self.tables = self._vocab_tables(expansions)

    # ------------------------------------------------------------------ types

    def _build_types(self) -> None:
        """Token types, the allowed type transitions and the start state."""
        graph = {
            kind: {t for t in successors if t not in SPECIAL_TYPES and "_" not in t}
            for kind, successors in self.miditok.tokens_types_graph.items()
            if kind not in SPECIAL_TYPES
        }
        types = sorted({self.rules.token_kind(t) for t in self.base_vocab} - SPECIAL_TYPES)
        self.rules.adjust_graph(graph)
        missing = set(types) - set(graph)
        if missing:
            raise UnsupportedGrammarError(
                f"miditok's type graph does not describe the token types {sorted(missing)}."
            )
        start = self.rules.start_types(graph)
        self.types = types
        self.type_index = {kind: i for i, kind in enumerate(types)}
        self.start_type = len(types)
        self.ended_type = len(types) + 1
        num_states = len(types) + 2
        transitions = torch.zeros(num_states, len(types) + 1, dtype=torch.bool)  # + dummy column
        for kind, successors in graph.items():
            for successor in successors:
                if successor in self.type_index:
                    transitions[self.type_index[kind], self.type_index[successor]] = True
        for kind in start:
            if kind in self.type_index:
                transitions[self.start_type, self.type_index[kind]] = True
        self.transitions = transitions
        self.graph = graph
        self.completion = self._completion_costs()

    def _completion_costs(self) -> torch.LongTensor:
        """Fewest tokens after each type until nothing is unfinished (shortest path in the graph)."""
        unfinished = self.rules.unfinished_types(set(self.types))
        cost = {kind: (math.inf if kind in unfinished else 0) for kind in self.types}
        for _ in range(len(self.types)):
            for kind in unfinished:
                successors = [cost[s] for s in self.graph.get(kind, ()) if s in cost]
                if successors:
                    cost[kind] = min(cost[kind], 1 + min(successors))
        if any(math.isinf(c) for c in cost.values()):
            raise UnsupportedGrammarError(f"No way to complete a note after {cost}.")
        values = [int(cost[kind]) for kind in self.types] + [0, 0]  # start, ended
        return torch.tensor(values, dtype=torch.long)

    # ------------------------------------------------------------------ vocabulary

    def _expansions(self) -> list[list[int]]:
        """Base token ids of every vocabulary id (itself, or what a BPE token decodes to)."""
        tok = self.miditok
        if not tok.is_trained:
            return [[i] for i in range(len(self.base_vocab))]
        learned = tok._vocab_learned_bytes_to_tokens
        expansions: list[list[int]] = [[] for _ in range(len(tok.vocab_model))]
        for byte_string, index in tok.vocab_model.items():
            expansions[index] = [self.base_vocab[t] for t in learned[byte_string]]
        return expansions

    @staticmethod
    def _check_drum(summary: TokenSummary, program: int | None, drum: bool) -> bool:
        """Drum notes need Program_-1, pitched notes another program (the incoming one if the
        token has no Program before the note: recorded as a requirement)."""
        if program is not None:
            return drum == (program == -1)
        wanted = int(drum)
        if summary.needs_drum not in (NO_REQUIREMENT, wanted):
            return False
        summary.needs_drum = wanted
        return True

    def _summarize(self, expansion: list[int]) -> TokenSummary:
        """Walk one token's base tokens with an unknown incoming state, recording what it needs."""
        summary = TokenSummary()
        tokens = [self.base_tokens[i] for i in expansion]
        if not tokens:
            summary.role, summary.ok = NEUTRAL, False
            return summary
        kinds = [self.rules.token_kind(t) for t in tokens]
        if len(tokens) == 1 and kinds[0] in SPECIAL_TYPES:
            summary.role, summary.ok = SPECIAL_ROLE[kinds[0]], False
            return summary
        if any(kind in SPECIAL_TYPES for kind in kinds):
            summary.ok = False
            return summary
        index = [self.type_index[kind] for kind in kinds]
        summary.first_type, summary.last_type = index[0], index[-1]
        summary.ok = all(bool(self.transitions[a, b]) for a, b in zip(index, index[1:]))
        program: int | None = None
        for token, kind in zip(tokens, kinds):
            if kind == "Program":
                program = int(split_token(token)[1])
                summary.new_program = program
            elif kind in NOTE_ON_TYPES or kind in NOTE_OFF_TYPES:
                summary.ok &= self._check_drum(summary, program, kind in DRUM_TYPES)
        summary.single_program = len(tokens) == 1 and kinds[0] == "Program"
        self.rules.summarize(summary, tokens, kinds)
        return summary

    def _vocab_tables(self, expansions: list[list[int]]) -> dict[str, torch.Tensor]:
        """Tensors over the vocabulary: what each token needs from a state and what it changes."""
        summaries = [self._summarize(e) for e in expansions]
        dummy = len(self.types)

        def column(name: str, dtype: torch.dtype = torch.long) -> torch.Tensor:
            return torch.tensor([getattr(s, name) for s in summaries], dtype=dtype)

        tables: dict[str, torch.Tensor] = {
            "ok": column("ok", torch.bool),
            "first_type": torch.tensor(
                [s.first_type if s.first_type >= 0 else dummy for s in summaries]
            ),
            "last_type": torch.tensor([max(s.last_type, 0) for s in summaries]),
            "needs_drum": column("needs_drum"),
            "new_program": column("new_program"),
            "single_program": column("single_program", torch.bool),
            "position_first": column("position_first"),
            "position_max": column("position_max"),
            "note_delta": column("note_delta"),
            "has_note_on": column("has_note_on", torch.bool),
            "has_time_shift": column("has_time_shift", torch.bool),
            "fresh_tail": column("fresh_tail", torch.bool),
        }
        tables["completion_after"] = self.completion[tables["last_type"]]
        noop = len(self.base_tokens)  # the no-op entry of the base tables
        width = max(self.max_expansion, 1)
        expansion = torch.full((len(expansions) + 1, width), noop, dtype=torch.long)
        for i, e in enumerate(expansions):
            expansion[i, : len(e)] = torch.tensor(e, dtype=torch.long)
        tables["expansion"] = expansion
        tables["expansion_length"] = torch.tensor([len(e) for e in expansions] + [0])
        tables["base_update"] = self._base_update_table()
        tables["base_is_bos"] = torch.tensor(
            [split_token(t)[0] == "BOS" for t in self.base_tokens] + [False]
        )
        tables["completion"] = self.completion
        self.special_ids = {
            role: [i for i, s in enumerate(summaries) if s.role == role]
            for role in (PAD, BOS, EOS, MASK)
        }
        if not self.special_ids[EOS]:
            raise UnsupportedGrammarError("The tokenizer has no EOS token to end sequences with.")
        tables["eos_ids"] = torch.tensor(self.special_ids[EOS], dtype=torch.long)
        tables["pad_ids"] = torch.tensor(self.special_ids[PAD], dtype=torch.long)
        neutral = [i for i, s in enumerate(summaries) if s.role == NEUTRAL]
        tables["neutral_ids"] = torch.tensor(neutral, dtype=torch.long)
        tables["by_state"] = self._state_table(tables)
        self.rules.compile_tables(self, tables, summaries)
        return tables

    def _state_table(self, tables: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(num_states * 2, vocab)``: type transition, static validity and drum requirement,
        indexed by ``2 * last_type + (program is drums)``."""
        by_type = self.transitions[:, tables["first_type"]] & tables["ok"].unsqueeze(0)
        needs = tables["needs_drum"]
        rows = []
        for drum in (0, 1):
            rows.append(by_type & ((needs == NO_REQUIREMENT) | (needs == drum)).unsqueeze(0))
        return torch.stack(rows, dim=1).flatten(0, 1)

    def _base_update_table(self) -> torch.Tensor:
        """``(base tokens + 1, registers)``: the value each base token writes into each register
        (``KEEP``: unchanged); the last row is the no-op of unknown ids."""
        kind_of = [(self.rules.token_kind(t), split_token(t)[1]) for t in self.base_tokens]
        kind_of.append(("PAD", "None"))
        update = torch.full((len(kind_of), NUM_REGISTERS), KEEP, dtype=torch.long)
        for i, (kind, value) in enumerate(kind_of):
            if kind in SPECIAL_TYPES:
                if kind == "EOS":
                    update[i, PREV] = self.ended_type
                continue
            update[i, PREV] = self.type_index[kind]
            if kind == "Program":
                update[i, PROGRAM] = int(value)
                update[i, DRUMS] = int(value == "-1")
            elif kind in NOTE_ON_TYPES:
                update[i, HAS_NOTES] = 1
        self.rules.base_updates(self, kind_of, update)
        return update
