"""A table that can also be called: `fit.group_effects` and `fit.group_effects()` give the same DataFrame.

DESIGN.md lists group effects as an attribute of both result types and the user's guide calls them;
this keeps both spellings working, with arguments (e.g. ``prob=0.9``) recomputing the table.
"""

from __future__ import annotations

from collections.abc import Callable

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
