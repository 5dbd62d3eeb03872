"""LoRA fine-tuning with PEFT: which layers each architecture adapts, wrapping, and merging.

``train.py`` with ``lora: true`` starts from ``model_name_or_path`` (a trained model folder or
Hub id), freezes it, adds low-rank adapters to the layers listed in
:data:`LORA_TARGET_MODULES` and saves the adapter only (``adapter_config.json`` +
``adapter_model.safetensors``, with the tokenizer and a card). Such a folder loads with
``peft.AutoPeftModelForCausalLM.from_pretrained(folder)`` (after ``import midiformers``), with
the demo (``python app.py --model folder``), and :func:`merge_lora` (or
``python -m midiformers.training.lora ADAPTER_DIR OUTPUT_DIR``) folds it into a plain model
folder that ``AutoModelForCausalLM`` loads.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .arguments import RecipeError

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
"""The file that marks a PEFT adapter folder."""

_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_FEED_FORWARD = ("fc_in", "fc_out")

LORA_TARGET_MODULES: dict[str, tuple[str, ...] | str] = {
    # Attention projections (MidiSelfAttention) and the feed-forward (MidiFeedForward).
    "gpt": (*_ATTENTION, *_FEED_FORWARD),
    # Same projections in RelativeSelfAttention; the relative position embeddings stay frozen
    # (they encode distances, which a fine-tuning corpus of the same kind does not change).
    "music_transformer": (*_ATTENTION, *_FEED_FORWARD),
    # Attention, both macaron feed-forwards and the conv module's pointwise projections; the
    # depthwise convolution and the norms stay frozen.
    "conformer": (*_ATTENTION, *_FEED_FORWARD, "pointwise_in", "pointwise_out"),
    # The decoder only (self-attention, cross-attention to the latent memory, feed-forward):
    # generation runs the decoder from the composer prior, so the encoder, posterior and
    # per-composer prior stay as trained.
    "vae": r".*\.layers\.\d+\.(self_attn|cross_attn|ffn)\.(q_proj|k_proj|v_proj|o_proj|fc_in|fc_out)",
}
"""Default ``target_modules`` of LoRA per architecture (short name of
``midiformers.modeling.ARCHITECTURES``): a tuple of module-name suffixes or a regular
expression over full module names, as ``peft.LoraConfig`` takes them. The recurrent models
(LSTM, GRU) have no attention and no LoRA default."""

LORA_DEFAULTS = {"lora_r": 8, "lora_alpha": 16.0, "lora_dropout": 0.05}
"""Values of the LoRA options a recipe with ``lora: true`` leaves out."""


class LoraError(RecipeError):
    """LoRA options that cannot describe a fine-tuning run (a one-line recipe error)."""


def default_target_modules(model_type: str) -> tuple[str, ...] | str:
    """The default LoRA ``target_modules`` of an architecture (short name or model_type)."""
    from ..modeling import architecture_for

    arch = architecture_for(model_type, missing_ok=True)
    if arch is None or arch.name not in LORA_TARGET_MODULES:
        known = ", ".join(LORA_TARGET_MODULES)
        raise LoraError(
            f"LoRA has no default target modules for {model_type!r} (only attention models: "
            f"{known}); set lora_target_modules to the names of its nn.Linear layers"
        )
    return LORA_TARGET_MODULES[arch.name]


def lora_settings(model_args: Any) -> dict[str, Any] | None:
    """The LoRA options of ``model_args`` with defaults filled in, or None without ``lora``.

    Raises:
        LoraError: LoRA options given without ``lora: true``, ``lora`` without a model to
            adapt (``model_name_or_path``), a ``model_type`` other than the model's, or an
            architecture without default target modules.
    """
    names = [*LORA_DEFAULTS, "lora_target_modules"]
    if not model_args.lora:
        given = [name for name in names if getattr(model_args, name) is not None]
        if given:
            raise LoraError(f"{', '.join(given)} set but lora is false; add `lora: true`")
        return None
    if not model_args.model_name_or_path:
        raise LoraError(
            "lora: true needs model_name_or_path, the trained model folder or Hub id to adapt"
        )
    settings = {name: getattr(model_args, name) for name in names}
    for name, default in LORA_DEFAULTS.items():
        if settings[name] is None:
            settings[name] = default
    if settings["lora_target_modules"] is not None and not settings["lora_target_modules"]:
        raise LoraError("lora_target_modules: give at least one module name")
    from transformers import AutoConfig

    from ..modeling import architecture_for

    source = model_args.model_name_or_path
    try:
        model_type = AutoConfig.from_pretrained(source).model_type
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise LoraError(f"model_name_or_path: cannot read the model {source!r}: {reason}") from None
    recipe_arch = architecture_for(model_args.model_type, missing_ok=True)
    base_arch = architecture_for(model_type, missing_ok=True)
    if recipe_arch is not None and base_arch is not None and recipe_arch is not base_arch:
        raise LoraError(
            f"model_type is {recipe_arch.name!r} but {source} holds a {base_arch.name!r} model; "
            f"set model_type: {base_arch.name}"
        )
    if settings["lora_target_modules"] is None:  # the base model's architecture needs defaults
        default_target_modules(model_type)
    return settings


def _module_names(model) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def _check_targets(model, targets: Sequence[str] | str) -> None:
    """Refuse target names that match no layer, naming them (PEFT's message lists them all)."""
    names = _module_names(model)
    if isinstance(targets, str):
        if not any(re.fullmatch(targets, name) for name in names):
            raise LoraError(f"lora_target_modules: {targets!r} matches no layer of the model")
        return
    suffixes = sorted({name.rsplit(".", 1)[-1] for name in names})
    missing = [target for target in targets if not any(n.endswith(target) for n in names)]
    if missing:
        hints = "; ".join(
            f"{target!r}"
            + (
                f" (did you mean {close[0]!r}?)"
                if (close := difflib.get_close_matches(target, suffixes, n=1))
                else ""
            )
            for target in missing
        )
        raise LoraError(f"lora_target_modules: no layer named {hints} in {type(model).__name__}")


def _base_reference(name_or_path: str) -> str:
    """How the adapter names its base model: an absolute path for a local folder (so it loads
    from any working directory), a Hub id as is."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.is_dir() else name_or_path


def apply_lora(model, settings: dict[str, Any], base_model_name_or_path: str):
    """Freeze ``model`` and wrap it in a ``PeftModelForCausalLM`` with LoRA adapters.

    Raises:
        LoraError: an architecture without defaults, or target names matching no layer.
    """
    from peft import LoraConfig, get_peft_model

    targets = settings["lora_target_modules"] or default_target_modules(model.config.model_type)
    if not isinstance(targets, str):
        targets = list(targets)
    _check_targets(model, targets)
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=settings["lora_r"],
        lora_alpha=settings["lora_alpha"],
        lora_dropout=settings["lora_dropout"],
        target_modules=targets,
    )
    peft_model = get_peft_model(model, config)
    peft_model.peft_config["default"].base_model_name_or_path = _base_reference(
        base_model_name_or_path
    )
    trainable, total = peft_model.get_nb_trainable_parameters()
    logger.info(
        "LoRA r=%d on %s: %s of %s parameters trainable (%.2f%%)",
        config.r,
        targets,
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / total,
    )
    return peft_model


def is_adapter_folder(path: str | Path) -> bool:
    """Whether ``path`` is a local folder holding a PEFT adapter (``adapter_config.json``)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> str:
    """The base model (folder or Hub id) a saved adapter was trained on."""
    from peft import PeftConfig

    base = PeftConfig.from_pretrained(str(path)).base_model_name_or_path
    if not base:
        raise LoraError(f"{Path(path) / ADAPTER_CONFIG} names no base_model_name_or_path")
    return base


def load_lora(adapter_dir: str | Path, *, merge: bool = False, **kwargs):
    """Base model + adapter (``PeftModelForCausalLM``), or with ``merge`` the plain model with
    the adapter folded into its weights (faster generation, no PEFT wrapper)."""
    from peft import AutoPeftModelForCausalLM

    import midiformers  # noqa: F401  (registers the Auto classes the base model needs)

    model = AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir), **kwargs)
    return model.merge_and_unload() if merge else model


def merge_lora(adapter_dir: str | Path, output_dir: str | Path) -> Path:
    """Fold the adapter of ``adapter_dir`` into its base model and save a plain model folder
    (config, weights, tokenizer, card) that ``AutoModelForCausalLM`` loads."""
    from transformers import AutoTokenizer

    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    if not is_adapter_folder(adapter_dir):
        raise LoraError(f"{adapter_dir} holds no {ADAPTER_CONFIG}: not a LoRA adapter folder")
    model = load_lora(adapter_dir, merge=True)
    model.save_pretrained(output_dir)
    source = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else None
    tokenizer = AutoTokenizer.from_pretrained(str(source or adapter_base(adapter_dir)))
    tokenizer.save_pretrained(output_dir)
    if (adapter_dir / "README.md").is_file():
        shutil.copy(adapter_dir / "README.md", output_dir / "README.md")
    logger.info("Merged %s into %s", adapter_dir, output_dir)
    return output_dir


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m midiformers.training.lora ADAPTER_DIR OUTPUT_DIR``: merge an adapter."""
    parser = argparse.ArgumentParser(
        prog="python -m midiformers.training.lora",
        description="Merge a LoRA adapter folder (written by train.py with lora: true) into "
        "its base model and save a plain model folder.",
    )
    parser.add_argument("adapter_dir")
    parser.add_argument("output_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        merge_lora(args.adapter_dir, args.output_dir)
    except LoraError as error:
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main()
