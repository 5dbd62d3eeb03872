"""Note density of MIDI pieces, an `evaluate` metric (loadable offline from this folder)."""

from typing import Any

import evaluate

from midiformers.evaluation import metric_base
from midiformers.evaluation.features import note_density

_DESCRIPTION = """\
Notes per second (through the piece's tempo map) and notes per beat (a quarter note), from the
start of the piece to the end of its last note; drum hits count as notes. The per-beat value
does not depend on the tempo, so it compares pieces written at different tempi.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, metric_base.PIECE_INPUTS)
class NoteDensity(metric_base.PieceMetric):
    output_names = ("notes_per_second", "notes_per_beat")
    description = _DESCRIPTION

    def piece_values(self, score: Any) -> dict[str, float]:
        per_second, per_beat = note_density(score)
        return {"notes_per_second": per_second, "notes_per_beat": per_beat}
