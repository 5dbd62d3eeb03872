"""Pieces of exactly N bars: ``max_bars`` of the grammar processor and ``num_bars`` of the
pipeline, with random logits and untrained tiny models, for every scheme with Bar tokens (REMI,
BPE included); schemes without bars are refused."""

from __future__ import annotations

import pytest
import torch
from test_generation_grammar import sample_random
from test_generation_pipeline import GENERATIVE, GPT, tiny_model
from transformers import pipeline

import midiformers  # noqa: F401  (registers the task)
from midiformers import MidiTokenizer
from midiformers.generation import (
    MidiGrammar,
    MidiGrammarLogitsProcessor,
    UnsupportedGrammarError,
    check_sequence,
)
from midiformers.generation.validation import expand_tokens

BAR_SCHEMES = ["remi", "remi+bpe"]
NO_BAR_SCHEMES = ["tsd", "midilike", "performance", "structured"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizers(valid_midi_paths) -> dict[str, MidiTokenizer]:
    result = {"remi": MidiTokenizer(preset="remi")}
    bpe = MidiTokenizer(preset="remi")
    bpe.train_bpe(valid_midi_paths[:4], vocab_size=len(bpe) + 150)
    result["remi+bpe"] = bpe
    return result


@pytest.fixture(scope="module")
def primer_path(valid_midi_paths):
    """A real piece with tempo and meter changes."""
    return next(p for p in valid_midi_paths if p.name.startswith("tempo_and_meter"))


def bars_written(tokenizer: MidiTokenizer, ids: list[int]) -> int:
    """Bar tokens in the ids (BPE tokens expanded)."""
    return sum(token == "Bar_None" for i in ids for token in expand_tokens(tokenizer, i))


def bars_decoded(tokenizer: MidiTokenizer, ids: list[int]) -> int:
    """Bars of the decoded piece, encoded again with a plain REMI tokenizer."""
    score = tokenizer.to_score(ids)
    plain = MidiTokenizer(preset="remi")
    return bars_written(plain, plain.encode_midi(score))


def bar_starts(score, num_bars: int) -> list[int]:
    """Ticks where bars 1 .. num_bars + 1 start, from the score's meters."""
    meters = sorted((ts.time, ts.numerator, ts.denominator) for ts in score.time_signatures)
    starts, tick = [], 0
    for _ in range(num_bars + 1):
        starts.append(tick)
        numerator, denominator = next(
            ((n, d) for time, n, d in reversed(meters) if time <= tick), (4, 4)
        )
        tick += numerator * score.ticks_per_quarter * 4 // denominator
    return starts


def assert_bars(tokenizer: MidiTokenizer, rows: list[list[int]], num_bars: int) -> None:
    """Valid, N Bar tokens, N bars when decoded and encoded again, every note ends by the end
    of bar N and one starts in it."""
    for row in rows:
        check = check_sequence(tokenizer, row)
        assert check.is_valid, check.errors
        assert bars_written(tokenizer, row) == num_bars
        assert bars_decoded(tokenizer, row) == num_bars
        score = tokenizer.to_score(row)
        starts = bar_starts(score, num_bars)
        notes = [note for track in score.tracks for note in track.notes]
        assert max(note.end for note in notes) <= starts[-1]
        assert max(note.time for note in notes) >= starts[-2]


@pytest.mark.parametrize("name", BAR_SCHEMES)
@pytest.mark.parametrize(("num_bars", "new_tokens"), [(1, 40), (3, 120), (6, 60), (12, 30)])
def test_random_logits_end_after_exactly_n_bars(tokenizers, name, num_bars, new_tokens):
    """Generous and tight budgets (12 bars need at least 29 tokens here): always N bars, the
    last with a note, and EOS only there."""
    tokenizer = tokenizers[name]
    processor = MidiGrammarLogitsProcessor(tokenizer, max_new_tokens=new_tokens, max_bars=num_bars)
    batch = sample_random(tokenizer, processor, 40, new_tokens, seed=num_bars)
    assert_bars(tokenizer, batch.tolist(), num_bars)
    assert processor.num_fallbacks == 0
    for row in batch.tolist():
        if tokenizer.eos_token_id in row:  # nothing after the end but padding (or EOS)
            end = row.index(tokenizer.eos_token_id)
            assert set(row[end + 1 :]) <= {tokenizer.pad_token_id, tokenizer.eos_token_id}


@pytest.mark.parametrize("name", BAR_SCHEMES)
def test_the_bar_limit_never_masks_real_pieces(tokenizers, valid_midi_paths, name):
    """Teacher forcing with max_bars = each piece's own bar count (meter changes, long notes
    ringing over bar lines, BPE merges across bars): every real token is allowed, and EOS is
    allowed at the end but not one bar earlier."""
    tokenizer = tokenizers[name]
    for path in valid_midi_paths:
        piece = tokenizer.encode_midi(path)
        bars = bars_written(tokenizer, piece)
        ids = torch.tensor([[tokenizer.bos_token_id, *piece]])
        processor = MidiGrammarLogitsProcessor(tokenizer, max_bars=bars)
        for t in range(1, ids.shape[1]):
            assert processor.allowed_tokens(ids[:, :t])[0, ids[0, t]], (path.name, t)
        assert processor.allowed_tokens(ids)[0, tokenizer.eos_token_id]
        more = MidiGrammarLogitsProcessor(tokenizer, max_bars=bars + 1)
        assert not more.allowed_tokens(ids)[0, tokenizer.eos_token_id]


@pytest.mark.parametrize(
    ("config_class", "model_class"), GENERATIVE, ids=[m.__name__ for _, m in GENERATIVE]
)
def test_untrained_models_generate_exactly_n_bars(config_class, model_class, tokenizers):
    """generate() with the processor (budget read from generate), and the pipeline's
    num_bars, whose default budget outgrows the tiny models' window (64 positions)."""
    tokenizer = tokenizers["remi"]
    model = tiny_model(config_class, model_class, tokenizer)
    generator = pipeline("midi-generation", model=model, tokenizer=tokenizer)
    pieces = generator(num_bars=2, num_return_sequences=3, seed=0)
    assert_bars(tokenizer, [piece["token_ids"] for piece in pieces], 2)
    if model_class is not GPT[1]:
        return
    torch.manual_seed(0)
    output = model.generate(
        torch.full((16, 1), tokenizer.bos_token_id),
        do_sample=True,
        max_new_tokens=50,
        logits_processor=[MidiGrammarLogitsProcessor(tokenizer, max_bars=4)],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    assert_bars(tokenizer, output.tolist(), 4)
    beams = model.generate(  # beam search reorders rows: the bar counts follow
        torch.full((2, 1), tokenizer.bos_token_id),
        num_beams=3,
        do_sample=True,
        max_new_tokens=40,
        logits_processor=[MidiGrammarLogitsProcessor(tokenizer, max_bars=3)],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    assert_bars(tokenizer, beams.tolist(), 3)


def test_a_primer_counts_and_may_not_exceed_the_bars(tokenizers, primer_path):
    tokenizer = tokenizers["remi"]
    model = tiny_model(*GPT, tokenizer)
    generator = pipeline("midi-generation", model=model, tokenizer=tokenizer)
    primer = tokenizer.encode_midi(primer_path)
    head = primer[: primer.index(tokenizer.convert_tokens_to_ids("Bar_None"), 1)]  # one bar
    piece = generator(torch.tensor(head), num_bars=3, seed=0)
    assert piece["token_ids"][1 : 1 + len(head)] == head
    assert_bars(tokenizer, [piece["token_ids"]], 3)
    bars = bars_written(tokenizer, primer)
    with pytest.raises(ValueError, match=f"The prompt already has {bars} bars, more than max_b"):
        generator(str(primer_path), num_bars=bars - 1)


def test_a_budget_too_small_for_the_bars_is_refused(tokenizers):
    tokenizer = tokenizers["remi"]
    model = tiny_model(*GPT, tokenizer)
    generator = pipeline("midi-generation", model=model, tokenizer=tokenizer)
    # Bar TimeSig per bar, then Position Program Pitch Velocity Duration in the last one
    with pytest.raises(ValueError, match="max_bars=8 needs at least 21 new tokens .* leaves 20"):
        generator(num_bars=8, max_new_tokens=20)


@pytest.mark.parametrize("preset", NO_BAR_SCHEMES)
def test_schemes_without_bars_are_refused(preset):
    tokenizer = MidiTokenizer(preset=preset)
    with pytest.raises(UnsupportedGrammarError, match="max_bars needs a tokenization with Bar"):
        MidiGrammarLogitsProcessor(tokenizer, max_bars=4)
    model = tiny_model(*GPT, tokenizer)
    generator = pipeline("midi-generation", model=model, tokenizer=tokenizer)
    with pytest.raises(UnsupportedGrammarError, match="has none: limit the length with max_new"):
        generator(num_bars=4)


def test_bad_bar_counts(tokenizers):
    grammar = MidiGrammar.for_tokenizer(tokenizers["remi"])
    for bad in (0, -2, 2.5, True, "4"):
        with pytest.raises(ValueError, match="max_bars must be a positive integer"):
            grammar.with_max_bars(bad)
    assert grammar.with_max_bars(None) is grammar and grammar.max_bars is None
    assert grammar.with_max_bars(3).max_bars == 3
    model = tiny_model(*GPT, tokenizers["remi"])
    generator = pipeline("midi-generation", model=model, tokenizer=tokenizers["remi"])
    with pytest.raises(ValueError, match="num_bars needs the grammar"):
        generator(num_bars=2, grammar=False)
    state = grammar.initial_state(1, torch.device("cpu"))
    with pytest.raises(ValueError, match="does not count bars"):
        grammar.with_max_bars(2).allowed_tokens(state)


def test_num_bars_set_when_the_pipeline_is_built(tokenizers):
    tokenizer = tokenizers["remi"]
    model = tiny_model(*GPT, tokenizer)
    generator = pipeline("midi-generation", model=model, tokenizer=tokenizer, num_bars=4)
    assert_bars(tokenizer, [generator(max_new_tokens=60, seed=0)["token_ids"]], 4)
    assert_bars(tokenizer, [generator(max_new_tokens=60, seed=0, num_bars=2)["token_ids"]], 2)
