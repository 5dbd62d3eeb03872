"""The demo page in a real browser (Debian's Chromium driven by Playwright): a primer and its
piece (audio, piano roll, MIDI download), a broken upload, the examples, the piano roll growing
while the model writes, Stop, Continue and Undo, and infilling bars of an uploaded piece.

One server and one browser serve the whole module."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio", reason="the demo needs the app extra: pip install '.[app]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from demo_support import (  # noqa: E402
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    SETTINGS,
    expected_notes,
    save_tiny_model,
    served,
)
from symusic import Score  # noqa: E402

from midiformers.app import create_demo  # noqa: E402
from midiformers.app.demo import EXAMPLES_DIR  # noqa: E402
from midiformers.audio import find_soundfont  # noqa: E402

if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium: apt-get install -y chromium", allow_module_level=True)

WAIT_MS = 60_000


@pytest.fixture(scope="module")
def tiny_mmm_dir(tmp_path_factory) -> Path | None:
    """A tiny GPT with the ``mmm`` tokenizer (infilling), or None in a library without it."""
    from midiformers import MidiTokenizer

    try:
        tokenizer = MidiTokenizer(preset="mmm")
    except ValueError:
        return None
    return save_tiny_model(tmp_path_factory.mktemp("tiny-mmm"), tokenizer)


@pytest.fixture(scope="module")
def page_url(tmp_path_factory, tiny_model_dir, tiny_mmm_dir):
    """The demo with the tiny GPT (first, so the page opens on it) and the tiny mmm model,
    serving for the module (uploads in a folder of its own)."""
    uploads = tmp_path_factory.mktemp("gradio-uploads")
    models = [str(tiny_model_dir)] + ([str(tiny_mmm_dir)] if tiny_mmm_dir else [])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(uploads))
        demo = create_demo(models, output_dir=tmp_path_factory.mktemp("out"))
        with served(demo) as url:
            yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, page_url):
    """A fresh tab (a new session: its own history) on the demo."""
    tab = browser.new_page(viewport={"width": 1280, "height": 1400})
    tab.goto(page_url)
    tab.get_by_role("button", name="Generate").wait_for()
    yield tab
    tab.close()


@pytest.fixture(scope="module")
def primer_path(valid_midi_paths) -> Path:
    return next(path for path in valid_midi_paths if path.name.startswith("bach_"))


def upload_primer(page, path: Path) -> None:
    """Replace the primer: clear the one shown (if any), upload, wait for its name."""
    primer = page.locator("#primer")
    clear = primer.get_by_role("button", name="Clear")
    if clear.count():
        clear.click()
    primer.locator("input[type=file]").set_input_files(path)
    primer.get_by_label(path.name).wait_for()


def set_slider(page, label: str, value: float) -> None:
    field = page.get_by_label(f"number input for {label}")
    field.fill(str(value))
    field.press("Enter")


def choose_length(page, unit: str, value: float) -> None:
    """Length in ``unit`` ("Bars", "Seconds", "Tokens"), ``value`` of it."""
    page.get_by_label(unit, exact=True).check()
    set_slider(
        page,
        {"Bars": "Bars to write", "Seconds": "Seconds to write"}.get(unit, "Tokens to generate"),
        value,
    )


def set_seed(page, seed: int) -> None:
    field = page.get_by_label("Seed (-1: random)")
    if not field.is_visible():
        page.get_by_text("Sampling", exact=True).click()  # the accordion starts closed
        field.wait_for(state="visible")
    for _ in range(20):  # a freshly opened accordion may still reset its fields once
        field.fill(str(seed))
        field.press("Tab")
        page.wait_for_timeout(100)
        if field.input_value() == str(seed):
            break
    sync_api.expect(field).to_have_value(str(seed))


def assert_audio_loaded(page) -> None:
    """The audio output has a source that the browser decodes to a non-zero duration."""
    player = page.locator("#audio audio[src]").first
    player.wait_for(state="attached")
    assert player.get_attribute("src")
    duration = player.evaluate(
        """a => new Promise(done => a.readyState > 0 ? done(a.duration)
            : a.addEventListener("loadedmetadata", () => done(a.duration)))"""
    )
    assert duration > 0


def download_midi(page, folder: Path) -> Path:
    with page.expect_download() as download_info:
        page.locator("#midi a").first.click()
    path = folder / download_info.value.suggested_filename
    download_info.value.save_as(path)
    assert path.suffix == ".mid"
    return path


def next_roll(page, previous: str | None) -> str:
    """Wait for the piano roll to show an image other than ``previous``; its address."""
    page.wait_for_function(
        """previous => {
            const img = document.querySelector("#piano-roll img");
            return img && img.src && img.src !== previous;
        }""",
        arg=previous,
        timeout=WAIT_MS,
    )
    return page.locator("#piano-roll img").get_attribute("src")


def test_page_flow_in_a_real_browser(page, tiny_model_dir, primer_path, midi_dir, tmp_path):
    notes = expected_notes(tiny_model_dir, primer_path)
    finished = f"{notes} notes, {SETTINGS['max_new_tokens']} new tokens in"  # not "so far"
    generate = page.get_by_role("button", name="Generate")
    status = page.locator("#status")
    choose_length(page, "Tokens", SETTINGS["max_new_tokens"])
    set_seed(page, SETTINGS["seed"])

    # 1. a primer from the fixtures, generate: audio, piano roll, MIDI file
    upload_primer(page, primer_path)
    generate.click()
    status.get_by_text(finished).wait_for(timeout=WAIT_MS)
    if find_soundfont() is not None:
        assert_audio_loaded(page)
    roll = page.locator("#piano-roll img")
    assert roll.is_visible() and roll.evaluate("img => img.naturalWidth") > 100
    assert page.get_by_label("Tokens generated").input_value() == str(SETTINGS["max_new_tokens"])
    assert Score(str(download_midi(page, tmp_path))).note_num() == notes

    # 2. a text file renamed .mid: a message naming it, nothing else breaks
    upload_primer(page, midi_dir / "broken" / "text_renamed.mid")
    generate.click()
    status.get_by_text("Primer rejected").wait_for(timeout=WAIT_MS)
    assert "text_renamed.mid: not a MIDI file" in status.inner_text()

    # 3. the app is still usable, and so are the examples
    upload_primer(page, primer_path)
    generate.click()
    status.get_by_text(finished).wait_for(timeout=WAIT_MS)
    example = sorted(EXAMPLES_DIR.glob("*.mid"))[0]
    page.get_by_text(example.name, exact=True).first.click()
    page.locator("#primer").get_by_label(example.name).wait_for()
    set_seed(page, 8)  # tells this result from the last
    generate.click()
    status.get_by_text("seed 8").wait_for(timeout=WAIT_MS)
    shown = re.search(r"(\d+) notes, \d+ new tokens", status.inner_text())
    assert shown and int(shown[1]) > 0, status.inner_text()  # the example's notes at least
    if find_soundfont() is not None:
        assert_audio_loaded(page)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)


def test_the_roll_grows_stop_keeps_the_piece_continue_and_undo(page, tmp_path):
    status = page.locator("#status")
    choose_length(page, "Bars", 64)  # EOS only at bar 64: the untrained model writes on
    set_seed(page, 3)
    page.get_by_role("button", name="Generate").click()

    # the roll is redrawn while the model writes
    first = next_roll(page, None)
    status.get_by_text("Writing").wait_for(timeout=WAIT_MS)
    second = next_roll(page, first)
    assert "Writing" in status.inner_text() and second != first

    # Stop: the piece so far, finished, with its audio and file
    page.get_by_role("button", name="Stop").click()
    status.get_by_text("Stopped").wait_for(timeout=WAIT_MS)
    stopped = status.inner_text()
    summary = re.search(r"\d+ notes, \d+ new tokens in [\d.]+ s \([^)]*\)", stopped)[0]
    notes = int(summary.split(" ")[0])
    assert notes > 0 and Score(str(download_midi(page, tmp_path))).note_num() == notes
    if find_soundfont() is not None:
        assert_audio_loaded(page)

    # Continue: more of it; Undo: back to the stopped piece
    choose_length(page, "Tokens", 32)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_function(
        """() => {
            const text = document.querySelector("#status").innerText;
            return text.includes(" new tokens in ") && !text.includes("Stopped");
        }""",
        timeout=WAIT_MS,
    )  # the continuation, finished (it may end before 32 tokens) and not stopped
    undo = page.get_by_role("button", name="Undo")
    page.wait_for_function(
        "() => !document.evaluate(\"//button[text()='Undo']\", document, null, 9, null)"
        ".singleNodeValue.disabled",
        timeout=WAIT_MS,
    )
    undo.click()
    status.get_by_text("back to this earlier result").wait_for(timeout=WAIT_MS)
    assert summary in status.inner_text()  # the stopped piece again
    assert Score(str(download_midi(page, tmp_path))).note_num() == notes


def test_infilling_bars_of_an_uploaded_piece(page, tiny_mmm_dir, primer_path, tmp_path):
    if tiny_mmm_dir is None:
        pytest.skip("no mmm preset (infilling) in this library")
    from transformers import AutoTokenizer

    three_bars = tmp_path / "three_bars.mid"
    score = Score(str(primer_path))
    score.clip(0, 12 * score.ticks_per_quarter).dump_midi(str(three_bars))
    infill_box = page.get_by_text("Regenerate bars (infilling)")
    assert not infill_box.is_visible()  # the first model cannot infill
    page.get_by_label("Model").click()
    page.get_by_role("option", name=tiny_mmm_dir.name).click()
    infill_box.click()  # shown for this model; opens it
    upload_primer(page, three_bars)
    page.get_by_text("The piece has 3 bars.").wait_for(timeout=WAIT_MS)
    page.get_by_label("From bar").fill("2")
    page.get_by_label("To bar").fill("2")
    set_seed(page, 5)
    page.get_by_role("button", name="Regenerate bars", exact=True).click()
    status = page.locator("#status")
    status.get_by_text("every other note kept").wait_for(timeout=WAIT_MS)
    assert "seed 5). Bars 2-2 of 4 tracks regenerated" in status.inner_text()

    tokenizer = AutoTokenizer.from_pretrained(tiny_mmm_dir)
    original = tokenizer.to_score(tokenizer.encode_midi(three_bars))
    filled = Score(str(download_midi(page, tmp_path)))
    bar = 4 * original.ticks_per_quarter

    def onsets_outside_bar_2(piece) -> list[tuple]:
        scale = original.ticks_per_quarter / piece.ticks_per_quarter
        return sorted(
            (index, round(note.time * scale), note.pitch)
            for index, track in enumerate(piece.tracks)
            for note in track.notes
            if not bar <= round(note.time * scale) < 2 * bar
        )

    assert onsets_outside_bar_2(filled) == onsets_outside_bar_2(original)
    page.screenshot(path=str(ARTIFACTS / "demo-infill.png"), full_page=True)
