"""midiformers: symbolic-music (MIDI) language models for the Hugging Face ecosystem.

Importing the package registers every configuration, model and tokenizer with the
transformers Auto classes. Nothing is built and no file is read at import time.

:data:`ARCHITECTURES` is the registry of the architectures (short name, display name, config and
model classes, task, conditioning), what train.py, the demo, the benchmarks and the tests read;
:func:`architecture_for` finds an entry by short name or ``model_type``.
"""

from .generation import MidiGenerationPipeline, MidiGrammarLogitsProcessor, check_sequence
from .generation import register_pipeline as _register_pipeline
from .modeling import *  # noqa: F403
from .modeling import __all__ as _modeling_all
from .modeling import register_auto_classes as _register_models
from .tokenization import MidiFileError, MidiTokenizer, load_score
from .tokenization import register_auto_tokenizer as _register_tokenizer

_register_models()
_register_tokenizer()
_register_pipeline()

__version__ = "0.1.0"
__all__ = [
    *_modeling_all,
    "MidiFileError",
    "MidiGenerationPipeline",
    "MidiGrammarLogitsProcessor",
    "MidiTokenizer",
    "check_sequence",
    "load_score",
]
