"""How well does a conditioned generator hit the requested composer?

The recipe of the composer-conditioned VAE study, done so the answer can be trusted: a
classifier trained on real pieces (held-out accuracy and confusion matrix reported, so one knows
what it can tell apart) labels N generated pieces per composer; conditioning accuracy is compared
with chance (1 / number of composers). Pitch-class histograms of generated and real pieces are
compared per composer (cosine similarity, and relative to the other composers), and the posterior
means of real pieces are scored by composer with the silhouette coefficient.

Only numpy and torch are needed; the metrics follow scikit-learn's definitions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

Pieces = Sequence[Sequence[int]]


# ---------------------------------------------------------------------------- metrics


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_labels: int) -> np.ndarray:
    """Counts ``C[i, j]`` of pieces of class i predicted as class j."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has {y_pred.shape}")
    matrix = np.zeros((num_labels, num_labels), dtype=int)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Unweighted mean F1 over the classes present in ``y_true`` or ``y_pred`` (0 where undefined)."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    scores = []
    for label in np.union1d(y_true, y_pred):
        true_positive = np.sum((y_true == label) & (y_pred == label))
        wrong = np.sum((y_true == label) != (y_pred == label))
        denominator = 2 * true_positive + wrong
        scores.append(2 * true_positive / denominator if denominator else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def compute_classification_metrics(eval_prediction) -> dict[str, float]:
    """``compute_metrics`` for `Trainer`: accuracy and macro-F1 of argmax predictions."""
    logits, labels = eval_prediction.predictions, eval_prediction.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    predictions = np.asarray(logits).argmax(-1)
    labels = np.asarray(labels)
    return {
        "accuracy": float(np.mean(predictions == labels)),
        "macro_f1": macro_f1(labels, predictions),
    }


def silhouette_score(points: np.ndarray, labels: Sequence[int]) -> float:
    """Mean silhouette coefficient (Rousseeuw 1987) with Euclidean distances.

    1 means tight, well separated groups, 0 overlapping ones; points alone in their group score 0.
    """
    points = np.asarray(points, dtype=np.float64)
    labels = np.asarray(labels)
    groups = np.unique(labels)
    if not 2 <= len(groups) < len(points):
        raise ValueError(
            f"silhouette needs between 2 and {len(points) - 1} groups, got {len(groups)}"
        )
    squared = (points**2).sum(1)
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None] - 2 * points @ points.T, 0))
    np.fill_diagonal(distances, 0.0)
    members = labels[None, :] == groups[:, None]  # (groups, points)
    sums = distances @ members.T  # (points, groups): total distance to each group
    sizes = members.sum(1)
    own = np.searchsorted(groups, labels)
    own_size = sizes[own]
    within = np.where(
        own_size > 1, sums[np.arange(len(points)), own] / np.maximum(own_size - 1, 1), 0
    )
    means = sums / sizes[None, :]
    means[np.arange(len(points)), own] = np.inf
    nearest = means.min(1)
    scores = np.where(own_size > 1, (nearest - within) / np.maximum(within, nearest), 0.0)
    return float(np.mean(scores))


def pitch_class_histogram(pitches: Sequence[int]) -> np.ndarray:
    """Normalised 12-bin histogram of MIDI pitches (zeros when there are none)."""
    counts = np.bincount(np.asarray(pitches, dtype=int) % 12, minlength=12).astype(np.float64)
    total = counts.sum()
    return counts / total if total else counts


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two vectors (0 if either is zero)."""
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / norm) if norm else 0.0


# ---------------------------------------------------------------------------- models


def _batches(pieces: Pieces, batch_size: int, pad_token_id: int, max_length: int | None):
    """Right-padded ``(input_ids, attention_mask)`` batches; empty pieces become one pad token."""
    for start in range(0, len(pieces), batch_size):
        rows = [
            list(p)[:max_length] if max_length else list(p)
            for p in pieces[start : start + batch_size]
        ]
        width = max(1, max(len(r) for r in rows))
        ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : max(1, len(row))] = 1
        yield ids, mask


@torch.no_grad()
def classify(
    classifier, pieces: Pieces, batch_size: int = 32, max_length: int | None = None
) -> np.ndarray:
    """Predicted class ids of token sequences with a sequence classifier (e.g. MidiGRU)."""
    classifier.eval()
    pad = classifier.config.pad_token_id or 0
    predictions = []
    for ids, mask in _batches(pieces, batch_size, pad, max_length):
        logits = classifier(
            input_ids=ids.to(classifier.device), attention_mask=mask.to(classifier.device)
        ).logits
        predictions.append(logits.argmax(-1).cpu().numpy())
    return np.concatenate(predictions) if predictions else np.zeros(0, dtype=int)


@torch.no_grad()
def posterior_means(
    vae, pieces: Pieces, batch_size: int = 32, max_length: int | None = None
) -> np.ndarray:
    """Posterior means ``E[z | x]`` of pieces under a VAE with an ``encode`` method."""
    vae.eval()
    pad = vae.config.pad_token_id or 0
    means = []
    for ids, mask in _batches(pieces, batch_size, pad, max_length):
        posterior = vae.encode(ids.to(vae.device), attention_mask=mask.to(vae.device))
        means.append(posterior.mu.float().cpu().numpy())
    return np.concatenate(means)


def _strip(row: torch.Tensor, pad_token_id: int | None, eos_token_id: int | None) -> list[int]:
    """Generated ids up to and including EOS, without the trailing padding."""
    ids = row.tolist()
    if eos_token_id is not None and eos_token_id in ids[1:]:
        ids = ids[: ids.index(eos_token_id, 1) + 1]
    while ids and pad_token_id is not None and ids[-1] == pad_token_id:
        ids.pop()
    return ids


@torch.no_grad()
def generate_per_composer(
    vae,
    composers: Sequence[int],
    samples_per_composer: int,
    batch_size: int = 16,
    **generate_kwargs,
) -> dict[int, list[list[int]]]:
    """``samples_per_composer`` pieces for each composer id, generated by ``vae.generate``."""
    vae.eval()
    generate_kwargs.setdefault("do_sample", True)
    pad, eos = vae.config.pad_token_id, vae.config.eos_token_id
    pieces: dict[int, list[list[int]]] = {}
    jobs = [
        (c, min(batch_size, samples_per_composer - s))
        for c in composers
        for s in range(0, samples_per_composer, batch_size)
    ]
    for composer, count in tqdm(jobs, desc="generating", leave=False):
        out = vae.generate(composer=[composer] * count, pad_token_id=pad, **generate_kwargs)
        pieces.setdefault(composer, []).extend(_strip(row, pad, eos) for row in out)
    return pieces


# ---------------------------------------------------------------------------- report


@dataclass
class ConditioningReport:
    """Everything the conditioning evaluation measures; ``to_markdown()`` prints the tables."""

    composers: list[str]
    chance: float
    classifier_accuracy: float
    classifier_macro_f1: float
    classifier_confusion: np.ndarray
    conditioning_accuracy: float
    conditioning_macro_f1: float
    conditioning_confusion: np.ndarray
    pitch_class_cosine: list[float]
    relative_pitch_class_cosine: list[float]
    latent_silhouette: float
    samples_per_composer: int
    extra: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Headline numbers, flat (for logging or JSON)."""
        return {
            "classifier_accuracy": self.classifier_accuracy,
            "classifier_macro_f1": self.classifier_macro_f1,
            "conditioning_accuracy": self.conditioning_accuracy,
            "conditioning_macro_f1": self.conditioning_macro_f1,
            "chance": self.chance,
            "conditioning_over_chance": self.conditioning_accuracy / self.chance,
            "mean_pitch_class_cosine": float(np.mean(self.pitch_class_cosine)),
            "mean_relative_pitch_class_cosine": float(np.mean(self.relative_pitch_class_cosine)),
            "latent_silhouette": self.latent_silhouette,
            **self.extra,
        }

    def to_markdown(self) -> str:
        """Summary table, per-composer table and both confusion matrices as Markdown."""
        lines = ["| metric | value |", "| --- | --- |"]
        lines += [f"| {name} | {value:.3f} |" for name, value in self.summary().items()]
        lines += [
            "",
            "| composer | classifier recall (real) | conditioning accuracy | "
            "pitch-class cosine | relative cosine |",
            "| --- | --- | --- | --- | --- |",
        ]
        for i, name in enumerate(self.composers):
            real = self.classifier_confusion[i]
            generated = self.conditioning_confusion[i]
            lines.append(
                f"| {name} | {_ratio(real[i], real.sum())} | {_ratio(generated[i], generated.sum())} | "
                f"{self.pitch_class_cosine[i]:.3f} | {self.relative_pitch_class_cosine[i]:.3f} |"
            )
        for title, matrix in (
            ("classifier on held-out real pieces", self.classifier_confusion),
            ("classifier on conditioned samples", self.conditioning_confusion),
        ):
            lines += [
                "",
                f"Confusion matrix, {title} (rows: true / requested, columns: predicted)",
                "",
            ]
            lines.append("| | " + " | ".join(self.composers) + " |")
            lines.append("| --- " * (len(self.composers) + 1) + "|")
            for name, row in zip(self.composers, matrix):
                lines.append(f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |")
        return "\n".join(lines)


def _ratio(part: float, whole: float) -> str:
    return f"{part / whole:.3f}" if whole else "n/a"


def evaluate_conditioning(
    vae,
    classifier,
    pieces: Pieces,
    labels: Sequence[int],
    pitches_of: Callable[[Sequence[int]], Sequence[int]],
    samples_per_composer: int = 20,
    composer_names: Sequence[str] | None = None,
    max_length: int | None = None,
    batch_size: int = 16,
    **generate_kwargs,
) -> ConditioningReport:
    """Score a composer-conditioned generator against held-out real pieces.

    Args:
        vae: a model with ``generate(composer=...)`` and ``encode(input_ids, attention_mask)``.
        classifier: a trained sequence classifier over the same tokens (e.g. MidiGRU).
        pieces, labels: held-out real pieces (token ids) and their composer ids.
        pitches_of: token ids -> MIDI pitches (e.g. via the tokenizer's ``to_score``).
        samples_per_composer: how many pieces to generate per composer.
        max_length: truncate real pieces to this many tokens before classifying / encoding.
        generate_kwargs: passed to ``vae.generate`` (``max_new_tokens``, ``top_k`` ...).
    """
    labels = np.asarray(labels, dtype=int)
    num_labels = vae.config.num_labels
    if len(pieces) != len(labels):
        raise ValueError(f"{len(pieces)} pieces but {len(labels)} labels")
    names = list(composer_names or [vae.config.id2label[i] for i in range(num_labels)])
    composers = list(range(num_labels))

    real_predictions = classify(classifier, pieces, batch_size, max_length)
    generated = generate_per_composer(
        vae, composers, samples_per_composer, batch_size, **generate_kwargs
    )
    requested = np.array([c for c in composers for _ in generated[c]], dtype=int)
    generated_pieces = [piece for c in composers for piece in generated[c]]
    predicted = classify(classifier, generated_pieces, batch_size)

    real_histograms = [
        pitch_class_histogram(
            [p for i in np.flatnonzero(labels == c) for p in pitches_of(pieces[i])]
        )
        for c in composers
    ]
    generated_histograms = [
        pitch_class_histogram([p for piece in generated[c] for p in pitches_of(piece)])
        for c in composers
    ]
    similarity = np.array(
        [[cosine_similarity(g, r) for r in real_histograms] for g in generated_histograms]
    )
    own = np.diag(similarity)
    others = (similarity.sum(1) - own) / max(num_labels - 1, 1)

    means = posterior_means(vae, pieces, batch_size, max_length)
    silhouette = silhouette_score(means, labels) if len(np.unique(labels)) > 1 else float("nan")
    return ConditioningReport(
        composers=names,
        chance=1.0 / num_labels,
        classifier_accuracy=float(np.mean(real_predictions == labels)),
        classifier_macro_f1=macro_f1(labels, real_predictions),
        classifier_confusion=confusion_matrix(labels, real_predictions, num_labels),
        conditioning_accuracy=float(np.mean(predicted == requested)),
        conditioning_macro_f1=macro_f1(requested, predicted),
        conditioning_confusion=confusion_matrix(requested, predicted, num_labels),
        pitch_class_cosine=own.tolist(),
        relative_pitch_class_cosine=(own - others).tolist(),
        latent_silhouette=silhouette,
        samples_per_composer=samples_per_composer,
    )


__all__ = [
    "ConditioningReport",
    "classify",
    "compute_classification_metrics",
    "confusion_matrix",
    "cosine_similarity",
    "evaluate_conditioning",
    "generate_per_composer",
    "macro_f1",
    "pitch_class_histogram",
    "posterior_means",
    "silhouette_score",
]
