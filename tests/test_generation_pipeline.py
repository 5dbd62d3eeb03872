"""The midi-generation pipeline, the grammar inside generate() with untrained tiny models of every
registered architecture, the sliding window, and the training samples."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import symusic
import torch
from test_generation_grammar import summarize
from transformers import pipeline
from transformers.pipelines import PIPELINE_REGISTRY

import midiformers  # noqa: F401  (registers the task)
from midiformers import MidiFileError, MidiTokenizer
from midiformers.generation import (
    MidiGenerationPipeline,
    MidiGrammarLogitsProcessor,
    check_generation_options,
    check_sequence,
    context_length,
    generate_long,
)
from midiformers.modeling import ARCHITECTURES

COMPOSERS = {0: "bach", 1: "chopin"}
TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "embedding_size": 16,
    "max_relative_position": 16,
    "conv_kernel_size": 3,
    "latent_size": 8,
    "num_memory_tokens": 2,
    "num_encoder_layers": 1,
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
    "embedding_dropout": 0.0,
}
GENERATIVE = [
    (arch.config_class, arch.model_class) for arch in ARCHITECTURES.values() if arch.generates
]
CONDITIONED = {arch.model_class for arch in ARCHITECTURES.values() if arch.conditioning}
GPT = (ARCHITECTURES["gpt"].config_class, ARCHITECTURES["gpt"].model_class)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(config_class, model_class, tokenizer: MidiTokenizer, **overrides):
    """An untrained model of the class with tiny dimensions (only the fields it has)."""
    names = {field.name for field in dataclasses.fields(config_class)}
    kwargs = {k: v for k, v in TINY.items() if k in names}
    if model_class in CONDITIONED:
        kwargs["id2label"] = dict(COMPOSERS)
    kwargs.update(overrides)
    config = config_class(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **kwargs,
    )
    torch.manual_seed(0)
    return model_class(config).eval()


@pytest.fixture(scope="module")
def remi() -> MidiTokenizer:
    return MidiTokenizer()


@pytest.fixture(scope="module")
def primer_path(valid_midi_paths):
    """A short real piece (tempo and meter changes) longer than the tiny models' 64 positions."""
    return next(p for p in valid_midi_paths if p.name.startswith("tempo_and_meter"))


def assert_valid_piece(piece: dict, tokenizer: MidiTokenizer) -> None:
    assert piece["num_dropped_tokens"] == 0, check_sequence(tokenizer, piece["token_ids"]).errors
    assert piece["token_ids"][0] == tokenizer.bos_token_id
    assert piece["num_notes"] == piece["score"].note_num() > 0
    reloaded = symusic.Score.from_midi(piece["midi"])
    assert reloaded.note_num() == piece["num_notes"]


def test_task_is_registered(remi):
    assert "midi-generation" in PIPELINE_REGISTRY.get_supported_tasks()
    model = tiny_model(*GPT, remi)
    generator = pipeline("midi-generation", model=model, tokenizer=remi)
    assert isinstance(generator, MidiGenerationPipeline)


@pytest.mark.parametrize(
    ("config_class", "model_class"), GENERATIVE, ids=[m.__name__ for _, m in GENERATIVE]
)
def test_pipeline_with_and_without_primer(config_class, model_class, remi, primer_path):
    model = tiny_model(config_class, model_class, remi)
    generator = pipeline("midi-generation", model=model, tokenizer=remi)

    piece = generator(max_new_tokens=40, seed=0)
    assert_valid_piece(piece, remi)
    assert piece["num_primer_tokens"] == 0 and 0 < piece["num_generated_tokens"] <= 40

    primer = remi.encode_midi(primer_path)
    assert len(primer) > model.config.max_position_embeddings if context_length(model) else True
    continued = generator(str(primer_path), max_new_tokens=30, seed=1)
    assert_valid_piece(continued, remi)
    assert continued["num_primer_tokens"] == len(primer)
    assert continued["token_ids"][1 : 1 + len(primer)] == primer
    assert continued["num_notes"] >= remi.to_score(primer).note_num()


@pytest.mark.parametrize("preset", ["remi", "tsd", "midilike", "performance", "structured"])
def test_untrained_model_samples_are_valid(preset):
    """200 samples of an untrained GPT per scheme, through generate() with the processor."""
    tokenizer = MidiTokenizer(preset=preset)
    config_class, model_class = GPT
    model = tiny_model(config_class, model_class, tokenizer)
    prompt = torch.full((200, 1), tokenizer.bos_token_id)
    torch.manual_seed(0)
    output = model.generate(
        prompt,
        do_sample=True,
        max_new_tokens=40,
        logits_processor=[MidiGrammarLogitsProcessor(tokenizer, max_new_tokens=40)],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    totals = summarize(tokenizer, output)
    assert totals["invalid"] == totals["lost_notes"] == totals["miditok_errors"] == 0, totals


@pytest.mark.parametrize("search", ["sample", "beam_sample"])
def test_processor_reads_the_budget_from_generate(search):
    """No max_new_tokens given to the processor: it reads generate's own limit, so MIDILike
    notes still sounding near the end are closed (without it 10 x 120 tokens kept 1 note of
    325), exactly as with the budget given. A processor reused for a shorter call follows."""
    tokenizer = MidiTokenizer(preset="midilike")
    model = tiny_model(*GPT, tokenizer, max_position_embeddings=256)
    implicit = MidiGrammarLogitsProcessor(tokenizer)
    options = {"do_sample": True, "num_beams": 2 if search == "beam_sample" else 1}
    for rows, new_tokens in ((10, 120), (4, 30)):
        outputs = []
        for processor in (
            implicit,
            MidiGrammarLogitsProcessor(tokenizer, max_new_tokens=new_tokens),
        ):
            torch.manual_seed(0)
            outputs.append(
                model.generate(
                    torch.full((rows, 1), tokenizer.bos_token_id),
                    max_new_tokens=new_tokens,
                    logits_processor=[processor],
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    **options,
                )
            )
        assert torch.equal(outputs[0], outputs[1])
        totals = summarize(tokenizer, outputs[0])
        assert totals["invalid"] == totals["dropped"] == totals["lost_notes"] == 0, totals
        assert totals["notes"] > 0


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_greedy_and_beam_search(remi, search):
    model = tiny_model(*GPT, remi)
    options = {"num_beams": 3, "num_return_sequences": 3} if search == "beam" else {}
    processor = MidiGrammarLogitsProcessor(remi, max_new_tokens=30)
    output = model.generate(
        torch.full((2, 1), remi.bos_token_id),
        do_sample=False,
        max_new_tokens=30,
        logits_processor=[processor],
        pad_token_id=remi.pad_token_id,
        eos_token_id=remi.eos_token_id,
        **options,
    )
    assert output.shape[0] == (6 if search == "beam" else 2)
    for row in output.tolist():
        assert check_sequence(remi, row).is_valid
    assert processor.num_fallbacks == 0


def test_sliding_window_goes_past_the_position_table(remi):
    """An absolute-position GPT with 32 positions writes a 121-token piece, window by window."""
    config_class, model_class = GPT
    model = tiny_model(config_class, model_class, remi, max_position_embeddings=32)
    assert model.config.position_embedding_type == "absolute" and context_length(model) == 32
    prompt = torch.full((2, 1), remi.bos_token_id)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.generate(prompt, max_new_tokens=40, do_sample=False, pad_token_id=0)

    lengths = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]),
        with_kwargs=True,
    )
    torch.manual_seed(0)
    output = generate_long(
        model,
        prompt,
        120,
        grammar=MidiGrammarLogitsProcessor(remi).grammar,
        pad_token_id=remi.pad_token_id,
        eos_token_id=None,
        do_sample=True,
    )
    hook.remove()
    assert output.shape == (2, 121)
    refed = [length for length in lengths if length > 1]  # prompts re-fed at each window
    assert len(refed) >= 6 and max(refed) < 32
    for row in output.tolist():
        assert check_sequence(remi, row).is_valid

    generator = pipeline("midi-generation", model=model, tokenizer=remi)
    piece = generator(max_new_tokens=100, seed=0, stride=8)
    assert_valid_piece(piece, remi)


def test_recurrent_models_have_no_window(remi):
    recurrent = [arch for arch in ARCHITECTURES.values() if arch.generates and arch.recurrent]
    assert recurrent
    for arch in recurrent:
        assert context_length(tiny_model(arch.config_class, arch.model_class, remi)) is None


def test_composer_conditioning(remi):
    vae = next((c, m) for c, m in GENERATIVE if m in CONDITIONED)
    generator = pipeline("midi-generation", model=tiny_model(*vae, remi), tokenizer=remi)
    for composer in ("chopin", 0):
        assert_valid_piece(generator(composer=composer, max_new_tokens=30, seed=0), remi)
    with pytest.raises(ValueError, match="'bach', 'chopin'"):
        generator(composer="mozart", max_new_tokens=8)
    gpt = pipeline("midi-generation", model=tiny_model(*GPT, remi), tokenizer=remi)
    with pytest.raises(ValueError, match="composer-conditioned model"):
        gpt(composer="bach", max_new_tokens=8)


def test_seed_batch_and_grammar_off(remi, primer_path):
    generator = pipeline("midi-generation", model=tiny_model(*GPT, remi), tokenizer=remi)
    first = generator(max_new_tokens=30, seed=7, top_k=20, temperature=1.3, top_p=0.95)
    again = generator(max_new_tokens=30, seed=7, top_k=20, temperature=1.3, top_p=0.95)
    assert first["token_ids"] == again["token_ids"]

    pieces = generator([None, primer_path.read_bytes()], max_new_tokens=20, num_return_sequences=2)
    assert len(pieces) == 2 and all(len(group) == 2 for group in pieces)
    for piece in (p for group in pieces for p in group):
        assert_valid_piece(piece, remi)

    free = generator(max_new_tokens=60, seed=0, grammar=False)
    expected = check_sequence(remi, free["token_ids"]).num_dropped
    assert free["num_dropped_tokens"] == expected  # reported, whatever the number


def test_bad_inputs_name_the_problem(remi, broken_midi_paths):
    generator = pipeline("midi-generation", model=tiny_model(*GPT, remi), tokenizer=remi)
    broken = broken_midi_paths[0]
    with pytest.raises(MidiFileError, match=broken.name):
        generator(str(broken), max_new_tokens=4)
    with pytest.raises(TypeError, match="MIDI path, MIDI bytes"):
        generator(12, max_new_tokens=4)
    with pytest.raises(ValueError, match="max_new_tokens must be a positive integer"):
        generator(max_new_tokens=0)
    size = len(remi)
    with pytest.raises(ValueError, match=f"primer: token id {size + 3} is outside .*{size}"):
        generator(torch.tensor([remi.bos_token_id, 5, size + 3]), max_new_tokens=4)
    with pytest.raises(ValueError, match="input_ids holds token id -1, outside the model's"):
        generate_long(generator.model, torch.tensor([[1, -1]]), 4)


BAD_OPTIONS = [
    ("top_p", 2.0, r"top_p must be a number in \(0, 1\]"),
    ("top_p", 0.0, r"top_p must be a number in \(0, 1\]"),
    ("top_k", -1, "top_k must be an integer >= 0"),
    ("top_k", 2.5, "top_k must be an integer >= 0"),
    ("temperature", 0.0, "temperature must be a finite number > 0"),
    ("temperature", float("nan"), "temperature must be a finite number > 0"),
    ("max_new_tokens", 2.5, "max_new_tokens must be a positive integer"),
    ("num_return_sequences", 0, "num_return_sequences must be a positive integer"),
    ("num_beams", 0, "num_beams must be a positive integer"),
    ("seed", "7", "seed must be an integer"),
    ("stride", 0, "stride must be a positive integer"),
    ("context_length", 1, "context_length must be an integer >= 2"),
]


def test_generation_options_fail_before_generating(remi, primer_path):
    """One-line errors naming the option and its range, from the pipeline and generate_long,
    before the model runs (transformers alone accepts top_p=2 or 0, num_return_sequences=0)."""
    model = tiny_model(*GPT, remi)
    calls = []
    model.register_forward_pre_hook(lambda *args: calls.append(1))
    generator = pipeline("midi-generation", model=model, tokenizer=remi)
    prompt = torch.full((1, 1), remi.bos_token_id)
    for name, value, message in BAD_OPTIONS:
        with pytest.raises(ValueError, match=message) as info:
            generator(str(primer_path), **{"max_new_tokens": 4, name: value})
        assert "\n" not in str(info.value) and repr(value) in str(info.value)
        if name != "context_length":
            with pytest.raises(ValueError, match=message):
                generate_long(model, prompt, **{"max_new_tokens": 4, name: value})
    with pytest.raises(ValueError, match="window must be an integer >= 2"):
        generate_long(model, prompt, 4, window=1)
    assert calls == []
    check_generation_options(top_p=1.0, top_k=0, temperature=0.5, max_new_tokens=1, foo=-1)


def test_training_samples_decode_without_dropped_tokens(remi):
    """train.py's sample callback generates with the grammar processor."""
    from midiformers.training.run import TASKS, sample_function

    arguments = SimpleNamespace(sample_max_new_tokens=40, sample_top_k=0, sample_temperature=1.0)
    sample = sample_function(TASKS["causal"], remi, arguments)
    torch.manual_seed(0)
    sequences = sample(tiny_model(*GPT, remi), 8)
    assert len(sequences) == 8
    for row in sequences:
        assert check_sequence(remi, row).is_valid
