"""The Gradio demo: the generate function, the page in a real browser (Debian's Chromium driven by
Playwright) and the API endpoint through ``gradio_client``."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio", reason="the demo needs the app extra: pip install '.[app]'")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from symusic import Score  # noqa: E402

from midiformers.app import create_demo, parse_args  # noqa: E402
from midiformers.app.demo import Generator, _composer_update  # noqa: E402
from midiformers.app.models import resolve_models  # noqa: E402
from midiformers.audio import find_soundfont  # noqa: E402

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def upload_primer(page, path: Path) -> None:
    """Replace the primer: clear the one shown (if any), upload, wait for its name."""
    primer = page.locator("#primer")
    clear = primer.get_by_role("button", name="Clear")
    if clear.count():
        clear.click()
    primer.locator("input[type=file]").set_input_files(path)
    primer.get_by_label(path.name).wait_for()


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


@pytest.fixture(scope="module")
def served_demo(tiny_model_dir, tmp_path_factory):
    """The demo with the tiny model, serving on a free port for the whole module."""
    demo = create_demo([str(tiny_model_dir)], output_dir=tmp_path_factory.mktemp("demo-out"))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def primer_path(valid_midi_paths) -> Path:
    return next(path for path in valid_midi_paths if path.name.startswith("bach_"))


@pytest.fixture(scope="module")
def text_as_midi(midi_dir) -> Path:
    return midi_dir / "broken" / "text_renamed.mid"


def test_page_flow_in_a_real_browser(
    served_demo, tiny_model_dir, primer_path, text_as_midi, tmp_path
):
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

    notes = expected_notes(tiny_model_dir, primer_path)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(served_demo)
            generate = page.get_by_role("button", name="Generate")
            generate.wait_for()
            status = page.locator("#status")
            page.get_by_label("number input for Tokens to generate").fill(
                str(SETTINGS["max_new_tokens"])
            )
            page.get_by_label("number input for Tokens to generate").press("Enter")
            page.get_by_label("Seed (-1: random)").fill(str(SETTINGS["seed"]))

            # 1. a primer from the fixtures, generate: audio, piano roll, MIDI file
            upload_primer(page, primer_path)
            generate.click()
            status.get_by_text(f"{notes} notes").wait_for(timeout=60_000)
            if find_soundfont() is not None:
                assert_audio_loaded(page)
            roll = page.locator("#piano-roll img")
            roll.wait_for()
            assert roll.is_visible() and roll.evaluate("img => img.naturalWidth") > 100
            assert page.get_by_label("Tokens generated").input_value() == str(
                SETTINGS["max_new_tokens"]
            )
            with page.expect_download() as download_info:
                page.locator("#midi a").first.click()
            downloaded = tmp_path / download_info.value.suggested_filename
            download_info.value.save_as(downloaded)
            assert downloaded.suffix == ".mid"
            assert Score(str(downloaded)).note_num() == notes

            # 2. a text file renamed .mid: a message naming it, nothing else breaks
            upload_primer(page, text_as_midi)
            generate.click()
            status.get_by_text("Primer rejected").wait_for(timeout=30_000)
            assert "text_renamed.mid: not a MIDI file" in status.inner_text()

            # 3. the app is still usable
            upload_primer(page, primer_path)
            generate.click()
            status.get_by_text(f"{notes} notes").wait_for(timeout=60_000)
            if find_soundfont() is not None:
                assert_audio_loaded(page)
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / ".gitignore").write_text("*\n")
            page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)
        finally:
            browser.close()


def test_api_endpoint_with_gradio_client(served_demo, tiny_model_dir, primer_path):
    from gradio_client import Client, handle_file

    client = Client(served_demo, verbose=False)
    status, audio, roll, midi, num_tokens, seconds = client.predict(
        tiny_model_dir.name,
        None,
        handle_file(str(primer_path)),
        SETTINGS["temperature"],
        SETTINGS["top_k"],
        SETTINGS["top_p"],
        SETTINGS["max_new_tokens"],
        SETTINGS["seed"],
        True,
        api_name="/generate",
    )
    notes = expected_notes(tiny_model_dir, primer_path)
    assert f"{notes} notes" in status
    assert Score(midi).note_num() == notes
    assert num_tokens == SETTINGS["max_new_tokens"] and seconds > 0
    assert Path(roll).stat().st_size > 0
    assert (audio is not None) == (find_soundfont() is not None)


@pytest.fixture(scope="module")
def tiny_vae_dir(tmp_path_factory, midi_tokenizer) -> Path:
    import torch

    from midiformers import MidiVAEConfig, MidiVAEForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny-vae")
    config = MidiVAEConfig(
        vocab_size=len(midi_tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_encoder_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=256,
        latent_size=8,
        id2label={0: "bach", 1: "chopin"},
        pad_token_id=midi_tokenizer.pad_token_id,
        bos_token_id=midi_tokenizer.bos_token_id,
        eos_token_id=midi_tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    MidiVAEForConditionalGeneration(config).save_pretrained(folder)
    midi_tokenizer.save_pretrained(folder)
    return folder


def test_composer_choice_follows_the_model(tiny_model_dir, tiny_vae_dir, tmp_path):
    entries, notices = resolve_models([str(tiny_model_dir), str(tiny_vae_dir)])
    assert notices == []
    gpt, vae = entries
    assert gpt.composers == [] and vae.composers == ["bach", "chopin"]
    shown = _composer_update(gr, vae)
    assert shown.visible and [choice[0] for choice in shown.choices] == ["bach", "chopin"]
    assert _composer_update(gr, gpt).visible is False
    generator = Generator(entries, tmp_path)
    status, *_, midi, num_tokens, _ = generator(vae.label, "chopin", None, 1.0, 0, 1.0, 16, 3, True)
    assert "composer chopin" in status and num_tokens == 16
    assert Path(midi).is_file()


def test_without_a_model_the_page_says_how_to_make_one(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)  # no outputs/default here
    with caplog.at_level("WARNING"):
        demo = create_demo(None, output_dir=tmp_path / "out")
    config = demo.get_config_file()
    notice = next(c for c in config["components"] if c["props"].get("elem_id") == "notice")
    assert notice["props"]["visible"] and "python train.py" in notice["props"]["value"]
    assert "python train.py" in caplog.text
    button = next(c for c in config["components"] if c["props"].get("value") == "Generate")
    assert button["props"]["interactive"] is False
    status = Generator([], tmp_path)(None, None, None, 1.0, 0, 1.0, 16, 0, True)[0]
    assert "No model loaded" in status


def test_unknown_model_gives_a_notice_not_a_crash(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entries, notices = resolve_models([str(tiny_model_dir), "/no/such/model"])
    assert [entry.label for entry in entries] == [tiny_model_dir.name]
    assert len(notices) == 1 and "/no/such/model" in notices[0]


def test_oversized_primer_is_rejected_with_its_size(tiny_model_dir, tmp_path, primer_path):
    from midiformers.app import MAX_PRIMER_BYTES

    big = tmp_path / "huge.mid"
    big.write_bytes(primer_path.read_bytes() + b"\0" * MAX_PRIMER_BYTES)
    entries, _ = resolve_models([str(tiny_model_dir)])
    status = Generator(entries, tmp_path)(entries[0].label, None, str(big), 1, 0, 1, 16, 0, True)[0]
    assert "huge.mid: file too large" in status


def test_command_line_defaults(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    args = parse_args([])
    assert (args.host, args.port, args.share, args.model) == ("127.0.0.1", 7860, False, None)
    assert args.threads == 1
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")  # what Hub Spaces set
    args = parse_args(["--model", "a", "b", "--port", "8000"], default_models=["x"])
    assert (args.host, args.port, args.model) == ("0.0.0.0", 8000, ["a", "b"])
    assert parse_args([], default_models=["x"]).model == ["x"]


def test_without_a_soundfont_a_notice_and_the_other_outputs(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MIDIFORMERS_SOUNDFONT", str(tmp_path / "missing.sf3"))
    demo = create_demo([str(tiny_model_dir)], output_dir=tmp_path / "out")
    config = demo.get_config_file()
    notice = next(c for c in config["components"] if c["props"].get("elem_id") == "notice")
    assert "Audio is off" in notice["props"]["value"]
    assert "musescore-general-soundfont-small" in notice["props"]["value"]
    entries, _ = resolve_models([str(tiny_model_dir)])
    status, audio, roll, midi, num_tokens, _ = Generator(entries, tmp_path)(
        entries[0].label, None, None, 1.0, 32, 0.95, 24, 1, True
    )
    assert audio is None and "Audio is off" in status
    assert roll.ndim == 3 and Path(midi).is_file() and num_tokens == 24


def test_empty_primer_and_a_model_that_fails_to_load_leave_messages(
    tiny_model_dir, no_notes_midi_path, tmp_path
):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    shutil.copy(tiny_model_dir / "config.json", broken)  # a config, but no weights
    entries, notices = resolve_models([str(tiny_model_dir), str(broken)])
    assert notices == []
    generator = Generator(entries, tmp_path, audio_off="")
    status = generator(entries[0].label, None, str(no_notes_midi_path), 1, 0, 1, 16, 0, True)[0]
    assert "16 new tokens" in status and "primer has no notes" in status
    status = generator(entries[1].label, None, None, 1, 0, 1, 16, 0, True)[0]
    assert status.startswith("**Generation failed.**")
    status = generator(entries[0].label, None, None, 1, 0, 1, 16, 0, True)[0]
    assert "16 new tokens" in status


def test_models_with_the_same_folder_name_get_distinct_labels(tiny_model_dir, tmp_path):
    for parent in ("run-a", "run-b"):
        shutil.copytree(tiny_model_dir, tmp_path / parent / "default")
    entries, _ = resolve_models([str(tmp_path / "run-a/default"), str(tmp_path / "run-b/default")])
    assert [entry.label for entry in entries] == ["run-a/default", "run-b/default"]
