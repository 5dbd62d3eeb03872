"""Pieces of about S seconds: ``max_seconds`` of the grammar processor and ``duration_seconds``
of the pipeline, with random logits and untrained tiny models, for every scheme without BPE
(REMI through Bar / Position, TSD, MIDILike, performance and Structured through TimeShift, all
at the tempo of their Tempo tokens); BPE vocabularies are refused."""

from __future__ import annotations

import math

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

SCHEMES = ["remi", "tsd", "midilike", "performance", "structured"]
SLACK = 0.01  # seconds: tick rounding of the decoded times


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, MidiTokenizer]:
    return {name: MidiTokenizer(preset=name) for name in SCHEMES}


def longest_beat(score) -> float:
    """Seconds of the longest beat the piece has (any of its tempos with any of its meters;
    120 bpm and 4/4 where it has none)."""
    tempi = [t.qpm for t in score.tempos] or [120.0]
    denominators = [ts.denominator for ts in score.time_signatures] or [4]
    return 60.0 / min(tempi) * 4.0 / min(denominators)


def assert_seconds(tokenizer: MidiTokenizer, rows: list[list[int]], seconds: float) -> list:
    """Valid, with notes, and the decoded piece ends by ``seconds`` and within a beat of it."""
    ends = []
    for row in rows:
        check = check_sequence(tokenizer, row)
        assert check.is_valid, check.errors
        score = tokenizer.to_score(row)
        assert score.note_num() > 0
        end = score.to("second").end()
        assert end <= seconds + SLACK, (end, seconds)
        assert end >= seconds - longest_beat(score) - SLACK, (end, seconds, longest_beat(score))
        ends.append(end)
    return ends


@pytest.mark.parametrize("name", SCHEMES)
def test_random_logits_end_at_about_s_seconds(tokenizers, name):
    """Budgets generous enough for random logits (REMI writes many positions per bar)."""
    tokenizer = tokenizers[name]
    seconds, budget = (4.0, 600) if name == "remi" else (10.0, 300)
    processor = MidiGrammarLogitsProcessor(tokenizer, max_new_tokens=budget, max_seconds=seconds)
    batch = sample_random(tokenizer, processor, 12, budget, seed=3)
    assert_seconds(tokenizer, batch.tolist(), seconds)
    assert processor.num_fallbacks == 0


@pytest.mark.parametrize("name", ["remi", "midilike"])
def test_a_short_budget_still_ends_by_s_seconds(tokenizers, name):
    """A budget too small to reach S (the budget is not time-aware beyond a rough hurry): no
    note past S, and the rows that end with EOS end within a beat of S."""
    tokenizer = tokenizers[name]
    processor = MidiGrammarLogitsProcessor(tokenizer, max_new_tokens=60, max_seconds=20.0)
    batch = sample_random(tokenizer, processor, 12, 60, seed=5)
    for row in batch.tolist():
        assert check_sequence(tokenizer, row).is_valid
        score = tokenizer.to_score(row)
        end = score.to("second").end()
        assert end <= 20.0 + SLACK
        if tokenizer.eos_token_id in row:
            assert end >= 20.0 - longest_beat(score) - SLACK
    assert processor.num_fallbacks == 0


def test_without_the_limit_random_pieces_run_past_it(tokenizers):
    """The test above can fail: unconstrained, random TSD pieces outlast 10 seconds."""
    tokenizer = tokenizers["tsd"]
    processor = MidiGrammarLogitsProcessor(tokenizer, max_new_tokens=400)
    batch = sample_random(tokenizer, processor, 4, 400, seed=3)
    ends = [tokenizer.to_score(row).to("second").end() for row in batch.tolist()]
    assert max(ends) > 10.0 + SLACK


@pytest.mark.parametrize("name", SCHEMES)
def test_the_clock_follows_real_pieces(tokenizers, valid_midi_paths, name):
    """Teacher forcing on every fixture (tempo and meter changes, drums, long notes) with a
    limit well past the piece: no real token is masked, and the latest note end the grammar
    tracks is the decoded piece's end in seconds."""
    tokenizer = tokenizers[name]
    for path in valid_midi_paths:
        piece = tokenizer.encode_midi(path)
        end = tokenizer.to_score(piece).to("second").end()
        ids = torch.tensor([[tokenizer.bos_token_id, *piece]])
        processor = MidiGrammarLogitsProcessor(tokenizer, max_seconds=end + 30.0)
        allowed = torch.stack(
            [processor.allowed_tokens(ids[:, :t])[0] for t in range(1, ids.shape[1])]
        )
        assert bool(allowed[torch.arange(len(piece)), ids[0, 1:]].all()), path.name
        with torch.inference_mode():  # the cached states were made in it
            state = processor.state_for(ids)
        assert math.isclose(float(state.clock[0, 6]), end, abs_tol=0.02), (path.name, end)


@pytest.mark.parametrize(
    ("config_class", "model_class"), GENERATIVE, ids=[m.__name__ for _, m in GENERATIVE]
)
def test_untrained_models_generate_about_s_seconds(config_class, model_class, tokenizers):
    """The pipeline's duration_seconds (default budget past the tiny models' 64-token window;
    REMI too for the GPT), and generate() with the processor (budget read from generate)."""
    tokenizer = tokenizers["tsd"]
    model = tiny_model(config_class, model_class, tokenizer)
    generator = pipeline("midi-generation", model=model, tokenizer=tokenizer)
    pieces = generator(duration_seconds=3, num_return_sequences=3, seed=0)
    assert_seconds(tokenizer, [piece["token_ids"] for piece in pieces], 3.0)
    if model_class is not GPT[1]:
        return
    remi = tokenizers["remi"]
    generator = pipeline(
        "midi-generation", model=tiny_model(config_class, model_class, remi), tokenizer=remi
    )
    pieces = generator(duration_seconds=2, num_return_sequences=3, seed=0)
    assert_seconds(remi, [piece["token_ids"] for piece in pieces], 2.0)
    model = tiny_model(config_class, model_class, tokenizer, max_position_embeddings=256)
    torch.manual_seed(0)
    processor = MidiGrammarLogitsProcessor(tokenizer, max_seconds=2.0)
    output = model.generate(
        torch.full((6, 1), tokenizer.bos_token_id),
        do_sample=True,
        max_new_tokens=250,
        logits_processor=[processor],
    )
    assert_seconds(tokenizer, output.tolist(), 2.0)


def test_bpe_and_bad_values_are_refused(tokenizers, valid_midi_paths):
    bpe = MidiTokenizer(preset="tsd")
    bpe.train_bpe(valid_midi_paths[:2], vocab_size=len(bpe) + 50)
    with pytest.raises(UnsupportedGrammarError, match="BPE"):
        MidiGrammarLogitsProcessor(bpe, max_seconds=10)
    grammar = MidiGrammar.for_tokenizer(tokenizers["tsd"])
    for bad in (0, -1.5, float("nan"), float("inf"), True, "10"):
        with pytest.raises(ValueError, match="max_seconds must be a positive number"):
            grammar.with_max_seconds(bad)
    model = tiny_model(*GPT, tokenizers["tsd"])
    generator = pipeline("midi-generation", model=model, tokenizer=tokenizers["tsd"])
    with pytest.raises(ValueError, match="duration_seconds needs the grammar"):
        generator(duration_seconds=5, grammar=False)
    with pytest.raises(ValueError, match="num_bars or duration_seconds, not both"):
        generator(duration_seconds=5, num_bars=2)
    with pytest.raises(ValueError, match="max_bars or max_seconds, not both"):
        MidiGrammarLogitsProcessor(tokenizers["remi"], max_bars=2, max_seconds=5)


def test_a_prompt_longer_than_the_limit_is_refused(tokenizers, valid_midi_paths):
    tokenizer = tokenizers["tsd"]
    piece = tokenizer.encode_midi(valid_midi_paths[0])
    ids = torch.tensor([[tokenizer.bos_token_id, *piece]])
    processor = MidiGrammarLogitsProcessor(tokenizer, max_new_tokens=10, max_seconds=1.0)
    with pytest.raises(ValueError, match="prompt already lasts .* more than max_seconds=1"):
        processor(ids, torch.zeros(1, len(tokenizer)))
