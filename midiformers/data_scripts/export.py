"""Parquet export in the layout the Hub uses, for sharing a built corpus.

``DatasetDict.push_to_hub`` already publishes Parquet (``data/<split>-00000-of-0000N.parquet``
plus the features in the dataset card). :func:`save_as_parquet` writes the same layout to a
local folder, so a corpus can be inspected, copied or uploaded later; the ``midi`` column
makes the files self-contained.
"""

from __future__ import annotations

import os

import datasets


def save_as_parquet(
    dataset: datasets.DatasetDict, directory: str | os.PathLike, max_shard_rows: int = 10_000
) -> dict[str, list[str]]:
    """Write each split as ``directory/data/<split>-XXXXX-of-YYYYY.parquet``.

    Returns the files per split, ready for
    ``load_dataset("parquet", data_files=...)``. The features (``ClassLabel`` names
    included) travel in the Parquet schema metadata, so they load back unchanged.
    """
    data_dir = os.path.join(os.fspath(directory), "data")
    os.makedirs(data_dir, exist_ok=True)
    files: dict[str, list[str]] = {}
    for split, part in dataset.items():
        num_shards = max(1, -(-len(part) // max_shard_rows))
        files[split] = []
        for index in range(num_shards):
            path = os.path.join(data_dir, f"{split}-{index:05d}-of-{num_shards:05d}.parquet")
            part.shard(num_shards, index, contiguous=True).to_parquet(path)
            files[split].append(path)
    return files
