"""Configuration of the LSTM event language model (the LSTM study of the design notes)."""

# No `from __future__ import annotations`: @strict cannot type-check string annotations.
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
class MidiLSTMConfig(PreTrainedConfig):
    r"""
    Configuration of [`MidiLSTMModel`] and [`MidiLSTMForCausalLM`]: token embedding, a stack of
    unidirectional LSTM layers with dropout between layers and on the output, and a linear head.

    The defaults follow the LSTM study: embedding 256, hidden 512, 2 layers, dropout 0.2.

    Args:
        vocab_size (`int`, *optional*, defaults to 512):
            Number of tokens in the vocabulary.
        embedding_size (`int`, *optional*, defaults to 256):
            Size of the token embeddings fed to the first LSTM layer.
        hidden_size (`int`, *optional*, defaults to 512):
            Size of the hidden and cell state of every LSTM layer.
        num_hidden_layers (`int`, *optional*, defaults to 2):
            Number of stacked LSTM layers.
        hidden_dropout (`float`, *optional*, defaults to 0.2):
            Dropout applied to the output of every LSTM layer (between layers and before the head).
        embedding_dropout (`float`, *optional*, defaults to 0.0):
            Dropout applied to the token embeddings.
        initializer_range (`float`, *optional*, defaults to 1.0):
            Standard deviation of the normal initialiser of the token embeddings (PyTorch's default).
            LSTM and linear layers use PyTorch's uniform initialisers: an LSTM has no normalisation,
            and with the Transformer-style 0.02 its inputs are too small to learn quickly.
        tie_word_embeddings (`bool`, *optional*, defaults to `False`):
            Share the input embedding matrix with the output head. When `embedding_size` differs from
            `hidden_size`, a linear projection from `hidden_size` to `embedding_size` is added before
            the tied head (as in AWD-LSTM).
        use_cache (`bool`, *optional*, defaults to `True`):
            Return the recurrent state `(h, c)` of every layer as the cache, for fast generation.
        pad_token_id / bos_token_id / eos_token_id (`int`, *optional*, defaults to 0 / 1 / 2):
            Special token ids.

    Example:

    ```python
    >>> from midiformers.modeling import MidiLSTMConfig, MidiLSTMForCausalLM
    >>> model = MidiLSTMForCausalLM(MidiLSTMConfig(vocab_size=400))
    ```
    """

    model_type = "midiformers_lstm"

    vocab_size: int = positive_int(default=512)
    embedding_size: int = positive_int(default=256)
    hidden_size: int = positive_int(default=512)
    num_hidden_layers: int = positive_int(default=2)
    hidden_dropout: float | int = dropout_probability(default=0.2)
    embedding_dropout: float | int = dropout_probability(default=0.0)
    initializer_range: float | int = positive_number(default=1.0)
    tie_word_embeddings: bool = False
    use_cache: bool = True
    pad_token_id: int | None = token_id(default=0)
    bos_token_id: int | None = token_id(default=1)
    eos_token_id: int | list[int] | None = eos_token_id(default=2)

    def validate_architecture(self):
        """Cross-field rules (ranges are on the fields): token ids inside the vocabulary."""
        check_token_ids(self)

    @property
    def layer_types(self) -> list[str]:
        """One recurrent-state cache layer per LSTM layer: what transformers' ``DynamicCache`` and
        ``StaticCache`` (``generate(cache_implementation="static")``) build from this config."""
        return ["linear_attention"] * self.num_hidden_layers

    @property
    def uses_output_projection(self) -> bool:
        """Whether the causal LM projects hidden states to `embedding_size` before a tied head."""
        return self.tie_word_embeddings and self.embedding_size != self.hidden_size


__all__ = ["MidiLSTMConfig"]
