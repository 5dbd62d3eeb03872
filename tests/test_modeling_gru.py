"""MidiGRU composer classifier: the shared model checks, padding on either side, pooling
options, the loss, Trainer training with accuracy / macro-F1, and the metric definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from model_tester import PAD, ModelTesterMixin, left_pad, random_ids
from transformers import AutoModel, Trainer, TrainingArguments, default_data_collator

from midiformers import MidiGRUConfig, MidiGRUForSequenceClassification, MidiGRUModel
from midiformers.evaluation.conditioning import (
    classify,
    compute_classification_metrics,
    confusion_matrix,
    macro_f1,
)

COMPOSERS = {0: "bach", 1: "chopin", 2: "debussy"}


class TestMidiGRU(ModelTesterMixin):
    config_class = MidiGRUConfig
    base_model_class = MidiGRUModel
    model_class = MidiGRUForSequenceClassification
    auto_class_name = "AutoModelForSequenceClassification"
    wrongly_typed_fields = (("hidden_size", "wide"), ("bidirectional", "yes"))  # no use_cache
    invalid_configs = [
        ({"pooling": "attention"}, "pooling"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"hidden_dropout": 1.5}, "hidden_dropout"),
        ({"classifier_dropout": -0.1}, "classifier_dropout"),
        ({"pad_token_id": 99}, "pad_token_id"),
    ]

    def get_config(self, **overrides) -> MidiGRUConfig:
        values = dict(
            vocab_size=self.vocab_size,
            embedding_size=16,
            hidden_size=32,
            num_hidden_layers=2,
            bidirectional=True,
            hidden_dropout=0.0,
            classifier_dropout=0.0,
            id2label=dict(COMPOSERS),
            pad_token_id=PAD,
        )
        values.update(overrides)
        return MidiGRUConfig(**values)

    def model_inputs(self, batch: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
        ids = random_ids(batch, length, self.vocab_size, seed=seed)
        mask = torch.ones_like(ids)
        mask[0, : length // 3] = 0  # one left-padded row
        ids[0, : length // 3] = PAD
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.arange(batch) % 3}

    # ---------------------------------------------------------------- GRU specific

    @pytest.mark.parametrize("pooling", ["mean", "max", "last"])
    @pytest.mark.parametrize("bidirectional", [True, False])
    def test_padding_side_does_not_matter(self, pooling, bidirectional):
        model = self.make_model(pooling=pooling, bidirectional=bidirectional)
        rows = [random_ids(1, n, self.vocab_size, seed=n)[0] for n in (5, 9, 2)]
        left_ids, left_mask = left_pad(rows)
        right_ids = torch.full_like(left_ids, PAD)
        right_mask = torch.zeros_like(left_mask)
        for i, row in enumerate(rows):
            right_ids[i, : len(row)] = row
            right_mask[i, : len(row)] = 1
        with torch.no_grad():
            left = model(input_ids=left_ids, attention_mask=left_mask).logits
            right = model(input_ids=right_ids, attention_mask=right_mask).logits
            alone = torch.cat([model(input_ids=row.unsqueeze(0)).logits for row in rows])
        assert left.shape == (3, 3)
        torch.testing.assert_close(left, right, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(left, alone, rtol=1e-4, atol=1e-5)

    def test_pooled_output_width(self):
        ids = random_ids(2, 7, self.vocab_size)
        for bidirectional, width in ((True, 64), (False, 32)):
            base = MidiGRUModel(self.get_config(bidirectional=bidirectional))
            out = base(input_ids=ids)
            assert out.last_hidden_state.shape == (2, 7, width)
            assert out.pooler_output.shape == (2, width)
        assert type(AutoModel.from_config(self.get_config())) is MidiGRUModel

    def test_loss_is_cross_entropy_and_labels_are_checked(self):
        model = self.make_model()
        inputs = self.model_inputs(4, 10)
        out = model(**inputs)
        expected = torch.nn.functional.cross_entropy(out.logits, inputs["labels"])
        torch.testing.assert_close(out.loss, expected)
        with pytest.raises(ValueError, match="num_labels"):
            model(input_ids=inputs["input_ids"], labels=torch.tensor([0, 1, 2, 3]))
        with pytest.raises(ValueError, match="attention_mask"):
            model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"][:, :5])

    def test_trainer_learns_and_reports_accuracy_and_macro_f1(self, tmp_path):
        generator = torch.Generator().manual_seed(0)

        def pieces(count):
            # Each composer plays its own third of the vocabulary.
            labels = torch.randint(0, 3, (count,), generator=generator)
            low = 3 + labels * 19
            ids = low[:, None] + torch.randint(0, 19, (count, 12), generator=generator)
            return Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})

        torch.manual_seed(0)
        model = self.model_class(self.get_config(num_hidden_layers=1))
        args = TrainingArguments(
            output_dir=str(tmp_path),
            num_train_epochs=4,
            per_device_train_batch_size=16,
            learning_rate=1e-2,
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            eval_strategy="no",
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=pieces(96),
            eval_dataset=pieces(30),
            data_collator=default_data_collator,
            compute_metrics=compute_classification_metrics,
        )
        trainer.train()
        metrics = trainer.evaluate()
        assert metrics["eval_accuracy"] >= 0.9, metrics
        assert 0.0 <= metrics["eval_macro_f1"] <= 1.0
        assert metrics["eval_macro_f1"] >= 0.85, metrics

    def test_classify_helper_matches_the_model(self):
        model = self.make_model()
        pieces = [random_ids(1, n, self.vocab_size, seed=n)[0].tolist() for n in (4, 11, 6, 1)]
        predictions = classify(model, pieces, batch_size=3)
        with torch.no_grad():
            expected = [int(model(input_ids=torch.tensor([p])).logits.argmax()) for p in pieces]
        assert predictions.tolist() == expected


# ------------------------------------------------------------------ metric definitions


def test_confusion_matrix_and_macro_f1():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    matrix = confusion_matrix(y_true, y_pred, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # Per class F1 = 2TP / (2TP + FP + FN): class 0: 2/4, class 1: 4/5, class 2: 2/3.
    assert macro_f1(y_true, y_pred) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert macro_f1([1, 1], [1, 1]) == 1.0


def test_compute_classification_metrics_from_logits():
    class Prediction:
        predictions = np.array([[2.0, 0.1], [0.3, 0.9], [0.2, 0.1]])
        label_ids = np.array([0, 1, 1])

    metrics = compute_classification_metrics(Prediction())
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    # class 0: TP 1, FP 1 -> 2/3; class 1: TP 1, FN 1 -> 2/3.
    assert metrics["macro_f1"] == pytest.approx(2 / 3)
