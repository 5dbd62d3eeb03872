"""MidiVAE: a composer-conditioned Transformer VAE over MIDI tokens.

A bidirectional Transformer encoder is pooled to the posterior ``q(z | x)``; the prior is a
mixture of Gaussians with one learnable component per composer, and the KL term is taken in closed
form against the component of the piece's composer. A causal Transformer decoder cross-attends to
a short memory built from ``z`` and the composer embedding, and decodes with a KV cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput, can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from ._layers import (
    MidiFeedForward,
    MidiSelfAttention,
    RotaryEmbedding,
    attention_function,
    embed_inputs,
    is_later_pipeline_stage,
    position_ids_from_mask,
    prepare_decoder,
    split_heads,
)
from .configuration_vae import MidiVAEConfig

ComposerSpec = str | int | Sequence[str | int] | torch.Tensor


@dataclass
class MidiVAEPosterior(ModelOutput):
    """Diagonal Gaussian posterior ``q(z | x)`` of a batch of pieces.

    Args:
        mu (`torch.FloatTensor` of shape `(batch_size, latent_size)`): posterior means.
        logvar (`torch.FloatTensor` of shape `(batch_size, latent_size)`): posterior log-variances.
    """

    mu: torch.FloatTensor | None = None
    logvar: torch.FloatTensor | None = None

    def sample(self, generator: torch.Generator | None = None) -> torch.FloatTensor:
        """Reparameterised draw ``mu + sigma * eps`` (differentiable in ``mu`` and ``logvar``)."""
        noise = torch.randn(
            self.mu.shape, generator=generator, device=self.mu.device, dtype=self.mu.dtype
        )
        return self.mu + torch.exp(0.5 * self.logvar) * noise


@dataclass
class MidiVAEModelOutput(ModelOutput):
    """Decoder states of [`MidiVAEModel`] with the latent they were conditioned on.

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            final decoder states.
        cache (`Cache`, *optional*): decoder self-attention keys and values.
        mu, logvar (`torch.FloatTensor` of shape `(batch_size, latent_size)`, *optional*): the
            posterior, when the input was encoded (absent when a `latent` was given).
        latent (`torch.FloatTensor` of shape `(batch_size, latent_size)`): the `z` decoded from.
        composer_labels (`torch.LongTensor` of shape `(batch_size,)`): the prior component (composer)
            used for the memory and the KL, given or inferred.
        hidden_states, attentions, cross_attentions (`tuple(torch.FloatTensor)`, *optional*): the
            decoder's input and block outputs, self-attention and cross-attention weights, when
            `output_hidden_states` / `output_attentions` ask for them.
    """

    last_hidden_state: torch.FloatTensor | None = None
    cache: Cache | None = None
    mu: torch.FloatTensor | None = None
    logvar: torch.FloatTensor | None = None
    latent: torch.FloatTensor | None = None
    composer_labels: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MidiVAEOutput(ModelOutput):
    """Output of [`MidiVAEForConditionalGeneration`]: the loss and its parts kept apart.

    Args:
        loss (`torch.FloatTensor`, *optional*): `reconstruction_loss + kl_weight * KL / tokens`
            (free bits applied), returned when `labels` are given.
        logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`).
        cache (`Cache`, *optional*): decoder self-attention cache.
        reconstruction_loss (`torch.FloatTensor`, *optional*): next-token cross-entropy per token.
        kl (`torch.FloatTensor`, *optional*): KL(q(z|x) || p(z|composer)) per piece in nats,
            averaged over the batch, before free bits.
        kl_weight (`torch.FloatTensor`, *optional*): the beta the loss used.
        mu, logvar, latent, composer_labels, hidden_states, attentions, cross_attentions: as in
            [`MidiVAEModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: Cache | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    kl: torch.FloatTensor | None = None
    kl_weight: torch.FloatTensor | None = None
    mu: torch.FloatTensor | None = None
    logvar: torch.FloatTensor | None = None
    latent: torch.FloatTensor | None = None
    composer_labels: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


def gaussian_kl(
    mu: torch.Tensor, logvar: torch.Tensor, prior_mu: torch.Tensor, prior_logvar: torch.Tensor
) -> torch.Tensor:
    """Closed-form KL(N(mu, e^logvar) || N(prior_mu, e^prior_logvar)) per dimension."""
    return 0.5 * (
        prior_logvar
        - logvar
        + (logvar.exp() + (mu - prior_mu).pow(2)) * torch.exp(-prior_logvar)
        - 1.0
    )


class MidiCrossAttention(nn.Module):
    """Multi-head attention from the decoder tokens to the (short, unmasked) latent memory.

    The head count follows the projections' outputs, as in ``MidiSelfAttention``, so tensor
    parallelism can split the heads across processes.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.is_causal = False

    def forward(
        self, hidden_states: torch.Tensor, memory: torch.Tensor, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        query = split_heads(self.q_proj(hidden_states), self.head_dim)
        key = split_heads(self.k_proj(memory), self.head_dim)
        value = split_heads(self.v_proj(memory), self.head_dim)
        output, weights = attention_function(self.config)(
            self,
            query,
            key,
            value,
            None,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        output = output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(output), weights


class MidiVAEEncoderLayer(GradientCheckpointingLayer):
    """Pre-norm encoder block: bidirectional self-attention and feed-forward."""

    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = MidiSelfAttention(config, layer_idx, use_rotary=True, is_causal=False)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = MidiFeedForward(
            config.hidden_size, config.intermediate_size, config.hidden_act, config.hidden_dropout
        )
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        attended, _ = self.self_attn(
            self.self_attn_norm(hidden_states),
            attention_mask=attention_mask,
            position_embeddings=position_embeddings,
        )
        hidden_states = hidden_states + self.dropout(attended)
        return hidden_states + self.dropout(self.ffn(self.ffn_norm(hidden_states)))


class MidiVAEDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm decoder block: causal self-attention, cross-attention to the memory, FFN."""

    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = MidiSelfAttention(config, layer_idx, use_rotary=True)
        self.cross_attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.cross_attn = MidiCrossAttention(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = MidiFeedForward(
            config.hidden_size, config.intermediate_size, config.hidden_act, config.hidden_dropout
        )
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        memory: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        attended, _ = self.self_attn(
            self.self_attn_norm(hidden_states),
            attention_mask=attention_mask,
            position_embeddings=position_embeddings,
            cache=cache,
            **kwargs,
        )
        hidden_states = hidden_states + self.dropout(attended)
        crossed, _ = self.cross_attn(self.cross_attn_norm(hidden_states), memory, **kwargs)
        hidden_states = hidden_states + self.dropout(crossed)
        return hidden_states + self.dropout(self.ffn(self.ffn_norm(hidden_states)))


class MidiVAEPreTrainedModel(PreTrainedModel):
    config_class = MidiVAEConfig
    config: MidiVAEConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _no_split_modules = ["MidiVAEEncoderLayer", "MidiVAEDecoderLayer"]
    _can_record_outputs = {
        "hidden_states": MidiVAEDecoderLayer,
        "attentions": OutputRecorder(MidiSelfAttention, index=1, layer_name="layers"),
        "cross_attentions": OutputRecorder(MidiCrossAttention, index=1),
    }

    def _init_weights(self, module: nn.Module) -> None:
        """Default init, plus the prior components: means spread apart, unit variances."""
        super()._init_weights(module)
        if isinstance(module, MidiVAEModel):
            init.normal_(module.prior_means, mean=0.0, std=self.config.prior_init_std)
            init.zeros_(module.prior_logvars)


class MidiVAEModel(MidiVAEPreTrainedModel):
    """Encoder, mixture-of-Gaussians prior and decoder; returns decoder states (no LM head)."""

    def __init__(self, config: MidiVAEConfig):
        super().__init__(config)
        hidden, latent = config.hidden_size, config.latent_size
        self.embed_tokens = nn.Embedding(config.vocab_size, hidden, config.pad_token_id)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.rotary = RotaryEmbedding(config)
        self.encoder_layers = nn.ModuleList(
            [MidiVAEEncoderLayer(config, i) for i in range(config.num_encoder_layers)]
        )
        self.encoder_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.posterior = nn.Linear(hidden, 2 * latent)
        self.prior_means = nn.Parameter(torch.zeros(config.num_labels, latent))
        self.prior_logvars = nn.Parameter(torch.zeros(config.num_labels, latent))
        self.composer_embedding = nn.Embedding(config.num_labels, hidden)
        self.latent_to_memory = nn.Linear(latent, config.num_memory_tokens * hidden)
        self.memory_positions = nn.Embedding(config.num_memory_tokens + 1, hidden)
        self.memory_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(
            [MidiVAEDecoderLayer(config, i) for i in range(config.num_hidden_layers)]
        )
        self.norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    # ------------------------------------------------------------------ encoder and prior

    def encode(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
    ) -> MidiVAEPosterior:
        """Posterior ``q(z | x)``: bidirectional encoder, masked mean pooling, linear head."""
        inputs_embeds = embed_inputs(self, input_ids, inputs_embeds)
        batch, length, _ = inputs_embeds.shape
        device, dtype = inputs_embeds.device, inputs_embeds.dtype
        if attention_mask is not None and attention_mask.shape[-1] != length:
            raise ValueError(
                f"attention_mask covers {attention_mask.shape[-1]} tokens but the encoder input has "
                f"{length}"
            )
        positions = position_ids_from_mask(attention_mask, 0, length, device)
        position_embeddings = self.rotary(inputs_embeds, positions)
        if attention_mask is None:
            weights = torch.ones((batch, length), dtype=dtype, device=device)
        else:
            weights = attention_mask.to(dtype)
        mask = create_bidirectional_mask(self.config, inputs_embeds, attention_mask)
        hidden_states = self.dropout(inputs_embeds)
        for layer in self.encoder_layers:
            hidden_states = layer(hidden_states, mask, position_embeddings)
        hidden_states = self.encoder_norm(hidden_states)
        pooled = (hidden_states * weights.unsqueeze(-1)).sum(1) / weights.sum(
            1, keepdim=True
        ).clamp(min=1.0)
        mu, logvar = self.posterior(pooled).chunk(2, dim=-1)
        return MidiVAEPosterior(mu=mu, logvar=logvar)

    def kl_divergence(
        self, mu: torch.Tensor, logvar: torch.Tensor, composer_labels: torch.LongTensor
    ) -> torch.Tensor:
        """KL of each posterior against its composer's prior component, ``(batch, latent_size)``."""
        return gaussian_kl(
            mu, logvar, self.prior_means[composer_labels], self.prior_logvars[composer_labels]
        )

    def expected_log_prior(
        self, mu: torch.Tensor, logvar: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``E_q[log p(z | c)]`` for every component c, ``(batch, num_labels)``.

        With ``logvar=None`` it is the log-density of the point ``mu``. Its argmax over c is the
        component with the smallest KL, and its softmax the mixture's composer posterior p(c | z).
        """
        spread = torch.zeros_like(mu) if logvar is None else logvar.exp()
        prior_var = self.prior_logvars.exp()
        squared = (mu.unsqueeze(1) - self.prior_means).pow(2) + spread.unsqueeze(1)
        return -0.5 * (math.log(2 * math.pi) + self.prior_logvars + squared / prior_var).sum(-1)

    def resolve_composers(
        self,
        composer_labels: torch.LongTensor | None,
        mu: torch.Tensor,
        logvar: torch.Tensor | None = None,
    ) -> torch.LongTensor:
        """Composer ids to condition on: the given ones, and the nearest component where unknown.

        Negative ids (e.g. -100) mark pieces whose composer is unknown.
        """
        nearest = self.expected_log_prior(mu.detach(), None if logvar is None else logvar.detach())
        nearest = nearest.argmax(-1)
        if composer_labels is None:
            return nearest
        composer_labels = composer_labels.to(mu.device).long().view(-1)
        if composer_labels.shape[0] != mu.shape[0]:
            raise ValueError(
                f"composer_labels has {composer_labels.shape[0]} entries for a batch of {mu.shape[0]}"
            )
        if not torch.compiler.is_compiling() and bool(
            (composer_labels >= self.config.num_labels).any()
        ):
            raise ValueError(
                f"composer_labels must be below num_labels ({self.config.num_labels}), got "
                f"{composer_labels.tolist()}"
            )
        return torch.where(composer_labels < 0, nearest, composer_labels)

    def build_memory(self, latent: torch.Tensor, composer_labels: torch.LongTensor) -> torch.Tensor:
        """Memory the decoder cross-attends to: ``num_memory_tokens`` slots from z + the composer."""
        batch = latent.shape[0]
        slots = self.latent_to_memory(latent).view(batch, self.config.num_memory_tokens, -1)
        composer = self.composer_embedding(composer_labels).unsqueeze(1)
        memory = torch.cat([slots, composer], dim=1) + self.memory_positions.weight
        return self.memory_norm(memory)

    # ------------------------------------------------------------------ forward

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        latent: torch.FloatTensor | None = None,
        composer_labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> MidiVAEModelOutput:
        r"""
        latent (`torch.FloatTensor` of shape `(batch_size, latent_size)`, *optional*):
            decode from this `z` instead of encoding `input_ids` (generation does this).
        composer_labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            composer ids; negative or absent means "unknown" (the nearest prior component is used).
        """
        inputs = prepare_decoder(
            self, input_ids, inputs_embeds, attention_mask, position_ids, cache, use_cache
        )
        inputs_embeds = inputs.inputs_embeds
        mu = logvar = None
        if latent is None:
            if is_later_pipeline_stage(self):
                raise ValueError(
                    "latent is required on a later pipeline-parallel stage: its inputs_embeds are "
                    "the previous stage's hidden states, not the piece the encoder reads"
                )
            if inputs.past_length:
                raise ValueError(
                    "latent is required once the cache holds tokens (generate() passes it); "
                    "the encoder only reads whole pieces"
                )
            posterior = self.encode(attention_mask=attention_mask, inputs_embeds=inputs_embeds)
            mu, logvar = posterior.mu, posterior.logvar
            latent = posterior.sample() if self.training else mu
        elif latent.shape != (inputs_embeds.shape[0], self.config.latent_size):
            raise ValueError(
                f"latent must have shape (batch_size, latent_size) = "
                f"({inputs_embeds.shape[0]}, {self.config.latent_size}), got {tuple(latent.shape)}"
            )
        reference = latent if mu is None else mu
        composer_labels = self.resolve_composers(composer_labels, reference, logvar)
        memory = self.build_memory(latent.to(inputs_embeds.dtype), composer_labels)

        position_embeddings = self.rotary(inputs_embeds, inputs.position_ids)
        hidden_states = self.dropout(inputs_embeds)
        for layer in self.layers:
            hidden_states = layer(
                hidden_states,
                memory,
                attention_mask=inputs.attention_mask,
                position_embeddings=position_embeddings,
                cache=inputs.cache,
                **kwargs,
            )
        return MidiVAEModelOutput(
            last_hidden_state=self.norm(hidden_states),
            cache=inputs.cache,
            mu=mu,
            logvar=logvar,
            latent=latent,
            composer_labels=composer_labels,
        )


class MidiVAEForConditionalGeneration(MidiVAEPreTrainedModel, GenerationMixin):
    """The VAE with its LM head: training loss (reconstruction + beta * KL) and conditioned generation.

    ``kl_step`` counts training forward passes and drives the beta schedule; set it yourself when
    resuming (e.g. to ``trainer.state.global_step * gradient_accumulation_steps``).
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: MidiVAEConfig):
        super().__init__(config)
        self.model = MidiVAEModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.kl_step = 0
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    # ------------------------------------------------------------------ composers and latents

    def composer_ids(
        self, composer: ComposerSpec, device: torch.device | None = None
    ) -> torch.LongTensor:
        """Composer names or ids -> a 1-D tensor of ids; unknown names list the known ones."""
        if isinstance(composer, torch.Tensor):
            items = composer.view(-1).tolist()
        elif isinstance(composer, (str, int)):
            items = [composer]
        else:
            items = list(composer)
        ids = []
        for item in items:
            if isinstance(item, str):
                if item not in self.config.label2id:
                    raise ValueError(
                        f"unknown composer {item!r}; known composers: "
                        f"{', '.join(repr(name) for name in self.config.label2id)}"
                    )
                ids.append(int(self.config.label2id[item]))
            elif not 0 <= int(item) < self.config.num_labels:
                raise ValueError(
                    f"composer id {item} is out of range: this model knows {self.config.num_labels} "
                    f"composers ({', '.join(map(repr, self.config.label2id))})"
                )
            else:
                ids.append(int(item))
        return torch.tensor(ids, dtype=torch.long, device=device or self.device)

    def encode(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None
    ) -> MidiVAEPosterior:
        """Posterior ``q(z | x)`` of the pieces ``input_ids`` (mean and log-variance)."""
        return self.model.encode(input_ids=input_ids, attention_mask=attention_mask)

    def sample_latent(
        self,
        composer: ComposerSpec,
        num_samples: int = 1,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.FloatTensor:
        """Draw z from each composer's prior component; a single composer is drawn ``num_samples``
        times. ``temperature`` scales the component's standard deviation (0 gives its mean)."""
        ids = self.composer_ids(composer)
        if ids.numel() == 1:
            ids = ids.repeat(num_samples)
        means = self.model.prior_means[ids]
        std = torch.exp(0.5 * self.model.prior_logvars[ids])
        noise = torch.randn(means.shape, generator=generator, dtype=means.dtype).to(means.device)
        return (means + temperature * std * noise).detach()

    def predict_composer(self, latent: torch.Tensor) -> torch.FloatTensor:
        """Mixture responsibilities p(c | z) under the uniform mixture prior, ``(batch, num_labels)``."""
        return self.model.expected_log_prior(latent).softmax(-1)

    def current_kl_weight(self) -> float:
        """Beta for the next training step (the full ``config.beta`` outside training)."""
        return self.config.kl_weight(self.kl_step) if self.training else float(self.config.beta)

    # ------------------------------------------------------------------ forward

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        composer_labels: torch.LongTensor | None = None,
        latent: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        kl_weight: float | None = None,
        **kwargs,
    ) -> MidiVAEOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            the tokens to reconstruct (usually `input_ids`); -100 is ignored.
        composer_labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            the pieces' composers (their prior components); negative means unknown.
        latent (`torch.FloatTensor` of shape `(batch_size, latent_size)`, *optional*):
            decode from this z instead of encoding `input_ids`.
        kl_weight (`float`, *optional*): override the scheduled beta for this call.
        """
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            latent=latent,
            composer_labels=composer_labels,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])

        kl_per_dim = kl = None
        if outputs.mu is not None:
            kl_per_dim = self.model.kl_divergence(
                outputs.mu, outputs.logvar, outputs.composer_labels
            )
            kl = kl_per_dim.sum(-1).mean()
        loss = reconstruction = beta = None
        if labels is not None:
            reconstruction = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs
            )
            loss = reconstruction
            if kl_per_dim is not None:
                beta = self._next_kl_weight(kl_weight)
                penalty = self._kl_penalty(kl_per_dim, labels, kwargs.get("num_items_in_batch"))
                loss = reconstruction + beta * penalty
                beta = torch.tensor(beta, device=logits.device)
        return MidiVAEOutput(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            reconstruction_loss=reconstruction,
            kl=kl,
            kl_weight=beta,
            mu=outputs.mu,
            logvar=outputs.logvar,
            latent=outputs.latent,
            composer_labels=outputs.composer_labels,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            cross_attentions=outputs.cross_attentions,
        )

    def _next_kl_weight(self, override: float | None) -> float:
        """Beta for this call; a training forward with gradients advances the schedule."""
        if override is not None:
            return float(override)
        beta = self.current_kl_weight()
        if self.training and torch.is_grad_enabled():
            self.kl_step += 1
        return beta

    def _kl_penalty(
        self,
        kl_per_dim: torch.Tensor,
        labels: torch.LongTensor,
        num_items_in_batch: torch.Tensor | int | None,
    ) -> torch.Tensor:
        """Batch KL with free bits, divided by the number of predicted tokens like the CE is.

        Dividing by tokens (not pieces) keeps the sum-over-tokens ELBO's balance between
        reconstruction and KL, which a per-token CE plus a per-piece KL would break.
        """
        batch = kl_per_dim.shape[0]
        free_bits = float(self.config.free_bits)
        if free_bits > 0:
            total = kl_per_dim.mean(0).clamp(min=free_bits).sum() * batch
        else:
            total = kl_per_dim.sum()
        if num_items_in_batch is None:
            num_items_in_batch = (labels[..., 1:] != -100).sum().clamp(min=1)
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(total.device)
        return total / num_items_in_batch

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.LongTensor | None = None,
        composer: ComposerSpec | None = None,
        latent: torch.FloatTensor | None = None,
        latent_temperature: float = 1.0,
        **kwargs,
    ):
        """Generate pieces conditioned on a composer, an explicit latent, or a prompt.

        - ``composer`` (name, id, or one per row): z is drawn from that composer's prior component
          (``latent_temperature`` scales its std) and decoding starts from BOS unless a prompt is
          given.
        - ``latent``: decode from these z (the composer is the given one or the nearest component).
        - neither: z is the posterior mean of the prompt ``inputs``, which is then continued.

        Every other keyword goes to `GenerationMixin.generate` (``max_new_tokens``, ``do_sample``,
        ``top_k``, ``num_beams`` ...); decoding uses the KV cache unless ``use_cache=False``.
        """
        input_ids = inputs if inputs is not None else kwargs.pop("input_ids", None)
        batch = self._generation_batch_size(input_ids, composer, latent)
        # Given back as is when generate() runs this model as an assistant (assisted decoding).
        labels = kwargs.pop("composer_labels", None)
        if composer is not None:
            labels = self.composer_ids(composer)
            if labels.numel() == 1:
                labels = labels.repeat(batch)
        if latent is None:
            if labels is not None:
                latent = self.sample_latent(labels, temperature=latent_temperature)
            elif input_ids is not None:
                posterior = self.encode(input_ids, kwargs.get("attention_mask"))
                latent = posterior.mu
                labels = self.model.resolve_composers(None, posterior.mu, posterior.logvar)
            else:
                raise ValueError("generate() needs a composer, a latent or a prompt (inputs)")
        latent = latent.to(self.device, self.dtype)
        if input_ids is None:
            bos = self.config.bos_token_id
            if bos is None:
                raise ValueError("generate() without a prompt needs config.bos_token_id")
            input_ids = torch.full((batch, 1), bos, dtype=torch.long, device=self.device)
        return super().generate(input_ids, latent=latent, composer_labels=labels, **kwargs)

    @staticmethod
    def _generation_batch_size(
        input_ids: torch.Tensor | None, composer: ComposerSpec | None, latent: torch.Tensor | None
    ) -> int:
        """The batch size the prompt, composers and latents agree on (a single composer broadcasts)."""
        sizes = {}
        if input_ids is not None:
            sizes["inputs"] = input_ids.shape[0]
        if latent is not None:
            if latent.dim() != 2:
                raise ValueError(
                    f"latent must be 2-D (batch_size, latent_size), got {tuple(latent.shape)}"
                )
            sizes["latent"] = latent.shape[0]
        if composer is not None and not isinstance(composer, (str, int)):
            count = composer.numel() if isinstance(composer, torch.Tensor) else len(composer)
            if count != 1:
                sizes["composer"] = count
        if len(set(sizes.values())) > 1:
            raise ValueError(f"batch sizes disagree: {sizes}")
        return next(iter(sizes.values()), 1)


__all__ = [
    "MidiVAEForConditionalGeneration",
    "MidiVAEModel",
    "MidiVAEPosterior",
    "MidiVAEPreTrainedModel",
]
