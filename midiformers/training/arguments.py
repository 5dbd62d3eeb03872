"""Arguments of ``train.py``: dataclasses read from a YAML recipe plus command-line overrides.

The recipe style follows the alignment-handbook: ``python train.py recipe.yaml --key value``.
Every key of the recipe must be a field of one of the dataclasses below (or of
``TrainingArguments``); an unknown key stops the run before anything is built.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, TrainingArguments
from transformers.hf_argparser import string_to_bool

logger = logging.getLogger(__name__)

DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"

MODEL_TYPES = {
    "lstm": "midiformers_lstm",
    "gpt": "midiformers_gpt",
    "music_transformer": "midiformers_music_transformer",
    "conformer": "midiformers_conformer",
    "vae": "midiformers_vae",
    "gru": "midiformers_gru",
}
"""Short names accepted by ``--model_type`` and the ``model_type`` they stand for."""


class RecipeError(ValueError):
    """A recipe or command line that cannot describe a training run."""


@dataclass
class ModelArguments:
    """Which model to train, and how big."""

    model_type: str = field(
        default="gpt",
        metadata={"help": f"Architecture: one of {sorted(MODEL_TYPES)} (or a midiformers_* type)."},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Start from this saved folder or Hub id instead of a fresh model."},
    )
    model_config: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "Config overrides, e.g. {hidden_size: 256, num_hidden_layers: 4}; "
            "a JSON object on the command line."
        },
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "'sdpa' (default) or 'eager'."}
    )


@dataclass
class DataArguments:
    """Which corpus, and how it becomes training examples."""

    dataset_name: str = field(
        default="bach_chorales",
        metadata={
            "help": "A corpus of midiformers.data_scripts (bach_chorales, jsb_chorales, ...)."
        },
    )
    dataset_config: dict[str, Any] | None = field(
        default=None,
        metadata={"help": "Builder options, e.g. {max_pieces: 40}; JSON on the command line."},
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder holding a downloaded corpus or your MIDI files."}
    )
    dataset_cache_dir: str | None = field(
        default=None, metadata={"help": "Cache of built datasets (default: datasets' cache)."}
    )
    max_length: int = field(
        default=256, metadata={"help": "Tokens per training block (causal LM) or per piece."}
    )
    transpose_semitones: int = field(
        default=0,
        metadata={"help": "Random pitch transposition of training pieces within +-N semitones."},
    )
    eval_split: str = field(default="validation", metadata={"help": "Split used for evaluation."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N training blocks."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N evaluation blocks."}
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for tokenization."}
    )


@dataclass
class TokenizerArguments:
    """Which tokenizer: a saved one, or a preset (optionally BPE-trained on the training split)."""

    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved MidiTokenizer folder or Hub id."}
    )
    tokenizer_preset: str = field(
        default="remi", metadata={"help": "remi, tsd, midilike, performance or structured."}
    )
    tokenizer_options: dict[str, Any] | None = field(
        default=None, metadata={"help": "miditok config overrides for the preset."}
    )
    bpe_vocab_size: int | None = field(
        default=None, metadata={"help": "Train a BPE vocabulary of this size on the training set."}
    )


@dataclass
class MidiTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus what a MIDI run needs: samples, plots, a fresh start."""

    output_dir: str = field(default="outputs/default", metadata={"help": "Where everything goes."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start from scratch even if output_dir holds checkpoints."},
    )
    num_samples: int = field(
        default=2, metadata={"help": "MIDI samples generated at each evaluation (0: none)."}
    )
    sample_max_new_tokens: int = field(
        default=256, metadata={"help": "Tokens per generated sample."}
    )
    sample_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    sample_top_k: int = field(default=32, metadata={"help": "Top-k of the samples."})
    plots: bool = field(default=True, metadata={"help": "Write PNG curves at the end."})


ALL_ARGUMENTS = (ModelArguments, DataArguments, TokenizerArguments, MidiTrainingArguments)
_DICT_FIELDS = {"model_config", "dataset_config", "tokenizer_options"}


def _bf16_available() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _field_types() -> dict[str, Any]:
    return {f.name: f.type for cls in ALL_ARGUMENTS for f in fields(cls) if f.init}


def _cli_overrides(argv: list[str], parser: HfArgumentParser) -> dict[str, Any]:
    """``--key value`` / ``--key=value`` / ``--flag`` pairs, each converted by its field's type.

    Keys must be spelled out (no argparse abbreviations); dict fields take JSON or YAML.
    """
    actions = {option: action for action in parser._actions for option in action.option_strings}
    known = _field_types()
    overrides: dict[str, Any] = {}
    index = 0
    while index < len(argv):
        item = argv[index]
        if not item.startswith("--"):
            raise RecipeError(f"Unexpected argument {item!r}: overrides look like --key value")
        key, has_value, value = item[2:].replace("-", "_").partition("=")
        if key not in known:
            raise RecipeError(f"Unknown argument --{key}. {_suggest(key, known)}")
        if not has_value:
            next_is_value = index + 1 < len(argv) and not argv[index + 1].startswith("--")
            value = argv[index + 1] if next_is_value else None
            index += 1 if next_is_value else 0
        overrides[key] = _convert(key, value, actions.get(f"--{key}"))
        index += 1
    return overrides


def _convert(key: str, value: str | None, action) -> Any:
    if key in _DICT_FIELDS:
        return yaml.safe_load(value) if value else None
    if value is None:
        if action is not None and action.const is not None:
            return action.const
        if action is not None and action.type is string_to_bool:
            return True
        raise RecipeError(f"--{key} needs a value")
    if action is None or action.type is None:
        return value
    try:
        return action.type(value)
    except (TypeError, ValueError) as error:
        raise RecipeError(f"--{key}: invalid value {value!r} ({error})") from error


def _suggest(key: str, known: dict[str, Any]) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(known), n=3)
    return f"Did you mean {', '.join(close)}?" if close else "Run train.py --help for the list."


def parse_recipe(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, TokenizerArguments, MidiTrainingArguments, Path | None]:
    """Parse ``[recipe.yaml] [--key value ...]`` into the four argument dataclasses.

    With no recipe the default one (``configs/default.yaml``) is used when it exists.
    Raises:
        RecipeError: unknown key (in the recipe or on the command line), unreadable recipe.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        parser = HfArgumentParser(ALL_ARGUMENTS, prog="train.py")
        parser.usage = "train.py [recipe.yaml] [--key value ...]"
        parser.print_help()
        raise SystemExit(0)
    recipe: Path | None = None
    if argv and not argv[0].startswith("--"):
        recipe = Path(argv.pop(0))
    elif DEFAULT_RECIPE.exists():
        recipe = DEFAULT_RECIPE
    values: dict[str, Any] = {}
    if recipe is not None:
        if not recipe.is_file():
            raise RecipeError(f"Recipe {recipe} does not exist")
        try:
            loaded = yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise RecipeError(f"Recipe {recipe} is not valid YAML: {error}") from error
        if not isinstance(loaded, dict):
            raise RecipeError(f"Recipe {recipe} must be a mapping of argument names to values")
        known = _field_types()
        unknown = [key for key in loaded if key not in known]
        if unknown:
            hints = " ".join(_suggest(key, known) for key in unknown)
            raise RecipeError(f"Recipe {recipe}: unknown key(s) {unknown}. {hints}")
        values.update(loaded)
    parser = HfArgumentParser(ALL_ARGUMENTS)
    values.update(_cli_overrides(argv, parser))
    if values.get("bf16") and not _bf16_available():
        logger.warning("bf16 needs a GPU that supports it; training in float32 on this machine")
        values["bf16"] = False
    try:
        model_args, data_args, tok_args, train_args = parser.parse_dict(values)
    except (TypeError, ValueError) as error:
        raise RecipeError(
            f"Invalid training arguments ({recipe or 'command line'}): {error}"
        ) from error
    return model_args, data_args, tok_args, train_args, recipe
