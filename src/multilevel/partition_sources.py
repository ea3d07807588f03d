"""Where partitioned data come from: the partitions of a Dask DataFrame, or local Parquet files read by pyarrow
directly — one task per file, BATCH_ROWS rows at a time and only the columns a pass needs (a task's memory is a
batch's, and no Dask DataFrame is built: importing it costs 0.5 CPU-s and 40 MB; docs/scale.md)."""

from __future__ import annotations

import glob
import os

import pandas as pd

from .errors import MultilevelError

BATCH_ROWS = 250_000  # rows decoded at a time from a Parquet file (measured: docs/scale.md, "Speed and memory")


class DaskSource:
    """The partitions of a Dask DataFrame (or of Parquet data Dask reads: remote, hive-partitioned)."""

    def __init__(self, frame):
        self.frame = frame
        self.meta = frame._meta
        self.npartitions = frame.npartitions

    def partials(self, columns: list[str], function, *args, combine=None) -> list:
        """Delayed `function(partition, *args)` for each partition holding `columns` (`combine`: see ParquetFiles)."""
        from dask import delayed

        return [delayed(function, pure=True)(part, *args) for part in self.frame[columns].to_delayed()]

    def to_dask(self, columns: list[str]):
        return self.frame[columns]


class ParquetFiles:
    """Local Parquet files, each read by pyarrow in batches."""

    def __init__(self, path: str, files: list[str]):
        import pyarrow.parquet as pq

        self.path, self.files, self.npartitions = path, files, len(files)
        try:
            self.meta = pq.read_schema(files[0]).empty_table().to_pandas()
        except Exception as exc:  # pyarrow's many error types, reported in our words
            raise MultilevelError(f"cannot read Parquet files from '{path}': {exc}") from None

    def partials(self, columns: list[str], function, *args, combine=None) -> list:
        """Delayed `function(frame, *args)` over each file's batches holding `columns`, combined per file by
        `combine(total, part)`, which may add into `total` (a file without rows gives `function` of an empty frame)."""
        from dask import delayed

        empty = self.meta[columns]
        return [delayed(_read_file, pure=True)(f, columns, empty, function, combine, *args) for f in self.files]

    def to_dask(self, columns: list[str]):
        import dask.dataframe as dd

        return dd.read_parquet(self.files, columns=columns)


def _read_file(file: str, columns: list[str], empty: pd.DataFrame, function, combine, *args):
    """One file's `function` results over its batches, combined as they come."""
    import pyarrow.parquet as pq

    total = None
    try:
        reader = pq.ParquetFile(file, pre_buffer=False, buffer_size=1 << 20)
        batches = reader.iter_batches(BATCH_ROWS, columns=columns)
        for batch in batches:
            part = function(batch.to_pandas(), *args)
            total = part if total is None else combine(total, part)
    except OSError as exc:
        raise MultilevelError(f"cannot read the Parquet file '{file}': {exc}") from None
    return function(empty, *args) if total is None else total


def as_source(data) -> DaskSource | ParquetFiles:
    """The source of partitioned data: a Dask DataFrame; local Parquet files (a folder of files, a glob, a file);
    other paths (remote, hive-partitioned folders) through Dask's reader."""
    if not isinstance(data, (str, os.PathLike)):
        if not hasattr(data, "to_delayed"):
            raise MultilevelError(f"partitioned data must be a Dask DataFrame or a Parquet path, not {type(data).__name__}")
        return DaskSource(data)
    path = os.fspath(data)
    files = _local_files(path)
    if files:
        return ParquetFiles(path, files)
    import dask.dataframe as dd

    try:
        return DaskSource(dd.read_parquet(path))
    except Exception as exc:  # the reader's many error types, reported in our words
        raise MultilevelError(f"cannot read Parquet files from '{path}': {exc}") from None


def _local_files(path: str) -> list[str] | None:
    """The data files of a local folder without subfolders (Dask's rule: names not starting with '_' or '.'),
    of a glob, or a file; None for anything else."""
    if os.path.isdir(path):
        names = sorted(os.listdir(path))
        if any(os.path.isdir(os.path.join(path, n)) for n in names):
            return None  # hive partitions: their columns live in the folder names
        return [os.path.join(path, n) for n in names if not n.startswith(("_", "."))] or None
    if glob.has_magic(path):
        return sorted(glob.glob(path)) or None
    return [path] if os.path.isfile(path) else None
