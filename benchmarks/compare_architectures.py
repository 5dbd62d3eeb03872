"""Which architecture models symbolic music best at a small, matched budget?

Trains every registered causal architecture (LSTM, GPT with absolute and with rotary
positions, Music Transformer, Conformer), each sized to the same parameter count, with
``train.py``'s code path (``midiformers.training.main``: same recipe, optimiser, schedule and
data) on ``bach_chorales`` (and on JSB / POP909 / MAESTRO when their data is given), for
several seeds. Then prints a Markdown table of mean ± std over seeds: validation loss,
perplexity and accuracy, parameters, training tokens/s, generation tokens/s and the musical
metrics' overlapping areas (generated vs real music of the test split), a plain verdict, and
writes an overlaid plot of the validation curves.

    python benchmarks/compare_architectures.py                 # default budget (< 1 h, 2 cores)
    python benchmarks/compare_architectures.py --quick         # a smoke test of a few minutes
    python benchmarks/compare_architectures.py --data-dir jsb_chorales=~/data/jsb
    python benchmarks/compare_architectures.py --from-json benchmarks/results/compare_architectures.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

try:
    from _common import machine_description
except ImportError:  # run from another folder
    from benchmarks._common import machine_description

logger = logging.getLogger("compare_architectures")

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "default.yaml"
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Variant:
    """One column of the comparison: an architecture and its fixed options."""

    name: str
    model_type: str
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    """Everything that sets the cost of the comparison."""

    parameters: int = 400_000
    steps: int = 300
    batch_size: int = 16
    max_length: int = 256
    layers: int = 3
    learning_rate: float = 1e-3
    eval_every: int = 60
    seeds: int = 3
    num_samples: int = 8
    max_new_tokens: int = 256
    primer_tokens: int = 64
    dataset_config: dict = field(default_factory=dict)


DEFAULT = Budget()
QUICK = Budget(
    parameters=40_000,
    steps=12,
    batch_size=4,
    max_length=64,
    layers=2,
    eval_every=6,
    seeds=2,
    num_samples=2,
    max_new_tokens=32,
    primer_tokens=16,
    dataset_config={"max_pieces": 24},
)


# ------------------------------------------------------------------------- the models


def registered_variants() -> list[Variant]:
    """Every unconditional generator of the architecture registry, in its order, once per
    registered variant (GPT: absolute and rotary positions)."""
    from midiformers.modeling import ARCHITECTURES

    variants = []
    for arch in ARCHITECTURES.values():
        if not arch.generates or arch.conditioning:
            continue
        for label, options in arch.variants.items():
            variants.append(Variant(f"{arch.display_name} ({label})", arch.name, dict(options)))
        if not arch.variants:
            variants.append(Variant(arch.display_name, arch.name))
    return variants


def _architecture(variant: Variant):
    from midiformers.modeling import architecture_for

    return architecture_for(variant.model_type)


def model_config(variant: Variant, width: int, budget: Budget) -> dict[str, Any]:
    """The ``model_config`` of ``variant`` at ``width`` (hidden size) for this budget:
    a recurrent model is sized by its embedding and state, the others as Transformers."""
    arch = _architecture(variant)
    if arch.recurrent:
        return {
            "embedding_size": max(8, width // 2),
            "hidden_size": width,
            "num_hidden_layers": 2,
            "hidden_dropout": 0.1,
            **variant.options,
        }
    positions = max(budget.max_length, budget.primer_tokens + budget.max_new_tokens)
    config = {
        "hidden_size": width,
        "num_hidden_layers": budget.layers,
        "num_attention_heads": 4,
        "intermediate_size": 4 * width,
        "max_position_embeddings": positions,
        "hidden_dropout": 0.1,
        "attention_dropout": 0.1,
        **variant.options,
    }
    if "max_relative_position" in {item.name for item in fields(arch.config_class)}:
        config["max_relative_position"] = budget.max_length  # distances seen in training
    return config


def count_parameters(variant: Variant, config: dict[str, Any], tokenizer) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    from midiformers.training.run import resolve_model_type

    full = AutoConfig.for_model(
        resolve_model_type(variant.model_type),
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **config,
    )
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(full).num_parameters()


def matched_config(variant: Variant, budget: Budget, tokenizer) -> tuple[dict[str, Any], int]:
    """Size ``variant`` to the parameter budget: the width (a multiple of 8) closest to it,
    then the feed-forward size (the LSTM's embedding size) adjusted to close the gap."""

    def count(config: dict[str, Any]) -> int:
        return count_parameters(variant, config, tokenizer)

    widths = range(8, 2049, 8)
    low, high = 0, len(widths) - 1
    while low < high:  # first width at or above the budget (counts grow with the width)
        middle = (low + high) // 2
        if count(model_config(variant, widths[middle], budget)) < budget.parameters:
            low = middle + 1
        else:
            high = middle
    candidates = [model_config(variant, widths[i], budget) for i in {max(low - 1, 0), low}]
    config = min(candidates, key=lambda c: abs(count(c) - budget.parameters))
    knob = "embedding_size" if _architecture(variant).recurrent else "intermediate_size"
    before = count(config)
    slope = (count({**config, knob: config[knob] + 8}) - before) / 8
    config[knob] = max(8, config[knob] + round((budget.parameters - before) / slope))
    return config, count(config)


# ---------------------------------------------------------------------------- one run


def train_argv(
    variant: Variant, config: dict, seed: int, budget: Budget, dataset: str, paths: dict
) -> list[str]:
    """``train.py`` arguments of one run: the default recipe plus the budget's overrides."""
    dataset_config = {**budget.dataset_config}
    argv = [
        str(RECIPE),
        "--model_type", variant.model_type,
        "--model_config", json.dumps(config),
        "--dataset_name", dataset,
        "--dataset_config", json.dumps(dataset_config) if dataset_config else "null",
        "--max_length", str(budget.max_length),
        "--output_dir", str(paths["output"]),
        "--overwrite_output_dir", "true",
        "--max_steps", str(budget.steps),
        "--per_device_train_batch_size", str(budget.batch_size),
        "--per_device_eval_batch_size", str(2 * budget.batch_size),
        "--learning_rate", str(budget.learning_rate),
        "--warmup_steps", str(max(1, budget.steps // 10)),
        "--lr_scheduler_type", "cosine",
        "--eval_strategy", "steps",
        "--eval_steps", str(budget.eval_every),
        "--logging_steps", str(budget.eval_every),
        "--save_strategy", "steps",
        "--save_steps", str(budget.steps),
        "--save_total_limit", "1",
        "--num_samples", "0",
        "--plots", "false",
        "--disable_tqdm", "true",
        "--seed", str(seed),
        "--use_cpu", str(not torch.cuda.is_available()).lower(),
    ]  # fmt: skip
    if paths.get("cache"):
        argv += ["--dataset_cache_dir", str(paths["cache"])]
    if paths.get("data"):
        argv += ["--data_dir", str(paths["data"])]
    return argv


def training_tokens_per_second(metrics: dict, history: list[dict], budget: Budget) -> float:
    """Training throughput, without the evaluations that ran inside ``train_runtime``."""
    evaluating = sum(entry.get("eval_runtime", 0.0) for entry in history)
    seconds = metrics["train_runtime"] - evaluating
    return budget.steps * budget.batch_size * budget.max_length / max(seconds, 1e-9)


def generation_tokens_per_second(model, tokenizer, new_tokens: int) -> float:
    """Cached sampling speed of one sequence of exactly ``new_tokens`` tokens (no constraint)."""
    prompt = torch.tensor([[tokenizer.bos_token_id]], device=model.device)
    options = dict(do_sample=True, top_k=32, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        model.generate(prompt, max_new_tokens=8, min_new_tokens=8, **options)  # warm-up
        begin = time.perf_counter()
        model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **options)
    return new_tokens / (time.perf_counter() - begin)


def run_once(
    variant: Variant, config: dict, seed: int, budget: Budget, dataset: str, paths: dict, test
) -> dict[str, Any]:
    """Train one model with train.py's code path, then time and score its generations."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from midiformers.evaluation.model_evaluation import EvaluationSettings, sample_and_score
    from midiformers.training import main

    metrics = main(train_argv(variant, config, seed, budget, dataset, paths))
    checkpoint = paths["output"] / f"checkpoint-{budget.steps}" / "trainer_state.json"
    history = json.loads(checkpoint.read_text())["log_history"]
    model = AutoModelForCausalLM.from_pretrained(paths["output"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(paths["output"])
    settings = EvaluationSettings(
        num_samples=budget.num_samples,
        max_new_tokens=budget.max_new_tokens,
        primer_tokens=budget.primer_tokens,
        max_length=budget.max_length,
        batch_size=budget.num_samples,
        seed=seed,
    )
    scored = sample_and_score(model, tokenizer, test, settings)
    areas = scored["overlapping_area"]
    curve = [
        {key: entry[key] for key in ("step", "eval_loss", "eval_accuracy")}
        for entry in history
        if "eval_loss" in entry
    ]
    if not curve or curve[-1]["step"] != budget.steps:  # the final evaluation
        curve.append(
            {
                "step": budget.steps,
                "eval_loss": metrics["eval_loss"],
                "eval_accuracy": metrics["eval_accuracy"],
            }
        )
    return {
        "variant": variant.name,
        "dataset": dataset,
        "seed": seed,
        "parameters": model.num_parameters(),
        "eval_loss": metrics["eval_loss"],
        "eval_perplexity": metrics["eval_perplexity"],
        "eval_accuracy": metrics["eval_accuracy"],
        "train_tokens_per_second": training_tokens_per_second(metrics, history, budget),
        "generation_tokens_per_second": generation_tokens_per_second(
            model, tokenizer, budget.max_new_tokens
        ),
        "oa_free": areas["free_samples_vs_reference_openings"]["overlapping_area"],
        "oa_continuations": areas["continuations_vs_reference_continuations"]["overlapping_area"],
        "curve": curve,
    }


# -------------------------------------------------------------------------- the table

COLUMNS = {
    "eval_loss": ("val loss", "{:.3f}"),
    "eval_perplexity": ("val PPL", "{:.2f}"),
    "eval_accuracy": ("val acc", "{:.3f}"),
    "train_tokens_per_second": ("train tok/s", "{:,.0f}"),
    "generation_tokens_per_second": ("gen tok/s", "{:,.0f}"),
    "oa_free": ("OA free samples", "{:.3f}"),
    "oa_continuations": ("OA continuations", "{:.3f}"),
}


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs: list[dict]) -> dict[str, dict[str, Any]]:
    """Per variant: parameters and (mean, std) of every column over the seeds."""
    summary: dict[str, dict[str, Any]] = {}
    for run in runs:
        summary.setdefault(run["variant"], {"runs": []})["runs"].append(run)
    for row in summary.values():
        row["parameters"] = row["runs"][0]["parameters"]
        row["seeds"] = len(row["runs"])
        for key in COLUMNS:
            row[key] = mean_std([run[key] for run in row["runs"]])
    return summary


def markdown_table(summary: dict[str, dict[str, Any]]) -> str:
    header = ["model", "params", *(title for title, _ in COLUMNS.values())]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name, row in summary.items():
        cells = [name, f"{row['parameters']:,}"]
        for key, (_, form) in COLUMNS.items():
            mean, std = row[key]
            cells.append(f"{form.format(mean)} ± {form.format(std)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(summary: dict[str, dict[str, Any]]) -> str:
    """Who wins on validation loss, and whether the gap exceeds the spread between seeds."""
    ranked = sorted(summary.items(), key=lambda item: item[1]["eval_loss"][0])
    if len(ranked) < 2:
        return ""
    (best, first), (second, runner_up) = ranked[0], ranked[1]
    (loss_1, std_1), (loss_2, std_2) = first["eval_loss"], runner_up["eval_loss"]
    spread = math.hypot(std_1, std_2)
    ratio = (loss_2 - loss_1) / spread if spread > 0 else math.inf
    if ratio >= 3:
        judgement = "a clear win"
    elif ratio >= 1:
        judgement = "a win, but within a few seed deviations"
    else:
        judgement = "not distinguishable from seed noise"
    worst_name, worst = ranked[-1]
    accuracy_leader = max(summary.items(), key=lambda item: item[1]["eval_accuracy"][0])[0]
    return (
        f"**{best}** has the lowest validation loss ({loss_1:.3f} ± {std_1:.3f}); the runner-up "
        f"{second} is {loss_2 - loss_1:.3f} behind ({loss_2:.3f} ± {std_2:.3f}), which is "
        f"{ratio:.1f}× the combined seed standard deviation: {judgement}. The last, {worst_name}, "
        f"is {worst['eval_loss'][0] - loss_1:.3f} behind. Best validation accuracy: "
        f"{accuracy_leader}."
    )


def plot_curves(runs: list[dict], path: Path, title: str) -> None:
    """Validation loss and accuracy against steps, mean ± std over seeds, one line per model."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, row in summarize(runs).items():
        steps = [point["step"] for point in row["runs"][0]["curve"]]
        for axis, key in zip(axes, ("eval_loss", "eval_accuracy"), strict=True):
            values = np.array([[point[key] for point in run["curve"]] for run in row["runs"]])
            mean, std = values.mean(0), values.std(0, ddof=1) if len(values) > 1 else 0 * values[0]
            (line,) = axis.plot(steps, mean, marker="o", markersize=3, label=name)
            axis.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    for axis, label in zip(
        axes, ("validation loss (nats/token)", "validation accuracy"), strict=True
    ):
        axis.set_xlabel("training step")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_yscale("log")  # the first evaluations would flatten the end of the curves
    low, high = axes[0].get_ylim()
    axes[0].set_yticks(np.geomspace(low, high, 7))
    axes[0].yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))
    axes[0].yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0].legend()
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="A tiny budget (smoke test).")
    parser.add_argument("--parameters", type=int, help="Parameter budget of every model.")
    parser.add_argument("--steps", type=int, help="Training steps per run.")
    parser.add_argument("--seeds", type=int, help="Runs per model.")
    parser.add_argument("--max-pieces", type=int, help="Use only this many pieces per corpus.")
    parser.add_argument("--models", nargs="+", help="Only these variants (e.g. 'GPT (rotary)').")
    parser.add_argument("--dataset", action="append", help="A corpus (default bach_chorales).")
    parser.add_argument("--data-dir", action="append", default=[], metavar="NAME=PATH",
                        help="Downloaded data of a corpus; adds that corpus.")  # fmt: skip
    parser.add_argument("--cache-dir", help="datasets cache directory.")
    parser.add_argument("--output", type=Path, default=RESULTS / "compare_architectures",
                        help="Stem of the .json / .md / .png results.")  # fmt: skip
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice).")
    parser.add_argument("--from-json", type=Path, help="Only rebuild table and plot from runs.")
    return parser.parse_args(argv)


def budget_from(args: argparse.Namespace) -> Budget:
    budget = QUICK if args.quick else DEFAULT
    overrides = {
        key: value
        for key, value in (
            ("parameters", args.parameters),
            ("steps", args.steps),
            ("seeds", args.seeds),
        )
        if value is not None
    }
    if overrides.get("steps"):
        overrides["eval_every"] = max(1, overrides["steps"] // 5)
    if args.max_pieces:
        overrides["dataset_config"] = {**budget.dataset_config, "max_pieces": args.max_pieces}
    return Budget(**{**asdict(budget), **overrides})


def datasets_to_run(args: argparse.Namespace) -> dict[str, str | None]:
    data_dirs = {}
    for item in args.data_dir:
        name, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"--data-dir wants NAME=PATH, got {item!r}")
        data_dirs[name] = str(Path(path).expanduser())
    names = list(dict.fromkeys([*(args.dataset or ["bach_chorales"]), *data_dirs]))
    return {name: data_dirs.get(name) for name in names}


def report(results: dict[str, Any], output: Path) -> str:
    """The Markdown of every dataset's table and verdict; also writes the plots."""
    budget = results["budget"]
    lines = [
        "## Architecture comparison (`benchmarks/compare_architectures.py`)",
        "",
        results["machine"],
        "",
        f"Budget: {budget['parameters']:,} parameters per model, {budget['steps']} steps of "
        f"{budget['batch_size']} × {budget['max_length']} tokens, lr {budget['learning_rate']} "
        f"(cosine), {budget['seeds']} seeds; {budget['num_samples']} free samples and "
        f"{budget['num_samples']} continuations of {budget['max_new_tokens']} tokens per run for "
        f"the overlapping areas (OA, 1 = same feature distributions as the test split). "
        f"Took {results['seconds'] / 60:.0f} min ({results['cpu_seconds'] / 60:.0f} min of CPU "
        f"time, {results['torch_threads']} torch threads, load average "
        f"{results['load_average'][1]:.1f} at the end).",
    ]
    for dataset in dict.fromkeys(run["dataset"] for run in results["runs"]):
        runs = [run for run in results["runs"] if run["dataset"] == dataset]
        summary = summarize(runs)
        plot = output.with_name(
            f"{output.name}_{dataset}.png" if dataset != "bach_chorales" else f"{output.name}.png"
        )
        plot_curves(runs, plot, f"Validation curves on {dataset} (mean ± std over seeds)")
        lines += ["", f"### {dataset}", "", markdown_table(summary), "", verdict(summary), "",
                  f"![validation curves]({plot.relative_to(ROOT) if plot.is_relative_to(ROOT) else plot})"]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        markdown = report(results, args.output)
        args.output.with_suffix(".md").write_text(markdown)
        print(markdown)
        return
    from midiformers.data_scripts import load_midi_dataset
    from midiformers.tokenization import MidiTokenizer

    budget = budget_from(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = MidiTokenizer(preset="remi")
    variants = registered_variants()
    if args.models:
        variants = [v for v in variants if v.name in args.models or v.model_type in args.models]
    sized = {v.name: matched_config(v, budget, tokenizer) for v in variants}
    plan = [(d, v, s) for d in datasets_to_run(args) for v in variants for s in range(budget.seeds)]
    started, cpu_started = time.perf_counter(), time.process_time()
    runs = []
    with tempfile.TemporaryDirectory(prefix="compare-architectures-") as scratch:
        tests = {}
        for dataset, data_dir in datasets_to_run(args).items():
            tests[dataset] = load_midi_dataset(
                dataset,
                cache_dir=args.cache_dir,
                data_dir=data_dir,
                split="test",
                **budget.dataset_config,
            )
        for dataset, variant, seed in tqdm(plan, desc="runs", unit="run"):
            output = Path(scratch) / f"{dataset}-{variant.model_type}-{seed}"
            paths = {
                "output": output,
                "cache": args.cache_dir,
                "data": datasets_to_run(args)[dataset],
            }
            config, _ = sized[variant.name]
            runs.append(run_once(variant, config, seed, budget, dataset, paths, tests[dataset]))
            shutil.rmtree(output, ignore_errors=True)
    results = {
        "machine": machine_description(),
        "budget": asdict(budget),
        "configs": {name: {"model_config": c, "parameters": n} for name, (c, n) in sized.items()},
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
        "load_average": os.getloadavg(),
        "torch_threads": torch.get_num_threads(),
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=2))
    markdown = report(results, args.output)
    args.output.with_suffix(".md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
