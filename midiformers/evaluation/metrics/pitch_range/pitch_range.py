"""Pitch range of MIDI pieces, an `evaluate` metric (loadable offline from this folder)."""

from typing import Any

import evaluate

from midiformers.evaluation import metric_base
from midiformers.evaluation.features import pitch_range

_DESCRIPTION = """\
Highest minus lowest pitch of each piece, in semitones (drum tracks left out). A four-part
chorale spans about three octaves (~36); a melody one or two.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, metric_base.PIECE_INPUTS)
class PitchRange(metric_base.PieceMetric):
    output_names = ("pitch_range",)
    description = _DESCRIPTION

    def piece_values(self, score: Any) -> dict[str, float]:
        return {"pitch_range": pitch_range(score)}
