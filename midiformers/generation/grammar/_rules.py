"""The rules object of a token scheme: what the shared compiler and runtime ask a scheme.

Each miditok tokenization the grammar knows has a subclass of :class:`SchemeRules` in its own
module (``remi.py``, ``tsd.py``, ``midilike.py``, ``structured.py``), as miditok has a tokenizer
class per scheme. The defaults here are the rules every scheme shares: token types follow
miditok's type graph, a note is finished after its last note token, nothing else is tracked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import miditok
import torch

from ._compiler import PREV, TokenSummary, UnsupportedGrammarError, split_token

if TYPE_CHECKING:
    from ._compiler import CompiledGrammar
    from ._runtime import GrammarState

_UNSUPPORTED_OPTIONS = (
    "use_rests",
    "use_chords",
    "use_sustain_pedals",
    "use_pitch_bends",
    "use_control_changes",
    "use_pitch_intervals",
)

Tables = dict[str, torch.Tensor]


class SchemeRules:
    """Base rules; a subclass per miditok tokenization (registered by ``tokenization``).

    One instance per compiled grammar: hooks called while compiling may keep what the
    scheme's runtime hooks need later (tables go into the shared ``tables`` dict).
    """

    tokenization: ClassVar[str] = ""
    """The miditok tokenizer class name this scheme handles."""
    scheme: ClassVar[str] = ""
    """Short name of the scheme (``MidiGrammar.scheme``)."""
    has_bars: ClassVar[bool] = False
    """Whether the scheme has Bar tokens (and can count bars)."""
    keeps_time: ClassVar[bool] = True
    """Whether ``with_max_seconds`` can follow the scheme's time (see ``_seconds.py``)."""
    bar_restart_tokens: ClassVar[frozenset[str]] = frozenset()
    """Base tokens after which bars count from 0 again (MMM: ``Track_Start``)."""

    registry: ClassVar[dict[str, type[SchemeRules]]] = {}

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if cls.tokenization:
            SchemeRules.registry[cls.tokenization] = cls

    def __init__(self, tokenizer: miditok.MusicTokenizer):
        self.miditok = tokenizer
        self.use_velocities = bool(tokenizer.config.use_velocities)
        self.max_cost_after = 0

    @classmethod
    def for_tokenizer(cls, tokenizer: miditok.MusicTokenizer) -> SchemeRules:
        """The rules of the tokenizer's scheme, after checking its options are modelled."""
        name = type(tokenizer).__name__
        if name not in cls.registry:
            raise UnsupportedGrammarError(
                f"The MIDI grammar knows {sorted(cls.registry)} tokenizations, not {name}."
            )
        rules = cls.registry[name](tokenizer)
        used = rules.unsupported_options()
        if used:
            raise UnsupportedGrammarError(
                f"The MIDI grammar does not model these {name} options: {', '.join(used)}."
            )
        return rules

    def unsupported_options(self) -> list[str]:
        """The tokenizer's options that this grammar does not model."""
        config = self.miditok.config
        used = [option for option in _UNSUPPORTED_OPTIONS if getattr(config, option, False)]
        extra = config.additional_params or {}
        if extra.get("use_bar_end_tokens"):
            used.append("use_bar_end_tokens")
        if extra.get("max_bar_embedding") is not None:
            used.append("max_bar_embedding")
        if not config.use_programs or not config.one_token_stream_for_programs:
            used.append("use_programs=False or one_token_stream_for_programs=False")
        if set(config.use_note_duration_programs) != set(config.programs):
            used.append("use_note_duration_programs (not every program)")
        return used

    # ------------------------------------------------------------------ compiling

    def token_kind(self, token: str) -> str:
        """The grammar type of a base token: miditok's type (the part before ``_``) unless
        the scheme tells apart tokens of one miditok type (MMM's ``Track_Start`` / ``_End``)."""
        return split_token(token)[0]

    def adjust_graph(self, graph: dict[str, set[str]]) -> None:
        """Tighten miditok's type graph in place (successor types of each type)."""

    def start_types(self, graph: dict[str, set[str]]) -> set[str]:
        """Token types a piece may start with."""
        return set(graph["TimeShift"])

    def unfinished_types(self, types: set[str]) -> set[str]:
        """Types after which a note is incomplete (the decoder would drop it)."""
        unfinished = {"Program"}
        note_parts = ["Pitch", "PitchDrum"]
        if self.use_velocities:
            unfinished |= set(note_parts)
            note_parts = ["Velocity"]
        if self.miditok.config.using_note_duration_tokens:
            unfinished |= set(note_parts)
        return unfinished & types

    def prepare(self, compiled: CompiledGrammar) -> None:
        """Called once the base vocabulary and the types are known, before any token walk."""

    def summarize(self, summary: TokenSummary, tokens: list[str], kinds: list[str]) -> None:
        """Scheme-specific part of the walk of one vocabulary token (see ``TokenSummary``)."""

    def base_updates(
        self, compiled: CompiledGrammar, kind_of: list[tuple[str, str]], update: torch.Tensor
    ) -> None:
        """Fill the scheme's registers in the ``(base tokens, registers)`` update table."""

    def compile_tables(
        self, compiled: CompiledGrammar, tables: Tables, summaries: list[TokenSummary]
    ) -> None:
        """Add the scheme's tables; set :attr:`max_cost_after` (the largest completion cost a
        token can leave)."""
        self.max_cost_after = int(tables["completion_after"].max())

    # ------------------------------------------------------------------ runtime

    def initial_registers(self) -> dict[int, int]:
        """Register values of the start state that differ from the shared ones."""
        return {}

    def init_state(self, state: GrammarState, batch_size: int, device: torch.device) -> None:
        """Add the scheme's tensors to a fresh state."""

    def advance(self, state: GrammarState, base: torch.LongTensor, tables: Tables) -> None:
        """Scheme-specific state change of one base token per row (after the registers')."""

    def restrict(
        self, allowed: torch.Tensor, state: GrammarState, prev: torch.Tensor, tables: Tables
    ) -> tuple[torch.Tensor, Any]:
        """Mask (in place) what the scheme forbids after the rows' last token types ``prev``;
        return ``(completion cost per row, aux)`` (``aux`` goes to :meth:`restrict_to_budget`)."""
        return tables["completion"][prev], None

    def restrict_to_budget(
        self,
        allowed: torch.Tensor,
        state: GrammarState,
        limit: torch.Tensor,
        aux: Any,
        tables: Tables,
    ) -> None:
        """Mask (in place) the tokens after which a row cannot finish within ``limit`` tokens."""
        if int(limit.min()) < self.max_cost_after:
            allowed &= tables["completion_after"].unsqueeze(0) <= limit.unsqueeze(1)

    def completion_cost(self, state: GrammarState, tables: Tables) -> torch.LongTensor:
        """Fewest tokens each row needs before it may end."""
        return tables["completion"][state.registers[:, PREV]]

    # ------------------------------------------------------------------ generation controls

    def control_tables(self, track_ids: tuple[int, ...], bar_ids: tuple[int, ...]) -> Tables:
        """Tables of a grammar that forces control tokens (``MidiGrammar.with_controls``)."""
        raise UnsupportedGrammarError(
            f"The {self.scheme} grammar has no attribute-control tokens to force; use a "
            "tokenizer with attribute controls (the 'mmm' preset)."
        )

    def extra_cost(
        self, state: GrammarState, tables: Tables, left: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Tokens each row owes beyond the type-graph costs (``None``: none), added to the
        bar counter's costs (the scheme's own :meth:`restrict` includes them already);
        ``left``: with ``max_bars``, the bars each row may still start."""
        return None

    def extra_cost_after(
        self, state: GrammarState, tables: Tables, left: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """``(batch, vocab)``: :meth:`extra_cost` after each token (``None``: none)."""
        return None

    def restrict_bar_ends(
        self, allowed: torch.Tensor, state: GrammarState, left: torch.Tensor, tables: Tables
    ) -> None:
        """With ``max_bars``: mask (in place) the scheme's section ends that need every bar
        written (``left``: bars each row may still start)."""
