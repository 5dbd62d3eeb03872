"""Pieces longer than a model's context: a sliding window over ``generate``.

How far each architecture can see, and what happens past it:

==========================  ======================  =========================================
model                       positions               past ``context_length(model)``
==========================  ======================  =========================================
``MidiGPT`` (absolute)      learned table           hard limit: the table has no row beyond
                                                    ``max_position_embeddings``
``MidiGPT`` (rotary),       rotary / relative       runs, but attends over distances it never
Conformer, Music                                    saw in training; the window keeps it at
Transformer, VAE decoder                            ``max_position_embeddings`` (pass a larger
                                                    ``context_length`` to go further)
``MidiLSTM``                recurrent state         none: the cache carries on for any length
==========================  ======================  =========================================

Within the window a piece is generated with the KV cache as usual. When the next tokens would not
fit, :func:`generate_long` keeps the last ``context_length - stride`` tokens and calls ``generate``
again on them: every window costs one prefill of that many tokens, so generating ``N`` tokens past
the limit costs about ``N / stride`` extra prefills (with the default ``stride =
context_length // 2``, roughly one re-read token per generated token). The grammar processor sees
the whole piece (the part that slid out is its ``context_ids``), so the rules and the length limit
hold across windows.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from transformers.utils import logging

from ..modeling import architecture_for
from .controls import CONTROLS, check_control
from .grammar import MidiGrammar
from .logits_process import MidiGrammarLogitsProcessor

logger = logging.get_logger(__name__)

__all__ = ["check_generation_options", "context_length", "generate_long"]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


# name -> (is the value valid, the valid range in words)
_OPTION_RULES = {
    "max_new_tokens": (lambda v: _is_int(v) and v >= 1, "a positive integer (>= 1)"),
    "num_return_sequences": (lambda v: _is_int(v) and v >= 1, "a positive integer (>= 1)"),
    "num_beams": (lambda v: _is_int(v) and v >= 1, "a positive integer (>= 1)"),
    "top_k": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0 turns top-k off)"),
    "top_p": (lambda v: _is_real(v) and 0 < v <= 1, "a number in (0, 1] (1 turns top-p off)"),
    "temperature": (lambda v: _is_real(v) and v > 0, "a finite number > 0"),
    "seed": (_is_int, "an integer"),
    "stride": (lambda v: _is_int(v) and v >= 1, "a positive integer (>= 1)"),
    "context_length": (lambda v: _is_int(v) and (v >= 2 or v == -1), "an integer >= 2"),
}


def check_generation_options(**options: Any) -> None:
    """Raise a one-line ``ValueError`` for a sampling option outside its valid range.

    Checks ``max_new_tokens``, ``num_return_sequences``, ``num_beams``, ``top_k``, ``top_p``,
    ``temperature``, ``seed``, ``stride``, ``context_length`` and the attribute controls
    (``density`` ..., in the ``mmm`` preset's ranges, see :func:`.controls.check_control`;
    the pipeline checks them against the tokenizer too) (``None`` means "not given";
    other names are left to ``generate``). transformers 5.24 rejects a negative ``top_p``
    or ``top_k``, ``temperature <= 0`` and ``max_new_tokens <= 0`` itself, but runs with
    ``top_p=2`` or ``top_p=0`` (no filtering / greedy), ignores ``num_return_sequences=0``,
    takes ``max_new_tokens=2.5`` and fails on ``num_beams=0`` with ``ZeroDivisionError``.
    """
    for name, value in options.items():
        rule = _OPTION_RULES.get(name)
        if rule is not None and value is not None and not rule[0](value):
            raise ValueError(f"{name} must be {rule[1]}, got {value!r}.")
        if name in CONTROLS:
            check_control(name, value)


def _check_input_ids(model: Any, input_ids: torch.Tensor) -> None:
    """Ids outside the model's vocabulary would fail deep inside the embedding (IndexError)."""
    vocab_size = getattr(model.config, "vocab_size", None)
    if not vocab_size or input_ids.numel() == 0:
        return
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(
            f"input_ids holds token id {bad}, outside the model's vocabulary "
            f"(ids 0-{vocab_size - 1}, vocab_size {vocab_size})."
        )


def context_length(model: Any) -> int | None:
    """Tokens the model should attend to at once (``None``: no limit, e.g. recurrent models:
    ``recurrent`` in the architecture registry, or a config without ``max_position_embeddings``)."""
    config = model.config
    arch = architecture_for(getattr(config, "model_type", ""), missing_ok=True)
    if arch is not None and arch.recurrent:
        return None
    limit = getattr(config, "max_position_embeddings", None)
    return int(limit) if limit else None


def _window_plan(total: int, new: int, window: int | None, stride: int) -> tuple[int, int]:
    """(tokens to keep as the model's input, tokens to generate) for the next window."""
    if window is None or total + new <= window:
        return total, new
    chunk = min(new, stride)
    return min(total, window - chunk), chunk


def generate_long(
    model: Any,
    input_ids: torch.LongTensor,
    max_new_tokens: int,
    grammar: MidiGrammar | None = None,
    window: int | None = -1,
    stride: int | None = None,
    pad_token_id: int | None = None,
    eos_token_id: int | None = None,
    **generate_kwargs: Any,
) -> torch.LongTensor:
    """``model.generate`` that can go past the model's context with a sliding window.

    Args:
        model: a midiformers causal LM (or the VAE).
        input_ids: ``(batch, length)`` prompts (left-padded with ``pad_token_id`` if uneven).
        max_new_tokens: tokens to add to every row.
        grammar: when given, a :class:`MidiGrammarLogitsProcessor` constrains every window and
            closes the piece cleanly at ``max_new_tokens``.
        window: tokens the model sees at once; ``-1`` (default) uses :func:`context_length`,
            ``None`` disables the window.
        stride: new tokens per window (default: half the window).
        generate_kwargs: passed to ``generate`` (``do_sample``, ``top_k``, ``latent`` ...).
            ``num_beams > 1`` needs the whole piece in one window.

    Returns:
        ``(batch, length + generated)`` ids: the prompts followed by what was generated (rows
        that ended early are padded).

    Raises:
        ValueError: an option outside its range (:func:`check_generation_options`), or
            ``input_ids`` holding an id outside the model's vocabulary.
    """
    check_generation_options(max_new_tokens=max_new_tokens, stride=stride, **generate_kwargs)
    _check_input_ids(model, input_ids)
    if window == -1:
        window = context_length(model)
    if window is not None and (not _is_int(window) or window < 2):
        raise ValueError(f"window must be an integer >= 2 (or None: no window), got {window!r}.")
    stride = max(1, min(stride or (window or 2) // 2, (window or 2) - 1))
    sequences = input_ids
    start_length = sequences.shape[1]
    final_length = start_length + max_new_tokens
    produced = 0
    user_processors = list(generate_kwargs.pop("logits_processor", None) or [])
    while produced < max_new_tokens:
        keep, chunk = _window_plan(sequences.shape[1], max_new_tokens - produced, window, stride)
        if keep < sequences.shape[1] and generate_kwargs.get("num_beams", 1) > 1:
            raise ValueError(
                f"A piece of {final_length} tokens does not fit the model's window of {window}: "
                "beam search cannot slide the window. Use sampling or greedy search."
            )
        context, model_input = sequences[:, :-keep], sequences[:, -keep:]
        processors = list(user_processors)
        if grammar is not None:
            processors.append(
                MidiGrammarLogitsProcessor(grammar, max_length=final_length, context_ids=context)
            )
        output = model.generate(
            model_input,
            attention_mask=_attention_mask(model_input, pad_token_id),
            max_new_tokens=chunk,
            logits_processor=processors,
            pad_token_id=pad_token_id,
            eos_token_id=eos_token_id,
            **generate_kwargs,
        )
        generated = output[:, model_input.shape[1] :]
        sequences = torch.cat([sequences, generated], dim=1)
        produced += generated.shape[1]
        if generated.shape[1] < chunk or _all_ended(sequences, eos_token_id, pad_token_id):
            break
        if keep < sequences.shape[1] - generated.shape[1]:
            logger.info("Slid the window: %d tokens so far", sequences.shape[1])
    return sequences


def _attention_mask(ids: torch.LongTensor, pad_token_id: int | None) -> torch.LongTensor:
    if pad_token_id is None:
        return torch.ones_like(ids)
    return (ids != pad_token_id).long()


def _all_ended(sequences: torch.LongTensor, eos: int | None, pad: int | None) -> bool:
    if eos is None:
        return False
    last = sequences[:, -1]
    return bool(((last == eos) | ((last == pad) & (sequences == eos).any(1))).all())
