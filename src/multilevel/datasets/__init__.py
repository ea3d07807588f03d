"""Classic multilevel data sets shipped with the package (sources in docs/datasets.md).

Examples:
    >>> import multilevel as mlv
    >>> df = mlv.datasets.load("sleepstudy")
    >>> df.shape
    (180, 3)
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import pandas as pd

from ..data import EXACT_FLOATS
from ..errors import MultilevelError

_DATA = resources.files(__package__) / "data"


@lru_cache(maxsize=1)
def _levels() -> dict:
    return json.loads((_DATA / "factor_levels.json").read_text())


def list() -> list[str]:  # noqa: A001 - the documented name
    """Names of the shipped data sets."""
    return sorted(p.name[:-4] for p in _DATA.iterdir() if p.name.endswith(".csv"))


def load(name: str) -> pd.DataFrame:
    """A data set as a DataFrame, exactly as in R: doubles bit-identical, factors in R's level order.

    Examples:
        >>> load("Hsb82").sector.cat.categories.tolist()
        ['Public', 'Catholic']
    """
    names = {n.lower(): n for n in list()}
    key = names.get(name.lower())
    if key is None:
        raise MultilevelError(f"no data set named '{name}'; available: {', '.join(list())}")
    with (_DATA / f"{key}.csv").open("rb") as fh:
        frame = pd.read_csv(fh, keep_default_na=False, na_values=["NA"], **EXACT_FLOATS)
    for column, info in _levels().get(key, {}).items():
        if column not in frame.columns:
            continue
        labels = frame[column].astype(str)
        levels = info.get("levels") or sorted(labels.unique(), key=_natural)
        frame[column] = pd.Categorical(labels, categories=levels, ordered=bool(info.get("ordered")))
    for column in frame.columns:  # text columns not listed (eight_schools): categories in sorted order
        if not isinstance(frame[column].dtype, pd.CategoricalDtype) and not pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = pd.Categorical(frame[column].astype(str), categories=sorted(frame[column].astype(str).unique()))
    return frame


def _natural(label: str):
    """Sort numeric-looking labels numerically (R's factor() on numbers), others as text."""
    try:
        return (0, float(label), "")
    except ValueError:
        return (1, 0.0, label)
