"""Hub helpers: model cards and publishing."""

from .model_card import make_model_card
from .push import push_folder

__all__ = ["make_model_card", "push_folder"]
