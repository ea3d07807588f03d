"""Where partitioned data come from: the partitions of a Dask DataFrame, or local Parquet files read by pyarrow
directly — one task per file, BATCH_ROWS rows at a time and only the columns a pass needs (a task's memory is a
batch's, and no Dask DataFrame is built: importing it costs 0.5 CPU-s and 40 MB; docs/scale.md)."""

from __future__ import annotations

import glob
import os

import pandas as pd

from .errors import MultilevelError

BATCH_ROWS = 250_000  # rows decoded at a time from a Parquet file (measured: docs/scale.md, "Speed and memory")
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")  # the files of a folder that are read (Dask's rule)


def compute(*values):
    """Compute Dask values on the user's scheduler (a distributed Client, or one set in dask.config), else
    synchronously in this process (out of core needs no cluster). Dask's own errors (a partition unlike the
    frame's declared columns, a failing read) are reported as ours, the original chained."""
    import dask
    from dask.local import get_sync

    options = {} if dask.config.get("scheduler", None) else {"scheduler": get_sync}  # by name imports distributed
    try:
        return dask.compute(*values, **options)
    except MultilevelError:
        raise
    except Exception as exc:  # Dask's and its readers' many error types
        raise MultilevelError(
            f"Dask could not compute the data's partitions ({type(exc).__name__}: {exc}). A common cause is a partition "
            "whose columns or types differ from the frame's declared ones (its meta): compute the partitions one by "
            "one (frame.partitions[i].compute()) to find it"
        ) from exc


def labelled(data, where: str, function, *args):
    """`function(data, *args)`, our errors naming the partition they come from (`where`)."""
    try:
        return function(data, *args)
    except MultilevelError as exc:
        raise type(exc)(f"{where}: {exc}") from None


class DaskSource:
    """The partitions of a Dask DataFrame (or of Parquet data Dask reads: remote, hive-partitioned)."""

    def __init__(self, frame):
        self.frame = frame
        self.meta = frame._meta
        self.npartitions = frame.npartitions

    def partials(self, columns: list[str], function, *args, combine=None) -> list:
        """Delayed `function(partition, *args)` for each partition holding `columns` (`combine`: see ParquetFiles)."""
        from dask import delayed

        parts = self.frame[columns].to_delayed()
        return [delayed(labelled, pure=True)(part, f"in partition {i} (of {len(parts)}) of the Dask DataFrame", function, *args)
                for i, part in enumerate(parts)]

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
    """Local Parquet files, each read by pyarrow in batches; their columns are those of any file (the types of the
    first file holding each), and a file lacking a column the model reads is refused naming it."""

    def __init__(self, path: str, files: list[str]):
        self.path, self.files, self.npartitions = path, files, len(files)
        schema = _schema(files[0])
        for file in files[1:]:  # a footer each: 0.05 ms a file
            for field in _schema(file):
                if field.name not in schema.names:
                    schema = schema.append(field)
        self.meta = schema.empty_table().to_pandas()

    def partials(self, columns: list[str], function, *args, combine=None) -> list:
        """Delayed `function(frame, *args)` over each file's batches holding `columns`, combined per file by
        `combine(total, part)`, which may add into `total` (a file without rows gives `function` of an empty frame)."""
        from dask import delayed

        empty = self.meta[columns]
        return [delayed(labelled, pure=True)(f, f"in the Parquet file '{f}'", _read_file, columns, empty, function, combine, *args)
                for f in self.files]

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
    """One file's `function` results over its batches (rows numbered within the file), combined as they come."""
    total, start = None, 0
    for batch in _batches(file, columns):
        frame = batch.to_pandas()
        frame.index = pd.RangeIndex(start, start + len(frame))
        start += len(frame)
        part = function(frame, *args)
        total = part if total is None else combine(total, part)
    return function(empty, *args) if total is None else total


def _batches(file: str, columns: list[str]):
    """A Parquet file's `columns`, BATCH_ROWS rows at a time (a row group is not read ahead whole: less memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(file, pre_buffer=False, buffer_size=1 << 20)
        missing = [c for c in columns if c not in reader.schema_arrow.names]
        if missing:
            raise MultilevelError(
                f"the file lacks the column(s) {missing}, which other files have: add them to every file (missing "
                "values are allowed), or leave the file out with a glob naming the others"
            )
        yield from reader.iter_batches(BATCH_ROWS, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise MultilevelError(f"cannot read the Parquet file '{file}': {str(exc).rstrip('.')}") from None


def _schema(file: str):
    """A Parquet file's schema (its footer), refused naming the file if it is not a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(file)
    except (OSError, pa.ArrowException) as exc:
        raise MultilevelError(
            f"cannot read the Parquet file '{file}': {str(exc).rstrip('.')}. Remove files that are not Parquet from the folder, or give "
            "a glob that matches only the Parquet files"
        ) from None


def as_source(data) -> DaskSource | ParquetFiles:
    """The source of partitioned data: a Dask DataFrame; local Parquet files (a folder of files, a glob, a file);
    other paths (remote, hive-partitioned folders) through Dask's reader."""
    if not isinstance(data, (str, os.PathLike)):
        if not hasattr(data, "to_delayed") or not isinstance(getattr(data, "_meta", None), pd.DataFrame):
            raise MultilevelError(f"partitioned data must be a Dask DataFrame or a Parquet path, not a {type(data).__module__.split('.')[0]} "
                                  f"{type(data).__name__}" + (": use .to_frame()" if hasattr(data, "to_frame") else ""))
        return DaskSource(data)
    path = os.fspath(data)
    if path.lower().endswith((".csv", ".tsv", ".txt", ".xlsx", ".json")):
        raise MultilevelError(f"data given as a path are read as Parquet (a file, folder or glob); '{path}' is not: read it "
                              "first (pandas.read_csv for a CSV) and pass the data frame")
    files = _local_files(path)
    if files:
        return ParquetFiles(path, files)
    if "://" not in path and not os.path.isdir(path):
        raise MultilevelError(
            f"cannot read Parquet files from '{path}': no file or folder matches it (relative paths start at "
            f"{os.getcwd()}); give a Parquet file, a folder of them or a glob such as 'folder/*.parquet'"
        )
    import dask.dataframe as dd

    try:
        return DaskSource(dd.read_parquet(path))
    except Exception as exc:  # the reader's many error types, reported in our words
        raise MultilevelError(f"cannot read Parquet files from '{path}': {exc}") from None


def _local_files(path: str) -> list[str] | None:
    """The data files of a local folder without subfolders (Dask's rule: names ending in a Parquet suffix, not
    starting with '_' or '.'), of a glob, or a file; None for anything else. A folder without them is refused."""
    if os.path.isdir(path):
        names = sorted(os.listdir(path))
        if any(os.path.isdir(os.path.join(path, n)) for n in names):
            return None  # hive partitions: their columns live in the folder names
        visible = [n for n in names if not n.startswith(("_", "."))]
        files = [os.path.join(path, n) for n in visible if n.lower().endswith(PARQUET_SUFFIXES)]
        if not files:
            held = f"it holds {visible[:5]}" if visible else "it is empty"
            raise MultilevelError(
                f"the folder '{path}' has no Parquet files (names ending in {', '.join(PARQUET_SUFFIXES)}): {held}. "
                f"Give a glob such as '{os.path.join(path, '*')}' to read files named otherwise"
            )
        return files
    if glob.has_magic(path):
        return sorted(glob.glob(path)) or None
    return [path] if os.path.isfile(path) else None
