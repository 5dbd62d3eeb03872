"""The Gradio demo: pick a model, optionally upload a primer, generate, listen and look.

:func:`create_demo` builds the ``gr.Blocks``; ``app.py`` (the repository's and every Space's)
only parses the command line and launches it, so tests and Spaces run the same page.

Requests are untrusted: a file they name is used only if it lies in Gradio's upload folder
(:func:`check_upload_path`), and messages about a bad primer never quote its bytes.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import AudioUnavailableError, audio_problem, piano_roll, render_audio
from ..tokenization import MidiFileError, load_score
from .models import ModelEntry, resolve_models

logger = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
MAX_PRIMER_BYTES = 1024 * 1024
"""Largest primer accepted (1 MiB): a primer is a few bars, and a huge file would only keep
the CPU busy tokenizing it."""
MAX_NEW_TOKENS = 2048
"""The slider's limit: a 30-second piece of the default model takes about 1,100 tokens."""
DEFAULT_CONCURRENCY = 1
"""Generations running at once; more visitors wait in the queue instead of sharing the CPU."""
MAX_QUEUE = 16
KEEP_RESULTS_S = 3600
"""Generated files (ours and Gradio's cached copies, uploads too) are deleted after an hour."""
MAX_SEED = 2**31 - 1
WARMUP_TOKENS = 16
"""Tokens generated per model at start-up (``warmup=True``): enough to load the model, build the
grammar and compile the decode step before the first visitor arrives."""

UPLOAD_REFUSED = (
    "{name} was not uploaded through this page; upload the MIDI file with the Primer field "
    "or pick one of the examples"
)
"""The one answer to a file path that is not an upload, whether or not that file exists."""


class UploadRefusedError(ValueError):
    """A request named a file that did not come through the demo's upload (or its examples)."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(UPLOAD_REFUSED.format(name=name))


def _display_name(path: Any) -> str:
    """How a file is called in messages: the last part of the name the request gave."""
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else ""
    return text.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or "the file"


def upload_dirs() -> tuple[Path, ...]:
    """Where a request's files may lie: Gradio's upload folder (``GRADIO_TEMP_DIR``, else
    ``<tmp>/gradio``: uploads and Gradio's copies of the examples) and the shipped examples."""
    from gradio.utils import get_upload_folder

    return (Path(get_upload_folder()), EXAMPLES_DIR)


def check_upload_path(path: str | os.PathLike, allowed_dirs: Sequence[str | Path]) -> Path:
    """The real path of an uploaded file, once it is known to be a regular file inside one of
    ``allowed_dirs``.

    Symlinks and ``..`` are resolved first, so a link in the upload folder to a file elsewhere
    is refused like the file itself. A missing file is refused with the same message as one
    outside, so the answer never tells whether a server file exists.

    Raises:
        UploadRefusedError: the file is not one of the allowed ones.
    """
    name = _display_name(path)
    try:
        real = Path(os.path.realpath(os.fspath(path)))
        roots = [Path(os.path.realpath(folder)) for folder in allowed_dirs]
        if any(real.is_relative_to(root) for root in roots) and real.is_file():
            return real
    except (TypeError, ValueError, OSError):  # not a path, NUL bytes, unreadable folders
        pass
    raise UploadRefusedError(name)


@dataclass
class GenerationResult:
    """What one click produces, in the order of the demo's outputs."""

    status: str
    audio: tuple[int, np.ndarray] | None = None
    piano_roll: np.ndarray | None = None
    midi_path: str | None = None
    num_tokens: int | None = None
    seconds: float | None = None

    def as_outputs(self) -> tuple:
        return (
            self.status,
            self.audio,
            self.piano_roll,
            self.midi_path,
            self.num_tokens,
            self.seconds,
        )


class Generator:
    """The demo's generate function: validates input, runs the pipeline, renders the outputs."""

    def __init__(
        self,
        entries: list[ModelEntry],
        output_dir: Path,
        audio_off: str | None = None,
        primer_dirs: Sequence[str | Path] | None = None,
    ):
        """``primer_dirs``: where primer files may lie (default: :func:`upload_dirs`)."""
        self.entries = {entry.label: entry for entry in entries}
        self.output_dir = output_dir
        self.audio_off = audio_off if audio_off is not None else audio_problem()
        self.primer_dirs = tuple(primer_dirs) if primer_dirs is not None else upload_dirs()

    def __call__(
        self,
        model_label: str | None,
        composer: str | None,
        primer: str | None,
        temperature: float,
        top_k: float,
        top_p: float,
        max_new_tokens: float,
        seed: float | None,
        grammar: bool,
    ) -> tuple:
        entry = self.entries.get(model_label or "")
        if entry is None:
            return GenerationResult(_no_model_message(model_label, list(self.entries))).as_outputs()
        composer = composer or None
        if entry.composers and composer is not None and composer not in entry.composers:
            return GenerationResult(
                f"**Unknown composer** {_quoted(composer)} for model {entry.label!r}; choose one of "
                f"{', '.join(entry.composers)}."
            ).as_outputs()
        try:
            primer_score = self._load_primer(primer)
        except UploadRefusedError as error:
            return GenerationResult(f"**Primer refused.** {error}").as_outputs()
        except MidiFileError as error:
            return GenerationResult(f"**Primer rejected.** {_primer_problem(error)}").as_outputs()
        seed = int(seed) if seed is not None and seed >= 0 else random.randrange(MAX_SEED + 1)
        options = {
            "max_new_tokens": int(max_new_tokens),
            "temperature": float(temperature),
            "top_k": int(top_k),  # 0 and 1.0 switch the filters off
            "top_p": float(top_p),
            "seed": seed,
            "grammar": bool(grammar),
        }
        if entry.composers:
            options["composer"] = composer or entry.composers[0]
        try:
            generate = entry.pipeline()
            start = time.perf_counter()
            output = generate(primer_score, **options)
            seconds = time.perf_counter() - start
        except Exception as error:  # the page must stay usable; the traceback goes to the log
            logger.exception("Generation with %s failed", entry.spec)
            return GenerationResult(
                f"**Generation failed.** {type(error).__name__}: {error}"
            ).as_outputs()
        result = self._outputs(entry, output, seconds, options)
        if primer_score is not None and primer_score.note_num() == 0:
            result.status += " The primer has no notes, so the piece starts from scratch."
        if composer is not None and not entry.composers:
            result.status += (
                f" Composer {_quoted(composer)} ignored: model {entry.label!r} is not "
                "composer-conditioned (leave the composer empty)."
            )
        return result.as_outputs()

    def _load_primer(self, primer: str | os.PathLike | None):
        """The primer as a Score, read only from an upload (or an example), at most
        ``MAX_PRIMER_BYTES`` long."""
        if not primer:
            return None
        name = _display_name(primer)
        path = check_upload_path(primer, self.primer_dirs)
        size = path.stat().st_size
        if size > MAX_PRIMER_BYTES:
            raise _PrimerTooLargeError(
                name,
                f"file too large ({size / 1024:.0f} KiB; the limit is "
                f"{MAX_PRIMER_BYTES // 1024} KiB)",
            )
        return load_score(path, name=name, max_file_size=MAX_PRIMER_BYTES)

    def _outputs(
        self, entry: ModelEntry, output: dict[str, Any], seconds: float, options: dict[str, Any]
    ) -> GenerationResult:
        score = output["score"]
        num_tokens = output["num_generated_tokens"]
        midi_path = self._write_midi(output["midi"], entry.label, options["seed"])
        details = [
            f"**{score.note_num()} notes**, {num_tokens} new tokens in {seconds:.2f} s "
            f"({entry.label}, seed {options['seed']}"
            + (f", composer {options['composer']}" if "composer" in options else "")
            + ")."
        ]
        if output.get("num_dropped_tokens"):
            details.append(f"{output['num_dropped_tokens']} invalid tokens were dropped.")
        audio = None
        if self.audio_off:
            details.append(f"Audio is off: {self.audio_off}")
        elif score.note_num() == 0:
            details.append("Nothing to play: the piece has no notes (try more tokens).")
        else:
            try:
                sample_rate, samples = render_audio(score)
                audio = (sample_rate, (samples * 32767).astype(np.int16))
            except AudioUnavailableError as error:
                details.append(f"Audio is off: {error}")
        return GenerationResult(
            status=" ".join(details),
            audio=audio,
            piano_roll=piano_roll(score, split_time=_primer_end(entry, output)),
            midi_path=str(midi_path),
            num_tokens=num_tokens,
            seconds=round(seconds, 3),
        )

    def _write_midi(self, data: bytes, label: str, seed: int) -> Path:
        """Each result in its own folder (so the download keeps a readable name); Gradio
        copies it into its cache, so folders older than an hour are removed."""
        cutoff = time.time() - KEEP_RESULTS_S
        for old in self.output_dir.glob("result-*"):
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        folder = Path(tempfile.mkdtemp(prefix="result-", dir=self.output_dir))
        name = "".join(c if c.isalnum() or c in "-_." else "-" for c in label)
        path = folder / f"{name}-seed{seed}.mid"
        path.write_bytes(data)
        return path


def compile_decoding(model: Any) -> bool:
    """Make ``model`` generate with a static cache as long as its window and a compiled decode
    step (transformers' ``compile_config``), so every request reuses one compiled graph.

    For the default model this cuts the CPU time of a request by about a fifth (see
    ``benchmarks/bench_demo.py``), for a one-off compilation at start-up. Returns False and
    changes nothing for a model without a compilable decode step (recurrent models), without a
    window, or conditioned on a composer.
    """
    from transformers import CompileConfig

    from ..generation import context_length

    window = context_length(model)
    if (
        window is None
        or not getattr(model, "_can_compile_fullgraph", False)
        or getattr(model, "_is_stateful", False)
        or hasattr(model, "composer_ids")
    ):
        return False
    config = CompileConfig(fullgraph=True, dynamic=False)
    config._compile_all_devices = True  # transformers compiles on a CPU only when told to
    generation = model.generation_config
    generation.cache_implementation = "static"
    generation.max_cache_len = window  # every window of generate_long fits: one graph
    generation.compile_config = config
    return True


def warm_up(entries: Sequence[ModelEntry], compile_models: bool = True) -> None:
    """Load every model and generate :data:`WARMUP_TOKENS` tokens with it, then render them as
    audio and a piano roll, so that the first visitor waits neither for loading, the grammar,
    ``torch.compile``, the SoundFont nor matplotlib. A model whose compiled decoding fails here
    goes back to plain decoding; one that fails altogether is left for its first request to
    report."""
    for entry in entries:
        start = time.perf_counter()
        try:
            generate = entry.pipeline()
        except Exception:
            logger.exception("Warm-up: %s could not be loaded", entry.spec)
            continue
        generation = generate.model.generation_config
        saved = (generation.cache_implementation, generation.max_cache_len)
        saved += (generation.compile_config,)
        compiled = compile_models and compile_decoding(generate.model)
        options = {"composer": entry.composers[0]} if entry.composers else {}
        try:
            piece = generate(None, max_new_tokens=WARMUP_TOKENS, seed=0, **options)
        except Exception:
            if compiled:
                logger.exception("Warm-up: compiled decoding failed for %s; plain", entry.spec)
                generation.cache_implementation, generation.max_cache_len = saved[:2]
                generation.compile_config = saved[2]
            else:
                logger.exception("Warm-up: generation with %s failed", entry.spec)
            continue
        _warm_up_outputs(piece["score"])
        logger.info(
            "Warm-up: %s ready in %.1f s%s",
            entry.label,
            time.perf_counter() - start,
            " (compiled decoding)" if compiled else "",
        )


def _warm_up_outputs(score) -> None:
    """Render every key of the piece's instruments once (the SoundFont's compressed samples
    are decoded on first use: 0.3 s in the first request otherwise) and draw its piano roll."""
    from symusic import Note, Score, Track

    keyboard = Score(score.ticks_per_quarter)
    for program, is_drum in {(t.program, t.is_drum) for t in score.tracks} or {(0, False)}:
        track = Track(program=program, is_drum=is_drum)
        for step, (pitch, velocity) in enumerate(product(range(21, 109), (40, 80, 120))):
            track.notes.append(Note(step * 8, 8, pitch, velocity))
        keyboard.tracks.append(track)
    with contextlib.suppress(AudioUnavailableError):
        render_audio(keyboard)
    piano_roll(score)


def _primer_end(entry: ModelEntry, output: dict[str, Any]) -> float | None:
    """Where the primer stops sounding (seconds), to mark it on the piano roll."""
    count = output.get("num_primer_tokens", 0)
    if not count:
        return None
    primer = entry.pipeline().tokenizer.to_score(output["token_ids"][: count + 1])
    return primer.to("second").end() if primer.note_num() else None


class _PrimerTooLargeError(MidiFileError):
    """A primer over ``MAX_PRIMER_BYTES``; its reason holds only sizes."""


_DETAILS = re.compile(r": | \(|; ")
_PLAIN_REASON = re.compile(r"[A-Za-z0-9 ,.'()/-]+")


def _primer_problem(error: MidiFileError) -> str:
    """``name: reason`` for a bad primer, without the details a reason may carry (the first
    bytes of the file, the parser's own text): only the upload's name and what is wrong."""
    if isinstance(error, _PrimerTooLargeError):
        return str(error)
    reason = _DETAILS.split(error.reason, maxsplit=1)[0].strip()
    if not _PLAIN_REASON.fullmatch(reason) or re.search(r"\bb['\"]", reason):
        reason = "not a readable MIDI file"
    return f"{error.name}: {reason}"


def _quoted(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message, cut to ``limit`` characters (requests can send anything)."""
    return repr(text[:limit]) + ("…" if len(text) > limit else "")


def _no_model_message(label: str | None, labels: list[str]) -> str:
    if not labels:
        return "**No model loaded.** See the notice above for how to create one."
    return f"**Unknown model** {label!r}; choose one of {', '.join(labels)}."


def _notice_markdown(notices: list[str]) -> str:
    return "\n\n".join(f"⚠️ {notice}" for notice in notices)


def create_demo(
    models: list[str] | None = None,
    *,
    concurrency_limit: int = DEFAULT_CONCURRENCY,
    max_queue: int = MAX_QUEUE,
    output_dir: str | Path | None = None,
    warmup: bool = False,
):
    """Build the demo page.

    Args:
        models: folders or Hub ids of saved midiformers models (with their tokenizers);
            ``None`` uses ``outputs/default`` (``python train.py``) when it exists.
        concurrency_limit: generations that may run at the same time.
        max_queue: visitors that may wait; more are turned away until a slot frees.
        output_dir: where generated MIDI files are written (default: a temporary folder
            removed when the demo is closed).
        warmup: load every model now and compile its decode step (:func:`warm_up`), which
            ``app.py`` does; otherwise models load on their first request.

    Returns:
        a ``gr.Blocks`` with its queue set up, ready for ``launch()``; the generate
        endpoint is ``/generate``.
    """
    import gradio as gr

    entries, notices = resolve_models(models)
    for notice in notices:
        logger.warning(notice)
    if warmup:
        warm_up(entries)
    problem = audio_problem()
    if problem:
        notices.append(f"Audio is off: {problem}. The piano roll and the MIDI file still work.")
        logger.warning("Audio is off: %s", problem)
    if output_dir is None:
        output_dir = Path(tempfile.mkdtemp(prefix="midiformers-demo-"))
        owned_dir = output_dir
    else:
        output_dir, owned_dir = Path(output_dir), None
        output_dir.mkdir(parents=True, exist_ok=True)
    primer_dirs = upload_dirs()
    generator = Generator(entries, output_dir, audio_off=problem or "", primer_dirs=primer_dirs)
    labels = [entry.label for entry in entries]
    first = entries[0] if entries else None

    with gr.Blocks(
        title="midiformers",
        analytics_enabled=False,
        delete_cache=(KEEP_RESULTS_S, KEEP_RESULTS_S),  # uploads and results: at most an hour
    ) as demo:
        gr.Markdown(
            "# midiformers: symbolic music generation\n"
            "Pick a model, optionally upload a primer MIDI file to continue, and press "
            "**Generate**. The result plays below, as a piano roll and as a MIDI file."
        )
        gr.Markdown(_notice_markdown(notices), visible=bool(notices), elem_id="notice")
        with gr.Row():
            with gr.Column():
                model = gr.Dropdown(
                    choices=labels, value=first.label if first else None, label="Model"
                )
                composer = gr.Dropdown(
                    choices=first.composers if first else [],
                    value=(first.composers or [None])[0] if first else None,
                    label="Composer",
                    visible=bool(first and first.composers),
                    allow_custom_value=True,  # the choices follow the model; Generator checks
                )
                primer = gr.File(
                    label=f"Primer MIDI (optional, up to {MAX_PRIMER_BYTES // 1024} KiB)",
                    file_types=[".mid", ".midi"],
                    type="filepath",
                    elem_id="primer",
                )
                examples = sorted(EXAMPLES_DIR.glob("*.mid"))
                if examples:
                    gr.Examples([[str(path)] for path in examples], inputs=[primer])
                with gr.Accordion("Sampling", open=True):
                    temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature")
                    top_k = gr.Slider(0, 200, value=32, step=1, label="Top-k (0: off)")
                    top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.01, label="Top-p (1: off)")
                    max_new_tokens = gr.Slider(
                        16, MAX_NEW_TOKENS, value=256, step=16, label="Tokens to generate"
                    )
                    seed = gr.Number(
                        value=-1,
                        precision=0,
                        minimum=-1,
                        maximum=MAX_SEED,
                        label="Seed (-1: random)",
                    )
                    grammar = gr.Checkbox(
                        value=True, label="Grammar (only token sequences that decode to MIDI)"
                    )
                button = gr.Button("Generate", variant="primary", interactive=bool(entries))
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                audio = gr.Audio(label="Audio", type="numpy", interactive=False, elem_id="audio")
                roll = gr.Image(
                    label="Piano roll", type="numpy", interactive=False, elem_id="piano-roll"
                )
                midi = gr.File(label="MIDI file", interactive=False, elem_id="midi")
                with gr.Row():
                    num_tokens = gr.Number(None, label="Tokens generated", interactive=False)
                    seconds = gr.Number(None, label="Generation time (s)", interactive=False)

        model.change(
            lambda label: _composer_update(gr, generator.entries.get(label)),
            inputs=model,
            outputs=composer,
            api_visibility="private",
        )
        sampling = [temperature, top_k, top_p, max_new_tokens, seed, grammar]
        button.click(
            generator,
            inputs=[model, composer, primer, *sampling],
            outputs=[status, audio, roll, midi, num_tokens, seconds],
            api_name="generate",
            concurrency_limit=concurrency_limit,
        )
    demo.queue(default_concurrency_limit=concurrency_limit, max_size=max_queue)
    _refuse_foreign_files(demo, [demo.GRADIO_CACHE])
    if owned_dir is not None:
        _remove_on_close(demo, owned_dir)
    return demo


def _composer_update(gr, entry: ModelEntry | None):
    composers = entry.composers if entry else []
    return gr.Dropdown(
        choices=composers, value=composers[0] if composers else None, visible=bool(composers)
    )


def _refuse_foreign_files(demo, allowed_dirs: Sequence[str | Path]) -> None:
    """Check every file a request names, before Gradio copies it into its cache, with
    :func:`check_upload_path`; refuse the request with a clear message otherwise.

    The page only ever sends files from Gradio's upload folder (uploads, and Gradio's copies
    of the examples). Gradio 6 refuses other paths itself only in an app started with
    ``launch()``, and then without a message; mounted in FastAPI (``gr.mount_gradio_app``)
    it copies whatever server file a request names into its cache and hands the copy on.
    """
    import gradio as gr
    from gradio_client.utils import is_file_obj, traverse

    preprocess_data = demo.preprocess_data

    def check(payload: dict) -> dict:
        try:
            check_upload_path(payload["path"], allowed_dirs)
        except UploadRefusedError as error:
            message = UPLOAD_REFUSED.format(name=html.escape(error.name))
            raise gr.Error(message, title="File refused", print_exception=False) from None
        return payload

    async def checked_preprocess_data(block_fn, inputs, *args, **kwargs):
        for value in inputs:
            traverse(value, check, is_file_obj)
        return await preprocess_data(block_fn, inputs, *args, **kwargs)

    demo.preprocess_data = checked_preprocess_data


def _remove_on_close(demo, folder: Path) -> None:
    """Delete the demo's own output folder when the server is closed."""
    close = demo.close

    def close_and_clean(*args, **kwargs):
        try:
            return close(*args, **kwargs)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    demo.close = close_and_clean
