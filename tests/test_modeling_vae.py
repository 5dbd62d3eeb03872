"""MidiVAE: the shared causal-LM checks (its decoder is causal), plus the VAE's own contract:
closed-form KL, per-composer prior, beta schedules, free bits, composer-conditioned generation,
and an end-to-end check that conditioned samples are recognised by a classifier.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_tester import BOS, EOS, PAD, CausalLMTesterMixin, left_pad, random_ids

from midiformers import (
    MidiGRUConfig,
    MidiGRUForSequenceClassification,
    MidiVAEConfig,
    MidiVAEForConditionalGeneration,
    MidiVAEModel,
)
from midiformers.evaluation.conditioning import (
    cosine_similarity,
    evaluate_conditioning,
    pitch_class_histogram,
    silhouette_score,
)

COMPOSERS = {0: "bach", 1: "chopin", 2: "debussy"}


class TestMidiVAE(CausalLMTesterMixin):
    config_class = MidiVAEConfig
    base_model_class = MidiVAEModel
    model_class = MidiVAEForConditionalGeneration
    invalid_configs = [
        ({"hidden_size": 30}, "hidden_size"),
        ({"hidden_size": 36, "num_attention_heads": 4}, "head dimension"),
        ({"latent_size": 0}, "latent_size"),
        ({"num_encoder_layers": 0}, "num_encoder_layers"),
        ({"num_memory_tokens": 0}, "num_memory_tokens"),
        ({"beta": -1.0}, "beta"),
        ({"beta_schedule": "sigmoid"}, "beta_schedule"),
        ({"beta_schedule": "linear", "beta_warmup_steps": 0}, "beta_warmup_steps"),
        ({"beta_schedule": "cyclical", "beta_cycle_ratio": 0.0}, "beta_cycle_ratio"),
        ({"free_bits": -0.5}, "free_bits"),
        ({"hidden_act": "no_such_activation"}, "hidden_act"),
        ({"attention_dropout": 1.0}, "attention_dropout"),
        ({"label2id": {"bach": 1, "chopin": 0, "debussy": 2}}, "label2id"),
        ({"pad_token_id": 61}, "pad_token_id"),
    ]

    def get_config(self, **overrides) -> MidiVAEConfig:
        values = dict(
            vocab_size=self.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_encoder_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=256,
            latent_size=8,
            num_memory_tokens=2,
            beta=1.0,
            beta_schedule="constant",
            hidden_dropout=0.0,
            attention_dropout=0.0,
            id2label=dict(COMPOSERS),
            pad_token_id=PAD,
            bos_token_id=BOS,
            eos_token_id=EOS,
        )
        values.update(overrides)
        return MidiVAEConfig(**values)

    def model_inputs(self, batch: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
        inputs = super().model_inputs(batch, length, seed)
        inputs["composer_labels"] = torch.arange(batch) % len(COMPOSERS)
        return inputs

    def continuation_kwargs(self, first) -> dict:
        return {"latent": first.latent, "composer_labels": first.composer_labels}

    def test_forward_shapes_and_loss(self):
        """Overrides the causal check: the loss is reconstruction CE + beta * KL / tokens."""
        model = self.make_model()
        ids = random_ids(2, 12, self.vocab_size)
        labels = ids.clone()
        labels[0, :4] = -100
        composers = torch.tensor([0, 2])
        out = model(input_ids=ids, labels=labels, composer_labels=composers, kl_weight=0.5)
        assert out.logits.shape == (2, 12, self.vocab_size)
        expected_ce = torch.nn.functional.cross_entropy(
            out.logits[:, :-1].reshape(-1, self.vocab_size), labels[:, 1:].reshape(-1)
        )
        torch.testing.assert_close(out.reconstruction_loss, expected_ce)
        posterior = model.encode(ids)
        prior = torch.distributions.Normal(
            model.model.prior_means[composers], (0.5 * model.model.prior_logvars[composers]).exp()
        )
        q = torch.distributions.Normal(posterior.mu, (0.5 * posterior.logvar).exp())
        kl = torch.distributions.kl_divergence(q, prior).sum(-1)
        torch.testing.assert_close(out.kl, kl.mean())
        tokens = int((labels[:, 1:] != -100).sum())
        torch.testing.assert_close(out.loss, expected_ce + 0.5 * kl.sum() / tokens)
        assert out.mu.shape == out.logvar.shape == (2, 8)
        torch.testing.assert_close(out.mu, posterior.mu)
        assert out.composer_labels.tolist() == [0, 2]
        hidden = MidiVAEModel(model.config)(input_ids=ids).last_hidden_state
        assert hidden.shape == (2, 12, 32)

    def test_closed_form_kl_matches_monte_carlo(self):
        model = self.make_model()
        generator = torch.Generator().manual_seed(1)
        mu = torch.randn(3, 8, generator=generator)
        logvar = torch.randn(3, 8, generator=generator) * 0.5
        composers = torch.tensor([2, 0, 1])
        closed = model.model.kl_divergence(mu, logvar, composers).sum(-1)
        q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
        p = torch.distributions.Normal(
            model.model.prior_means[composers], (0.5 * model.model.prior_logvars[composers]).exp()
        )
        torch.manual_seed(0)
        z = q.sample((200_000,))
        monte_carlo = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean(0)
        # 200k samples: the standard error is well under 1% of these KLs.
        torch.testing.assert_close(closed, monte_carlo.detach(), rtol=0.02, atol=0.02)

    def test_prior_components_differ_and_receive_gradients(self):
        torch.manual_seed(0)
        model = self.model_class(self.get_config()).train()
        means = model.model.prior_means
        assert means.shape == (3, 8)
        assert torch.cdist(means, means)[~torch.eye(3, dtype=torch.bool)].min() > 0.1
        ids = random_ids(2, 10, self.vocab_size)
        out = model(input_ids=ids, labels=ids, composer_labels=torch.tensor([0, 1]))
        out.loss.backward()
        for grad in (means.grad, model.model.prior_logvars.grad):
            assert grad[0].abs().sum() > 0 and grad[1].abs().sum() > 0
            assert torch.equal(grad[2], torch.zeros(8))  # composer 2 is not in the batch

    def test_unknown_composer_uses_nearest_component(self):
        model = self.make_model()
        ids = random_ids(4, 10, self.vocab_size)
        posterior = model.encode(ids)
        nearest = (
            torch.stack(
                [
                    model.model.kl_divergence(
                        posterior.mu, posterior.logvar, torch.full((4,), c)
                    ).sum(-1)
                    for c in range(3)
                ],
                dim=-1,
            )
            .argmin(-1)
            .tolist()
        )
        with torch.no_grad():
            unknown = model(input_ids=ids, composer_labels=torch.full((4,), -100))
            absent = model(input_ids=ids)
        assert unknown.composer_labels.tolist() == nearest == absent.composer_labels.tolist()
        with pytest.raises(ValueError, match="composer_labels must be below num_labels"):
            model(input_ids=ids, composer_labels=torch.tensor([0, 1, 2, 3]))

    def test_beta_schedules(self):
        linear = self.get_config(beta=2.0, beta_schedule="linear", beta_warmup_steps=10)
        assert [linear.kl_weight(s) for s in (0, 5, 10, 50)] == [0.0, 1.0, 2.0, 2.0]
        cyclical = self.get_config(
            beta=1.0, beta_schedule="cyclical", beta_cycle_steps=8, beta_cycle_ratio=0.5
        )
        weights = [cyclical.kl_weight(s) for s in range(12)]
        assert weights == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 0.0, 0.25, 0.5, 0.75]
        assert self.get_config(beta=0.3).kl_weight(123) == 0.3

    def test_training_forward_advances_the_schedule(self):
        model = self.model_class(
            self.get_config(beta_schedule="linear", beta_warmup_steps=4)
        ).train()
        ids = random_ids(2, 8, self.vocab_size)
        seen = [float(model(input_ids=ids, labels=ids).kl_weight) for _ in range(6)]
        assert seen == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
        model.eval()
        with torch.no_grad():
            assert float(model(input_ids=ids, labels=ids).kl_weight) == 1.0
        assert model.kl_step == 6

    def test_free_bits_floor_the_kl_per_dimension(self):
        model = self.make_model(free_bits=50.0).train()
        ids = random_ids(2, 9, self.vocab_size)
        out = model(input_ids=ids, labels=ids, composer_labels=torch.tensor([0, 1]))
        tokens = 2 * 8
        assert out.kl.item() / 8 < 50.0  # every dimension is under the floor here
        torch.testing.assert_close(out.loss, out.reconstruction_loss + 1.0 * 50.0 * 8 * 2 / tokens)
        out.loss.backward()
        # Under the floor the KL gives no gradient: the prior only moves through the decoder.
        assert torch.equal(
            model.model.prior_logvars.grad, torch.zeros_like(model.model.prior_logvars)
        )

    # ------------------------------------------------------------- generation

    def test_generate_from_composer_name_id_or_latent(self):
        model = self.make_model()
        torch.manual_seed(0)
        by_name = model.generate(
            composer="chopin", max_new_tokens=8, min_new_tokens=8, do_sample=True
        )
        torch.manual_seed(0)
        by_id = model.generate(composer=1, max_new_tokens=8, min_new_tokens=8, do_sample=True)
        assert by_name.shape == (1, 9) and by_name[0, 0] == BOS
        assert torch.equal(by_name, by_id)
        several = model.generate(
            composer=["bach", "debussy", 0], max_new_tokens=5, min_new_tokens=5, do_sample=True
        )
        assert several.shape == (3, 6)
        with pytest.raises(ValueError, match="known composers: 'bach', 'chopin', 'debussy'"):
            model.generate(composer="mozart", max_new_tokens=4)
        with pytest.raises(ValueError, match="out of range"):
            model.generate(composer=7, max_new_tokens=4)
        with pytest.raises(ValueError, match="latent"):
            model.generate(latent=torch.zeros(2, 5), max_new_tokens=4)
        with pytest.raises(ValueError, match="batch sizes disagree"):
            model.generate(composer=["bach", "chopin"], latent=torch.zeros(3, 8))

    def test_greedy_from_latent_cached_equals_uncached(self):
        model = self.make_model()
        latent = model.sample_latent(
            ["bach", "debussy"], generator=torch.Generator().manual_seed(3)
        )
        kwargs = dict(latent=latent, max_new_tokens=48, min_new_tokens=48, do_sample=False)
        cached = model.generate(**kwargs, use_cache=True)
        uncached = model.generate(**kwargs, use_cache=False)
        assert cached.shape == (2, 49)
        assert torch.equal(cached, uncached)

    def test_composer_changes_what_is_decoded(self):
        model = self.make_model()
        latent = torch.zeros(1, 8)
        with torch.no_grad():
            logits = [
                model(
                    input_ids=torch.tensor([[BOS]]),
                    latent=latent,
                    composer_labels=torch.tensor([c]),
                ).logits
                for c in range(3)
            ]
        assert not torch.allclose(logits[0], logits[1]) and not torch.allclose(logits[1], logits[2])

    def test_sample_latent_draws_from_the_component(self):
        model = self.make_model(spread=False)  # components initialised apart (prior_init_std)
        generator = torch.Generator().manual_seed(0)
        draws = model.sample_latent("debussy", num_samples=20_000, generator=generator)
        mean, std = model.model.prior_means[2], (0.5 * model.model.prior_logvars[2]).exp()
        # 5 standard errors of the mean / of the std estimate.
        assert torch.all((draws.mean(0) - mean).abs() < 5 * std / 20_000**0.5)
        assert torch.all((draws.std(0) - std).abs() < 5 * std / (2 * 20_000) ** 0.5)
        assert torch.equal(
            model.sample_latent("debussy", num_samples=2, temperature=0.0), mean.expand(2, 8)
        )
        responsibilities = model.predict_composer(model.model.prior_means.detach())
        assert responsibilities.argmax(-1).tolist() == [0, 1, 2]

    def test_encode_ignores_padding(self):
        model = self.make_model()
        rows = [random_ids(1, n, self.vocab_size, seed=n)[0] for n in (6, 9, 4)]
        ids, mask = left_pad(rows)
        padded = model.encode(ids, attention_mask=mask)
        for i, row in enumerate(rows):
            alone = model.encode(row.unsqueeze(0))
            torch.testing.assert_close(padded.mu[i], alone.mu[0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(padded.logvar[i], alone.logvar[0], rtol=1e-4, atol=1e-5)

    def test_decoding_needs_a_latent_once_cached(self):
        model = self.make_model()
        ids = random_ids(1, 5, self.vocab_size)
        with torch.no_grad():
            cache = model(input_ids=ids, use_cache=True).cache
            with pytest.raises(ValueError, match="latent is required"):
                model(input_ids=ids[:, -1:], cache=cache)


# ------------------------------------------------------------------ conditioning metrics


def test_silhouette_of_separated_and_mixed_groups():
    # Two pairs at distance 1 inside, 10 apart: a = 1, b = mean(10, sqrt(101)) for each point.
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 10.0], [1.0, 10.0]])
    b = (10.0 + 101**0.5) / 2
    assert silhouette_score(points, [0, 0, 1, 1]) == pytest.approx((b - 1.0) / b)
    # Swapping the labels makes each point closer to the other group: negative.
    assert silhouette_score(points, [0, 1, 0, 1]) < 0
    with pytest.raises(ValueError, match="groups"):
        silhouette_score(points, [0, 0, 0, 0])


def test_pitch_class_histogram_and_cosine():
    histogram = pitch_class_histogram([60, 72, 64, 67])  # C, C, E, G
    assert histogram[0] == 0.5 and histogram[4] == 0.25 and histogram[7] == 0.25
    assert cosine_similarity(histogram, histogram) == pytest.approx(1.0)
    assert cosine_similarity(histogram, pitch_class_histogram([61, 66])) == 0.0
    assert pitch_class_histogram([]).sum() == 0.0


# ------------------------------------------------------------------ end to end


def synthetic_pieces(composer: int, count: int, length: int, generator: torch.Generator):
    """Composer 0 plays low tokens (3..31), composer 1 high ones (32..60): clearly different."""
    low, high = (3, 32) if composer == 0 else (32, 61)
    body = torch.randint(low, high, (count, length - 2), generator=generator)
    bos = torch.full((count, 1), BOS)
    eos = torch.full((count, 1), EOS)
    return torch.cat([bos, body, eos], dim=1)


def test_conditioned_samples_are_recognised_well_above_chance():
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    length = 16
    train = [synthetic_pieces(c, 64, length, generator) for c in (0, 1)]
    ids = torch.cat(train)
    composers = torch.tensor([0] * 64 + [1] * 64)
    names = {0: "low", 1: "high"}

    vae = MidiVAEForConditionalGeneration(
        MidiVAEConfig(
            vocab_size=61, hidden_size=32, num_hidden_layers=2, num_encoder_layers=1,
            num_attention_heads=4, intermediate_size=64, latent_size=4, num_memory_tokens=1,
            beta_schedule="linear", beta_warmup_steps=40, free_bits=0.1,
            hidden_dropout=0.0, attention_dropout=0.0, id2label=names,
        )
    )  # fmt: skip
    classifier = MidiGRUForSequenceClassification(
        MidiGRUConfig(
            vocab_size=61, embedding_size=16, hidden_size=16, num_hidden_layers=1,
            hidden_dropout=0.0, classifier_dropout=0.0, id2label=names,
        )
    )  # fmt: skip
    for model, steps, lr in ((vae, 80, 3e-3), (classifier, 40, 1e-2)):
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        for _ in range(steps):
            batch = torch.randint(0, len(ids), (32,), generator=generator)
            if model is vae:
                loss = vae(
                    input_ids=ids[batch], labels=ids[batch], composer_labels=composers[batch]
                ).loss
            else:
                loss = classifier(input_ids=ids[batch], labels=composers[batch]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    held_out = torch.cat([synthetic_pieces(c, 16, length, generator) for c in (0, 1)])
    held_out_labels = [0] * 16 + [1] * 16
    report = evaluate_conditioning(
        vae,
        classifier,
        held_out.tolist(),
        held_out_labels,
        pitches_of=lambda piece: [t for t in piece if t > EOS],
        samples_per_composer=16,
        max_new_tokens=length - 1,
        top_k=20,
    )
    assert report.chance == 0.5
    assert report.classifier_accuracy >= 0.95
    assert report.conditioning_accuracy >= 0.85, report.to_markdown()
    assert report.conditioning_confusion.sum() == 32
    assert "conditioning_accuracy" in report.to_markdown()


def test_later_pipeline_stage_refuses_to_encode_hidden_states():
    """transformers' pipeline split feeds a later stage the previous stage's hidden states as
    ``inputs_embeds``: encoding them as a piece would be silently wrong, so a latent is needed."""
    from transformers.distributed.pipeline_parallel import PipelineIdentityLayer

    model = TestMidiVAE().make_model()
    model.model.layers[0] = PipelineIdentityLayer()  # what the split does on stage 2 of 2
    hidden = torch.randn(2, 5, model.config.hidden_size)
    with pytest.raises(ValueError, match="later pipeline-parallel stage"):
        model(inputs_embeds=hidden)
    latent = torch.zeros(2, model.config.latent_size)
    assert model(inputs_embeds=hidden, latent=latent).logits.shape[:2] == (2, 5)
