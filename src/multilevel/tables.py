"""Result tables: one that can also be called (`fit.group_effects` and `fit.group_effects()` give the same
DataFrame), and the interval table of draws.

DESIGN.md lists group effects as an attribute of both result types and the user's guide calls them;
this keeps both spellings working, with arguments (e.g. ``prob=0.9``) recomputing the table.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd


class CallableTable(pd.DataFrame):
    """A DataFrame that returns itself when called, or its maker's new table when called with arguments."""

    _metadata = ["_maker"]

    @property
    def _constructor(self):
        return pd.DataFrame  # slices and arithmetic give plain DataFrames

    def __call__(self, *args, **kwargs) -> pd.DataFrame:
        if (args or kwargs) and getattr(self, "_maker", None) is not None:
            return self._maker(*args, **kwargs)
        return pd.DataFrame(self)


def callable_table(frame: pd.DataFrame, maker: Callable[..., pd.DataFrame] | None = None) -> CallableTable:
    """Wrap a table; `maker(*args)` recomputes it with other arguments."""
    table = CallableTable(frame)
    table._maker = maker
    return table


def interval_table(flat: np.ndarray, index, prob: float = 0.95) -> pd.DataFrame:
    """Mean, SD and central interval of each column of draws (draws x quantities)."""
    lo, hi = (1 - prob) / 2, (1 + prob) / 2
    return pd.DataFrame(
        {
            "estimate": flat.mean(axis=0),
            "std_error": flat.std(axis=0, ddof=1),
            "ci_lower": np.quantile(flat, lo, axis=0),
            "ci_upper": np.quantile(flat, hi, axis=0),
        },
        index=index,
    )


def estimates_table(fixed_effects: pd.DataFrame, variance_components: pd.DataFrame) -> pd.DataFrame:
    """A fit's fixed effects and variance components in one long table (`kind` says which)."""
    fe = fixed_effects.reset_index().assign(kind="fixed")
    vc = variance_components.assign(kind="variance")
    return pd.concat([fe, vc], ignore_index=True)
