"""Hearing and seeing MIDI: audio rendering with a General MIDI SoundFont, and piano rolls.

The renderer is symusic's synthesizer with MuseScore General Lite. Both choices come from
measurements: symusic 0.6.0's ``Synthesizer.render`` fails on every call while 0.5.9 works
(the ``app`` extra pins it), and symusic plays ``FluidR3_GM`` and ``TimGM6mb`` up to 23
semitones off (symusic issue #55) but MuseScore General Lite within a tenth of a semitone
(``tests/test_audio.py`` checks the pitch of rendered notes with an FFT). symusic's own
SoundFont download needs the network, so a SoundFont file is always passed explicitly.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

import numpy as np
from symusic.core import ScoreTick

__all__ = [
    "DEFAULT_SAMPLE_RATE",
    "SOUNDFONT_ENV",
    "SOUNDFONT_PATHS",
    "AudioUnavailableError",
    "audio_problem",
    "find_soundfont",
    "piano_roll",
    "render_audio",
]

SOUNDFONT_ENV = "MIDIFORMERS_SOUNDFONT"
"""Environment variable naming a SoundFont (``.sf2`` / ``.sf3``) to use instead of the default."""

SOUNDFONT_PATHS = (
    Path("/usr/share/sounds/sf3/MuseScore_General_Lite.sf3"),  # musescore-general-soundfont-small
)
"""SoundFonts that symusic is known to render at the right pitch, in order of preference."""

SOUNDFONT_HELP = (
    "install the MuseScore General Lite SoundFont (Debian/Ubuntu: "
    "`apt-get install musescore-general-soundfont-small`) or set "
    f"{SOUNDFONT_ENV} to a General MIDI .sf2/.sf3 file"
)

DEFAULT_SAMPLE_RATE = 22050
"""Enough for a piano (partials above 11 kHz are weak) at half the size of CD audio."""

_PEAK = 0.9  # normalised peak level, leaving a little headroom
_RENDER_LOCK = threading.Lock()  # one synthesizer object is shared by the server's threads


class AudioUnavailableError(RuntimeError):
    """Audio cannot be rendered here (no SoundFont, or a broken synthesizer); says why."""


def find_soundfont() -> Path | None:
    """The SoundFont to render with: ``$MIDIFORMERS_SOUNDFONT``, else the first known good one."""
    override = os.environ.get(SOUNDFONT_ENV)
    if override:
        return Path(override)
    return next((path for path in SOUNDFONT_PATHS if path.is_file()), None)


@functools.lru_cache(maxsize=2)
def _synthesizer(sf_path: Path, sample_rate: int):
    """Loading a SoundFont takes most of a short render's time: keep the last two."""
    from symusic import Synthesizer

    try:
        return Synthesizer(sf_path=str(sf_path), sample_rate=sample_rate)
    except Exception as error:  # symusic raises RuntimeError / ValueError with its own wording
        raise AudioUnavailableError(f"cannot load the SoundFont {sf_path}: {error}") from None


def render_audio(
    score: ScoreTick,
    sf_path: str | os.PathLike | None = None,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
) -> tuple[int, np.ndarray]:
    """Render a score to stereo audio, peak-normalised.

    Returns ``(sample_rate, samples)`` with ``samples`` a float32 array of shape ``(N, 2)``
    in ``[-1, 1]``, the layout ``gradio.Audio`` and most audio libraries expect (symusic
    returns ``(2, N)`` with peaks above 1). A score without notes gives ``N == 0``.

    Raises:
        AudioUnavailableError: no SoundFont was found or given, the file is missing or
            unreadable, or the installed symusic cannot render (0.6.0).
    """
    path = Path(sf_path) if sf_path is not None else find_soundfont()
    if path is None:
        raise AudioUnavailableError(f"no General MIDI SoundFont found: {SOUNDFONT_HELP}")
    if not path.is_file():
        raise AudioUnavailableError(f"SoundFont {path} does not exist: {SOUNDFONT_HELP}")
    synthesizer = _synthesizer(path, sample_rate)
    if score.note_num() == 0:  # symusic refuses scores without notes
        return sample_rate, np.zeros((0, 2), dtype=np.float32)
    try:
        with _RENDER_LOCK:
            audio = synthesizer.render(score, stereo=True)
    except TypeError as error:  # symusic 0.6.0: pybind cannot convert the returned buffer
        raise AudioUnavailableError(
            f"this symusic version cannot render audio ({error}); "
            'install symusic 0.5.9 (`pip install "midiformers[app]"`)'
        ) from None
    samples = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).T)
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak > 0:
        samples *= _PEAK / peak
    return sample_rate, samples


def audio_problem(sf_path: str | os.PathLike | None = None) -> str | None:
    """Why audio cannot be rendered here (no SoundFont, a broken symusic), or ``None`` if it can.

    Renders one short note, so a demo can say up front that audio is off and why.
    """
    from symusic import Note, Score, Track

    score = Score(480)
    track = Track(program=0, is_drum=False)
    track.notes.append(Note(0, 240, 69, 64))
    score.tracks.append(track)
    try:
        render_audio(score, sf_path=sf_path)
    except AudioUnavailableError as error:
        return str(error)
    return None


def piano_roll(
    score: ScoreTick,
    split_time: float | None = None,
    width: float = 10.0,
    height: float = 3.5,
    dpi: int = 100,
) -> np.ndarray:
    """Draw the notes of ``score`` (time in seconds, one colour per track) as an RGB image.

    ``split_time`` (seconds) draws a dashed line, e.g. where the primer ends and the
    generated continuation begins. Returns a ``(H, W, 3)`` uint8 array.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure  # no pyplot: thread-safe inside a web server

    figure = Figure(figsize=(width, height), dpi=dpi, layout="tight")
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    seconds = score.to("second")
    low, high = 127, 0
    for index, track in enumerate(seconds.tracks):
        notes = track.notes.numpy()
        if len(notes["time"]) == 0:
            continue
        low, high = min(low, int(notes["pitch"].min())), max(high, int(notes["pitch"].max()))
        axes.add_collection(
            PolyCollection(_note_boxes(notes), facecolors=f"C{index % 10}", edgecolors="none")
        )
    if low > high:  # no notes: an empty octave around middle C
        low, high = 60, 72
    if split_time is not None:
        axes.axvline(split_time, color="0.3", linestyle="--", linewidth=1)
    axes.set_xlim(0, max(seconds.end(), 1e-3))
    axes.set_ylim(low - 2, high + 3)
    axes.set_xlabel("time (s)")
    axes.set_ylabel("MIDI pitch")
    axes.grid(axis="y", alpha=0.3)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _note_boxes(notes: dict[str, np.ndarray]) -> np.ndarray:
    """One rectangle (4 vertices) per note: from onset to offset, 0.9 semitone high."""
    start = notes["time"].astype(np.float64)
    end = start + np.maximum(notes["duration"].astype(np.float64), 1e-3)
    bottom = notes["pitch"].astype(np.float64)
    top = bottom + 0.9
    return np.stack(
        [
            np.stack(corner, axis=-1)
            for corner in ((start, bottom), (end, bottom), (end, top), (start, top))
        ],
        axis=1,
    )
