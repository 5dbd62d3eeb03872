"""Pitch-class entropy of MIDI pieces, an `evaluate` metric (loadable offline from this folder)."""

from typing import Any

import evaluate

from midiformers.evaluation import metric_base
from midiformers.evaluation.features import pitch_class_entropy

_DESCRIPTION = """\
Shannon entropy, in bits, of each piece's pitch-class histogram (drum tracks left out): 0 for a
piece on one pitch class, log2(12) ~ 3.585 when all twelve are used equally. Tonal music sits
around 2.5 to 3.2; generated music far above that wanders through keys.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, metric_base.PIECE_INPUTS)
class PitchClassEntropy(metric_base.PieceMetric):
    output_names = ("pitch_class_entropy",)
    description = _DESCRIPTION

    def piece_values(self, score: Any) -> dict[str, float]:
        return {"pitch_class_entropy": pitch_class_entropy(score)}
