"""A Hub Space folder for the demo, ready to run as it is (``python app.py``) or to upload.

The folder holds ``app.py`` (the same demo as the repository's), ``requirements.txt``,
``packages.txt`` (the Debian SoundFont that renders at the right pitch), a ``README.md`` with
the Space front matter, a copy of the midiformers package (so the Space runs exactly the
code that built it) and copies of the local model folders it serves.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import SpaceCard, SpaceCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from packaging.requirements import Requirement

from .model_card import TAGS, project_link

__all__ = ["SPACE_PACKAGES", "write_space"]

SPACE_PACKAGES = ["musescore-general-soundfont-small"]
"""Debian packages of the Space: MuseScore General Lite, the SoundFont symusic plays in tune."""

_CPU_TORCH_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"
_SKIP_COPY = shutil.ignore_patterns("__pycache__", "*.pyc", "checkpoint-*", "runs", ".git")

_APP_TEMPLATE = '''"""midiformers demo Space, written by `midiformers-hub space`; runs as it is: `python app.py`."""

from pathlib import Path

from midiformers.app import main

HERE = Path(__file__).resolve().parent
MODELS = {models}

if __name__ == "__main__":
    main(default_models=[str(HERE / m) if (HERE / m).is_dir() else m for m in MODELS])
'''


def _is_local(spec: str) -> bool:
    return Path(spec).is_dir()


def _check_hub_id(spec: str) -> None:
    """A model that is not a local folder must look like a Hub id (``owner/name``)."""
    message = f"model {spec!r} is neither a saved model folder nor a Hub model id (owner/name)"
    try:
        validate_repo_id(spec)
    except HFValidationError:
        raise ValueError(message) from None
    if spec.count("/") != 1 or Path(spec).parent.is_dir():  # e.g. outputs/missing-run
        raise ValueError(message)


def _check_not_inside(out_dir: Path, copied: dict[Path, str]) -> None:
    """A folder copied into the Space must not hold the Space folder (the copy would copy
    itself without end); ``copied`` maps each such folder to how to call it."""
    target = Path(os.path.realpath(out_dir))
    for source, what in copied.items():
        if target.is_relative_to(source.resolve()):
            raise ValueError(
                f"the Space folder {out_dir} lies inside {what} {source}, which is copied "
                "into the Space; choose a folder outside it"
            )


def _model_entries(models: Sequence[str]) -> dict[str, Path | None]:
    """What app.py loads for each model (``models/NAME`` for a local folder, the id for a Hub
    model) and the folder to copy there (``None`` for a Hub id); checks every model first."""
    entries: dict[str, Path | None] = {}
    for spec in models:
        if not _is_local(spec):
            _check_hub_id(spec)
            entries[spec] = None
            continue
        source = Path(spec)
        if not (source / "config.json").is_file():
            raise ValueError(f"{source} is not a saved model folder (no config.json)")
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", source.resolve().name)
        if f"models/{name}" in entries:
            raise ValueError(f"two model folders are named {name!r}; rename one of them")
        entries[f"models/{name}"] = source
    return entries


def _declared_requirements() -> list[str]:
    """midiformers' requirements with the ``app`` extra: from ``pyproject.toml`` in a source
    checkout (installed metadata of an editable install can be stale), else the metadata."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        import tomllib

        project = tomllib.loads(pyproject.read_text())["project"]
        return [*project["dependencies"], *project["optional-dependencies"]["app"]]
    except (ImportError, OSError, KeyError):
        pass
    try:
        requires = importlib.metadata.requires("midiformers") or []
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            "midiformers is not installed, so its requirements are unknown; "
            "install it (pip install -e .) or pass package_spec"
        ) from None
    return [
        str(req)
        for req in map(Requirement, requires)
        if req.marker is None or req.marker.evaluate({"extra": "app"})
    ]


def _requirements(package_spec: str | None) -> list[str]:
    """What the Space installs: the CPU torch index, then midiformers' requirements (or
    ``package_spec``), without gradio, which the Space's SDK provides."""
    if package_spec:
        return [_CPU_TORCH_INDEX, package_spec]
    lines = []
    for line in _declared_requirements():
        requirement = Requirement(line)
        if requirement.name.lower() == "gradio":
            continue
        requirement.marker = None
        lines.append(str(requirement))
    return [_CPU_TORCH_INDEX, *dict.fromkeys(lines)]


def _gradio_version() -> str:
    try:
        return importlib.metadata.version("gradio")
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError('gradio is not installed: pip install "midiformers[app]"') from None


def _readme(title: str, models: Sequence[str]) -> str:
    hub_models = [spec for spec in models if not _is_local(spec)]
    data = SpaceCardData(
        title=title,
        emoji="🎹",
        colorFrom="indigo",
        colorTo="pink",
        sdk="gradio",
        sdk_version=_gradio_version(),
        python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
        app_file="app.py",
        pinned=False,
        license="apache-2.0",
        models=hub_models or None,
        tags=[tag for tag in TAGS if tag != "midiformers"],
    )
    body = (
        f"# {title}\n\n"
        f"Generate symbolic music (MIDI) with {project_link()} models: pick a model, "
        "optionally upload a primer to continue, and listen to the result, see its piano "
        "roll and download the MIDI file.\n\n"
        "Run it locally with `pip install -r requirements.txt gradio && python app.py` "
        "(on the Hub, the Space's SDK provides gradio).\n"
    )
    return f"---\n{data.to_yaml()}\n---\n\n{body}"


def write_space(
    out_dir: str | Path,
    models: Sequence[str],
    *,
    title: str = "midiformers demo",
    package_spec: str | None = None,
) -> Path:
    """Write a Space folder serving ``models`` (local folders are copied in, Hub ids stay).

    Args:
        out_dir: the folder to create (it must not exist or be empty).
        models: model folders or Hub ids, as for ``python app.py --model``.
        title: the Space's title.
        package_spec: a pip requirement for midiformers (e.g. a git URL) to list in
            ``requirements.txt`` instead of copying the installed package into the Space.
    """
    if not models:
        raise ValueError("a Space needs at least one model (a saved folder or a Hub id)")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} is not empty; choose a new folder for the Space")
    entries = _model_entries(models)
    package_dir = Path(__file__).resolve().parents[1]
    copied = {source: "the model folder" for source in entries.values() if source is not None}
    if package_spec is None:
        copied[package_dir] = "the midiformers package"
    _check_not_inside(out_dir, copied)
    out_dir.mkdir(parents=True, exist_ok=True)
    for entry, source in entries.items():
        if source is not None:
            shutil.copytree(source, out_dir / entry, ignore=_SKIP_COPY)
    if package_spec is None:
        shutil.copytree(package_dir, out_dir / package_dir.name, ignore=_SKIP_COPY)
    app_models = json.dumps(list(entries))
    (out_dir / "app.py").write_text(_APP_TEMPLATE.format(models=app_models))
    (out_dir / "requirements.txt").write_text("\n".join(_requirements(package_spec)) + "\n")
    (out_dir / "packages.txt").write_text("\n".join(SPACE_PACKAGES) + "\n")
    SpaceCard(_readme(title, models)).save(out_dir / "README.md")
    return out_dir
