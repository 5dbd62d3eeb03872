"""Configuration of MidiVAE, a composer-conditioned Transformer VAE over MIDI tokens."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

BETA_SCHEDULES = ("constant", "linear", "cyclical")


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

    vocab_size: int = 512
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_encoder_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    max_position_embeddings: int = 2048
    latent_size: int = 64
    num_memory_tokens: int = 4
    prior_init_std: float | int = 1.0
    beta: float | int = 1.0
    beta_schedule: str = "linear"
    beta_warmup_steps: int = 1000
    beta_cycle_steps: int = 1000
    beta_cycle_ratio: float | int = 0.5
    free_bits: float | int = 0.0
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

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.label2id is None:
            self.label2id = {name: index for index, name in self.id2label.items()}

    def validate_architecture(self):
        """Reject sizes that cannot build a model, naming the offending field."""
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_encoder_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "latent_size",
            "num_memory_tokens",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        head_dim = self.hidden_size // self.num_attention_heads
        if head_dim % 2:
            raise ValueError(
                f"rotary positions need an even head dimension: hidden_size ({self.hidden_size}) / "
                f"num_attention_heads ({self.num_attention_heads}) = {head_dim}"
            )
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act must be one of {sorted(ACT2FN)}, got {self.hidden_act!r}")
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"pad_token_id ({self.pad_token_id}) must be a token id below vocab_size "
                f"({self.vocab_size})"
            )
        if self.prior_init_std < 0:
            raise ValueError(f"prior_init_std must be non-negative, got {self.prior_init_std}")

    def validate_objective(self):
        """Check the KL weight schedule and free bits."""
        if self.beta < 0:
            raise ValueError(f"beta must be non-negative, got {self.beta}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(
                f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}"
            )
        if self.beta_schedule == "linear" and self.beta_warmup_steps <= 0:
            raise ValueError(
                f"beta_warmup_steps must be positive for the linear schedule, got "
                f"{self.beta_warmup_steps}"
            )
        if self.beta_schedule == "cyclical":
            if self.beta_cycle_steps <= 0:
                raise ValueError(f"beta_cycle_steps must be positive, got {self.beta_cycle_steps}")
            if not 0.0 < self.beta_cycle_ratio <= 1.0:
                raise ValueError(f"beta_cycle_ratio must be in (0, 1], got {self.beta_cycle_ratio}")
        if self.free_bits < 0:
            raise ValueError(f"free_bits must be non-negative, got {self.free_bits}")

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
