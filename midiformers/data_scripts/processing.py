"""From MIDI datasets to model inputs: tokenization, packing and pitch transposition.

:func:`tokenize_dataset` turns the ``midi`` column of any midiformers dataset into
``input_ids``, either packed into fixed-length blocks for causal language modelling (the
``group_texts`` recipe of transformers' ``run_clm.py``) or kept one example per piece (for
the VAE and the composer classifier). :class:`PitchTranspose` is the on-the-fly
augmentation of the training split: every time an example is read, all its pitch tokens
move by the same random number of semitones.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Sequence
from typing import Any, Literal

import datasets
import numpy as np

logger = logging.getLogger(__name__)

Mode = Literal["pack", "piece", "chunk", "bars"]
_PITCH_TOKEN = re.compile(r"^(Pitch|NoteOn|NoteOff)_(\d+)$")
LABEL_COLUMNS = ("composer", "label")


class PitchTranspose:
    """Transpose token sequences by a random number of semitones (a ``set_transform``).

    Built from the tokenizer's vocabulary: every ``Pitch_p`` / ``NoteOn_p`` / ``NoteOff_p``
    token maps to the same kind of token ``k`` semitones away, and a bar's pitch-class control
    tokens (``ACBarPitchClass_c``, the ``mmm`` preset) to the classes ``k`` semitones away.
    Drum tokens (``PitchDrum_*``) are untouched. For each example a shift ``k`` in
    ``[-max_semitones, max_semitones]`` is drawn among those that keep every pitch of that
    example inside the vocabulary, so a transposed sequence is always valid.

    Args:
        tokenizer: a :class:`~midiformers.tokenization.MidiTokenizer` without BPE (merged
            tokens cannot be transposed one by one).
        max_semitones: largest shift, up or down.
        columns: the token-id columns to transpose (``labels`` follows ``input_ids``).
        seed: seed of the random shifts (``None``: fresh randomness).
    """

    def __init__(
        self,
        tokenizer: Any,
        max_semitones: int,
        columns: Sequence[str] = ("input_ids", "labels"),
        seed: int | None = None,
    ):
        if max_semitones < 0:
            raise ValueError(f"max_semitones must be >= 0, got {max_semitones}")
        miditok = getattr(tokenizer, "miditok", None)
        if miditok is not None and miditok.is_trained:
            raise ValueError(
                "Pitch transposition works on base tokens; this tokenizer is BPE-trained, so a "
                "token may merge several notes. Use an untrained tokenizer, or no transposition."
            )
        self.max_semitones = int(max_semitones)
        self.columns = tuple(columns)
        self.rng = np.random.default_rng(seed)
        vocab = tokenizer.get_vocab()
        size = max(vocab.values()) + 1
        pitch = np.full(size, -1, dtype=np.int64)  # pitch of each token id, -1 if none
        by_kind: dict[str, dict[int, int]] = {}
        for token, index in vocab.items():
            match = _PITCH_TOKEN.match(token)
            if match:
                pitch[index] = int(match.group(2))
                by_kind.setdefault(match.group(1), {})[int(match.group(2))] = index
        if not by_kind:
            raise ValueError("The tokenizer's vocabulary has no Pitch / NoteOn / NoteOff tokens.")
        self.pitch_of = pitch
        shifts = range(-self.max_semitones, self.max_semitones + 1)
        self.table = np.tile(np.arange(size, dtype=np.int64), (len(shifts), 1))
        for row, shift in enumerate(shifts):
            for ids in by_kind.values():
                for p, index in ids.items():
                    self.table[row, index] = ids.get(p + shift, -1)
        self.low = min(min(ids) for ids in by_kind.values())
        self.high = max(max(ids) for ids in by_kind.values())
        # bar pitch-class controls (mmm) move with the notes, around the octave
        classes = [vocab.get(f"ACBarPitchClass_{c}") for c in range(12)]
        self.pitch_class_ids = np.array([i for i in classes if i is not None], dtype=np.int64)
        if len(self.pitch_class_ids) == 12:
            for row, shift in enumerate(shifts):
                for c, index in enumerate(classes):
                    self.table[row, index] = classes[(c + shift) % 12]

    def allowed_shifts(self, ids: np.ndarray) -> np.ndarray:
        """The shifts that keep every pitch of ``ids`` in the vocabulary."""
        pitches = self.pitch_of[ids[(ids >= 0) & (ids < len(self.pitch_of))]]
        pitches = pitches[pitches >= 0]
        if pitches.size == 0:
            return np.array([0])
        low = max(-self.max_semitones, self.low - int(pitches.min()))
        high = min(self.max_semitones, self.high - int(pitches.max()))
        candidates = np.arange(low, high + 1)
        rows = self.table[candidates + self.max_semitones]
        in_vocab = (rows[:, ids[(ids >= 0) & (ids < len(self.pitch_of))]] >= 0).all(axis=1)
        return candidates[in_vocab] if in_vocab.any() else np.array([0])

    def transpose(self, ids: Sequence[int], shift: int) -> list[int]:
        """``ids`` moved by ``shift`` semitones (the shift must be allowed)."""
        array = np.asarray(ids, dtype=np.int64)
        inside = (array >= 0) & (array < len(self.pitch_of))
        out = array.copy()
        out[inside] = self.table[shift + self.max_semitones, array[inside]]
        if (out < 0).any():
            raise ValueError(f"shift {shift} moves a pitch out of the tokenizer's range")
        if shift and len(self.pitch_class_ids):
            _sort_runs(out, np.isin(out, self.pitch_class_ids))
        return out.tolist()

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        main = self.columns[0]
        out = dict(batch)
        for column in self.columns:
            if column in batch:
                out[column] = []
        for row, ids in enumerate(batch[main]):
            shift = int(self.rng.choice(self.allowed_shifts(np.asarray(ids, dtype=np.int64))))
            for column in self.columns:
                if column in batch:
                    out[column].append(self.transpose(batch[column][row], shift))
        return out


def _sort_runs(ids: np.ndarray, marked: np.ndarray) -> None:
    """Sort (in place) each run of consecutive marked ids: a bar's pitch classes stay in
    ascending order, as miditok writes them, once transposed around the octave."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], marked.astype(np.int8), [0]])))
    for start, stop in zip(edges[::2], edges[1::2]):
        ids[start:stop] = np.sort(ids[start:stop])


def _special_ids(tokenizer: Any, add_special_tokens: bool) -> tuple[list[int], list[int]]:
    if not add_special_tokens:
        return [], []
    return [tokenizer.bos_token_id], [tokenizer.eos_token_id]


DEFAULT_CONTROL_RATIOS = ((0.0, 1.0), (0.0, 1.0))
"""Attribute controls in training (tokenizers that have them): per track, a share of the
track-level controls and, per bar-level control, a share of the bars, each drawn uniformly in
[0, 1] per piece, so that the model sees every mix from none to all."""


def resolve_control_ratios(tokenizer: Any, control_ratios: Any = "auto") -> tuple | None:
    """``"auto"``: :data:`DEFAULT_CONTROL_RATIOS` for a tokenizer with attribute controls (the
    ``mmm`` preset), ``None`` otherwise; ``None`` or a ``(tracks_ratio, bars_ratio)`` pair
    (each a number or a ``(low, high)`` range in [0, 1]) as given."""
    if isinstance(control_ratios, str) and control_ratios == "auto":
        has_controls = bool(getattr(tokenizer, "attribute_controls", None))
        return DEFAULT_CONTROL_RATIOS if has_controls else None
    return control_ratios


def _piece_seed(seed: int | None, data: Any, name: Any) -> int | None:
    """A seed per piece from the run's seed and the piece itself (the same in every process
    and pass, whatever the batch or shard it comes in)."""
    if seed is None:
        return None
    key = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else str(name).encode()
    return zlib.crc32(key, seed & 0xFFFFFFFF)


def _encode_batch(
    batch: dict[str, list],
    tokenizer: Any,
    add_special_tokens: bool,
    midi_column: str,
    keep: Sequence[str],
    dropped: list[dict[str, str]] | None = None,
    control_ratios: tuple | None = None,
    seed: int | None = None,
) -> dict[str, list]:
    """Token ids of each piece with BOS / EOS; unreadable pieces are dropped with a warning
    (and appended to ``dropped`` as ``{"name", "reason"}`` when given). With
    ``control_ratios``, random attribute-control tokens are added (seeded per piece)."""
    from ..tokenization import MidiFileError

    bos, eos = _special_ids(tokenizer, add_special_tokens)
    out: dict[str, list] = {"input_ids": [], **{column: [] for column in keep}}
    ids_column = batch.get("id", [None] * len(batch[midi_column]))
    for row, data in enumerate(batch[midi_column]):
        name = ids_column[row] or f"row {row}"
        try:
            if control_ratios is not None:
                piece_seed = _piece_seed(seed, data, name)
                ids = tokenizer.encode_midi(data, control_ratios=control_ratios, seed=piece_seed)
            elif hasattr(tokenizer, "encode_midi"):
                ids = tokenizer.encode_midi(data)
            else:
                ids = None
            if ids is None:
                ids = tokenizer(data, add_special_tokens=False)["input_ids"]
        except MidiFileError as error:
            logger.warning("Dropping %s: %s", name, error.reason)
            if dropped is not None:
                dropped.append({"name": str(name), "reason": error.reason})
            continue
        out["input_ids"].append(bos + list(ids) + eos)
        for column in keep:
            out[column].append(batch[column][row])
    return out


def _pack(batch: dict[str, list], block_size: int) -> dict[str, list]:
    """Concatenate the pieces of a batch and cut them into ``block_size`` blocks
    (the remainder is dropped), as ``run_clm.py``'s ``group_texts``."""
    concatenated = [token for ids in batch["input_ids"] for token in ids]
    total = (len(concatenated) // block_size) * block_size
    blocks = [concatenated[i : i + block_size] for i in range(0, total, block_size)]
    return {"input_ids": blocks, "labels": [list(block) for block in blocks]}


def _chunk(batch: dict[str, list], block_size: int, keep: Sequence[str]) -> dict[str, list]:
    """Cut each piece into consecutive windows of at most ``block_size`` tokens; every
    window keeps the piece's other columns (e.g. its composer)."""
    out: dict[str, list] = {"input_ids": [], **{column: [] for column in keep}}
    for row, ids in enumerate(batch["input_ids"]):
        for start in range(0, len(ids), block_size):
            out["input_ids"].append(ids[start : start + block_size])
            for column in keep:
                out[column].append(batch[column][row])
    return out


def bar_markers(tokenizer: Any) -> dict[str, int | None] | None:
    """The ids that delimit tracks and bars (``Track_Start``, ``Track_End``, ``Bar_None``) and
    frame pieces (``BOS``, ``EOS``) in a multi-track tokenizer's vocabulary (the ``mmm``
    preset); ``None`` when it has no tracks."""
    vocab = tokenizer.get_vocab()
    if not all(token in vocab for token in ("Track_Start", "Track_End", "Bar_None")):
        return None
    return {
        "track_start": vocab["Track_Start"],
        "track_end": vocab["Track_End"],
        "bar": vocab["Bar_None"],
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
    }


def _tracks_and_bars(ids: list[int], markers: dict) -> list[tuple[list[int], list[list[int]]]]:
    """The complete ``Track_Start ... Track_End`` blocks of a piece as (header, bars)."""
    tracks = []
    start = 0
    while markers["track_start"] in ids[start:]:
        begin = ids.index(markers["track_start"], start)
        if markers["track_end"] not in ids[begin:]:
            break
        end = ids.index(markers["track_end"], begin)
        body = ids[begin:end]
        cuts = [i for i, token in enumerate(body) if token == markers["bar"]]
        header = body[: cuts[0]] if cuts else body
        tracks.append((header, [body[a:b] for a, b in zip(cuts, [*cuts[1:], len(body)])]))
        start = end + 1
    return tracks


def _bar_windows(
    batch: dict[str, list], block_size: int, keep: Sequence[str], markers: dict
) -> dict[str, list]:
    """Cut each multi-track piece into windows of consecutive whole bars of every track, each a
    piece of its own (``BOS``, each track's header and bars, ``Track_End``, ``EOS``) of at most
    ``block_size`` tokens; a track without a bar in a window is left out of it, and a bar too
    long to fit alone is dropped with its window."""
    out: dict[str, list] = {"input_ids": [], **{column: [] for column in keep}}
    for row, ids in enumerate(batch["input_ids"]):
        frame = [markers["bos"]] * (ids[:1] == [markers["bos"]])
        tail = [markers["eos"]] * (ids[-1:] == [markers["eos"]])
        tracks = _tracks_and_bars(list(ids), markers)
        count = max((len(bars) for _, bars in tracks), default=0)
        first = 0
        while first < count:
            size, last = len(frame) + len(tail), first
            while last < count:
                grown = size + sum(
                    len(bars[last]) + (len(header) + 1 if last == first else 0)
                    for header, bars in tracks
                    if last < len(bars)
                )
                if grown > block_size:
                    break
                size, last = grown, last + 1
            if last == first:  # one bar alone does not fit
                first += 1
                continue
            window = list(frame)
            for header, bars in tracks:
                if first < len(bars):
                    window += [*header, *(t for bar in bars[first:last] for t in bar)]
                    window.append(markers["track_end"])
            out["input_ids"].append(window + tail)
            for column in keep:
                out[column].append(batch[column][row])
            first = last
    return out


def _truncate(batch: dict[str, list], max_length: int, eos: list[int]) -> dict[str, list]:
    """Keep the first ``max_length`` tokens of each piece, ending with EOS when it had one."""
    out = dict(batch)
    out["input_ids"] = [
        ids if len(ids) <= max_length else ids[: max_length - len(eos)] + eos
        for ids in batch["input_ids"]
    ]
    return out


AnyDataset = datasets.Dataset | datasets.IterableDataset


def tokenize_dataset(
    dataset: datasets.DatasetDict
    | datasets.Dataset
    | datasets.IterableDatasetDict
    | datasets.IterableDataset,
    tokenizer: Any,
    max_length: int,
    *,
    mode: Mode = "pack",
    add_special_tokens: bool = True,
    num_proc: int | None = None,
    transpose_semitones: int = 0,
    augment_splits: Sequence[str] = ("train",),
    seed: int | None = None,
    keep_columns: Sequence[str] | None = None,
    midi_column: str = "midi",
    batch_size: int = 64,
    control_ratios: Any = "auto",
) -> (
    datasets.DatasetDict
    | datasets.Dataset
    | datasets.IterableDatasetDict
    | datasets.IterableDataset
):
    """Tokenize a MIDI dataset for training.

    Args:
        dataset: a dataset (dict) with a ``midi`` column, e.g. from :func:`load_midi_dataset`;
            a streamed one (``IterableDataset``, ``load_midi_dataset(..., streaming=True)``)
            is tokenized as it is read, with the same results.
        tokenizer: a :class:`~midiformers.tokenization.MidiTokenizer`.
        max_length: block length (``"pack"``, ``"chunk"``) or truncation length (``"piece"``).
        mode: ``"pack"``: concatenate the pieces (each with BOS / EOS) and cut blocks of
            exactly ``max_length`` tokens with ``labels`` (causal LM); ``"piece"``: one
            example per piece, truncated to ``max_length`` (ending with EOS), with its
            label columns; ``"chunk"``: each piece cut into consecutive windows of up to
            ``max_length`` tokens, each with its piece's label columns; ``"bars"``
            (multi-track tokenizers, the ``mmm`` preset; infilling): each piece cut into
            windows of consecutive whole bars of every track, each a complete piece (track
            headers, bars, ``Track_End``) of up to ``max_length`` tokens.
        add_special_tokens: add BOS and EOS around each piece.
        num_proc: processes for tokenization (``datasets.map``; unused when streaming, where
            DataLoader workers read different shards instead).
        transpose_semitones: when > 0, the ``augment_splits`` get a :class:`PitchTranspose`
            transform (random shift in ``[-n, n]`` each time an example is read).
        augment_splits: the splits that get the transposition (only the training one by
            default: evaluation must see the music as it is).
        seed: seed of the transposition shifts and of the attribute-control draws.
        keep_columns: columns kept in ``"piece"`` / ``"chunk"`` mode; by default ``id`` and
            the label columns present (``composer``, ``label``).
        midi_column: the column holding the MIDI bytes.
        batch_size: pieces per ``map`` batch (and per packing group).
        control_ratios: attribute-control tokens for the model to learn (tokenizers with
            attribute controls, the ``mmm`` preset): ``(tracks_ratio, bars_ratio)``, see
            :meth:`~midiformers.MidiTokenizer.encode_midi`, drawn per piece with ``seed``
            (every split); ``"auto"`` (default): :data:`DEFAULT_CONTROL_RATIOS` when the
            tokenizer has attribute controls; ``None``: no control tokens.

    Returns:
        The same kind of object as ``dataset``, with ``input_ids`` (and ``labels`` in
        ``"pack"`` mode, ``attention_mask`` otherwise).
    """
    _check_mode(mode, max_length, add_special_tokens)
    control_ratios = resolve_control_ratios(tokenizer, control_ratios)
    if control_ratios is not None:
        tokenizer.check_control_ratios(control_ratios)  # one clear error before any map
    transform = None
    if transpose_semitones:
        transform = PitchTranspose(tokenizer, transpose_semitones, seed=seed)
    options = {
        "mode": mode,
        "add_special_tokens": add_special_tokens,
        "num_proc": num_proc,
        "keep_columns": keep_columns,
        "midi_column": midi_column,
        "batch_size": batch_size,
        "control_ratios": control_ratios,
        "seed": seed,
    }
    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return type(dataset)(
            {
                split: _tokenize_split(
                    part,
                    tokenizer,
                    max_length,
                    transform=transform if split in augment_splits else None,
                    split=split,
                    **options,
                )
                for split, part in dataset.items()
            }
        )
    return _tokenize_split(
        dataset,
        tokenizer,
        max_length,
        transform=transform,
        split=str(dataset.split or "dataset"),
        **options,
    )


def _check_mode(mode: str, max_length: int, add_special_tokens: bool) -> None:
    if mode not in ("pack", "piece", "chunk", "bars"):
        raise ValueError(f"mode must be 'pack', 'piece', 'chunk' or 'bars', got {mode!r}")
    if max_length < 2 + 2 * add_special_tokens:
        raise ValueError(f"max_length={max_length} is too small to hold a piece")


def _column_names(dataset: AnyDataset) -> list[str]:
    names = dataset.column_names
    if names is None:  # a stream whose features are unknown: look at its first example
        names = list(next(iter(dataset.take(1)), {}))
    return list(names)


def _map(dataset: AnyDataset, function, *, desc: str, num_proc: int | None = None, **kwargs):
    """``Dataset.map`` with a progress description, or the lazy ``IterableDataset.map``."""
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.map(function, **kwargs)
    return dataset.map(function, num_proc=num_proc, desc=desc, **kwargs)


def default_keep_columns(column_names: Sequence[str]) -> list[str]:
    """The columns kept beside the tokens by default: ``id`` and the label columns present."""
    return [c for c in ("id", *LABEL_COLUMNS) if c in column_names]


def _tokenize_split(
    dataset: AnyDataset,
    tokenizer: Any,
    max_length: int,
    *,
    mode: Mode,
    add_special_tokens: bool,
    num_proc: int | None,
    transform: PitchTranspose | None,
    keep_columns: Sequence[str] | None,
    midi_column: str,
    batch_size: int,
    split: str,
    control_ratios: tuple | None = None,
    seed: int | None = None,
) -> AnyDataset:
    columns = _column_names(dataset)
    if midi_column not in columns:
        raise ValueError(f"The {split} split has no {midi_column!r} column (columns: {columns})")
    if keep_columns is None:
        keep_columns = default_keep_columns(columns)
    missing = [c for c in keep_columns if c not in columns]
    if missing:
        raise ValueError(f"keep_columns {missing} are not columns of the {split} split")
    keep = [] if mode == "pack" else list(keep_columns)
    streaming = isinstance(dataset, datasets.IterableDataset)
    if not streaming:
        num_proc = num_proc if num_proc and num_proc > 1 and len(dataset) > 1 else None
    encoded = _map(
        dataset,
        _encode_batch,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        remove_columns=columns,
        features=encoded_features(dataset.features, keep),
        fn_kwargs={
            "tokenizer": tokenizer,
            "add_special_tokens": add_special_tokens,
            "midi_column": midi_column,
            "keep": keep,
            "control_ratios": control_ratios,
            "seed": seed,
        },
        desc=f"Tokenizing {split}",
    )
    result = shape_token_split(
        encoded,
        max_length,
        mode=mode,
        eos=_special_ids(tokenizer, add_special_tokens)[1],
        keep=keep,
        batch_size=batch_size,
        split=split,
        tokenizer=tokenizer,
    )
    if streaming:
        logger.info("Tokenizing %s as it streams (%s, max_length %d)", split, mode, max_length)
    else:
        logger.info(
            "Tokenized %s: %d pieces -> %d examples (%s, max_length %d)",
            split,
            len(dataset),
            len(result),
            mode,
            max_length,
        )
    return apply_transform(result, transform, batch_size)


def shape_token_split(
    encoded: AnyDataset,
    max_length: int,
    *,
    mode: Mode,
    eos: list[int],
    keep: Sequence[str],
    batch_size: int = 64,
    split: str = "dataset",
    tokenizer: Any = None,
) -> AnyDataset:
    """From one ``input_ids`` row per piece (with BOS / EOS) to what :func:`tokenize_dataset`
    returns: packed blocks with ``labels``, or pieces / windows with ``attention_mask``
    (``"bars"`` reads the track and bar ids of ``tokenizer``)."""
    if mode == "pack":
        return _map(
            encoded,
            _pack,
            batched=True,
            batch_size=batch_size,
            remove_columns=[c for c in _column_names(encoded) if c != "input_ids"] or None,
            features=_shaped_features(encoded, mode, keep),
            fn_kwargs={"block_size": max_length},
            desc=f"Packing {split} into blocks of {max_length}",
        )
    if mode == "bars":
        markers = None if tokenizer is None else bar_markers(tokenizer)
        if markers is None:
            raise ValueError(
                "mode 'bars' needs a multi-track tokenizer (Track_Start / Track_End / Bar_None "
                "tokens: the mmm preset)"
            )
        result = _map(
            encoded,
            _bar_windows,
            batched=True,
            batch_size=batch_size,
            fn_kwargs={"block_size": max_length, "keep": keep, "markers": markers},
            desc=f"Cutting {split} into bar windows of up to {max_length}",
        )
    elif mode == "chunk":
        result = _map(
            encoded,
            _chunk,
            batched=True,
            batch_size=batch_size,
            fn_kwargs={"block_size": max_length, "keep": keep},
            desc=f"Cutting {split} into windows of {max_length}",
        )
    else:
        result = _map(
            encoded,
            _truncate,
            batched=True,
            batch_size=batch_size,
            fn_kwargs={"max_length": max_length, "eos": eos},
            desc=f"Truncating {split} to {max_length}",
        )
    return _map(
        result,
        _attention_mask,
        batched=True,
        batch_size=batch_size,
        features=_shaped_features(encoded, mode, keep),
        desc=f"Attention masks of {split}",
    )


def apply_transform(
    dataset: AnyDataset, transform: PitchTranspose | None, batch_size: int = 64
) -> AnyDataset:
    """Apply an on-the-fly transform: ``set_transform`` on a ``Dataset`` (a new draw each
    time an example is read), a lazy ``map`` on a stream (a new draw per pass)."""
    if transform is None:
        return dataset
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.map(transform, batched=True, batch_size=batch_size)
    dataset.set_transform(transform)
    return dataset


def _attention_mask(batch: dict[str, list]) -> dict[str, list]:
    return {"attention_mask": [[1] * len(ids) for ids in batch["input_ids"]]}


def encoded_features(source: datasets.Features | None, keep: Sequence[str]) -> datasets.Features:
    """Features of the per-piece token rows: ``input_ids`` (int32) and the kept columns."""
    features = {"input_ids": datasets.Sequence(datasets.Value("int32"))}
    if source is not None:
        features.update({column: source[column] for column in keep})
    return datasets.Features(features)


def _shaped_features(encoded: AnyDataset, mode: Mode, keep: Sequence[str]):
    """The features a streamed result declares (a ``Dataset`` infers the same ones)."""
    if not isinstance(encoded, datasets.IterableDataset) or encoded.features is None:
        return None
    ids = datasets.Sequence(datasets.Value("int32"))
    if mode == "pack":
        return datasets.Features(
            {"input_ids": ids, "labels": datasets.Sequence(datasets.Value("int64"))}
        )
    features = {"input_ids": ids, **{column: encoded.features[column] for column in keep}}
    features["attention_mask"] = datasets.Sequence(datasets.Value("int8"))
    return datasets.Features(features)
