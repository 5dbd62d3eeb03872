"""Model cards for midiformers models (README.md with Hub metadata)."""

from __future__ import annotations

from typing import Any

from huggingface_hub import ModelCard, ModelCardData

TAGS = ["midi", "music-generation", "symbolic-music", "midiformers"]


def _format_metric(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def make_model_card(
    model_type: str,
    *,
    dataset: str | None = None,
    metrics: dict[str, Any] | None = None,
    tokenizer_preset: str | None = None,
    num_parameters: int | None = None,
    repo_id: str | None = None,
    extra_tags: list[str] | None = None,
) -> ModelCard:
    """A model card: metadata (library, tags, dataset), the metrics, and a usage snippet."""
    pipeline_tag = "text-classification" if model_type.endswith("gru") else "text-generation"
    data = ModelCardData(
        library_name="transformers",
        tags=[*TAGS, model_type, *(extra_tags or [])],
        datasets=[dataset] if dataset else None,
        pipeline_tag=pipeline_tag,
        license="apache-2.0",
    )
    name = repo_id or "path/to/this/folder"
    lines = [
        f"# {repo_id or model_type}",
        "",
        f"A `{model_type}` symbolic-music model trained with "
        "[midiformers](https://github.com/midiformers/midiformers)"
        + (f" on `{dataset}`" if dataset else "")
        + (f" with the `{tokenizer_preset}` MIDI tokenizer" if tokenizer_preset else "")
        + ".",
    ]
    if num_parameters is not None:
        lines += ["", f"Parameters: {num_parameters:,}."]
    if metrics:
        lines += ["", "## Results", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {_format_metric(value)} |" for key, value in sorted(metrics.items())]
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "import midiformers  # or pass trust_remote_code=True without midiformers installed",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'tok = AutoTokenizer.from_pretrained("{name}")',
        f'model = AutoModelForCausalLM.from_pretrained("{name}")',
        'ids = tok("primer.mid", return_tensors="pt").input_ids',
        "out = model.generate(ids, do_sample=True, max_new_tokens=512, top_k=32)",
        'tok.to_midi(out[0], "continuation.mid")',
        "```",
    ]
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"
    return ModelCard(content)
