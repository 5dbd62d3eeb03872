"""The demo's page: its controls, laid out and wired to a :class:`~.demo.Generator`.

Built by :func:`midiformers.app.create_demo`; this module imports Gradio at the top (the event
handlers take a ``gr.Request``), so it is only imported when a page is built.

Endpoints (``gradio_client`` or plain HTTP, each request in its own session unless the client
keeps one): ``/generate`` (a piece from the primer upload, or from nothing, streamed while the
model writes; attribute controls by name as keyword arguments, ``density="high"``),
``/continue`` (more of the session's last result), ``/infill`` (regenerate bars of the upload or
of the last result), ``/undo`` (the session's result before the last) and ``/stop`` (the
session's running generation).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import gradio as gr
from miditok.constants import MIDI_INSTRUMENTS

from ..generation.controls import CONTROLS
from .demo import (
    CONTROL_OFF,
    DEFAULT_BARS,
    DEFAULT_SECONDS,
    EXAMPLES_DIR,
    KEEP_RESULTS_S,
    MAX_BARS,
    MAX_NEW_TOKENS,
    MAX_PRIMER_BYTES,
    MAX_SECONDS,
    MAX_SEED,
    GenerationRequest,
    GenerationResult,
    Generator,
    Piece,
    remember,
    undo,
)
from .models import ModelEntry, ModelFeatures

__all__ = ["build_page", "instrument_name", "length_units"]

INTRO = (
    "# midiformers: symbolic music generation\n"
    "Pick a model, optionally upload a primer MIDI file to continue, choose the length and the "
    "instruments, and press **Generate**: the piano roll grows while the model writes, "
    "**Stop** keeps what is written so far. **Continue** writes more after the last result, "
    "**Undo** goes back to the one before. The result plays below and comes as a MIDI file."
)
_UNIT_LABELS = {"bars": "Bars", "seconds": "Seconds", "tokens": "Tokens"}


def instrument_name(program: int) -> str:
    """How the instrument picker names a General MIDI program (-1: drums)."""
    if program == -1:
        return "Drums (-1)"
    return f"{MIDI_INSTRUMENTS[program]['name']} ({program})"


def length_units(features: ModelFeatures) -> list[str]:
    """The length units a model supports, the preferred (its default) first."""
    return [unit for unit in ("seconds", "bars") if getattr(features, unit)] + ["tokens"]


def build_page(
    generator: Generator,
    entries: Sequence[ModelEntry],
    notices: Sequence[str],
    concurrency_limit: int,
) -> gr.Blocks:
    """The page, with one event per button (see the module docstring for the endpoints)."""
    labels = [entry.label for entry in entries]
    first = entries[0] if entries else None
    features = first.features if first else ModelFeatures()
    units = length_units(features)

    with gr.Blocks(
        title="midiformers",
        analytics_enabled=False,
        delete_cache=(KEEP_RESULTS_S, KEEP_RESULTS_S),  # uploads and results: at most an hour
    ) as demo:
        gr.Markdown(INTRO)
        gr.Markdown(_notice_markdown(notices), visible=bool(notices), elem_id="notice")
        history = gr.State([])
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
                with gr.Group():
                    length_unit = gr.Radio(
                        [(_UNIT_LABELS[unit], unit) for unit in units],
                        value=units[0],
                        label="Length in",
                        info="Bars and seconds are added after the primer (or the last result).",
                    )
                    num_bars = gr.Slider(
                        1,
                        MAX_BARS,
                        value=DEFAULT_BARS,
                        step=1,
                        label="Bars to write",
                        visible=units[0] == "bars",
                    )
                    seconds = gr.Slider(
                        1,
                        MAX_SECONDS,
                        value=DEFAULT_SECONDS,
                        step=1,
                        label="Seconds to write",
                        visible=units[0] == "seconds",
                    )
                    max_new_tokens = gr.Slider(
                        16,
                        MAX_NEW_TOKENS,
                        value=256,
                        step=16,
                        label="Tokens to generate",
                        visible=units[0] == "tokens",
                    )
                instruments = gr.Dropdown(
                    choices=[(instrument_name(p), p) for p in features.programs],
                    value=[],
                    multiselect=True,
                    label="Instruments for new notes (empty: any)",
                    visible=bool(features.programs),
                    elem_id="instruments",
                )
                with gr.Accordion(
                    "Controls", open=False, visible=bool(features.controls)
                ) as controls_box:
                    gr.Markdown(
                        "What every bar and track of the new music should be like (the model "
                        "learned these attribute tokens; *any* leaves one free)."
                    )
                    controls = {
                        name: _control_widget(spec, name in features.controls)
                        for name, spec in CONTROLS.items()
                    }
                with gr.Accordion(
                    "Regenerate bars (infilling)", open=False, visible=features.infilling
                ) as infill_box:
                    gr.Markdown(
                        "Writes bars *From*-*To* of the chosen tracks again, in the uploaded "
                        "primer or, without one, in the last result; every other note stays."
                    )
                    with gr.Row():
                        infill_from = gr.Number(1, precision=0, minimum=1, label="From bar")
                        infill_to = gr.Number(2, precision=0, minimum=1, label="To bar")
                    infill_tracks = gr.Dropdown(
                        [],
                        value=[],
                        multiselect=True,
                        allow_custom_value=True,  # the choices follow the piece; checked later
                        label="Tracks to regenerate (empty: all)",
                        elem_id="infill-tracks",
                    )
                    infill = gr.Button("Regenerate bars", interactive=bool(entries))
                with gr.Accordion("Sampling", open=False):
                    temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature")
                    top_k = gr.Slider(0, 200, value=32, step=1, label="Top-k (0: off)")
                    top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.01, label="Top-p (1: off)")
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
                with gr.Row():
                    button = gr.Button("Generate", variant="primary", interactive=bool(entries))
                    more = gr.Button("Continue", interactive=False)
                    back = gr.Button("Undo", interactive=False)
                    stop = gr.Button("Stop", variant="stop", interactive=bool(entries))
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                roll = gr.Image(
                    label="Piano roll",
                    type="numpy",
                    format="png",
                    interactive=False,
                    elem_id="piano-roll",
                )
                audio = gr.Audio(label="Audio", type="numpy", interactive=False, elem_id="audio")
                midi = gr.File(label="MIDI file", interactive=False, elem_id="midi")
                with gr.Row():
                    num_tokens = gr.Number(None, label="Tokens generated", interactive=False)
                    elapsed = gr.Number(None, label="Generation time (s)", interactive=False)

        results = [status, audio, roll, midi, num_tokens, elapsed]
        sampling = [temperature, top_k, top_p, max_new_tokens, seed, grammar]
        length = [length_unit, num_bars, seconds, instruments]

        def on_generate(
            model: str | None,
            composer: str | None,
            primer: str | None,
            temperature: float,
            top_k: float,
            top_p: float,
            max_new_tokens: float,
            seed: float | None,
            grammar: bool,
            length_unit: str = "tokens",
            num_bars: float = DEFAULT_BARS,
            seconds: float = DEFAULT_SECONDS,
            instruments: list | None = None,
            history: list[Piece] | None = None,
            request: gr.Request = None,
            **controls: Any,
        ) -> Iterator[tuple]:
            """A new piece: from the primer upload, or from nothing; streamed."""
            settings = GenerationRequest(
                model, composer, primer, temperature, top_k, top_p, max_new_tokens, seed,
                grammar, length_unit, num_bars, seconds, instruments, controls,
            )  # fmt: skip
            yield from _streamed(generator.stream(settings, _session(request)), history)

        def on_continue(
            model: str | None,
            composer: str | None,
            temperature: float,
            top_k: float,
            top_p: float,
            max_new_tokens: float,
            seed: float | None,
            grammar: bool,
            length_unit: str = "tokens",
            num_bars: float = DEFAULT_BARS,
            seconds: float = DEFAULT_SECONDS,
            instruments: list | None = None,
            history: list[Piece] | None = None,
            request: gr.Request = None,
            **controls: Any,
        ) -> Iterator[tuple]:
            """More of the last result (it becomes the primer); streamed."""
            if not history:
                yield (NOTHING_YET, *(gr.skip(),) * 6)
                return
            settings = GenerationRequest(
                model, composer, None, temperature, top_k, top_p, max_new_tokens, seed,
                grammar, length_unit, num_bars, seconds, instruments, controls,
            )  # fmt: skip
            stream = generator.stream(settings, _session(request), source=history[-1])
            yield from _streamed(stream, history)

        def on_infill(
            model: str | None,
            primer: str | None,
            temperature: float,
            top_k: float,
            top_p: float,
            seed: float | None,
            grammar: bool,
            infill_from: float | None,
            infill_to: float | None,
            infill_tracks: list | None = None,
            history: list[Piece] | None = None,
            request: gr.Request = None,
        ) -> Iterator[tuple]:
            """Bars From-To of the chosen tracks written again, in the primer upload or the
            last result; streamed."""
            settings = GenerationRequest(
                model, None, primer, temperature, top_k, top_p, 0, seed, grammar,
                infill_bars=(infill_from, infill_to), infill_tracks=infill_tracks,
            )  # fmt: skip
            source = history[-1] if history and not primer else None
            yield from _streamed(generator.stream(settings, _session(request), source), history)

        def on_undo(history: list[Piece] | None) -> tuple:
            """Back to the result before the last one."""
            earlier = undo(history)
            if len(earlier) == len(history or []):
                return (NOTHING_TO_UNDO, *(gr.skip(),) * 6)
            return (*generator.show(earlier[-1]).as_outputs(), earlier)

        def on_stop(request: gr.Request = None) -> None:
            """Stop this session's generation; it then returns what was written."""
            generator.stop(_session(request))

        def after_result(model: str | None, primer: str | None, history: list[Piece] | None):
            return (
                gr.Button(interactive=bool(history)),
                gr.Button(interactive=len(history or []) > 1),
                *_outline_update(generator.outline(model, primer, (history or [None])[-1])),
            )

        streaming = {
            "outputs": [*results, history],
            "concurrency_limit": concurrency_limit,
            "concurrency_id": "generation",  # Generate and Continue share the slots
            "show_progress": "minimal",  # the roll stays visible while it grows
        }
        buttons = {
            "inputs": [model, primer, history],
            "outputs": [more, back, infill_to, infill_tracks],
            "api_visibility": "private",
        }
        button.click(
            on_generate,
            inputs=[model, composer, primer, *sampling, *length, history],
            inputs_kwargs=controls,
            api_name="generate",
            **streaming,
        ).then(after_result, **buttons)
        more.click(
            on_continue,
            inputs=[model, composer, *sampling, *length, history],
            inputs_kwargs=controls,
            api_name="continue",
            **streaming,
        ).then(after_result, **buttons)
        infill.click(
            on_infill,
            inputs=[
                model,
                primer,
                temperature,
                top_k,
                top_p,
                seed,
                grammar,
                infill_from,
                infill_to,
                infill_tracks,
                history,
            ],  # fmt: skip
            api_name="infill",
            **streaming,
        ).then(after_result, **buttons)
        primer.change(after_result, **buttons)
        back.click(on_undo, inputs=history, outputs=[*results, history], api_name="undo").then(
            after_result, **buttons
        )
        stop.click(on_stop, api_name="stop", queue=False)
        model.change(
            lambda label: _model_update(generator.entries.get(label), list(controls)),
            inputs=model,
            outputs=[
                composer,
                length_unit,
                instruments,
                controls_box,
                infill_box,
                *controls.values(),
            ],
            api_visibility="private",
        ).then(after_result, **buttons)
        length_unit.change(
            _unit_update,
            inputs=length_unit,
            outputs=[num_bars, seconds, max_new_tokens],
            api_visibility="private",
        )
    return demo


NOTHING_YET = "Nothing to continue yet: **Generate** a piece first."
NOTHING_TO_UNDO = "Nothing to undo: this is the first result of the session."


def _session(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


def _streamed(results: Iterator[GenerationResult], history: list[Piece] | None) -> Iterator[tuple]:
    """The page's outputs for each result; the finished piece joins the session's history."""
    for result in results:
        if result.piece is None:
            yield (*result.as_outputs(), gr.skip())
        else:
            yield (*result.as_outputs(), remember(history, result.piece))


def _unit_update(unit: str) -> tuple:
    return tuple(gr.Slider(visible=unit == name) for name in ("bars", "seconds", "tokens"))


def _model_update(entry: ModelEntry | None, control_names: Sequence[str] = ()) -> tuple:
    """What follows the model: composers, length units, instruments, the controls box, the
    infilling box, then each of ``control_names``."""
    features = entry.features if entry else ModelFeatures()
    units = length_units(features)
    return (
        _composer_update(entry),
        gr.Radio(choices=[(_UNIT_LABELS[u], u) for u in units], value=units[0]),
        gr.Dropdown(
            choices=[(instrument_name(p), p) for p in features.programs],
            value=[],
            visible=bool(features.programs),
        ),
        gr.Accordion(visible=bool(features.controls)),
        gr.Accordion(visible=features.infilling),
        *(gr.update(visible=name in features.controls) for name in control_names),
    )


def _outline_update(outline: tuple[int, list[int]] | None) -> tuple:
    """The infilling box for the piece it would work on: its bars and its tracks."""
    if outline is None:
        return gr.skip(), gr.Dropdown(choices=[], value=[])
    bars, programs = outline
    tracks = [(f"{number}: {instrument_name(p)}", number) for number, p in enumerate(programs, 1)]
    return (
        gr.Number(maximum=bars, info=f"The piece has {bars} bars."),
        gr.Dropdown(choices=tracks, value=[]),
    )


def _control_widget(spec: Any, visible: bool):
    """The widget of one attribute control (see ``midiformers.generation.controls``): ticks
    for a set of choices, else a list whose first entry leaves the control free."""
    label = spec.name.replace("_", " ").capitalize()
    if spec.kind == "set":
        return gr.CheckboxGroup(
            list(spec.values), value=list(spec.default or []), label=f"{label} (none: any)",
            info=spec.help, visible=visible,
        )  # fmt: skip
    choices = [CONTROL_OFF, *_control_choices(spec)]
    value = CONTROL_OFF if spec.default is None else str(spec.default)
    return gr.Dropdown(choices, value=value, label=label, info=spec.help, visible=visible)


def _control_choices(spec: Any) -> list[str]:
    """The values a list offers for a control: words and whole numbers (``level``), single
    numbers and ranges ``"low-high"`` (``range``), tenths of the span (``number``)."""
    if spec.kind == "level":
        words = [v for v in spec.values if isinstance(v, str)]
        low, high = (v for v in spec.values if not isinstance(v, str))
        return [*words, *(str(n) for n in range(low, high + 1))]
    low, high = spec.values
    if spec.kind == "range":
        return [
            str(a) if a == b else f"{a}-{b}"
            for a in range(low, high + 1)
            for b in range(a, high + 1)
        ]
    return [f"{low + step * (high - low) / 10:g}" for step in range(11)]


def _composer_update(entry: ModelEntry | None) -> gr.Dropdown:
    composers = entry.composers if entry else []
    return gr.Dropdown(
        choices=composers, value=composers[0] if composers else None, visible=bool(composers)
    )


def _notice_markdown(notices: Sequence[str]) -> str:
    return "\n\n".join(f"⚠️ {notice}" for notice in notices)
