"""``MidiGrammarLogitsProcessor``: constrain ``generate`` to token sequences that decode cleanly."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor
from transformers.utils import logging

from .grammar import GrammarState, MidiGrammar

logger = logging.get_logger(__name__)

__all__ = ["MidiGrammarLogitsProcessor"]


class MidiGrammarLogitsProcessor(LogitsProcessor):
    """Masks every token that would make a MIDI token sequence invalid (see :mod:`.grammar`).

    Works with greedy search, sampling and beam search: the state of each row is derived from
    ``input_ids`` at every call, incrementally when a row extends a row of the previous call
    (beam search reorders rows between steps; the processor follows the reordering), from scratch
    otherwise. The mask is built with tensor indexing over tables precomputed from the tokenizer.

    Args:
        tokenizer: a :class:`~midiformers.MidiTokenizer` (REMI, TSD, MIDILike or Structured,
            BPE included) or an already compiled :class:`MidiGrammar` (its ``max_bars`` too).
        max_new_tokens: the length budget: near the limit the processor only allows tokens
            after which the piece can still be finished (a note's velocity and duration,
            ``NoteOff`` for every sounding note), so the sequence ends cleanly. Counted from the
            length of the first ``input_ids`` seen. Optional inside ``model.generate``: without
            ``max_new_tokens`` or ``max_length`` the processor reads, at every call, the length
            that ``generate`` stops at (its ``generation_config.max_length``, which
            ``max_new_tokens=`` sets), so notes are closed there too. Called outside
            ``generate`` without a budget (a hand-written loop) it warns once and cannot close
            notes at the end: pass the budget then.
        max_length: the same limit as a total length (``context_ids`` included).
        context_ids: tokens that precede the rows but are not in ``input_ids`` (the part of a
            long piece that slid out of the model's window); they set the starting state. One
            sequence for every row, or ``(batch, length)`` with one per row.
        allow_empty: allow EOS before the first note (by default a piece has at least one).
        max_bars: end every piece after exactly this many bars (schemes with Bar tokens: REMI):
            no token starts bar ``max_bars + 1``, EOS comes once bar ``max_bars`` has started and
            holds a note, no note sounds past its end, and a length budget steers the piece to
            get there in time. Bars of
            the prompt and ``context_ids`` count. See :meth:`MidiGrammar.with_max_bars`.
        max_seconds: end every piece at about this many seconds (every scheme without BPE):
            no note sounds past it, and EOS comes once a note ends within one beat of it (at
            the tempo and meter then); the prompt and ``context_ids`` count, and a length budget
            that runs out first ends the piece earlier. See
            :meth:`MidiGrammar.with_max_seconds`.
        programs: the instruments new notes may use: General MIDI program numbers (0-127, -1
            for drums) or names (``[0, 33, "drums"]``); see :meth:`MidiGrammar.with_programs`.

    Raises:
        UnsupportedGrammarError: ``max_bars`` for a scheme without Bar tokens, ``programs``
            for a tokenizer without Program tokens, ``max_seconds`` with a BPE vocabulary.
        ValueError: an unknown program name or number.

    Example::

        processor = MidiGrammarLogitsProcessor(tokenizer)  # budget read from generate
        out = model.generate(ids, do_sample=True, max_new_tokens=256,
                             logits_processor=[processor])
    """

    def __init__(
        self,
        tokenizer: Any,
        max_new_tokens: int | None = None,
        max_length: int | None = None,
        context_ids: Sequence[int] | torch.Tensor | None = None,
        allow_empty: bool = False,
        max_bars: int | None = None,
        programs: Sequence[int | str] | None = None,
        max_seconds: float | None = None,
    ):
        if max_new_tokens is not None and max_length is not None:
            raise ValueError("Give max_new_tokens or max_length, not both.")
        for name, value in (("max_new_tokens", max_new_tokens), ("max_length", max_length)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
        if isinstance(tokenizer, MidiGrammar):
            grammar = tokenizer
        else:
            grammar = MidiGrammar.for_tokenizer(tokenizer)
        if max_bars is not None:
            grammar = grammar.with_max_bars(max_bars)
        if programs is not None:
            grammar = grammar.with_programs(programs)
        if max_seconds is not None:
            grammar = grammar.with_max_seconds(max_seconds)
        self.grammar = grammar
        self.max_new_tokens = max_new_tokens
        self.max_length = max_length
        self.context_ids = self._as_context(context_ids)
        self.allow_empty = allow_empty
        self.num_fallbacks = 0
        self._warned_no_budget = False
        self._limit = max_length
        self._cache: tuple[torch.Tensor, GrammarState] | None = None
        self._context_state: GrammarState | None = None
        self._fresh_start = False

    @staticmethod
    def _as_context(ids: Sequence[int] | torch.Tensor | None) -> torch.LongTensor:
        """Context as a ``(rows, length)`` tensor (one row: shared by every sequence)."""
        if ids is None:
            return torch.zeros(1, 0, dtype=torch.long)
        ids = torch.as_tensor(ids, dtype=torch.long)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if ids.dim() != 2:
            raise ValueError(f"context_ids must be 1-D or 2-D token ids, got {ids.dim()} dims.")
        return ids if ids.shape[1] else ids[:1]

    def reset(self) -> None:
        """Forget the cached states (done automatically when a new generation starts)."""
        self._cache = None
        self._context_state = None

    # ------------------------------------------------------------------ state

    def _initial_state(self, batch: int, device: torch.device) -> GrammarState:
        rows = self.context_ids.shape[0]
        if rows not in (1, batch):
            raise ValueError(
                f"context_ids has {rows} rows for a batch of {batch}; give one row or one per row."
            )
        if self._context_state is None or self._context_state.prev.device != device:
            context = self.context_ids.to(device)
            state = self.grammar.initial_state(rows, device)
            for column in context.unbind(1):
                self.grammar.advance(state, column)
            self._context_state = state
        if rows == batch:
            return self._context_state.clone()
        return self._context_state.index_select(torch.zeros(batch, dtype=torch.long, device=device))

    def _scratch(self, input_ids: torch.LongTensor) -> GrammarState:
        state = self._initial_state(input_ids.shape[0], input_ids.device)
        for column in input_ids.unbind(1):
            self.grammar.advance(state, column)
        if self.max_new_tokens is not None:
            self._limit = self.context_ids.shape[1] + input_ids.shape[1] + self.max_new_tokens
        return state

    def state_for(self, input_ids: torch.LongTensor) -> GrammarState:
        """The grammar state of every row of ``input_ids`` (cached for the next step)."""
        state = None
        if self._cache is not None:
            old_ids, old_state = self._cache
            if old_ids.shape == input_ids.shape and torch.equal(old_ids, input_ids):
                return old_state
            if old_ids.shape[1] == input_ids.shape[1] - 1:
                state = self._extend(old_ids, old_state, input_ids)
        if state is None:
            state = self._scratch(input_ids)
            self._fresh_start = True
        self._cache = (input_ids.clone(), state)
        return state

    def _extend(
        self, old_ids: torch.Tensor, old_state: GrammarState, input_ids: torch.LongTensor
    ) -> GrammarState | None:
        """Advance the previous states by the last column, following any row reordering."""
        prefix = input_ids[:, :-1]
        if old_ids.shape[0] == input_ids.shape[0] and torch.equal(old_ids, prefix):
            state = old_state
        else:
            same = (prefix.unsqueeze(1) == old_ids.unsqueeze(0)).all(-1)  # (new rows, old rows)
            if not bool(same.any(1).all()):
                return None
            state = old_state.index_select(same.int().argmax(1))
        return self.grammar.advance(state, input_ids[:, -1], check_bos=False)

    # ------------------------------------------------------------------ masking

    def remaining(self, input_ids: torch.LongTensor) -> int | None:
        """Tokens each row may still add under the length limit (``None``: no limit)."""
        if self._limit is None:
            return None
        return self._limit - self.context_ids.shape[1] - input_ids.shape[1]

    def allowed_tokens(self, input_ids: torch.LongTensor) -> torch.BoolTensor:
        """``(batch, vocab)`` mask of the tokens allowed after each row of ``input_ids``."""
        with torch.inference_mode():  # many small ops: skip autograd's bookkeeping
            state = self.state_for(input_ids)
            remaining = self.remaining(input_ids)
            if self._fresh_start:
                self._fresh_start = False
                self._check_bars_fit(state, remaining)
                self._check_seconds_fit(state)
            return self.grammar.allowed_tokens(state, remaining, self.allow_empty)

    def _check_bars_fit(self, state: GrammarState, remaining: int | None) -> None:
        """With ``max_bars``: the budget must hold the fewest tokens that reach the last bar."""
        max_bars = self.grammar.max_bars
        if max_bars is None:
            return
        bars = int(state.bars[:, 0].max())
        if bars > max_bars:
            raise ValueError(
                f"The prompt already has {bars} bars, more than max_bars={max_bars}; give a "
                "shorter prompt or a larger max_bars."
            )
        if remaining is None:
            return
        going = state.prev != self.grammar.ended_type
        needed = int(self.grammar.completion_cost(state).masked_fill(~going, 0).max())
        if needed > remaining:
            raise ValueError(
                f"max_bars={self.grammar.max_bars} needs at least {needed} new tokens after this "
                f"prompt, but the length budget leaves {remaining}: raise max_new_tokens."
            )

    def _check_seconds_fit(self, state: GrammarState) -> None:
        """With ``max_seconds``: the prompt must not already last longer."""
        max_seconds = self.grammar.max_seconds
        if max_seconds is None:
            return
        elapsed = float(state.clock[:, 0].max())
        if elapsed > max_seconds:
            raise ValueError(
                f"The prompt already lasts {elapsed:.2f} s, more than max_seconds={max_seconds:g}; "
                "give a shorter prompt or a larger max_seconds."
            )

    def _limit_from_generate(self) -> int | None:
        """The total length limit of the running ``generate`` call (``None`` outside one)."""
        max_length = _generate_max_length()
        if max_length is None:
            if not self._warned_no_budget:
                self._warned_no_budget = True
                logger.warning(
                    "MidiGrammarLogitsProcessor has no length budget: pass max_new_tokens= or "
                    "max_length= when it is used outside model.generate, or notes still "
                    "sounding when generation stops are dropped at decoding."
                )
            return None
        return self.context_ids.shape[1] + max_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.max_new_tokens is None and self.max_length is None:
            self._limit = self._limit_from_generate()
        allowed = self.allowed_tokens(input_ids)
        vocab = allowed.shape[1]
        if scores.shape[-1] < vocab:
            raise ValueError(
                f"The model scores {scores.shape[-1]} tokens but the tokenizer's vocabulary has "
                f"{vocab}; the model's vocab_size must be at least the tokenizer's."
            )
        if scores.shape[-1] > vocab:
            extra = allowed.new_zeros(allowed.shape[0], scores.shape[-1] - vocab)
            allowed = torch.cat([allowed, extra], dim=1)
        masked = scores.masked_fill(~allowed, -float("inf"))
        dead = torch.isneginf(masked).all(-1)
        if bool(dead.any()):
            masked = self._revive(masked, allowed, dead)
        return masked

    def _revive(
        self, masked: torch.Tensor, allowed: torch.Tensor, dead: torch.Tensor
    ) -> torch.Tensor:
        """Rows left without any finite score would turn into NaN: give them a way out."""
        allowed = allowed.clone()  # made under inference_mode
        empty = dead & ~allowed.any(1)
        if bool(empty.any()):
            self._fallback(allowed, empty)
        if bool((dead & ~empty).any()):
            logger.warning_once(
                "Another logits processor (e.g. no_repeat_ngram_size or bad_words_ids) removed "
                "every token the MIDI grammar allows for a row; sampling among the valid tokens."
            )
        revived = torch.zeros_like(masked[dead]).masked_fill(~allowed[dead], -float("inf"))
        masked[dead] = revived
        return masked

    def _fallback(self, allowed: torch.Tensor, empty: torch.Tensor) -> None:
        """A row the grammar has no token for (a prompt that breaks it): allow EOS."""
        self.num_fallbacks += int(empty.sum())
        logger.warning_once(
            "MidiGrammarLogitsProcessor found no valid token for a row (its prompt may break the "
            "grammar); allowing EOS there."
        )
        for eos in self.grammar.eos_ids:
            allowed[empty, eos] = True


_FRAMES_TO_SEARCH = 8


def _generate_max_length() -> int | None:
    """``max_length`` of the ``generation_config`` of the ``generate`` call up the stack.

    transformers passes a logits processor only ``(input_ids, scores)``; its decoding loops
    (``_sample``, ``_beam_search``, ``_assisted_decoding``) hold the prepared
    ``generation_config`` (``max_length`` = prompt + ``max_new_tokens``) as a local variable,
    a few frames above the processor.
    """
    frame = sys._getframe(1)
    for _ in range(_FRAMES_TO_SEARCH):
        if frame is None:
            return None
        config = frame.f_locals.get("generation_config")
        if isinstance(config, GenerationConfig) and isinstance(config.max_length, int):
            return config.max_length
        frame = frame.f_back
    return None
