"""Model architectures, one configuration and one modeling file per architecture.

:data:`ARCHITECTURES` is the one public registry of them (short name, classes, task, display
name); :func:`register_auto_classes` registers every entry with ``AutoConfig``, ``AutoModel``
and the task's Auto class, and a new architecture is one configuration file, one modeling
file and one line below.
"""

from __future__ import annotations

from dataclasses import dataclass

import transformers
from transformers import AutoConfig, AutoModel

from .configuration_conformer import MidiConformerConfig
from .configuration_gpt import MidiGPTConfig
from .configuration_gru import MidiGRUConfig
from .configuration_lstm import MidiLSTMConfig
from .configuration_music_transformer import MusicTransformerConfig
from .configuration_vae import MidiVAEConfig
from .modeling_conformer import MidiConformerForCausalLM, MidiConformerModel
from .modeling_gpt import MidiGPTForCausalLM, MidiGPTModel
from .modeling_gru import MidiGRUForSequenceClassification, MidiGRUModel
from .modeling_lstm import MidiLSTMForCausalLM, MidiLSTMModel
from .modeling_music_transformer import MusicTransformerForCausalLM, MusicTransformerModel
from .modeling_vae import MidiVAEForConditionalGeneration, MidiVAEModel


@dataclass(frozen=True)
class Architecture:
    """One architecture: what train.py, the demo, the benchmarks and the tests read.

    ``task`` is ``"causal-lm"`` (next-token generation; the VAE's decoder is one too) or
    ``"sequence-classification"``; ``auto_class`` is the task's transformers Auto class name.
    """

    name: str
    display_name: str
    config_class: type
    base_model_class: type
    model_class: type
    task: str
    auto_class: str

    @property
    def model_type(self) -> str:
        return self.config_class.model_type

    @property
    def generates(self) -> bool:
        return self.task == "causal-lm"


def _causal(name: str, display_name: str, config: type, base: type, model: type) -> Architecture:
    return Architecture(
        name, display_name, config, base, model, "causal-lm", "AutoModelForCausalLM"
    )


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        _causal("lstm", "LSTM", MidiLSTMConfig, MidiLSTMModel, MidiLSTMForCausalLM),
        _causal("gpt", "Transformer (GPT)", MidiGPTConfig, MidiGPTModel, MidiGPTForCausalLM),
        _causal(
            "music_transformer",
            "Music Transformer",
            MusicTransformerConfig,
            MusicTransformerModel,
            MusicTransformerForCausalLM,
        ),
        _causal(
            "conformer",
            "Conformer",
            MidiConformerConfig,
            MidiConformerModel,
            MidiConformerForCausalLM,
        ),
        _causal(
            "vae",
            "Composer VAE",
            MidiVAEConfig,
            MidiVAEModel,
            MidiVAEForConditionalGeneration,
        ),
        Architecture(
            "gru",
            "GRU composer classifier",
            MidiGRUConfig,
            MidiGRUModel,
            MidiGRUForSequenceClassification,
            "sequence-classification",
            "AutoModelForSequenceClassification",
        ),
    )
}
"""Every midiformers architecture by short name (the ``--model_type`` of train.py)."""


def architecture_for(name_or_model_type: str) -> Architecture:
    """The registry entry for a short name (``"gpt"``) or a ``model_type`` (``"midiformers_gpt"``)."""
    for arch in ARCHITECTURES.values():
        if name_or_model_type in (arch.name, arch.model_type):
            return arch
    raise ValueError(
        f"unknown architecture {name_or_model_type!r}; known: {', '.join(ARCHITECTURES)} "
        f"(or their model_type midiformers_<name>)"
    )


_CAUSAL_LM: list[tuple[type, type, type]] = [
    (arch.config_class, arch.base_model_class, arch.model_class)
    for arch in ARCHITECTURES.values()
    if arch.auto_class == "AutoModelForCausalLM" and arch.name != "vae"
]
"""(config, base model, causal LM) of the plain causal LMs; kept for existing readers."""

__all__ = ["ARCHITECTURES", "Architecture", "architecture_for", "register_auto_classes"]
for _arch in ARCHITECTURES.values():
    __all__ += [_arch.config_class.__name__, _arch.base_model_class.__name__]
    __all__ += [_arch.model_class.__name__]


def register_auto_classes() -> None:
    """Register every midiformers architecture with the transformers Auto classes."""
    for arch in ARCHITECTURES.values():
        AutoConfig.register(arch.model_type, arch.config_class, exist_ok=True)
        AutoModel.register(arch.config_class, arch.base_model_class, exist_ok=True)
        auto_class = getattr(transformers, arch.auto_class)
        auto_class.register(arch.config_class, arch.model_class, exist_ok=True)
        # save_pretrained then writes `auto_map` and copies the code for trust_remote_code.
        arch.config_class.register_for_auto_class()
        arch.base_model_class.register_for_auto_class("AutoModel")
        arch.model_class.register_for_auto_class(arch.auto_class)
