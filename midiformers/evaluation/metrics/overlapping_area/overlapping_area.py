"""Overlapping area of musical-feature distributions between a generated and a reference set,
an `evaluate` metric (loadable offline from this folder)."""

from typing import Any

import evaluate
import numpy as np

from midiformers.evaluation import metric_base
from midiformers.evaluation.features import (
    FEATURES,
    distance_overlapping_area,
    load_pieces,
    overlapping_area,
)

_DESCRIPTION = """\
How close a generated set of pieces is to a reference set, feature by feature (Yang & Lerch
2020): every piece of both sets gets the musical features below, each feature's distribution in
each set is smoothed with a Gaussian kernel density estimate, and the overlapping area of the
two densities (the integral of their minimum) is reported: 1 when the distributions coincide,
0 when they do not overlap at all. `overlapping_area` is the mean over the features, one number
for "how close to the real data".

With `method="features"` (the default) the densities are those of the feature values, so
identical sets overlap fully (1.0). With `method="distances"` they are Yang & Lerch's original
ones: the reference set's intra-set distances against the generated-to-reference inter-set
distances.

Features: pitch_class_entropy, pitch_range, polyphony, polyphony_rate, notes_per_second,
notes_per_beat, ngram_repetition (4-grams of note events), scale_consistency,
groove_consistency, empty_beat_rate.
"""

_INPUTS = """
Args:
    predictions (`list` of `list` of `str` or `bytes`): one generated set per comparison, as MIDI
        file paths or MIDI bytes (`midiformers.evaluation.load_metric("overlapping_area")` takes
        the two sets directly, and `symusic.Score` objects too).
    references (`list` of `list` of `str` or `bytes`): the reference set of each comparison.
    features (`list` of `str`, optional): compare only these features.
    method (`str`, defaults to `"features"`): `"features"` or `"distances"` (see above).
Returns:
    `overlapping_area`: the mean over the features (and over the comparisons, if several);
    `overlapping_area_<feature>`: each feature's overlap; `num_predictions`, `num_references`:
    the set sizes (summed over the comparisons).
"""

_CITATION = """\
@article{yang2020evaluation,
  title={On the evaluation of generative models in music},
  author={Yang, Li-Chia and Lerch, Alexander},
  journal={Neural Computing and Applications},
  volume={32},
  number={9},
  pages={4773--4784},
  year={2020}
}
"""

METHODS = {"features": overlapping_area, "distances": distance_overlapping_area}


def _mean(values: list[float]) -> float:
    """Mean of the defined values (nan when there is none)."""
    defined = [value for value in values if not np.isnan(value)]
    return float(np.mean(defined)) if defined else float("nan")


def _feature_table(scores: list, names: list[str]) -> dict[str, np.ndarray]:
    return {name: np.array([FEATURES[name](score) for score in scores]) for name in names}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class OverlappingArea(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=metric_base.SET_FEATURES,
            reference_urls=["https://github.com/RichardYang40148/mgeval"],
        )

    def _compute(
        self,
        predictions: list,
        references: list,
        features: list[str] | None = None,
        method: str = "features",
    ) -> dict[str, Any]:
        names = list(FEATURES) if features is None else list(features)
        unknown = sorted(set(names) - set(FEATURES))
        if unknown or not names:
            problem = f"unknown feature(s) {unknown}" if unknown else "no feature given"
            raise ValueError(f"overlapping_area: {problem}; choose from {list(FEATURES)}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
        overlaps = {name: [] for name in names}
        sizes = {"num_predictions": 0, "num_references": 0}
        for generated, reference in zip(predictions, references, strict=True):
            generated_values = _feature_table(load_pieces(generated, "predictions"), names)
            reference_values = _feature_table(load_pieces(reference, "references"), names)
            for name in names:
                overlaps[name].append(
                    METHODS[method](generated_values[name], reference_values[name])
                )
            sizes["num_predictions"] += len(generated)
            sizes["num_references"] += len(reference)
        per_feature = {f"overlapping_area_{name}": _mean(v) for name, v in overlaps.items()}
        mean = _mean(list(per_feature.values()))
        return {"overlapping_area": mean, **per_feature, **sizes}
