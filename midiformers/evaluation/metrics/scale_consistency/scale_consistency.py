"""Scale consistency of MIDI pieces, an `evaluate` metric (loadable offline from this folder)."""

from typing import Any

import evaluate

from midiformers.evaluation import metric_base
from midiformers.evaluation.features import scale_consistency

_DESCRIPTION = """\
The largest fraction of a piece's (pitched) notes that lie in one major or natural-minor scale,
over the 24 such scales: 1.0 for a diatonic piece, 7/12 for a piece that uses every pitch class
equally.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, metric_base.PIECE_INPUTS)
class ScaleConsistency(metric_base.PieceMetric):
    output_names = ("scale_consistency",)
    description = _DESCRIPTION

    def piece_values(self, score: Any) -> dict[str, float]:
        return {"scale_consistency": scale_consistency(score)}
