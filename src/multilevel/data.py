"""User data to a clean pandas DataFrame: conversion, column checks, missing and infinite values."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from .errors import MultilevelError

_IDENT = re.compile(r"`([^`]+)`|([A-Za-z_.][A-Za-z0-9_.]*)")


def as_frame(data) -> pd.DataFrame:
    """Convert a pandas/polars DataFrame, a pyarrow Table or a dict of arrays to pandas."""
    if isinstance(data, pd.DataFrame):
        frame = data
    elif hasattr(data, "to_pandas"):  # polars DataFrame, pyarrow Table
        frame = data.to_pandas()
    elif isinstance(data, Mapping):
        try:
            frame = pd.DataFrame({k: np.asarray(v) if not isinstance(v, pd.Series) else v for k, v in data.items()})
        except ValueError as exc:
            raise MultilevelError(f"the columns given as a dict do not have equal lengths ({exc})") from None
    else:
        raise MultilevelError(
            f"data must be a pandas or polars DataFrame, a pyarrow Table or a dict of columns, not {type(data).__name__}"
        )
    if frame.shape[0] == 0:
        raise MultilevelError("the data table is empty: there are no rows to fit")
    if frame.columns.duplicated().any():
        dup = frame.columns[frame.columns.duplicated()].tolist()
        raise MultilevelError(f"the data have duplicate column names {dup}: rename them")
    return frame


def names_in(expr: str, columns: Iterable[str]) -> list[str]:
    """Column names that occur in an expression (identifiers that are data columns)."""
    cols = set(columns)
    found: dict[str, None] = {}
    for quoted, bare in _IDENT.findall(expr):
        name = quoted or bare
        if name in cols:
            found.setdefault(name, None)
    return list(found)


def unknown_names(expr: str, columns: Iterable[str]) -> list[str]:
    """Identifiers that look like variables (not functions, modules or contrasts) and are not columns."""
    cols = set(columns)
    missing = []
    for match in _IDENT.finditer(expr):
        name = match.group(1) or match.group(2)
        after = expr[match.end() :].lstrip()
        if name in cols or after.startswith("(") or _is_library_name(name) or _is_number(name):
            continue
        missing.append(name)
    return missing


def _is_library_name(name: str) -> bool:
    head = name.split(".")[0]
    return head in {"np", "numpy", "math", "contr", "T"} or name in {"True", "False", "None"}


def _is_number(name: str) -> bool:
    try:
        float(name)
        return True
    except ValueError:
        return False


def unknown_column_error(name: str, columns: Iterable[str], where: str) -> MultilevelError:
    """Error naming the missing column and the closest existing ones."""
    cols = [str(c) for c in columns]
    close = difflib.get_close_matches(name, cols, n=3, cutoff=0.5)
    if not close:
        lowered = {c.lower(): c for c in cols}
        close = [lowered[name.lower()]] if name.lower() in lowered else []
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else f" The columns are: {', '.join(cols[:20])}."
    return MultilevelError(f"column '{name}' (in {where}) is not in the data.{hint}")


def drop_missing(frame: pd.DataFrame, used: list[str]) -> tuple[pd.DataFrame, int]:
    """Keep rows complete in every used column; return them and how many were dropped."""
    if not used:
        return frame, 0
    keep = frame[used].notna().all(axis=1).to_numpy()
    dropped = int((~keep).sum())
    if not keep.any():
        raise MultilevelError(
            f"no rows are left after dropping rows with missing values in {used}: check those columns"
        )
    return (frame if dropped == 0 else frame.loc[keep]), dropped


def check_finite(frame: pd.DataFrame, used: list[str]) -> None:
    """Refuse infinite values in numeric columns, naming the column and the count."""
    for name in used:
        col = frame[name]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            values = col.to_numpy(dtype=float, na_value=np.nan)
            bad = np.isinf(values)
            if bad.any():
                raise MultilevelError(
                    f"column '{name}' has {int(bad.sum())} infinite value(s) (first in row {int(np.argmax(bad))}): "
                    "remove or replace them before fitting"
                )


def as_factor(col: pd.Series) -> pd.Categorical:
    """A column as a categorical with R's level order: its own categories, else sorted labels."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.cat.remove_unused_categories().array
    values = col.to_numpy()
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        levels = np.unique(values)
        return pd.Categorical([_label(v) for v in values], categories=[_label(v) for v in levels])
    labels = col.astype(str)
    return pd.Categorical(labels, categories=sorted(labels.unique()))


def _label(value) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def prepare_categoricals(frame: pd.DataFrame, used: list[str]) -> pd.DataFrame:
    """Strings and booleans used in the model become categoricals with sorted levels (R's default)."""
    changed = {}
    for name in used:
        col = frame[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            if len(col.cat.categories) != col.nunique(dropna=True):
                changed[name] = col.cat.remove_unused_categories()
        elif pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col) or pd.api.types.is_bool_dtype(col):
            changed[name] = pd.Series(as_factor(col), index=col.index)
    if changed:
        frame = frame.assign(**changed)
    return frame
