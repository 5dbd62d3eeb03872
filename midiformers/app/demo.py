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
import math
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import AudioUnavailableError, audio_problem, piano_roll, render_audio
from ..generation import MidiGrammar
from ..generation.pipeline import TOKENS_PER_BAR, TOKENS_PER_SECOND
from ..tokenization import MidiFileError, load_score
from .live import LivePianoRoll, StopOnEvent, TokenCollector
from .models import ModelEntry, resolve_models

logger = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
MAX_PRIMER_BYTES = 1024 * 1024
"""Largest primer accepted (1 MiB): a primer is a few bars, and a huge file would only keep
the CPU busy tokenizing it."""
MAX_NEW_TOKENS = 2048
"""The token slider's limit: a 30-second piece of the default model takes about 1,100 tokens."""
LENGTH_UNITS = ("bars", "seconds", "tokens")
"""How a length is given; the page offers the ones the model supports (see ``ModelFeatures``)."""
DEFAULT_BARS = 8
MAX_BARS = 64
DEFAULT_SECONDS = 20.0
MAX_SECONDS = 120.0
"""Bars or seconds one request may add: a continuation can add as many again."""
MAX_PRIMER_BARS = 1_000_000
UPDATE_EVERY_S = 0.5
"""Seconds between two piano-roll updates while the model writes."""
HISTORY_SIZE = 8
"""Results a session keeps for Undo and Continue."""
CONTROL_OFF = "any"
"""The value of an attribute control that is not set."""
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
class GenerationRequest:
    """What one click asks for: the page's inputs, as the page (or an API client) sends them.

    ``length_unit`` says which length applies: ``num_bars`` or ``seconds`` are *added* to the
    primer (a continuation of 8 bars by 4 bars has 12), ``max_new_tokens`` counts tokens.
    ``instruments``: the programs new notes may use (empty: any). ``controls``: attribute
    controls by name (``None`` or ``"any"``: not set). ``infill_bars``: regenerate these bars
    (first, last, counted from 1) of the primer, or of the earlier result given as source,
    in the tracks numbered ``infill_tracks`` (counted from 1 in the piece's order) or playing
    ``infill_programs`` (both empty: every track); the length, instruments and composer do
    not apply then.
    """

    model: str | None
    composer: str | None = None
    primer: str | None = None
    temperature: float = 1.0
    top_k: float = 32
    top_p: float = 0.95
    max_new_tokens: float = 256
    seed: float | None = -1
    grammar: bool = True
    length_unit: str = "tokens"
    num_bars: float = DEFAULT_BARS
    seconds: float = DEFAULT_SECONDS
    instruments: Sequence[int | str] | None = None
    controls: dict[str, Any] = field(default_factory=dict)
    infill_bars: tuple[float, float] | None = None
    infill_programs: Sequence[int | str] | None = None
    infill_tracks: Sequence[int] | None = None


@dataclass
class Piece:
    """A finished result, as a session's history keeps it: Undo shows it again, Continue
    extends it (with the same model from its exact tokens, else from its MIDI file)."""

    label: str
    token_ids: list[int]
    midi: bytes
    marks: tuple[float, ...]
    status: str
    num_tokens: int
    seconds: float
    seed: int


@dataclass
class GenerationResult:
    """What one click produces, in the order of the demo's outputs. While the model writes,
    results carry the piano roll so far and no audio or file; the finished one has ``piece``."""

    status: str
    audio: tuple[int, np.ndarray] | None = None
    piano_roll: np.ndarray | None = None
    midi_path: str | None = None
    num_tokens: int | None = None
    seconds: float | None = None
    piece: Piece | None = None

    def as_outputs(self) -> tuple:
        return (
            self.status,
            self.audio,
            self.piano_roll,
            self.midi_path,
            self.num_tokens,
            self.seconds,
        )


class _RequestProblem(Exception):
    """A request the demo answers with a message instead of a piece."""


def remember(history: Sequence[Piece] | None, piece: Piece) -> list[Piece]:
    """The history with ``piece`` as its latest result, at most :data:`HISTORY_SIZE` long."""
    return [*(history or []), piece][-HISTORY_SIZE:]


def undo(history: Sequence[Piece] | None) -> list[Piece]:
    """The history without its latest result (unchanged when there is no earlier one)."""
    history = list(history or [])
    return history[:-1] if len(history) > 1 else history


class Generator:
    """The demo's generate function: validates input, runs the pipeline while showing the piece
    grow, stops when asked, renders the outputs.

    ``update_every``: seconds between two partial results while the model writes (more when
    one takes over a third of that, from drawing it to the caller asking for the next, which
    for the page includes encoding and sending it: updates never take more than a quarter of
    the time from the model); ``None``: none, only the finished piece.
    """

    def __init__(
        self,
        entries: list[ModelEntry],
        output_dir: Path,
        audio_off: str | None = None,
        primer_dirs: Sequence[str | Path] | None = None,
        update_every: float | None = UPDATE_EVERY_S,
    ):
        """``primer_dirs``: where primer files may lie (default: :func:`upload_dirs`)."""
        self.entries = {entry.label: entry for entry in entries}
        self.output_dir = output_dir
        self.audio_off = audio_off if audio_off is not None else audio_problem()
        self.primer_dirs = tuple(primer_dirs) if primer_dirs is not None else upload_dirs()
        self.update_every = update_every
        self._running: dict[str, threading.Event] = {}
        self._running_lock = threading.Lock()

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
        length_unit: str = "tokens",
        num_bars: float = DEFAULT_BARS,
        seconds: float = DEFAULT_SECONDS,
        instruments: Sequence[int | str] | None = None,
        **controls: Any,
    ) -> tuple:
        """One click of Generate, to the finished piece: the outputs in the page's order."""
        request = GenerationRequest(
            model_label, composer, primer, temperature, top_k, top_p, max_new_tokens, seed,
            grammar, length_unit, num_bars, seconds, instruments, controls,
        )  # fmt: skip
        *_, result = self.stream(request)
        return result.as_outputs()

    # ------------------------------------------------------------------ requests

    def stream(
        self,
        request: GenerationRequest,
        session: str | None = None,
        source: Piece | None = None,
    ) -> Iterator[GenerationResult]:
        """Generate, yielding a partial result about every :attr:`update_every` seconds while
        the model writes (the piano roll so far) and the finished piece last.

        ``source``: continue this earlier result instead of the primer upload. ``session``:
        :meth:`stop` with the same key ends the generation; what was written is then finished
        (notes left open are closed) and returned like any piece.
        """
        try:
            entry = self._entry(request)
            primer_score = self._primer_score(request, source)
            primer_ids = self._primer_ids(entry, primer_score, source)
            if request.infill_bars is not None:
                view, options = self._infill(entry, request, primer_ids)
            else:
                view = _Writing(entry.tokenizer(), primer_ids)
                options = self._options(entry, request, primer_ids)
        except _RequestProblem as problem:
            yield GenerationResult(str(problem))
            return
        except Exception as error:  # a tokenizer that does not load, a primer it cannot encode
            logger.exception("Preparing a request for %s failed", request.model)
            yield GenerationResult(f"**Generation failed.** {type(error).__name__}: {error}")
            return
        notes = []
        if primer_score is not None and primer_score.note_num() == 0 and not request.infill_bars:
            notes.append("The primer has no notes, so the piece starts from scratch.")
        if request.composer and not entry.composers:
            notes.append(
                f"Composer {_quoted(request.composer)} ignored: model {entry.label!r} is not "
                "composer-conditioned (leave the composer empty)."
            )
        yield from self._run(entry, primer_ids, options, session, notes, view)

    def stop(self, session: str | None) -> bool:
        """Ask the generation running for ``session`` to stop; False when none is running."""
        with self._running_lock:
            event = self._running.get(session) if session else None
        if event is None:
            return False
        event.set()
        return True

    def show(self, piece: Piece) -> GenerationResult:
        """An earlier result again (Undo): its status, audio, piano roll and a MIDI file."""
        from symusic import Score

        score = Score.from_midi(piece.midi)
        result = self._render(score, piece.label, piece.seed, piece.midi, piece.marks)
        result.status = f"{piece.status} (back to this earlier result)"
        result.num_tokens, result.seconds, result.piece = piece.num_tokens, piece.seconds, piece
        return result

    def outline(
        self, model_label: str | None, primer: str | None, source: Piece | None = None
    ) -> tuple[int, list[int]] | None:
        """(bars, the program of each track in order) of the piece infilling would work on: the
        primer upload, else ``source``; ``None`` when the model cannot infill or there is no
        piece."""
        entry = self.entries.get(model_label or "")
        if entry is None or not entry.features.infilling:
            return None
        from ..generation.infilling import InfillVocabulary, parse_piece

        try:
            score = self._primer_score(GenerationRequest(model_label, primer=primer), None)
            ids = self._primer_ids(entry, score, None if score is not None else source)
            piece = parse_piece(InfillVocabulary(entry.tokenizer()), ids)
        except Exception:  # a refused or broken upload: the Regenerate button says why
            return None
        if not piece.tracks:
            return None
        return piece.num_bars, list(piece.programs)

    def _entry(self, request: GenerationRequest) -> ModelEntry:
        entry = self.entries.get(request.model or "")
        if entry is None:
            raise _RequestProblem(_no_model_message(request.model, list(self.entries)))
        composer = request.composer or None
        if entry.composers and composer is not None and composer not in entry.composers:
            raise _RequestProblem(
                f"**Unknown composer** {_quoted(composer)} for model {entry.label!r}; choose one "
                f"of {', '.join(entry.composers)}."
            )
        return entry

    def _primer_score(self, request: GenerationRequest, source: Piece | None):
        if source is not None:
            return None
        try:
            return self._load_primer(request.primer)
        except UploadRefusedError as error:
            raise _RequestProblem(f"**Primer refused.** {error}") from None
        except MidiFileError as error:
            raise _RequestProblem(f"**Primer rejected.** {_primer_problem(error)}") from None

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

    @staticmethod
    def _primer_ids(entry: ModelEntry, score: Any, source: Piece | None) -> list[int]:
        """The primer's token ids (no BOS): the upload's, or an earlier result's (its exact
        tokens when it comes from the same model, else its MIDI file read by this one)."""
        tokenizer = entry.tokenizer()
        if source is not None and source.label == entry.label:
            framing = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
            return [token for token in source.token_ids if token not in framing]
        if source is not None:
            return tokenizer.encode_midi(source.midi)
        return tokenizer.encode_midi(score) if score is not None else []

    @staticmethod
    def _infill(
        entry: ModelEntry, request: GenerationRequest, ids: list[int]
    ) -> tuple[_Filling, dict[str, Any]]:
        """What to show and the pipeline's arguments for regenerating bars of ``ids``."""
        if not entry.features.infilling:
            raise _RequestProblem(
                f"**Infilling** is not available for model {entry.label!r}: it needs a model "
                "trained with the mmm preset's infilling tokens."
            )
        if not ids:
            raise _RequestProblem(
                "**Nothing to infill.** Upload a piece as the primer, or generate one first: "
                "infilling regenerates bars of it."
            )
        first = _whole(request.infill_bars[0], "From bar", 1, MAX_PRIMER_BARS)
        last = _whole(request.infill_bars[1], "To bar", 1, MAX_PRIMER_BARS)
        if first > last:
            raise _RequestProblem(f"**From bar** ({first}) comes after **To bar** ({last}).")
        programs = list(request.infill_programs or []) or None
        tracks = _track_numbers(request.infill_tracks)
        try:
            view = _Filling(entry.tokenizer(), ids, (first, last), programs, tracks)
        except ValueError as error:
            raise _RequestProblem(f"**Cannot regenerate those bars.** {error}") from None
        options = {**_sampling(request), "infill_bars": (first, last)}
        if programs:
            options["infill_programs"] = programs
        if tracks:
            options["infill_tracks"] = tracks
        return view, options

    def _options(
        self, entry: ModelEntry, request: GenerationRequest, primer_ids: list[int]
    ) -> dict[str, Any]:
        """The pipeline's arguments for ``request``; a length in bars or seconds is added to
        the primer's (the pipeline counts the primer in)."""
        options = _sampling(request)
        if entry.composers:
            options["composer"] = request.composer or entry.composers[0]
        options.update(self._length(entry, request, primer_ids))
        if request.instruments:
            options["programs"] = list(request.instruments)
        for name, value in (request.controls or {}).items():
            value = control_value(value)
            if value is not None:
                options[name] = value
        return options

    def _length(
        self, entry: ModelEntry, request: GenerationRequest, primer_ids: list[int]
    ) -> dict[str, Any]:
        unit, features = request.length_unit, entry.features
        if unit not in LENGTH_UNITS:
            raise _RequestProblem(
                f"**Unknown length unit** {_quoted(str(unit))}; choose one of "
                f"{', '.join(LENGTH_UNITS)}."
            )
        if unit == "tokens":
            tokens = _whole(request.max_new_tokens, "Tokens to generate", 1, MAX_NEW_TOKENS)
            return {"max_new_tokens": tokens}
        supported = features.bars if unit == "bars" else features.seconds
        if not supported:
            raise _RequestProblem(
                f"**Length in {unit}** is not available for model {entry.label!r} "
                f"({_LENGTH_NEEDS[unit]}); choose "
                + " or ".join(u for u in LENGTH_UNITS if u == "tokens" or getattr(features, u))
                + "."
            )
        if not request.grammar:
            raise _RequestProblem(
                f"**Length in {unit}** needs the grammar: switch it on or count tokens."
            )
        grammar = MidiGrammar.for_tokenizer(entry.tokenizer())
        bars, seconds = _primer_extent(grammar, primer_ids, unit)
        if unit == "bars":
            count = _whole(request.num_bars, "Bars to write", 1, MAX_BARS)
            return {"num_bars": bars + count, "max_new_tokens": TOKENS_PER_BAR * count}
        length = _number(request.seconds, "Seconds to write", 1.0, MAX_SECONDS)
        return {
            "duration_seconds": seconds + length,
            "max_new_tokens": math.ceil(TOKENS_PER_SECOND * length),
        }

    # ------------------------------------------------------------------ generation

    def _run(
        self,
        entry: ModelEntry,
        primer_ids: list[int],
        options: dict[str, Any],
        session: str | None,
        notes: list[str],
        view: _Writing | _Filling,
    ) -> Iterator[GenerationResult]:
        """The pipeline in a worker thread, with a partial result every ``update_every``
        seconds; a request that goes away (its generator closed) stops the worker."""
        outcome: dict[str, Any] = {}
        collector, stop = TokenCollector(), threading.Event()

        def work() -> None:
            try:
                generate = entry.pipeline()
                outcome["output"] = generate(
                    torch.tensor(primer_ids, dtype=torch.long),
                    streamer=collector,
                    stopping_criteria=[StopOnEvent(stop)],
                    **options,
                )
            except Exception as error:  # reported to the page below; the traceback to the log
                outcome["error"] = error

        worker = threading.Thread(target=work, name="midiformers-generate", daemon=True)
        roll = LivePianoRoll(marks=view.marks)
        self._register(session, stop)
        start = time.perf_counter()
        worker.start()
        try:
            shown, wait = 0, self.update_every
            while True:
                worker.join(wait)
                if not worker.is_alive():
                    break
                ids = collector.ids()
                if len(ids) > shown:
                    began = time.perf_counter()
                    shown = len(ids)
                    yield self._partial(view, ids, roll, began - start, options)
                    # An update competes with the model for the CPU: drawing it here, and
                    # the page encoding and sending it before it asks for the next one. At
                    # most a quarter of the time goes to updates.
                    wait = max(self.update_every, 3 * (time.perf_counter() - began))
        finally:
            if worker.is_alive():  # closed early (page left, request cancelled)
                stop.set()
                worker.join()
            self._unregister(session, stop)
        try:
            if "error" in outcome:
                raise outcome["error"]
            output, stopped = outcome["output"], None
            if stop.is_set() and view.was_cut(outcome["output"]):
                output, stopped = view.finish(entry.pipeline(), outcome["output"], options)
        except Exception as error:  # the page must stay usable; the traceback goes to the log
            logger.exception("Generation with %s failed", entry.spec, exc_info=error)
            yield GenerationResult(f"**Generation failed.** {type(error).__name__}: {error}")
            return
        seconds = time.perf_counter() - start
        yield self._finished(entry, output, view, seconds, options, roll, stopped, notes)

    def _register(self, session: str | None, stop: threading.Event) -> None:
        if session:
            with self._running_lock:
                self._running[session] = stop

    def _unregister(self, session: str | None, stop: threading.Event) -> None:
        if session:
            with self._running_lock:
                if self._running.get(session) is stop:
                    del self._running[session]

    @staticmethod
    def _partial(
        view: _Writing | _Filling,
        ids: list[int],
        roll: LivePianoRoll,
        elapsed: float,
        options: dict[str, Any],
    ) -> GenerationResult:
        score = view.score(ids)
        room = view.expected_end(ids, score, options)
        return GenerationResult(
            status=(
                f"{view.progress(ids)}… {len(ids)} new tokens, {score.note_num()} notes so far "
                f"({elapsed:.1f} s). **Stop** keeps what is written."
            ),
            piano_roll=roll.draw(score, room=room),
            num_tokens=len(ids),
            seconds=round(elapsed, 3),
        )

    def _finished(
        self,
        entry: ModelEntry,
        output: dict[str, Any],
        view: _Writing | _Filling,
        seconds: float,
        options: dict[str, Any],
        roll: LivePianoRoll,
        stopped: str | None,
        notes: list[str],
    ) -> GenerationResult:
        score = output["score"]
        num_tokens = view.new_tokens(output)
        midi = output["midi"]
        details = [
            f"**{score.note_num()} notes**, {num_tokens} new tokens in {seconds:.2f} s "
            f"({entry.label}, seed {options['seed']}"
            + (f", composer {options['composer']}" if "composer" in options else "")
            + ")."
        ]
        details.append(stopped or view.done)
        if output.get("num_dropped_tokens"):
            details.append(f"{output['num_dropped_tokens']} invalid tokens were dropped.")
        result = self._render(score, entry.label, options["seed"], midi, view.marks, roll)
        details = [detail for detail in details if detail]
        result.status = " ".join([*details, *result.status.split("\n"), *notes]).strip()
        result.num_tokens, result.seconds = num_tokens, round(seconds, 3)
        result.piece = Piece(
            label=entry.label,
            token_ids=list(output["token_ids"]),
            midi=midi,
            marks=view.marks,
            status=" ".join([*details, *notes]),
            num_tokens=num_tokens,
            seconds=round(seconds, 3),
            seed=options["seed"],
        )
        return result

    def _render(
        self,
        score: Any,
        label: str,
        seed: int,
        midi: bytes,
        marks: Sequence[float],
        roll: LivePianoRoll | None = None,
    ) -> GenerationResult:
        """Audio, piano roll and MIDI file of a piece; ``status`` holds only what went wrong
        with the audio."""
        problems = []
        audio = None
        if self.audio_off:
            problems.append(f"Audio is off: {self.audio_off}")
        elif score.note_num() == 0:
            problems.append("Nothing to play: the piece has no notes (try a longer piece).")
        else:
            try:
                sample_rate, samples = render_audio(score)
                audio = (sample_rate, (samples * 32767).astype(np.int16))
            except AudioUnavailableError as error:
                problems.append(f"Audio is off: {error}")
        roll = roll or LivePianoRoll(marks=marks)
        return GenerationResult(
            status="\n".join(problems),
            audio=audio,
            piano_roll=roll.draw(score),
            midi_path=str(self._write_midi(midi, label, seed)),
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


class _Writing:
    """A piece written after a primer (or from nothing): how it looks while the model writes,
    and how it is finished when stopped (its open notes closed, see :func:`close_piece`)."""

    done = ""

    def __init__(self, tokenizer: Any, primer_ids: list[int]):
        self.tokenizer = tokenizer
        self.primer_ids = primer_ids
        end = _piece_end(tokenizer, primer_ids)
        self.marks = () if end is None else (end,)

    def progress(self, ids: list[int]) -> str:
        return "Writing"

    def expected_end(self, ids: list[int], score: Any, options: dict[str, Any]) -> float:
        """Where the piece should end (seconds), for the growing roll's time axis: the length
        asked for (the end of the last bar asked for, at the piece's tempo and meter), else
        the music so far scaled by the share of the token budget written."""
        if "duration_seconds" in options:
            return float(options["duration_seconds"])
        if "num_bars" in options:
            return _bar_span(score, 1, int(options["num_bars"]))[1]
        start = self.marks[0] if self.marks else 0.0
        share = len(ids) / max(int(options.get("max_new_tokens") or 0), len(ids), 1)
        return start + (score.to("second").end() - start) / max(share, 0.05)

    def score(self, ids: list[int]):
        tokenizer = self.tokenizer
        return tokenizer.to_score([tokenizer.bos_token_id, *self.primer_ids, *ids], True)[0]

    def new_tokens(self, output: dict[str, Any]) -> int:
        return len(output["token_ids"]) - 1 - len(self.primer_ids)

    def was_cut(self, output: dict[str, Any]) -> bool:
        return output["token_ids"][-1] != self.tokenizer.eos_token_id

    def finish(
        self, generate: Any, output: dict[str, Any], options: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        if options.get("grammar", True):
            output = close_piece(generate, output, options)
        return output, "Stopped: the piece ends where the model was, its open notes closed."


def _track_numbers(values: Sequence[Any] | None) -> list[int] | None:
    """Track numbers picked in the page (ints, or labels such as ``"2: Violin"``)."""
    numbers = []
    for value in values or []:
        text = str(value).split(":", 1)[0].strip()
        if not text.isdigit():
            raise _RequestProblem(
                f"**Unknown track** {_quoted(str(value))}: pick tracks by their number."
            )
        numbers.append(int(text))
    return numbers or None


class _Filling:
    """Bars of a piece being regenerated (infilling): the roll shows the holes filled so far
    (the others empty); stopped, the bars not filled yet keep their notes."""

    def __init__(
        self,
        tokenizer: Any,
        ids: list[int],
        bars: tuple[int, int],
        programs: Any,
        tracks: list[int] | None = None,
    ):
        from ..generation.infilling import InfillVocabulary, build_infill_prompt

        self.tokenizer = tokenizer
        self.vocab = InfillVocabulary(tokenizer)
        self.prompt = build_infill_prompt(
            tokenizer, ids, bars, programs, vocab=self.vocab, tracks=tracks
        )
        self.marks = _bar_span(tokenizer.to_score([*ids]), *bars)
        tracks = len({hole.track for hole in self.prompt.holes})
        self.done = (
            f"Bars {bars[0]}-{bars[1]} of {tracks} track{'s' if tracks > 1 else ''} "
            "regenerated; every other note kept."
        )

    def _fills(self, ids: list[int]) -> list[list[int]]:
        from ..generation.infilling import split_fills

        return split_fills(self.vocab, ids)[: self.prompt.num_holes]

    def expected_end(self, ids: list[int], score: Any, options: dict[str, Any]) -> None:
        """None: the roll shows the whole piece from the start, its limits fit it."""
        return None

    def progress(self, ids: list[int]) -> str:
        done = len(self._fills(ids))
        return f"Filling ({done} of {self.prompt.num_holes} track bars done)"

    def _spliced(self, fills: list[list[int]]):
        from ..generation.infilling import decode_filled, splice_fills

        ids = splice_fills(self.vocab, self.prompt.piece, self.prompt.holes, fills)
        return ids, decode_filled(self.tokenizer, self.vocab, ids)

    def score(self, ids: list[int]):
        return self._spliced(self._fills(ids))[1]

    def new_tokens(self, output: dict[str, Any]) -> int:
        return output["num_generated_tokens"]

    def was_cut(self, output: dict[str, Any]) -> bool:
        return output.get("num_filled_bars", 0) < self.prompt.num_holes

    def finish(
        self, generate: Any, output: dict[str, Any], options: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        from ..generation.infilling import check_fills

        generated = output["infill_token_ids"][output["num_primer_tokens"] + 1 :]
        fills = self._fills(generated)
        kept = self.prompt.original_fills[len(fills) :]
        ids, score = self._spliced([*fills, *kept])
        ends = [i for i, token in enumerate(generated) if token == self.vocab.fill_end]
        complete = generated[: ends[-1] + 1] if ends else []  # the cut fill is left out
        message = (
            f"Stopped after {len(fills)} of {self.prompt.num_holes} track bars: the others keep "
            "their notes."
        )
        finished = {
            **output,
            "token_ids": ids,
            "score": score,
            "midi": bytes(score.dumps_midi()),
            "num_dropped_tokens": check_fills(self.vocab, self.prompt, complete).num_dropped,
        }
        return finished, message


def _bar_span(score: Any, first: int, last: int) -> tuple[float, float]:
    """Where bars ``first``..``last`` (counted from 1) of ``score`` start and end, in seconds,
    from its time signatures (4/4 before any) and tempi."""
    from symusic import Note, Score, Track

    quarter = score.ticks_per_quarter
    meters = sorted((sig.time, sig.numerator, sig.denominator) for sig in score.time_signatures)
    starts, tick = [], 0
    while len(starts) <= last:
        meter = next(((n, d) for t, n, d in reversed(meters) if t <= tick), (4, 4))
        starts.append(tick)
        tick += max(1, round(quarter * 4 * meter[0] / meter[1]))
    marker = Score(quarter)
    marker.tempos = score.tempos.copy()
    track = Track()
    for tick in (starts[first - 1], starts[last]):
        track.notes.append(Note(tick, 1, 60, 1))
    marker.tracks.append(track)
    begin, end = (note.time for note in marker.to("second").tracks[0].notes)
    return float(begin), float(end)


def close_piece(generate: Any, output: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """A piece cut short (Stop) finished as the grammar finishes one at its length limit: the
    fewest tokens that complete what is open (a note's velocity and duration, notes still
    sounding), sampled with the request's ``options`` (its length limits left out).

    Args:
        generate: the ``midi-generation`` pipeline that wrote ``output``.
        output: its result for the cut piece (``token_ids`` with BOS).
        options: the request's pipeline arguments (``programs`` still apply).

    Returns:
        ``output`` itself when nothing is open, else the pipeline's result for the closed piece.
    """
    ids = output["token_ids"]
    grammar = generate.grammar.with_programs(options.get("programs"))
    state = grammar.initial_state(1, torch.device("cpu"))
    for token in ids:
        grammar.advance(state, torch.tensor([token]))
    cost = int(grammar.completion_cost(state)[0])
    if cost <= 0:
        return output
    closing = {k: v for k, v in options.items() if k not in _LENGTH_OPTIONS}
    return generate(torch.tensor(ids, dtype=torch.long), max_new_tokens=cost, **closing)


_LENGTH_OPTIONS = ("num_bars", "duration_seconds", "max_new_tokens")
_LENGTH_NEEDS = {
    "bars": "it needs a tokenization with Bar tokens, such as REMI",
    "seconds": "it needs the grammar without a BPE vocabulary",
}


def control_value(value: Any) -> Any:
    """A control as the pipeline takes it, from what the page sends: ``None`` for "not set"
    (``"any"``, empty), numbers for numeric text (``"12"``, ``"0.5"``), ``(low, high)`` for a
    range (``"1-3"``); anything else as it is (the pipeline checks it)."""
    if (
        value is None
        or value == CONTROL_OFF
        or (isinstance(value, (str, list, tuple)) and not value)
    ):
        return None
    if isinstance(value, str):
        text = value.strip()
        low, dash, high = text.partition("-")
        if dash and low.isdigit() and high.isdigit():
            return int(low), int(high)
        if text.isdigit():
            return int(text)
        with contextlib.suppress(ValueError):
            return float(text)
    return value


def _sampling(request: GenerationRequest) -> dict[str, Any]:
    """The sampling arguments every request has (a random seed for a negative one)."""
    seed = request.seed
    seed = int(seed) if seed is not None and seed >= 0 else random.randrange(MAX_SEED + 1)
    return {
        "temperature": float(request.temperature),
        "top_k": int(request.top_k),  # 0 and 1.0 switch the filters off
        "top_p": float(request.top_p),
        "seed": seed,
        "grammar": bool(request.grammar),
    }


def _whole(value: Any, name: str, low: int, high: int) -> int:
    """``value`` as an integer in ``[low, high]`` (sliders send floats), else a message."""
    number = _number(value, name, low, high)
    if number != int(number):
        raise _RequestProblem(f"**{name}** must be a whole number, got {value!r}.")
    return int(number)


def _number(value: Any, name: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not low <= number <= high:  # NaN fails too
        raise _RequestProblem(f"**{name}** must be between {low:g} and {high:g}, got {value!r}.")
    return number


def _primer_extent(grammar: Any, primer_ids: list[int], unit: str) -> tuple[int, float]:
    """(bars, seconds) of the primer as the grammar counts them (0 without a primer), which
    ``num_bars`` / ``duration_seconds`` include."""
    if not primer_ids:
        return 0, 0.0
    grammar = grammar.with_max_bars(MAX_PRIMER_BARS) if unit == "bars" else grammar
    grammar = grammar.with_max_seconds(1e9) if unit == "seconds" else grammar
    state = grammar.initial_state(1, torch.device("cpu"))
    for token in primer_ids:
        grammar.advance(state, torch.tensor([token]))
    if unit == "bars":
        return int(state.bars[0, 0]), 0.0  # the Bar tokens so far
    return 0, float(state.clock[0, :7:6].max())  # the current time or the latest note end


def _piece_end(tokenizer: Any, primer_ids: list[int]) -> float | None:
    """Where the primer stops sounding (seconds), to mark it on the piano roll."""
    if not primer_ids:
        return None
    primer, _ = tokenizer.to_score([tokenizer.bos_token_id, *primer_ids], True)
    return primer.to("second").end() if primer.note_num() else None


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
        a ``gr.Blocks`` with its queue set up, ready for ``launch()``; the endpoints are
        ``/generate``, ``/continue``, ``/undo`` and ``/stop`` (see :mod:`.page`).
    """
    from .page import build_page

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
    demo = build_page(generator, entries, notices, concurrency_limit)
    demo.queue(default_concurrency_limit=concurrency_limit, max_size=max_queue)
    _refuse_foreign_files(demo, [demo.GRADIO_CACHE])
    if owned_dir is not None:
        _remove_on_close(demo, owned_dir)
    return demo


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
