"""Trainer callbacks and end-of-run artefacts: MIDI samples at each evaluation, PNG curves."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

SampleFunction = Callable[[torch.nn.Module, int], list[list[int]]]


class MidiSampleCallback(TrainerCallback):
    """Generate ``num_samples`` pieces after every evaluation and write them as .mid files.

    Files go to ``<output_dir>/samples/step-<N>-<k>.mid`` (the Music Transformer study
    saved samples per epoch). Only the main process writes.
    """

    def __init__(self, tokenizer, sample_fn: SampleFunction, num_samples: int, output_dir: str):
        self.tokenizer = tokenizer
        self.sample_fn = sample_fn
        self.num_samples = num_samples
        self.directory = Path(output_dir) / "samples"
        self.written: list[Path] = []

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or self.num_samples <= 0 or model is None:
            return
        was_training = model.training
        model.eval()
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            with torch.no_grad():
                sequences = self.sample_fn(model, self.num_samples)
        finally:
            model.train(was_training)
        for index, ids in enumerate(sequences):
            path = self.directory / f"step-{state.global_step}-{index}.mid"
            self.tokenizer.to_midi(ids, path)
            self.written.append(path)
        logger.info("Wrote %d MIDI sample(s) to %s", len(sequences), self.directory)


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(entry["step"], entry[key]) for entry in history if key in entry and "step" in entry]
    return [p[0] for p in points], [float(p[1]) for p in points]


def plot_history(history: list[dict], output_dir: str | Path) -> list[Path]:
    """Write loss.png, accuracy.png and perplexity.png from ``trainer.state.log_history``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir = Path(output_dir)
    train_steps, train_loss = _series(history, "loss")
    eval_steps, eval_loss = _series(history, "eval_loss")
    panels = {
        "loss": [("train", train_steps, train_loss), ("validation", eval_steps, eval_loss)],
        "perplexity": [
            ("train", train_steps, [math.exp(min(v, 50)) for v in train_loss]),
            ("validation", eval_steps, [math.exp(min(v, 50)) for v in eval_loss]),
        ],
        "accuracy": [("validation", *_series(history, "eval_accuracy"))],
    }
    written = []
    for name, curves in panels.items():
        figure, axis = plt.subplots(figsize=(6, 4))
        for label, steps, values in curves:
            if steps:
                axis.plot(steps, values, marker="o" if len(steps) < 30 else None, label=label)
        axis.set_xlabel("step")
        axis.set_ylabel(name)
        if name == "perplexity":
            axis.set_yscale("log")
        axis.set_title(f"{name} during training")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend()
        path = output_dir / f"{name}.png"
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written
