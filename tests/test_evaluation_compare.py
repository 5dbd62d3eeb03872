"""The architecture comparison's own logic (sizing, statistics, verdict, plot), without training.

The full comparison is a benchmark (``benchmarks/compare_architectures.py``), not a test.
"""

from __future__ import annotations

import importlib.util
import math
import statistics
import sys
from pathlib import Path

import pytest

from midiformers.modeling import ARCHITECTURES

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark():
    """Import the script by path (``benchmarks`` is not an installed package)."""
    sys.path.insert(0, str(BENCHMARKS))  # for its ``from _common import ...``
    try:
        spec = importlib.util.spec_from_file_location(
            "compare_architectures", BENCHMARKS / "compare_architectures.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


compare = load_benchmark()


def test_every_registered_causal_architecture_is_compared():
    variants = compare.registered_variants()
    names = [
        arch.name for arch in ARCHITECTURES.values() if arch.generates and not arch.conditioning
    ]
    assert list(dict.fromkeys(variant.model_type for variant in variants)) == names
    assert [v.name for v in variants] == [
        "LSTM",
        "GPT (absolute)",
        "GPT (rotary)",
        "Music Transformer",
        "Conformer",
    ]
    gpt = [v.options["position_embedding_type"] for v in variants if v.model_type == "gpt"]
    assert gpt == ["absolute", "rotary"]


@pytest.mark.parametrize("budget", [compare.QUICK, compare.DEFAULT], ids=["quick", "default"])
def test_parameter_budgets_are_matched(budget, midi_tokenizer):
    for variant in compare.registered_variants():
        config, count = compare.matched_config(variant, budget, midi_tokenizer)
        assert abs(count - budget.parameters) / budget.parameters < 0.01, (variant.name, count)
        assert count == compare.count_parameters(variant, config, midi_tokenizer)


def fake_runs(losses: dict[str, list[float]]) -> list[dict]:
    runs = []
    for name, values in losses.items():
        for seed, loss in enumerate(values):
            runs.append(
                {
                    "variant": name,
                    "dataset": "bach_chorales",
                    "seed": seed,
                    "parameters": 1000,
                    "eval_loss": loss,
                    "eval_perplexity": math.exp(loss),
                    "eval_accuracy": 1 - loss / 10,
                    "train_tokens_per_second": 100.0,
                    "generation_tokens_per_second": 10.0,
                    "oa_free": 0.5,
                    "oa_continuations": math.nan,
                    "curve": [
                        {"step": 1, "eval_loss": loss + 1, "eval_accuracy": 0.1},
                        {"step": 2, "eval_loss": loss, "eval_accuracy": 0.2},
                    ],
                }
            )
    return runs


def test_summary_table_and_verdict():
    losses = {"A": [1.0, 1.1, 1.2], "B": [2.0, 2.1, 2.2], "C": [1.15, 1.2, 1.25]}
    summary = compare.summarize(fake_runs(losses))
    assert summary["A"]["eval_loss"] == pytest.approx((1.1, statistics.stdev([1.0, 1.1, 1.2])))
    assert math.isnan(summary["A"]["oa_continuations"][0])
    table = compare.markdown_table(summary)
    assert "| A | 1,000 | 1.100 ± 0.100 |" in table
    text = compare.verdict(summary)
    gap, spread = 0.1, math.hypot(0.1, 0.05)
    assert text.startswith("**A** has the lowest validation loss")
    assert f"{gap / spread:.1f}× the combined seed standard deviation" in text
    assert "not distinguishable from seed noise" in text
    clear = compare.verdict(compare.summarize(fake_runs({"A": [1.0, 1.01], "B": [2.0, 2.01]})))
    assert "a clear win" in clear


def test_plot_is_written(tmp_path):
    path = tmp_path / "curves.png"
    compare.plot_curves(fake_runs({"A": [1.0, 1.1], "B": [2.0, 2.2]}), path, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
