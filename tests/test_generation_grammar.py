"""MidiGrammarLogitsProcessor: random and real sequences, budgets, beams, BPE, bad input.

"Valid" is checked three independent ways: the plain-Python reference checker
(``check_sequence``), miditok's own ``tokens_errors``, and the decoder itself (every note token
becomes a note of the decoded score).
"""

from __future__ import annotations

import logging

import miditok
import pytest
import torch
from miditok import TokSequence
from test_tokenization import REAL_METERS, _metered_score

from midiformers import MidiTokenizer
from midiformers.generation import (
    MidiGrammar,
    MidiGrammarLogitsProcessor,
    UnsupportedGrammarError,
    check_sequence,
)

logger = logging.getLogger(__name__)

SCHEMES = ["remi", "tsd", "midilike", "performance", "structured"]
BPE_SCHEMES = ["remi", "tsd", "midilike", "performance"]
NUM_SEQUENCES = 200


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizers(valid_midi_paths) -> dict[str, MidiTokenizer]:
    """One tokenizer per scheme, plus BPE versions trained on four fixtures ("remi+bpe")."""
    result = {name: MidiTokenizer(preset=name) for name in SCHEMES}
    for name in BPE_SCHEMES:
        tokenizer = MidiTokenizer(preset=name)
        tokenizer.train_bpe(valid_midi_paths[:4], vocab_size=len(tokenizer) + 100)
        result[f"{name}+bpe"] = tokenizer
    return result


ALL_TOKENIZERS = SCHEMES + [f"{name}+bpe" for name in BPE_SCHEMES]


def sample_random(
    tokenizer: MidiTokenizer,
    processor: MidiGrammarLogitsProcessor | None,
    batch: int,
    new_tokens: int,
    seed: int = 0,
    prompt: torch.Tensor | None = None,
) -> torch.LongTensor:
    """Sample from random logits (a stand-in for an untrained model), with or without the mask."""
    generator = torch.Generator().manual_seed(seed)
    ids = prompt if prompt is not None else torch.full((batch, 1), tokenizer.bos_token_id)
    for _ in range(new_tokens):
        scores = torch.randn(ids.shape[0], len(tokenizer), generator=generator) * 3
        if processor is not None:
            scores = processor(ids, scores)
        ids = torch.cat([ids, torch.multinomial(scores.softmax(-1), 1, generator=generator)], 1)
    return ids


def without_special(tokenizer: MidiTokenizer, ids: list[int]) -> list[int]:
    return [i for i in ids if i not in set(tokenizer.all_special_ids)]


def decoded(tokenizer: MidiTokenizer, rows: list[list[int]]) -> tuple[int, int]:
    """(notes in the decoded scores, sequences miditok's ``tokens_errors`` finds errors in).

    miditok's MIDILike decoder costs ~50 ms per call whatever the length, so MIDILike rows are
    decoded as one piece, joined by a TimeShift (allowed after every token a valid row ends
    with and before every token it starts with; every note is closed at each row's end), and
    with program changes by ``TimeShift Program_0 TimeShift``, as each row starts on program 0.
    """
    rows = [without_special(tokenizer, row) for row in rows]
    if type(tokenizer.miditok).__name__ == "MIDILike":
        shift = next(t for t in tokenizer.miditok.vocab if t.startswith("TimeShift_"))
        separator = [shift]
        if tokenizer.miditok.config.program_changes:
            separator = [shift, "Program_0", shift]
        separator = tokenizer.convert_tokens_to_ids(separator)
        rows = [[i for row in rows for i in [*row, *separator]]]
    notes = errors = 0
    for row in rows:
        notes += tokenizer.to_score(row).note_num()
        if row:
            sequence = TokSequence(ids=row, are_ids_encoded=tokenizer.miditok.is_trained)
            errors += tokenizer.miditok.tokens_errors(sequence) > 0
    return notes, errors


def summarize(tokenizer: MidiTokenizer, batch: torch.Tensor, decode: bool = True) -> dict:
    """Invalid sequences and dropped tokens (reference checker); with ``decode``, also notes
    lost by the decoder and miditok's own error count."""
    rows = batch.tolist()
    checks = [check_sequence(tokenizer, row) for row in rows]
    totals = {
        "invalid": sum(not check.is_valid for check in checks),
        "dropped": sum(check.num_dropped for check in checks),
        "note_tokens": sum(check.num_note_tokens for check in checks),
    }
    if decode:
        notes, errors = decoded(tokenizer, rows)
        totals.update(notes=notes, lost_notes=totals["note_tokens"] - notes, miditok_errors=errors)
    return totals


# --------------------------------------------------------------------------- random logits


@pytest.mark.parametrize("name", ALL_TOKENIZERS)
def test_random_sequences_decode_without_dropped_tokens(tokenizers, name, record_property):
    tokenizer = tokenizers[name]
    new_tokens = 48
    processor = MidiGrammarLogitsProcessor(tokenizer, max_new_tokens=new_tokens)
    constrained = sample_random(tokenizer, processor, NUM_SEQUENCES, new_tokens)
    free = sample_random(tokenizer, None, NUM_SEQUENCES, new_tokens)

    with_grammar = summarize(tokenizer, constrained)
    without = summarize(tokenizer, free, decode=False)
    record_property("without_grammar", without)
    logger.warning("%s without the grammar processor: %s", name, without)

    assert with_grammar["invalid"] == with_grammar["dropped"] == 0, with_grammar
    assert with_grammar["lost_notes"] == 0 and with_grammar["miditok_errors"] == 0
    assert with_grammar["notes"] > NUM_SEQUENCES  # the constraint does not just stop early
    assert processor.num_fallbacks == 0
    assert constrained.shape == (NUM_SEQUENCES, new_tokens + 1)


@pytest.mark.parametrize("name", ["remi", "midilike", "performance", "structured", "midilike+bpe"])
def test_tight_budgets_close_every_note(tokenizers, name):
    """With 1 to 10 new tokens the piece still ends complete: notes closed, nothing dangling."""
    tokenizer = tokenizers[name]
    for new_tokens in range(1, 11):
        processor = MidiGrammarLogitsProcessor(tokenizer, max_new_tokens=new_tokens)
        batch = sample_random(tokenizer, processor, 24, new_tokens, seed=new_tokens)
        totals = summarize(tokenizer, batch)
        assert totals["invalid"] == 0 and totals["lost_notes"] == 0, (new_tokens, totals)
        assert processor.num_fallbacks == 0


def test_notes_left_sounding_by_the_prompt_are_closed(tokenizers):
    """A prompt that opens notes right before the limit: the processor closes all of them
    (its budget bound is two tokens per note plus one TimeShift: 9 here)."""
    tokenizer = tokenizers["performance"]
    prompt = tokenizer.convert_tokens_to_ids(
        ["BOS_None", "Program_0", "NoteOn_60", "NoteOn_64", "NoteOn_67", "Program_-1", "DrumOn_36"]
    )
    prompt = torch.tensor([prompt] * 16)
    processor = MidiGrammarLogitsProcessor(tokenizer, max_new_tokens=9)
    batch = sample_random(tokenizer, processor, 16, 9, prompt=prompt)
    for row in batch.tolist():
        assert check_sequence(tokenizer, row).is_valid
        assert tokenizer.to_score(row).note_num() == 4


# --------------------------------------------------------------------------- real pieces


@pytest.mark.parametrize("name", ALL_TOKENIZERS)
def test_real_pieces_are_never_masked(tokenizers, valid_midi_paths, name):
    """Teacher forcing on the fixtures: every real next token is allowed (not over-strict), and
    the reference checker finds no error in real encodings."""
    tokenizer = tokenizers[name]
    pieces = [[tokenizer.bos_token_id, *tokenizer.encode_midi(path)] for path in valid_midi_paths]
    assert_never_masked(tokenizer, pieces)


@pytest.mark.parametrize("name", ["remi", "tsd", "midilike", "remi+bpe"])
def test_real_meters_are_never_masked(tokenizers, name):
    """Bars of 2/2 ... 4/2, 5/8 ... 9/8 and 7/4 have the lengths the grammar expects."""
    tokenizer = tokenizers[name]
    scores = [_metered_score([meter]) for meter in REAL_METERS] + [_metered_score(REAL_METERS)]
    assert_never_masked(
        tokenizer, [[tokenizer.bos_token_id, *tokenizer.encode_midi(s)] for s in scores]
    )


def assert_never_masked(tokenizer: MidiTokenizer, pieces: list[list[int]]) -> None:
    """Teacher forcing: the checker finds no error and the processor allows every next token."""
    for piece in pieces:
        assert check_sequence(tokenizer, piece).errors == []
    rows = [piece[:300] for piece in pieces]
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)  # PAD changes no state
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    processor = MidiGrammarLogitsProcessor(tokenizer)
    for t in range(1, width):
        allowed = processor.allowed_tokens(ids[:, :t])
        inside = torch.tensor([t < len(row) for row in rows])
        masked = inside & ~allowed[torch.arange(len(rows)), ids[:, t]]
        assert not bool(masked.any()), [
            tokenizer.convert_ids_to_tokens(rows[i][max(0, t - 4) : t + 1])
            for i in torch.nonzero(masked).flatten().tolist()
        ]


# --------------------------------------------------------------------------- state handling


def test_state_follows_reordered_rows_and_left_padding(tokenizers):
    """Beam search reorders rows between calls; left padding must not change a row's state."""
    tokenizer = tokenizers["midilike"]
    processor = MidiGrammarLogitsProcessor(tokenizer, max_new_tokens=40)
    batch = sample_random(tokenizer, processor, 6, 30, seed=3)
    incremental = MidiGrammarLogitsProcessor(tokenizer, max_length=41)
    incremental.allowed_tokens(batch[:, :-1])
    order = torch.tensor([5, 0, 0, 3, 2, 1])  # what beam search does
    reordered = batch[order]
    fresh = MidiGrammarLogitsProcessor(tokenizer, max_length=41)
    assert torch.equal(incremental.allowed_tokens(reordered), fresh.allowed_tokens(reordered))

    padded = torch.cat([torch.full((6, 3), tokenizer.pad_token_id), batch], dim=1)
    shifted = MidiGrammarLogitsProcessor(tokenizer, max_length=44)
    assert torch.equal(shifted.allowed_tokens(padded), fresh.allowed_tokens(batch))


def test_context_ids_stand_for_the_tokens_before_the_window(tokenizers):
    tokenizer = tokenizers["remi"]
    batch = sample_random(tokenizer, MidiGrammarLogitsProcessor(tokenizer), 4, 60, seed=5)
    whole = MidiGrammarLogitsProcessor(tokenizer, max_length=100)
    window = MidiGrammarLogitsProcessor(tokenizer, max_length=100, context_ids=batch[:, :40])
    assert torch.equal(whole.allowed_tokens(batch), window.allowed_tokens(batch[:, 40:]))
    assert whole.remaining(batch) == window.remaining(batch[:, 40:]) == 39
    with pytest.raises(ValueError, match="context_ids has 4 rows for a batch of 2"):
        window.reset()
        window.allowed_tokens(batch[:2, 40:])


def test_eos_waits_for_a_complete_note_and_ends_the_row(tokenizers):
    tokenizer = tokenizers["remi"]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    processor = MidiGrammarLogitsProcessor(tokenizer)
    tokens = ["BOS_None", "Bar_None", "TimeSig_4/4", "Position_0", "Program_0", "Pitch_60"]
    ids = tokenizer.convert_tokens_to_ids(tokens)
    assert not processor.allowed_tokens(torch.tensor([ids[:4]]))[0, eos]  # no note yet
    assert not processor.allowed_tokens(torch.tensor([ids]))[0, eos]  # note incomplete
    done = ids + tokenizer.convert_tokens_to_ids(["Velocity_63", "Duration_1.0.8"])
    assert processor.allowed_tokens(torch.tensor([done]))[0, eos]
    assert MidiGrammarLogitsProcessor(tokenizer, allow_empty=True).allowed_tokens(
        torch.tensor([ids[:4]])
    )[0, eos]
    ended = processor.allowed_tokens(torch.tensor([done + [eos]]))[0]
    assert ended.nonzero().flatten().tolist() == sorted([eos, pad])


def test_remi_positions_move_forward_within_the_bar(tokenizers):
    tokenizer = tokenizers["remi"]
    processor = MidiGrammarLogitsProcessor(tokenizer)
    prefix = ["BOS_None", "Bar_None", "TimeSig_3/4", "Position_12", "Program_0", "Pitch_60"]
    prefix += ["Velocity_63", "Duration_1.0.8"]
    allowed = processor.allowed_tokens(torch.tensor([tokenizer.convert_tokens_to_ids(prefix)]))[0]
    vocab = tokenizer.get_vocab()
    positions = {int(t.split("_")[1]) for t, i in vocab.items() if t.startswith("Position_")}
    ok = {p for p in positions if allowed[vocab[f"Position_{p}"]]}
    assert ok == set(range(13, 24))  # after 12, inside a 3/4 bar of 24 positions
    assert allowed[vocab["Bar_None"]] and allowed[vocab["Program_5"]]
    assert not allowed[vocab["Pitch_60"]] and not allowed[vocab["TimeSig_4/4"]]


def test_drums_and_pitched_programs_do_not_mix(tokenizers):
    tokenizer = tokenizers["tsd"]
    processor = MidiGrammarLogitsProcessor(tokenizer)
    vocab = tokenizer.get_vocab()
    for program, wanted, unwanted in (
        ("Program_-1", "PitchDrum_36", "Pitch_36"),
        ("Program_0", "Pitch_36", "PitchDrum_36"),
    ):
        ids = tokenizer.convert_tokens_to_ids(["BOS_None", "TimeSig_4/4", program])
        allowed = processor.allowed_tokens(torch.tensor([ids]))[0]
        assert allowed[vocab[wanted]] and not allowed[vocab[unwanted]]


def test_scores_wider_than_the_vocabulary_and_too_narrow(tokenizers):
    tokenizer = tokenizers["remi"]
    processor = MidiGrammarLogitsProcessor(tokenizer)
    ids = torch.full((2, 1), tokenizer.bos_token_id)
    wide = processor(ids, torch.zeros(2, len(tokenizer) + 7))
    assert torch.isinf(wide[:, len(tokenizer) :]).all()
    assert torch.isfinite(wide).any(1).all()
    with pytest.raises(ValueError, match="vocab_size must be at least"):
        processor(ids, torch.zeros(2, len(tokenizer) - 1))


def test_rows_emptied_by_another_processor_fall_back_to_the_valid_tokens(tokenizers):
    """An earlier processor (e.g. bad_words_ids) may ban every valid token: no NaN, no crash."""
    tokenizer = tokenizers["remi"]
    processor = MidiGrammarLogitsProcessor(tokenizer)
    ids = torch.full((2, 1), tokenizer.bos_token_id)
    allowed = processor.allowed_tokens(ids)
    scores = torch.zeros(2, len(tokenizer))
    scores[0] = scores[0].masked_fill(allowed[0], -float("inf"))
    out = processor(ids, scores)
    assert torch.equal(torch.isfinite(out), allowed)
    assert processor.num_fallbacks == 0


def test_completion_cost_counts_what_is_left_to_close(tokenizers):
    tokenizer = tokenizers["midilike"]
    grammar = MidiGrammar.for_tokenizer(tokenizer)
    tokens = ["BOS_None", "Program_0", "NoteOn_60", "Velocity_63", "Program_0", "NoteOn_64"]
    costs = []
    for cut in (1, 3, 4, 5, 6):
        state = MidiGrammarLogitsProcessor(grammar).state_for(
            torch.tensor([tokenizer.convert_tokens_to_ids(tokens[:cut])])
        )
        costs.append(int(grammar.completion_cost(state)[0]))
    # nothing; a fresh note owing its Velocity (then TimeShift, Program, NoteOff); the same note
    # complete; a Program that can close nothing yet (its note is fresh), so it owes a whole
    # note of its own; two fresh notes, one owing its Velocity
    assert costs == [0, 2 + 1 + 1, 2 + 1, 2 + 1 + 5, 2 * 2 + 1 + 1]
    remi = MidiGrammar.for_tokenizer(tokenizers["remi"])
    ids = tokenizers["remi"].convert_tokens_to_ids(["BOS_None", "Bar_None", "TimeSig_4/4"])
    ids += tokenizers["remi"].convert_tokens_to_ids(["Position_0", "Program_0"])
    state = MidiGrammarLogitsProcessor(remi).state_for(torch.tensor([ids]))
    assert int(remi.completion_cost(state)[0]) == 3  # Pitch, Velocity, Duration


def test_compiled_grammar_is_cached_until_the_vocabulary_changes(valid_midi_paths):
    tokenizer = MidiTokenizer()
    grammar = MidiGrammar.for_tokenizer(tokenizer)
    assert MidiGrammar.for_tokenizer(tokenizer) is grammar
    assert MidiGrammarLogitsProcessor(tokenizer).grammar is grammar
    tokenizer.train_bpe(valid_midi_paths[:2], vocab_size=len(tokenizer) + 20)
    trained = MidiGrammar.for_tokenizer(tokenizer)
    assert trained is not grammar and trained.vocab_size == len(tokenizer)


def test_without_a_budget_outside_generate_it_warns_once(tokenizers, caplog):
    """A hand-written loop gives the processor no generation_config to read the limit from."""
    tokenizer = tokenizers["midilike"]
    processor = MidiGrammarLogitsProcessor(tokenizer)
    with caplog.at_level(logging.WARNING):
        sample_random(tokenizer, processor, 2, 5)
    assert caplog.text.count("MidiGrammarLogitsProcessor has no length budget") == 1
    assert processor.remaining(torch.zeros(2, 6, dtype=torch.long)) is None
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        sample_random(tokenizer, MidiGrammarLogitsProcessor(tokenizer, max_new_tokens=5), 2, 5)
    assert "no length budget" not in caplog.text


def test_bad_arguments_and_unsupported_tokenizers():
    with pytest.raises(ValueError, match="max_new_tokens or max_length"):
        MidiGrammarLogitsProcessor(MidiTokenizer(), max_new_tokens=3, max_length=9)
    with pytest.raises(ValueError, match="max_new_tokens must be a non-negative integer"):
        MidiGrammarLogitsProcessor(MidiTokenizer(), max_new_tokens=-1)
    rests = miditok.REMI(
        miditok.TokenizerConfig(
            use_programs=True, one_token_stream_for_programs=True, use_rests=True
        )
    )
    with pytest.raises(UnsupportedGrammarError, match="use_rests"):
        MidiGrammar(rests)
    with pytest.raises(UnsupportedGrammarError, match="CPWord"):
        MidiGrammar(miditok.CPWord())


@pytest.mark.parametrize("name", ["remi+bpe", "tsd+bpe"])
def test_bpe_tokens_are_allowed_exactly_when_their_base_tokens_are(tokenizers, name):
    """A merged token is allowed exactly when its base tokens would be, one after the other."""
    tokenizer = tokenizers[name]
    grammar = MidiGrammar(tokenizer)
    assert grammar.max_expansion > 1
    base = MidiGrammar(tokenizers[name.removesuffix("+bpe")])
    batch = sample_random(tokenizer, MidiGrammarLogitsProcessor(grammar), 3, 40, seed=2)
    allowed = MidiGrammarLogitsProcessor(grammar).allowed_tokens(batch)
    special = set(tokenizer.all_special_ids)
    expansions = {
        i: [
            base.base_vocab[t]
            for t in tokenizer.convert_ids_to_tokens(i).lstrip("\u2581").split("+")
        ]
        for i in range(len(tokenizer))
        if i not in special and tokenizer.convert_ids_to_tokens(i).lstrip("\u2581")
    }
    merged = [i for i, steps in expansions.items() if len(steps) > 1]
    assert merged
    for row, mask in zip(batch, allowed):
        start = base.initial_state(1, torch.device("cpu"))
        for token_id in row.tolist():  # special ids are the same in both vocabularies
            for step in expansions.get(token_id, [token_id]):
                base.advance(start, torch.tensor([step]))
        for token_id in merged:
            state, walk_ok = start.clone(), True
            for step in expansions.get(token_id, []):
                walk_ok = walk_ok and bool(base.allowed_tokens(state)[0, step])
                base.advance(state, torch.tensor([step]))
            assert bool(mask[token_id]) == walk_ok, tokenizer.convert_ids_to_tokens(token_id)


# --------------------------------------------------------------------------- reference checker


def _reasons(tokenizer: MidiTokenizer, tokens: list[str]) -> list[tuple[int, str]]:
    check = check_sequence(tokenizer, tokenizer.convert_tokens_to_ids(tokens))
    return [(error.index, error.reason) for error in check.errors]


def test_checker_finds_what_the_remi_decoder_drops(tokenizers):
    tokenizer = tokenizers["remi"]
    start = ["BOS_None", "Bar_None", "TimeSig_4/4", "Position_8", "Program_0"]
    assert _reasons(tokenizer, [*start, "Pitch_60", "Velocity_63", "Duration_1.0.8"]) == []
    dropped = _reasons(tokenizer, [*start, "Pitch_60", "Duration_1.0.8"])
    assert dropped == [(6, "Duration cannot follow Pitch")]
    backwards = _reasons(
        tokenizer, [*start, "Pitch_60", "Velocity_63", "Duration_1.0.8", "Position_4"]
    )
    assert backwards == [(8, "Position_4 does not move forward from Position_8")]
    unfinished = _reasons(tokenizer, [*start, "Pitch_60", "Velocity_63", "EOS_None"])
    assert [index for index, _ in unfinished] == [4, 5, 6]  # Program, Pitch, Velocity
    drums = _reasons(tokenizer, [*start, "PitchDrum_36", "Velocity_63", "Duration_1.0.8"])
    assert drums == [(5, "PitchDrum does not match Program_0")]
    inner = check_sequence(tokenizer, tokenizer.convert_tokens_to_ids([*start[:3], "PAD_None"]))
    assert inner.num_special_dropped == 0  # trailing padding frames the piece
    inner = check_sequence(
        tokenizer, tokenizer.convert_tokens_to_ids(["BOS_None", "EOS_None", *start[1:3]])
    )
    assert inner.num_special_dropped == 1 and inner.num_dropped == 1


def test_checker_follows_midilike_notes(tokenizers):
    tokenizer = tokenizers["performance"]
    on = ["BOS_None", "Program_0", "NoteOn_60"]
    assert _reasons(tokenizer, [*on, "TimeShift_1.0.10", "NoteOff_60"]) == []
    assert _reasons(tokenizer, [*on, "Program_0", "NoteOff_60", "TimeShift_1.0.10"]) == [
        (4, "NoteOff_60 at the time its note started (zero length)"),
        (2, "note 60 of program 0 never ends"),
    ]
    assert (3, "NoteOff cannot follow NoteOn") in _reasons(tokenizer, [*on, "NoteOff_60"])
    assert _reasons(tokenizer, [*on, "TimeShift_1.0.10", "NoteOff_62", "NoteOff_60"]) == [
        (4, "NoteOff_62 for a note that is not sounding")
    ]
    unison = [*on, "NoteOn_60", "TimeShift_1.0.10", "NoteOff_60", "NoteOff_60"]
    assert _reasons(tokenizer, unison) == []  # two voices on one pitch, ended in turn
    ids = tokenizer.convert_tokens_to_ids(unison)
    assert check_sequence(tokenizer, ids).num_note_tokens == tokenizer.to_score(ids).note_num() == 2
