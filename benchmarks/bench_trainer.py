"""Training throughput: ``train.py``'s Trainer path against a plain PyTorch loop.

Both train the same freshly initialised model (same seed) on the same packed blocks of the
offline Bach chorales, with the same batch size, AdamW, linear schedule and gradient
clipping, for the same number of steps, in one run. Prints a Markdown table of training
tokens/s and the ratio (goal: the Trainer path keeps >= 0.9x of the plain loop).

    python benchmarks/bench_trainer.py --steps 40 --model gpt
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch.utils.data import DataLoader
from transformers import default_data_collator, get_linear_schedule_with_warmup

from midiformers.training.arguments import parse_recipe
from midiformers.training.run import (
    MidiTrainer,
    build_model,
    build_tokenizer,
    load_data,
    resolve_model_type,
    task_for,
    tokenize,
)

try:
    from _common import machine_description
except ImportError:  # run from another folder
    from benchmarks._common import machine_description

MODEL_SIZES = {
    "gpt": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4},
    "conformer": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4},
    "music_transformer": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4},
    "lstm": {"embedding_size": 256, "hidden_size": 512, "num_hidden_layers": 2},
}


def prepare(args: argparse.Namespace, output_dir: str):
    """Tokenizer, training blocks and a model built exactly as train.py builds them."""
    size = {**MODEL_SIZES[args.model], "hidden_dropout": 0.0}
    if args.model != "lstm":
        size.update(attention_dropout=0.0, intermediate_size=4 * size["hidden_size"])
    argv = [
        "--model_type", args.model,
        "--model_config", str(size).replace("'", '"'),
        "--dataset_config", f'{{"max_pieces": {args.pieces}}}',
        "--max_length", str(args.length),
        "--output_dir", output_dir,
        "--per_device_train_batch_size", str(args.batch_size),
        "--max_steps", str(args.steps),
        "--learning_rate", "5e-4",
        "--warmup_steps", "0",
        "--lr_scheduler_type", "linear",
        "--weight_decay", "0.0",
        "--eval_strategy", "no",
        "--save_strategy", "no",
        "--logging_strategy", "no",
        "--num_samples", "0",
        "--disable_tqdm", "true",
        "--use_cpu", str(args.device == "cpu").lower(),
        "--dataloader_pin_memory", "false",
        "--seed", "0",
    ]  # fmt: skip
    model_args, data_args, tok_args, train_args, _ = parse_recipe(argv)
    model_type = resolve_model_type(model_args.model_type)
    task = task_for(model_type)
    dataset = load_data(data_args, train_args)
    tokenizer = build_tokenizer(tok_args, model_args)
    train_set, _ = tokenize(dataset, tokenizer, data_args, task, train_args)
    build = lambda: build_model(model_args, data_args, tokenizer, task, model_type, None)  # noqa: E731
    return train_args, train_set, tokenizer, build


def time_trainer(train_args, train_set, tokenizer, build) -> float:
    torch.manual_seed(0)
    model = build()
    trainer = MidiTrainer(
        model=model,
        args=train_args,
        train_dataset=train_set,
        processing_class=tokenizer,
        data_collator=default_data_collator,
    )
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def time_plain_loop(train_args, train_set, build, device: str) -> float:
    torch.manual_seed(0)
    model = build().to(device).train()
    loader = DataLoader(
        train_set.with_format("torch"),
        batch_size=train_args.per_device_train_batch_size,
        shuffle=True,
        collate_fn=default_data_collator,
        drop_last=False,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_args.learning_rate, weight_decay=0)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, train_args.max_steps)
    start = time.perf_counter()
    step = 0
    while step < train_args.max_steps:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step == train_args.max_steps:
                break
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODEL_SIZES), default="gpt")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--pieces", type=int, default=60, help="Bach chorales to use")
    parser.add_argument("--rounds", type=int, default=2, help="alternating timed rounds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as output_dir:
        train_args, train_set, tokenizer, build = prepare(args, output_dir)
        tokens = args.steps * args.batch_size * args.length
        trainer_times, plain_times = [], []
        for _ in range(args.rounds):  # alternate so drift in machine load hits both
            plain_times.append(time_plain_loop(train_args, train_set, build, args.device))
            trainer_times.append(time_trainer(train_args, train_set, tokenizer, build))
    plain, trainer = tokens / min(plain_times), tokens / min(trainer_times)
    print(machine_description())
    print(
        f"\n{args.model}, {args.steps} steps of batch {args.batch_size} x {args.length} tokens "
        f"({len(train_set)} blocks), best of {args.rounds}\n"
    )
    print("| path | training tokens/s | ratio |")
    print("|---|---:|---:|")
    print(f"| plain PyTorch loop | {plain:,.0f} | 1.00 |")
    print(f"| train.py (Trainer) | {trainer:,.0f} | {trainer / plain:.2f} |")


if __name__ == "__main__":
    main()
