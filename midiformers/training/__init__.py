"""The training entry point behind ``train.py`` (recipes, Trainer, callbacks, metrics)."""

from .arguments import (
    DataArguments,
    MidiTrainingArguments,
    ModelArguments,
    RecipeError,
    TokenizerArguments,
    parse_recipe,
)
from .run import main

__all__ = [
    "cli",
    "DataArguments",
    "MidiTrainingArguments",
    "ModelArguments",
    "RecipeError",
    "TokenizerArguments",
    "main",
    "parse_recipe",
]


def cli() -> None:
    """Console entry point ``midiformers-train`` (same as ``python train.py``)."""
    import sys

    try:
        main()
    except RecipeError as error:
        sys.exit(f"midiformers-train: {error}")
