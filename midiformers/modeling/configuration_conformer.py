"""Configuration of the causal Conformer-lite MIDI language model.

No ``from __future__ import annotations`` here: ``@strict`` checks field types only when the
annotations are real objects.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

ATTENTION_TYPES = ("rotary", "relative")
"""Self-attention variants a Conformer block can use."""


@strict
class MidiConformerConfig(PreTrainedConfig):
    r"""Configuration of [`MidiConformerForCausalLM`], a causal Conformer-lite (Gulati et al., 2020).

    Each block is macaron-shaped: half-step feed-forward, multi-head self-attention, a causal
    convolution module, a second half-step feed-forward and a final LayerNorm.

    Args:
        vocab_size (`int`, defaults to 512): number of MIDI tokens.
        hidden_size (`int`, defaults to 256): width of the residual stream.
        num_hidden_layers (`int`, defaults to 6): number of Conformer blocks.
        num_attention_heads (`int`, defaults to 4): attention heads per block.
        intermediate_size (`int`, defaults to 1024): inner width of each feed-forward module.
        max_position_embeddings (`int`, defaults to 2048): longest sequence the model is meant for.
        hidden_act (`str`, defaults to `"silu"`): feed-forward activation (Swish, as in the paper).
        conv_kernel_size (`int`, defaults to 15): width of the causal depthwise convolution, in
            tokens; generation caches the last `conv_kernel_size - 1` frames of every block.
        attention_type (`str`, defaults to `"rotary"`): position scheme of the self-attention:
            `"rotary"` (RoPE, Su et al. 2021) or `"relative"` (learned relative position logits
            with the memory-efficient skew of the Music Transformer, Huang et al. 2018).
        rope_theta (`float`, defaults to 10000.0): base of the rotary frequencies.
        max_relative_position (`int`, defaults to 1024): largest distinguished distance for
            `"relative"` attention; longer distances are clipped to it.
        shared_relative_embeddings (`bool`, defaults to `False`): share each block's relative
            embeddings across its heads instead of learning them per head.
        attention_bias (`bool`, defaults to `True`): bias in the q/k/v/o projections.
        hidden_dropout (`float`, defaults to 0.1): dropout on every residual branch.
        attention_dropout (`float`, defaults to 0.1): dropout on the attention weights.
        initializer_range (`float`, defaults to 0.02): std of the normal weight initialiser.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of every LayerNorm.
        layer_types (`list[str]`, *optional*): cache layout per block; always `"hybrid"` (a KV
            cache plus a convolution state), filled in automatically.

    Example:

    ```python
    >>> from midiformers import MidiConformerConfig, MidiConformerForCausalLM
    >>> model = MidiConformerForCausalLM(MidiConformerConfig(vocab_size=300, conv_kernel_size=7))
    ```
    """

    model_type = "midiformers_conformer"
    keys_to_ignore_at_inference = ["cache"]

    vocab_size: int = 512
    hidden_size: int = 256
    num_hidden_layers: int = 6
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    max_position_embeddings: int = 2048
    hidden_act: str = "silu"
    conv_kernel_size: int = 15
    attention_type: str = "rotary"
    rope_theta: float | int = 10000.0
    max_relative_position: int = 1024
    shared_relative_embeddings: bool = False
    attention_bias: bool = True
    hidden_dropout: float | int = 0.1
    attention_dropout: float | int = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    use_cache: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = True
    layer_types: list[str] | None = None

    def __post_init__(self, **kwargs):
        if self.layer_types is None:
            self.layer_types = ["hybrid"] * self.num_hidden_layers
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Reject sizes the blocks cannot be built with, naming the offending field."""
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "max_relative_position",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        head_dim = self.hidden_size // self.num_attention_heads
        if self.attention_type == "rotary" and head_dim % 2:
            raise ValueError(
                f"hidden_size / num_attention_heads ({head_dim}) must be even for "
                f"attention_type='rotary'"
            )
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act must be one of {sorted(ACT2FN)}, got {self.hidden_act!r}")
        if self.rope_theta <= 0:
            raise ValueError(f"rope_theta must be positive, got {self.rope_theta}")

    def validate_attention_type(self):
        """Only the attention variants the modeling file implements are accepted."""
        if self.attention_type not in ATTENTION_TYPES:
            raise ValueError(
                f"attention_type must be one of {ATTENTION_TYPES}, got {self.attention_type!r}"
            )

    def validate_conv_kernel_size(self):
        """A causal convolution needs at least one past frame to be worth a cache."""
        if self.conv_kernel_size < 2:
            raise ValueError(f"conv_kernel_size must be at least 2, got {self.conv_kernel_size}")

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
            for token_id in value if isinstance(value, list) else [value]:
                if token_id is not None and not 0 <= token_id < self.vocab_size:
                    raise ValueError(
                        f"{name} ({value}) must lie in [0, vocab_size ({self.vocab_size}))"
                    )

    def validate_layer_types(self):
        """Every block keeps both a KV cache and a convolution state, so every entry is hybrid."""
        if self.layer_types is None:
            return
        if len(self.layer_types) != self.num_hidden_layers or any(
            layer_type != "hybrid" for layer_type in self.layer_types
        ):
            raise ValueError(
                f"layer_types must be ['hybrid'] * num_hidden_layers ({self.num_hidden_layers}), "
                f"got {self.layer_types}"
            )


__all__ = ["MidiConformerConfig"]
