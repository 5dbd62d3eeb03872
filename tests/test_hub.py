"""Publishing: what push_model / push_dataset / the Space command upload, with only the network
edge (``HfApi``) replaced by a recorder; the uploads are then loaded back offline."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

import midiformers.hub.model_card as model_card_module
import midiformers.hub.push as push_module
from midiformers.hub import make_model_card, push_dataset, push_model, write_space
from midiformers.hub.cli import main as hub_main


class RecordingHfApi:
    """Stands in for ``huggingface_hub.HfApi``: records calls and keeps a copy of each upload."""

    calls: list[tuple[str, dict]] = []
    uploads: list[Path] = []
    copy_root: Path

    def __init__(self, token=None, **kwargs):
        self.token = token

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        self.calls.append(("upload_folder", {"repo_id": repo_id, **kwargs}))
        copy = self.copy_root / f"upload-{len(self.uploads)}"
        shutil.copytree(folder_path, copy)
        self.uploads.append(copy)
        return f"https://huggingface.co/{repo_id}/commit/0123abc"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    RecordingHfApi.calls, RecordingHfApi.uploads = [], []
    RecordingHfApi.copy_root = tmp_path
    monkeypatch.setattr(push_module, "HfApi", RecordingHfApi)
    return RecordingHfApi


def front_matter(readme: Path) -> dict:
    text = readme.read_text()
    assert text.startswith("---\n"), f"{readme} has no metadata block"
    return yaml.safe_load(text.split("---\n")[1])


def run_python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_push_model_uploads_a_loadable_model_with_card_and_remote_code(
    hub, tiny_model_dir, tmp_path, valid_midi_paths
):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    metrics_file = tmp_path / "metrics.json"
    metrics = {"eval_loss": 2.5, "eval_accuracy": 0.4, "eval_runtime": 3.2, "epoch": 1.0}
    metrics_file.write_text(json.dumps(metrics))

    url = push_model(
        model, tokenizer, "someone/tiny-gpt", dataset="bach_chorales", metrics=metrics_file
    )

    assert url.endswith("/commit/0123abc")
    assert hub.calls[0] == (
        "create_repo",
        {
            "repo_id": "someone/tiny-gpt",
            "repo_type": "model",
            "private": False,
            "exist_ok": True,
            "space_sdk": None,
        },
    )
    (uploaded,) = hub.uploads
    files = {path.name for path in uploaded.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "README.md"} <= files
    assert {"configuration_gpt.py", "modeling_gpt.py", "tokenization_midi.py"} <= files
    assert json.loads((uploaded / "metrics.json").read_text()) == metrics
    assert "AutoModelForCausalLM" in json.loads((uploaded / "config.json").read_text())["auto_map"]

    card = front_matter(uploaded / "README.md")
    assert card["library_name"] == "transformers"
    assert {"midi", "music-generation", "symbolic-music"} <= set(card["tags"])
    assert card["datasets"] == ["bach_chorales"]
    body = (uploaded / "README.md").read_text()
    assert "| eval_loss | 2.5 |" in body and "| eval_accuracy | 0.4 |" in body
    assert "eval_runtime" not in body  # timings are not results
    assert 'AutoModelForCausalLM.from_pretrained("someone/tiny-gpt")' in body

    ids = tokenizer(valid_midi_paths[0], return_tensors="pt").input_ids[:, :32]
    with torch.no_grad():
        expected = model(ids).logits
    torch.save({"ids": ids, "logits": expected}, tmp_path / "expected.pt")
    result = run_python(
        f"""
        import torch
        import midiformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
        folder = {str(uploaded)!r}
        model = AutoModelForCausalLM.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        saved = torch.load({str(tmp_path / "expected.pt")!r})
        ids = tokenizer({str(valid_midi_paths[0])!r}, return_tensors="pt").input_ids[:, :32]
        assert torch.equal(ids, saved["ids"]), "tokenizer differs"
        with torch.no_grad():
            torch.testing.assert_close(model(ids).logits, saved["logits"])
        print("loaded", type(model).__name__)
        """,
        cwd=tmp_path,
        HF_HUB_OFFLINE="1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded MidiGPTForCausalLM" in result.stdout


def test_push_model_rejects_a_bad_metrics_file(hub, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bad = tmp_path / "metrics.json"
    bad.write_text("{not json")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match="metrics.json"):
        push_model(model, tokenizer, "someone/tiny-gpt", metrics=bad)
    with pytest.raises(ValueError, match="repo id"):
        push_model(model, tokenizer, "")
    assert hub.calls == []


def test_push_dataset_uploads_parquet_that_loads_back_with_its_features(hub):
    import datasets

    features = datasets.Features(
        {
            "midi": datasets.Value("binary"),
            "composer": datasets.ClassLabel(names=["bach", "mozart"]),
        }
    )
    data = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"midi": [b"MThd1", b"MThd2", b"MThd3"], "composer": [0, 1, 0]}, features=features
            ),
            "validation": datasets.Dataset.from_dict(
                {"midi": [b"MThd4"], "composer": [1]}, features=features
            ),
        }
    )
    push_dataset(data, "someone/tiny-midi", max_shard_rows=2)

    create, upload = hub.calls
    assert create[1]["repo_type"] == "dataset" and upload[1]["repo_type"] == "dataset"
    (uploaded,) = hub.uploads
    shards = sorted(path.name for path in (uploaded / "data").iterdir())
    assert shards == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
        "validation-00000-of-00001.parquet",
    ]
    card = front_matter(uploaded / "README.md")
    assert {"midi", "symbolic-music"} <= set(card["tags"])
    assert card["configs"][0]["data_files"] == [
        {"split": "train", "path": "data/train-*"},
        {"split": "validation", "path": "data/validation-*"},
    ]
    loaded = datasets.load_dataset(str(uploaded))
    assert loaded["train"].features == features
    assert loaded["train"]["composer"] == [0, 1, 0]
    assert loaded["validation"]["midi"] == [b"MThd4"]


def test_push_dataset_rejects_what_is_not_a_dataset(hub):
    with pytest.raises(ValueError, match="Dataset or a non-empty DatasetDict, got list"):
        push_dataset([1, 2], "someone/x")
    assert hub.calls == []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_page(url: str, process: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the Space app exited early:\n{process.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the Space app did not answer at {url} within {timeout} s")


def test_space_folder_runs_as_it_is_in_a_fresh_process(tiny_model_dir, tmp_path):
    pytest.importorskip("gradio", reason="the demo needs the app extra (gradio)")
    space = write_space(tmp_path / "space", [str(tiny_model_dir), "someone/midi-gpt"])

    files = {path.name for path in space.iterdir()}
    assert {"app.py", "requirements.txt", "packages.txt", "README.md", "midiformers"} <= files
    card = front_matter(space / "README.md")
    assert card["sdk"] == "gradio" and card["app_file"] == "app.py"
    assert card["models"] == ["someone/midi-gpt"]  # local folders are copied, not linked
    assert card["sdk_version"].split(".")[0] >= "6"
    assert (space / "packages.txt").read_text().split() == ["musescore-general-soundfont-small"]
    requirements = (space / "requirements.txt").read_text().splitlines()
    assert "symusic==0.5.9" in requirements
    assert not any(line.startswith("gradio") for line in requirements)  # the SDK provides it
    model_copy = space / "models" / tiny_model_dir.name
    assert (model_copy / "model.safetensors").is_file()

    # Only the local copy can load offline: the Hub model shows a notice, the page still works.
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)],
        cwd=space,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        page = wait_for_page(f"http://127.0.0.1:{port}/", process)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=10) as response:
            config = json.loads(response.read())
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert "<title>midiformers</title>" in page or "midiformers" in config.get("title", "")
    dropdowns = [c["props"] for c in config["components"] if c["props"].get("label") == "Model"]
    assert dropdowns and [choice[0] for choice in dropdowns[0]["choices"]] == [tiny_model_dir.name]
    assert "someone/midi-gpt" in output  # the terminal says why that model is missing
    assert "Traceback" not in output


def test_space_command_writes_and_pushes(hub, tiny_model_dir, tmp_path):
    out = tmp_path / "space"
    assert hub_main(["space", str(out), "--model", str(tiny_model_dir), "--push", "me/demo"]) == 0
    create, upload = hub.calls
    assert create[1]["repo_type"] == "space" and create[1]["space_sdk"] == "gradio"
    assert upload[1]["repo_id"] == "me/demo"
    assert (hub.uploads[0] / "app.py").read_text() == (out / "app.py").read_text()


def test_space_command_reports_bad_input(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        hub_main(["space", str(tmp_path / "a")])  # no outputs/default here
    assert "python train.py" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        hub_main(["space", str(tmp_path / "b"), "--model", str(tmp_path)])
    assert "not a saved model folder (no config.json)" in capsys.readouterr().err
    (tmp_path / "outputs").mkdir()
    with pytest.raises(SystemExit):
        hub_main(["space", str(tmp_path / "c"), "--model", "outputs/missing"])
    assert "neither a saved model folder nor a Hub model id" in capsys.readouterr().err


def test_space_folder_inside_a_copied_folder_is_refused(tiny_model_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    with pytest.raises(SystemExit):
        hub_main(["space", str(model / "space"), "--model", str(model)])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (
        f"midiformers-hub: error: the Space folder {model / 'space'} lies inside the model "
        f"folder {model}, which is copied into the Space; choose a folder outside it"
    )
    assert not (model / "space").exists()
    (tmp_path / "link").symlink_to(model)  # the same folder under another name
    with pytest.raises(ValueError, match="lies inside the model folder"):
        write_space(tmp_path / "link" / "deeper" / "space", [str(model)])
    assert sorted(path.name for path in model.iterdir()) == sorted(
        path.name for path in tiny_model_dir.iterdir()
    )
    package_dir = Path(push_module.__file__).resolve().parents[1]
    inside_package = package_dir / f"space-{tmp_path.name}"
    try:
        with pytest.raises(ValueError, match="lies inside the midiformers package"):
            write_space(inside_package, [str(model)])
        assert not inside_package.exists()
    finally:
        shutil.rmtree(inside_package, ignore_errors=True)


URL = re.compile(r"https?://[^\s)\]>\"'`]+")


def test_cards_link_only_urls_the_package_metadata_lists(tiny_model_dir, tmp_path):
    import importlib.metadata

    listed = importlib.metadata.metadata("midiformers").get_all("Project-URL") or []
    allowed = {entry.partition(",")[2].strip() for entry in listed}
    card = str(make_model_card("midiformers_gpt", dataset="bach_chorales", repo_id="me/x"))
    space = write_space(tmp_path / "space", [str(tiny_model_dir)], package_spec="midiformers")
    readme = (space / "README.md").read_text()
    for text in (card, readme):
        assert "github.com/midiformers" not in text
        assert set(URL.findall(text)) <= allowed, set(URL.findall(text)) - allowed
        assert "midiformers" in text


def test_cards_link_the_project_url_when_the_metadata_has_one(
    monkeypatch, tiny_model_dir, tmp_path
):
    import email.message
    import importlib.metadata

    metadata = email.message.Message()
    metadata["Name"] = "midiformers"
    metadata["Project-URL"] = "Documentation, https://docs.example.org/midiformers"
    metadata["Project-URL"] = "Repository, https://code.example.org/midiformers"
    real = importlib.metadata.metadata
    monkeypatch.setattr(
        model_card_module.importlib.metadata,
        "metadata",
        lambda name: metadata if name == "midiformers" else real(name),
    )
    link = "[midiformers](https://code.example.org/midiformers)"  # the repository first
    assert link in str(make_model_card("midiformers_gpt"))
    space = write_space(tmp_path / "space", [str(tiny_model_dir)], package_spec="midiformers")
    assert link in (space / "README.md").read_text()
