"""Publishing to the Hugging Face Hub (the only network edge of midiformers)."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload with midiformers",
    repo_type: str = "model",
) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` (a saved model, dataset or Space)."""
    if not repo_id:
        raise ValueError("push needs a repo id such as 'you/midi-gpt' (--hub_model_id)")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type=repo_type,
        commit_message=commit_message,
        ignore_patterns=["checkpoint-*", "checkpoint-*/**", "runs/**"],
    )
    return str(commit.commit_url if hasattr(commit, "commit_url") else commit)
