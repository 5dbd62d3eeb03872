"""MidiTokenizer: a transformers ``PreTrainedTokenizer`` over a miditok tokenizer.

The tokenizer takes MIDI where a text tokenizer takes text (a path, the bytes of a file,
a ``symusic.Score``, or a list of them) and returns the usual ``BatchEncoding``; padding,
truncation, tensors, ``tok.pad``, data collators, ``save_pretrained`` / ``from_pretrained``
and ``AutoTokenizer`` work as for any slow tokenizer. miditok does the music: its state
(configuration and any learned BPE merges) is saved in ``miditok_config.json``.

This file and its siblings (``midi_io.py``, ``presets.py``) are copied into saved folders
for ``trust_remote_code=True`` loading, so they import nothing from midiformers.
"""

from __future__ import annotations

import json
import numbers
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import miditok
import numpy as np
from miditok import TokSequence
from miditok.attribute_controls import BarAttributeControl, create_random_ac_indexes
from miditok.constants import TIME_SIGNATURE
from symusic.core import ScoreTick
from transformers import PreTrainedTokenizer
from transformers.tokenization_utils_base import BatchEncoding, PaddingStrategy, TruncationStrategy
from transformers.utils import logging

from .midi_io import (
    DEFAULT_MAX_FILE_SIZE,
    DEFAULT_MAX_QUARTERS,
    MidiFileError,
    MidiSource,
    load_score,
)
from .presets import (
    FILL_END,
    FILL_START,
    INFILL_PLACEHOLDER,
    INFILL_TOKENS,
    PRESETS,
    build_miditok_tokenizer,
    tokenizer_config_parameters,
)

logger = logging.get_logger(__name__)

MIDITOK_FILE_NAME = "miditok_config.json"
"""miditok's own state. Not ``tokenizer.json``: transformers reads that as a fast tokenizer."""

_METASPACE = "\u2581"  # miditok's BPE marks the first token of each bar/beat with it
_FRAMING_TYPES = ("PAD", "BOS", "EOS", "MASK")  # special tokens removed before decoding

CONTROL_OF_ATTRIBUTE = {
    "TrackNoteDensity": "density",
    "BarNoteDensity": "density",
    "TrackOnsetPolyphony": "polyphony",
    "BarOnsetPolyphony": "polyphony",
    "BarPitchClass": "pitch_classes",
    "TrackNoteDuration": "durations",
    "BarNoteDuration": "durations",
    "TrackRepetition": "repetition",
}
"""miditok attribute-control class name -> the generation-time control it serves."""


@dataclass
class DecodeReport:
    """What :meth:`MidiTokenizer.to_score` did with the ids it was given.

    Attributes:
        num_ids: ids received.
        num_special: ``PAD`` / ``BOS`` / ``EOS`` / ``MASK`` ids removed before decoding, and
            (``mmm``) infilling tokens that match no placeholder or fill.
        num_invalid: ids outside the miditok vocabulary (negative, too large, or tokens
            added with ``add_tokens``) removed before decoding.
        num_notes: notes in the decoded score.
    """

    num_ids: int = 0
    num_special: int = 0
    num_invalid: int = 0
    num_notes: int = 0

    @property
    def num_dropped(self) -> int:
        """Ids that did not reach miditok's decoder (special + invalid)."""
        return self.num_special + self.num_invalid


def _is_id_sequence(value: Any) -> bool:
    # int first: the numbers.Integral ABC check alone is ~20x slower per element.
    return isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, numbers.Integral)) for v in value
    )


def _source_name(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return "<Score>"


class MidiTokenizer(PreTrainedTokenizer):
    """A slow transformers tokenizer that turns MIDI into token ids with miditok.

    Build it from a preset (``remi`` (default), ``tsd``, ``midilike``, ``performance``,
    ``structured``, ``mmm`` (multi-track, attribute controls and infilling); see
    ``midiformers.tokenization.PRESETS`` for what each encodes), with
    ``miditok.TokenizerConfig`` arguments as keyword overrides, or wrap an existing miditok
    tokenizer with :meth:`from_miditok`::

        tok = MidiTokenizer(preset="performance", use_velocities=True)
        batch = tok(["a.mid", "b.mid"], padding=True, return_tensors="pt")
        tok.to_midi(batch.input_ids[0], "roundtrip.mid")

    Inputs are paths, MIDI bytes, ``symusic.Score`` objects (never modified) or lists of
    them; a list of ints is taken as already tokenized ids. ``decode`` returns the readable
    tokens (``"BOS_None Bar_None Position_0 Program_0 Pitch_60 ..."``, BPE tokens read
    ``"Pitch_60+Velocity_79"``); ``to_score`` / ``to_midi`` give the music back.

    Args:
        miditok_file: a saved miditok state (``miditok_config.json``); when given, the
            preset and overrides are ignored. ``from_pretrained`` passes it.
        preset: name of the miditok configuration to start from.
        max_file_size: largest MIDI file accepted, in bytes (``None``: no limit).
        max_quarters: latest event accepted, in quarter notes (``None``: no limit); guards
            against corrupt delta times that would expand into millions of tokens.
        miditok_config: extra ``TokenizerConfig`` arguments (e.g. tokenizer-specific
            ``additional_params`` such as REMI's ``use_bar_end_tokens``).
        model_max_length: default maximum length for ``truncation=True``.
        kwargs: ``TokenizerConfig`` arguments (``use_velocities=False``, ``beat_res=...``)
            and the usual ``PreTrainedTokenizer`` arguments (``padding_side`` ...).
    """

    vocab_files_names = {"miditok_file": MIDITOK_FILE_NAME}
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "right"

    def __init__(
        self,
        miditok_file: str | os.PathLike | None = None,
        preset: str = "remi",
        max_file_size: int | None = DEFAULT_MAX_FILE_SIZE,
        max_quarters: float | None = DEFAULT_MAX_QUARTERS,
        miditok_config: dict[str, Any] | None = None,
        model_max_length: int = 1024,
        **kwargs: Any,
    ):
        miditok_tokenizer = kwargs.pop("miditok_tokenizer", None)
        config_names = tokenizer_config_parameters()
        overrides = {**(miditok_config or {})}
        overrides.update({k: kwargs.pop(k) for k in list(kwargs) if k in config_names})
        if miditok_tokenizer is None:
            if miditok_file is not None:
                miditok_tokenizer = self._load_miditok(miditok_file)
            else:
                miditok_tokenizer = build_miditok_tokenizer(preset, **overrides)
        elif overrides:
            raise ValueError(
                "Configuration overrides cannot be applied to an existing miditok tokenizer."
            )
        self._check_miditok(miditok_tokenizer)
        self.miditok = miditok_tokenizer
        self.preset = preset
        self.max_file_size = max_file_size
        self.max_quarters = max_quarters
        self.last_decode_report = DecodeReport()
        # The vocabulary must exist before PreTrainedTokenizer.__init__ looks up special tokens.
        self._build_vocab()
        for name, token in (
            ("pad_token", "PAD_None"),
            ("bos_token", "BOS_None"),
            ("eos_token", "EOS_None"),
        ):
            kwargs.setdefault(name, token)
        if "MASK_None" in self._token_to_id:
            kwargs.setdefault("mask_token", "MASK_None")
        kwargs.setdefault("special_tokens_pattern", "bos_eos")
        super().__init__(
            preset=preset,
            max_file_size=max_file_size,
            max_quarters=max_quarters,
            model_max_length=model_max_length,
            **kwargs,
        )

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_miditok(
        cls, miditok_tokenizer: miditok.MusicTokenizer, **kwargs: Any
    ) -> MidiTokenizer:
        """Wrap an existing miditok tokenizer (shared, not copied; BPE training updates it).

        It must produce one token stream (``use_programs=True`` and
        ``one_token_stream_for_programs=True``) and have ``PAD``, ``BOS`` and ``EOS`` tokens.
        """
        return cls(miditok_tokenizer=miditok_tokenizer, preset="custom", **kwargs)

    @staticmethod
    def _load_miditok(path: str | os.PathLike) -> miditok.MusicTokenizer:
        with open(path, encoding="utf-8") as handle:
            tokenization = json.load(handle).get("tokenization")
        tokenizer_class = getattr(miditok, str(tokenization), None)
        if not (
            isinstance(tokenizer_class, type)
            and issubclass(tokenizer_class, miditok.MusicTokenizer)
        ):
            raise ValueError(f"{path}: unknown miditok tokenization {tokenization!r}.")
        return tokenizer_class(params=path)

    @staticmethod
    def _check_miditok(tokenizer: Any) -> None:
        if not isinstance(tokenizer, miditok.MusicTokenizer):
            raise TypeError(f"Expected a miditok.MusicTokenizer, got {type(tokenizer).__name__}.")
        if tokenizer.is_multi_voc or not tokenizer.one_token_stream:
            raise ValueError(
                f"MidiTokenizer needs a miditok tokenizer with a single token stream; "
                f"{type(tokenizer).__name__} here gives one sequence per track or several "
                "vocabularies. Use REMI, TSD, MIDILike or Structured with "
                "use_programs=True and one_token_stream_for_programs=True."
            )
        missing = [t for t in ("PAD_None", "BOS_None", "EOS_None") if t not in tokenizer.vocab]
        if missing:
            raise ValueError(
                f"The miditok tokenizer lacks the special tokens {missing}; "
                "include 'PAD', 'BOS' and 'EOS' in TokenizerConfig(special_tokens=...)."
            )

    def _build_vocab(self) -> None:
        """Mirror miditok's vocabulary (base tokens, or BPE tokens once trained) as id <-> str."""
        if self.miditok.is_trained:
            learned = self.miditok._vocab_learned_bytes_to_tokens
            id_to_token: list[str] = [""] * len(self.miditok.vocab_model)
            for byte_string, index in self.miditok.vocab_model.items():
                name = "+".join(learned[byte_string])
                if byte_string.startswith(_METASPACE):
                    name = _METASPACE + name
                id_to_token[index] = name
        else:
            id_to_token = [""] * len(self.miditok.vocab)
            for token, index in self.miditok.vocab.items():
                id_to_token[index] = token
        self._id_to_token = id_to_token
        self._token_to_id = {token: index for index, token in enumerate(id_to_token)}
        # Only the framing specials are removed before decoding: MMM's Track_Start / Track_End
        # are the music's structure, its infilling tokens are resolved by _splice_fills.
        self._special_ids = frozenset(
            self.miditok.vocab[token]
            for token in self.miditok.special_tokens
            if token.split("_")[0] in _FRAMING_TYPES
        )
        self._infill_ids = tuple(self.miditok.vocab.get(token) for token in INFILL_TOKENS)

    # ------------------------------------------------------------------ vocabulary

    @property
    def vocab_size(self) -> int:
        """Size of the miditok vocabulary (learned BPE vocabulary once trained)."""
        return len(self._id_to_token)

    @property
    def supports_infilling(self) -> bool:
        """Whether the vocabulary has the infilling tokens (``Infill_Bar``, ``FillBar_Start``,
        ``FillBar_End``; the ``mmm`` preset)."""
        return all(token_id is not None for token_id in self._infill_ids)

    @property
    def attribute_controls(self) -> list[str]:
        """Generation-time controls this tokenizer has tokens for, in a fixed order (a subset
        of ``density``, ``polyphony``, ``pitch_classes``, ``durations``, ``repetition``;
        ``[]`` without miditok attribute controls)."""
        names = {
            CONTROL_OF_ATTRIBUTE.get(type(control).__name__)
            for control in getattr(self.miditok, "attribute_controls", [])
        }
        order = ("density", "polyphony", "pitch_classes", "durations", "repetition")
        return [name for name in order if name in names]

    def get_vocab(self) -> dict[str, int]:
        vocab = dict(self._token_to_id)
        vocab.update(self._added_tokens_encoder)
        return vocab

    def _convert_token_to_id(self, token: str) -> int:
        try:
            return self._token_to_id[token]
        except KeyError:
            raise ValueError(
                f"Token {token!r} is not in this MidiTokenizer's vocabulary."
            ) from None

    def _convert_id_to_token(self, index: int) -> str:
        if 0 <= index < len(self._id_to_token):
            return self._id_to_token[index]
        return f"UNK_{index}"

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return " ".join(tokens)

    def save_vocabulary(
        self, save_directory: str, filename_prefix: str | None = None
    ) -> tuple[str]:
        """Write miditok's state (config and BPE model) as ``miditok_config.json``."""
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        path = Path(save_directory) / f"{prefix}{MIDITOK_FILE_NAME}"
        self.miditok.save(path)
        return (str(path),)

    # ------------------------------------------------------------------ encoding

    def load_score(self, source: Any, name: str | None = None) -> ScoreTick:
        """:func:`load_score` with this tokenizer's size limits (a copy for Score input)."""
        if isinstance(source, str) and not source.strip():
            raise MidiFileError(
                repr(source),
                "an empty string is not a MIDI file path (give a path, bytes or a Score)",
            )
        return load_score(
            source, name=name, max_file_size=self.max_file_size, max_quarters=self.max_quarters
        )

    def encode_midi(
        self,
        source: Any,
        control_ratios: tuple[Any, Any] | None = None,
        seed: int | None = None,
    ) -> list[int]:
        """Token ids of one MIDI source, without special tokens.

        Args:
            source: a path, MIDI bytes or a ``symusic.Score``.
            control_ratios: ``(tracks_ratio, bars_ratio)`` adds attribute-control tokens
                (tokenizers with attribute controls, e.g. the ``mmm`` preset), as a model
                learns them: every track gets this share of the track-level controls, and
                every bar-level control this share of the track's bars, drawn at random by
                miditok's ``create_random_ac_indexes`` (a ratio may be a ``(low, high)``
                range to draw from). ``None``: no control tokens.
            seed: seed of that draw (``None``: fresh randomness). Python's ``random`` state
                is restored afterwards.

        Raises:
            MidiFileError: the source is unreadable, too large, or miditok cannot tokenize it.
            ValueError: ``control_ratios`` for a tokenizer without attribute controls, or a
                ratio outside [0, 1].
        """
        if control_ratios is not None:
            self.check_control_ratios(control_ratios)
        name = _source_name(source)
        score = self.load_score(source, name)
        if score.note_num() == 0:
            logger.warning("%s has no notes; it encodes to the special tokens only.", name)
            return []
        self._warn_out_of_range(score, name)
        try:
            if control_ratios is None:
                sequence = self.miditok.encode(score)
            else:
                sequence = self._encode_with_controls(score, control_ratios, seed)
        except Exception as error:  # miditok fails on rare malformed-but-parsable files
            raise MidiFileError(
                name, f"miditok cannot tokenize it ({type(error).__name__}: {error})"
            ) from error
        return list(sequence.ids)

    def check_control_ratios(self, control_ratios: Any) -> None:
        """Raise a one-line ``ValueError`` unless ``control_ratios`` suits
        :meth:`encode_midi` (and this tokenizer has attribute controls)."""
        if not self.miditok.attribute_controls:
            raise ValueError(
                "control_ratios: this tokenizer has no attribute controls (use the 'mmm' "
                "preset, or enable miditok's ac_* options)."
            )
        if not isinstance(control_ratios, (list, tuple)) or len(control_ratios) != 2:
            raise ValueError(
                f"control_ratios must be (tracks_ratio, bars_ratio), got {control_ratios!r}."
            )
        for name, ratio in zip(("tracks_ratio", "bars_ratio"), control_ratios):
            bounds = ratio if isinstance(ratio, (list, tuple)) else (ratio, ratio)
            if len(bounds) != 2 or not all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 <= v <= 1
                for v in bounds
            ):
                raise ValueError(
                    f"control_ratios: {name} must be a number in [0, 1] or a (low, high) "
                    f"range in it, got {ratio!r}."
                )

    def _encode_with_controls(
        self, score: ScoreTick, control_ratios: tuple[Any, Any], seed: int | None
    ) -> TokSequence:
        """miditok's encoding with random attribute-control indexes (drawn on the
        preprocessed score, so that bar and track indexes are the ones miditok encodes)."""
        tracks_ratio, bars_ratio = (
            tuple(r) if isinstance(r, (list, tuple)) else r for r in control_ratios
        )
        score = self.miditok.preprocess_score(score)
        controls = self.miditok.attribute_controls
        state = random.getstate()
        try:
            random.seed(seed)
            indexes = create_random_ac_indexes(score, controls, tracks_ratio, bars_ratio)
        finally:
            random.setstate(state)
        # miditok 3.1.0 computes a bar control over the notes since the previous *chosen* bar
        # (and skips bars of one note): compute each chosen bar on its own notes instead.
        self.miditok.attribute_controls = [
            _BarByBar(control) if isinstance(control, BarAttributeControl) else control
            for control in controls
        ]
        try:
            return self.miditok.encode(
                score, no_preprocess_score=True, attribute_controls_indexes=indexes
            )
        finally:
            self.miditok.attribute_controls = controls

    def out_of_range_events(self, score: ScoreTick) -> list[str]:
        """What miditok will change in ``score`` because it is outside the vocabulary's range.

        Time signatures without a ``TimeSig`` token are dropped (the meter before goes on, 4/4
        at the start); tempi outside ``tempo_range`` become its nearest end. Each entry reads
        like ``"time signature 11/16 -> 4/4"`` or ``"tempo 500 bpm -> 480 bpm"``.
        """
        config = self.miditok.config
        events: list[str] = []
        if config.use_time_signatures and len(score.time_signatures) > 0:
            supported = set(self.miditok.time_signatures)
            current = tuple(TIME_SIGNATURE)
            changed: dict[tuple[int, int], tuple[int, int]] = {}
            for signature in sorted(score.time_signatures, key=lambda sig: sig.time):
                meter = (signature.numerator, signature.denominator)
                if meter in supported:
                    current = meter
                else:
                    changed.setdefault(meter, current)
            events += [f"time signature {a}/{b} -> {c}/{d}" for (a, b), (c, d) in changed.items()]
        if config.use_tempos and len(score.tempos) > 0:
            low, high = config.tempo_range
            qpm = np.round(60_000_000 / score.tempos.numpy()["mspq"], 2)
            for outside, end in ((qpm[qpm < low], low), (qpm[qpm > high], high)):
                if len(outside) == 0:
                    continue
                outside = np.unique(outside)
                events += [f"tempo {value:g} bpm -> {end:g} bpm" for value in outside[:3]]
                if len(outside) > 3:
                    events.append(f"{len(outside) - 3} more tempi -> {end:g} bpm")
        return events

    def _warn_out_of_range(self, score: ScoreTick, name: str) -> None:
        """One warning per file for the meters and tempi the vocabulary cannot hold."""
        events = self.out_of_range_events(score)
        if not events:
            return
        config = self.miditok.config
        supported = []
        if config.use_time_signatures:
            meters = " ".join(f"{a}/{b}" for a, b in self.miditok.time_signatures)
            supported.append(f"time signatures {meters}")
        if config.use_tempos:
            supported.append("tempi {:g}-{:g} bpm".format(*config.tempo_range))
        logger.warning(
            "%s: %s (outside this tokenizer's range: %s).",
            name,
            ", ".join(events),
            "; ".join(supported),
        )

    def tokenize(self, text: Any, **kwargs: Any) -> list[str]:
        """Token strings of one MIDI source (a path, bytes or ``symusic.Score``)."""
        return [self._id_to_token[i] for i in self.encode_midi(text)]

    def check_ids(self, ids: Sequence[int], name: str = "input") -> None:
        """Raise a ``ValueError`` naming the first id outside ``[0, len(self))``."""
        size = len(self)
        for index in ids:
            if not 0 <= index < size:
                raise ValueError(
                    f"{name}: token id {index} is outside the tokenizer's vocabulary "
                    f"(ids 0-{size - 1}, vocab size {size})."
                )

    def _ids_of(self, item: Any) -> list[int]:
        if _is_id_sequence(item):
            ids = [int(i) for i in item]
            self.check_ids(ids)
            return ids
        if isinstance(item, MidiSource):
            return self.encode_midi(item)
        raise TypeError(
            "MidiTokenizer encodes MIDI file paths, MIDI bytes, symusic.Score objects or lists "
            f"of token ids, got {type(item).__name__}."
        )

    def _encode_plus(
        self,
        text: Any,
        text_pair: Any = None,
        add_special_tokens: bool = True,
        padding_strategy: PaddingStrategy = PaddingStrategy.DO_NOT_PAD,
        truncation_strategy: TruncationStrategy = TruncationStrategy.DO_NOT_TRUNCATE,
        max_length: int | None = None,
        stride: int = 0,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: Any = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_length: bool = False,
        verbose: bool = True,
        **kwargs: Any,
    ) -> BatchEncoding:
        if text_pair is not None:
            raise ValueError(
                "MidiTokenizer encodes single pieces; sequence pairs are not supported."
            )
        options = {
            "add_special_tokens": add_special_tokens,
            "truncation": truncation_strategy.value,
            "max_length": max_length,
            "stride": stride,
            "return_token_type_ids": return_token_type_ids,
            "return_overflowing_tokens": return_overflowing_tokens,
            "return_special_tokens_mask": return_special_tokens_mask,
            "return_length": return_length,
            "verbose": verbose,
        }
        if not isinstance(text, (list, tuple)) or (len(text) > 0 and _is_id_sequence(text)):
            return self.prepare_for_model(
                self._ids_of(text),
                padding=padding_strategy.value,
                pad_to_multiple_of=pad_to_multiple_of,
                padding_side=padding_side,
                return_tensors=return_tensors,
                prepend_batch_axis=True,
                return_attention_mask=return_attention_mask,
                **options,
            )
        if not text:
            return BatchEncoding({name: [] for name in self.model_input_names})
        batch: dict[str, list] = {}
        for item in text:
            encoded = self.prepare_for_model(
                self._ids_of(item), return_attention_mask=False, **options
            )
            for key, value in encoded.items():
                batch.setdefault(key, []).append(value)
        if return_tensors and return_overflowing_tokens:
            batch.pop("overflowing_tokens", None)
            batch.pop("num_truncated_tokens", None)
        batch = self.pad(
            batch,
            padding=padding_strategy.value,
            max_length=max_length,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side,
            return_attention_mask=return_attention_mask,
        )
        return BatchEncoding(batch, tensor_type=return_tensors)

    # ------------------------------------------------------------------ decoding

    @staticmethod
    def _as_id_list(token_ids: Any) -> list[int]:
        if hasattr(token_ids, "tolist"):  # torch / numpy
            token_ids = token_ids.tolist()
        if isinstance(token_ids, numbers.Integral):
            return [int(token_ids)]
        token_ids = list(token_ids)
        if len(token_ids) == 1 and isinstance(token_ids[0], (list, tuple)):
            token_ids = list(token_ids[0])  # a batch of one, e.g. generate() output
        if not _is_id_sequence(token_ids):
            raise ValueError("to_score / to_midi decode one sequence of token ids (1-D).")
        return [int(i) for i in token_ids]

    def to_score(
        self, token_ids: Any, return_report: bool = False
    ) -> ScoreTick | tuple[ScoreTick, DecodeReport]:
        """Decode one sequence of ids into a ``symusic.Score`` (ticks at miditok's resolution).

        Special tokens (PAD/BOS/EOS/MASK) and ids outside the vocabulary are removed first
        (``mmm``: ``Track_Start`` / ``Track_End`` separate the tracks, and each ``Infill_Bar``
        placeholder is replaced by its ``FillBar_Start ... FillBar_End`` content, see
        :meth:`splice_fills`);
        decoding never fails on them (a model whose ``vocab_size`` exceeds the tokenizer's may
        sample such ids). The counts are in the :class:`DecodeReport` returned with
        ``return_report=True`` (the thread-safe way) and kept in ``self.last_decode_report``
        until the next call; without ``return_report``, ids outside the vocabulary are also
        logged as a warning naming the first of them.
        """
        ids = self._as_id_list(token_ids)
        size = len(self._id_to_token)
        kept = [i for i in ids if 0 <= i < size and i not in self._special_ids]
        num_special = sum(1 for i in ids if i in self._special_ids)
        num_invalid = len(ids) - len(kept) - num_special
        if self.supports_infilling:
            kept, unmatched = self._splice_fills(kept)
            num_special += unmatched
        if num_invalid and not return_report:
            first = next(i for i in ids if not 0 <= i < size)
            logger.warning(
                "to_score / to_midi dropped %d id(s) outside the tokenizer's vocabulary (ids "
                "0-%d), the first is %d.",
                num_invalid,
                size - 1,
                first,
            )
        if self.miditok.is_trained:  # BPE ids must be marked, or miditok decodes 0 notes
            sequence = TokSequence(ids=kept, are_ids_encoded=True)
        else:  # give the token strings too: miditok's own id lookup is slower
            sequence = TokSequence(ids=kept, tokens=[self._id_to_token[i] for i in kept])
        score = self.miditok.decode(sequence)
        report = DecodeReport(len(ids), num_special, num_invalid, score.note_num())
        self.last_decode_report = report
        return (score, report) if return_report else score

    def splice_fills(self, token_ids: Any) -> list[int]:
        """MMM infilling: the ids with each ``Infill_Bar`` placeholder replaced, in order, by
        the content of the ``FillBar_Start ... FillBar_End`` sections after the tracks (a
        placeholder without a fill becomes an empty bar; unmatched fills are dropped)."""
        return self._splice_fills(self._as_id_list(token_ids))[0]

    def _splice_fills(self, ids: list[int]) -> tuple[list[int], int]:
        """:meth:`splice_fills` and the number of infilling ids it could not match."""
        placeholder, start, end = self._infill_ids
        if placeholder not in ids and start not in ids and end not in ids:
            return ids, 0
        first = ids.index(start) if start in ids else len(ids)
        fills: list[list[int]] = []
        unmatched = 0
        index = first
        while index < len(ids):
            if ids[index] != start:  # a stray token between fills
                unmatched += 1
                index += 1
                continue
            stop = index + 1
            while stop < len(ids) and ids[stop] not in (start, end):
                stop += 1
            fills.append(ids[index + 1 : stop])
            index = stop + 1 if stop < len(ids) and ids[stop] == end else stop
        spliced: list[int] = []
        for token_id in ids[:first]:
            if token_id == placeholder:
                if len(fills) > 0:
                    spliced += fills.pop(0)
                else:
                    unmatched += 1
            elif token_id == end:
                unmatched += 1
            else:
                spliced.append(token_id)
        unmatched += sum(len(fill) + 2 for fill in fills)
        return spliced, unmatched

    @property
    def last_decode_dropped(self) -> int:
        """Ids dropped by the most recent ``to_score`` / ``to_midi`` call on this tokenizer."""
        return self.last_decode_report.num_dropped

    def to_midi(self, token_ids: Any, path: str | os.PathLike) -> Path:
        """Decode one sequence of ids and write it as a MIDI file; returns the file's path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.to_score(token_ids).dump_midi(path)
        return path

    def decode(self, token_ids: Any, skip_special_tokens: bool = False, **kwargs: Any):
        """Readable tokens of the ids (transformers convention); an id outside the vocabulary
        reads ``UNK_<id>``.

        With ``output_path=...`` the ids are also written as a MIDI file (one sequence only,
        through :meth:`to_midi`, which drops such ids with a warning).
        """
        output_path = kwargs.pop("output_path", None)
        if output_path is not None:
            self.to_midi(token_ids, output_path)
        return super().decode(token_ids, skip_special_tokens=skip_special_tokens, **kwargs)

    # ------------------------------------------------------------------ BPE

    def train_bpe(self, sources: Sequence[Any], vocab_size: int, **kwargs: Any) -> MidiTokenizer:
        """Learn BPE merges with miditok on MIDI files or Scores, growing the vocabulary.

        ``sources`` is a sequence of paths, bytes or ``symusic.Score`` objects, read one at a
        time (an unreadable file raises :class:`MidiFileError`). Extra keyword arguments go
        to miditok's ``train``. Returns ``self``; ``save_pretrained`` keeps the merges.
        """
        iterator = _BpeTrainingIterator(self, sources)
        self.miditok.train(vocab_size=vocab_size, model="BPE", iterator=iterator, **kwargs)
        self._build_vocab()
        self._update_total_vocab_size()
        return self


class _BarByBar(BarAttributeControl):
    """A miditok bar-level attribute control computed on each chosen bar's own notes.

    miditok's ``BarAttributeControl.compute`` walks the chosen bars keeping its place in the
    note list only from chosen bar to chosen bar, so with a random subset of bars a bar's
    value also counts the notes of the skipped bars before it; and it skips bars of a single
    note. Clipping the track to one bar and computing that bar as the track's last gives the
    bar's own value, with miditok's arithmetic.
    """

    def __init__(self, control: BarAttributeControl):
        super().__init__(control.tokens)
        self.control = control

    def compute(self, track, time_division, ticks_bars, ticks_beats, bars_idx):
        events = []
        for bar in bars_idx:
            if bar >= len(ticks_bars):
                continue
            end = ticks_bars[bar + 1] if bar + 1 < len(ticks_bars) else track.end() + 1
            notes = track.clip(ticks_bars[bar], end, clip_end=False)
            if notes.note_num() > 0:
                events += self.control.compute(notes, time_division, ticks_bars, ticks_beats, [bar])
        return events

    def _compute_on_bar(self, notes_soa, controls_soa, pitch_bends_soa, time_division):
        return self.control._compute_on_bar(notes_soa, controls_soa, pitch_bends_soa, time_division)


class _BpeTrainingIterator:
    """miditok's ``TokTrainingIterator`` for any MIDI source, through :func:`load_score`."""

    def __init__(self, tokenizer: MidiTokenizer, sources: Sequence[Any]):
        self.tokenizer = tokenizer
        self.sources = sources

    def __len__(self) -> int:
        return len(self.sources)

    def __iter__(self) -> Iterator[list[str]]:
        miditok_tokenizer = self.tokenizer.miditok
        split = miditok_tokenizer.config.encode_ids_split
        for source in self.sources:
            name = _source_name(source)
            score = self.tokenizer.load_score(source, name)
            self.tokenizer._warn_out_of_range(score, name)
            sequence = miditok_tokenizer.encode(score, encode_ids=False)
            if split == "bar":
                parts = sequence.split_per_bars()
            elif split == "beat":
                parts = sequence.split_per_beats()
            else:
                parts = [sequence]
            ids = [part.ids for part in parts if len(part) > 0]
            if ids:
                yield miditok_tokenizer._ids_to_bytes(ids, as_one_str=True)


__all__ = [
    "CONTROL_OF_ATTRIBUTE",
    "FILL_END",
    "FILL_START",
    "INFILL_PLACEHOLDER",
    "MIDITOK_FILE_NAME",
    "PRESETS",
    "DecodeReport",
    "MidiTokenizer",
]
