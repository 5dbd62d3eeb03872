"""Model architectures, one configuration and one modeling file per architecture.

:data:`ARCHITECTURES` is the one public registry of them: train.py (``--model_type``), the
generation helpers, the demo, the benchmarks and the tests read it, and
:func:`register_auto_classes` registers every entry with ``AutoConfig``, ``AutoModel`` and the
task's Auto class. A new architecture is one configuration file, one modeling file and one
:class:`Architecture` line below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import transformers
from transformers import AutoConfig, AutoModel

from .configuration_conformer import MidiConformerConfig
from .configuration_gpt import MidiGPTConfig
from .configuration_gru import MidiGRUConfig
from .configuration_lstm import MidiLSTMConfig
from .configuration_music_transformer import MusicTransformerConfig
from .configuration_vae import MidiVAEConfig
from .modeling_conformer import (
    MidiConformerForCausalLM,
    MidiConformerForQuestionAnswering,
    MidiConformerForSequenceClassification,
    MidiConformerForTokenClassification,
    MidiConformerModel,
)
from .modeling_gpt import (
    MidiGPTForCausalLM,
    MidiGPTForQuestionAnswering,
    MidiGPTForSequenceClassification,
    MidiGPTForTokenClassification,
    MidiGPTModel,
)
from .modeling_gru import MidiGRUForSequenceClassification, MidiGRUModel
from .modeling_lstm import (
    MidiLSTMForCausalLM,
    MidiLSTMForQuestionAnswering,
    MidiLSTMForSequenceClassification,
    MidiLSTMForTokenClassification,
    MidiLSTMModel,
)
from .modeling_music_transformer import (
    MusicTransformerForCausalLM,
    MusicTransformerForQuestionAnswering,
    MusicTransformerForSequenceClassification,
    MusicTransformerForTokenClassification,
    MusicTransformerModel,
)
from .modeling_vae import MidiVAEForConditionalGeneration, MidiVAEModel

TASKS: dict[str, tuple[str, str]] = {
    "causal-lm": ("AutoModelForCausalLM", "text-generation"),
    "sequence-classification": ("AutoModelForSequenceClassification", "text-classification"),
}
"""Each task: its transformers Auto class and its Hub ``pipeline_tag``."""


@dataclass(frozen=True, eq=False)
class Architecture:
    """One architecture and what the code around the models needs to know about it.

    Args:
        name: short name, the ``--model_type`` of train.py (``model_type`` is
            ``config_class.model_type``, e.g. ``midiformers_gpt``).
        display_name: how tables, plots and the demo call it.
        config_class, base_model_class, model_class: the configuration, the headless model
            (``AutoModel``) and the model with its head (the task's Auto class).
        task: a key of :data:`TASKS`: ``"causal-lm"`` (next-token generation; the VAE's
            decoder is one too) or ``"sequence-classification"``.
        conditioning: what generation is conditioned on besides the prompt, as the keyword
            ``generate`` takes (``"composer"`` for the VAE; its labels are ``config.id2label``);
            ``None`` for unconditional models.
        recurrent: the state carries the whole past (no attention window, no position limit,
            sized by ``embedding_size`` and ``hidden_size`` rather than an attention layout).
        variants: named option sets worth comparing side by side (GPT's position types); the
            architecture comparison trains each.
        extra_heads: further heads over the same base model, by the name of their transformers
            Auto class (``{"AutoModelForSequenceClassification": ...}``); registered with
            those Auto classes too.
    """

    name: str
    display_name: str
    config_class: type
    base_model_class: type
    model_class: type
    task: str = "causal-lm"
    conditioning: str | None = None
    recurrent: bool = False
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    extra_heads: Mapping[str, type] = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"{self.name}: task must be one of {sorted(TASKS)}, got {self.task!r}")

    @property
    def model_type(self) -> str:
        return self.config_class.model_type

    @property
    def auto_class(self) -> str:
        """Name of the transformers Auto class of ``model_class`` (``AutoModelForCausalLM``)."""
        return TASKS[self.task][0]

    @property
    def pipeline_tag(self) -> str:
        """The Hub ``pipeline_tag`` of a trained model."""
        return TASKS[self.task][1]

    @property
    def heads(self) -> dict[str, type]:
        """Every model class with a head, by the name of its transformers Auto class."""
        return {self.auto_class: self.model_class, **self.extra_heads}

    @property
    def generates(self) -> bool:
        """Whether the model writes music (``generate``), rather than classifying it."""
        return self.task == "causal-lm"


def _heads(sequence: type, token: type, span: type) -> dict[str, type]:
    return {
        "AutoModelForSequenceClassification": sequence,
        "AutoModelForTokenClassification": token,
        "AutoModelForQuestionAnswering": span,
    }


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture(
            "lstm",
            "LSTM",
            MidiLSTMConfig,
            MidiLSTMModel,
            MidiLSTMForCausalLM,
            recurrent=True,
            extra_heads=_heads(
                MidiLSTMForSequenceClassification,
                MidiLSTMForTokenClassification,
                MidiLSTMForQuestionAnswering,
            ),
        ),
        Architecture(
            "gpt",
            "GPT",
            MidiGPTConfig,
            MidiGPTModel,
            MidiGPTForCausalLM,
            variants={
                "absolute": {"position_embedding_type": "absolute"},
                "rotary": {"position_embedding_type": "rotary"},
            },
            extra_heads=_heads(
                MidiGPTForSequenceClassification,
                MidiGPTForTokenClassification,
                MidiGPTForQuestionAnswering,
            ),
        ),
        Architecture(
            "music_transformer",
            "Music Transformer",
            MusicTransformerConfig,
            MusicTransformerModel,
            MusicTransformerForCausalLM,
            extra_heads=_heads(
                MusicTransformerForSequenceClassification,
                MusicTransformerForTokenClassification,
                MusicTransformerForQuestionAnswering,
            ),
        ),
        Architecture(
            "conformer",
            "Conformer",
            MidiConformerConfig,
            MidiConformerModel,
            MidiConformerForCausalLM,
            extra_heads=_heads(
                MidiConformerForSequenceClassification,
                MidiConformerForTokenClassification,
                MidiConformerForQuestionAnswering,
            ),
        ),
        Architecture(
            "vae",
            "Composer VAE",
            MidiVAEConfig,
            MidiVAEModel,
            MidiVAEForConditionalGeneration,
            conditioning="composer",
        ),
        Architecture(
            "gru",
            "GRU composer classifier",
            MidiGRUConfig,
            MidiGRUModel,
            MidiGRUForSequenceClassification,
            task="sequence-classification",
            recurrent=True,
        ),
    )
}
"""Every midiformers architecture by short name, in the order tables list them."""


def architecture_for(name_or_model_type: str, *, missing_ok: bool = False) -> Architecture | None:
    """The registry entry for a short name (``"gpt"``) or a ``model_type``
    (``"midiformers_gpt"``, what ``config.model_type`` holds).

    An unknown name raises ``ValueError`` listing the known ones, or gives ``None`` with
    ``missing_ok`` (for models midiformers does not define, e.g. a Hub GPT-2).
    """
    for arch in ARCHITECTURES.values():
        if name_or_model_type in (arch.name, arch.model_type):
            return arch
    if missing_ok:
        return None
    raise ValueError(
        f"unknown architecture {name_or_model_type!r}; known: {', '.join(ARCHITECTURES)} "
        f"(or their model_type midiformers_<name>)"
    )


_CAUSAL_LM: list[tuple[type, type, type]] = [
    (arch.config_class, arch.base_model_class, arch.model_class)
    for arch in ARCHITECTURES.values()
    if arch.generates and arch.conditioning is None
]
"""(config, base model, causal LM) of the unconditional causal LMs; a snapshot kept for
``benchmarks/bench_generation.py``. Read :data:`ARCHITECTURES` instead."""

__all__ = ["ARCHITECTURES", "Architecture", "architecture_for", "register_auto_classes"]
for _arch in ARCHITECTURES.values():
    __all__ += [_arch.config_class.__name__, _arch.base_model_class.__name__]
    __all__ += [head.__name__ for head in _arch.heads.values()]


def register_auto_classes() -> None:
    """Register every architecture of :data:`ARCHITECTURES` with the transformers Auto classes
    (and for ``trust_remote_code`` export: ``save_pretrained`` then writes ``auto_map`` and
    copies the code)."""
    for arch in ARCHITECTURES.values():
        AutoConfig.register(arch.model_type, arch.config_class, exist_ok=True)
        AutoModel.register(arch.config_class, arch.base_model_class, exist_ok=True)
        arch.config_class.register_for_auto_class()
        arch.base_model_class.register_for_auto_class("AutoModel")
        for auto_name, head in arch.heads.items():
            getattr(transformers, auto_name).register(arch.config_class, head, exist_ok=True)
            head.register_for_auto_class(auto_name)
