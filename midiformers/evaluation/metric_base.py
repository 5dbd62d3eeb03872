"""Base classes of the musical ``evaluate`` modules shipped in ``evaluation/metrics/``.

Each metric script subclasses :class:`PieceMetric` (a feature per piece, averaged over the
set) and only states its feature. Scripts import this module as a module
(``from midiformers.evaluation import metric_base``), never its classes: ``evaluate`` takes
the first ``EvaluationModule`` subclass it finds in a script's namespace as the metric.

Arrow, which ``evaluate`` stores inputs in, cannot hold a ``symusic.Score``: the modules take
MIDI file paths (strings) or MIDI bytes; :func:`midiformers.evaluation.load_metric` also
accepts Scores and converts them.
"""

from __future__ import annotations

import abc
import inspect
from typing import Any

import datasets
import evaluate

from .features import load_pieces, set_statistics

PIECE_FEATURES = [
    datasets.Features({"predictions": datasets.Value("string")}),
    datasets.Features({"predictions": datasets.Value("binary")}),
]
"""One piece per row: a MIDI file path, or the bytes of a MIDI file."""

SET_FEATURES = [
    datasets.Features(
        {
            "predictions": datasets.Sequence(datasets.Value("string")),
            "references": datasets.Sequence(datasets.Value("string")),
        }
    ),
    datasets.Features(
        {
            "predictions": datasets.Sequence(datasets.Value("binary")),
            "references": datasets.Sequence(datasets.Value("binary")),
        }
    ),
]
"""One comparison per row: a generated set and a reference set (MIDI paths, or MIDI bytes)."""

PIECE_INPUTS = """
Args:
    predictions (`list` of `str` or `bytes`): MIDI file paths or the bytes of MIDI files
        (`midiformers.evaluation.load_metric` also takes `symusic.Score` objects).
    return_per_piece (`bool`, defaults to `False`): also return the value of every piece.
Returns:
    `<name>`: mean over the pieces where the value is defined; `<name>_std`: their standard
    deviation; `num_pieces`; `num_undefined`: pieces where it is not (e.g. no notes).
"""

CITATION_MUSPY = """\
@inproceedings{dong2020muspy,
  title={MusPy: A Toolkit for Symbolic Music Generation},
  author={Dong, Hao-Wen and Chen, Ke and McAuley, Julian and Berg-Kirkpatrick, Taylor},
  booktitle={Proceedings of the 21st International Society for Music Information Retrieval Conference (ISMIR)},
  year={2020}
}
"""


class PieceMetric(evaluate.Metric, abc.ABC):
    """A metric that computes one or more features per piece and averages them over the set."""

    output_names: tuple[str, ...] = ()
    description: str = ""
    citation: str = CITATION_MUSPY
    inputs_description: str = PIECE_INPUTS

    @abc.abstractmethod
    def piece_values(self, score: Any, **options: Any) -> dict[str, float]:
        """The feature values of one piece, by output name (``nan`` where undefined)."""

    def _check_options(self, options: dict[str, Any]) -> None:
        accepted = set(inspect.signature(self.piece_values).parameters) - {"score"}
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: unknown option(s) {unknown}; "
                f"it accepts {sorted(accepted | {'return_per_piece'})}"
            )

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=self.description,
            citation=self.citation,
            inputs_description=self.inputs_description,
            features=PIECE_FEATURES,
            reference_urls=["https://salu133445.github.io/muspy/metrics.html"],
        )

    def _compute(
        self, predictions: list, return_per_piece: bool = False, **options: Any
    ) -> dict[str, Any]:
        self._check_options(options)
        scores = load_pieces(predictions)
        rows = [self.piece_values(score, **options) for score in scores]
        result: dict[str, Any] = {}
        for name in self.output_names:
            result.update(set_statistics(name, [row[name] for row in rows], return_per_piece))
        return result
