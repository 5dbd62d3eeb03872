"""The ``midi-generation`` pipeline: a primer (or nothing) in, a valid MIDI piece out.

::

    import midiformers  # registers the task
    from transformers import pipeline

    generator = pipeline("midi-generation", model=model, tokenizer=tokenizer)
    piece = generator("primer.mid", max_new_tokens=512, top_k=32, seed=0)
    piece["score"].dump_midi("continuation.mid")   # or piece["midi"]: the file's bytes
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from symusic.core import ScoreTick
from transformers import AutoModelForCausalLM, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .controls import control_token_ids
from .grammar import MidiGrammar
from .infilling import (
    InfillPrompt,
    InfillVocabulary,
    build_infill_prompt,
    check_bar_range,
    check_fills,
    check_infilling_tokenizer,
    check_track_numbers,
    decode_filled,
    resolve_infill_programs,
    splice_fills,
    split_fills,
)
from .sampling import check_generation_options, generate_long
from .sampling import context_length as model_context_length
from .validation import check_sequence

__all__ = ["TASK", "MidiGenerationPipeline", "register_pipeline"]

TASK = "midi-generation"
_PRIMER_TYPES = (str, os.PathLike, bytes, bytearray, memoryview, ScoreTick, torch.Tensor)
TOKENS_PER_BAR = 128
"""Default token budget per bar with ``num_bars`` (the grammar ends the piece at the last bar)."""
TOKENS_PER_SECOND = 96
"""Default token budget per second with ``duration_seconds``."""


class MidiGenerationPipeline(Pipeline):
    """Generate a MIDI piece, or continue a primer, with a midiformers model and tokenizer.

    Input: ``None`` (start from scratch), a MIDI path, MIDI bytes, a ``symusic.Score``, a 1-D
    tensor of token ids, or a list of these. A primer longer than the model's context is
    continued from its last tokens (the grammar still sees all of it), and pieces longer than
    the context are generated with a sliding window (see :mod:`.sampling`).

    Parameters (at construction or per call):
        max_new_tokens (default 256), temperature, top_k, top_p, do_sample (default True),
        seed (reproducible sampling without touching the global RNG), composer (name or id, for
        composer-conditioned models), grammar (default True: only tokens that keep the piece
        valid, closed cleanly at the limit), num_bars (REMI tokenizers: every piece ends after
        exactly this many bars, primer included; ``max_new_tokens`` then defaults to
        :data:`TOKENS_PER_BAR` per bar and only caps the length), duration_seconds (every
        piece, primer included, ends at about this many seconds: no note sounds past it and the
        last one ends within one beat of it; every tokenizer without BPE; ``max_new_tokens``
        then defaults to :data:`TOKENS_PER_SECOND` per second), programs (the instruments
        new notes may use: General MIDI program numbers 0-127, -1 for drums, or names such as
        ``"Acoustic Grand Piano"`` / ``"drums"``; every preset has Program tokens),
        num_return_sequences,
        context_length / stride (sliding window; default: the model's :func:`context_length`,
        half of it), infill_bars / infill_programs / infill_tracks (infilling, ``mmm``
        tokenizers: regenerate bars ``(a, b)``, counted from 1 and both included, of the tracks
        playing ``infill_programs`` (numbers or names as for ``programs``; default: every
        track) of the primer, keeping every other note; or of the tracks ``infill_tracks``
        instead (track numbers counted from 1 in the piece's order, the order of its
        ``Track_Start`` blocks: one voice of a chorale whose four voices share program 0; not
        with ``infill_programs``); ``infill_programs`` or ``infill_tracks`` alone regenerates
        whole tracks; ``max_new_tokens`` then defaults to :data:`TOKENS_PER_BAR` + 2 per masked
        bar; see :mod:`.infilling`), density / polyphony / pitch_classes / durations / repetition
        (attribute controls, tokenizers with miditok attribute controls such as ``mmm``: the
        grammar writes the matching control tokens into every track and every bar with notes;
        values and ranges in :data:`.controls.CONTROLS`, e.g. ``density="high"``,
        ``polyphony=(1, 3)``, ``pitch_classes=["C", "E", "G"]``).

    Every option is checked before anything is generated (a one-line ``ValueError`` naming it
    and its valid range, see :func:`.check_generation_options`), and so are primer ids.

    Output: a dict per piece with ``score`` (``symusic.Score``), ``midi`` (the MIDI file's
    bytes), ``token_ids`` (primer + generated, with the framing BOS/EOS), ``num_primer_tokens``,
    ``num_generated_tokens``, ``num_dropped_tokens`` (ids that do not decode into music as
    written, see :func:`check_sequence`) and ``num_notes``; a list of dicts with
    ``num_return_sequences > 1``. Infilling: ``score``, ``midi``, ``token_ids`` and
    ``num_notes`` are the filled piece's, ``infill_token_ids`` is what the model read and
    wrote (the prompt with placeholders, the fills, EOS), ``num_filled_bars`` counts the fills
    written and ``num_dropped_tokens`` the generated ids that break the fill rules
    (:func:`.check_fills`).
    """

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.tokenizer is None or not hasattr(self.tokenizer, "miditok"):
            raise ValueError(
                "The midi-generation pipeline needs a midiformers MidiTokenizer "
                f"(got {type(self.tokenizer).__name__})."
            )
        self._grammar: MidiGrammar | None = getattr(self, "_grammar", None)

    @property
    def grammar(self) -> MidiGrammar:
        """The tokenizer's grammar, compiled once per pipeline."""
        if getattr(self, "_grammar", None) is None:  # also read while the base class sets up
            self._grammar = MidiGrammar.for_tokenizer(self.tokenizer)
        return self._grammar

    def __call__(self, inputs: Any = None, **kwargs: Any) -> Any:
        """Generate from ``inputs`` (``None``: from scratch); see the class docstring."""
        return super().__call__(inputs, **kwargs)

    # ------------------------------------------------------------------ parameters

    def _sanitize_parameters(
        self,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        do_sample: bool | None = None,
        seed: int | None = None,
        composer: Any = None,
        grammar: bool | None = None,
        num_bars: int | None = None,
        programs: Any = None,
        duration_seconds: float | None = None,
        num_return_sequences: int | None = None,
        context_length: int | None = None,
        stride: int | None = None,
        infill_bars: Any = None,
        infill_programs: Any = None,
        infill_tracks: Any = None,
        density: Any = None,
        polyphony: Any = None,
        pitch_classes: Any = None,
        durations: Any = None,
        repetition: Any = None,
        **generate_kwargs: Any,
    ) -> tuple[dict, dict, dict]:
        forward: dict[str, Any] = dict(generate_kwargs)
        controls = {
            "density": density,
            "polyphony": polyphony,
            "pitch_classes": pitch_classes,
            "durations": durations,
            "repetition": repetition,
        }
        controls = {k: v for k, v in controls.items() if v is not None}
        options = {
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "do_sample": do_sample,
            "seed": seed,
            "grammar": grammar,
            "num_return_sequences": num_return_sequences,
            "context_length": context_length,
            "stride": stride,
        }
        forward.update({k: v for k, v in options.items() if v is not None})
        check_generation_options(**forward, **controls)  # fail before any primer is read
        infill = {"bars": infill_bars, "programs": infill_programs, "tracks": infill_tracks}
        infilling = any(value is not None for value in infill.values())
        if controls:
            forward["controls"] = self._control_ids(controls, grammar, infilling)
        if composer is not None:
            forward["composer"] = self._composer_ids(composer)
        if num_bars is not None and duration_seconds is not None:
            raise ValueError("Give num_bars or duration_seconds, not both.")
        if num_bars is not None:
            if grammar is False:
                raise ValueError("num_bars needs the grammar: leave grammar=True.")
            self.grammar.with_max_bars(num_bars)  # a scheme without bars or a bad count fails now
            forward["num_bars"] = num_bars
        if duration_seconds is not None:
            if grammar is False:
                raise ValueError("duration_seconds needs the grammar: leave grammar=True.")
            self.grammar.with_max_seconds(duration_seconds)  # BPE or a bad value fails now
            forward["duration_seconds"] = duration_seconds
        if programs is not None:
            if grammar is False:
                raise ValueError("programs needs the grammar: leave grammar=True.")
            forward["programs"] = self.grammar.with_programs(programs).programs  # checked now
        preprocess: dict[str, Any] = {}
        if infilling:
            preprocess = self._infill_options(**infill, forward=forward)
            forward["infill"] = True
        return preprocess, forward, {}

    def _infill_options(
        self, bars: Any, programs: Any, tracks: Any, forward: dict[str, Any]
    ) -> dict:
        """Check the infilling options now (one-line errors); the bars and tracks against the
        piece are checked when the primer is read."""
        check_infilling_tokenizer(self.tokenizer)
        if programs is not None and tracks is not None:
            raise ValueError("Give infill_programs or infill_tracks, not both.")
        clashing = [k for k in ("num_bars", "duration_seconds", "programs") if k in forward]
        if "composer" in forward:
            clashing.append("composer")
        if forward.get("num_beams", 1) > 1:
            clashing.append("num_beams")
        if clashing:
            raise ValueError(
                f"infill_bars / infill_programs / infill_tracks cannot be combined with "
                f"{', '.join(clashing)}."
            )
        return {
            "infill_bars": None if bars is None else check_bar_range(bars),
            "infill_programs": None if programs is None else resolve_infill_programs(programs),
            "infill_tracks": None if tracks is None else check_track_numbers(tracks),
            "max_new_tokens": forward.get("max_new_tokens"),
            "window": forward.get("context_length", -1),
        }

    @property
    def infill_vocabulary(self) -> InfillVocabulary:
        """The tokenizer's infilling tokens, read once per pipeline."""
        if getattr(self, "_infill_vocabulary", None) is None:
            self._infill_vocabulary = InfillVocabulary(self.tokenizer)
        return self._infill_vocabulary

    def _control_ids(
        self, controls: dict[str, Any], grammar: Any, infilling: bool
    ) -> tuple[list[int], list[int]]:
        """Attribute controls -> (track, bar) control token ids, checked against the
        tokenizer now (see :mod:`.controls`)."""
        names = ", ".join(controls)
        if grammar is False:
            raise ValueError(f"{names} needs the grammar: leave grammar=True.")
        if infilling:
            raise ValueError(
                f"{names} cannot be combined with infill_bars / infill_programs / infill_tracks."
            )
        return control_token_ids(self.tokenizer, **controls)

    def _grammar_for(
        self, num_bars: int | None, programs: Any, seconds: Any, controls: Any = None
    ) -> MidiGrammar:
        grammar = self.grammar.with_max_bars(num_bars).with_programs(programs)
        if controls is not None:
            grammar = grammar.with_controls(*controls)
        return grammar.with_max_seconds(seconds)

    def _composer_ids(self, composer: Any) -> torch.LongTensor:
        """Composer ids, checked now so that a wrong name fails before any generation."""
        if not hasattr(self.model, "composer_ids"):
            raise ValueError(
                f"composer= needs a composer-conditioned model (MidiVAEForConditionalGeneration); "
                f"{type(self.model).__name__} has no composers."
            )
        return self.model.composer_ids(composer)

    # ------------------------------------------------------------------ steps

    def preprocess(self, inputs: Any, **infill: Any) -> dict[str, Any]:
        """Primer -> ``BOS`` + its token ids (no EOS: the piece goes on); infilling: the
        prompt with placeholders (see :func:`.build_infill_prompt`)."""
        if infill:
            return self._infill_prompt(inputs, **infill)
        if inputs is None:
            primer: list[int] = []
        elif isinstance(inputs, torch.Tensor):
            if inputs.dim() != 1:
                raise ValueError("A primer given as token ids must be a 1-D tensor.")
            primer = [int(i) for i in inputs.tolist()]
            size = len(self.tokenizer)
            bad = next((i for i in primer if not 0 <= i < size), None)
            if bad is not None:
                raise ValueError(
                    f"primer: token id {bad} is outside the tokenizer's vocabulary "
                    f"(ids 0-{size - 1}, vocab size {size})."
                )
            special = {self.tokenizer.bos_token_id, self.tokenizer.eos_token_id}
            primer = [i for i in primer if i not in special]
        elif isinstance(inputs, _PRIMER_TYPES):
            primer = self.tokenizer.encode_midi(inputs)
        else:
            raise TypeError(
                "midi-generation takes a MIDI path, MIDI bytes, a symusic.Score, a 1-D tensor of "
                f"token ids or None, got {type(inputs).__name__}."
            )
        ids = [self.tokenizer.bos_token_id, *primer]
        return {"input_ids": torch.tensor([ids], dtype=torch.long)}

    def _infill_prompt(
        self,
        inputs: Any,
        infill_bars: tuple[int, int] | None,
        infill_programs: tuple[int, ...] | None,
        infill_tracks: tuple[int, ...] | None,
        max_new_tokens: int | None,
        window: int | None,
    ) -> dict[str, Any]:
        if inputs is None:
            raise ValueError(
                "infill_bars / infill_programs / infill_tracks need a primer: the piece to infill."
            )
        if not isinstance(inputs, _PRIMER_TYPES):
            raise TypeError(
                "Infilling takes a MIDI path, MIDI bytes, a symusic.Score or token ids, got "
                f"{type(inputs).__name__}."
            )
        if window == -1:
            window = model_context_length(self.model)
        # the bars around the holes that fit the window with room for the fills
        reserve = max_new_tokens if max_new_tokens is not None else (window or 0) // 2
        prompt = build_infill_prompt(
            self.tokenizer,
            inputs,
            bars=infill_bars,
            programs=infill_programs,
            tracks=infill_tracks,
            max_length=window,
            reserve=reserve,
            vocab=self.infill_vocabulary,
        )
        if max_new_tokens is None:
            max_new_tokens = (TOKENS_PER_BAR + 2) * prompt.num_holes + 1
        needed = 2 * prompt.num_holes + 1
        if max_new_tokens < needed:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} cannot hold the {prompt.num_holes} fills and "
                f"EOS (at least {needed} tokens)."
            )
        return {
            "input_ids": torch.tensor([prompt.input_ids], dtype=torch.long),
            "infill": prompt,
            "max_new_tokens": max_new_tokens,
        }

    def _forward(self, model_inputs: dict[str, Any], **options: Any) -> dict[str, Any]:
        prompt = model_inputs["input_ids"]
        infill: InfillPrompt | None = model_inputs.get("infill")
        if options.pop("infill", False):
            options["max_new_tokens"] = model_inputs["max_new_tokens"]
        count = options.pop("num_return_sequences", 1)
        prompt = prompt.repeat(count, 1)
        seed = options.pop("seed", None)
        use_grammar = options.pop("grammar", True)
        window = options.pop("context_length", -1)
        stride = options.pop("stride", None)
        num_bars = options.pop("num_bars", None)
        programs = options.pop("programs", None)
        seconds = options.pop("duration_seconds", None)
        controls = options.pop("controls", None)
        default_budget = 256 if num_bars is None else TOKENS_PER_BAR * num_bars
        if seconds is not None:
            default_budget = max(default_budget, math.ceil(TOKENS_PER_SECOND * seconds))
        max_new_tokens = options.pop("max_new_tokens", default_budget)
        options.setdefault("do_sample", True)
        self._condition(options, prompt)
        grammar = None
        if use_grammar:  # infilling: the mmm grammar writes one fill per placeholder, then EOS
            grammar = self._grammar_for(num_bars, programs, seconds, controls)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            sequences = generate_long(
                self.model,
                prompt,
                max_new_tokens,
                grammar=grammar,
                window=window,
                stride=stride,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                **options,
            )
        return {
            "sequences": sequences.cpu(),
            "num_primer_tokens": prompt.shape[1] - 1,
            "infill": infill,
        }

    def _condition(self, options: dict[str, Any], prompt: torch.Tensor) -> None:
        """Composer models: draw one latent per row now, so every window decodes the same z."""
        composer = options.pop("composer", None)
        if not hasattr(self.model, "composer_ids"):
            return
        if composer is None:
            posterior = self.model.encode(prompt.to(self.model.device))
            latent = posterior.mu
            composer = self.model.model.resolve_composers(None, posterior.mu, posterior.logvar)
        else:
            if composer.numel() == 1:
                composer = composer.repeat(prompt.shape[0])
            latent = self.model.sample_latent(composer)
        options["latent"] = latent
        options["composer"] = composer

    def postprocess(self, model_outputs: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]]:
        infill = model_outputs.get("infill")
        pieces = [
            self._piece(row, model_outputs["num_primer_tokens"])
            if infill is None
            else self._filled_piece(row, infill)
            for row in model_outputs["sequences"].tolist()
        ]
        return pieces[0] if len(pieces) == 1 else pieces

    def _piece(self, ids: list[int], num_primer_tokens: int) -> dict[str, Any]:
        pad = self.tokenizer.pad_token_id
        while ids and ids[-1] == pad:
            ids.pop()
        score, _ = self.tokenizer.to_score(ids, return_report=True)  # drops are reported below
        check = check_sequence(self.tokenizer, ids)
        return {
            "score": score,
            "midi": bytes(score.dumps_midi()),
            "token_ids": ids,
            "num_primer_tokens": num_primer_tokens,
            "num_generated_tokens": len(ids) - 1 - num_primer_tokens,
            "num_dropped_tokens": check.num_dropped,
            "num_notes": score.note_num(),
        }

    def _filled_piece(self, ids: list[int], infill: InfillPrompt) -> dict[str, Any]:
        """The primer with the generated fills spliced into its holes."""
        pad = self.tokenizer.pad_token_id
        while ids and ids[-1] == pad:
            ids.pop()
        vocab = self.infill_vocabulary
        generated = ids[len(infill.input_ids) :]
        fills = split_fills(vocab, generated)
        filled = splice_fills(vocab, infill.piece, infill.holes, fills)
        score = decode_filled(self.tokenizer, vocab, filled)
        return {
            "score": score,
            "midi": bytes(score.dumps_midi()),
            "token_ids": filled,
            "infill_token_ids": ids,
            "num_primer_tokens": len(infill.input_ids) - 1,
            "num_generated_tokens": len(generated),
            "num_filled_bars": len(fills),
            "num_dropped_tokens": check_fills(vocab, infill, generated).num_dropped,
            "num_notes": score.note_num(),
        }


def register_pipeline() -> None:
    """Make ``pipeline("midi-generation", ...)`` available (done by ``import midiformers``)."""
    if TASK in PIPELINE_REGISTRY.get_supported_tasks():
        return
    PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=MidiGenerationPipeline, pt_model=AutoModelForCausalLM, type="text"
    )
