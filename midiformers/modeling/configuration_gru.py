"""Configuration of MidiGRU, a recurrent sequence classifier over MIDI tokens (e.g. composers)."""

# No `from __future__ import annotations`: @strict cannot type-check string annotations.
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ._config_fields import (
    check_token_ids,
    dropout_probability,
    eos_token_id,
    positive_int,
    positive_number,
    token_id,
)


@strict
class MidiGRUConfig(PreTrainedConfig):
    r"""
    Configuration of a [`MidiGRUForSequenceClassification`]: token embedding, a (optionally
    bidirectional) multi-layer GRU, pooling over the real (unmasked) tokens and a linear head.
    The classes are the labels: pass `id2label` from the dataset's `ClassLabel`.

    Args:
        vocab_size (`int`, defaults to 512): number of MIDI tokens (the tokenizer's `len()`).
        embedding_size (`int`, defaults to 128): width of the token embedding.
        hidden_size (`int`, defaults to 256): GRU state size per direction.
        num_hidden_layers (`int`, defaults to 2): stacked GRU layers.
        bidirectional (`bool`, defaults to `True`): run each layer in both directions.
        pooling (`str`, defaults to `"mean"`): `"mean"` or `"max"` over the real tokens, or
            `"last"` (the final GRU state of each direction).
        hidden_dropout (`float`, defaults to 0.1): dropout on embeddings and between GRU layers.
        classifier_dropout (`float`, defaults to 0.1): dropout before the classification head.
        initializer_range (`float`, defaults to 0.02): std of the normal weight initialisation.

    Example:

    ```python
    >>> from midiformers import MidiGRUConfig, MidiGRUForSequenceClassification
    >>> config = MidiGRUConfig(vocab_size=300, id2label={0: "bach", 1: "mozart"})
    >>> model = MidiGRUForSequenceClassification(config)
    ```
    """

    model_type = "midiformers_gru"

    vocab_size: int = positive_int(default=512)
    embedding_size: int = positive_int(default=128)
    hidden_size: int = positive_int(default=256)
    num_hidden_layers: int = positive_int(default=2)
    bidirectional: bool = True
    pooling: Literal["mean", "max", "last"] = "mean"
    hidden_dropout: float | int = dropout_probability(default=0.1)
    classifier_dropout: float | int = dropout_probability(default=0.1)
    initializer_range: float = positive_number(default=0.02)
    pad_token_id: int | None = token_id(default=0)
    bos_token_id: int | None = token_id(default=1)
    eos_token_id: int | list[int] | None = eos_token_id(default=2)

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.label2id is None:
            self.label2id = {name: index for index, name in self.id2label.items()}

    def validate_architecture(self):
        """Cross-field rules (ranges are on the fields): token ids inside the vocabulary."""
        check_token_ids(self)


__all__ = ["MidiGRUConfig"]
