"""Configuration of MidiGRU, a recurrent sequence classifier over MIDI tokens (e.g. composers)."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

POOLING_TYPES = ("mean", "max", "last")


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

    vocab_size: int = 512
    embedding_size: int = 128
    hidden_size: int = 256
    num_hidden_layers: int = 2
    bidirectional: bool = True
    pooling: str = "mean"
    hidden_dropout: float | int = 0.1
    classifier_dropout: float | int = 0.1
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.label2id is None:
            self.label2id = {name: index for index, name in self.id2label.items()}

    def validate_architecture(self):
        """Reject sizes and options that cannot build a model, naming the offending field."""
        for name in ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.pooling not in POOLING_TYPES:
            raise ValueError(f"pooling must be one of {POOLING_TYPES}, got {self.pooling!r}")
        for name in ("hidden_dropout", "classifier_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"pad_token_id ({self.pad_token_id}) must be a token id below vocab_size "
                f"({self.vocab_size})"
            )


__all__ = ["MidiGRUConfig"]
