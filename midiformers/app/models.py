"""The models a demo offers: folders or Hub ids, their configs read up front, weights on demand."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path("outputs/default")
"""Where ``python train.py`` (the default recipe) writes its model; the demo's default."""

NO_MODEL_HELP = (
    "No model to generate with: the default model folder `{folder}` does not exist. "
    "Create it with `python train.py` (the default recipe, a few minutes on a CPU), "
    "or start the demo with `python app.py --model FOLDER_OR_HUB_ID`."
)


@dataclass
class ModelEntry:
    """One model of the demo: where it comes from, its config, and (once used) the pipeline."""

    spec: str
    label: str
    config: Any
    _pipeline: Any = field(default=None, repr=False)
    _tokenizer: Any = field(default=None, repr=False)
    _features: ModelFeatures | None = field(default=None, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def composers(self) -> list[str]:
        """Composer names of a composer-conditioned model (its config's labels), else ``[]``;
        the architecture registry says which models are conditioned on a composer."""
        from ..modeling import architecture_for

        arch = architecture_for(getattr(self.config, "model_type", ""), missing_ok=True)
        if arch is None or arch.conditioning != "composer":
            return []
        id2label = self.config.id2label or {}
        return [id2label[key] for key in sorted(id2label, key=int)]

    def tokenizer(self) -> Any:
        """The model's tokenizer, loaded on first use (without the weights)."""
        from transformers import AutoTokenizer

        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = AutoTokenizer.from_pretrained(self.spec)
            return self._tokenizer

    def pipeline(self) -> Any:
        """The ``midi-generation`` pipeline of this model, loaded on first use."""
        with self._lock:
            if self._pipeline is None:
                self._pipeline = _load_pipeline(self.spec, self.tokenizer())
            return self._pipeline

    @property
    def features(self) -> ModelFeatures:
        """What the page offers for this model (read from its tokenizer, loaded for it); a
        tokenizer that cannot be loaded offers only a token count (its first request then
        reports the problem)."""
        with self._lock:
            if self._features is None:
                try:
                    self._features = features_of(self.tokenizer())
                except Exception:  # missing or broken tokenizer files, no network
                    logger.exception("Could not read the tokenizer of %s", self.spec)
                    self._features = ModelFeatures()
            return self._features


@dataclass(frozen=True)
class ModelFeatures:
    """The controls a model supports, as its tokenizer and the grammar say.

    ``programs``: the instruments new notes may use (General MIDI numbers, -1 for drums;
    empty: no choice); ``bars`` / ``seconds``: lengths in bars (schemes with Bar tokens) or
    seconds (no BPE); ``infilling``: bars of a piece can be regenerated (the ``mmm`` preset);
    ``controls``: the attribute controls it has tokens for (``density``, ``polyphony`` ...).
    All but ``infilling`` and ``controls`` need the grammar (``grammar``: it models the scheme).
    """

    grammar: bool = False
    programs: tuple[int, ...] = ()
    bars: bool = False
    seconds: bool = False
    infilling: bool = False
    controls: tuple[str, ...] = ()


def features_of(tokenizer: Any) -> ModelFeatures:
    """Which of the page's controls apply to a model with this tokenizer."""
    from ..generation import MidiGrammar, UnsupportedGrammarError

    infilling = bool(getattr(tokenizer, "supports_infilling", False))
    controls = tuple(getattr(tokenizer, "attribute_controls", None) or ())
    try:
        grammar = MidiGrammar.for_tokenizer(tokenizer)
    except UnsupportedGrammarError:
        return ModelFeatures(infilling=infilling, controls=controls)

    def supported(limit, value) -> bool:
        try:
            limit(value)
        except UnsupportedGrammarError:
            return False
        return True

    config = tokenizer.miditok.config
    return ModelFeatures(
        grammar=True,
        programs=tuple(sorted(config.programs)) if config.use_programs else (),
        bars=supported(grammar.with_max_bars, 1),
        seconds=supported(grammar.with_max_seconds, 1.0),
        infilling=infilling,
        controls=controls,
    )


def _load_pipeline(spec: str, tokenizer: Any) -> Any:
    from transformers import AutoModelForCausalLM, pipeline

    from ..training.lora import is_adapter_folder, load_lora

    logger.info("Loading %s", spec)
    if is_adapter_folder(spec):  # a LoRA adapter: its base model with the adapter merged in
        model = load_lora(spec, merge=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(spec)
    model.eval()
    return pipeline("midi-generation", model=model, tokenizer=tokenizer)


def _labels(specs: list[str]) -> list[str]:
    """Short names: a folder's name (with its parent's when two share it), a Hub id as is."""
    names = [Path(spec).name if Path(spec).is_dir() else spec for spec in specs]
    return [
        f"{Path(spec).parent.name}/{name}"
        if Path(spec).is_dir() and names.count(name) > 1
        else name
        for spec, name in zip(specs, names)
    ]


def resolve_models(specs: list[str] | None) -> tuple[list[ModelEntry], list[str]]:
    """Read the config of each model; returns the usable entries and a notice per problem.

    With no ``specs`` the default ``train.py`` output is used when it exists. A model whose
    config cannot be read (missing folder, unknown Hub id, no network) is left out with a
    notice instead of stopping the demo.
    """
    from transformers import AutoConfig

    import midiformers  # noqa: F401  (registers the Auto classes)

    notices: list[str] = []
    if not specs:
        if not (DEFAULT_MODEL_DIR / "config.json").is_file():
            return [], [NO_MODEL_HELP.format(folder=DEFAULT_MODEL_DIR)]
        specs = [str(DEFAULT_MODEL_DIR)]
    entries = []
    for spec, label in zip(specs, _labels([str(s) for s in specs])):
        try:
            config = AutoConfig.from_pretrained(_config_source(str(spec)))
        except Exception as error:  # OSError, ValueError, HTTP errors: all mean "unusable"
            notices.append(f"Model `{spec}` is not available: {_first_line(error)}")
            continue
        entries.append(ModelEntry(spec=str(spec), label=label, config=config))
    return entries, notices


def _config_source(spec: str) -> str:
    """Where a model's config lives: the folder or Hub id itself, or for a LoRA adapter folder
    (``adapter_config.json``, written by ``train.py`` with ``lora: true``) its base model."""
    from ..training.lora import adapter_base, is_adapter_folder

    return adapter_base(spec) if is_adapter_folder(spec) else spec


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
