"""Instrument sets: ``programs`` of the grammar processor and the pipeline, with random logits
and untrained tiny models, for every preset (all write Program tokens; drums are program -1)."""

from __future__ import annotations

import miditok
import pytest
import torch
from test_generation_grammar import sample_random
from test_generation_pipeline import GPT, tiny_model
from transformers import pipeline

import midiformers  # noqa: F401  (registers the task)
from midiformers import MidiTokenizer
from midiformers.generation import (
    MidiGrammar,
    MidiGrammarLogitsProcessor,
    UnsupportedGrammarError,
    check_sequence,
)

SCHEMES = ["remi", "remi+bpe", "tsd", "midilike", "performance", "structured"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizers(valid_midi_paths) -> dict[str, MidiTokenizer]:
    result = {name: MidiTokenizer(preset=name) for name in SCHEMES if "+" not in name}
    bpe = MidiTokenizer(preset="remi")
    bpe.train_bpe(valid_midi_paths[:4], vocab_size=len(bpe) + 150)
    result["remi+bpe"] = bpe
    return result


def programs_played(tokenizer: MidiTokenizer, ids: list[int]) -> set[int]:
    """Programs of the decoded tracks that hold notes (-1: drums)."""
    score = tokenizer.to_score(ids)
    return {-1 if t.is_drum else t.program for t in score.tracks if t.note_num()}


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("programs", [[0, 33, -1], ["Electric Bass (finger)"], [-1]])
def test_random_logits_play_only_the_asked_programs(tokenizers, name, programs):
    tokenizer = tokenizers[name]
    processor = MidiGrammarLogitsProcessor(tokenizer, max_new_tokens=60, programs=programs)
    batch = sample_random(tokenizer, processor, 16, 60, seed=len(programs))
    wanted = set(processor.grammar.programs)
    seen: set[int] = set()
    for row in batch.tolist():
        check = check_sequence(tokenizer, row)
        assert check.is_valid, check.errors
        played = programs_played(tokenizer, row)
        assert played <= wanted, (played, wanted)
        seen |= played
    assert seen  # notes were written
    assert processor.num_fallbacks == 0


def test_without_the_set_random_logits_play_other_programs(tokenizers):
    """The test above can fail: unconstrained, random logits pick other programs."""
    tokenizer = tokenizers["tsd"]
    processor = MidiGrammarLogitsProcessor(tokenizer, max_new_tokens=60)
    batch = sample_random(tokenizer, processor, 4, 60)
    played = set().union(*(programs_played(tokenizer, row) for row in batch.tolist()))
    assert played - {0, 33, -1}


def test_untrained_model_and_pipeline_programs(tokenizers):
    tokenizer = tokenizers["remi"]
    model = tiny_model(*GPT, tokenizer)
    generator = pipeline("midi-generation", model=model, tokenizer=tokenizer)
    pieces = generator(
        programs=["Acoustic Grand Piano", "drums"],
        max_new_tokens=60,
        num_return_sequences=4,
        seed=0,
    )
    for piece in pieces:
        assert piece["num_dropped_tokens"] == 0
        assert programs_played(tokenizer, piece["token_ids"]) <= {0, -1}
    assert any(piece["num_notes"] for piece in pieces)
    tsd = tokenizers["performance"]
    model = tiny_model(*GPT, tsd)
    torch.manual_seed(0)
    processor = MidiGrammarLogitsProcessor(tsd, programs=[40])
    output = model.generate(
        torch.full((6, 1), tsd.bos_token_id),
        do_sample=True,
        max_new_tokens=50,
        logits_processor=[processor],
    )
    for row in output.tolist():
        assert programs_played(tsd, row) <= {40}


@pytest.mark.parametrize(
    ("programs", "message"),
    [
        (["Kazoo"], "unknown instrument 'Kazoo'"),
        ([128], "128 is not a General MIDI program"),
        ([], "at least one program"),
        ([1.5], "neither a program number"),
    ],
)
def test_bad_programs_are_refused(tokenizers, programs, message):
    with pytest.raises(ValueError, match=message):
        MidiGrammar.for_tokenizer(tokenizers["remi"]).with_programs(programs)
    generator_error = pytest.raises(ValueError, match=message)
    model = tiny_model(*GPT, tokenizers["remi"])
    generator = pipeline("midi-generation", model=model, tokenizer=tokenizers["remi"])
    with generator_error:
        generator(programs=programs)


def test_a_tokenizer_without_program_tokens_is_refused():
    """Every preset has Program tokens; a bare miditok tokenizer may not (the grammar refuses
    it whole)."""
    tokenizer = miditok.TSD(miditok.TokenizerConfig(use_programs=False))
    with pytest.raises(UnsupportedGrammarError, match="use_programs=False"):
        MidiGrammarLogitsProcessor(tokenizer, programs=[0])


@pytest.mark.parametrize("name", ["midilike", "performance"])
def test_a_prompt_note_of_another_program_is_closed(tokenizers, name):
    """MIDILike: a prompt leaves a Program_5 note sounding; with programs=[0] it still gets
    its NoteOff (no fallback), and every new note is a piano note."""
    tokenizer = tokenizers[name]
    vocab = tokenizer.miditok.vocab
    velocity = [t for t in vocab if t.startswith("Velocity_")][:1]  # none in performance
    prompt = ["Program_5", "NoteOn_60", *velocity]
    prompt.append("TimeShift_1.0.8" if name == "midilike" else "TimeShift_1.0.10")
    prompt_ids = tokenizer.convert_tokens_to_ids(prompt)
    ids = torch.tensor([[tokenizer.bos_token_id, *prompt_ids]]).repeat(8, 1)
    processor = MidiGrammarLogitsProcessor(tokenizer, max_new_tokens=40, programs=[0])
    batch = sample_random(tokenizer, processor, 8, 40, seed=1, prompt=ids)
    assert processor.num_fallbacks == 0
    for row in batch.tolist():
        assert check_sequence(tokenizer, row).is_valid
        score = tokenizer.to_score(row)
        notes = {(t.program, n.time, n.pitch) for t in score.tracks for n in t.notes}
        assert (5, 0, 60) in notes  # the prompt's note, closed
        assert {program for program, _, _ in notes} <= {0, 5}
        assert sum(program == 5 for program, _, _ in notes) == 1
