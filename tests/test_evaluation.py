"""``midiformers-eval`` end to end on a tiny model and a tiny Bach chorales build, and the
pieces it is made of (excerpt decoding, the token metrics, the errors)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from demo_support import save_tiny_model
from symusic import Score

from midiformers import MidiTokenizer
from midiformers.evaluation.cli import EvalError, run
from midiformers.evaluation.loading import PIECE_METRICS
from midiformers.evaluation.model_evaluation import (
    PIECE_SETS,
    EvaluationSettings,
    decode_excerpt,
    generate_pieces,
)
from midiformers.generation import MidiGrammar

DATASET_CONFIG = {"max_pieces": 10, "validation_ratio": 0.1, "test_ratio": 0.3}
BUDGET = ["--num-samples", "3", "--max-new-tokens", "64", "--primer-tokens", "32"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread (and do not fight other jobs for the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset_cache(tmp_path_factory) -> Path:
    """One datasets cache for the module, so the chorales are converted once."""
    return tmp_path_factory.mktemp("datasets-cache")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """An untrained tiny rotary GPT and its REMI tokenizer, saved like train.py saves them."""
    folder = tmp_path_factory.mktemp("tiny-model")
    return save_tiny_model(folder, MidiTokenizer(), max_position_embeddings=256)


def eval_args(model_dir: Path, cache: Path, output: Path, *extra: str) -> list[str]:
    return [
        str(model_dir),
        "--dataset", "bach_chorales",
        "--split", "test",
        "--dataset-config", json.dumps(DATASET_CONFIG),
        "--cache-dir", str(cache),
        "--output-dir", str(output),
        "--max-length", "64",
        *BUDGET,
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def evaluation(tiny_model_dir, dataset_cache, tmp_path_factory) -> tuple[dict, Path]:
    output = tmp_path_factory.mktemp("evaluation")
    report = run(eval_args(tiny_model_dir, dataset_cache, output))
    return report, output


def test_eval_writes_json_and_markdown(evaluation, capsys):
    report, output = evaluation
    saved = json.loads((output / "evaluation.json").read_text())
    assert saved["model"] == report["model"] and saved["split"] == "test"
    assert saved["settings"]["num_samples"] == 3 and saved["settings"]["seed"] == 0
    markdown = (output / "evaluation.md").read_text()
    for heading in ("perplexity", "real continuations", "free samples", "overlapping area"):
        assert heading in markdown
    for metric in ("pitch_class_entropy", "groove_consistency", "notes_per_beat"):
        assert f"| {metric} |" in markdown


def test_token_metrics_match_the_models_own_loss(evaluation, tiny_model_dir, dataset_cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from midiformers.data_scripts import load_midi_dataset, tokenize_dataset

    report, _ = evaluation
    tokens = report["token_metrics"]
    assert tokens["perplexity"] == pytest.approx(math.exp(tokens["nll"]), rel=1e-5)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pieces = load_midi_dataset(
        "bach_chorales", cache_dir=str(dataset_cache), split="test", **DATASET_CONFIG
    )
    blocks = tokenize_dataset(pieces, tokenizer, 64, mode="pack")
    ids = torch.tensor(blocks["input_ids"])
    with torch.no_grad():
        logits = model(ids).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    accuracy = (logits[:, :-1].argmax(-1) == ids[:, 1:]).float().mean()
    assert tokens["nll"] == pytest.approx(loss.item(), rel=1e-4)
    assert tokens["accuracy"] == pytest.approx(accuracy.item(), abs=1e-6)
    assert tokens["num_tokens"] == ids[:, 1:].numel()


def test_every_metric_for_every_set_and_overlaps(evaluation):
    report, _ = evaluation
    assert set(report["per_set"]) == set(PIECE_SETS)
    assert report["per_set"]["continuations"]["num_pieces"] == 3
    assert report["per_set"]["free_samples"]["num_pieces"] == 3
    assert report["per_set"]["reference_pieces"]["num_pieces"] == report["num_pieces"] == 3
    for values in report["per_set"].values():
        for key in ("pitch_class_entropy", "polyphony", "notes_per_second", "empty_beat_rate"):
            assert key in values
    assert len(PIECE_METRICS) == 8
    areas = report["overlapping_area"]
    assert set(areas) == {
        "free_samples_vs_reference_openings",
        "continuations_vs_reference_continuations",
    }
    for area in areas.values():
        assert 0.0 <= area["overlapping_area"] <= 1.0
        assert area["num_predictions"] == 3
    generation = report["generation"]
    assert generation["grammar_constrained"] is True
    assert generation["num_continuations"] == generation["num_free_samples"] == 3
    assert 0 < generation["mean_new_tokens"] <= 64 and generation["tokens_per_second"] > 0


def test_samples_are_written_and_decode(evaluation):
    _, output = evaluation
    samples = sorted((output / "samples").glob("*.mid"))
    assert [p.name for p in samples if p.name.startswith("free_samples")] == [
        f"free_samples_{i:03d}.mid" for i in range(3)
    ]
    assert len(samples) == 6
    assert sum(Score(str(path)).note_num() for path in samples) > 0


def test_sampling_is_seeded_and_grammar_constrained(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    validation = pytest.importorskip("midiformers.generation.validation")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    settings = EvaluationSettings(max_new_tokens=48, batch_size=2)
    grammar = MidiGrammar(tokenizer)
    prompts = [[tokenizer.bos_token_id]] * 3
    runs = []
    for _ in range(2):
        set_seed(7)
        runs.append(generate_pieces(model, tokenizer, prompts, settings, grammar).new_ids)
    assert runs[0] == runs[1]
    for ids in runs[0]:
        assert 0 < len(ids) <= 48
        assert validation.check_sequence(tokenizer, [tokenizer.bos_token_id, *ids]).is_valid


def test_decode_excerpt_keeps_what_follows_the_primer(midi_tokenizer, chorale_midi_paths):
    ids = midi_tokenizer(str(chorale_midi_paths[0]))["input_ids"]
    primer, continuation = ids[:40], ids[40:200]
    full = midi_tokenizer.to_score(primer + continuation)
    last_primer_onset = max(n.time for t in midi_tokenizer.to_score(primer).tracks for n in t.notes)
    bar = 4 * full.ticks_per_quarter  # the chorale is in 4/4
    shift = ((last_primer_onset + 1) // bar) * bar
    expected = sorted(
        (n.time - shift, n.pitch)
        for t in full.tracks
        for n in t.notes
        if n.time > last_primer_onset
    )
    excerpt = decode_excerpt(midi_tokenizer, primer, continuation)
    got = sorted((n.time, n.pitch) for t in excerpt.tracks for n in t.notes)
    assert got == expected and len(got) > 0
    assert excerpt.tempos[0].time == 0


def test_errors_name_the_problem(tiny_model_dir, dataset_cache, tmp_path):
    with pytest.raises(EvalError, match="missing-model"):
        run([str(tmp_path / "missing-model"), "--output-dir", str(tmp_path)])
    with pytest.raises(EvalError, match="no split 'dev'"):
        run([*eval_args(tiny_model_dir, dataset_cache, tmp_path), "--split", "dev"])
    with pytest.raises(EvalError, match="max_position_embeddings"):
        run([*eval_args(tiny_model_dir, dataset_cache, tmp_path), "--max-new-tokens", "300"])
    with pytest.raises(EvalError, match="num_samples"):
        run([*eval_args(tiny_model_dir, dataset_cache, tmp_path), "--num-samples", "0"])
    with pytest.raises(SystemExit):  # argparse: not JSON
        run([str(tiny_model_dir), "--dataset-config", "{max_pieces: 3"])


def test_console_script_entry_point(capsys):
    from importlib.metadata import entry_points

    scripts = {ep.name: ep for ep in entry_points(group="console_scripts")}
    if "midiformers-eval" not in scripts:
        pytest.skip("midiformers is not installed with its console scripts")
    main = scripts["midiformers-eval"].load()
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--num-samples" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="midiformers-eval: .*missing"):
        main(["/nonexistent/missing-model"])
