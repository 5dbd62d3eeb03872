"""Does the composer-conditioned VAE generate what a composer classifier recognises?

The composer-conditioned VAE study scored its samples with a GRU classifier and found them
classified as the requested composer *less often than chance*. This benchmark repeats the
measurement on real, composer-labelled MIDI, measured in one run:

1. pieces are tokenized (REMI by default) and cut into windows of ``--max_length`` tokens, each
   starting with BOS and keeping its piece's composer; training uses the same number of windows
   per composer (sampled with replacement), evaluation every window of the held-out test split;
2. a ``MidiGRUForSequenceClassification`` is trained with ``Trainer``; its held-out accuracy,
   macro-F1 and confusion matrix say what it can tell apart;
3. a ``MidiVAEForConditionalGeneration`` is trained with ``Trainer``;
4. ``--samples_per_composer`` windows are generated per composer (z from the composer's prior
   component, KV-cached sampling) and classified: conditioning accuracy against chance
   (1 / composers); cosine similarity of generated and real pitch-class histograms per composer
   (and relative to the other composers); silhouette of the posterior means by composer.

    python benchmarks/bench_conditioning.py                 # music21_composers, offline, CPU
    python benchmarks/bench_conditioning.py --quick         # a smoke run (small, not a result)
    python benchmarks/bench_conditioning.py --dataset maestro --data_dir /data/maestro-v3.0.0 \
        --dataset_config '{"top_n_composers": 12}'
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, load_from_disk
from transformers import Trainer, TrainingArguments, set_seed

from midiformers import (
    MidiGRUConfig,
    MidiGRUForSequenceClassification,
    MidiVAEConfig,
    MidiVAEForConditionalGeneration,
)
from midiformers.data_scripts import load_midi_dataset, tokenize_dataset
from midiformers.evaluation.conditioning import (
    compute_classification_metrics,
    evaluate_conditioning,
)
from midiformers.tokenization import MidiTokenizer

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.bench_conditioning
    from _common import machine_description
except ImportError:
    from benchmarks._common import machine_description

logger = logging.getLogger("bench_conditioning")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="music21_composers")
    parser.add_argument("--data_dir", default=None, help="an already downloaded corpus")
    parser.add_argument("--dataset_config", default="{}", help="JSON options of the builder")
    parser.add_argument("--cache_dir", default=None, help="datasets cache for the built corpus")
    parser.add_argument(
        "--dataset_from_disk",
        default=None,
        help="a built corpus saved with DatasetDict.save_to_disk (skips the builder)",
    )
    parser.add_argument("--preset", default="remi", help="MidiTokenizer preset")
    parser.add_argument("--max_length", type=int, default=128, help="tokens per window")
    parser.add_argument("--max_windows_per_piece", type=int, default=16)
    parser.add_argument("--windows_per_composer", type=int, default=300, help="training windows")
    parser.add_argument("--classifier_epochs", type=float, default=3.0)
    parser.add_argument("--vae_epochs", type=float, default=4.0)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2, help="encoder and decoder layers each")
    parser.add_argument("--latent_size", type=int, default=32)
    parser.add_argument("--samples_per_composer", type=int, default=20)
    parser.add_argument("--top_k", type=int, default=0, help="0: sample from the full softmax")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="outputs/bench_conditioning")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the pipeline")
    args = parser.parse_args(argv)
    if args.quick:
        args.windows_per_composer, args.classifier_epochs, args.vae_epochs = 24, 1.0, 1.0
        args.samples_per_composer, args.max_length, args.hidden_size = 4, 64, 32
        args.layers, args.latent_size = 1, 8
    return args


# ------------------------------------------------------------------------------ data


def windows(dataset: Dataset, bos: int, max_length: int, per_piece: int) -> tuple[list, list]:
    """Token windows (each starting with BOS, at most ``per_piece`` evenly spaced per piece)
    and their composer ids."""
    by_piece: dict[str, list[tuple[list[int], int]]] = {}
    for row in dataset:
        ids = row["input_ids"]
        if ids[0] != bos:
            ids = [bos] + ids[: max_length - 1]
        if len(ids) >= 8:
            by_piece.setdefault(row["id"], []).append((ids, row["composer"]))
    pieces, labels = [], []
    for chunks in by_piece.values():
        keep = np.unique(np.linspace(0, len(chunks) - 1, min(per_piece, len(chunks))).astype(int))
        for index in keep:
            pieces.append(chunks[index][0])
            labels.append(chunks[index][1])
    return pieces, labels


def balanced(pieces: list, labels: list, per_composer: int, seed: int) -> tuple[list, list]:
    """The same number of windows for every composer, sampled with replacement."""
    rng = np.random.default_rng(seed)
    labels_array = np.asarray(labels)
    chosen = np.concatenate(
        [
            rng.choice(np.flatnonzero(labels_array == c), per_composer, replace=True)
            for c in np.unique(labels_array)
        ]
    )
    rng.shuffle(chosen)
    return [pieces[i] for i in chosen], [int(labels[i]) for i in chosen]


def collate(pad: int, label_key: str):
    """Right-pad a batch; causal labels are the ids with -100 on padding."""

    def collate_fn(features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), pad, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            mask[i, : len(f["input_ids"])] = 1
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            label_key: torch.tensor([f["composer"] for f in features]),
        }
        if label_key == "composer_labels":
            batch["labels"] = ids.masked_fill(mask == 0, -100)
        return batch

    return collate_fn


# ------------------------------------------------------------------------------ training


def train(model, pieces, labels, label_key, epochs, args, output_dir, eval_set=None):
    """Train ``model`` with ``Trainer`` on windows; returns the trainer."""
    dataset = Dataset.from_dict({"input_ids": pieces, "composer": labels})
    eval_dataset = None
    if eval_set is not None:
        eval_dataset = Dataset.from_dict({"input_ids": eval_set[0], "composer": eval_set[1]})
    training_args = TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=1e-3,
        warmup_steps=50,
        lr_scheduler_type="cosine",
        weight_decay=0.01,
        max_grad_norm=1.0,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_steps=50,
        remove_unused_columns=False,
        seed=args.seed,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        data_collator=collate(model.config.pad_token_id, label_key),
        compute_metrics=compute_classification_metrics if eval_set is not None else None,
    )
    trainer.train()
    return trainer


def pitches_from(tokenizer: MidiTokenizer):
    """Token ids -> pitches of the decoded notes (drums left out)."""

    def pitches_of(ids) -> list[int]:
        try:
            score = tokenizer.to_score(list(ids))
        except Exception:  # noqa: BLE001  (an undecodable sample simply has no pitches)
            return []
        return [note.pitch for track in score.tracks if not track.is_drum for note in track.notes]

    return pitches_of


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    set_seed(args.seed)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    if args.dataset_from_disk:
        corpus = load_from_disk(args.dataset_from_disk)
    else:
        corpus = load_midi_dataset(
            args.dataset,
            data_dir=args.data_dir,
            cache_dir=args.cache_dir,
            **json.loads(args.dataset_config),
        )
    names = corpus["train"].features["composer"].names
    tokenizer = MidiTokenizer(preset=args.preset)
    tokens = tokenize_dataset(
        corpus, tokenizer, max_length=args.max_length, mode="chunk", keep_columns=["id", "composer"]
    )
    bos = tokenizer.bos_token_id
    train_windows = windows(tokens["train"], bos, args.max_length, args.max_windows_per_piece)
    test_windows = windows(tokens["test"], bos, args.max_length, args.max_windows_per_piece)
    train_pieces, train_labels = balanced(*train_windows, args.windows_per_composer, args.seed)
    timings["data (build, tokenize)"] = time.perf_counter() - start
    logger.info(
        "%d composers, %d training windows (balanced), %d held-out test windows",
        len(names),
        len(train_pieces),
        len(test_windows[0]),
    )
    label_maps = {"id2label": dict(enumerate(names))}
    special = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }

    start = time.perf_counter()
    classifier = MidiGRUForSequenceClassification(
        MidiGRUConfig(
            embedding_size=args.hidden_size // 2,
            hidden_size=args.hidden_size,
            num_hidden_layers=1,
            bidirectional=True,
            pooling="mean",
            **special,
            **label_maps,
        )
    )
    trainer = train(
        classifier,
        train_pieces,
        train_labels,
        "labels",
        args.classifier_epochs,
        args,
        output_dir / "classifier",
        eval_set=test_windows,
    )
    classifier_metrics = trainer.evaluate()
    timings["classifier training"] = time.perf_counter() - start

    start = time.perf_counter()
    steps = int(args.vae_epochs * len(train_pieces) / args.batch_size)
    vae = MidiVAEForConditionalGeneration(
        MidiVAEConfig(
            hidden_size=args.hidden_size,
            num_hidden_layers=args.layers,
            num_encoder_layers=args.layers,
            num_attention_heads=4,
            intermediate_size=4 * args.hidden_size,
            max_position_embeddings=args.max_length,
            latent_size=args.latent_size,
            num_memory_tokens=4,
            beta=1.0,
            beta_schedule="linear",
            beta_warmup_steps=max(1, steps // 3),
            free_bits=0.05,
            hidden_dropout=0.1,
            attention_dropout=0.0,
            **special,
            **label_maps,
        )
    )
    train(
        vae,
        train_pieces,
        train_labels,
        "composer_labels",
        args.vae_epochs,
        args,
        output_dir / "vae",
    )
    timings["VAE training"] = time.perf_counter() - start

    start = time.perf_counter()
    generation = {"max_new_tokens": args.max_length - 1, "temperature": args.temperature}
    if args.top_k:
        generation["top_k"] = args.top_k
    report = evaluate_conditioning(
        vae,
        classifier,
        test_windows[0],
        test_windows[1],
        pitches_of=pitches_from(tokenizer),
        samples_per_composer=args.samples_per_composer,
        composer_names=names,
        batch_size=args.samples_per_composer,
        **generation,
    )
    timings["generation + evaluation"] = time.perf_counter() - start

    results = {
        **report.summary(),
        "trainer_eval_accuracy": classifier_metrics["eval_accuracy"],
        "trainer_eval_macro_f1": classifier_metrics["eval_macro_f1"],
        "composers": len(names),
        "test_windows": len(test_windows[0]),
        "timings_s": timings,
        "args": vars(args),
    }
    header = [
        f"# Conditioning benchmark: {args.dataset}, {args.preset} windows of {args.max_length} "
        f"tokens, {len(names)} composers (chance {report.chance:.3f})",
        "",
        machine_description(),
        "",
        f"VAE: hidden {args.hidden_size}, {args.layers}+{args.layers} layers, latent "
        f"{args.latent_size}, {steps} steps; GRU: bidirectional, hidden {args.hidden_size}; "
        f"{args.samples_per_composer} samples per composer, "
        f"{'top-k ' + str(args.top_k) if args.top_k else 'full softmax'}, temperature "
        f"{args.temperature}.",
        "",
    ]
    timing_lines = ["", "| stage | seconds |", "| --- | --- |"]
    timing_lines += [f"| {stage} | {seconds:.0f} |" for stage, seconds in timings.items()]
    table = "\n".join(header) + report.to_markdown() + "\n" + "\n".join(timing_lines)
    print(table)
    (output_dir / "results.md").write_text(table + "\n")
    (output_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


if __name__ == "__main__":
    main()
