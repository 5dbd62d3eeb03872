"""What the MIDI grammar processor buys and what it costs.

1. Validity, per tokenization (and BPE vocabularies trained on the test fixtures): sequences
   sampled from random logits (what an untrained model produces) with and without
   ``MidiGrammarLogitsProcessor``; the share of valid sequences, of tokens that decode into music
   as written (``check_sequence``), and of notes the decoder keeps.
2. Bar counts (schemes with Bar tokens): the share of sequences with exactly N bars (Bar tokens
   written, and bars of the decoded piece encoded again) under the grammar alone and with
   ``max_bars=N``, and the mask cost per step of each.
3. Cost: generated tokens/s of a small GPT (6 layers, hidden 256, 4 heads, feed-forward 1024,
   like ``bench_generation.py``) sampling with and without the processor, the two measured
   alternately in the same run (goal: under 15% slower). Both run every step (no EOS stop).

    python benchmarks/bench_grammar.py                  # full run
    python benchmarks/bench_grammar.py --quick          # smaller, a smoke run
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import transformers
from tqdm.auto import tqdm

from midiformers import MidiGPTConfig, MidiGPTForCausalLM, MidiTokenizer
from midiformers.generation import MidiGrammarLogitsProcessor, check_sequence
from midiformers.generation.validation import expand_tokens

logger = logging.getLogger("bench_grammar")

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "midi" / "valid"
SCHEMES = ["remi", "tsd", "midilike", "performance", "structured"]
BPE_SCHEMES = ["remi", "midilike"]
GPT_SIZE = {
    "hidden_size": 256,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
}
SPEED_GOAL = 0.15


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    return (
        f"- machine: {cpu}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads), "
        f"{platform.system()} {platform.release()}\n"
        f"- torch {torch.__version__}, transformers {transformers.__version__}, CPU, float32"
    )


def build_tokenizers() -> dict[str, MidiTokenizer]:
    tokenizers = {name: MidiTokenizer(preset=name) for name in SCHEMES}
    paths = sorted(FIXTURES.glob("*.mid"))
    for name in BPE_SCHEMES:
        tokenizer = MidiTokenizer(preset=name)
        tokenizer.train_bpe(paths, vocab_size=len(tokenizer) + 200)
        tokenizers[f"{name}+bpe"] = tokenizer
    return tokenizers


# ----------------------------------------------------------------------------- validity


def sample_random(tokenizer, processor, batch: int, new_tokens: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.full((batch, 1), tokenizer.bos_token_id)
    for _ in range(new_tokens):
        scores = torch.randn(batch, len(tokenizer), generator=generator) * 3
        if processor is not None:
            scores = processor(ids, scores)
        ids = torch.cat([ids, torch.multinomial(scores.softmax(-1), 1, generator=generator)], 1)
    return ids


def validity(tokenizer, batch: torch.Tensor, decode_notes: bool) -> dict[str, float]:
    rows = batch.tolist()
    checks = [check_sequence(tokenizer, row) for row in rows]
    tokens = sum(len(row) - 1 for row in rows)  # without the BOS
    result = {
        "valid_sequences": sum(check.is_valid for check in checks) / len(rows),
        "valid_tokens": 1 - sum(check.num_dropped for check in checks) / tokens,
        "kept_notes": None,
    }
    if decode_notes:
        written = sum(check.num_note_tokens for check in checks)
        decoded = sum(tokenizer.to_score(row).note_num() for row in rows)
        result["kept_notes"] = decoded / written if written else 1.0
    return result


def run_validity(tokenizers, batch: int, new_tokens: int, decode_limit: int) -> list[list]:
    rows = []
    for name, tokenizer in tqdm(tokenizers.items(), desc="validity"):
        # miditok's MIDILike decoder costs ~50 ms per call: decode a subset there
        decode = type(tokenizer.miditok).__name__ != "MIDILike" or batch <= decode_limit
        free = sample_random(tokenizer, None, batch, new_tokens, seed=0)
        processor = MidiGrammarLogitsProcessor(tokenizer, max_new_tokens=new_tokens)
        start = time.process_time()
        constrained = sample_random(tokenizer, processor, batch, new_tokens, seed=0)
        elapsed = time.process_time() - start
        rows.append(
            [
                name,
                len(tokenizer),
                validity(tokenizer, free, decode),
                validity(tokenizer, constrained, decode),
                elapsed / new_tokens * 1000,
            ]
        )
    return rows


# ----------------------------------------------------------------------------- bars


def count_bars(tokenizer, ids: list[int]) -> int:
    return sum(token == "Bar_None" for i in ids for token in expand_tokens(tokenizer, i))


def exact_bars(tokenizer, batch: torch.Tensor, num_bars: int) -> dict[str, float]:
    """Shares of rows with ``num_bars`` Bar tokens, and whose decoded piece has as many."""
    plain = MidiTokenizer(preset="remi")
    rows = batch.tolist()
    written = sum(count_bars(tokenizer, row) == num_bars for row in rows)
    decoded = sum(
        count_bars(plain, plain.encode_midi(tokenizer.to_score(row))) == num_bars for row in rows
    )
    valid = sum(check_sequence(tokenizer, row).is_valid for row in rows)
    return {
        "written": written / len(rows),
        "decoded": decoded / len(rows),
        "valid": valid / len(rows),
    }


def run_bars(tokenizers, batch: int, new_tokens: int, num_bars: int) -> list[list]:
    rows = []
    names = [name for name in tokenizers if name.split("+")[0] == "remi"]
    for name in tqdm(names, desc="bars"):
        tokenizer = tokenizers[name]
        results = []
        for max_bars in (None, num_bars):
            processor = MidiGrammarLogitsProcessor(
                tokenizer, max_new_tokens=new_tokens, max_bars=max_bars
            )
            start = time.process_time()
            sampled = sample_random(tokenizer, processor, batch, new_tokens, seed=0)
            elapsed = time.process_time() - start
            results.append((exact_bars(tokenizer, sampled, num_bars), elapsed / new_tokens * 1000))
        rows.append([name, *results])
    return rows


# ----------------------------------------------------------------------------- speed


def small_gpt(tokenizer, max_positions: int) -> MidiGPTForCausalLM:
    config = MidiGPTConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **GPT_SIZE,
    )
    torch.manual_seed(0)
    return MidiGPTForCausalLM(config).eval()


def time_generation(model, tokenizer, batch: int, new_tokens: int, grammar: bool) -> float:
    """Generated tokens per CPU second for one ``generate`` call."""
    processors = (
        [MidiGrammarLogitsProcessor(tokenizer, max_new_tokens=new_tokens)] if grammar else []
    )
    prompt = torch.full((batch, 1), tokenizer.bos_token_id)
    torch.manual_seed(0)
    start = time.process_time()
    output = model.generate(
        prompt,
        do_sample=True,
        top_k=0,
        max_new_tokens=new_tokens,
        logits_processor=processors,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=None,
    )
    elapsed = time.process_time() - start
    return batch * (output.shape[1] - 1) / elapsed


def run_speed(tokenizers, names, batches, new_tokens: int, repeats: int) -> list[list]:
    rows = []
    for name in names:
        tokenizer = tokenizers[name]
        model = small_gpt(tokenizer, new_tokens + 8)
        for batch in batches:
            time_generation(model, tokenizer, batch, 16, grammar=True)  # warm up
            with_grammar, without = [], []
            for _ in tqdm(range(repeats), desc=f"speed {name} batch {batch}"):
                without.append(time_generation(model, tokenizer, batch, new_tokens, False))
                with_grammar.append(time_generation(model, tokenizer, batch, new_tokens, True))
            base, constrained = statistics.median(without), statistics.median(with_grammar)
            rows.append([name, batch, base, constrained, 1 - constrained / base])
    return rows


# ----------------------------------------------------------------------------- report


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def report(validity_rows, bar_rows, speed_rows, args) -> str:
    lines = [
        "### Grammar-constrained sampling (`benchmarks/bench_grammar.py`)",
        "",
        machine_description(),
        f"- validity: {args.sequences} sequences x {args.validity_tokens} tokens from random "
        "logits per tokenization; BPE vocabularies learned on the test fixtures (+200 tokens)",
        f"- speed: small GPT ({GPT_SIZE['num_hidden_layers']} layers, hidden "
        f"{GPT_SIZE['hidden_size']}), sampling {args.speed_tokens} new tokens, median of "
        f"{args.repeats} alternating runs, tokens per CPU second",
        "",
        "| tokenization | vocab | valid sequences (free / grammar) | valid tokens (free / "
        "grammar) | notes kept (free / grammar) | mask cost per step, batch "
        f"{args.sequences} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, size, free, constrained, step_ms in validity_rows:
        lines.append(
            f"| {name} | {size} | {_pct(free['valid_sequences'])} / "
            f"{_pct(constrained['valid_sequences'])} | {_pct(free['valid_tokens'])} / "
            f"{_pct(constrained['valid_tokens'])} | {_pct(free['kept_notes'])} / "
            f"{_pct(constrained['kept_notes'])} | {step_ms:.2f} ms |"
        )
    lines += [
        "",
        f"| tokenization | exactly {args.bars} bars (written / decoded), grammar alone | with "
        f"max_bars={args.bars} | valid with max_bars | mask cost per step (alone / max_bars) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (alone, alone_ms), (bounded, bounded_ms) in bar_rows:
        lines.append(
            f"| {name} | {_pct(alone['written'])} / {_pct(alone['decoded'])} | "
            f"{_pct(bounded['written'])} / {_pct(bounded['decoded'])} | "
            f"{_pct(bounded['valid'])} | {alone_ms:.2f} / {bounded_ms:.2f} ms |"
        )
    lines += [
        "",
        "| tokenization | batch | tokens/s without | tokens/s with grammar | slowdown "
        f"(goal < {SPEED_GOAL:.0%}) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, batch, base, constrained, slowdown in speed_rows:
        mark = "ok" if slowdown < SPEED_GOAL else "over"
        lines.append(
            f"| {name} | {batch} | {base:,.0f} | {constrained:,.0f} | {slowdown:.1%} ({mark}) |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--sequences", type=int, default=200)
    parser.add_argument("--validity-tokens", type=int, default=256)
    parser.add_argument("--speed-tokens", type=int, default=256)
    parser.add_argument("--bars", type=int, default=8, help="N of the max_bars rows")
    parser.add_argument("--speed-schemes", default="remi,performance,remi+bpe")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    if args.quick:
        args.sequences, args.validity_tokens, args.speed_tokens, args.repeats = 40, 64, 64, 2
        args.bars = min(args.bars, 4)
    return args


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    args = parse_args()
    torch.set_num_threads(args.threads)
    tokenizers = build_tokenizers()
    validity_rows = run_validity(
        tokenizers, args.sequences, args.validity_tokens, decode_limit=args.sequences
    )
    bar_rows = run_bars(tokenizers, args.sequences, args.validity_tokens, args.bars)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    speed_rows = run_speed(
        tokenizers, args.speed_schemes.split(","), batches, args.speed_tokens, args.repeats
    )
    table = report(validity_rows, bar_rows, speed_rows, args)
    print(table)
    if args.output:
        args.output.write_text(table + "\n")


if __name__ == "__main__":
    main()
