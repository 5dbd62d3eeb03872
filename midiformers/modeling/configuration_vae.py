"""Configuration of MidiVAE, a composer-conditioned Transformer VAE over MIDI tokens."""

# No `from __future__ import annotations`: @strict cannot type-check string annotations.
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.utils.type_validators import interval

from ._config_fields import (
    activation,
    check_heads,
    check_token_ids,
    dropout_probability,
    eos_token_id,
    non_negative_int,
    non_negative_number,
    positive_int,
    positive_number,
    token_id,
)


@strict
class MidiVAEConfig(PreTrainedConfig):
    r"""
    Configuration of a [`MidiVAEForConditionalGeneration`]: a Transformer encoder pooled to the
    posterior of a latent `z`, a mixture-of-Gaussians prior with one learnable component per
    composer, and a causal Transformer decoder that cross-attends to a memory built from `z` and
    the composer embedding.

    The composers are the labels: pass `id2label` (and `label2id`) from the dataset's `ClassLabel`,
    e.g. `MidiVAEConfig(id2label=dict(enumerate(features["composer"].names)))`.

    Args:
        vocab_size (`int`, defaults to 512): number of MIDI tokens (the tokenizer's `len()`).
        hidden_size (`int`, defaults to 256): width of the encoder and decoder.
        num_hidden_layers (`int`, defaults to 4): decoder blocks (self-, cross-attention, FFN).
        num_encoder_layers (`int`, defaults to 4): encoder blocks (bidirectional self-attention).
        num_attention_heads (`int`, defaults to 4): attention heads; must divide `hidden_size`,
            and the head dimension must be even (rotary positions).
        intermediate_size (`int`, defaults to 1024): width of the feed-forward layers.
        max_position_embeddings (`int`, defaults to 2048): longest sequence the model is meant for
            (positions are rotary, so nothing is sized by it).
        latent_size (`int`, defaults to 64): dimension of the latent `z`.
        num_memory_tokens (`int`, defaults to 4): `z` is projected to this many memory slots; the
            composer embedding is one more slot.
        prior_init_std (`float`, defaults to 1.0): std of the initial prior component means, so the
            composers start apart.
        beta (`float`, defaults to 1.0): weight of the KL term once warm-up is over.
        beta_schedule (`str`, defaults to `"linear"`): `"constant"`, `"linear"` (0 to `beta` over
            `beta_warmup_steps`) or `"cyclical"` (Fu et al. 2019: cycles of `beta_cycle_steps`,
            rising over the first `beta_cycle_ratio` of each cycle).
        beta_warmup_steps (`int`, defaults to 1000): length of the linear warm-up.
        beta_cycle_steps (`int`, defaults to 1000): length of one cycle of the cyclical schedule.
        beta_cycle_ratio (`float`, defaults to 0.5): rising fraction of each cycle.
        free_bits (`float`, defaults to 0.0): nats per latent dimension (batch average) below which
            the KL is not penalised (Kingma et al. 2016), against posterior collapse.
        hidden_act (`str`, defaults to `"gelu"`): feed-forward activation (any `ACT2FN` key).
        hidden_dropout (`float`, defaults to 0.1): dropout on embeddings and residual branches.
        attention_dropout (`float`, defaults to 0.1): dropout on attention probabilities.
        attention_bias (`bool`, defaults to `True`): biases in the attention projections.
        initializer_range (`float`, defaults to 0.02): std of the normal weight initialisation.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of the LayerNorms.
        tie_word_embeddings (`bool`, defaults to `True`): share the token embedding and LM head.

    Tensor parallelism (`distributed_config=DistributedConfig(tp_size=...)` in `from_pretrained`):
    `base_model_tp_plan` splits by heads the encoder's self-attention and the decoder's self-
    and cross-attention (q/k/v `"colwise"`, `o_proj` `"rowwise"`; `num_attention_heads` must
    divide by the number of processes), and every feed-forward by width (`fc_in` `"colwise"`,
    `fc_out` `"rowwise"`); transformers adds the vocabulary split of `embed_tokens` and the
    model that of `lm_head`. The posterior, prior, composer embedding and memory projection are
    small and stay whole. There is no pipeline plan: transformers' pipeline split hands a later
    stage the previous stage's hidden states as `inputs_embeds`, which the encoder would read as
    the piece; the model refuses to encode there (pass `latent`, as `generate` does).

    Example:

    ```python
    >>> from midiformers import MidiVAEConfig, MidiVAEForConditionalGeneration
    >>> config = MidiVAEConfig(vocab_size=300, id2label={0: "bach", 1: "mozart"})
    >>> model = MidiVAEForConditionalGeneration(config)
    >>> ids = model.generate(composer="bach", max_new_tokens=64, do_sample=True)
    ```
    """

    model_type = "midiformers_vae"
    keys_to_ignore_at_inference = ["cache"]
    base_model_tp_plan = {
        "encoder_layers.*.self_attn.q_proj": "colwise",
        "encoder_layers.*.self_attn.k_proj": "colwise",
        "encoder_layers.*.self_attn.v_proj": "colwise",
        "encoder_layers.*.self_attn.o_proj": "rowwise",
        "encoder_layers.*.ffn.fc_in": "colwise",
        "encoder_layers.*.ffn.fc_out": "rowwise",
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.cross_attn.q_proj": "colwise",
        "layers.*.cross_attn.k_proj": "colwise",
        "layers.*.cross_attn.v_proj": "colwise",
        "layers.*.cross_attn.o_proj": "rowwise",
        "layers.*.ffn.fc_in": "colwise",
        "layers.*.ffn.fc_out": "rowwise",
    }

    vocab_size: int = positive_int(default=512)
    hidden_size: int = positive_int(default=256)
    num_hidden_layers: int = positive_int(default=4)
    num_encoder_layers: int = positive_int(default=4)
    num_attention_heads: int = positive_int(default=4)
    intermediate_size: int = positive_int(default=1024)
    max_position_embeddings: int = positive_int(default=2048)
    latent_size: int = positive_int(default=64)
    num_memory_tokens: int = positive_int(default=4)
    prior_init_std: float | int = non_negative_number(default=1.0)
    beta: float | int = non_negative_number(default=1.0)
    beta_schedule: Literal["constant", "linear", "cyclical"] = "linear"
    # 0 is allowed where the schedule does not use the field (validate_objective).
    beta_warmup_steps: int = non_negative_int(default=1000)
    beta_cycle_steps: int = non_negative_int(default=1000)
    beta_cycle_ratio: float | int = interval(min=0, max=1, exclude_min=True)(default=0.5)
    free_bits: float | int = non_negative_number(default=0.0)
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

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.label2id is None:
            self.label2id = {name: index for index, name in self.id2label.items()}

    def validate_architecture(self):
        """Cross-field rules (ranges are on the fields): heads (rotary positions), token ids."""
        check_heads(self, rotary=True)
        check_token_ids(self)

    def validate_objective(self):
        """The KL schedule divides by the length of its warm-up or cycle."""
        if self.beta_schedule == "linear" and self.beta_warmup_steps == 0:
            raise ValueError("beta_warmup_steps must be positive for the linear beta_schedule")
        if self.beta_schedule == "cyclical" and self.beta_cycle_steps == 0:
            raise ValueError("beta_cycle_steps must be positive for the cyclical beta_schedule")

    def validate_labels(self):
        """Every composer needs a name and an id that agree both ways."""
        if self.label2id is None:
            return
        for index, name in self.id2label.items():
            if int(self.label2id.get(name, -1)) != int(index):
                raise ValueError(
                    f"label2id does not match id2label for composer {name!r} (id {index}): "
                    f"label2id has {self.label2id.get(name)!r}"
                )

    def kl_weight(self, step: int) -> float:
        """KL weight (beta) at training step ``step`` under the configured schedule."""
        if self.beta_schedule == "constant":
            return float(self.beta)
        if self.beta_schedule == "linear":
            return float(self.beta) * min(1.0, step / self.beta_warmup_steps)
        position = (step % self.beta_cycle_steps) / self.beta_cycle_steps
        return float(self.beta) * min(1.0, position / self.beta_cycle_ratio)


__all__ = ["MidiVAEConfig"]
