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

from typing import Any

import torch
from transformers.utils import logging

from .grammar import MidiGrammar
from .logits_process import MidiGrammarLogitsProcessor

logger = logging.get_logger(__name__)

__all__ = ["context_length", "generate_long"]


def context_length(model: Any) -> int | None:
    """Tokens the model should attend to at once (``None``: no limit, e.g. recurrent models)."""
    config = model.config
    if getattr(config, "model_type", "").endswith("_lstm"):
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
    """
    if window == -1:
        window = context_length(model)
    if window is not None and window < 2:
        raise ValueError(f"window must be at least 2 tokens, got {window}.")
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
