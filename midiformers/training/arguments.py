"""Arguments of ``train.py``: dataclasses read from a YAML recipe plus command-line overrides.

The recipe style follows the alignment-handbook: ``python train.py recipe.yaml --key value``.
Every key of the recipe must be a field of one of the dataclasses below (or of
``TrainingArguments``); an unknown key stops the run before anything is built. Every value,
from the recipe or the command line, is converted by its field's type (PyYAML reads ``1e-3``
as a string) and checked against the field's declared range (``metadata["range"]``), so a
bad recipe fails in one line naming the key before the dataset is built.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import enum
import functools
import logging
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from transformers import HfArgumentParser, TrainingArguments

from ..modeling import ARCHITECTURES

logger = logging.getLogger(__name__)

DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"


class RecipeError(ValueError):
    """A recipe or command line that cannot describe a training run."""


@dataclass(frozen=True)
class Range:
    """The values a numeric argument may take, declared once in its annotation:
    ``learning_rate: Annotated[float, POSITIVE]`` (the argument parser sees a plain float).

    ``also`` lists values allowed outside the interval (``max_steps: -1``) and ``meaning``
    says what they mean, for the error message and ``--help``.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    also: tuple[float, ...] = ()
    meaning: str = ""

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is out of range, or None when it is fine (None values always are)."""
        if value is None or value in self.also:
            return None
        inside = not (isinstance(value, float) and math.isnan(value))
        if inside and self.low is not None:
            inside = value > self.low if self.low_open else value >= self.low
        if inside and self.high is not None:
            inside = value < self.high if self.high_open else value <= self.high
        return None if inside else f"must be {self}, got {value!r}"

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            bound = f"in {left}{_number(self.low)}, {_number(self.high)}{right}"
        elif self.low is not None:
            bound = f"{'>' if self.low_open else '>='} {_number(self.low)}"
        else:
            bound = f"{'<' if self.high_open else '<='} {_number(self.high)}"
        if not self.also:
            return bound
        extra = " or ".join(_number(value) for value in self.also)
        return f"{extra}{f' ({self.meaning})' if self.meaning else ''} or {bound}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


POSITIVE = Range(low=0, low_open=True)
NON_NEGATIVE = Range(low=0)
AT_LEAST_ONE = Range(low=1)
FRACTION = Range(low=0, high=1, high_open=True)
STEPS = Range(low=1, also=(-1,), meaning="train for num_train_epochs")
"""``max_steps``: transformers 5.24 reads any negative value as "use num_train_epochs" but
runs 0 as one step; here -1 means the former and 0 is refused."""
STREAMING_EVAL_SAMPLES = 512
"""Evaluation blocks read from a streamed validation split when max_eval_samples is not set."""


def _inherited(name: str):
    """The field ``name`` of ``TrainingArguments`` (default, help), to redeclare it with a
    range in its annotation."""
    parent = next(item for item in fields(TrainingArguments) if item.name == name)
    if parent.default_factory is not dataclasses.MISSING:
        return field(default_factory=parent.default_factory, metadata=parent.metadata)
    return field(default=parent.default, metadata=parent.metadata)


@dataclass
class ModelArguments:
    """Which model to train, and how big."""

    model_type: str = field(
        default="gpt",
        metadata={
            "help": f"Architecture: one of {', '.join(ARCHITECTURES)} (midiformers.ARCHITECTURES) "
            "or its midiformers_* model_type."
        },
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
    lora: bool = field(
        default=False,
        metadata={
            "help": "Fine-tune model_name_or_path with LoRA adapters (peft); the output folder "
            "holds the adapter only."
        },
    )
    lora_r: Annotated[int | None, AT_LEAST_ONE] = field(
        default=None, metadata={"help": "LoRA rank (default 8)."}
    )
    lora_alpha: Annotated[float | None, POSITIVE] = field(
        default=None, metadata={"help": "LoRA scaling alpha (default 16; the scale is alpha/r)."}
    )
    lora_dropout: Annotated[float | None, FRACTION] = field(
        default=None, metadata={"help": "Dropout on the LoRA input (default 0.05)."}
    )
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Layer names to adapt (default: the architecture's attention and "
            "feed-forward projections, midiformers.training.lora.LORA_TARGET_MODULES)."
        },
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
    max_length: Annotated[int, Range(low=2)] = field(
        default=256, metadata={"help": "Tokens per training block (causal LM) or per piece."}
    )
    transpose_semitones: Annotated[int, Range(low=0, high=127)] = field(
        default=0,
        metadata={"help": "Random pitch transposition of training pieces within +-N semitones."},
    )
    eval_split: str = field(default="validation", metadata={"help": "Split used for evaluation."})
    max_train_samples: Annotated[int | None, AT_LEAST_ONE] = field(
        default=None, metadata={"help": "Keep only the first N training blocks."}
    )
    max_eval_samples: Annotated[int | None, AT_LEAST_ONE] = field(
        default=None,
        metadata={
            "help": "Keep only the first N evaluation blocks (streaming: default "
            f"{STREAMING_EVAL_SAMPLES}, read once and kept in memory)."
        },
    )
    preprocessing_num_workers: Annotated[int | None, AT_LEAST_ONE] = field(
        default=None,
        metadata={"help": "Processes for building the dataset (the first time) and tokenizing."},
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Read the corpus (or pretokenized_dir) as a stream, tokenized and packed as it "
            "is read, instead of building it first; needs max_steps. Resuming continues the "
            "stream where the checkpoint left it."
        },
    )
    shuffle_buffer_size: Annotated[int, NON_NEGATIVE] = field(
        default=1000,
        metadata={
            "help": "Streaming: training blocks held in the (seeded) shuffle buffer; the source "
            "files are shuffled too, anew each pass (0 or 1: stream order)."
        },
    )
    pretokenized_dir: str | None = field(
        default=None,
        metadata={
            "help": "Train on a folder written by pretokenize / midiformers-pretokenize instead "
            "of dataset_name (memory-mapped, or streamed with streaming: true); the tokenizer "
            "saved with it is used unless the recipe names one, which must match it."
        },
    )
    infilling: bool = field(
        default=False,
        metadata={
            "help": "Train for infilling (MMM; needs the mmm preset): examples are windows of "
            "whole bars of every track, and the collator masks random bars or tracks "
            "(midiformers.training.infilling.DataCollatorForInfilling)."
        },
    )
    infill_probability: Annotated[float, Range(low=0, high=1)] = field(
        default=0.75,
        metadata={"help": "Infilling: share of examples with holes (the rest stay whole)."},
    )
    infill_track_probability: Annotated[float, Range(low=0, high=1)] = field(
        default=0.25,
        metadata={"help": "Infilling: share of those whose holes are one whole track."},
    )
    infill_max_bars: Annotated[int, AT_LEAST_ONE] = field(
        default=4,
        metadata={"help": "Infilling: longest span of masked bars (in random tracks)."},
    )
    infill_loss: Literal["all", "fills"] = field(
        default="all",
        metadata={"help": "Infilling: loss on every token (as MMM) or on the fills only."},
    )
    control_tracks_ratio: Annotated[float | None, Range(low=0, high=1)] = field(
        default=None,
        metadata={
            "help": "Attribute controls (tokenizers that have them, e.g. the mmm preset): share "
            "of each track's track-level control tokens written in training (default: drawn "
            "uniformly in [0, 1] per track)."
        },
    )
    control_bars_ratio: Annotated[float | None, Range(low=0, high=1)] = field(
        default=None,
        metadata={
            "help": "Attribute controls: share of the bars that get each bar-level control "
            "(default: drawn uniformly in [0, 1] per track and control)."
        },
    )

    @property
    def control_ratios(self) -> tuple:
        """``(tracks_ratio, bars_ratio)`` for ``tokenize_dataset`` (a ratio not set is drawn
        in [0, 1]); used only when the tokenizer has attribute controls."""
        return tuple(
            (0.0, 1.0) if ratio is None else ratio
            for ratio in (self.control_tracks_ratio, self.control_bars_ratio)
        )


@dataclass
class TokenizerArguments:
    """Which tokenizer: a saved one, or a preset (optionally BPE-trained on the training split)."""

    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved MidiTokenizer folder or Hub id."}
    )
    tokenizer_preset: str = field(
        default="remi",
        metadata={"help": "remi, tsd, midilike, performance, structured or mmm."},
    )
    tokenizer_options: dict[str, Any] | None = field(
        default=None, metadata={"help": "miditok config overrides for the preset."}
    )
    bpe_vocab_size: Annotated[int | None, AT_LEAST_ONE] = field(
        default=None, metadata={"help": "Train a BPE vocabulary of this size on the training set."}
    )


def _secret_fields(cls: type) -> list[str]:
    """The fields that hold credentials (``hub_token``): the ones transformers redacts too."""
    return [item.name for item in fields(cls) if item.name.endswith("_token")]


@dataclass
class MidiTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus what a MIDI run needs: samples, plots, a fresh start.

    Pickling (``training_args.bin``, which ``Trainer`` writes into every checkpoint and the
    final folder) drops ``hub_token``; the token stays in memory for pushing.
    """

    output_dir: str = field(default="outputs/default", metadata={"help": "Where everything goes."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start from scratch even if output_dir holds checkpoints."},
    )
    num_samples: Annotated[int, NON_NEGATIVE] = field(
        default=2, metadata={"help": "MIDI samples generated at each evaluation (0: none)."}
    )
    sample_max_new_tokens: Annotated[int, AT_LEAST_ONE] = field(
        default=256, metadata={"help": "Tokens per generated sample."}
    )
    sample_temperature: Annotated[float, POSITIVE] = field(
        default=1.0, metadata={"help": "Sampling temperature."}
    )
    sample_top_k: Annotated[int, NON_NEGATIVE] = field(
        default=32, metadata={"help": "Top-k of the samples (0: no limit)."}
    )
    plots: bool = field(default=True, metadata={"help": "Write PNG curves at the end."})
    torch_num_threads: Annotated[int | None, AT_LEAST_ONE] = field(
        default=None,
        metadata={
            "help": "torch CPU threads (torch.set_num_threads; default: torch's choice). Small "
            "models train fastest on 1, and several collapse on a CPU shared with other jobs."
        },
    )

    # TrainingArguments fields redeclared (same default and help) only to declare a range.
    max_steps: Annotated[int, STEPS] = _inherited("max_steps")
    num_train_epochs: Annotated[float, POSITIVE] = _inherited("num_train_epochs")
    learning_rate: Annotated[float, POSITIVE] = _inherited("learning_rate")
    per_device_train_batch_size: Annotated[int, AT_LEAST_ONE] = _inherited(
        "per_device_train_batch_size"
    )
    per_device_eval_batch_size: Annotated[int, AT_LEAST_ONE] = _inherited(
        "per_device_eval_batch_size"
    )
    gradient_accumulation_steps: Annotated[int, AT_LEAST_ONE] = _inherited(
        "gradient_accumulation_steps"
    )
    warmup_steps: Annotated[float, NON_NEGATIVE] = _inherited("warmup_steps")
    weight_decay: Annotated[float, NON_NEGATIVE] = _inherited("weight_decay")
    adam_beta1: Annotated[float, FRACTION] = _inherited("adam_beta1")
    adam_beta2: Annotated[float, FRACTION] = _inherited("adam_beta2")
    adam_epsilon: Annotated[float, NON_NEGATIVE] = _inherited("adam_epsilon")
    max_grad_norm: Annotated[float, NON_NEGATIVE] = _inherited("max_grad_norm")
    label_smoothing_factor: Annotated[float, FRACTION] = _inherited("label_smoothing_factor")
    logging_steps: Annotated[float, POSITIVE] = _inherited("logging_steps")
    eval_steps: Annotated[float | None, POSITIVE] = _inherited("eval_steps")
    save_steps: Annotated[float, POSITIVE] = _inherited("save_steps")
    save_total_limit: Annotated[int | None, AT_LEAST_ONE] = _inherited("save_total_limit")
    seed: Annotated[int, Range(low=0, high=2**32 - 1)] = _inherited("seed")
    dataloader_num_workers: Annotated[int, NON_NEGATIVE] = _inherited("dataloader_num_workers")

    def __getstate__(self) -> dict[str, Any]:
        """What pickle (``torch.save``) stores: everything but the secrets."""
        state = dict(self.__dict__)
        for name in _secret_fields(type(self)):
            state[name] = None
        return state

    def __copy__(self) -> MidiTrainingArguments:
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone

    def __deepcopy__(self, memo: dict) -> MidiTrainingArguments:
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        clone.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return clone


ALL_ARGUMENTS = (ModelArguments, DataArguments, TokenizerArguments, MidiTrainingArguments)


@dataclass(frozen=True)
class _Spec:
    """A recipe key: its declared type and its range, if any."""

    type: Any
    range: Range | None


@functools.cache
def _specs() -> dict[str, _Spec]:
    specs = {}
    for cls in ALL_ARGUMENTS:
        hints = typing.get_type_hints(cls, include_extras=True)
        for item in fields(cls):
            if not item.init:
                continue
            hint, valid = hints[item.name], None
            if typing.get_origin(hint) is Annotated:
                hint, *extras = typing.get_args(hint)
                valid = next((extra for extra in extras if isinstance(extra, Range)), None)
            specs[item.name] = _Spec(hint, valid)
    return specs


# ---- conversion by type ------------------------------------------------------------------

_TRUE = {"true", "yes", "y", "t", "on", "1"}
_FALSE = {"false", "no", "n", "f", "off", "0"}
_NULL = {"null", "none", "~"}
_NONE_TYPE = type(None)


class _Mismatch(ValueError):
    """A value that its field's type cannot take (the message says what was expected)."""


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _describe(tp: Any) -> str:
    """How an error message names a type: 'an integer', 'a number', 'one of ...'."""
    origin = typing.get_origin(tp)
    if _is_union(tp):
        options = sorted(typing.get_args(tp), key=lambda arg: arg is _NONE_TYPE)  # null last
        return " or ".join(dict.fromkeys(_describe(arg) for arg in options))
    if tp is _NONE_TYPE:
        return "null"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(member.value) for member in tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(value) for value in typing.get_args(tp))
    if tp is list or origin is list:
        return "a list"
    if tp is dict or origin is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _expected(tp: Any, value: Any) -> _Mismatch:
    return _Mismatch(f"expected {_describe(tp)}, got {value!r}")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _expected(bool, value)


def _to_int(value: Any) -> int:
    number = value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                number = float(value.strip())
            except ValueError:
                raise _expected(int, value) from None
    if isinstance(number, bool):
        raise _expected(int, value)
    if isinstance(number, int):
        return number
    if isinstance(number, float) and number.is_integer():
        return int(number)
    raise _expected(int, value)


def _to_float(value: Any) -> float:
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _expected(float, value) from None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or math.isnan(number):
        raise _expected(float, value)
    return float(number)


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # an unquoted number in YAML where a name is expected
    raise _expected(str, value)


def _to_choice(tp: Any, value: Any) -> Any:
    """A member of an Enum (kept as its value, as the argument parser does) or a Literal."""
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        choices = [member.value for member in tp]
    else:
        choices = list(typing.get_args(tp))
    for choice in choices:
        if value == choice or (isinstance(value, str) and value == str(choice)):
            return choice
    close = difflib.get_close_matches(str(value), [str(choice) for choice in choices], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise _Mismatch(f"expected {_describe(tp)}, got {value!r}{hint}")


def _to_list(tp: Any, value: Any, cli: bool) -> list:
    item_type = (typing.get_args(tp) or (Any,))[0]
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise _expected(tp, value) from None
    if isinstance(value, dict) or value is None:
        raise _expected(tp, value)
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    converted = []
    for index, item in enumerate(items):
        try:
            converted.append(coerce(item, item_type, cli=cli))
        except _Mismatch as error:
            raise _Mismatch(f"item {index}: {error}") from None
    return converted


def _to_dict(tp: Any, value: Any) -> dict:
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise _Mismatch(f"expected a mapping (JSON or YAML), got {value!r}") from None
    if not isinstance(value, dict):
        raise _Mismatch(f"expected a mapping (a JSON object on the command line), got {value!r}")
    return value


def _to_union(tp: Any, value: Any, cli: bool) -> Any:
    options = [arg for arg in typing.get_args(tp) if arg is not _NONE_TYPE]
    optional = len(options) < len(typing.get_args(tp))
    if value is None:
        if optional:
            return None
        raise _expected(tp, value)
    if str in options and any(isinstance(o, type) and issubclass(o, enum.Enum) for o in options):
        options.remove(str)  # `SchedulerType | str`: the string must name a member
    if cli and optional and str not in options and str(value).strip().lower() in _NULL:
        return None
    errors = []
    for option in options:
        try:
            return coerce(value, option, cli=cli)
        except _Mismatch as error:
            errors.append(error)
    if len(errors) == 1:
        raise errors[0]
    raise _expected(tp, value)


def coerce(value: Any, tp: Any, *, cli: bool = False) -> Any:
    """Convert a recipe value (or a command-line string, ``cli=True``) to the type ``tp``.

    Raises:
        _Mismatch: the value cannot be read as ``tp`` (the message says what was expected).
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if _is_union(tp):
        return _to_union(tp, value, cli)
    if value is None:
        raise _expected(tp, value)
    if tp is bool:
        return _to_bool(value)
    if tp is int:
        return _to_int(value)
    if tp is float:
        return _to_float(value)
    if tp is str:
        return _to_str(value)
    if origin is Literal or (isinstance(tp, type) and issubclass(tp, enum.Enum)):
        return _to_choice(tp, value)
    if tp is list or origin is list:
        return _to_list(tp, value, cli)
    if tp is dict or origin is dict:
        return _to_dict(tp, value)
    return value  # other classes (e.g. ParallelismConfig): transformers checks them


def _checked(key: str, value: Any, where: str, cli: bool = False) -> Any:
    """``value`` converted to ``key``'s type and checked against its range; or a RecipeError
    naming ``where`` (the recipe's key, or the command-line option)."""
    spec = _specs()[key]
    try:
        value = coerce(value, spec.type, cli=cli)
    except _Mismatch as error:
        raise RecipeError(f"{where}: {error}") from None
    problem = spec.range.problem(value) if spec.range else None
    if problem:
        raise RecipeError(f"{where}: {problem}")
    return value


# ---- recipe and command line -------------------------------------------------------------


def _bf16_available() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _takes_flag(tp: Any) -> bool:
    """Whether ``--key`` alone (no value) means True: bool and optional bool fields."""
    return tp is bool or (_is_union(tp) and bool in typing.get_args(tp))


def _takes_list(tp: Any) -> bool:
    if _is_union(tp):
        return any(_takes_list(arg) for arg in typing.get_args(tp))
    return tp is list or typing.get_origin(tp) is list


def _cli_overrides(argv: list[str]) -> dict[str, Any]:
    """``--key value`` / ``--key=value`` / ``--flag`` / ``--no_flag`` pairs, each converted
    by its field's type. Keys must be spelled out; dicts take JSON or YAML; list fields take
    several values."""
    specs = _specs()
    overrides: dict[str, Any] = {}
    index = 0
    while index < len(argv):
        item = argv[index]
        index += 1
        if not item.startswith("--"):
            raise RecipeError(f"Unexpected argument {item!r}: overrides look like --key value")
        name, has_value, value = item[2:].partition("=")
        key = name.replace("-", "_")
        if key not in specs:
            negated = key.removeprefix("no_")
            if key.startswith("no_") and negated in specs and _takes_flag(specs[negated].type):
                if has_value:
                    raise RecipeError(f"--{name} takes no value")
                overrides[negated] = False
                continue
            raise RecipeError(f"Unknown argument --{name}. {_suggest(key, specs)}")
        if not has_value:
            values = []
            while index < len(argv) and not argv[index].startswith("--"):
                values.append(argv[index])
                index += 1
                if not _takes_list(specs[key].type):
                    break
            if not values:
                if not _takes_flag(specs[key].type):
                    raise RecipeError(f"--{name} needs a value")
                values = ["true"]
            value = values if len(values) > 1 else values[0]
        overrides[key] = _checked(key, value, f"--{name}", cli=True)
    return overrides


def _suggest(key: str, known: dict[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(known), n=3)
    return f"Did you mean {', '.join(close)}?" if close else "Run train.py --help for the list."


def _print_help() -> None:
    parser = HfArgumentParser(ALL_ARGUMENTS, prog="train.py")
    parser.usage = "train.py [recipe.yaml] [--key value ...]"
    for action in parser._actions:
        spec = _specs().get(action.dest)
        if spec is not None and spec.range is not None:
            action.help = f"{action.help or ''} Must be {spec.range}.".strip()
    parser.print_help()


def _read_recipe(recipe: Path) -> dict[str, Any]:
    """The recipe's values, each converted and checked; unknown keys are named together."""
    if not recipe.is_file():
        raise RecipeError(f"Recipe {recipe} does not exist")
    try:
        loaded = yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        problem = " ".join(str(error).split())
        raise RecipeError(f"Recipe {recipe} is not valid YAML: {problem}") from None
    if not isinstance(loaded, dict):
        raise RecipeError(f"Recipe {recipe} must be a mapping of argument names to values")
    specs = _specs()
    unknown = [key for key in loaded if key not in specs]
    if unknown:
        hints = " ".join(_suggest(str(key), specs) for key in unknown)
        raise RecipeError(f"Recipe {recipe}: unknown key(s) {unknown}. {hints}")
    for secret in _secret_fields(MidiTrainingArguments):
        if loaded.get(secret):
            logger.warning(
                "%s holds %s: keep secrets out of recipe files (use `hf auth login` or HF_TOKEN)",
                recipe,
                secret,
            )
    return {key: _checked(key, value, f"{recipe}: {key}") for key, value in loaded.items()}


def _cpu_process_group() -> bool:
    """Several launched processes (``WORLD_SIZE`` > 1) on a machine without a GPU: they form a
    process group only with ``use_cpu`` (gloo); without it each trains its own copy."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch

    return not torch.cuda.is_available() and not (
        hasattr(torch, "xpu") and torch.xpu.is_available()
    )


def parse_recipe(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, TokenizerArguments, MidiTrainingArguments, Path | None]:
    """Parse ``[recipe.yaml] [--key value ...]`` into the four argument dataclasses.

    With no recipe the default one (``configs/default.yaml``) is used when it exists.
    Values are converted by their field's type and checked against its range first.
    Raises:
        RecipeError: unknown key, a value of the wrong type or out of range, unreadable recipe.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        _print_help()
        raise SystemExit(0)
    recipe: Path | None = None
    if argv and not argv[0].startswith("--"):
        recipe = Path(argv.pop(0))
    elif DEFAULT_RECIPE.exists():
        recipe = DEFAULT_RECIPE
    values: dict[str, Any] = _read_recipe(recipe) if recipe is not None else {}
    values.update(_cli_overrides(argv))
    if "use_cpu" not in values and _cpu_process_group():
        logger.info("%s processes and no GPU: use_cpu (DDP over gloo)", os.environ["WORLD_SIZE"])
        values["use_cpu"] = True
    if values.get("bf16") and not _bf16_available():
        logger.warning("bf16 needs a GPU that supports it; training in float32 on this machine")
        values["bf16"] = False
    try:
        model_args, data_args, tok_args, train_args = HfArgumentParser(ALL_ARGUMENTS).parse_dict(
            values
        )
    except (TypeError, ValueError) as error:
        problem = " ".join(str(error).split())
        raise RecipeError(
            f"Invalid training arguments ({recipe or 'command line'}): {problem}"
        ) from None
    return model_args, data_args, tok_args, train_args, recipe
