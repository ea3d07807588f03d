"""`SavedFit`: a frequentist fit read from a file of format version 1, which holds the tables but no data.

It has the reading side of `LmmFit` (summary, tables, scalars, fitted values, residuals). Anything that needs
the data or the model (ICC, pooling, predictions, refits) raises an error that says so and what to do;
files written now (version 2) carry the data and load as a full `LmmFit`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import MultilevelError
from .kinds import Frequentist
from .summary import LmmText
from .tables import callable_table

NO_DATA = (
    "this fit was read from a file saved by an earlier multilevel (format 1), which holds its tables but not its "
    "data, so '{name}' is not available: rebuild the model from the data (mlv.Model(formula, data).fit()) and "
    "save it again"
)


class _Missing:
    """Stands for what a version-1 file did not store: any attribute read names what is missing."""

    def __getattr__(self, name: str):
        if name.startswith("_"):  # Python's and libraries' protocol lookups (copy, IPython's _repr_html_, ...)
            raise AttributeError(name)
        raise MultilevelError(NO_DATA.format(name=name))


class SavedBlock(_Missing):
    """A random term as stored: grouping factor, coefficient names, levels and each row's level code."""

    def __init__(self, record: dict):
        self.group, self.coef_names = record["group"], list(record["coef_names"])
        self.levels, self.codes = np.asarray(record["levels"]), np.asarray(record["codes"], int)
        self.m, self.k = len(self.levels), len(self.coef_names)


class SavedDesign(_Missing):
    """The parts of a design a version-1 file stores (no X, no per-row covariates)."""

    def __init__(self, record: dict, y: np.ndarray):
        self.formula, self.fixed_names, self.nobs = record["formula"], list(record["fixed_names"]), record["nobs"]
        self.blocks = [SavedBlock(b) for b in record["blocks"]]
        self.n_dropped, self.aliased, self.y = record["n_dropped"], list(record["aliased"]), y
        self.n_levels = {b.group: b.m for b in self.blocks}


class SavedFit(_Missing, LmmText, Frequentist):
    """A frequentist fit's stored tables and scalars; see the module docstring."""

    def __init__(self, record: dict):
        self.method, self.prior = record["method"], record["prior"]
        self.reml = self.method == "REML"
        for name in ("sigma", "loglik", "aic", "bic", "objective", "deviance", "penalized_objective", "nobs",
                     "n_params", "converged", "is_singular", "warnings"):
            setattr(self, name, record[name])
        self.fixed_effects = _frame_from(record["fixed_effects"])
        self.variance_components = _frame_from(record["variance_components"])
        self.group_effects = callable_table(_frame_from(record["group_effects"]))
        self._fitted = np.asarray(record["fitted"], float)
        self._residuals = np.asarray(record["residuals"], float)
        self.design = SavedDesign(record, self._fitted + self._residuals)

    def fitted(self) -> np.ndarray:
        return self._fitted.copy()

    def residuals(self) -> np.ndarray:
        return self._residuals.copy()



def _frame_from(record: dict) -> pd.DataFrame:
    """A table saved by `saving._frame_record`, with its float columns and index restored."""
    frame = pd.DataFrame({c: v for c, v in record["columns"].items()})
    for column, kind in record["dtypes"].items():
        if kind == "f":
            frame[column] = frame[column].astype(float)
    if record["index_name"]:
        frame.index = pd.Index(record["index"], name=record["index_name"])
    return frame
