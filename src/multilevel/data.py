"""User data to a clean pandas DataFrame: conversion, column checks, missing and infinite values."""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from .errors import MultilevelError, MultilevelWarning

# pandas before 3.1 parses some decimals 1 ulp off unless asked for its round-trip converter; 3.1 uses
# that converter always and deprecates the argument.
EXACT_FLOATS = {} if tuple(int(v) for v in pd.__version__.split(".")[:2]) >= (3, 1) else {"float_precision": "round_trip"}

_IDENT = re.compile(r"`([^`]+)`|(?<![\w.])((?:[^\W\d]|\.)[\w.]*)")
_STRING = re.compile(r"'[^']*'|\"[^\"]*\"")


def as_frame(data) -> pd.DataFrame:
    """Convert a pandas/polars DataFrame, a pyarrow Table or a dict of arrays to pandas."""
    if isinstance(data, pd.DataFrame):
        frame = data
    elif hasattr(data, "to_pandas"):  # polars DataFrame, pyarrow Table
        frame = _unordered_polars_categories(data, data.to_pandas())
    elif isinstance(data, Mapping):
        frame = _dict_frame(data)
    elif type(data).__module__.split(".")[0] == "dask":
        raise MultilevelError(
            f"a Dask {type(data).__name__} is not taken here: these rows must be in memory (.compute() them). "
            "mlv.Model and a frequentist fit's predict() take Dask DataFrames"
        )
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


def _unordered_polars_categories(data, frame: pd.DataFrame) -> pd.DataFrame:
    """Polars Enum/Categorical columns arrive as ordered categoricals, but every polars Enum is ordered by
    construction: they mean 'these levels in this order', not an ordinal scale, so they get treatment contrasts."""
    schema = getattr(data, "schema", None)
    if not type(data).__module__.startswith("polars") or schema is None:
        return frame
    names = [name for name, dtype in schema.items() if type(dtype).__name__ in {"Enum", "Categorical"}]
    return frame.assign(**{name: frame[name].cat.as_unordered() for name in names}) if names else frame


def _dict_frame(data: Mapping) -> pd.DataFrame:
    """A dict of equally long one-dimensional columns as a DataFrame."""
    columns = {k: v if isinstance(v, pd.Series) else np.asarray(v) for k, v in data.items()}
    for name, values in columns.items():
        if np.ndim(values) != 1:
            raise MultilevelError(
                f"column '{name}' of the dict has shape {np.shape(values)}: every column must be one-dimensional"
            )
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise MultilevelError(f"the columns given as a dict have different lengths {lengths}: make them equal")
    return pd.DataFrame(columns)


def names_in(expr: str, columns: Iterable[str]) -> list[str]:
    """Column names that occur in an expression (identifiers that are data columns)."""
    cols = set(columns)
    found: dict[str, None] = {}
    for quoted, bare in _IDENT.findall(_STRING.sub("''", expr)):
        name = quoted or bare
        if name in cols:
            found.setdefault(name, None)
    return list(found)


def unknown_names(expr: str, columns: Iterable[str]) -> list[str]:
    """Identifiers that look like variables (not functions, modules or contrasts) and are not columns."""
    cols = set(columns)
    missing = []
    expr = _STRING.sub("''", expr)
    for match in _IDENT.finditer(expr):
        name = match.group(1) or match.group(2)
        after = expr[match.end() :].lstrip()
        is_call_or_keyword = after.startswith("(") or (after.startswith("=") and not after.startswith("=="))
        if name in cols or is_call_or_keyword or _is_library_name(name) or _is_number(name):
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
    missing = np.zeros(len(frame), dtype=bool)
    for name in used:  # column by column: a sub-frame costs more than the test on small data
        missing |= np.asarray(pd.isna(frame[name].array))
    keep = ~missing
    dropped = int(missing.sum())
    if not keep.any():
        raise MultilevelError(
            f"no rows are left after dropping rows with missing values in {used}: check those columns"
        )
    return (frame if dropped == 0 else frame.loc[keep]), dropped


def check_finite(frame: pd.DataFrame, used: list[str]) -> None:
    """Refuse infinite values in numeric columns, naming the column and the count."""
    for name in used:
        col = frame[name]
        if isinstance(col.dtype, np.dtype) and col.dtype.kind in "iub":
            continue  # integers and booleans are finite
        if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
            values = col.to_numpy(dtype=float, na_value=np.nan)
            bad = np.isinf(values)
            if bad.any():
                raise MultilevelError(
                    f"column '{name}' has {int(bad.sum())} infinite value(s) (first in the row with index {frame.index[np.argmax(bad)]}): "
                    "remove or replace them before fitting"
                )


def check_types(frame: pd.DataFrame, used: list[str]) -> None:
    """Refuse column types a model cannot use: complex numbers, dates and time spans."""
    for name in used:
        dtype = frame[name].dtype
        if pd.api.types.is_complex_dtype(dtype):
            raise MultilevelError(f"column '{name}' holds complex numbers: a model needs real numbers or categories")
        if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
            raise MultilevelError(
                f"column '{name}' holds dates or times ({dtype}): convert it to a number (e.g. days since the "
                "first date) or to a category"
            )


def as_factor(col: pd.Series) -> pd.Categorical:
    """A column as a categorical with R's level order: its own categories, else sorted labels (numbers in
    numeric order). Labels are `level_key`s, so 1, 1.0, np.int64(1) and '1' name one level wherever they occur."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.array if _uses_every_category(col.array) else col.cat.remove_unused_categories().array
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        levels, codes = np.unique(col.to_numpy(), return_inverse=True)
        plain_integers = levels.dtype.kind in "iu"  # their labels are their digits, without a Python call each
        labels = levels.astype(str) if plain_integers else [level_key(v) for v in levels]
        return pd.Categorical.from_codes(codes.ravel(), categories=labels)
    keys = col.map(level_key, na_action="ignore")
    first = dict(zip(keys.dropna(), col.dropna()))  # one value per label, to order the labels by
    order = sorted(first, key=lambda k: _level_order(first[k], k))
    return pd.Categorical(keys, categories=order)


def _level_order(value, key: str) -> tuple:
    """Numbers (exactly, Python ints of any size) before text, text alphabetically."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        return (0, value, key)
    return (1, 0, key)


def _holds_numbers(col: pd.Series) -> bool:
    """True for an object column whose values are all numbers (e.g. from a list of Python ints)."""
    if not pd.api.types.is_object_dtype(col.dtype):
        return False
    return pd.api.types.infer_dtype(col, skipna=True) in {"integer", "floating", "mixed-integer-float", "decimal"}


def level_key(value) -> str:
    """The one label of a group id, whatever its type: R's labels of numbers and logicals (2.0 -> '2',
    True -> 'TRUE'), Python ints exactly at any size, text as it is."""
    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)


EXACT_INTEGERS = 2**53  # floats hold every integer below this; above it neighbouring ids can become one


def check_group_ids(col: pd.Series, name: str) -> None:
    """Warn where group ids cannot be told apart exactly: integers too large for the floats they are stored as,
    and text equal to a number's label in the same column ('1' and 1 are one group)."""
    dtype = col.dtype.categories.dtype if isinstance(col.dtype, pd.CategoricalDtype) else col.dtype
    if isinstance(dtype, pd.StringDtype) or (isinstance(dtype, np.dtype) and dtype.kind in "biuU"):
        return  # integers or text alone (a categorical's: its categories'): no float to round, no text to read as a number
    values = pd.unique(col.dropna())
    floats = [v for v in values if isinstance(v, (float, np.floating))]
    if any(abs(v) >= EXACT_INTEGERS for v in floats if np.isfinite(v)):
        warnings.warn(
            f"the grouping factor '{name}' holds ids of 2**53 or more stored as floating-point numbers: they may "
            "have been rounded, merging different groups; store such ids as integers or text", MultilevelWarning,
            stacklevel=5,
        )
    text = {v for v in values if isinstance(v, str)}
    numbers = {level_key(v) for v in values if not isinstance(v, str)}
    if text & numbers:
        warnings.warn(
            f"the grouping factor '{name}' mixes text and numbers that read the same ({sorted(text & numbers)[:5]}): "
            "they are one group each; convert the column to one type if they are not", MultilevelWarning, stacklevel=5,
        )


def prepare_categoricals(frame: pd.DataFrame, used: list[str], factors: Iterable[str] = ()) -> pd.DataFrame:
    """Strings and booleans used in the model become categoricals with sorted levels (R's default);
    numbers stored as Python objects become floats, except in grouping `factors`, whose ids keep their exact
    labels (a float would merge Python ints beyond 2**53)."""
    changed, factors = {}, set(factors)
    for name in used:
        col = frame[name]
        if _holds_numbers(col) and name not in factors:
            changed[name] = col.astype(float)
        elif isinstance(col.dtype, pd.CategoricalDtype):
            if not _uses_every_category(col.array):
                changed[name] = col.cat.remove_unused_categories()
        elif pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col) or pd.api.types.is_bool_dtype(col):
            changed[name] = pd.Series(as_factor(col), index=col.index)
    if changed:
        frame = frame.assign(**changed)
    return frame


def _uses_every_category(cat: pd.Categorical) -> bool:
    """Whether every category of the categorical occurs in it."""
    seen = np.zeros(len(cat.categories) + 1, dtype=bool)
    seen[cat.codes] = True  # code -1 (missing) marks the extra last slot
    return bool(seen[:-1].all())
