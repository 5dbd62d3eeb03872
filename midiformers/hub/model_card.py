"""Model cards for midiformers models (README.md with Hub metadata)."""

from __future__ import annotations

import importlib.metadata
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

TAGS = ["midi", "music-generation", "symbolic-music", "midiformers"]

_PREFERRED_URLS = ("homepage", "repository", "source", "documentation")


def project_urls() -> dict[str, str]:
    """The project's links (label -> URL), as the installed package metadata lists them
    (``[project.urls]`` in ``pyproject.toml``); empty when there are none."""
    try:
        entries = importlib.metadata.metadata("midiformers").get_all("Project-URL") or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    urls = {}
    for entry in entries:
        label, _, url = entry.partition(",")
        if url.strip():
            urls[label.strip()] = url.strip()
    return urls


def project_link() -> str:
    """``midiformers`` as a Markdown link to the project's page when the metadata names one,
    else the plain name: cards and Space READMEs link only to what exists."""
    urls = project_urls()
    by_label = {label.lower(): url for label, url in urls.items()}
    url = next((by_label[key] for key in _PREFERRED_URLS if key in by_label), None)
    url = url or next(iter(urls.values()), None)
    return f"[midiformers]({url})" if url else "midiformers"


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
    from ..modeling import architecture_for

    arch = architecture_for(model_type, missing_ok=True)
    pipeline_tag = arch.pipeline_tag if arch else "text-generation"
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
        f"A `{model_type}` symbolic-music model trained with {project_link()}"
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
