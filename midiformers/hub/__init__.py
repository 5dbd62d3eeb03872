"""Hub helpers: model cards, publishing models, datasets and folders, and demo Spaces."""

from .model_card import make_model_card
from .push import (
    push_dataset,
    push_folder,
    push_model,
    save_dataset_for_hub,
    save_model_for_hub,
)
from .space import write_space

__all__ = [
    "make_model_card",
    "push_dataset",
    "push_folder",
    "push_model",
    "save_dataset_for_hub",
    "save_model_for_hub",
    "write_space",
]
