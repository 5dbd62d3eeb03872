"""Which checkpoint a rerun resumes from: the newest *complete* one.

A run killed while ``Trainer`` writes ``checkpoint-N`` leaves a folder without
``trainer_state.json`` (written last) or with truncated weights; transformers'
``get_last_checkpoint`` would pick it and every rerun would fail. Here each incomplete
checkpoint is named in a warning and moved to ``incomplete-checkpoints/`` (out of the way of
``Trainer``'s rotation and of uploads), and the run resumes from the newest complete one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
from pathlib import Path

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
INCOMPLETE_DIR = "incomplete-checkpoints"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_SAFETENSORS = ("model.safetensors", "adapter_model.safetensors")
_PICKLED_WEIGHTS = ("pytorch_model.bin", "adapter_model.bin")
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be read whole (header unreadable, data cut short)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            if header_size > size - 8:
                return f"{path.name} is truncated"
            header = json.loads(handle.read(header_size))
        end = max(
            (entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"),
            default=0,
        )
    except (OSError, struct.error, ValueError, KeyError, TypeError, IndexError):
        return f"{path.name} is unreadable"
    return f"{path.name} is truncated" if 8 + header_size + end > size else None


def _weights_problem(folder: Path) -> str | None:
    """Why the model weights of ``folder`` are missing or unreadable; None when they are fine."""
    for name in _SAFETENSORS:
        if (folder / name).is_file():
            return _safetensors_problem(folder / name)
    for name in _INDEXES:
        index = folder / name
        if index.is_file():
            try:
                shards = set(json.loads(index.read_text())["weight_map"].values())
            except (OSError, ValueError, KeyError, AttributeError):
                return f"{name} is unreadable"
            for shard in sorted(shards):
                if not (folder / shard).is_file():
                    return f"shard {shard} is missing"
                if shard.endswith(".safetensors") and (
                    problem := _safetensors_problem(folder / shard)
                ):
                    return problem
            return None
    for name in _PICKLED_WEIGHTS:
        if (folder / name).is_file():
            return None if (folder / name).stat().st_size > 0 else f"{name} is empty"
    if any(
        child.is_dir() and child.name.startswith("pytorch_model_fsdp") for child in folder.iterdir()
    ):
        return None  # FSDP sharded state: transformers reads it
    return "no model weights"


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` is not a checkpoint that ``Trainer`` can resume from; None if it is.

    Complete means: ``trainer_state.json`` (the last file ``Trainer`` writes) parses and
    names a ``global_step``, and the model weights are present and not cut short.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return "not a folder"
    state = folder / TRAINER_STATE
    if not state.is_file():
        return f"no {TRAINER_STATE}"
    try:
        step = json.loads(state.read_text(encoding="utf-8")).get("global_step")
    except (OSError, ValueError, AttributeError):
        return f"{TRAINER_STATE} is unreadable"
    if not isinstance(step, int):
        return f"{TRAINER_STATE} has no global_step"
    return _weights_problem(folder)


def _set_aside(folder: Path) -> Path:
    """Move an incomplete checkpoint to ``<output_dir>/incomplete-checkpoints/`` (replacing an
    older incomplete copy of the same step)."""
    target = folder.parent / INCOMPLETE_DIR / folder.name
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(exist_ok=True)
    folder.rename(target)
    return target


def last_complete_checkpoint(output_dir: str | os.PathLike, *, set_aside: bool) -> str | None:
    """The newest complete ``checkpoint-N`` in ``output_dir`` (None if there is none).

    Each incomplete one gets a one-line warning and, with ``set_aside`` (the process that
    writes checkpoints), is moved to ``incomplete-checkpoints/``.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = [
        (int(match.group(1)), path)
        for path in output_dir.iterdir()
        if (match := _CHECKPOINT.match(path.name)) and path.is_dir()
    ]
    chosen = None
    for _, path in sorted(found, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            chosen = chosen or str(path)
            continue
        if set_aside:
            target = _set_aside(path)
            logger.warning("Incomplete checkpoint %s (%s): moved to %s", path, problem, target)
        else:
            logger.warning("Incomplete checkpoint %s (%s): not resuming from it", path, problem)
    return chosen
