"""Helpers shared by the demo's test modules (``test_app.py``, ``test_app_browser.py``): tiny
model folders, the request settings, HTTP calls and the browser."""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path

import torch

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# Small and fast: the tiny random model, few tokens, a fixed seed.
SETTINGS = {"temperature": 1.0, "top_k": 32, "top_p": 0.95, "max_new_tokens": 48, "seed": 7}
LONG_PIECE = {"length_unit": "bars", "num_bars": 64}
"""A request an untrained model cannot finish soon: EOS waits for bar 64 (8,192 tokens at most),
so only Stop ends it early."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def save_tiny_model(folder: Path, tokenizer, **config) -> Path:
    """A randomly initialised tiny GPT with ``tokenizer``, saved as ``train.py`` leaves one."""
    from midiformers import MidiGPTConfig, MidiGPTForCausalLM

    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
        position_embedding_type="rotary",
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    MidiGPTForCausalLM(MidiGPTConfig(**{**settings, **config})).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def expected_notes(model_dir: Path, primer: Path | None) -> int:
    """The note count the demo must produce: the same pipeline, settings and seed, run here."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    generator = pipeline(
        "midi-generation",
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        tokenizer=AutoTokenizer.from_pretrained(model_dir),
    )
    piece = generator(None if primer is None else str(primer), grammar=True, **SETTINGS)
    return piece["num_notes"]


def file_data(path: str | Path) -> dict:
    """What a client sends for a file: Gradio's FileData, here with any path the client likes."""
    return {"path": str(path), "orig_name": Path(path).name, "meta": {"_type": "gradio.FileData"}}


def generate_data(model: str, composer, primer) -> list:
    """The ``/generate`` inputs in order, for a plain HTTP call: a piece of
    ``SETTINGS["max_new_tokens"]`` tokens, any instrument, no attribute control."""
    from midiformers.app.page import CONTROLS

    sampling = [SETTINGS[key] for key in SETTINGS]
    controls = [[] if spec.kind == "set" else "any" for spec in CONTROLS.values()]
    return [model, composer, primer, *sampling, True, "tokens", 8, 20, [], *controls]


def call_generate(base_url: str, model: str, composer, primer) -> tuple[str, object]:
    """Call ``/generate`` over plain HTTP, as any client may; returns the last event's name and
    data (``complete`` and the outputs, or ``error`` and its message)."""
    import httpx

    data = generate_data(model, composer, primer)
    with httpx.Client(base_url=base_url, timeout=120) as http:
        posted = http.post("gradio_api/call/generate", json={"data": data})
        posted.raise_for_status()
        answer = http.get(f"gradio_api/call/generate/{posted.json()['event_id']}").text
    events = [block.splitlines() for block in answer.strip().split("\n\n") if block.strip()]
    event, payload = events[-1][0].removeprefix("event: "), events[-1][1].removeprefix("data: ")
    return event, json.loads(payload)


@contextlib.contextmanager
def served(demo):
    """``demo`` serving on a free port of localhost; yields its URL."""
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
