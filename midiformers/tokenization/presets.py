"""Named miditok configurations for :class:`MidiTokenizer`.

Every preset produces **one token stream** per file (``use_programs=True`` with
``one_token_stream_for_programs=True``) so that a causal language model sees a single
sequence: each note is preceded by (or, with ``program_changes``, follows a change to) a
``Program_x`` token (``mmm``: one ``Program_x`` at the start of each track). Two
consequences, shared by all presets:

* tracks that use the same MIDI program are merged into one track (two violin parts
  come back as one violin track), except with ``mmm``, which keeps every track;
* drum tracks (MIDI channel 10) are kept: their notes carry ``Program_-1`` and dedicated
  ``PitchDrum_x`` / ``DrumOn_x`` tokens (pitches 27-87, the General MIDI drum kit), and
  they decode back to a drum track. Drum notes outside that range are dropped by miditok.

The special tokens are miditok's ``PAD_None`` (id 0), ``BOS_None``, ``EOS_None`` and
``MASK_None`` (``mmm`` adds the infilling tokens and miditok's ``Track_Start`` / ``Track_End``).

Meters and tempi (presets with ``TimeSig`` / ``Tempo`` tokens):

* time signatures :data:`TIME_SIGNATURE_RANGE`: x/2 for x in 1-4 (alla breve, 3/2, 4/2),
  x/4 for x in 1-7, and x/8 for x in 2-12 (5/8, 7/8, 9/8, 12/8 ...). miditok counts time in
  *beats* of the meter's denominator, so the grid is 1/8 beat everywhere: 1/32 note in x/4,
  but 1/16 note in x/2 and 1/64 note in x/8; Duration tokens reach 12 beats (24 quarters in
  x/2, 6 in x/8). A meter outside the range (11/16, 5/16 ...) is dropped by miditok: the
  meter before it goes on (4/4 at the start of a piece), so REMI counts the wrong bars;
  :class:`MidiTokenizer` logs one warning per file naming it.
* tempi :data:`TEMPO_RANGE` (30-480 quarter notes per minute) in :data:`NUM_TEMPOS` = 65
  log-spaced bins, 16 per octave (4.4% apart, so every tempo is within 2.2% of a bin, and 60,
  120 and 240 are bins). MIDI tempi are always per quarter note: 2/2 at half note = 200 is
  400 here. A tempo outside the range becomes the nearest end of it, with the same one
  warning per file.

The ``mmm`` preset is multi-track (MMM, Ens et al., 2020, miditok's ``MMM`` over REMI): each
track is its own ``Track_Start Program_x [track controls] <REMI bars> Track_End`` block (tracks
of the same program stay apart, time restarts at 0 in each), and it adds

* miditok's attribute-control tokens (:data:`ATTRIBUTE_CONTROLS`): track-level ones right after
  ``Program_x``, bar-level ones after a bar's ``Bar TimeSig`` (and ``Position_0 Tempo`` when
  the tempo changes there), before its first note. They appear only when asked for
  (``encode(score, attribute_controls_indexes=...)``, random subsets for training);
* the infilling tokens :data:`INFILL_PLACEHOLDER`, :data:`FILL_START` and :data:`FILL_END`: a
  masked bar reads ``Bar_None TimeSig_x [its tempo and control tokens] Infill_Bar`` in its
  track (meter and tempo stay put), and after the last ``Track_End`` each placeholder gets, in
  order, ``FillBar_Start <the bar's notes, with their Position tokens> FillBar_End``; the
  format in full is in ``midiformers/generation/infilling.py``.

A tokenizer saved by ``save_pretrained`` keeps the ranges it was built with (they are in its
``miditok_config.json``), whatever these defaults become.

This file is copied next to the tokenizer for ``trust_remote_code`` loading: it imports
nothing from midiformers.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import Any

import miditok

__all__ = [
    "ATTRIBUTE_CONTROLS",
    "FILL_END",
    "FILL_START",
    "INFILL_PLACEHOLDER",
    "INFILL_TOKENS",
    "NUM_TEMPOS",
    "PRESETS",
    "TEMPO_RANGE",
    "TIME_SIGNATURE_RANGE",
    "MidiPreset",
    "build_miditok_tokenizer",
    "tokenizer_config_parameters",
]

TIME_SIGNATURE_RANGE: dict[int, list[int]] = {
    2: [1, 2, 3, 4],
    4: [1, 2, 3, 4, 5, 6, 7],
    8: [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
}
"""Meters with a ``TimeSig`` token: denominator -> numerators (miditok's default lacks x/2,
5/8, 7/8, 9/8 and 7/4, which it silently turned into 4/4)."""

TEMPO_RANGE = (30, 480)
"""Tempi with a ``Tempo`` token, in quarter notes per minute (miditok's default is 40-250)."""

NUM_TEMPOS = 65
"""Log-spaced ``Tempo`` bins over :data:`TEMPO_RANGE`: 16 per octave (a ratio of 1.044)."""

_ONE_STREAM = {"use_programs": True, "one_token_stream_for_programs": True}
_TEMPOS = {
    "use_tempos": True,
    "tempo_range": TEMPO_RANGE,
    "num_tempos": NUM_TEMPOS,
    "log_tempos": True,
}
_METERS = {"use_time_signatures": True, "time_signature_range": TIME_SIGNATURE_RANGE}

INFILL_PLACEHOLDER = "Infill_Bar"
"""Stands for a masked bar in its track (``Bar_None Infill_Bar``): its content comes later."""
FILL_START = "FillBar_Start"
"""Opens the content of one masked bar, after the last ``Track_End`` (one per placeholder)."""
FILL_END = "FillBar_End"
"""Closes the content of one masked bar."""
INFILL_TOKENS = (INFILL_PLACEHOLDER, FILL_START, FILL_END)

ATTRIBUTE_CONTROLS = {
    "ac_polyphony_track": True,
    "ac_polyphony_bar": True,
    "ac_pitch_class_bar": True,
    "ac_note_density_track": True,
    "ac_note_density_bar": True,
    "ac_note_duration_bar": True,
    "ac_note_duration_track": True,
    "ac_repetition_track": True,
}
"""Every miditok attribute control (``TokenizerConfig`` switches), as the ``mmm`` preset has them:
onset polyphony (track and bar, 1-6 notes), pitch classes (bar), note density (track and bar,
notes per bar, 18+ the top bin), note durations present (track and bar) and repetition (track,
10 bins over 0-1)."""


@dataclass(frozen=True)
class MidiPreset:
    """A miditok tokenization class and the ``TokenizerConfig`` arguments it is built with."""

    tokenization: str
    config: dict[str, Any] = field(default_factory=dict)
    description: str = ""


PRESETS: dict[str, MidiPreset] = {
    "remi": MidiPreset(
        "REMI",
        {**_ONE_STREAM, **_TEMPOS, **_METERS},
        "REMI (Huang & Yang, 2020), the scheme of the Conformer study: Bar and Position "
        "tokens (8 positions per beat), then Program, Pitch, Velocity (32 bins) and "
        "Duration per note; Tempo (65 log-spaced bins, 30-480 bpm) and TimeSig tokens (x/2, "
        "x/4 and x/8 meters, see TIME_SIGNATURE_RANGE) keep tempo and meter changes. Onsets "
        "are exact to 1/8 beat; durations to 1/8 beat up to 4 beats, 1/4 beat up to 12 beats "
        "(longer notes are cut to 12 beats).",
    ),
    "tsd": MidiPreset(
        "TSD",
        {**_ONE_STREAM, **_TEMPOS, **_METERS},
        "TSD (Time Shift Duration): like REMI but time moves with relative TimeShift tokens "
        "instead of Bar/Position, which gives slightly shorter sequences. Same time, "
        "velocity, tempo and meter resolution as 'remi'.",
    ),
    "midilike": MidiPreset(
        "MIDILike",
        {**_ONE_STREAM, **_TEMPOS, **_METERS},
        "MIDI-Like (Oore et al., 2018): NoteOn / NoteOff / Velocity / TimeShift events as in "
        "a MIDI stream, with Program tokens before each note event, plus Tempo and TimeSig "
        "(same ranges as 'remi'). "
        "Time is exact to 1/8 beat (1/4 beat beyond 4 beats).",
    ),
    "performance": MidiPreset(
        "MIDILike",
        {
            **_ONE_STREAM,
            "program_changes": True,
            "use_velocities": False,
            **_TEMPOS,
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
        "40 ms at 150 bpm). Tempo tokens (65 log-spaced bins, 30-480 bpm) keep the decoded timing in "
        "seconds close to the original; pass use_tempos=False for pure study-style events "
        "(everything then decodes at 120 bpm). No time-signature tokens: beats are quarter "
        "notes and files decode in 4/4.",
    ),
    "mmm": MidiPreset(
        "MMM",
        {
            "base_tokenizer": "REMI",
            **_ONE_STREAM,
            **_TEMPOS,
            **_METERS,
            "special_tokens": ["PAD", "BOS", "EOS", "MASK", *INFILL_TOKENS],
            **ATTRIBUTE_CONTROLS,
        },
        "MMM (Ens & Pasquier, 2020) over REMI: one Track_Start Program_x ... Track_End block "
        "per track (same time, velocity, tempo and meter resolution as 'remi'; tracks of the "
        "same program stay apart), with miditok's attribute-control tokens (note density, "
        "onset polyphony, pitch classes, note durations per bar or track, repetition per "
        "track) for controlled generation and Infill_Bar / FillBar_Start / FillBar_End tokens "
        "for infilling masked bars.",
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
    # a deep copy: miditok keeps the mappings it is given, and the preset must not change
    config = miditok.TokenizerConfig(**copy.deepcopy({**spec.config, **overrides}))
    return getattr(miditok, spec.tokenization)(config)
