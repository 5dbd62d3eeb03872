"""Configuration of MidiGPT, a decoder-only Transformer over MIDI tokens."""

# No `from __future__ import annotations`: @strict cannot type-check string annotations.
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters

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
class MidiGPTConfig(RopeParametersMixin, PreTrainedConfig):
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
        rope_parameters (`dict`, *optional*): transformers' RoPE settings, as for Llama: `rope_type`
            (`"default"`, or a scaling to run past the training length: `"linear"`, `"dynamic"`,
            `"yarn"`, `"longrope"`, `"llama3"`), `rope_theta` (base of the rotary frequencies,
            default 10000.0) and the type's own keys (`factor` ...). A `rope_theta=` argument or an
            older config.json's `rope_theta` is folded in; `config.rope_theta` reads and sets it.
        hidden_act (`str`, defaults to `"gelu"`): feed-forward activation (any `ACT2FN` key).
        hidden_dropout (`float`, defaults to 0.1): dropout on embeddings and residual branches.
        attention_dropout (`float`, defaults to 0.1): dropout on attention probabilities.
        attention_bias (`bool`, defaults to `True`): biases in the q/k/v/o projections.
        initializer_range (`float`, defaults to 0.02): std of the normal weight initialisation.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of the LayerNorms.
        tie_word_embeddings (`bool`, defaults to `True`): share the input embedding and LM head.

    Parallelism (`distributed_config=DistributedConfig(tp_size=...)` or `pp_size=...` in
    `from_pretrained`, as for Llama): `base_model_tp_plan` splits every block's attention by
    heads (q/k/v `"colwise"`, `o_proj` `"rowwise"`; `num_attention_heads` must divide by the
    number of processes) and its feed-forward by width (`fc_in` `"colwise"`, `fc_out`
    `"rowwise"`); transformers adds the vocabulary split of `embed_tokens` and the model that of
    `lm_head`. The LayerNorms and the learned position table are small and stay whole on every
    process. `base_model_pp_plan` names the pipeline stages: embeddings, blocks, final norm.

    Example:

    ```python
    >>> from midiformers import MidiGPTConfig, MidiGPTForCausalLM
    >>> config = MidiGPTConfig(vocab_size=300, position_embedding_type="rotary")
    >>> model = MidiGPTForCausalLM(config)
    ```
    """

    model_type = "midiformers_gpt"
    keys_to_ignore_at_inference = ["cache"]
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.fc_in": "colwise",
        "layers.*.mlp.fc_out": "rowwise",
    }
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    vocab_size: int = positive_int(default=512)
    hidden_size: int = positive_int(default=512)
    num_hidden_layers: int = positive_int(default=6)
    num_attention_heads: int = positive_int(default=8)
    intermediate_size: int = positive_int(default=2048)
    max_position_embeddings: int = positive_int(default=2048)
    position_embedding_type: Literal["absolute", "rotary"] = "absolute"
    rope_parameters: RopeParameters | dict | None = None
    hidden_act: str = activation(default="gelu")
    hidden_dropout: float | int = dropout_probability(default=0.1)
    attention_dropout: float | int = dropout_probability(default=0.1)
    attention_bias: bool = True
    initializer_range: float = positive_number(default=0.02)
    layer_norm_eps: float = positive_number(default=1e-5)
    use_cache: bool = True
    pad_token_id: int | None = token_id(default=0)
    bos_token_id: int | None = token_id(default=1)
    eos_token_id: int | list[int] | None = eos_token_id(default=2)
    tie_word_embeddings: bool = True

    def validate_architecture(self):
        """Cross-field rules (ranges are on the fields): heads, rotary head size, token ids."""
        check_heads(self, rotary=self.position_embedding_type == "rotary")
        check_token_ids(self)
        check_rope_theta(self)
        check_rope_scaling_needs_rotary(
            self, self.position_embedding_type == "rotary", "position_embedding_type"
        )


__all__ = ["MidiGPTConfig"]
