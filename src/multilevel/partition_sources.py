"""Where partitioned data come from: the partitions of a Dask DataFrame, or local Parquet files read by pyarrow
directly — one task per file, BATCH_ROWS rows at a time and only the columns a pass needs (a task's memory is a
batch's, and no Dask DataFrame is built: importing it costs 0.5 CPU-s and 40 MB; docs/scale.md)."""

from __future__ import annotations

import glob
import os

import pandas as pd

from .errors import MultilevelError

BATCH_ROWS = 250_000  # rows decoded at a time from a Parquet file (measured: docs/scale.md, "Speed and memory")


def compute(*values):
    """Compute Dask values on the user's scheduler (a distributed Client, or one set in dask.config), else
    synchronously in this process (out of core needs no cluster)."""
    import dask
    from dask.local import get_sync

    options = {} if dask.config.get("scheduler", None) else {"scheduler": get_sync}  # by name imports distributed
    return dask.compute(*values, **options)


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

    def known_categories(self, columns: list[str]) -> dict[str, pd.Index]:
        """The categories of the categorical columns whose categories Dask knows (`frame[c].cat.known`)."""
        return {c: self.meta[c].cat.categories for c in columns
                if isinstance(self.meta[c].dtype, pd.CategoricalDtype) and self.frame[c].cat.known}

    def first_rows(self, columns: list[str], select) -> pd.DataFrame:
        """`select` of the first partition for which it keeps rows (of an empty frame if none does)."""
        for part in self.frame[columns].to_delayed():
            (frame,) = compute(part)
            if len(rows := select(frame)):
                return rows
        return select(self.meta[columns])

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

    def known_categories(self, columns: list[str]) -> dict[str, pd.Index]:
        """None known: each batch of a dictionary-encoded column has its own categories."""
        return {}

    def first_rows(self, columns: list[str], select) -> pd.DataFrame:
        """`select` of the first batch for which it keeps rows (of an empty frame if none does)."""
        for file in self.files:
            for batch in _batches(file, columns):
                if len(rows := select(batch.to_pandas())):
                    return rows
        return select(self.meta[columns])

    def to_dask(self, columns: list[str]):
        import dask.dataframe as dd

        return dd.read_parquet(self.files, columns=columns)


def _read_file(file: str, columns: list[str], empty: pd.DataFrame, function, combine, *args):
    """One file's `function` results over its batches, combined as they come."""
    total = None
    for batch in _batches(file, columns):
        part = function(batch.to_pandas(), *args)
        total = part if total is None else combine(total, part)
    return function(empty, *args) if total is None else total


def _batches(file: str, columns: list[str]):
    """A Parquet file's `columns`, BATCH_ROWS rows at a time (a row group is not read ahead whole: less memory)."""
    import pyarrow.parquet as pq

    try:
        yield from pq.ParquetFile(file, pre_buffer=False, buffer_size=1 << 20).iter_batches(BATCH_ROWS, columns=columns)
    except OSError as exc:
        raise MultilevelError(f"cannot read the Parquet file '{file}': {exc}") from None


def as_source(data) -> DaskSource | ParquetFiles:
    """The source of partitioned data: a Dask DataFrame; local Parquet files (a folder of files, a glob, a file);
    other paths (remote, hive-partitioned folders) through Dask's reader."""
    if not isinstance(data, (str, os.PathLike)):
        if not hasattr(data, "to_delayed"):
            raise MultilevelError(f"partitioned data must be a Dask DataFrame or a Parquet path, not {type(data).__name__}")
        return DaskSource(data)
    path = os.fspath(data)
    if path.lower().endswith((".csv", ".tsv", ".txt", ".xlsx", ".json")):
        raise MultilevelError(f"data given as a path are read as Parquet (a file, folder or glob); '{path}' is not: read it "
                              "first (pandas.read_csv for a CSV) and pass the data frame")
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
