"""Publishing to the Hugging Face Hub (the only network edge of midiformers)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import DatasetCard, DatasetCardData, HfApi, get_token
from huggingface_hub.utils import filter_repo_objects

from .model_card import TAGS, make_model_card

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


UPLOAD_IGNORE = (
    "checkpoint-*",
    "checkpoint-*/**",
    "incomplete-checkpoints/**",
    "runs/**",
    "training_args.bin",
    "*/training_args.bin",
    "*.pt",
    "*.pth",
    "*.pkl",
    "*.pickle",
)
"""What :func:`push_folder` never uploads: training checkpoints, TensorBoard runs, and pickles
(``training_args.bin``, optimizer and RNG state), which run code when loaded."""


def _uploaded_files(folder: Path) -> list[Path]:
    """The files of ``folder`` that an upload with :data:`UPLOAD_IGNORE` sends."""
    relative = [path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()]
    kept = filter_repo_objects(relative, ignore_patterns=list(UPLOAD_IGNORE))
    return [folder / name for name in sorted(kept)]


def _contains(path: Path, needle: bytes, chunk_size: int = 1 << 22) -> bool:
    """Whether the bytes of ``path`` contain ``needle`` (read in chunks that overlap)."""
    tail = b""
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            if needle in tail + chunk:
                return True
            tail = chunk[-(len(needle) - 1) :]
    return False


def _refuse_secrets(folder: Path, token: str | None) -> None:
    """Stop an upload that would publish the Hub token (the given one or the logged-in one)."""
    secret = token if isinstance(token, str) else get_token()
    if not secret or len(secret) < 8:
        return
    for path in _uploaded_files(folder):
        if _contains(path, secret.encode()):
            raise ValueError(
                f"{path} contains your Hub token; refusing to upload {folder} (delete the file "
                "or the token from it, and revoke the token if it was ever published)"
            )


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload with midiformers",
    repo_type: str = "model",
) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` (a saved model, dataset or Space).

    Checkpoints, logs and pickles stay local (:data:`UPLOAD_IGNORE`); a file holding the Hub
    token stops the upload. With ``private=True`` the repo is created private, and an
    existing public repo is refused rather than published to.
    """
    if not repo_id:
        raise ValueError("push needs a repo id such as 'you/midi-gpt' (--hub_model_id)")
    folder = Path(folder)
    _refuse_secrets(folder, token)
    api = HfApi(token=token)
    space_sdk = "gradio" if repo_type == "space" else None  # the Hub requires one for Spaces
    api.create_repo(
        repo_id, repo_type=repo_type, private=private, exist_ok=True, space_sdk=space_sdk
    )
    if private and api.repo_info(repo_id, repo_type=repo_type).private is False:
        raise ValueError(
            f"{repo_id} already exists and is public; refusing to upload with private=True "
            "(make it private on the Hub first, or push with private=False)"
        )
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type=repo_type,
        commit_message=commit_message,
        ignore_patterns=list(UPLOAD_IGNORE),
    )
    return str(commit.commit_url if hasattr(commit, "commit_url") else commit)


def _card_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics worth a model card: scores, not timings or step counters."""
    skipped = ("_runtime", "_per_second", "total_flos", "epoch", "step")
    return {
        key: value
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not key.endswith(skipped)
    }


def _read_metrics(metrics: dict[str, Any] | str | os.PathLike | None) -> dict[str, Any]:
    if metrics is None or isinstance(metrics, dict):
        return dict(metrics or {})
    path = Path(metrics)
    try:
        values = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the metrics file {path}: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object of metrics, got {type(values).__name__}")
    return values


def save_model_for_hub(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    folder: str | os.PathLike,
    *,
    repo_id: str | None = None,
    dataset: str | None = None,
    metrics: dict[str, Any] | str | os.PathLike | None = None,
    extra_tags: list[str] | None = None,
) -> Path:
    """Write what :func:`push_model` uploads: weights, config, tokenizer, the remote code
    (``trust_remote_code`` loading without midiformers), ``metrics.json`` and a model card."""
    folder = Path(folder)
    values = _read_metrics(metrics)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if values:
        (folder / "metrics.json").write_text(json.dumps(values, indent=2, sort_keys=True))
    card = make_model_card(
        model.config.model_type,
        dataset=dataset,
        metrics=_card_metrics(values),
        tokenizer_preset=getattr(tokenizer, "preset", None),
        num_parameters=model.num_parameters(),
        repo_id=repo_id,
        extra_tags=extra_tags,
    )
    card.save(folder / "README.md")
    return folder


def push_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    repo_id: str,
    *,
    dataset: str | None = None,
    metrics: dict[str, Any] | str | os.PathLike | None = None,
    extra_tags: list[str] | None = None,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload model with midiformers",
) -> str:
    """Publish a model with its tokenizer, remote code and model card; returns the commit URL.

    ``metrics`` is a dict or the path of a ``metrics.json`` written by ``train.py``;
    ``dataset`` names the training data (a Hub dataset id where there is one).
    """
    if not repo_id:
        raise ValueError("push_model needs a repo id such as 'you/midi-gpt'")
    with tempfile.TemporaryDirectory(prefix="midiformers-model-") as folder:
        save_model_for_hub(
            model,
            tokenizer,
            folder,
            repo_id=repo_id,
            dataset=dataset,
            metrics=metrics,
            extra_tags=extra_tags,
        )
        return push_folder(
            folder, repo_id, token=token, private=private, commit_message=commit_message
        )


def save_dataset_for_hub(
    dataset: datasets.Dataset | datasets.DatasetDict,
    folder: str | os.PathLike,
    *,
    max_shard_rows: int = 10_000,
    description: str | None = None,
) -> Path:
    """Write what :func:`push_dataset` uploads: Parquet shards in the Hub's layout and a
    dataset card declaring the splits and features (``ClassLabel`` names included)."""
    import datasets
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs

    from ..data_scripts.export import save_as_parquet

    folder = Path(folder)
    if isinstance(dataset, datasets.Dataset):
        dataset = datasets.DatasetDict({"train": dataset})
    if not isinstance(dataset, datasets.DatasetDict) or not dataset:
        raise ValueError(
            f"push_dataset takes a Dataset or a non-empty DatasetDict, got {type(dataset).__name__}"
        )
    save_as_parquet(dataset, folder, max_shard_rows=max_shard_rows)
    card_data = DatasetCardData(tags=[tag for tag in TAGS if tag != "music-generation"])
    splits = [{"split": split, "path": f"data/{split}-*"} for split in dataset]
    MetadataConfigs({"default": {"data_files": splits}}).to_dataset_card_data(card_data)
    features = next(iter(dataset.values())).features
    DatasetInfosDict({"default": DatasetInfo(features=features)}).to_dataset_card_data(card_data)
    sizes = ", ".join(f"{split}: {len(part):,} rows" for split, part in dataset.items())
    body = description or "A symbolic-music dataset published with midiformers."
    content = f"---\n{card_data.to_yaml()}\n---\n\n{body}\n\nSplits: {sizes}.\n"
    DatasetCard(content).save(folder / "README.md")
    return folder


def push_dataset(
    dataset: datasets.Dataset | datasets.DatasetDict,
    repo_id: str,
    *,
    description: str | None = None,
    max_shard_rows: int = 10_000,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload dataset with midiformers",
) -> str:
    """Publish a dataset (a ``Dataset`` becomes the ``train`` split) as Parquet with a card;
    ``load_dataset(repo_id)`` then returns it with the same features."""
    if not repo_id:
        raise ValueError("push_dataset needs a repo id such as 'you/midi-chorales'")
    with tempfile.TemporaryDirectory(prefix="midiformers-dataset-") as folder:
        save_dataset_for_hub(
            dataset, folder, max_shard_rows=max_shard_rows, description=description
        )
        return push_folder(
            folder,
            repo_id,
            token=token,
            private=private,
            commit_message=commit_message,
            repo_type="dataset",
        )
