"""Training throughput of ``train.py``'s recipe: the Trainer path against a plain PyTorch loop
and against the compute limit of the machine.

Every path trains the recipe's model (default: ``configs/default.yaml``, the run a newcomer
starts with ``python train.py``) freshly initialised with the same seed on the same packed
blocks, with the recipe's batch size, optimizer (transformers' choice for it, fused AdamW by
default), schedule and gradient clipping, in one run:

- ``plain loop``: a hand-written PyTorch loop, the reference;
- ``train.py``: ``MidiTrainer``, as ``train.py`` builds it (evaluation, saving and logging
  off, so the rows compare training steps);
- ``train.py + torch_compile``: the same with ``torch_compile=True`` (``--compile``).

Each path runs with every ``--threads`` count, in alternating rounds (best of ``--rounds``), so
that a burst of load from other jobs hits all of them alike. Steady-state tokens/s leave out
``--warmup`` steps (where ``torch.compile`` compiles; its cost is a column of its own), and the
CPU time (user + sys of this process) of the timed steps is reported next to the wall time.

The compute limit: training FLOPs per token (forward + backward, counted by PyTorch's
``FlopCounterMode`` on one batch) against the float32 matrix-multiply rate of the machine
(``torch.mm`` of 1024 x 1024 matrices, best of a few, at each thread count). The table gives
the share of that peak each path reaches and the tokens/s the peak would allow. Results go to
``benchmarks/results/bench_trainer.{md,json}``::

    python benchmarks/bench_trainer.py                       # the default recipe, 1 and 2 threads
    python benchmarks/bench_trainer.py --compile --steps 60
    python benchmarks/bench_trainer.py --recipe configs/gpt_jsb.yaml --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate.state import AcceleratorState
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from transformers import Trainer, TrainerCallback, default_data_collator, get_scheduler

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

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.bench_trainer
    from _common import machine_description
except ImportError:
    from benchmarks._common import machine_description

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
GOAL_RATIO = 0.9  # the Trainer path keeps at least this share of the plain loop's speed
logger = logging.getLogger("bench_trainer")


@dataclass
class Timing:
    """Steady-state seconds of the timed steps (wall and CPU) and the warm-up's wall seconds."""

    wall: float
    cpu: float
    warmup: float


@dataclass
class Row:
    path: str
    threads: int
    timings: list[Timing] = field(default_factory=list)

    def best(self) -> Timing:
        return min(self.timings, key=lambda timing: timing.wall)


class StepClock(TrainerCallback):
    """Starts the clocks when ``warmup`` steps are done and stops them at the end of training."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.start = time.perf_counter()
        self.marks: dict[str, float] = {}

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.marks.update(wall=time.perf_counter(), cpu=time.process_time())
            self.marks["warmup"] = self.marks["wall"] - self.start

    def on_train_end(self, args, state, control, **kwargs):
        self.timing = Timing(
            wall=time.perf_counter() - self.marks["wall"],
            cpu=time.process_time() - self.marks["cpu"],
            warmup=self.marks["warmup"],
        )


# ----------------------------------------------------------------------------- setup


def prepare(args: argparse.Namespace, output_dir: str):
    """Recipe arguments, training blocks, tokenizer and a model builder, as train.py has them."""
    argv = [str(args.recipe), "--output_dir", output_dir, "--max_steps", str(args.total_steps)]
    argv += ["--eval_strategy", "no", "--save_strategy", "no", "--logging_strategy", "no"]
    argv += ["--num_samples", "0", "--disable_tqdm", "true", "--report_to", "none"]
    argv += ["--plots", "false", "--use_cpu", str(args.device == "cpu").lower()]
    argv += ["--dataloader_pin_memory", "false"]
    if args.dataset_cache_dir:
        argv += ["--dataset_cache_dir", args.dataset_cache_dir]
    model_args, data_args, tok_args, train_args, _ = parse_recipe(argv)
    model_type = resolve_model_type(model_args.model_type)
    task = task_for(model_type)
    if task.name != "causal":
        raise SystemExit(f"{args.recipe}: bench_trainer measures causal LMs, not {model_type}")
    dataset = load_data(data_args, train_args)
    tokenizer = build_tokenizer(tok_args, model_args, dataset["train"])
    train_set, _ = tokenize(dataset, tokenizer, data_args, task, train_args)

    def build():
        return build_model(model_args, data_args, tokenizer, task, model_type, None)

    return train_args, train_set, tokenizer, build, data_args.max_length


def time_trainer(train_args, train_set, tokenizer, build, warmup: int, compile_: bool) -> Timing:
    torch.manual_seed(train_args.seed)
    AcceleratorState._reset_state()  # else the first Trainer's dynamo setting sticks
    train_args.torch_compile = compile_
    train_args.torch_compile_backend = "inductor" if compile_ else None
    clock = StepClock(warmup)
    trainer = MidiTrainer(
        model=build(),
        args=train_args,
        train_dataset=train_set,
        processing_class=tokenizer,
        data_collator=default_data_collator,
        callbacks=[clock],
    )
    trainer.train()
    if compile_ and not isinstance(trainer.model_wrapped, torch._dynamo.eval_frame.OptimizedModule):
        raise RuntimeError("torch_compile=True did not compile the model")
    return clock.timing


def time_plain_loop(train_args, train_set, build, device: str, warmup: int) -> Timing:
    """The reference: the same steps written out by hand."""
    torch.manual_seed(train_args.seed)
    start = time.perf_counter()
    model = build().to(device).train()
    loader = DataLoader(
        train_set.with_format("torch"),
        batch_size=train_args.per_device_train_batch_size,
        shuffle=True,
        collate_fn=default_data_collator,
    )
    optimizer_class, options = Trainer.get_optimizer_cls_and_kwargs(train_args, model)
    optimizer = optimizer_class(model.parameters(), weight_decay=train_args.weight_decay, **options)
    scheduler = get_scheduler(
        train_args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=train_args.get_warmup_steps(train_args.max_steps),
        num_training_steps=train_args.max_steps,
    )
    step, marks = 0, {}
    while step < train_args.max_steps:
        for batch in loader:
            batch = {key: value.to(device) for key, value in batch.items()}
            model(**batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step == warmup:
                marks = {"wall": time.perf_counter(), "cpu": time.process_time()}
            if step == train_args.max_steps:
                break
    return Timing(
        wall=time.perf_counter() - marks["wall"],
        cpu=time.process_time() - marks["cpu"],
        warmup=marks["wall"] - start,
    )


# ------------------------------------------------------------------------ the limit


def flops_per_token(build, train_set, batch_size: int, length: int) -> float:
    """Training FLOPs per token: one forward and backward of a batch, counted by PyTorch."""
    torch.manual_seed(0)
    model = build().train()
    batch = default_data_collator([train_set[i] for i in range(batch_size)])
    with FlopCounterMode(display=False) as counter:
        model(**batch).loss.backward()
    return counter.get_total_flops() / (batch_size * length)


def matmul_peak(threads: int, size: int = 1024, repeats: int = 7) -> float:
    """float32 FLOP/s of ``torch.mm`` on ``size`` x ``size`` matrices (best of ``repeats``)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


# ------------------------------------------------------------------------ reporting


def markdown(rows: list[Row], peaks: dict[int, float], flops: float, args, info: str) -> str:
    tokens = args.steps * args.batch_size * args.length
    plain = {row.threads: row for row in rows if row.path == "plain loop"}
    lines = [
        "## Training throughput (`benchmarks/bench_trainer.py`)",
        "",
        machine_description(args.device),
        "",
        f"{info}; {args.steps} timed steps of batch {args.batch_size} x {args.length} tokens "
        f"after {args.warmup} warm-up steps, best of {args.rounds} alternating rounds. "
        f"Training FLOPs per token: {flops / 1e6:.2f} M (forward + backward, counted by "
        "PyTorch). CPU = user + sys seconds of the timed steps.",
        "",
        "| path | threads | training tokens/s | vs plain loop | CPU s / wall s | "
        "tokens per CPU-second | warm-up s | share of matmul peak |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        best = row.best()
        speed = tokens / best.wall
        reference = plain.get(row.threads)
        ratio = speed / (tokens / reference.best().wall) if reference else float("nan")
        lines.append(
            f"| {row.path} | {row.threads} | {speed:,.0f} | {ratio:.2f}x | "
            f"{best.cpu / best.wall:.2f} | {tokens / best.cpu:,.0f} | {best.warmup:.1f} | "
            f"{100 * speed * flops / peaks[row.threads]:.0f}% |"
        )
    lines += [
        "",
        "Compute limit (float32 `torch.mm`, 1024 x 1024): "
        + ", ".join(
            f"{threads} thread{'s' if threads > 1 else ''} {peak / 1e9:.0f} GFLOP/s = "
            f"{peak / flops:,.0f} training tokens/s"
            for threads, peak in sorted(peaks.items())
        )
        + ".",
    ]
    trainer = [row for row in rows if row.path == "train.py"]
    for row in trainer:
        reference = plain.get(row.threads)
        if reference:
            ratio = reference.best().wall / row.best().wall
            verdict = "met" if ratio >= GOAL_RATIO else "NOT met"
            lines.append(
                f"Goal: train.py >= {GOAL_RATIO}x the plain loop ({row.threads} thread"
                f"{'s' if row.threads > 1 else ''}): {ratio:.2f}x, {verdict}."
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per path")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps")
    parser.add_argument("--rounds", type=int, default=2, help="alternating timed rounds")
    parser.add_argument("--threads", default="1,2", help="torch thread counts to measure")
    parser.add_argument("--compile", action="store_true", help="add train.py + torch_compile")
    parser.add_argument("--dataset-cache-dir", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path, default=RESULTS / "bench_trainer")
    args = parser.parse_args(argv)
    args.threads = [int(n) for n in args.threads.split(",")]
    args.total_steps = args.warmup + args.steps
    return args


def main(argv: list[str] | None = None) -> str:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    paths = ["plain loop", "train.py"] + (["train.py + torch_compile"] if args.compile else [])
    rows = [Row(path, threads) for threads in args.threads for path in paths]
    with tempfile.TemporaryDirectory() as output_dir:
        train_args, train_set, tokenizer, build, length = prepare(args, output_dir)
        args.batch_size, args.length = train_args.per_device_train_batch_size, length
        flops = flops_per_token(build, train_set, args.batch_size, length)
        peaks = {threads: matmul_peak(threads) for threads in args.threads}
        for round_ in range(args.rounds):
            for row in rows if round_ % 2 == 0 else reversed(rows):
                torch.set_num_threads(row.threads)
                if row.path == "plain loop":
                    timing = time_plain_loop(train_args, train_set, build, args.device, args.warmup)
                else:
                    compile_ = row.path.endswith("torch_compile")
                    timing = time_trainer(
                        train_args, train_set, tokenizer, build, args.warmup, compile_
                    )
                    torch._dynamo.reset()
                row.timings.append(timing)
                logger.warning(
                    "%s, %d thread(s): %.0f tokens/s",
                    row.path,
                    row.threads,
                    args.steps * args.batch_size * length / timing.wall,
                )
    model = build()
    info = f"`{args.recipe.name}`: {type(model).__name__} ({model.num_parameters():,} "
    info += f"parameters), {len(train_set)} packed blocks"
    table = markdown(rows, peaks, flops, args, info)
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".md").write_text(table + "\n")
    record = {
        "recipe": str(args.recipe.name),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "length": length,
        "flops_per_token": flops,
        "matmul_peak_flops": peaks,
        "rows": [asdict(row) for row in rows],
    }
    args.output.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return table


if __name__ == "__main__":
    main()
