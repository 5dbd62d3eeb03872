"""The Gradio demo: the generate function (streaming, Stop, Continue / Undo, length, instruments),
the API endpoints through ``gradio_client`` and plain HTTP, and hostile API calls that name files
on the server. The page in a real browser is ``test_app_browser.py``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio", reason="the demo needs the app extra: pip install '.[app]'")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from demo_support import (  # noqa: E402
    LONG_PIECE,
    SETTINGS,
    call_generate,
    expected_notes,
    file_data,
    free_port,
    save_tiny_model,
    served,
)
from symusic import Score  # noqa: E402

from midiformers.app import create_demo, parse_args  # noqa: E402
from midiformers.app.demo import (  # noqa: E402
    EXAMPLES_DIR,
    HISTORY_SIZE,
    UPLOAD_REFUSED,
    GenerationRequest,
    Generator,
    UploadRefusedError,
    check_upload_path,
    remember,
    undo,
    upload_dirs,
)
from midiformers.app.models import resolve_models  # noqa: E402
from midiformers.app.page import _composer_update, _model_update  # noqa: E402
from midiformers.audio import find_soundfont  # noqa: E402


@pytest.fixture(scope="module")
def upload_dir(tmp_path_factory):
    """Gradio's upload folder for this module's demos (``GRADIO_TEMP_DIR``), apart from others."""
    folder = tmp_path_factory.mktemp("gradio-uploads")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def demo_output_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo-out")


@pytest.fixture(scope="module")
def served_demo(upload_dir, tiny_model_dir, tiny_vae_dir, demo_output_dir):
    """The demo with the tiny GPT and the tiny VAE, serving on a free port for the module."""
    demo = create_demo([str(tiny_model_dir), str(tiny_vae_dir)], output_dir=demo_output_dir)
    with served(demo) as url:
        yield url


@pytest.fixture(scope="module")
def primer_path(valid_midi_paths) -> Path:
    return next(path for path in valid_midi_paths if path.name.startswith("bach_"))


@pytest.fixture(scope="module")
def text_as_midi(midi_dir) -> Path:
    return midi_dir / "broken" / "text_renamed.mid"


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
        length_unit="tokens",
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
    shown = _composer_update(vae)
    assert shown.visible and [choice[0] for choice in shown.choices] == ["bach", "chopin"]
    assert _composer_update(gpt).visible is False
    generator = Generator(entries, tmp_path)
    status, *_, midi, num_tokens, _ = generator(vae.label, "chopin", None, 1.0, 0, 1.0, 16, 3, True)
    assert "composer chopin" in status and num_tokens == 16
    assert Path(midi).is_file()
    status = generator(vae.label, None, None, 1.0, 0, 1.0, 16, 3, True)[0]
    assert "composer bach" in status  # none chosen: the first
    status, *_, midi, num_tokens, _ = generator(vae.label, "satie", None, 1, 0, 1, 16, 3, True)
    assert (
        status
        == f"**Unknown composer** 'satie' for model {vae.label!r}; choose one of bach, chopin."
    )
    assert midi is None and num_tokens is None
    status, *_, midi, _, _ = generator(gpt.label, "bach", None, 1.0, 0, 1.0, 16, 3, True)
    assert status.endswith(
        f" Composer 'bach' ignored: model {gpt.label!r} is not composer-conditioned "
        "(leave the composer empty)."
    )
    assert "16 new tokens" in status and Path(midi).is_file()


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
    generator = Generator(entries, tmp_path, primer_dirs=[tmp_path])
    status = generator(entries[0].label, None, str(big), 1, 0, 1, 16, 0, True)[0]
    size_kib = round(big.stat().st_size / 1024)
    assert f"huge.mid: file too large ({size_kib} KiB; the limit is 1024 KiB)" in status


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
    generator = Generator(entries, tmp_path, audio_off="", primer_dirs=[no_notes_midi_path.parent])
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


def test_api_composer_mistakes_get_clear_messages(served_demo, tiny_model_dir, tiny_vae_dir):
    from gradio_client import Client

    client = Client(served_demo, verbose=False)
    sampling = [SETTINGS[key] for key in SETTINGS]
    gpt, vae = tiny_model_dir.name, tiny_vae_dir.name

    def predict(model: str, composer: str) -> str:
        status, *_ = client.predict(
            model, composer, None, *sampling, True, length_unit="tokens", api_name="/generate"
        )
        return status

    status = predict(gpt, "bach")
    assert "new tokens" in status and "composer bach" not in status  # generated without it
    assert f"Composer 'bach' ignored: model {gpt!r} is not composer-conditioned" in status
    # The VAE is not the first model, so the page's composer list starts empty: still accepted.
    assert "composer chopin" in predict(vae, "chopin")
    assert predict(vae, "satie").startswith("**Unknown composer** 'satie'")
    status = predict(vae, "x" * 10_000)
    assert status.startswith(f"**Unknown composer** {'x' * 40!r}… for model") and len(status) < 200


@pytest.fixture(scope="module")
def tiny_midilike_dir(tmp_path_factory) -> Path:
    """A tiny GPT with a MIDILike tokenizer: no Bar tokens; notes end with NoteOff tokens."""
    from midiformers import MidiTokenizer

    return save_tiny_model(
        tmp_path_factory.mktemp("tiny-midilike"), MidiTokenizer(preset="midilike")
    )


@pytest.fixture
def generator(tiny_model_dir, tiny_midilike_dir, tmp_path) -> Generator:
    """The demo's function for the tiny REMI and MIDILike models (primers from ``tmp_path``),
    updating the roll every 0.2 s."""
    entries, notices = resolve_models([str(tiny_model_dir), str(tiny_midilike_dir)])
    assert notices == []
    out = tmp_path / "out"
    out.mkdir()
    return Generator(
        entries, out, audio_off="off in this test", primer_dirs=[tmp_path], update_every=0.2
    )


@pytest.fixture
def short_primer(primer_path, tmp_path) -> Path:
    """The first two bars of a chorale (4/4), as an upload."""
    score = Score(str(primer_path))
    path = tmp_path / "two_bars.mid"
    score.clip(0, 8 * score.ticks_per_quarter).dump_midi(str(path))
    return path


def finished(results) -> object:
    """The last result of a stream, which must be the finished piece."""
    *_, last = results
    assert last.piece is not None, last.status
    return last


def test_the_roll_grows_while_the_model_writes_and_stop_keeps_the_piece(generator, tiny_model_dir):
    from midiformers.generation import check_sequence

    request = GenerationRequest(tiny_model_dir.name, seed=3, **LONG_PIECE)
    partials, final = [], None
    for result in generator.stream(request, session="listener"):
        if result.piece is not None:
            final = result
            break
        partials.append(result)
        assert result.audio is None and result.midi_path is None  # they come with the piece
        assert result.piano_roll.ndim == 3 and "Writing" in result.status
        if len(partials) == 3:
            assert generator.stop("listener")
    assert final is not None and len(partials) >= 3
    counts = [result.num_tokens for result in partials]
    assert counts == sorted(set(counts))  # a new roll only when there is more to show
    piece = final.piece
    assert "Stopped" in final.status and counts[-1] <= piece.num_tokens < 64 * 128
    tokenizer = generator.entries[tiny_model_dir.name].tokenizer()
    assert check_sequence(tokenizer, piece.token_ids).num_dropped == 0
    notes = tokenizer.to_score(piece.token_ids).note_num()
    assert notes > 0 and f"**{notes} notes**" in final.status
    assert Score(final.midi_path).note_num() == notes
    assert not generator.stop("listener")  # nothing runs for that session any more


def _scale_piece(notes: int, step: int = 240):
    """A one-track Score: ``notes`` eighth notes (at 120 bpm, 480 ticks per quarter) climbing
    and falling between pitches 55 and 79, so every prefix of 48 or more spans them all."""
    from symusic import Note, Track

    score = Score(480)
    track = Track(program=0)
    for index in range(notes):
        track.notes.append(Note(index * step, step, 55 + abs(index % 48 - 24), 80))
    score.tracks.append(track)
    return score


def test_a_growing_roll_redraws_only_the_notes_while_they_fit():
    from midiformers.app.live import LivePianoRoll

    growing = LivePianoRoll(marks=(2.0,))
    growing.draw(_scale_piece(48), room=30.0)  # 12 s of a piece expected to last 30 s
    (_, right), (bottom, top) = growing.axes.get_xlim(), growing.axes.get_ylim()
    assert right >= 30.0 and bottom < 55 and top > 80
    longer = _scale_piece(96)  # 24 s: still inside the frame
    pasted = growing.draw(longer, room=30.0)
    assert growing.full_draws == 1
    # pasting the axes and drawing the notes gives the image a full draw gives
    fresh = LivePianoRoll(marks=(2.0,))
    redrawn = fresh.draw(longer, room=30.0)
    assert fresh.axes.get_xlim() == (0.0, right) and fresh.full_draws == 1
    assert pasted.shape == redrawn.shape and (pasted == redrawn).all()
    # notes that leave the frame widen it; the finished roll fits the piece
    growing.draw(_scale_piece(160), room=30.0)  # 40 s
    assert growing.full_draws == 2 and growing.axes.get_xlim()[1] >= 40.0
    final = growing.draw(_scale_piece(160))
    assert growing.axes.get_xlim() == (0.0, 40.0) and growing.axes.get_ylim() == (53.0, 82.0)
    assert final.ndim == 3 and final.shape == pasted.shape


def test_the_growing_roll_is_framed_for_the_length_asked_for(tiny_model_dir):
    from midiformers.app.demo import _Writing

    tokenizer = resolve_models([str(tiny_model_dir)])[0][0].tokenizer()
    view = _Writing(tokenizer, [])
    so_far = _scale_piece(48)  # 12 s at 120 bpm in 4/4: 6 bars
    assert view.expected_end([0] * 100, so_far, {"duration_seconds": 30.0}) == 30.0
    assert view.expected_end([0] * 100, so_far, {"num_bars": 10}) == pytest.approx(20.0)
    # in tokens: the music so far over the share of the budget written
    assert view.expected_end([0] * 100, so_far, {"max_new_tokens": 400}) == pytest.approx(48.0)


@pytest.mark.parametrize("preset", ["remi", "midilike"])
def test_a_piece_cut_anywhere_is_closed_into_valid_midi(
    preset, generator, tiny_model_dir, tiny_midilike_dir
):
    from midiformers.app.demo import close_piece
    from midiformers.generation import check_sequence

    folder = {"remi": tiny_model_dir, "midilike": tiny_midilike_dir}[preset]
    generate = generator.entries[folder.name].pipeline()
    ids = generate(None, max_new_tokens=80, seed=5)["token_ids"]
    options = {"seed": 0, "grammar": True, "top_k": 32, "num_bars": 64, "max_new_tokens": 8}
    closed_any = False
    for cut in range(2, len(ids) - 1, 5):
        closed = close_piece(generate, {"token_ids": ids[:cut]}, options)["token_ids"]
        assert closed[:cut] == ids[:cut], cut  # what was written stays
        check = check_sequence(generate.tokenizer, closed)
        assert check.num_dropped == 0, (cut, check.errors)
        cut_check = check_sequence(generate.tokenizer, ids[:cut])
        assert len(closed) > cut or cut_check.num_dropped == 0  # closed only when open
        closed_any |= len(closed) > cut
    assert closed_any


def test_continue_extends_the_last_result_and_undo_goes_back(
    generator, tiny_model_dir, tiny_midilike_dir
):
    remi, midilike = tiny_model_dir.name, tiny_midilike_dir.name
    first = finished(generator.stream(GenerationRequest(remi, max_new_tokens=48, seed=1)))
    request = GenerationRequest(remi, max_new_tokens=32, seed=2)
    second = finished(generator.stream(request, source=first.piece))
    eos = generator.entries[remi].tokenizer().eos_token_id
    kept = [token for token in first.piece.token_ids if token != eos]
    assert second.piece.token_ids[: len(kept)] == kept  # the same tokens, then more
    assert 0 < second.piece.num_tokens <= 32
    first_end = Score.from_midi(first.piece.midi).to("second").end()
    assert second.piece.marks == pytest.approx((first_end,))  # where the primer ends
    # Another model continues from the MIDI file, in its own tokens.
    request = GenerationRequest(midilike, max_new_tokens=32, seed=2)
    third = finished(generator.stream(request, source=second.piece))
    assert third.piece.label == midilike and len(third.piece.marks) == 1

    history = remember(remember([], first.piece), second.piece)
    assert undo(history) == [first.piece] and undo(undo(history)) == [first.piece]
    shown = generator.show(first.piece)
    assert shown.status.startswith(first.piece.status) and shown.piece is first.piece
    assert Score(shown.midi_path).note_num() == Score.from_midi(first.piece.midi).note_num() > 0
    assert (shown.num_tokens, shown.piano_roll.ndim) == (first.piece.num_tokens, 3)
    for _ in range(HISTORY_SIZE + 2):
        history = remember(history, third.piece)
    assert len(history) == HISTORY_SIZE and history[-1] is third.piece


def test_bars_and_seconds_are_added_to_the_primer(generator, tiny_model_dir, short_primer):
    label = tiny_model_dir.name
    tokenizer = generator.entries[label].tokenizer()
    bar = tokenizer.convert_tokens_to_ids("Bar_None")
    primer_ids = tokenizer.encode_midi(short_primer)
    assert primer_ids.count(bar) == 2
    request = GenerationRequest(
        label, primer=str(short_primer), length_unit="bars", num_bars=2, seed=4
    )
    piece = finished(generator.stream(request)).piece
    assert piece.token_ids.count(bar) == primer_ids.count(bar) + 2
    request.length_unit, request.seconds = "seconds", 4
    piece = finished(generator.stream(request)).piece
    primer_end = tokenizer.to_score(primer_ids).to("second").end()
    end = Score.from_midi(piece.midi).to("second").end()
    assert piece.marks == pytest.approx((primer_end,))
    assert primer_end < end <= primer_end + 4 + 1e-6


def test_instruments_limit_the_new_notes(generator, tiny_model_dir):
    request = GenerationRequest(tiny_model_dir.name, seed=2, instruments=[40, -1])
    piece = finished(generator.stream(request)).piece
    score = Score.from_midi(piece.midi)
    played = {-1 if track.is_drum else track.program for track in score.tracks if track.notes}
    assert played and played <= {40, -1}


def test_the_page_offers_what_the_model_supports(tiny_model_dir, tiny_midilike_dir):
    entries, _ = resolve_models([str(tiny_model_dir), str(tiny_midilike_dir)])
    remi, midilike = entries
    assert (remi.features.bars, remi.features.seconds) == (True, True)
    assert (midilike.features.bars, midilike.features.seconds) == (False, True)
    assert remi.features.controls == () and not remi.features.infilling
    composer, unit, instruments, *_ = _model_update(midilike)
    assert [value for _, value in unit.choices] == ["seconds", "tokens"]
    assert unit.value == "seconds" and composer.visible is False
    assert instruments.visible and ("Drums (-1)", -1) in instruments.choices
    assert ("Violin (40)", 40) in instruments.choices
    assert [value for _, value in _model_update(remi)[1].choices] == ["seconds", "bars", "tokens"]


def test_request_mistakes_get_clear_messages(generator, tiny_model_dir, tiny_midilike_dir):
    remi, midilike = tiny_model_dir.name, tiny_midilike_dir.name
    cases = [
        (
            GenerationRequest(midilike, length_unit="bars"),
            f"**Length in bars** is not available for model {midilike!r} (it needs a "
            "tokenization with Bar tokens, such as REMI); choose seconds or tokens.",
        ),
        (
            GenerationRequest(remi, length_unit="seconds", grammar=False),
            "**Length in seconds** needs the grammar: switch it on or count tokens.",
        ),
        (
            GenerationRequest(remi, length_unit="minutes"),
            "**Unknown length unit** 'minutes'; choose one of bars, seconds, tokens.",
        ),
        (
            GenerationRequest(remi, length_unit="bars", num_bars=1000),
            "**Bars to write** must be between 1 and 64, got 1000.",
        ),
        (
            GenerationRequest(remi, length_unit="bars", num_bars=2.5),
            "**Bars to write** must be a whole number, got 2.5.",
        ),
        (
            GenerationRequest(remi, max_new_tokens=10**9),
            "**Tokens to generate** must be between 1 and 2048, got 1000000000.",
        ),
        (
            GenerationRequest(remi, length_unit="seconds", seconds="soon"),
            "**Seconds to write** must be between 1 and 120, got 'soon'.",
        ),
    ]
    for request, message in cases:
        (result,) = generator.stream(request)
        assert result.status == message and result.piece is None
    (result,) = generator.stream(GenerationRequest(remi, instruments=["kazoo"]))
    assert result.status.startswith("**Generation failed.** ValueError: programs: unknown ")


def test_api_streams_stops_continues_and_undoes(served_demo, tiny_model_dir):
    from gradio_client import Client

    client = Client(served_demo, verbose=False)  # one session: Stop and Undo act on it
    sampling = [SETTINGS[key] for key in SETTINGS]
    job = client.submit(
        tiny_model_dir.name, None, None, *sampling, True, **LONG_PIECE, api_name="/generate"
    )
    deadline = time.monotonic() + 120
    while len(job.outputs()) < 2 and not job.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not job.done(), job.outputs()
    client.predict(api_name="/stop")
    status, audio, roll, midi, num_tokens, _ = job.result(timeout=120)
    partial_status = job.outputs()[0][0]
    assert "Writing" in partial_status and "Stopped" in status, status
    assert len(job.outputs()) >= 3 and Score(midi).note_num() > 0 and Path(roll).is_file()
    assert num_tokens < 64 * 128 and (audio is not None) == (find_soundfont() is not None)

    more = client.predict(
        tiny_model_dir.name, None, *sampling, True, length_unit="tokens", api_name="/continue"
    )
    assert "new tokens" in more[0] and Score(more[3]).note_num() >= Score(midi).note_num()
    back = client.predict(api_name="/undo")
    assert back[0].startswith(status.split(" Audio is off")[0]) and "earlier result" in back[0]
    assert Score(back[3]).note_num() == Score(midi).note_num()
    assert client.predict(api_name="/undo")[0].startswith("Nothing to undo")
    fresh = Client(served_demo, verbose=False)  # a new session has nothing to continue
    answer = fresh.predict(tiny_model_dir.name, None, *sampling, True, api_name="/continue")
    assert answer[0].startswith("Nothing to continue yet")


def test_upload_path_check_accepts_only_uploads_and_examples(tmp_path, monkeypatch):
    uploads = tmp_path / "uploads"
    (uploads / "abc123").mkdir(parents=True)
    upload = uploads / "abc123" / "primer.mid"
    upload.write_bytes(b"MThd")
    (uploads / "abc123" / "same.mid").symlink_to(upload)
    private = tmp_path / "private"
    private.mkdir()
    secret = private / "secret.mid"
    secret.write_bytes(b"MThd secret")
    (private / "passwords.txt").write_text("TOP-SECRET\n")
    (uploads / "abc123" / "link.mid").symlink_to(secret)
    (uploads / "abc123" / "text.mid").symlink_to(private / "passwords.txt")
    (uploads / "loop.mid").symlink_to(uploads / "loop.mid")
    (tmp_path / "alias").symlink_to(uploads)
    allowed = [uploads, EXAMPLES_DIR]

    assert check_upload_path(str(upload), allowed) == upload.resolve()
    assert check_upload_path(uploads / "abc123" / "same.mid", allowed) == upload.resolve()
    assert check_upload_path(tmp_path / "alias/abc123/primer.mid", allowed) == upload.resolve()
    assert check_upload_path(upload, [tmp_path / "alias"]) == upload.resolve()
    example = sorted(EXAMPLES_DIR.glob("*.mid"))[0]
    assert check_upload_path(str(example), allowed) == example.resolve()

    refused = {
        str(secret): "secret.mid",
        os.path.relpath(secret): "secret.mid",
        f"{uploads}/../private/secret.mid": "secret.mid",
        f"{uploads}/abc123/../../private/secret.mid": "secret.mid",
        str(uploads / "abc123" / "link.mid"): "link.mid",  # a link out of the uploads
        str(uploads / "abc123" / "text.mid"): "text.mid",
        str(private / "gone.mid"): "gone.mid",  # missing: the same answer as existing
        str(uploads / "abc123" / "gone.mid"): "gone.mid",
        str(uploads / "abc123"): "abc123",  # a folder
        str(uploads / "loop.mid"): "loop.mid",
        "https://example.com/primer.mid": "primer.mid",
        "primer\0.mid": "primer\0.mid",
        "": "the file",
    }
    for path, name in refused.items():
        with pytest.raises(UploadRefusedError) as info:
            check_upload_path(path, allowed)
        assert str(info.value) == UPLOAD_REFUSED.format(name=name), path
        assert "SECRET" not in str(info.value)

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    assert upload_dirs() == (uploads, EXAMPLES_DIR)


def test_generator_refuses_foreign_primers_and_never_echoes_their_bytes(
    tiny_model_dir, tmp_path, midi_dir
):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    secret = tmp_path / "passwords.txt"
    secret.write_text("TOP-SECRET-PASSWORD\n")
    (uploads / "link.mid").symlink_to(secret)
    for name in ("text_renamed.mid", "random_bytes.mid", "truncated.mid"):
        shutil.copy(midi_dir / "broken" / name, uploads)
    entries, _ = resolve_models([str(tiny_model_dir)])
    generator = Generator(entries, tmp_path, audio_off="", primer_dirs=[uploads])

    def status(primer) -> str:
        result = generator(entries[0].label, None, str(primer), 1, 0, 1, 16, 0, True)
        assert result[1:] == (None,) * 5  # nothing generated
        return result[0]

    refused = UPLOAD_REFUSED.format(name="link.mid")
    assert status(uploads / "link.mid") == f"**Primer refused.** {refused}"
    assert status(secret) == "**Primer refused.** " + UPLOAD_REFUSED.format(name="passwords.txt")
    assert status(uploads / "text_renamed.mid") == (
        "**Primer rejected.** text_renamed.mid: not a MIDI file"
    )
    assert status(uploads / "random_bytes.mid") == (
        "**Primer rejected.** random_bytes.mid: not a MIDI file"
    )
    assert status(uploads / "truncated.mid").startswith("**Primer rejected.** truncated.mid: ")
    for primer in uploads.iterdir():
        text = status(primer)
        head = primer.resolve().read_bytes()[:8]
        assert "SECRET" not in text and "b'" not in text and "\\x" not in text
        assert head.decode("latin-1") not in text


def test_primer_messages_keep_the_reason_but_not_the_details():
    from midiformers.app.demo import _primer_problem
    from midiformers.tokenization import MidiFileError

    cases = {
        "not a MIDI file: it does not start with 'MThd' (starts with b'This is ')": (
            "not a MIDI file"
        ),
        "the file is empty": "the file is empty",
        "corrupt or truncated MIDI data (MiniMidi: unexpected byte 0x4d)": (
            "corrupt or truncated MIDI data"
        ),
        "starts with b'SECRET' and more": "not a readable MIDI file",
        "odd bytes \\x00\\x01": "not a readable MIDI file",
        "line one\nSECRET": "not a readable MIDI file",
    }
    for reason, shown in cases.items():
        assert _primer_problem(MidiFileError("up.mid", reason)) == f"up.mid: {shown}"


@pytest.fixture
def hostile_targets(tmp_path, upload_dir, primer_path) -> dict[str, str]:
    """Paths a hostile client sends, each naming a file outside the upload folder: the paths
    as sent, keyed by what they are."""
    private = tmp_path / "private"
    private.mkdir()
    secret_midi = private / "private.mid"
    score = Score(str(primer_path))
    score.tracks[0].name = "TOP-SECRET-TRACK"  # bytes of its own, and a marker if echoed
    score.dump_midi(str(secret_midi))
    (private / "passwords.txt").write_text("TOP-SECRET-PASSWORD\n")
    planted = upload_dir / f"planted-{tmp_path.name}"  # as if a link got into the uploads
    planted.mkdir()
    (planted / "text-link.mid").symlink_to(private / "passwords.txt")
    (planted / "midi-link.mid").symlink_to(secret_midi)
    yield {
        "absolute": str(secret_midi),
        "relative": os.path.relpath(secret_midi),
        "dot-dot": f"{upload_dir}/{os.path.relpath(secret_midi, upload_dir)}",
        "link to text": str(planted / "text-link.mid"),
        "link to midi": str(planted / "midi-link.mid"),
        "missing": str(private / "gone" / "private.mid"),
    }
    shutil.rmtree(planted)


def assert_refused(event: str, payload, sent: str) -> None:
    assert event == "error", f"{sent} was accepted: {payload}"
    assert payload["error"] == UPLOAD_REFUSED.format(name=Path(sent).name)
    text = json.dumps(payload)
    assert "SECRET" not in text and "notes" not in text and "MThd" not in text


def test_api_refuses_files_that_were_not_uploaded(
    served_demo, tiny_model_dir, hostile_targets, demo_output_dir, upload_dir, primer_path
):
    import httpx

    results_before = set(demo_output_dir.glob("result-*"))
    for path in hostile_targets.values():
        event, payload = call_generate(served_demo, tiny_model_dir.name, None, file_data(path))
        assert_refused(event, payload, path)
    assert set(demo_output_dir.glob("result-*")) == results_before  # the model never ran
    secret = (Path(hostile_targets["absolute"])).read_bytes()
    files = [p for p in upload_dir.rglob("*") if p.is_file() and not p.is_symlink()]
    copies = [p for p in files if p.read_bytes() == secret]
    assert not copies, "a server file was copied into the upload folder"

    # What the page does still works: an upload through Gradio's route, and a shipped example.
    with httpx.Client(base_url=served_demo, timeout=60) as http, primer_path.open("rb") as file:
        uploaded = http.post("gradio_api/upload", files={"files": file}).json()[0]
    notes = expected_notes(tiny_model_dir, primer_path)
    event, outputs = call_generate(served_demo, tiny_model_dir.name, None, file_data(uploaded))
    assert event == "complete" and f"{notes} notes" in outputs[0]
    # An example as the page sends it: Gradio's copy in the upload folder, not the original.
    original = sorted(EXAMPLES_DIR.glob("*.mid"))[0]
    (cached,) = upload_dir.glob(f"*/{original.name}")
    event, outputs = call_generate(served_demo, tiny_model_dir.name, None, file_data(cached))
    assert event == "complete" and "notes" in outputs[0]
    event, payload = call_generate(served_demo, tiny_model_dir.name, None, file_data(original))
    assert_refused(event, payload, str(original))


@contextlib.contextmanager
def mounted(demo):
    """Serve ``demo`` mounted in a FastAPI app (``gr.mount_gradio_app``) by uvicorn in a thread."""
    import fastapi
    import uvicorn

    app = gr.mount_gradio_app(fastapi.FastAPI(), demo, path="/")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_mounted_demo_refuses_files_that_were_not_uploaded(
    upload_dir, tiny_model_dir, hostile_targets, tmp_path
):
    # Mounted in FastAPI, Gradio 6 itself copies any file a request names into its cache.
    demo = create_demo([str(tiny_model_dir)], output_dir=tmp_path / "out")
    with mounted(demo) as url:
        for kind in ("absolute", "link to text", "link to midi"):
            path = hostile_targets[kind]
            event, payload = call_generate(url, tiny_model_dir.name, None, file_data(path))
            assert_refused(event, payload, path)
    assert not list((tmp_path / "out").glob("result-*"))


def test_warm_up_loads_models_and_compiled_decoding_gives_the_same_piece(
    tiny_model_dir, tiny_vae_dir, tmp_path, monkeypatch
):
    """``create_demo(warmup=True)`` (what app.py does) loads every model before the first request;
    the GPT then decodes with a static cache of its window and a compiled step, one graph for
    every window of a long piece, and a request gives the piece plain decoding gives."""
    import torch
    import transformers

    from midiformers.app import demo as demo_module
    from midiformers.app.models import resolve_models

    class EagerCompileConfig(transformers.CompileConfig):  # traces like inductor, builds fast
        def __init__(self, **kwargs):
            super().__init__(backend="eager", **kwargs)

    monkeypatch.setattr(transformers, "CompileConfig", EagerCompileConfig)
    torch._dynamo.reset()
    models = [str(tiny_model_dir), str(tiny_vae_dir)]
    demo = create_demo(models, output_dir=tmp_path / "out", warmup=True)
    demo.close()
    entries, _ = resolve_models(models)
    demo_module.warm_up(entries)
    gpt, vae = entries
    assert gpt._pipeline is not None and vae._pipeline is not None
    config = gpt.pipeline().model.generation_config
    assert (config.cache_implementation, config.max_cache_len) == ("static", 512)
    assert config.compile_config.fullgraph and not config.compile_config.dynamic
    assert vae.pipeline().model.generation_config.compile_config is None  # composer model
    plain = resolve_models([str(tiny_model_dir)])[0][0]
    request = dict(max_new_tokens=600, seed=3, top_k=8)  # 601 tokens: past the 512 window
    compiled_piece = gpt.pipeline()(None, **request)
    assert compiled_piece["token_ids"] == plain.pipeline()(None, **request)["token_ids"]
    assert len(compiled_piece["token_ids"]) > 512
    assert gpt.pipeline().model._compiled_call is not None


@pytest.fixture(scope="module")
def tiny_mmm_dir(tmp_path_factory) -> Path:
    """A tiny GPT with the ``mmm`` tokenizer: infilling tokens and attribute controls."""
    from midiformers import MidiTokenizer

    try:
        tokenizer = MidiTokenizer(preset="mmm")
    except ValueError as error:
        pytest.skip(f"no mmm preset in this library: {error}")
    return save_tiny_model(tmp_path_factory.mktemp("tiny-mmm"), tokenizer)


@pytest.fixture
def three_bars(primer_path, tmp_path) -> Path:
    """The first three bars of a chorale (4/4, four voices), as an upload."""
    score = Score(str(primer_path))
    path = tmp_path / "three_bars.mid"
    score.clip(0, 12 * score.ticks_per_quarter).dump_midi(str(path))
    return path


def notes_outside(score, start: int, end: int) -> list[tuple]:
    """(track, onset, duration, pitch, velocity) of the notes not starting in [start, end)."""
    return sorted(
        (index, note.time, note.duration, note.pitch, note.velocity)
        for index, track in enumerate(score.tracks)
        for note in track.notes
        if not start <= note.time < end
    )


def test_infilling_rewrites_bars_of_the_upload_and_keeps_every_other_note(
    tiny_mmm_dir, tiny_model_dir, three_bars, tmp_path
):
    from midiformers.generation import check_sequence

    entries, _ = resolve_models([str(tiny_mmm_dir), str(tiny_model_dir)])
    mmm, remi = entries
    assert mmm.features.infilling and not remi.features.infilling
    out = tmp_path / "out"
    out.mkdir()
    generator = Generator(entries, out, audio_off="off", primer_dirs=[tmp_path], update_every=0.2)
    assert generator.outline(mmm.label, str(three_bars)) == (3, [0, 0, 0, 0])
    assert generator.outline(remi.label, str(three_bars)) is None

    tokenizer = mmm.tokenizer()
    original = tokenizer.to_score(tokenizer.encode_midi(three_bars))
    bar = 4 * original.ticks_per_quarter
    request = GenerationRequest(mmm.label, primer=str(three_bars), infill_bars=(2, 2), seed=1)
    result = finished(generator.stream(request))
    assert "Bars 2-2 of 4 tracks regenerated; every other note kept." in result.status
    assert result.piece.marks == pytest.approx((2.0, 4.0))  # bar 2 at 120 bpm, in seconds
    filled = tokenizer.to_score(result.piece.token_ids)  # (a MIDI file may merge overlaps)
    assert notes_outside(filled, bar, 2 * bar) == notes_outside(original, bar, 2 * bar)
    assert check_sequence(tokenizer, result.piece.token_ids).num_dropped == 0

    # Stopped while filling: the bars filled so far are new, the others keep their notes.
    request.infill_bars = (1, 3)
    results = []
    for partial in generator.stream(request, session="filler"):
        results.append(partial)
        if partial.piece is None:
            assert "Filling (" in partial.status and "track bars done)" in partial.status
            generator.stop("filler")
    stopped = results[-1]
    assert stopped.piece is not None and "Stopped after" in stopped.status, stopped.status
    assert check_sequence(tokenizer, stopped.piece.token_ids).num_dropped == 0

    # The last result is what infilling works on when nothing is uploaded.
    request = GenerationRequest(mmm.label, infill_bars=(3, 3), infill_programs=[0], seed=2)
    again = finished(generator.stream(request, source=result.piece))
    refilled = tokenizer.to_score(again.piece.token_ids)
    assert notes_outside(refilled, 2 * bar, 3 * bar) == notes_outside(filled, 2 * bar, 3 * bar)

    # One voice by its number (the page lists "2: Acoustic Grand Piano"), however many tracks
    # share its program: the other voices keep every note, bar 2 included.
    request = GenerationRequest(
        mmm.label, primer=str(three_bars), infill_bars=(2, 2), infill_tracks=["2: Piano"], seed=3
    )
    voice = finished(generator.stream(request))
    assert "Bars 2-2 of 1 track regenerated" in voice.status, voice.status
    voiced = tokenizer.to_score(voice.piece.token_ids)
    for index in (0, 2, 3):
        assert voiced.tracks[index].notes == original.tracks[index].notes
    assert check_sequence(tokenizer, voice.piece.token_ids).num_dropped == 0

    cases = [
        (
            GenerationRequest(remi.label, primer=str(three_bars), infill_bars=(1, 1)),
            f"**Infilling** is not available for model {remi.label!r}: it needs a model "
            "trained with the mmm preset's infilling tokens.",
        ),
        (
            GenerationRequest(
                mmm.label, primer=str(three_bars), infill_bars=(1, 1), infill_tracks=["bass"]
            ),
            "**Unknown track** 'bass': pick tracks by their number.",
        ),
        (
            GenerationRequest(mmm.label, infill_bars=(1, 1)),
            "**Nothing to infill.** Upload a piece as the primer, or generate one first: "
            "infilling regenerates bars of it.",
        ),
        (
            GenerationRequest(mmm.label, primer=str(three_bars), infill_bars=(3, 2)),
            "**From bar** (3) comes after **To bar** (2).",
        ),
        (
            GenerationRequest(mmm.label, primer=str(three_bars), infill_bars=(2, 9)),
            "**Cannot regenerate those bars.** infill_bars: bars 2-9 are outside the piece, "
            "which has 3 bars (1-3).",
        ),
    ]
    for request, message in cases:
        (answer,) = generator.stream(request)
        assert answer.status == message


def test_controls_show_only_for_models_that_have_them(tiny_mmm_dir, tiny_model_dir):
    from midiformers.app.page import CONTROLS, _control_choices, _control_widget

    entries, _ = resolve_models([str(tiny_mmm_dir), str(tiny_model_dir)])
    mmm, remi = entries
    names = list(CONTROLS)
    assert set(mmm.features.controls) <= set(names) and mmm.features.controls
    _, _, _, box, infill_box, *widgets = _model_update(mmm, names)
    assert box.visible and infill_box.visible
    assert [w["visible"] for w in widgets] == [name in mmm.features.controls for name in names]
    _, _, _, box, infill_box, *widgets = _model_update(remi, names)
    assert not box.visible and not infill_box.visible
    assert not any(w["visible"] for w in widgets)
    from midiformers.app.demo import control_value
    from midiformers.generation.controls import check_control

    for spec in CONTROLS.values():  # every value offered is one the pipeline accepts
        widget = _control_widget(spec, True)
        offered = [c[1] for c in widget.choices]
        for value in offered if spec.kind == "set" else _control_choices(spec):
            value = [value] if spec.kind == "set" else value
            assert check_control(spec.name, control_value(value)) is not None, value
        assert control_value("any") is None and control_value([]) is None


def test_control_values_from_the_page():
    from midiformers.app.demo import control_value

    assert control_value("12") == 12 and control_value("high") == "high"
    assert control_value("1-3") == (1, 3) and control_value("0.5") == 0.5
    assert control_value(["C", "E"]) == ["C", "E"] and control_value(7) == 7
    assert control_value(None) is None and control_value("") is None


def test_generations_share_the_concurrency_slots(tiny_model_dir, tmp_path):
    demo = create_demo([str(tiny_model_dir)], output_dir=tmp_path / "out", concurrency_limit=2)
    events = {fn.api_name: fn for fn in demo.fns.values() if fn.api_name}
    assert {"generate", "continue", "infill", "undo", "stop"} <= set(events)
    generating = [events[name] for name in ("generate", "continue", "infill")]
    assert {(fn.concurrency_id, fn.concurrency_limit) for fn in generating} == {("generation", 2)}
    assert not events["stop"].queue  # Stop never waits behind the generations it stops


def test_controls_from_the_page_reach_every_track_and_bar(tiny_mmm_dir, tmp_path):
    from midiformers.generation.controls import read_controls

    entries, _ = resolve_models([str(tiny_mmm_dir)])
    generator = Generator(entries, tmp_path, audio_off="off", primer_dirs=[], update_every=None)
    controls = {"density": "high", "polyphony": "1-2", "pitch_classes": ["C", "E", "G"]}
    controls |= {"durations": [], "repetition": "any"}  # left free, as the page sends them
    request = GenerationRequest(
        entries[0].label, length_unit="bars", num_bars=2, seed=1, controls=controls
    )
    piece = finished(generator.stream(request)).piece
    tracks = read_controls(entries[0].tokenizer(), piece.token_ids)
    assert tracks and all("ACTrackOnsetPolyphonyMax_2" in track["track"] for track in tracks)
    bars = [set(tokens) for track in tracks for tokens in track["bars"].values()]
    wanted = {"ACBarNoteDensity_12", "ACBarPitchClass_0", "ACBarPitchClass_4", "ACBarPitchClass_7"}
    assert bars and all(wanted <= tokens for tokens in bars)
    assert not any(token.startswith("ACTrackRepetition") for t in tracks for token in t["track"])
    request.controls = {"density": "loud"}
    (answer,) = generator.stream(request)
    assert answer.status.startswith("**Generation failed.** ValueError: density must be")
