"""Groove consistency of MIDI pieces, an `evaluate` metric (loadable offline from this folder)."""

from typing import Any

import evaluate

from midiformers.evaluation import metric_base
from midiformers.evaluation.features import DEFAULT_GRID, groove_consistency

_DESCRIPTION = """\
How alike the rhythms of adjacent bars are (Wu & Yang 2020): each bar (of the first time
signature, 4/4 if none) becomes a binary onset pattern on a grid of `grid` steps per quarter
note, and the value is 1 minus the mean Hamming distance between adjacent bars' patterns,
divided by the bar's length in steps. 1.0 when every bar has the same rhythm. Undefined for
pieces shorter than two bars.
"""

_INPUTS = (
    metric_base.PIECE_INPUTS
    + f"""
    grid (`int`, defaults to {DEFAULT_GRID}): onset grid steps per quarter note.
"""
)

_CITATION = """\
@inproceedings{wu2020jazz,
  title={The Jazz Transformer on the Front Line: Exploring the Shortcomings of AI-composed Music through Quantitative Measures},
  author={Wu, Shih-Lun and Yang, Yi-Hsuan},
  booktitle={Proceedings of the 21st International Society for Music Information Retrieval Conference (ISMIR)},
  year={2020}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class GrooveConsistency(metric_base.PieceMetric):
    output_names = ("groove_consistency",)
    description = _DESCRIPTION
    inputs_description = _INPUTS
    citation = _CITATION + metric_base.CITATION_MUSPY

    def piece_values(self, score: Any, grid: int = DEFAULT_GRID) -> dict[str, float]:
        return {"groove_consistency": groove_consistency(score, grid=grid)}
