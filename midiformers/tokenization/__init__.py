"""MIDI tokenization: :class:`MidiTokenizer` (a transformers tokenizer over miditok), its
presets, and :func:`load_score`, the one MIDI loader every feature uses."""

from transformers import AutoTokenizer, PreTrainedConfig

from .midi_io import DEFAULT_MAX_FILE_SIZE, MidiFileError, MidiSource, load_score
from .presets import PRESETS, MidiPreset
from .tokenization_midi import MIDITOK_FILE_NAME, DecodeReport, MidiTokenizer

__all__ = [
    "DEFAULT_MAX_FILE_SIZE",
    "MIDITOK_FILE_NAME",
    "PRESETS",
    "DecodeReport",
    "MidiFileError",
    "MidiPreset",
    "MidiSource",
    "MidiTokenizer",
    "load_score",
    "register_auto_tokenizer",
]


def register_auto_tokenizer(config_class: type = PreTrainedConfig) -> None:
    """Let ``AutoTokenizer`` load saved MidiTokenizers without ``trust_remote_code``.

    ``AutoTokenizer.register`` records the class under its name, which is what a saved
    ``tokenizer_config.json`` (``"tokenizer_class": "MidiTokenizer"``) refers to. With the
    generic ``PreTrainedConfig`` (the default) transformers does not map that config to
    this tokenizer; a model package may pass its own config class to add that mapping.
    ``register_for_auto_class`` makes ``save_pretrained`` write ``auto_map`` and copy the
    tokenizer code, for loading where midiformers is not installed.
    """
    AutoTokenizer.register(config_class, tokenizer_class=MidiTokenizer)
    MidiTokenizer.register_for_auto_class("AutoTokenizer")
