"""What every benchmark prints above its table: the machine and the library versions."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def machine_description(device: str | None = None) -> str:
    """One Markdown line: CPU, cores, accelerator and versions."""
    import torch

    accelerator = "no GPU"
    if torch.cuda.is_available():
        accelerator = f"GPU {torch.cuda.get_device_name(0)}"
    packages = ", ".join(
        f"{name} {_version(name)}" for name in ("torch", "transformers", "miditok", "symusic")
    )
    used = f"; measured on {device}" if device else ""
    return (
        f"Machine: {cpu_model()}, {os.cpu_count()} logical cores ({torch.get_num_threads()} "
        f"torch threads), {accelerator}; Python {platform.python_version()}, {packages}{used}."
    )
