"""Audio rendering (pitch-true, normalised, Gradio layout) and piano-roll images."""

from __future__ import annotations

import math

import numpy as np
import pytest
from symusic import Note, Score, Track

from midiformers.audio import (
    SOUNDFONT_ENV,
    AudioUnavailableError,
    find_soundfont,
    piano_roll,
    render_audio,
)

SAMPLE_RATE = 22050


def single_note_score(pitch: int, program: int = 0, seconds: float = 1.5) -> Score:
    """One note at 120 bpm (480 ticks per quarter, so 960 ticks per second)."""
    score = Score(480)
    track = Track(program=program, is_drum=False)
    track.notes.append(Note(0, int(seconds * 960), pitch, 100))
    score.tracks.append(track)
    return score


def render_or_skip(score: Score) -> np.ndarray:
    if find_soundfont() is None:
        pytest.skip("no SoundFont: apt-get install musescore-general-soundfont-small")
    try:
        return render_audio(score, sample_rate=SAMPLE_RATE)[1]
    except AudioUnavailableError as error:
        if "cannot render" in str(error):
            pytest.skip(f"the installed symusic cannot render audio: {error}")
        raise


def fundamental_hz(samples: np.ndarray, sample_rate: int) -> float:
    """The lowest strong spectral peak of the sustained part of a note (Hann window, FFT).

    A piano's fundamental is not always its loudest partial, so take the lowest peak that
    reaches a fifth of the strongest one, refined by parabolic interpolation.
    """
    mono = samples.mean(axis=1)
    segment = mono[int(0.1 * sample_rate) : int(1.1 * sample_rate)]
    size = 1 << 17  # zero-padding: 0.17 Hz bins
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment)), n=size))
    freqs = np.fft.rfftfreq(size, 1 / sample_rate)
    band = (freqs > 40) & (freqs < 5000)
    threshold = 0.2 * spectrum[band].max()
    for k in np.flatnonzero(band):
        if (
            spectrum[k] >= threshold
            and spectrum[k] >= spectrum[k - 1]
            and spectrum[k] >= spectrum[k + 1]
        ):
            left, centre, right = np.log(spectrum[k - 1 : k + 2] + 1e-12)
            shift = 0.5 * (left - right) / (left - 2 * centre + right)
            return float((k + shift) * sample_rate / size)
    raise AssertionError("no spectral peak found")


@pytest.mark.parametrize(("name", "pitch"), [("A4", 69), ("C3", 48)])
def test_rendered_piano_note_has_the_right_pitch(name: str, pitch: int) -> None:
    samples = render_or_skip(single_note_score(pitch))
    expected = 440.0 * 2 ** ((pitch - 69) / 12)
    measured = fundamental_hz(samples, SAMPLE_RATE)
    cents = 1200 * math.log2(measured / expected)
    assert abs(cents) < 50, (
        f"{name}: {measured:.1f} Hz, expected {expected:.1f} Hz ({cents:+.0f} cents)"
    )


def test_render_is_normalised_stereo_in_gradio_layout() -> None:
    score = single_note_score(60)
    score.tracks[0].notes.append(Note(0, 960, 64, 127))
    score.tracks[0].notes.append(Note(0, 960, 67, 127))
    samples = render_or_skip(score)
    assert samples.dtype == np.float32
    assert samples.ndim == 2 and samples.shape[1] == 2 and samples.shape[0] > SAMPLE_RATE
    assert np.abs(samples).max() == pytest.approx(0.9, abs=1e-4)


def test_missing_soundfont_raises_a_clear_error(monkeypatch, tmp_path) -> None:
    missing = tmp_path / "nowhere.sf3"
    monkeypatch.setenv(SOUNDFONT_ENV, str(missing))
    assert find_soundfont() == missing
    with pytest.raises(AudioUnavailableError, match="nowhere.sf3 does not exist.*soundfont-small"):
        render_audio(single_note_score(60))


def test_unreadable_soundfont_names_the_file(tmp_path) -> None:
    bogus = tmp_path / "bogus.sf2"
    bogus.write_bytes(b"not a soundfont")
    with pytest.raises(AudioUnavailableError, match="bogus.sf2"):
        render_audio(single_note_score(60), sf_path=bogus)


def test_piano_roll_draws_each_note_at_its_pitch_and_time() -> None:
    score = Score(480)
    track = Track(program=0, is_drum=False)
    track.notes.append(Note(0, 960, 60, 100))  # 0-1 s
    track.notes.append(Note(1920, 960, 72, 100))  # 2-3 s
    score.tracks.append(track)
    image = piano_roll(score)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    empty = piano_roll(Score(480))
    assert empty.shape == image.shape
    coloured = (image.max(axis=2).astype(int) - image.min(axis=2)) > 60  # saturated pixels
    columns = np.flatnonzero(coloured.any(axis=0))
    rows = np.flatnonzero(coloured.any(axis=1))
    # two separated blocks in time (a gap between 1 s and 2 s) and in pitch (an octave apart)
    assert np.diff(columns).max() > 20 and np.diff(rows).max() > 20
    assert not ((empty.max(axis=2).astype(int) - empty.min(axis=2)) > 60).any()


def test_a_score_without_notes_renders_as_no_samples() -> None:
    if find_soundfont() is None:
        pytest.skip("no SoundFont: apt-get install musescore-general-soundfont-small")
    sample_rate, samples = render_audio(Score(480), sample_rate=SAMPLE_RATE)
    assert sample_rate == SAMPLE_RATE and samples.shape == (0, 2)


def test_a_synthesizer_that_cannot_return_audio_is_reported(monkeypatch, tmp_path) -> None:
    """symusic 0.6.0 raises a pybind TypeError from every render: say which version works."""
    import midiformers.audio as audio

    class BrokenSynthesizer:
        def render(self, score, stereo=True):
            raise TypeError("Unable to convert function return value to a Python type!")

    soundfont = tmp_path / "any.sf3"
    soundfont.write_bytes(b"")
    monkeypatch.setattr(audio, "_synthesizer", lambda path, rate: BrokenSynthesizer())
    with pytest.raises(AudioUnavailableError, match="cannot render audio.*symusic 0.5.9"):
        render_audio(single_note_score(60), sf_path=soundfont)
    assert "symusic 0.5.9" in audio.audio_problem(soundfont)
