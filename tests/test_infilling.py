"""Infilling (MMM): prompts, splicing, the fill rules, the training collator and bar windows,
infilling through the pipeline with untrained tiny models of every causal architecture and with
random logits, and the errors."""

from __future__ import annotations

import bisect
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from test_generation_pipeline import tiny_model
from transformers import pipeline

import midiformers  # noqa: F401  (registers the task)
from midiformers import MidiTokenizer
from midiformers.data_scripts import tokenize_dataset
from midiformers.generation import MidiGrammar, MidiGrammarLogitsProcessor, check_sequence
from midiformers.generation.infilling import (
    Hole,
    InfillVocabulary,
    build_infill_prompt,
    check_fills,
    decode_filled,
    infill_sequence,
    parse_piece,
    select_holes,
    splice_fills,
    split_fills,
)
from midiformers.modeling import ARCHITECTURES
from midiformers.training.infilling import IGNORE_INDEX, DataCollatorForInfilling

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CAUSAL = [name for name, arch in ARCHITECTURES.items() if arch.generates and not arch.conditioning]
QUARTET = "haydn_op74no1_quartet_excerpt.mid"  # violins 40, 40, viola 41, cello 42
BAND = "band_with_drums.mid"  # piano 0, bass 33, drums; two bars
METERS = "tempo_and_meter_changes.mid"  # 4/4, 3/4, 6/8 and tempo changes
CHORALE = "bach_bwv66.6.mid"  # soprano, alto, tenor, bass: all four program 0; nine bars


@pytest.fixture(scope="module")
def tok() -> MidiTokenizer:
    return MidiTokenizer(preset="mmm")


@pytest.fixture(scope="module")
def vocab(tok) -> InfillVocabulary:
    return InfillVocabulary(tok)


@pytest.fixture(scope="module")
def valid(midi_dir) -> Path:
    return midi_dir / "valid"


def note_names(tok, ids) -> list[str]:
    return [tok.convert_ids_to_tokens(i) for i in ids]


def bars_of(score) -> list[int]:
    """Bar start ticks of a decoded score, from its time signatures."""
    tpq = score.ticks_per_quarter
    meters = sorted((ts.time, ts.numerator, ts.denominator) for ts in score.time_signatures)
    meters = meters or [(0, 4, 4)]
    end = max((note.end for track in score.tracks for note in track.notes), default=0)
    starts, tick, current = [], 0, 0
    while tick <= end:
        while current + 1 < len(meters) and meters[current + 1][0] <= tick:
            current += 1
        starts.append(tick)
        tick += meters[current][1] * tpq * 4 // meters[current][2]
    return starts


def notes_by_bar(score) -> list[dict[int, list[tuple]]]:
    """Per track: bar (from 1) -> its notes (onset, duration, pitch, velocity)."""
    starts = bars_of(score)
    tracks = []
    for track in score.tracks:
        bars: dict[int, list[tuple]] = {}
        for note in track.notes:
            bar = bisect.bisect_right(starts, note.time)
            bars.setdefault(bar, []).append((note.time, note.duration, note.pitch, note.velocity))
        tracks.append({bar: sorted(notes) for bar, notes in bars.items()})
    return tracks


def assert_kept_outside_holes(original, filled, holes) -> tuple[int, int]:
    """Every note outside the holes is in the filled piece, and nothing else is; returns the
    number of notes inside the holes after and before."""
    before, after = notes_by_bar(original), notes_by_bar(filled)
    assert len(before) == len(after)
    masked = {(hole.track, hole.bar) for hole in holes}
    inside = [0, 0]
    for index, (old, new) in enumerate(zip(before, after)):
        for bar in set(old) | set(new):
            if (index, bar) in masked:
                inside[0] += len(new.get(bar, []))
                inside[1] += len(old.get(bar, []))
            else:
                assert old.get(bar) == new.get(bar), f"track {index}, bar {bar}"
    return inside[0], inside[1]


# ----------------------------------------------------------------------------- prompts


def test_prompt_masks_the_asked_bars_of_the_asked_programs(tok, vocab, valid):
    prompt = build_infill_prompt(tok, valid / QUARTET, bars=(3, 5), programs=[40])
    # both violin tracks play program 40
    assert prompt.holes == [Hole(t, b) for t in (0, 1) for b in (3, 4, 5)]
    tokens = note_names(tok, prompt.input_ids)
    assert tokens[0] == "BOS_None" and tokens[-1] == "Track_End"
    assert tokens.count("Infill_Bar") == len(prompt.holes) == len(prompt.original_fills)
    assert "FillBar_Start" not in tokens and "EOS_None" not in tokens
    piece = parse_piece(vocab, tok.encode_midi(valid / QUARTET))
    assert tokens.count("Track_Start") == len(piece.tracks) == 4
    assert tokens.count("Bar_None") == sum(len(track.bars) for track in piece.tracks)
    for index, token in enumerate(tokens):
        if token == "Infill_Bar":  # the placeholder keeps its Bar and TimeSig, no note
            bar = tokens[: index + 1][::-1].index("Bar_None")
            body = tokens[index - bar : index]
            assert body[1].startswith("TimeSig_")
            assert not any(t.startswith(("Pitch", "Velocity", "Duration")) for t in body)
    for fill in prompt.original_fills:
        names = note_names(tok, fill)
        assert names and names[0].startswith("Position_")
        assert {n.split("_")[0] for n in names} <= {"Position", "Pitch", "Velocity", "Duration"}


def test_prompt_from_ids_or_a_path_is_the_same(tok, valid):
    ids = tok.encode_midi(valid / BAND)
    from_path = build_infill_prompt(tok, valid / BAND, bars=(2, 2))
    for source in (ids, torch.tensor([tok.bos_token_id, *ids, tok.eos_token_id])):
        assert build_infill_prompt(tok, source, bars=(2, 2)).input_ids == from_path.input_ids


def test_whole_track_infill_and_meters(tok, vocab, valid):
    prompt = build_infill_prompt(tok, valid / BAND, programs=["drums"])
    assert prompt.holes == [Hole(2, 1), Hole(2, 2)]
    assert prompt.drums == [True, True]
    # the hole's meter is the placeholder bar's TimeSig (tempo changes stay there too)
    prompt = build_infill_prompt(tok, valid / METERS, bars=(2, 5))
    tokens = note_names(tok, prompt.input_ids)
    bars = [i for i, t in enumerate(tokens) if t == "Bar_None"]
    holes = [i for i, t in enumerate(tokens) if t == "Infill_Bar"]
    meters = [tokens[max(b for b in bars if b < hole) + 1] for hole in holes]
    per_beat = tok.miditok.config.max_num_pos_per_beat
    expected = [int(m.split("_")[1].split("/")[0]) * per_beat for m in meters]
    assert prompt.bar_positions == expected
    assert meters == ["TimeSig_4/4", "TimeSig_3/4", "TimeSig_3/4", "TimeSig_6/8"]


def test_prompt_by_track_number_picks_one_of_several_tracks_of_a_program(tok, vocab, valid):
    piece = parse_piece(vocab, tok.encode_midi(valid / CHORALE))
    assert piece.programs == [0, 0, 0, 0]  # infill_programs cannot tell the voices apart
    alto = build_infill_prompt(tok, valid / CHORALE, tracks=2)
    assert alto.holes == [Hole(1, bar) for bar in range(1, piece.num_bars + 1)]
    # the placeholders stand in the second Track_Start block, the other blocks are untouched
    blocks = []
    for token in alto.input_ids[1:]:
        if token == vocab.track_start:
            blocks.append([])
        blocks[-1].append(token)
    assert [block.count(vocab.placeholder) for block in blocks] == [0, piece.num_bars, 0, 0]
    for index in (0, 2, 3):
        track = piece.tracks[index]
        assert blocks[index] == [*track.header, *sum(track.bars, []), vocab.track_end]
    outer = build_infill_prompt(tok, valid / CHORALE, bars=(3, 4), tracks=[4, 1, 4])
    assert outer.holes == [Hole(0, 3), Hole(0, 4), Hole(3, 3), Hole(3, 4)]
    assert select_holes(piece, tracks=[2]) == select_holes(piece, tracks=2)


def test_prompt_window_fits_the_context(tok, valid):
    whole = build_infill_prompt(tok, valid / QUARTET, bars=(6, 6), programs=[42])
    assert whole.window == (1, 12)
    prompt = build_infill_prompt(
        tok, valid / QUARTET, bars=(6, 6), programs=[42], max_length=300, reserve=100
    )
    first, last = prompt.window
    assert first <= 6 <= last and (first, last) != (1, 12)
    assert len(prompt.input_ids) + 100 <= 300
    assert len(prompt.input_ids) < len(whole.input_ids)
    assert prompt.original_fills == whole.original_fills


# ----------------------------------------------------------------------------- splicing


@pytest.mark.parametrize(
    "name, bars, programs",
    [(QUARTET, (3, 5), [40]), (BAND, None, ["drums"]), (METERS, (2, 4), None)],
)
def test_splicing_the_original_fills_gives_the_piece_back(tok, vocab, valid, name, bars, programs):
    prompt = build_infill_prompt(tok, valid / name, bars=bars, programs=programs)
    filled = splice_fills(vocab, prompt.piece, prompt.holes, prompt.original_fills)
    original = tok.to_score(tok.encode_midi(valid / name))
    again = tok.to_score(filled)
    assert [t.notes for t in again.tracks] == [t.notes for t in original.tracks]
    assert list(again.tempos) == list(original.tempos)
    assert list(again.time_signatures) == list(original.time_signatures)
    # the training sequence decodes to the same music (MidiTokenizer splices the fills)
    sequence, _ = infill_sequence(vocab, prompt.piece, prompt.holes)
    assert [t.notes for t in tok.to_score(sequence).tracks] == [t.notes for t in original.tracks]


def sample_fills(tok, vocab, prompt, rows: int, budget: int, seed: int) -> list[list[int]]:
    """Sample after the prompt from random logits through the grammar (its mmm rules)."""
    generator = torch.Generator().manual_seed(seed)
    processor = MidiGrammarLogitsProcessor(MidiGrammar.for_tokenizer(tok), max_new_tokens=budget)
    ids = torch.tensor([prompt.input_ids] * rows)
    for _ in range(budget):
        scores = processor(ids, torch.randn(rows, len(tok), generator=generator))
        step = torch.multinomial(scores.softmax(-1), 1, generator=generator)
        ids = torch.cat([ids, step], dim=1)
        if bool((ids == vocab.eos).any(1).all()):
            break
    return [row[len(prompt.input_ids) :] for row in ids.tolist()]


@pytest.mark.parametrize(
    "name, bars, programs",
    [(QUARTET, (3, 5), [40, "cello"]), (BAND, None, ["drums", 33]), (METERS, (2, 5), None)],
)
@pytest.mark.parametrize("budget", [3000, 60])
def test_random_fills_decode_and_keep_every_other_note(
    tok, vocab, valid, name, bars, programs, budget
):
    prompt = build_infill_prompt(tok, valid / name, bars=bars, programs=programs)
    original = tok.to_score(tok.encode_midi(valid / name))
    for generated in sample_fills(tok, vocab, prompt, rows=2, budget=budget, seed=len(name)):
        check = check_fills(vocab, prompt, generated)
        assert check.num_dropped == 0, check.errors[:3]
        assert check_sequence(tok, prompt.input_ids + generated).num_dropped == 0
        assert len(generated) <= budget  # EOS, or every fill closed at the limit
        assert vocab.eos in generated or len(generated) == budget
        fills = split_fills(vocab, generated)
        assert len(fills) == prompt.num_holes
        filled = decode_filled(tok, vocab, splice_fills(vocab, prompt.piece, prompt.holes, fills))
        # every generated note sounds, in its hole
        inside, _ = assert_kept_outside_holes(original, filled, prompt.holes)
        assert inside == check.num_note_tokens


def test_fill_rules_find_broken_fills(tok, vocab, valid):
    prompt = build_infill_prompt(tok, valid / BAND, bars=(1, 1), programs=["drums"])
    ids = tok.convert_tokens_to_ids
    good = ["FillBar_Start", "Position_4", "PitchDrum_36", "Velocity_79", "Duration_0.2.8"]
    assert check_fills(vocab, prompt, ids([*good, "FillBar_End", "EOS_None"])).num_dropped == 0
    bad = [
        ["FillBar_Start", "Position_4", "Pitch_60", "Velocity_79", "Duration_0.2.8"],  # drums
        ["FillBar_Start", "Position_40", "PitchDrum_36", "Velocity_79", "Duration_0.2.8"],
        ["FillBar_Start", "TimeSig_3/4", "Position_4", "PitchDrum_36", "Velocity_79"],
        [*good, "Position_4", "PitchDrum_38", "Velocity_79", "Duration_0.2.8"],  # not forward
    ]
    for tokens in bad:
        check = check_fills(vocab, prompt, ids([*tokens, "FillBar_End", "EOS_None"]))
        assert check.num_dropped > 0, tokens
    unfinished = check_fills(vocab, prompt, ids(good))
    assert unfinished.num_dropped == len(good)  # split_fills leaves an unfinished fill out
    assert split_fills(vocab, ids(good)) == []


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def windows(tok, valid) -> list[list[int]]:
    files = sorted(valid.glob("*.mid"))
    dataset = datasets.Dataset.from_dict({"midi": [f.read_bytes() for f in files]})
    return tokenize_dataset(dataset, tok, 256, mode="bars")["input_ids"]


def test_bar_windows_are_whole_pieces(tok, vocab, windows, valid):
    assert all(len(w) <= 256 for w in windows)
    assert len(windows) > len(list(valid.glob("*.mid")))  # long pieces give several windows
    for window in windows:
        assert window[0] == tok.bos_token_id and window[-1] == tok.eos_token_id
        piece = parse_piece(vocab, window)  # strict: complete tracks only
        assert piece.tracks and all(t.header[1:2] for t in piece.tracks)
    # the windows of a piece hold all its notes, each once
    ids = tok.encode_midi(valid / QUARTET)
    single = datasets.Dataset.from_dict({"midi": [(valid / QUARTET).read_bytes()]})
    parts = tokenize_dataset(single, tok, 200, mode="bars")["input_ids"]
    assert len(parts) > 1
    count = sum(tok.to_score(part).note_num() for part in parts)
    assert count == tok.to_score(ids).note_num()


def test_collator_is_seeded_aligned_and_never_cuts_a_fill(tok, vocab, windows):
    examples = [{"input_ids": w} for w in windows]
    batch = DataCollatorForInfilling(tok, 256, seed=0)(examples)
    again = DataCollatorForInfilling(tok, 256, seed=0)(examples)
    other = DataCollatorForInfilling(tok, 256, seed=1)(examples)
    assert torch.equal(batch["input_ids"], again["input_ids"])
    assert not torch.equal(batch["input_ids"], other["input_ids"])
    real = batch["attention_mask"].bool()
    assert torch.equal(batch["labels"][real], batch["input_ids"][real])
    assert (batch["labels"][~real] == IGNORE_INDEX).all()
    assert (batch["input_ids"][~real] == tok.pad_token_id).all()
    with_holes = 0
    for row in batch["input_ids"].tolist():
        row = row[: row.index(tok.eos_token_id) + 1]  # windows end with EOS
        holes = row.count(vocab.placeholder)
        assert row.count(vocab.fill_start) == row.count(vocab.fill_end) == holes
        fills = split_fills(vocab, row)
        assert len(fills) == holes and row[-1] == tok.eos_token_id
        with_holes += holes > 0
    assert 0 < with_holes < len(windows)  # infill_probability 0.75: most, not all


def test_collator_fits_small_blocks_and_loss_on_fills(tok, vocab, windows):
    collator = DataCollatorForInfilling(
        tok, 96, seed=3, track_probability=0.5, loss_on="fills", infill_probability=0.0
    )
    for example in windows[:12]:
        row = collator.example(example)
        ids, labels = row["input_ids"], row["labels"]
        assert len(ids) <= 96 and len(labels) == len(ids)
        if vocab.fill_start not in ids:  # a bar too long for the block: plain, unscored
            assert all(label == IGNORE_INDEX for label in labels)
            continue
        start = ids.index(vocab.fill_start)
        assert all(label == IGNORE_INDEX for label in labels[:start])
        assert labels[start:] == ids[start:] and ids[-1] == tok.eos_token_id
        assert ids.count(vocab.placeholder) == len(split_fills(vocab, ids)) > 0
        tracks = ids[:start]  # complete tracks before the fills
        assert tracks.count(vocab.track_start) == tracks.count(vocab.track_end) > 0
        assert tracks[-1] == vocab.track_end


def test_collator_example_keeps_the_music(tok, vocab, windows):
    collator = DataCollatorForInfilling(
        tok, 4096, seed=0, infill_probability=1.0, track_probability=1.0
    )
    for window in windows[:5]:
        piece = parse_piece(vocab, window)
        holes = collator.draw_holes(piece, np.random.default_rng(0))
        row = collator.example(window, holes)
        assert row["input_ids"].count(vocab.placeholder) == len(holes) == piece.num_bars
        decoded, original = tok.to_score(row["input_ids"]), tok.to_score(window)
        assert [t.notes for t in decoded.tracks] == [t.notes for t in original.tracks]


@pytest.mark.parametrize("name", CAUSAL)
def test_every_causal_architecture_trains_on_infilling_batches(tok, windows, name):
    arch = ARCHITECTURES[name]
    model = tiny_model(arch.config_class, arch.model_class, tok, max_position_embeddings=256)
    model.train()
    batch = DataCollatorForInfilling(tok, 256, seed=0)([{"input_ids": w} for w in windows[:4]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        loss = model(**batch).loss
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_train_py_with_infilling(tmp_path, valid):
    from midiformers.training import main

    recipe = Path(__file__).parent / "fixtures" / "recipes" / "tiny.yaml"
    args = [str(recipe), "--output_dir", str(tmp_path / "out"), "--max_steps", "2"]
    args += ["--tokenizer_preset", "mmm", "--infilling", "true", "--max_length", "128"]
    args += ["--eval_steps", "2", "--save_steps", "2", "--num_samples", "0"]
    args += ["--dataset_name", "midi_folder", "--data_dir", str(valid)]
    args += ["--dataset_config", '{"validation_ratio": 0.3, "test_ratio": 0.0}']
    args += ["--dataset_cache_dir", str(tmp_path / "cache")]
    metrics = main(args)
    assert np.isfinite(metrics["eval_loss"])
    saved = MidiTokenizer.from_pretrained(tmp_path / "out")
    assert saved.supports_infilling


# ----------------------------------------------------------------------------- pipeline


@pytest.mark.parametrize("name", CAUSAL)
def test_pipeline_infills_with_every_causal_architecture(tok, valid, name):
    arch = ARCHITECTURES[name]
    model = tiny_model(arch.config_class, arch.model_class, tok, max_position_embeddings=256)
    generator = pipeline("midi-generation", model=model, tokenizer=tok)
    path = valid / BAND
    pieces = generator(
        str(path),
        infill_bars=(2, 2),
        infill_programs=["drums", 33],
        max_new_tokens=48,
        num_return_sequences=2,
        seed=0,
    )
    original = tok.to_score(tok.encode_midi(path))
    holes = [Hole(1, 2), Hole(2, 2)]
    for piece in pieces:
        assert piece["num_dropped_tokens"] == 0
        assert piece["num_filled_bars"] == 2
        ending = piece["infill_token_ids"][-1]  # EOS, or the last fill closed at the limit
        assert ending == tok.eos_token_id or piece["num_generated_tokens"] == 48
        assert piece["num_generated_tokens"] <= 48
        inside, there = assert_kept_outside_holes(original, piece["score"], holes)
        assert there > 0 and piece["num_notes"] == original.note_num() - there + inside
        assert piece["midi"][:4] == b"MThd"


def test_pipeline_whole_track_and_sliding_window(tok, valid):
    model = tiny_model(*_gpt(), tok, max_position_embeddings=64)
    generator = pipeline("midi-generation", model=model, tokenizer=tok)
    path = valid / QUARTET
    piece = generator(str(path), infill_programs="cello", max_new_tokens=80, seed=1)
    prompt = build_infill_prompt(tok, path, programs=[42])
    assert piece["num_filled_bars"] == prompt.num_holes == 12
    assert piece["num_dropped_tokens"] == 0
    original = tok.to_score(tok.encode_midi(path))
    assert_kept_outside_holes(original, piece["score"], prompt.holes)


@pytest.mark.parametrize("bars, tracks", [(None, 2), ((3, 5), [2])])
def test_pipeline_regenerates_one_voice_of_a_chorale(tok, vocab, valid, bars, tracks):
    model = tiny_model(*_gpt(), tok, max_position_embeddings=256)
    generator = pipeline("midi-generation", model=model, tokenizer=tok)
    path = valid / CHORALE
    piece = generator(str(path), infill_bars=bars, infill_tracks=tracks, max_new_tokens=60, seed=0)
    original = tok.to_score(tok.encode_midi(path))
    first, last = bars or (1, parse_piece(vocab, tok.encode_midi(path)).num_bars)
    holes = [Hole(1, bar) for bar in range(first, last + 1)]
    assert piece["num_filled_bars"] == len(holes)
    assert piece["num_dropped_tokens"] == 0
    filled = piece["score"]
    assert len(filled.tracks) == 4
    for index in (0, 2, 3):  # soprano, tenor and bass note for note
        assert list(filled.tracks[index].notes) == list(original.tracks[index].notes)
    assert_kept_outside_holes(original, filled, holes)


def _gpt():
    return ARCHITECTURES["gpt"].config_class, ARCHITECTURES["gpt"].model_class


# ----------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def generator(tok):
    return pipeline("midi-generation", model=tiny_model(*_gpt(), tok), tokenizer=tok)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"infill_bars": (0, 2)}, "infill_bars must be"),
        ({"infill_bars": (3, 2)}, "infill_bars must be"),
        ({"infill_bars": "1-2"}, "infill_bars must be"),
        ({"infill_bars": (1.0, 2)}, "infill_bars must be"),
        ({"infill_programs": ["kazoo"]}, "infill_programs: unknown instrument"),
        ({"infill_programs": [200]}, "infill_programs: 200 is not"),
        ({"infill_bars": (1, 1), "num_bars": 4}, "cannot be combined with num_bars"),
        ({"infill_bars": (1, 1), "programs": [0]}, "cannot be combined with programs"),
        ({"infill_tracks": 0}, "infill_tracks must be track numbers counted from 1"),
        ({"infill_tracks": [1, -2]}, "infill_tracks must be track numbers counted from 1"),
        ({"infill_tracks": [1.0]}, "infill_tracks must be track numbers counted from 1"),
        ({"infill_tracks": "2"}, "infill_tracks must be track numbers counted from 1"),
        ({"infill_tracks": [True]}, "infill_tracks must be track numbers counted from 1"),
        ({"infill_tracks": []}, "infill_tracks must be track numbers counted from 1"),
        ({"infill_tracks": [1], "infill_programs": [0]}, "infill_programs or infill_tracks, not"),
        ({"infill_tracks": [1], "num_bars": 4}, "cannot be combined with num_bars"),
    ],
)
def test_bad_options_fail_up_front(generator, valid, options, message):
    with pytest.raises(ValueError, match=message) as error:
        generator(str(valid / BAND), **options)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "primer, options, message",
    [
        (BAND, {"infill_bars": (2, 3)}, r"bars 2-3 are outside the piece, which has 2 bars"),
        (BAND, {"infill_programs": [40]}, "no track of the piece plays program 40"),
        (
            BAND,
            {"infill_tracks": [2, 4]},
            r"track 4 is outside the piece, which has 3 tracks \(1-3\)",
        ),
        (CHORALE, {"infill_tracks": 5, "infill_bars": (1, 1)}, r"4 tracks \(1-4\)"),
        (BAND, {"infill_bars": (1, 1), "max_new_tokens": 4}, "cannot hold the 3 fills"),
        (None, {"infill_bars": (1, 1)}, "need a primer"),
    ],
)
def test_errors_about_the_piece(generator, valid, primer, options, message):
    with pytest.raises(ValueError, match=message) as error:
        generator(None if primer is None else str(valid / primer), **options)
    assert "\n" not in str(error.value)


def test_infill_tracks_are_checked_before_the_primer_is_read(generator, tmp_path):
    missing = str(tmp_path / "missing.mid")  # reading it would fail with another error
    with pytest.raises(ValueError, match=r"infill_tracks must be .* got \[0\]"):
        generator(missing, infill_tracks=[0])


def test_tokenizers_without_infill_tokens_are_refused(valid):
    remi = MidiTokenizer()
    generator = pipeline("midi-generation", model=tiny_model(*_gpt(), remi), tokenizer=remi)
    with pytest.raises(ValueError, match="use the mmm preset"):
        generator(str(valid / BAND), infill_bars=(1, 1))
    with pytest.raises(ValueError, match="mmm preset"):
        DataCollatorForInfilling(remi, 128)
    dataset = datasets.Dataset.from_dict({"midi": [(valid / BAND).read_bytes()]})
    with pytest.raises(ValueError, match="mode 'bars' needs a multi-track tokenizer"):
        tokenize_dataset(dataset, remi, 128, mode="bars")


def test_parse_and_select_errors(tok, vocab, valid):
    prompt = build_infill_prompt(tok, valid / BAND, bars=(1, 1))
    with pytest.raises(ValueError, match="already holds Infill_Bar"):
        parse_piece(vocab, prompt.input_ids)
    with pytest.raises(ValueError, match="outside any Track_Start"):
        parse_piece(vocab, tok.convert_tokens_to_ids(["Bar_None", "TimeSig_4/4"]))
    piece = parse_piece(vocab, tok.encode_midi(valid / BAND))
    with pytest.raises(ValueError, match="Give the bars to infill"):
        select_holes(piece)
    with pytest.raises(ValueError, match="Give infill_programs or infill_tracks, not both"):
        select_holes(piece, programs=[0], tracks=[1])
    with pytest.raises(ValueError, match=r"infill_tracks: track 9 .* 3 tracks \(1-3\)"):
        build_infill_prompt(tok, valid / BAND, bars=(1, 1), tracks=9)
    with pytest.raises(ValueError, match="probability must be in"):
        DataCollatorForInfilling(tok, 128, infill_probability=1.5)
