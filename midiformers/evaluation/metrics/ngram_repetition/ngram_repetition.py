"""N-gram repetition of MIDI pieces, an `evaluate` metric (loadable offline from this folder)."""

from typing import Any

import evaluate

from midiformers.evaluation import metric_base
from midiformers.evaluation.features import DEFAULT_GRID, ngram_repetition

_DESCRIPTION = """\
The fraction of repeated n-grams in each piece, `1 - distinct n-grams / n-grams` (the LSTM
study's 4-gram repetition rate). By default the sequence is the piece's notes in onset order,
each an event (pitch, duration, time to the next onset) on a grid of `grid` steps per quarter
note, so the value does not depend on a tokenizer; pass `tokenizer` (a MidiTokenizer, or the
folder / Hub id of one) to count n-grams of its tokens instead. 0 when no n-gram repeats; close
to 1 for a model stuck in a loop. Undefined for pieces with fewer than n events.
"""

_INPUTS = (
    metric_base.PIECE_INPUTS
    + f"""
    n (`int`, defaults to 4): n-gram length.
    tokenizer (`MidiTokenizer` or `str`, optional): count n-grams of this tokenizer's tokens.
    grid (`int`, defaults to {DEFAULT_GRID}): time grid steps per quarter note of the note events.
"""
)


def _as_tokenizer(tokenizer: Any) -> Any:
    if tokenizer is None or hasattr(tokenizer, "encode_midi"):
        return tokenizer
    from transformers import AutoTokenizer

    import midiformers  # noqa: F401  (registers MidiTokenizer with AutoTokenizer)

    return AutoTokenizer.from_pretrained(tokenizer)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class NgramRepetition(metric_base.PieceMetric):
    output_names = ("ngram_repetition",)
    description = _DESCRIPTION
    inputs_description = _INPUTS

    def _compute(self, predictions: list, return_per_piece: bool = False, **kwargs: Any):
        kwargs["tokenizer"] = _as_tokenizer(kwargs.get("tokenizer"))
        return super()._compute(predictions, return_per_piece=return_per_piece, **kwargs)

    def piece_values(
        self, score: Any, n: int = 4, tokenizer: Any = None, grid: int = DEFAULT_GRID
    ) -> dict[str, float]:
        return {"ngram_repetition": ngram_repetition(score, n=n, tokenizer=tokenizer, grid=grid)}
