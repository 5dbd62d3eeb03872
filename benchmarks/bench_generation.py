"""Generation speed of every registered midiformers causal LM against transformers' GPT-2.

Each unconditional causal LM of the registry (``midiformers.modeling.ARCHITECTURES``) is built
at one size (6 layers, hidden 256, 4 heads, feed-forward 1024, vocabulary 512; recurrent models
at their config defaults) next to a ``GPT2LMHeadModel`` of the same dimensions (random weights,
nothing downloaded), and measured in the same run: parameters, prefill tokens/s, greedy
generated tokens/s with and without the cache at several batch sizes, and peak memory. Models
that can compile their decode step (``_can_compile_fullgraph``) are also measured with a static
cache (``cache_implementation="static"``) and with a static cache and compiled decoding
(``compile_config=CompileConfig(fullgraph=True, dynamic=False)``, which transformers 5.24 only
honours on a CPU when the config's ``_compile_all_devices`` is set), each against GPT-2's
default ``generate``. The Markdown tables it prints state the machine and what was measured;
results also go to ``--output`` (``.md`` and ``.json``).

    python benchmarks/bench_generation.py                      # full run (slow on CPU)
    python benchmarks/bench_generation.py --quick              # 128 new tokens, a smoke run
    python benchmarks/bench_generation.py --archs gpt,gpt2 --uncached-new-tokens 256
    python benchmarks/bench_generation.py --modes dynamic      # without static / compiled rows
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import gc
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
import transformers
from tqdm.auto import tqdm
from transformers import CompileConfig, GPT2Config, GPT2LMHeadModel, PreTrainedModel

from midiformers.modeling import ARCHITECTURES

logger = logging.getLogger("bench_generation")

SIZE = {
    "num_hidden_layers": 6,
    "hidden_size": 256,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
}
VOCAB_SIZE = 512
SPECIAL_IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
REFERENCE = "gpt2"
GOALS = {"midiformers_gpt": 0.9, "midiformers_music_transformer": 0.6, "midiformers_conformer": 0.6}
"""Default (dynamic-cache) generation of each model against GPT-2's."""
COMPILED_GOALS = {
    "midiformers_gpt": 2.0,
    "midiformers_music_transformer": 0.8,
    "midiformers_conformer": 0.8,
}
"""Static cache + compiled decode step of each model against GPT-2's default ``generate``."""
CACHE_SPEEDUP_GOAL = 10.0
MODES = ("dynamic", "static", "compiled")
"""``generate``'s default cache; a static cache; a static cache and a compiled decode step."""


@dataclass
class Result:
    """Measurements of one model at one batch size."""

    name: str
    params: int
    batch: int
    prefill_tok_s: float | None = None
    cached: dict[int, float] = field(default_factory=dict)  # new tokens -> generated tokens/s
    uncached: dict[int, float] = field(default_factory=dict)
    cached_mem: float | None = None  # MiB, at the largest measured number of new tokens
    uncached_mem: float | None = None
    modes: dict[str, float] = field(default_factory=dict)  # static / compiled -> tokens/s
    first_call_s: dict[str, float] = field(default_factory=dict)  # incl. compilation
    mode_errors: dict[str, str] = field(default_factory=dict)
    error: str | None = None


# ----------------------------------------------------------------------------- models


def registered_builders(max_positions: int) -> dict[str, Callable[[], PreTrainedModel]]:
    """Model builders keyed by short name: every registered causal LM, then the GPT-2 reference."""
    builders = {}
    for arch in ARCHITECTURES.values():
        if arch.generates and arch.conditioning is None:
            builders[arch.name] = _midiformers_builder(
                arch.config_class, arch.model_class, max_positions
            )
    builders[REFERENCE] = lambda: GPT2LMHeadModel(gpt2_config(max_positions))
    return builders


def _midiformers_builder(config_class, lm_class, max_positions: int):
    def build() -> PreTrainedModel:
        names = {f.name for f in dataclasses.fields(config_class)}
        kwargs = {"vocab_size": VOCAB_SIZE, **SPECIAL_IDS}
        if "num_attention_heads" in names:  # attention models at the common size
            kwargs.update(SIZE)
            if "max_position_embeddings" in names:
                kwargs["max_position_embeddings"] = max_positions
        kwargs.update({name: 0.0 for name in names if name.endswith("dropout")})
        return lm_class(config_class(**{k: v for k, v in kwargs.items() if k in names}))

    return build


def gpt2_config(max_positions: int) -> GPT2Config:
    """transformers' GPT-2 at the benchmark size (GELU, no dropout)."""
    return GPT2Config(
        vocab_size=VOCAB_SIZE,
        n_positions=max_positions,
        n_embd=SIZE["hidden_size"],
        n_layer=SIZE["num_hidden_layers"],
        n_head=SIZE["num_attention_heads"],
        n_inner=SIZE["intermediate_size"],
        activation_function="gelu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        **SPECIAL_IDS,
    )


# ------------------------------------------------------------------------ measuring


def _release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc), so that an RSS peak measures this run and
    not the fragmentation left by the model measured before it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory above the starting point, in MiB: CUDA allocator or sampled process RSS."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakMemory:
        gc.collect()
        _release_free_memory()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.start = self.peak = self._rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss())
        self.mib = (self.peak - self.start) / 2**20


def run_once(fn: Callable[[], object], device: torch.device, clock: str) -> tuple[float, float]:
    """Seconds (wall clock, or this process's CPU time) and peak MiB of one call.

    CPU time is what to compare on a CPU shared with other jobs: it does not count the time the
    process waited for a core (use it with ``--threads 1``; idle-spinning threads inflate it).
    """
    timer = time.process_time if clock == "cpu" else time.perf_counter
    with PeakMemory(device) as memory:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = timer()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = timer() - start
    return seconds, memory.mib


def compile_config() -> CompileConfig:
    """Compiled decoding as a user asks for it; ``_compile_all_devices`` lets transformers
    compile on a CPU too, ``dynamic=False`` keeps one static graph per shape."""
    config = CompileConfig(fullgraph=True, dynamic=False)
    config._compile_all_devices = True
    return config


def mode_options(mode: str) -> dict:
    """``generate`` options of a mode (see :data:`MODES`)."""
    if mode == "static":
        return {"cache_implementation": "static"}
    if mode == "compiled":
        return {"cache_implementation": "static", "compile_config": compile_config()}
    return {}


def supports_static(model: PreTrainedModel) -> bool:
    """Whether the model has a static-cache, compilable decode step (the LSTM's state lives in
    transformers' fixed-size recurrent cache layers, so it has one too)."""
    return bool(getattr(model, "_can_compile_fullgraph", False))


def greedy(
    model: PreTrainedModel, prompt: torch.Tensor, new_tokens: int, use_cache: bool, **options
):
    """Greedy decoding of exactly ``new_tokens`` tokens (EOS suppressed until then)."""
    out = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=use_cache,
        pad_token_id=SPECIAL_IDS["pad_token_id"],
        **options,
    )
    if out.shape[1] != prompt.shape[1] + new_tokens:
        raise RuntimeError(f"generated {out.shape[1] - prompt.shape[1]} tokens, not {new_tokens}")
    return out


def tasks(args) -> list[tuple[str, int, bool, int]]:
    """(kind, tokens, use_cache, repeats) measured per model and batch size, in order; kind is
    ``prefill``, ``generate`` (default cache) or a static mode (``static``, ``compiled``)."""
    todo = [("prefill", args.prefill_length, True, args.repeats)]
    for new_tokens in sorted({args.new_tokens, args.uncached_new_tokens}, reverse=True):
        todo.append(("generate", new_tokens, True, args.repeats))
    if not args.skip_uncached:
        todo.append(("generate", args.uncached_new_tokens, False, args.uncached_repeats))
    for mode in args.modes:
        if mode != "dynamic":
            todo.append((mode, args.new_tokens, True, args.repeats))
    return todo


@torch.inference_mode()
def measure_batch(
    models: dict[str, PreTrainedModel], batch: int, args, device: torch.device, progress
) -> list[Result]:
    """Measure every model at one batch size, round-robin so that a burst of load from other
    processes hits all models alike (in alternating order), keeping the best of the repeats."""
    generator = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(3, VOCAB_SIZE, (batch, args.prompt_length), generator=generator)
    prefill = torch.randint(3, VOCAB_SIZE, (batch, args.prefill_length), generator=generator)
    prompt, prefill = prompt.to(device), prefill.to(device)
    results = {}
    for name, model in list(models.items()):
        results[name] = Result(name=name, params=model.num_parameters(), batch=batch)
        try:
            greedy(model, prompt, 4, use_cache=True)  # warm-up: kernels, allocator, lazy inits
        except Exception as error:  # one broken architecture must not hide the others
            results[name].error = _describe(error)
            logger.exception("%s batch %d failed", name, batch)
    for kind, tokens, use_cache, repeats in tasks(args):
        best = {name: (float("inf"), 0.0) for name in models}
        static = kind in MODES
        if static:  # the first call builds the static cache and compiles: timed on its own
            for name, model in models.items():
                if results[name].error is None and supports_static(model):
                    first = partial(greedy, model, prompt, tokens, True, **mode_options(kind))
                    try:
                        results[name].first_call_s[kind] = run_once(first, device, "wall")[0]
                    except Exception as error:  # the other modes and models go on
                        results[name].mode_errors[kind] = _describe(error)
                        logger.exception("%s batch %d %s failed", name, batch, kind)
        for repeat in range(repeats):
            order = list(models.items())
            for name, model in order if repeat % 2 == 0 else reversed(order):
                progress.update()
                if results[name].error is not None:
                    continue
                if static and (not supports_static(model) or kind in results[name].mode_errors):
                    continue  # not applicable, or failed on its first call
                if kind == "prefill":
                    call = partial(model, input_ids=prefill, use_cache=True)
                else:
                    options = mode_options(kind) if static else {}
                    call = partial(greedy, model, prompt, tokens, use_cache, **options)
                try:
                    seconds, mib = run_once(call, device, args.clock)
                except Exception as error:
                    if static:
                        results[name].mode_errors[kind] = _describe(error)
                    else:
                        results[name].error = _describe(error)
                    logger.exception("%s batch %d %s failed", name, batch, kind)
                    continue
                best[name] = (min(best[name][0], seconds), max(best[name][1], mib))
        for name, (seconds, mib) in best.items():
            result = results[name]
            if result.error is not None or seconds == float("inf"):
                continue
            speed = batch * tokens / seconds
            if static:
                result.modes[kind] = speed
            elif kind == "prefill":
                result.prefill_tok_s = speed
            elif use_cache:
                result.cached[tokens] = speed
                result.cached_mem = mib if tokens == args.new_tokens else result.cached_mem
            else:
                result.uncached[tokens] = speed
                result.uncached_mem = mib
    return list(results.values())


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}".replace("|", "/").replace("\n", " ")[:120]


# ------------------------------------------------------------------------- reporting


def machine_description(device: torch.device, dtype: torch.dtype) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    text = (
        f"- machine: {cpu}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads), "
        f"{platform.system()} {platform.release()}\n"
        f"- torch {torch.__version__}, transformers {transformers.__version__}, "
        f"device {device.type}, dtype {str(dtype).removeprefix('torch.')}"
    )
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text


def _fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def markdown_table(results: list[Result], args, device, dtype) -> str:
    reference = {r.batch: r for r in results if r.name == REFERENCE and r.error is None}
    n, nu = args.new_tokens, args.uncached_new_tokens
    lines = [
        "## Generation benchmark",
        "",
        machine_description(device, dtype),
        f"- greedy `generate`, prompt {args.prompt_length} tokens, min_new_tokens = "
        f"max_new_tokens; cached: {n} new tokens; uncached: {nu} new tokens; cached/uncached "
        f"compares both at {nu} new tokens; prefill: one forward of {args.prefill_length} "
        f"tokens per row",
        f"- tokens/s by {'process CPU time' if args.clock == 'cpu' else 'wall clock'}, best of "
        f"{args.repeats} runs (uncached: {args.uncached_repeats}), models measured round-robin",
        f"- peak memory: above the model's resting footprint "
        f"({'CUDA allocator' if device.type == 'cuda' else 'process RSS, sampled every 5 ms'})",
        "",
        f"| model | params | batch | prefill tok/s | cached tok/s ({n}) | uncached tok/s ({nu}) "
        f"| cached/uncached ({nu}) | vs GPT-2 cached ({n}) | peak MiB cached | "
        f"peak MiB uncached |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.error is not None:
            lines.append(f"| {r.name} | – | {r.batch} | failed: {r.error} |||||||")
            continue
        speedup = None
        if nu in r.uncached and nu in r.cached:
            speedup = r.cached[nu] / r.uncached[nu]
        ref = reference.get(r.batch)
        vs_ref = r.cached[n] / ref.cached[n] if ref is not None and n in ref.cached else None
        lines.append(
            f"| {r.name} | {r.params / 1e6:.2f}M | {r.batch} | {_fmt(r.prefill_tok_s)} "
            f"| {_fmt(r.cached.get(n))} | {_fmt(r.uncached.get(nu))} | "
            f"{_fmt(speedup, 1)}{'×' if speedup else ''} | "
            f"{_fmt(vs_ref, 2)}{'×' if vs_ref else ''} | {_fmt(r.cached_mem, 1)} "
            f"| {_fmt(r.uncached_mem, 1)} |"
        )
    if any(r.modes or r.mode_errors for r in results):
        lines += ["", *modes_table(results, args)]
    lines += ["", *goal_lines(results, args)]
    return "\n".join(lines)


def modes_table(results: list[Result], args) -> list[str]:
    """Default, static-cache and compiled generation of each model against GPT-2's default."""
    n = args.new_tokens
    reference = {r.batch: r.cached.get(n) for r in results if r.name == REFERENCE and not r.error}
    lines = [
        f"Static cache and compiled decoding, {n} new tokens (greedy, same prompt); vs GPT-2 = "
        "against GPT-2's default `generate` at the same batch size; first call = the first "
        "`generate` of that kind, compilation included (wall clock):",
        "",
        "| model | batch | default tok/s | static tok/s | static + compiled tok/s | vs GPT-2: "
        "default / static / compiled | first call s: static / compiled |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.error is not None or not (r.modes or r.mode_errors):
            continue
        ref = reference.get(r.batch)
        speeds = [r.cached.get(n), r.modes.get("static"), r.modes.get("compiled")]
        ratios = " / ".join(f"{speed / ref:.2f}x" if speed and ref else "–" for speed in speeds)
        first = " / ".join(_fmt(r.first_call_s.get(mode), 1) for mode in ("static", "compiled"))
        failed = "; ".join(f"{mode} failed: {text}" for mode, text in r.mode_errors.items())
        lines.append(
            f"| {r.name} | {r.batch} | {' | '.join(_fmt(speed) for speed in speeds)} | {ratios} "
            f"| {first}{' ' + failed if failed else ''} |"
        )
    return lines


def goal_lines(results: list[Result], args) -> list[str]:
    """One line per goal of the issue, with the measured value."""
    lines = ["Goals:"]
    n, nu = args.new_tokens, args.uncached_new_tokens
    note = "" if nu == 1024 else f" (measured at {nu} new tokens, the goal is at 1024)"
    reference = {r.batch: r for r in results if r.name == REFERENCE and r.error is None}
    for r in results:
        if r.error is not None:
            continue
        if nu in r.uncached:
            speedup = r.cached[nu] / r.uncached[nu]
            verdict = "met" if speedup >= CACHE_SPEEDUP_GOAL else "NOT met"
            if nu != 1024:  # the speed-up grows with length: a shorter run only indicates
                verdict = "indicative only"
            lines.append(
                f"- {r.name} batch {r.batch}: cached/uncached {speedup:.1f}× "
                f"(goal ≥ {CACHE_SPEEDUP_GOAL:.0f}×{note}): {verdict}"
            )
        goal = GOALS.get(f"midiformers_{r.name}")
        ref = reference.get(r.batch)
        if goal is not None and ref is not None:
            ratio = r.cached[n] / ref.cached[n]
            verdict = "met" if ratio >= goal else "NOT met"
            lines.append(
                f"- {r.name} batch {r.batch}: {ratio:.2f}× GPT-2's cached generation speed "
                f"(goal ≥ {goal}×): {verdict}"
            )
        goal = COMPILED_GOALS.get(f"midiformers_{r.name}")
        if goal is not None and ref is not None and "compiled" in r.modes:
            ratio = r.modes["compiled"] / ref.cached[n]
            verdict = "met" if ratio >= goal else "NOT met"
            lines.append(
                f"- {r.name} batch {r.batch}: static cache + compiled decoding at {ratio:.2f}× "
                f"GPT-2's default generation speed (goal ≥ {goal}×): {verdict}"
            )
    return lines


# ------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--archs", default=None, help="comma-separated short names, e.g. gpt,gpt2")
    parser.add_argument("--new-tokens", type=int, default=1024)
    parser.add_argument(
        "--uncached-new-tokens",
        type=int,
        default=None,
        help="new tokens for the uncached runs (default: --new-tokens); uncached is quadratic",
    )
    parser.add_argument("--skip-uncached", action="store_true")
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="generation modes to measure: dynamic (generate's default cache; always measured), "
        "static (cache_implementation='static'), compiled (static + compile_config)",
    )
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--prefill-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="cached and prefill runs (best)")
    parser.add_argument("--uncached-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="time by wall clock or by process CPU time (for a CPU shared with other jobs)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="128 new tokens, 128 prefill, 1 run")
    parser.add_argument("--output", default=None, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    if args.quick:
        args.new_tokens, args.prefill_length, args.repeats = 128, 128, 2
    if args.uncached_new_tokens is None:
        args.uncached_new_tokens = args.new_tokens
    if args.uncached_new_tokens > args.new_tokens:
        parser.error("--uncached-new-tokens cannot exceed --new-tokens")
    if args.clock == "cpu" and args.device.startswith("cuda"):
        parser.error("--clock cpu measures CPU work only; use the wall clock on a GPU")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = sorted(set(args.modes) - set(MODES))
    if unknown:
        parser.error(f"--modes: unknown {unknown}; choose from {', '.join(MODES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def select_builders(args) -> dict[str, Callable[[], PreTrainedModel]]:
    max_positions = max(2048, args.prompt_length + args.new_tokens, args.prefill_length)
    builders = registered_builders(max_positions)
    if args.archs is None:
        return builders
    wanted = [name.strip() for name in args.archs.split(",")]
    unknown = [name for name in wanted if name not in builders]
    if unknown:
        raise SystemExit(f"--archs: unknown {unknown}; registered: {sorted(builders)}")
    return {name: builders[name] for name in wanted}


def main(argv: list[str] | None = None) -> str:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    transformers.logging.set_verbosity_error()
    args = parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    builders = select_builders(args)
    torch.manual_seed(args.seed)
    models = {}
    for name, build in builders.items():
        try:
            models[name] = build().to(device=device, dtype=dtype).eval()
        except Exception:
            logger.exception("could not build %s", name)
    total = len(args.batch_sizes) * len(models) * sum(t[-1] for t in tasks(args))
    results = []
    with tqdm(total=total, desc="benchmark") as progress:
        for batch in args.batch_sizes:
            results += measure_batch(models, batch, args, device, progress)
    results.sort(key=lambda r: (list(models).index(r.name), r.batch))
    table = markdown_table(results, args, device, dtype)
    print(table)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(table + "\n")
        record = {"args": vars(args), "results": [dataclasses.asdict(r) for r in results]}
        with open(os.path.splitext(args.output)[0] + ".json", "w") as handle:
            json.dump(record, handle, indent=2, default=str)
            handle.write("\n")
    return table


if __name__ == "__main__":
    main()
