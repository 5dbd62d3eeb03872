"""Configuration of MidiGPT, a decoder-only Transformer over MIDI tokens."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

POSITION_EMBEDDING_TYPES = ("absolute", "rotary")


@strict
class MidiGPTConfig(PreTrainedConfig):
    r"""
    Configuration of a [`MidiGPTModel`]: a pre-norm decoder-only Transformer, the baseline of the
    Conformer-lite study and the model of the basic MIDI transformer study.

    Args:
        vocab_size (`int`, defaults to 512): number of MIDI tokens (the tokenizer's `len()`).
        hidden_size (`int`, defaults to 512): width of the residual stream.
        num_hidden_layers (`int`, defaults to 6): number of Transformer blocks.
        num_attention_heads (`int`, defaults to 8): attention heads; must divide `hidden_size`.
        intermediate_size (`int`, defaults to 2048): width of the feed-forward layer.
        max_position_embeddings (`int`, defaults to 2048): longest sequence; the size of the learned
            position table for `"absolute"` positions.
        position_embedding_type (`str`, defaults to `"absolute"`): `"absolute"` (learned table) or
            `"rotary"` (RoPE, Su et al. 2021).
        rope_theta (`float`, defaults to 10000.0): base of the rotary frequencies.
        hidden_act (`str`, defaults to `"gelu"`): feed-forward activation (any `ACT2FN` key).
        hidden_dropout (`float`, defaults to 0.1): dropout on embeddings and residual branches.
        attention_dropout (`float`, defaults to 0.1): dropout on attention probabilities.
        attention_bias (`bool`, defaults to `True`): biases in the q/k/v/o projections.
        initializer_range (`float`, defaults to 0.02): std of the normal weight initialisation.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of the LayerNorms.
        tie_word_embeddings (`bool`, defaults to `True`): share the input embedding and LM head.

    Example:

    ```python
    >>> from midiformers import MidiGPTConfig, MidiGPTForCausalLM
    >>> config = MidiGPTConfig(vocab_size=300, position_embedding_type="rotary")
    >>> model = MidiGPTForCausalLM(config)
    ```
    """

    model_type = "midiformers_gpt"
    keys_to_ignore_at_inference = ["cache"]

    vocab_size: int = 512
    hidden_size: int = 512
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    intermediate_size: int = 2048
    max_position_embeddings: int = 2048
    position_embedding_type: str = "absolute"
    rope_theta: float | int = 10000.0
    hidden_act: str = "gelu"
    hidden_dropout: float | int = 0.1
    attention_dropout: float | int = 0.1
    attention_bias: bool = True
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    use_cache: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = True

    def validate_architecture(self):
        """Reject sizes and options that cannot build a model, naming the offending field."""
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
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise ValueError(
                f"position_embedding_type must be one of {POSITION_EMBEDDING_TYPES}, "
                f"got {self.position_embedding_type!r}"
            )
        head_dim = self.hidden_size // self.num_attention_heads
        if self.position_embedding_type == "rotary" and head_dim % 2:
            raise ValueError(
                f"position_embedding_type 'rotary' needs an even head dimension: hidden_size "
                f"({self.hidden_size}) / num_attention_heads ({self.num_attention_heads}) = {head_dim}"
            )
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act must be one of {sorted(ACT2FN)}, got {self.hidden_act!r}")
        if self.rope_theta <= 0:
            raise ValueError(f"rope_theta must be positive, got {self.rope_theta}")
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


__all__ = ["MidiGPTConfig"]
