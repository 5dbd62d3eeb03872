"""Configuration of the causal Conformer-lite MIDI language model.

No ``from __future__ import annotations`` here: ``@strict`` checks field types only when the
annotations are real objects.
"""

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters
from transformers.utils.type_validators import interval

from ._config_fields import (
    RopeParametersMixin,
    activation,
    check_heads,
    check_rope_scaling_needs_rotary,
    check_rope_theta,
    check_token_ids,
    dropout_probability,
    eos_token_id,
    positive_int,
    positive_number,
    token_id,
)


@strict
class MidiConformerConfig(RopeParametersMixin, PreTrainedConfig):
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
        rope_parameters (`dict`, *optional*): transformers' RoPE settings, as for Llama: `rope_type`
            (`"default"`, or a scaling to run past the training length: `"linear"`, `"dynamic"`,
            `"yarn"`, `"longrope"`, `"llama3"`), `rope_theta` (base of the rotary frequencies,
            default 10000.0) and the type's own keys (`factor` ...). A `rope_theta=` argument or an
            older config.json's `rope_theta` is folded in; `config.rope_theta` reads and sets it.
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

    Parallelism (`distributed_config=DistributedConfig(tp_size=...)` or `pp_size=...` in
    `from_pretrained`, as for Llama): `base_model_tp_plan` splits every block's attention by
    heads (q/k/v `"colwise"`, `o_proj` `"rowwise"`; `num_attention_heads` must divide by the
    number of processes) and both half-step feed-forwards by width (`fc_in` `"colwise"`,
    `fc_out` `"rowwise"`). With `"relative"` attention, per-head relative embeddings are split
    by columns with their heads (`"embedding_colwise"`, read through `"local_params"`); a shared
    table stays whole, its gradients summed over the processes' heads
    (`"replicated_with_grad_allreduce"`). The convolution module stays whole on every process
    (with its cache): `pointwise_in` could be split as a packed GLU pair and the depthwise
    convolution with its channels, but the LayerNorm after the convolution normalises over all
    channels, so any split needs a gather inside the module, two collectives per block where
    the rest of the block needs three, to share its `3 * hidden_size**2` weights (about an
    eighth of a block with the default sizes). transformers adds the vocabulary split of
    `embed_tokens` and the model that of `lm_head`.
    `base_model_pp_plan` names the pipeline stages: embeddings and blocks (each block ends
    with its own LayerNorm; there is no final norm).

    Example:

    ```python
    >>> from midiformers import MidiConformerConfig, MidiConformerForCausalLM
    >>> model = MidiConformerForCausalLM(MidiConformerConfig(vocab_size=300, conv_kernel_size=7))
    ```
    """

    model_type = "midiformers_conformer"
    keys_to_ignore_at_inference = ["cache"]
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
    }

    vocab_size: int = positive_int(default=512)
    hidden_size: int = positive_int(default=256)
    num_hidden_layers: int = positive_int(default=6)
    num_attention_heads: int = positive_int(default=4)
    intermediate_size: int = positive_int(default=1024)
    max_position_embeddings: int = positive_int(default=2048)
    hidden_act: str = activation(default="silu")
    # A causal convolution needs at least one past frame to be worth a cache.
    conv_kernel_size: int = interval(min=2)(default=15)
    attention_type: Literal["rotary", "relative"] = "rotary"
    rope_parameters: RopeParameters | dict | None = None
    max_relative_position: int = positive_int(default=1024)
    shared_relative_embeddings: bool = False
    attention_bias: bool = True
    hidden_dropout: float | int = dropout_probability(default=0.1)
    attention_dropout: float | int = dropout_probability(default=0.1)
    initializer_range: float = positive_number(default=0.02)
    layer_norm_eps: float = positive_number(default=1e-5)
    use_cache: bool = True
    pad_token_id: int | None = token_id(default=0)
    bos_token_id: int | None = token_id(default=1)
    eos_token_id: int | list[int] | None = eos_token_id(default=2)
    tie_word_embeddings: bool = True
    layer_types: list[str] | None = None

    def __post_init__(self, **kwargs):
        if self.layer_types is None:
            self.layer_types = ["hybrid"] * self.num_hidden_layers
        super().__post_init__(**kwargs)

    @property
    def base_model_tp_plan(self) -> dict[str, str]:
        """Tensor-parallel plan (see the class docstring): per-head relative embeddings, when the
        attention has them, are split with the heads."""
        plan = {
            "layers.*.ffn_in.fc_in": "colwise",
            "layers.*.ffn_in.fc_out": "rowwise",
            "layers.*.self_attn.q_proj": "colwise",
            "layers.*.self_attn.k_proj": "colwise",
            "layers.*.self_attn.v_proj": "colwise",
            "layers.*.self_attn.o_proj": "rowwise",
            "layers.*.ffn_out.fc_in": "colwise",
            "layers.*.ffn_out.fc_out": "rowwise",
        }
        if self.attention_type == "relative" and self.shared_relative_embeddings:
            plan["layers.*.self_attn.relative_embeddings"] = "replicated_with_grad_allreduce"
        elif self.attention_type == "relative":
            plan["layers.*.self_attn.relative_embeddings.weight"] = "embedding_colwise"
            plan["layers.*.self_attn.relative_embeddings"] = "local_params"
        return plan

    def validate_architecture(self):
        """Cross-field rules (ranges are on the fields): heads, rotary head size, token ids, and
        one ``"hybrid"`` cache layer (KV cache plus convolution state) per block."""
        check_heads(self, rotary=self.attention_type == "rotary")
        check_token_ids(self)
        check_rope_theta(self)
        check_rope_scaling_needs_rotary(self, self.attention_type == "rotary", "attention_type")
        if self.layer_types is not None and self.layer_types != ["hybrid"] * self.num_hidden_layers:
            raise ValueError(
                f"layer_types must be ['hybrid'] * num_hidden_layers ({self.num_hidden_layers}), "
                f"got {self.layer_types}"
            )


__all__ = ["MidiConformerConfig"]
