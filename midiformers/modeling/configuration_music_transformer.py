"""Configuration of the Music Transformer (Huang et al., 2018): relative self-attention over MIDI."""

# No `from __future__ import annotations`: @strict cannot type-check string annotations.
from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.activations import ACT2FN


@strict
class MusicTransformerConfig(PreTrainedConfig):
    r"""
    Configuration of a [`MusicTransformerModel`]: a pre-norm decoder-only Transformer whose
    self-attention adds learned *relative* position logits (Shaw et al. 2018, with the
    memory-efficient "skew" of Huang et al. 2018) instead of absolute positions.

    Every layer learns one embedding per relative distance `0 .. max_relative_position`; a query
    attending a key further back than `max_relative_position` tokens uses the embedding of
    `max_relative_position` (the distance is clipped), so the model runs on sequences of any
    length. The embeddings are learned per head, as in the paper, unless
    `shared_relative_embeddings` is set (one table per layer shared by its heads, as several
    re-implementations do; `num_attention_heads` times fewer relative parameters).

    Args:
        vocab_size (`int`, defaults to 388): number of MIDI tokens (the tokenizer's `len()`);
            388 is the performance-event vocabulary of the paper.
        hidden_size (`int`, defaults to 512): width of the residual stream.
        num_hidden_layers (`int`, defaults to 6): number of decoder blocks.
        num_attention_heads (`int`, defaults to 8): attention heads; must divide `hidden_size`.
        intermediate_size (`int`, defaults to 2048): width of the feed-forward layer.
        max_position_embeddings (`int`, defaults to 2048): sequence length the model is meant for
            (training length, default generation limit); relative attention has no hard limit.
        max_relative_position (`int`, defaults to 1024): largest distinguished relative distance;
            longer distances are clipped to it.
        shared_relative_embeddings (`bool`, defaults to `False`): share each layer's relative
            embeddings across its heads instead of learning them per head.
        hidden_act (`str`, defaults to `"relu"`): feed-forward activation (any `ACT2FN` key).
        hidden_dropout (`float`, defaults to 0.1): dropout on embeddings and residual branches.
        attention_dropout (`float`, defaults to 0.1): dropout on attention probabilities.
        attention_bias (`bool`, defaults to `True`): biases in the q/k/v/o projections.
        initializer_range (`float`, defaults to 0.02): std of the normal weight initialisation
            (relative embeddings included).
        layer_norm_eps (`float`, defaults to 1e-6): epsilon of the LayerNorms.
        tie_word_embeddings (`bool`, defaults to `True`): share the input embedding and LM head.

    Example:

    ```python
    >>> from midiformers import MusicTransformerConfig, MusicTransformerForCausalLM
    >>> config = MusicTransformerConfig(vocab_size=300, max_relative_position=512)
    >>> model = MusicTransformerForCausalLM(config)
    ```
    """

    model_type = "midiformers_music_transformer"
    keys_to_ignore_at_inference = ["cache"]

    vocab_size: int = 388
    hidden_size: int = 512
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    intermediate_size: int = 2048
    max_position_embeddings: int = 2048
    max_relative_position: int = 1024
    shared_relative_embeddings: bool = False
    hidden_act: str = "relu"
    hidden_dropout: float | int = 0.1
    attention_dropout: float | int = 0.1
    attention_bias: bool = True
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-6
    use_cache: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = True

    def validate_architecture(self):
        """Reject sizes that cannot build a model, naming the offending field."""
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act must be one of {sorted(ACT2FN)}, got {self.hidden_act!r}")

    def validate_max_relative_position(self):
        """At least one distance besides 0 must be distinguishable."""
        if self.max_relative_position <= 0:
            raise ValueError(
                f"max_relative_position must be a positive integer, got {self.max_relative_position}"
            )

    def validate_dropout(self):
        """Dropout probabilities live in [0, 1)."""
        for name in ("hidden_dropout", "attention_dropout"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}")

    def validate_special_token_ids(self):
        """Special ids index the embedding table, so they must lie inside the vocabulary."""
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            values = value if isinstance(value, list) else [value]
            for token_id in values:
                if token_id is not None and not 0 <= token_id < self.vocab_size:
                    raise ValueError(
                        f"{name} ({value}) must lie in [0, vocab_size ({self.vocab_size}))"
                    )


__all__ = ["MusicTransformerConfig"]
