"""Empty-beat rate of MIDI pieces, an `evaluate` metric (loadable offline from this folder)."""

from typing import Any

import evaluate

from midiformers.evaluation import metric_base
from midiformers.evaluation.features import empty_beat_rate

_DESCRIPTION = """\
The fraction of beats (quarter notes, from the start to the end of the last note) in which no
note sounds. A chorale has almost none; a model that stalls produces long silences.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, metric_base.PIECE_INPUTS)
class EmptyBeatRate(metric_base.PieceMetric):
    output_names = ("empty_beat_rate",)
    description = _DESCRIPTION

    def piece_values(self, score: Any) -> dict[str, float]:
        return {"empty_beat_rate": empty_beat_rate(score)}
