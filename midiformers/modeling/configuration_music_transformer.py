"""Configuration of the Music Transformer (Huang et al., 2018): relative self-attention over MIDI."""

# No `from __future__ import annotations`: @strict cannot type-check string annotations.
from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ._config_fields import (
    activation,
    check_heads,
    check_token_ids,
    dropout_probability,
    eos_token_id,
    positive_int,
    positive_number,
    token_id,
)


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

    Parallelism (`distributed_config=DistributedConfig(tp_size=...)` or `pp_size=...` in
    `from_pretrained`, as for Llama): `base_model_tp_plan` splits every block's attention by
    heads (q/k/v `"colwise"`, `o_proj` `"rowwise"`; `num_attention_heads` must divide by the
    number of processes) and its feed-forward by width (`fc_in` `"colwise"`, `fc_out`
    `"rowwise"`). Per-head relative embeddings are split by columns with their heads
    (`"embedding_colwise"`, read through `"local_params"`), so each process adds the relative
    logits of its own heads; a table shared by the heads (`shared_relative_embeddings`) stays
    whole on every process, since every head needs all of it, and its gradients, each from one
    process's heads only, are summed (`"replicated_with_grad_allreduce"`). transformers adds
    the vocabulary split of `embed_tokens` and the model that of `lm_head`; the LayerNorms
    stay whole.
    `base_model_pp_plan` names the pipeline stages: embeddings, blocks, final norm.

    Example:

    ```python
    >>> from midiformers import MusicTransformerConfig, MusicTransformerForCausalLM
    >>> config = MusicTransformerConfig(vocab_size=300, max_relative_position=512)
    >>> model = MusicTransformerForCausalLM(config)
    ```
    """

    model_type = "midiformers_music_transformer"
    keys_to_ignore_at_inference = ["cache"]
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    vocab_size: int = positive_int(default=388)
    hidden_size: int = positive_int(default=512)
    num_hidden_layers: int = positive_int(default=6)
    num_attention_heads: int = positive_int(default=8)
    intermediate_size: int = positive_int(default=2048)
    max_position_embeddings: int = positive_int(default=2048)
    max_relative_position: int = positive_int(default=1024)
    shared_relative_embeddings: bool = False
    hidden_act: str = activation(default="relu")
    hidden_dropout: float | int = dropout_probability(default=0.1)
    attention_dropout: float | int = dropout_probability(default=0.1)
    attention_bias: bool = True
    initializer_range: float = positive_number(default=0.02)
    layer_norm_eps: float = positive_number(default=1e-6)
    use_cache: bool = True
    pad_token_id: int | None = token_id(default=0)
    bos_token_id: int | None = token_id(default=1)
    eos_token_id: int | list[int] | None = eos_token_id(default=2)
    tie_word_embeddings: bool = True

    @property
    def base_model_tp_plan(self) -> dict[str, str]:
        """Tensor-parallel plan (see the class docstring): it depends on whether the relative
        embeddings are per head (split with the heads) or shared (whole on every process)."""
        plan = {
            "layers.*.self_attn.q_proj": "colwise",
            "layers.*.self_attn.k_proj": "colwise",
            "layers.*.self_attn.v_proj": "colwise",
            "layers.*.self_attn.o_proj": "rowwise",
            "layers.*.mlp.fc_in": "colwise",
            "layers.*.mlp.fc_out": "rowwise",
        }
        if self.shared_relative_embeddings:
            plan["layers.*.self_attn.relative_embeddings"] = "replicated_with_grad_allreduce"
        else:
            plan["layers.*.self_attn.relative_embeddings.weight"] = "embedding_colwise"
            plan["layers.*.self_attn.relative_embeddings"] = "local_params"
        return plan

    def validate_architecture(self):
        """Cross-field rules (ranges are on the fields): heads, token ids."""
        check_heads(self)
        check_token_ids(self)


__all__ = ["MusicTransformerConfig"]
