"""Metrics computed during evaluation without keeping full-vocabulary logits in memory."""

from __future__ import annotations

import math

import numpy as np
import torch
from transformers import EvalPrediction


def argmax_logits(logits: torch.Tensor | tuple, labels: torch.Tensor) -> torch.Tensor:
    """``preprocess_logits_for_metrics``: keep only the predicted ids, not the logits."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def causal_lm_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Next-token accuracy over the positions whose label is not -100."""
    predictions = np.asarray(prediction.predictions)[:, :-1]
    labels = np.asarray(prediction.label_ids)[:, 1:]
    scored = labels != -100
    total = int(scored.sum())
    correct = int(((predictions == labels) & scored).sum())
    return {"accuracy": correct / total if total else float("nan")}


def classification_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Accuracy and macro-F1 of a sequence classifier."""
    predictions = np.asarray(prediction.predictions).reshape(-1)
    labels = np.asarray(prediction.label_ids).reshape(-1)
    classes = np.union1d(predictions, labels)
    f1_scores = []
    for label in classes:
        true_pos = np.sum((predictions == label) & (labels == label))
        predicted = np.sum(predictions == label)
        actual = np.sum(labels == label)
        precision = true_pos / predicted if predicted else 0.0
        recall = true_pos / actual if actual else 0.0
        denominator = precision + recall
        f1_scores.append(2 * precision * recall / denominator if denominator else 0.0)
    return {
        "accuracy": float(np.mean(predictions == labels)) if len(labels) else float("nan"),
        "macro_f1": float(np.mean(f1_scores)) if f1_scores else float("nan"),
    }


def perplexity(loss: float) -> float:
    """``exp(loss)``, capped so a diverged run reports inf rather than overflowing."""
    return math.exp(loss) if loss < 700 else float("inf")
