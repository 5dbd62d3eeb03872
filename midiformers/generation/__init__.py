"""Generation that always yields valid MIDI: the token grammar and its logits processor, a
reference checker, long pieces with a sliding window, attribute controls, and the
``midi-generation`` pipeline."""

from .controls import CONTROLS, control_token_ids
from .grammar import SUPPORTED_SCHEMES, GrammarState, MidiGrammar, UnsupportedGrammarError
from .logits_process import MidiGrammarLogitsProcessor
from .pipeline import TASK, MidiGenerationPipeline, register_pipeline
from .sampling import check_generation_options, context_length, generate_long
from .validation import SequenceCheck, TokenError, check_sequence

__all__ = [
    "CONTROLS",
    "SUPPORTED_SCHEMES",
    "TASK",
    "GrammarState",
    "MidiGenerationPipeline",
    "MidiGrammar",
    "MidiGrammarLogitsProcessor",
    "SequenceCheck",
    "TokenError",
    "UnsupportedGrammarError",
    "check_generation_options",
    "check_sequence",
    "control_token_ids",
    "context_length",
    "generate_long",
    "register_pipeline",
]
