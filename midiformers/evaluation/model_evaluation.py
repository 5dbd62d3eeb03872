"""Score a causal MIDI language model: token metrics on a split, and the music it generates.

:func:`evaluate_model` is what ``midiformers-eval`` runs:

1. token NLL, perplexity and next-token accuracy on the split, packed into blocks exactly as
   ``train.py`` evaluates (its ``MidiTrainer``, so the numbers match ``metrics.json``);
2. N continuations of primers taken from the split's pieces and N free samples (from BOS),
   sampled with the grammar-constrained logits processor so that every sample decodes;
3. every musical metric module on the generated sets and on the real music side by side
   (whole pieces, their openings and their true continuations, cut to the same token budget as
   the samples), and the overlapping areas of the generated sets with the matching real ones.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .loading import PIECE_METRICS, load_metric

logger = logging.getLogger(__name__)

__all__ = [
    "EvaluationSettings",
    "GenerationResult",
    "decode_excerpt",
    "evaluate_model",
    "generate_pieces",
    "markdown_report",
    "musical_metrics",
    "sample_and_score",
    "token_metrics",
]

PIECE_SETS = {
    "reference_pieces": "test pieces (whole)",
    "reference_openings": "real openings",
    "free_samples": "free samples",
    "reference_continuations": "real continuations",
    "continuations": "continuations",
}
"""The sets compared in the report, and their column titles."""

COMPARISONS = {
    "free_samples": "reference_openings",
    "continuations": "reference_continuations",
}
"""Generated set -> the real set it is compared with by ``overlapping_area``."""


@dataclass
class EvaluationSettings:
    """The budget and sampling options of :func:`evaluate_model`."""

    num_samples: int = 16
    max_new_tokens: int = 256
    primer_tokens: int = 64
    max_length: int = 256
    batch_size: int = 8
    top_k: int = 32
    temperature: float = 1.0
    seed: int = 0
    grammar: bool = True
    max_eval_blocks: int | None = None

    def check(self) -> None:
        """Raise ``ValueError`` naming the first option out of range."""
        for name in ("num_samples", "max_new_tokens", "primer_tokens", "max_length", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.top_k < 0 or self.temperature <= 0:
            raise ValueError(
                f"top_k must be >= 0 and temperature > 0, got {self.top_k}, {self.temperature}"
            )


# ---------------------------------------------------------------------- token metrics


def token_metrics(
    model: Any, tokenizer: Any, pieces: Any, settings: EvaluationSettings
) -> dict[str, float]:
    """NLL (nats per token), perplexity and accuracy of next-token prediction on ``pieces``.

    ``pieces`` is a ``datasets.Dataset`` with a ``midi`` column; it is packed into blocks of
    ``settings.max_length`` tokens with ``tokenize_dataset`` and scored by ``train.py``'s
    ``MidiTrainer`` (no gradient, the model's own loss).
    """
    from transformers import TrainingArguments, default_data_collator

    from midiformers.data_scripts import tokenize_dataset
    from midiformers.training.metrics import argmax_logits, causal_lm_metrics
    from midiformers.training.run import MidiTrainer

    blocks = tokenize_dataset(pieces, tokenizer, settings.max_length, mode="pack")
    if settings.max_eval_blocks:
        blocks = blocks.select(range(min(len(blocks), settings.max_eval_blocks)))
    if len(blocks) == 0:
        raise ValueError(
            f"The split is shorter than one block of {settings.max_length} tokens; "
            "lower --max-length"
        )
    with tempfile.TemporaryDirectory() as scratch:
        arguments = TrainingArguments(
            output_dir=scratch,
            per_device_eval_batch_size=settings.batch_size,
            report_to="none",
            use_cpu=not torch.cuda.is_available(),
            dataloader_pin_memory=False,
        )
        trainer = MidiTrainer(
            model=model,
            args=arguments,
            eval_dataset=blocks,
            data_collator=default_data_collator,
            compute_metrics=causal_lm_metrics,
            preprocess_logits_for_metrics=argmax_logits,
        )
        metrics = trainer.evaluate()
    return {
        "nll": metrics["eval_loss"],
        "perplexity": metrics["eval_perplexity"],
        "accuracy": metrics["eval_accuracy"],
        "num_blocks": len(blocks),
        "num_tokens": len(blocks) * (settings.max_length - 1),
    }


# ------------------------------------------------------------------------- generation


@dataclass
class GenerationResult:
    """New token ids per prompt, and how fast they came."""

    new_ids: list[list[int]]
    seconds: float
    num_tokens: int
    grammar: bool

    @property
    def tokens_per_second(self) -> float:
        return self.num_tokens / self.seconds if self.seconds > 0 else math.nan


def _grammar_for(tokenizer: Any) -> Any:
    """The compiled token grammar, or None (with a warning) for an unsupported tokenizer."""
    from midiformers.generation import MidiGrammar, UnsupportedGrammarError

    try:
        return MidiGrammar(tokenizer)
    except UnsupportedGrammarError as error:
        logger.warning("Sampling without the grammar constraint: %s", error)
        return None


def _strip(ids: list[int], tokenizer: Any) -> list[int]:
    """New ids up to and including the first EOS, without padding."""
    if tokenizer.eos_token_id in ids:
        ids = ids[: ids.index(tokenizer.eos_token_id) + 1]
    return [i for i in ids if i != tokenizer.pad_token_id]


def generate_pieces(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    settings: EvaluationSettings,
    grammar: Any = None,
    desc: str = "generating",
) -> GenerationResult:
    """Sample ``settings.max_new_tokens`` tokens after each prompt (prompts of equal length).

    With ``grammar`` (a compiled ``MidiGrammar``) every step is constrained to tokens that keep
    the sequence decodable. Returns the new ids (padding removed) and the generation speed.
    """
    from midiformers.generation import MidiGrammarLogitsProcessor

    lengths = {len(prompt) for prompt in prompts}
    if len(lengths) > 1:
        raise ValueError(f"generate_pieces needs prompts of one length, got lengths {lengths}")
    new_ids: list[list[int]] = []
    seconds, num_tokens = 0.0, 0
    model.eval()
    batches = range(0, len(prompts), settings.batch_size)
    for start in tqdm(batches, desc=desc, unit="batch"):
        batch = torch.tensor(prompts[start : start + settings.batch_size], device=model.device)
        processors = []
        if grammar is not None:
            processors.append(
                MidiGrammarLogitsProcessor(grammar, max_new_tokens=settings.max_new_tokens)
            )
        begin = time.perf_counter()
        with torch.no_grad():
            output = model.generate(
                batch,
                attention_mask=torch.ones_like(batch),
                do_sample=True,
                top_k=settings.top_k,
                temperature=settings.temperature,
                max_new_tokens=settings.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                logits_processor=processors,
            )
        seconds += time.perf_counter() - begin
        for row in output[:, batch.shape[1] :].tolist():
            new_ids.append(_strip(row, tokenizer))
            num_tokens += len(new_ids[-1])
    return GenerationResult(new_ids, seconds, num_tokens, grammar is not None)


# --------------------------------------------------------------------------- decoding


def _bar_ticks(score: Any) -> int:
    quarters = 4.0
    if len(score.time_signatures):
        signature = score.time_signatures[0]
        quarters = signature.numerator * 4.0 / signature.denominator
    return max(1, int(round(quarters * score.ticks_per_quarter)))


def decode_excerpt(tokenizer: Any, primer: Sequence[int], continuation: Sequence[int]) -> Any:
    """The music of ``continuation`` alone, as it sounds after ``primer``.

    Both are decoded together (a continuation relies on the primer's bar and position), then the
    notes starting after the primer's last onset are kept and moved back by whole bars (so bar
    positions, hence grooves, are unchanged), with the tempo and time signature in force there.
    Generated and real continuations go through the same cut, so their metrics compare.
    """
    from symusic import Tempo, TimeSignature

    full = tokenizer.to_score(list(primer) + list(continuation))
    primer_score = tokenizer.to_score(list(primer))
    onsets = [note.time for track in primer_score.tracks for note in track.notes]
    if not onsets:
        return full
    start = max(onsets) + 1
    shift = (start // _bar_ticks(full)) * _bar_ticks(full)
    tempo = [t for t in full.tempos if t.time <= start]
    signature = [s for s in full.time_signatures if s.time <= start]
    excerpt = full.clip(start, max(full.end(), start) + 1).shift_time(-shift)
    if tempo and not any(t.time == 0 for t in excerpt.tempos):
        excerpt.tempos.insert(0, Tempo(0, tempo[-1].qpm))
    if signature and not any(s.time == 0 for s in excerpt.time_signatures):
        excerpt.time_signatures.insert(
            0, TimeSignature(0, signature[-1].numerator, signature[-1].denominator)
        )
    return excerpt


# ---------------------------------------------------------------------------- metrics


def musical_metrics(sets: dict[str, list[Any]], comparisons: dict[str, str]) -> dict[str, Any]:
    """Every piece metric on every set, and ``overlapping_area`` for each (generated, real) pair.

    Args:
        sets: set name -> pieces (Scores, paths or MIDI bytes).
        comparisons: generated set name -> the real set name it is compared with.
    """
    per_set: dict[str, dict[str, float]] = {name: {} for name in sets}
    for metric_name in tqdm(PIECE_METRICS, desc="musical metrics", unit="metric"):
        metric = load_metric(metric_name)
        for set_name, pieces in sets.items():
            if pieces:
                per_set[set_name].update(metric.compute(predictions=pieces))
    overlap = load_metric("overlapping_area")
    areas = {
        f"{generated}_vs_{real}": overlap.compute(
            predictions=sets[generated], references=sets[real]
        )
        for generated, real in comparisons.items()
        if sets.get(generated) and sets.get(real)
    }
    return {"per_set": per_set, "overlapping_area": areas}


# ------------------------------------------------------------------------ the recipe


def _piece_ids(tokenizer: Any, pieces: Any) -> list[list[int]]:
    from midiformers.tokenization import MidiFileError

    encoded = []
    for example in tqdm(pieces, desc="tokenizing pieces", unit="piece", leave=False):
        try:
            encoded.append(tokenizer(example["midi"], verbose=False)["input_ids"])
        except MidiFileError as error:
            logger.warning("Skipping %s: %s", example.get("id", "a piece"), error.reason)
    return encoded


def _primer_pieces(encoded: list[list[int]], settings: EvaluationSettings) -> list[list[int]]:
    """Pieces long enough for a primer and a full real continuation (else the longer ones)."""
    needed = settings.primer_tokens + settings.max_new_tokens
    long_enough = [ids for ids in encoded if len(ids) >= needed]
    if long_enough:
        return long_enough
    usable = [ids for ids in encoded if len(ids) > settings.primer_tokens + 1]
    if not usable:
        raise ValueError(
            f"No piece of the split has more than {settings.primer_tokens + 1} tokens; "
            "lower --primer-tokens"
        )
    logger.warning(
        "No piece has %d tokens (primer + max_new_tokens); real continuations will be shorter",
        needed,
    )
    return usable


def _check_positions(model: Any, settings: EvaluationSettings) -> None:
    positions = getattr(model.config, "max_position_embeddings", None)
    needed = settings.primer_tokens + settings.max_new_tokens
    if positions is not None and needed > positions:
        raise ValueError(
            f"primer_tokens + max_new_tokens = {needed} exceeds the model's "
            f"max_position_embeddings ({positions})"
        )
    if positions is not None and settings.max_length > positions:
        logger.warning("max_length lowered to the model's %d positions", positions)
        settings.max_length = positions


def sample_and_score(
    model: Any,
    tokenizer: Any,
    pieces: Any,
    settings: EvaluationSettings | None = None,
    samples_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Generate continuations of primers from ``pieces`` and free samples, and score the music.

    Returns ``generation`` (counts, speed), ``per_set`` (every piece metric on every set of
    :data:`PIECE_SETS`) and ``overlapping_area`` (each generated set against its real one).
    """
    from transformers import set_seed

    settings = settings or EvaluationSettings()
    settings.check()
    _check_positions(model, settings)
    encoded = _piece_ids(tokenizer, pieces)
    sources = _primer_pieces(encoded, settings)
    chosen = [sources[i % len(sources)] for i in range(settings.num_samples)]
    primers = [ids[: settings.primer_tokens] for ids in chosen]
    grammar = _grammar_for(tokenizer) if settings.grammar else None
    set_seed(settings.seed)
    continued = generate_pieces(model, tokenizer, primers, settings, grammar, "continuations")
    bos = [[tokenizer.bos_token_id]] * settings.num_samples
    free = generate_pieces(model, tokenizer, bos, settings, grammar, "free samples")

    primer, end = settings.primer_tokens, settings.primer_tokens + settings.max_new_tokens
    sets = {
        "reference_pieces": [example["midi"] for example in pieces],
        "reference_openings": [
            tokenizer.to_score(ids[: 1 + settings.max_new_tokens]) for ids in sources
        ],
        "free_samples": [
            tokenizer.to_score([tokenizer.bos_token_id, *ids]) for ids in free.new_ids
        ],
        "reference_continuations": [
            decode_excerpt(tokenizer, ids[:primer], ids[primer:end]) for ids in sources
        ],
        "continuations": [
            decode_excerpt(tokenizer, prompt, ids)
            for prompt, ids in zip(primers, continued.new_ids, strict=True)
        ],
    }
    if samples_dir is not None:
        _write_samples(sets, Path(samples_dir))
    generated = len(continued.new_ids) + len(free.new_ids)
    report: dict[str, Any] = {
        "generation": {
            "grammar_constrained": continued.grammar,
            "tokens_per_second": (continued.num_tokens + free.num_tokens)
            / (continued.seconds + free.seconds),
            "num_continuations": len(continued.new_ids),
            "num_free_samples": len(free.new_ids),
            "mean_new_tokens": (continued.num_tokens + free.num_tokens) / generated,
            "num_primer_pieces": len(sources),
        }
    }
    report.update(musical_metrics(sets, COMPARISONS))
    return report


def evaluate_model(
    model: Any,
    tokenizer: Any,
    pieces: Any,
    settings: EvaluationSettings | None = None,
    samples_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Token metrics, generated samples and musical metrics of ``model`` on ``pieces``.

    Args:
        model: a causal LM of midiformers (``AutoModelForCausalLM``).
        tokenizer: its :class:`~midiformers.MidiTokenizer`.
        pieces: a ``datasets.Dataset`` with a ``midi`` column (e.g. a test split).
        settings: budget and sampling options.
        samples_dir: where to write the generated pieces as MIDI files (optional).

    Returns:
        A JSON-serialisable dict (see :func:`markdown_report` for its layout).
    """
    from transformers import set_seed

    settings = settings or EvaluationSettings()
    settings.check()
    _check_positions(model, settings)
    set_seed(settings.seed)
    report: dict[str, Any] = {"settings": asdict(settings), "num_pieces": len(pieces)}
    report["token_metrics"] = token_metrics(model, tokenizer, pieces, settings)
    report.update(sample_and_score(model, tokenizer, pieces, settings, samples_dir))
    return report


def _write_samples(sets: dict[str, list[Any]], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in COMPARISONS:
        for index, score in enumerate(sets[name]):
            score.dump_midi(folder / f"{name}_{index:03d}.mid")


# ---------------------------------------------------------------------------- report


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _metric_names(per_set: dict[str, dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for values in per_set.values():
        for key in values:
            skip = key.endswith("_std") or key.startswith("num_") or key.endswith("_per_piece")
            if not skip and key not in names:
                names.append(key)
    return names


def markdown_report(report: dict[str, Any], title: str = "Evaluation") -> str:
    """The report as Markdown: token metrics, musical metrics side by side, overlapping areas."""
    lines = [f"## {title}", ""]
    for key in ("model", "dataset", "split", "machine"):
        if key in report:
            lines.append(f"- {key}: {report[key]}")
    settings = report.get("settings", {})
    if settings:
        lines.append("- settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    generation = report.get("generation", {})
    if generation:
        lines.append(
            f"- generation: {generation['num_continuations']} continuations + "
            f"{generation['num_free_samples']} free samples, "
            f"{generation['mean_new_tokens']:.0f} new tokens each on average, "
            f"{generation['tokens_per_second']:.0f} tokens/s, grammar-constrained: "
            f"{generation['grammar_constrained']}"
        )
    tokens = report.get("token_metrics", {})
    lines += ["", "| NLL (nats/token) | perplexity | accuracy | tokens |", "|---:|---:|---:|---:|"]
    lines.append(
        f"| {_format(tokens.get('nll'))} | {_format(tokens.get('perplexity'))} | "
        f"{_format(tokens.get('accuracy'))} | {tokens.get('num_tokens')} |"
    )
    per_set = report.get("per_set", {})
    if per_set:
        sets = [name for name in PIECE_SETS if name in per_set]
        lines += ["", "| metric (mean ± std) | " + " | ".join(PIECE_SETS[s] for s in sets) + " |"]
        lines.append("|---|" + "---:|" * len(sets))
        for metric in _metric_names(per_set):
            cells = [
                f"{_format(per_set[s].get(metric))} ± {_format(per_set[s].get(metric + '_std'))}"
                for s in sets
            ]
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        counts = [str(per_set[s].get("num_pieces", "")) for s in sets]
        lines.append("| pieces | " + " | ".join(counts) + " |")
    areas = report.get("overlapping_area", {})
    if areas:
        pairs = list(areas)
        lines += [
            "",
            "| overlapping area | " + " | ".join(p.replace("_", " ") for p in pairs) + " |",
        ]
        lines.append("|---|" + "---:|" * len(pairs))
        for key in areas[pairs[0]]:
            if key.startswith("overlapping_area"):
                name = (
                    key.removeprefix("overlapping_area_")
                    if key != "overlapping_area"
                    else "**mean**"
                )
                lines.append(
                    f"| {name} | " + " | ".join(_format(areas[p][key]) for p in pairs) + " |"
                )
    return "\n".join(lines) + "\n"
