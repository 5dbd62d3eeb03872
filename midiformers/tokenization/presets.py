"""Named miditok configurations for :class:`MidiTokenizer`.

Every preset produces **one token stream** per file (``use_programs=True`` with
``one_token_stream_for_programs=True``) so that a causal language model sees a single
sequence: each note is preceded by (or, with ``program_changes``, follows a change to) a
``Program_x`` token. Two consequences, shared by all presets:

* tracks that use the same MIDI program are merged into one track (two violin parts
  come back as one violin track);
* drum tracks (MIDI channel 10) are kept: their notes carry ``Program_-1`` and dedicated
  ``PitchDrum_x`` / ``DrumOn_x`` tokens (pitches 27-87, the General MIDI drum kit), and
  they decode back to a drum track. Drum notes outside that range are dropped by miditok.

The special tokens are miditok's ``PAD_None`` (id 0), ``BOS_None``, ``EOS_None`` and
``MASK_None``.

This file is copied next to the tokenizer for ``trust_remote_code`` loading: it imports
nothing from midiformers.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import miditok

__all__ = ["PRESETS", "MidiPreset", "build_miditok_tokenizer", "tokenizer_config_parameters"]

_ONE_STREAM = {"use_programs": True, "one_token_stream_for_programs": True}


@dataclass(frozen=True)
class MidiPreset:
    """A miditok tokenization class and the ``TokenizerConfig`` arguments it is built with."""

    tokenization: str
    config: dict[str, Any] = field(default_factory=dict)
    description: str = ""


PRESETS: dict[str, MidiPreset] = {
    "remi": MidiPreset(
        "REMI",
        {**_ONE_STREAM, "use_tempos": True, "use_time_signatures": True},
        "REMI (Huang & Yang, 2020), the scheme of the Conformer study: Bar and Position "
        "tokens (8 positions per beat), then Program, Pitch, Velocity (32 bins) and "
        "Duration per note; Tempo (32 bins, 40-250 bpm) and TimeSig tokens keep tempo and "
        "meter changes. Onsets are exact to 1/8 beat; durations to 1/8 beat up to 4 beats, "
        "1/4 beat up to 12 beats (longer notes are cut to 12 beats).",
    ),
    "tsd": MidiPreset(
        "TSD",
        {**_ONE_STREAM, "use_tempos": True, "use_time_signatures": True},
        "TSD (Time Shift Duration): like REMI but time moves with relative TimeShift tokens "
        "instead of Bar/Position, which gives slightly shorter sequences. Same time, "
        "velocity, tempo and meter resolution as 'remi'.",
    ),
    "midilike": MidiPreset(
        "MIDILike",
        {**_ONE_STREAM, "use_tempos": True, "use_time_signatures": True},
        "MIDI-Like (Oore et al., 2018): NoteOn / NoteOff / Velocity / TimeShift events as in "
        "a MIDI stream, with Program tokens before each note event, plus Tempo and TimeSig. "
        "Time is exact to 1/8 beat (1/4 beat beyond 4 beats).",
    ),
    "performance": MidiPreset(
        "MIDILike",
        {
            **_ONE_STREAM,
            "program_changes": True,
            "use_velocities": False,
            "use_tempos": True,
            "use_time_signatures": False,
            "beat_res": {(0, 10): 10},
        },
        "The event scheme of the LSTM study (NOTE_ON_p / NOTE_OFF_p / TIME_SHIFT_k with "
        "50 ms steps up to 5 s, all instruments flattened into one timeline, no velocity): "
        "miditok's NoteOn / NoteOff / TimeShift tokens, velocity off by default (pass "
        "use_velocities=True to add 32-bin Velocity tokens; without them notes decode at "
        "velocity 100, as in the study), a Program token only when the instrument changes. "
        "miditok measures time in beats, not seconds: TimeShift steps are 1/10 beat, up to "
        "10 beats per token (100 values, like the study's TIME_SHIFT_1..100). That is "
        "exactly 50 ms at 120 bpm; at tempo T the step is 6000/T ms (62.5 ms at 96 bpm, "
        "40 ms at 150 bpm). Tempo tokens (32 bins, 40-250 bpm) keep the decoded timing in "
        "seconds close to the original; pass use_tempos=False for pure study-style events "
        "(everything then decodes at 120 bpm). No time-signature tokens: beats are quarter "
        "notes and files decode in 4/4.",
    ),
    "structured": MidiPreset(
        "Structured",
        dict(_ONE_STREAM),
        "Structured (Hadjeres & Crestel, 2021): a fixed TimeShift / Program / Pitch / "
        "Velocity / Duration cycle per note, so every position of the cycle has one token "
        "type (easy to constrain). No tempo or time-signature tokens: tempo and meter are "
        "not kept (decoded files play at 120 bpm in 4/4).",
    ),
}


def tokenizer_config_parameters() -> frozenset[str]:
    """Names of the keyword arguments of ``miditok.TokenizerConfig``."""
    parameters = inspect.signature(miditok.TokenizerConfig.__init__).parameters
    return frozenset(name for name in parameters if name not in ("self", "kwargs"))


def build_miditok_tokenizer(preset: str = "remi", **overrides: Any) -> miditok.MusicTokenizer:
    """Create the miditok tokenizer of a preset, with ``TokenizerConfig`` overrides applied."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {sorted(PRESETS)}.")
    spec = PRESETS[preset]
    config = miditok.TokenizerConfig(**{**spec.config, **overrides})
    return getattr(miditok, spec.tokenization)(config)
