"""Model architectures, one configuration and one modeling file per architecture.

Each entry of ``_ARCHITECTURES`` names a module pair and the classes it provides; they
are imported here and registered with ``AutoConfig``, ``AutoModel`` and the task Auto
classes by :func:`register_auto_classes`.
"""

import transformers
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

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

__all__ = ["register_auto_classes"]

_CAUSAL_LM: list[tuple[type, type, type]] = []
"""(config class, base model class, causal LM class) per causal architecture."""
_CAUSAL_LM.append((MidiGPTConfig, MidiGPTModel, MidiGPTForCausalLM))
__all__ += ["MidiGPTConfig", "MidiGPTModel", "MidiGPTForCausalLM"]
_CAUSAL_LM.append((MidiConformerConfig, MidiConformerModel, MidiConformerForCausalLM))
__all__ += ["MidiConformerConfig", "MidiConformerModel", "MidiConformerForCausalLM"]
_CAUSAL_LM.append((MusicTransformerConfig, MusicTransformerModel, MusicTransformerForCausalLM))
__all__ += ["MusicTransformerConfig", "MusicTransformerModel", "MusicTransformerForCausalLM"]
_CAUSAL_LM.append((MidiLSTMConfig, MidiLSTMModel, MidiLSTMForCausalLM))
__all__ += ["MidiLSTMConfig", "MidiLSTMModel", "MidiLSTMForCausalLM"]

_OTHER_MODELS: list[tuple[str, type, type]] = []
"""(Auto class name, config class, model class) for the architectures that are not plain causal LMs."""
_OTHER_MODELS.append(("AutoModel", MidiGRUConfig, MidiGRUModel))
_OTHER_MODELS.append(
    ("AutoModelForSequenceClassification", MidiGRUConfig, MidiGRUForSequenceClassification)
)
__all__ += ["MidiGRUConfig", "MidiGRUModel", "MidiGRUForSequenceClassification"]
# The VAE's decoder is a causal LM over the same tokens (forward(input_ids, labels) and
# generate(prompt) behave as for the causal models), so it loads with AutoModelForCausalLM.
_OTHER_MODELS.append(("AutoModel", MidiVAEConfig, MidiVAEModel))
_OTHER_MODELS.append(("AutoModelForCausalLM", MidiVAEConfig, MidiVAEForConditionalGeneration))
__all__ += ["MidiVAEConfig", "MidiVAEModel", "MidiVAEForConditionalGeneration"]


def register_auto_classes() -> None:
    """Register every midiformers architecture with the transformers Auto classes."""
    for config_class, base_class, lm_class in _CAUSAL_LM:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, base_class, exist_ok=True)
        AutoModelForCausalLM.register(config_class, lm_class, exist_ok=True)
        # save_pretrained then writes `auto_map` and copies the code for trust_remote_code.
        config_class.register_for_auto_class()
        base_class.register_for_auto_class("AutoModel")
        lm_class.register_for_auto_class("AutoModelForCausalLM")
    for auto_name, config_class, model_class in _OTHER_MODELS:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        getattr(transformers, auto_name).register(config_class, model_class, exist_ok=True)
        config_class.register_for_auto_class()
        model_class.register_for_auto_class(auto_name)
