"""Generated MIDI corpora for the streaming and pretokenization tests: transposed and
time-shifted copies of the real fixtures (each file distinct), so there are enough files to
shard."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import symusic


def make_corpus(
    folder: Path, sources: Sequence[Path], count: int, per_folder: int = 50
) -> list[Path]:
    """Write ``count`` distinct MIDI files under ``folder/NNN/``: copy ``i`` is source
    ``i % len(sources)`` moved by a few semitones and by ``i`` ticks."""
    scores = [symusic.Score.from_file(str(path)) for path in sources]
    paths = []
    for index in range(count):
        score = scores[index % len(scores)].copy()
        shift = (index // len(scores)) % 9 - 4
        score = score.shift_pitch(shift).shift_time(index)
        target = folder / f"{index // per_folder:03d}" / f"piece_{index:05d}.mid"
        target.parent.mkdir(parents=True, exist_ok=True)
        score.dump_midi(str(target))
        paths.append(target)
    return paths


def write_midi_parquet(
    path: Path, files: Sequence[Path], row_group_size: int | None = None, start: int = 0
) -> None:
    """A GigaMIDI-shaped Parquet file: ``md5``, ``music`` (the bytes), ``title``,
    ``instrument_category`` and ``num_tracks`` per file."""
    rows = []
    for offset, file in enumerate(files):
        data = file.read_bytes()
        rows.append(
            {
                "md5": f"{start + offset:08x}",
                "music": data,
                "title": file.stem,
                "instrument_category": "drums" if "drums" in file.stem else "no-drums",
                "num_tracks": data.count(b"MTrk"),
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
