"""``midiformers-eval MODEL --dataset NAME --split test``: score a model, print and save the report.

Writes ``evaluation.json`` and ``evaluation.md`` (and the generated MIDI samples) into
``--output-dir`` (default: ``MODEL/evaluation`` for a local folder, else
``evaluation/<MODEL>``) and prints the Markdown report.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .model_evaluation import EvaluationSettings, evaluate_model, markdown_report

logger = logging.getLogger("midiformers.eval")


class EvalError(ValueError):
    """A command line that cannot be evaluated (bad model, dataset or option)."""


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"max_pieces\": 20}'")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = EvaluationSettings()
    parser = argparse.ArgumentParser(
        prog="midiformers-eval",
        description="Token NLL / perplexity / accuracy and musical metrics of generated samples "
        "for a midiformers causal LM, against a dataset split.",
    )
    parser.add_argument("model", metavar="MODEL", help="A saved model folder or a Hub id.")
    parser.add_argument("--dataset", default="bach_chorales", help="A midiformers corpus.")
    parser.add_argument(
        "--split", default="test", help="The split to score and sample primers from."
    )
    parser.add_argument(
        "--dataset-config", type=_json_object, default={}, help="Builder options as JSON."
    )
    parser.add_argument("--data-dir", help="Folder holding a downloaded corpus.")
    parser.add_argument("--cache-dir", help="datasets cache directory.")
    parser.add_argument("--output-dir", help="Where evaluation.json / .md and samples go.")
    parser.add_argument("--num-samples", type=int, default=defaults.num_samples,
                        help="Continuations, and as many free samples.")  # fmt: skip
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--primer-tokens", type=int, default=defaults.primer_tokens)
    parser.add_argument("--max-length", type=int, default=defaults.max_length,
                        help="Block length for the token metrics.")  # fmt: skip
    parser.add_argument("--max-eval-blocks", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--top-k", type=int, default=defaults.top_k)
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--no-grammar", action="store_true",
                        help="Sample without the grammar-constrained logits processor.")  # fmt: skip
    return parser


def _load(model_name: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import midiformers  # noqa: F401  (registers the Auto classes)

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_name)
        model = AutoModelForCausalLM.from_pretrained(model_name)
    except (OSError, ValueError) as error:
        raise EvalError(f"Cannot load a model and tokenizer from {model_name!r}: {error}") from None
    if not hasattr(tokenizer, "to_score"):
        raise EvalError(f"{model_name!r} has a {type(tokenizer).__name__}, not a MidiTokenizer")
    return model.to("cuda" if torch.cuda.is_available() else "cpu"), tokenizer


def _load_split(args: argparse.Namespace) -> Any:
    from midiformers.data_scripts import load_midi_dataset

    try:
        dataset = load_midi_dataset(
            args.dataset, cache_dir=args.cache_dir, data_dir=args.data_dir, **args.dataset_config
        )
    except (ValueError, FileNotFoundError) as error:
        raise EvalError(f"Dataset {args.dataset!r}: {error}") from None
    if args.split not in dataset:
        raise EvalError(
            f"Dataset {args.dataset!r} has no split {args.split!r}; it has {sorted(dataset)}"
        )
    if len(dataset[args.split]) == 0:
        raise EvalError(f"Split {args.split!r} of {args.dataset!r} is empty")
    return dataset[args.split]


def default_output_dir(model_name: str) -> Path:
    local = Path(model_name)
    if local.is_dir():
        return local / "evaluation"
    return Path("evaluation") / model_name.replace("/", "--")


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the evaluation; returns the report (also written to the output folder)."""
    args = build_parser().parse_args(argv)
    settings = EvaluationSettings(
        num_samples=args.num_samples,
        max_new_tokens=args.max_new_tokens,
        primer_tokens=args.primer_tokens,
        max_length=args.max_length,
        batch_size=args.batch_size,
        top_k=args.top_k,
        temperature=args.temperature,
        seed=args.seed,
        grammar=not args.no_grammar,
        max_eval_blocks=args.max_eval_blocks,
    )
    try:
        settings.check()
    except ValueError as error:
        raise EvalError(str(error)) from None
    output_dir = Path(args.output_dir) if args.output_dir else default_output_dir(args.model)
    model, tokenizer = _load(args.model)
    pieces = _load_split(args)
    logger.info(
        "Evaluating %s on %s/%s (%d pieces)", args.model, args.dataset, args.split, len(pieces)
    )
    try:
        report = evaluate_model(model, tokenizer, pieces, settings, output_dir / "samples")
    except ValueError as error:
        raise EvalError(str(error)) from None
    report = {
        "model": args.model,
        "dataset": args.dataset,
        "dataset_config": args.dataset_config,
        "split": args.split,
        **report,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "evaluation.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    markdown = markdown_report(report, title=f"{args.model} on {args.dataset}/{args.split}")
    (output_dir / "evaluation.md").write_text(markdown)
    print(markdown)
    logger.info("Wrote %s and %s", output_dir / "evaluation.json", output_dir / "evaluation.md")
    return report


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``midiformers-eval``."""
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO
    )
    try:
        run(argv)
    except EvalError as error:
        sys.exit(f"midiformers-eval: {error}")


if __name__ == "__main__":
    main()
