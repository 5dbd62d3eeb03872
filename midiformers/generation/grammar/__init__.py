"""The token grammar of a :class:`~midiformers.MidiTokenizer`, compiled into tensors.

:class:`MidiGrammar` reads the tokenizer's vocabulary once (miditok's token-type graph, the value
of every token and, for a BPE vocabulary, the base tokens each merged token expands to) and keeps
per-token tables over the whole vocabulary. :class:`GrammarState` holds a few registers per
sequence (last token type, program, bar position, sounding notes) and the grammar turns a batch of
states into a ``(batch, vocab)`` mask of the tokens that keep each sequence valid, with tensor
indexing only: nothing loops over the vocabulary at generation time.

"Valid" means miditok decodes every token into music and the music is sensible:

* every scheme: token types follow miditok's type graph (a ``Pitch`` gets its ``Velocity`` and
  ``Duration``, a ``Program`` is followed by a note), drum programs (``Program_-1``) play
  ``PitchDrum`` / ``DrumOn`` tokens and other programs play pitched notes, special tokens only
  at the ends (``EOS`` only where nothing is left unfinished);
* REMI: positions move forward inside a bar and stay within the bar of the current time
  signature; a ``TimeSig`` comes right after its ``Bar`` and a note right after its ``Position``;
* MIDILike / performance: ``NoteOff`` only for a sounding note that started before the current
  time (no zero-length note; unisons stack and end first in, first out, as miditok decodes
  them), and every note is closed before the sequence ends.

With a length budget, a token is only allowed if what it leaves unfinished (a note still needing
its velocity and duration, notes still sounding) can be completed in the tokens that remain, so
sequences that stop at the limit end cleanly. ``MidiGrammar.with_max_bars(n)`` (schemes with Bar
tokens) also ends every piece after exactly ``n`` bars (see ``_bars.py``),
``MidiGrammar.with_max_seconds(s)`` (every scheme without BPE) at about ``s`` seconds (see
``_seconds.py``), and ``MidiGrammar.with_programs([...])`` keeps new notes to a set of programs
(see ``_programs.py``).

Layout: ``_compiler.py`` compiles the tables every scheme shares, ``_runtime.py`` holds the
states and the mask, and each miditok scheme has its rules object (a
:class:`~._rules.SchemeRules` subclass) in its own module: ``remi.py``, ``tsd.py``,
``midilike.py`` (also the ``performance`` preset), ``structured.py`` and ``mmm.py`` (multi-track
REMI with attribute controls and infilling; ``MidiGrammar.with_controls`` forces control
tokens).
"""

from ._compiler import UnsupportedGrammarError
from ._rules import SchemeRules
from ._runtime import GrammarState, MidiGrammar
from .midilike import MidiLikeRules
from .mmm import MmmRules
from .remi import RemiRules
from .structured import StructuredRules
from .tsd import TsdRules

__all__ = [
    "SUPPORTED_SCHEMES",
    "GrammarState",
    "MidiGrammar",
    "MidiLikeRules",
    "MmmRules",
    "RemiRules",
    "SchemeRules",
    "StructuredRules",
    "TsdRules",
    "UnsupportedGrammarError",
]

SUPPORTED_SCHEMES = {
    rules.tokenization: rules.scheme
    for rules in (RemiRules, TsdRules, MidiLikeRules, StructuredRules, MmmRules)
}
"""miditok tokenization class name -> grammar scheme."""
