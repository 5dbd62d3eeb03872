"""Polyphony of MIDI pieces, an `evaluate` metric (loadable offline from this folder)."""

from typing import Any

import evaluate

from midiformers.evaluation import metric_base
from midiformers.evaluation.features import polyphony

_DESCRIPTION = """\
`polyphony`: the average number of notes sounding together, over the time when at least one
(pitched) note sounds: 1 for a melody, 4 for four-part block chords. `polyphony_rate`: the
fraction of that time with two or more notes sounding. MusPy's definitions, computed on the
notes' exact times instead of a piano-roll grid.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, metric_base.PIECE_INPUTS)
class Polyphony(metric_base.PieceMetric):
    output_names = ("polyphony", "polyphony_rate")
    description = _DESCRIPTION

    def piece_values(self, score: Any) -> dict[str, float]:
        mean, rate = polyphony(score)
        return {"polyphony": mean, "polyphony_rate": rate}
