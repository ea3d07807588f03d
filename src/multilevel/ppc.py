"""Predictive checks: test statistics of replicated data sets against the observed one.

A Bayesian fit replicates the response once per posterior draw (same groups, their drawn effects); a
frequentist fit gets the parametric-bootstrap analogue, data sets simulated from the fitted model with new
group effects (`LmmFit.simulate`). For each statistic T the table gives T(y), the replicates' distribution,
and the predictive p-value P(T(y_rep) >= T(y)): values near 0 or 1 say the model does not reproduce T.

>>> import multilevel as mlv
>>> fit = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff")).fit()
>>> check = ppc(fit, ["mean", "sd"], n=200, seed=1)
>>> list(check.table.columns)
['observed', 'mean', 'sd', 'q2.5', 'q97.5', 'p_value']
>>> check.replicated.shape
(200, 2)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import MultilevelError
from .html_tables import result_html
from .kinds import Frequentist
from .partitioned import refuse_rows

DEFAULT_STATS = ("mean", "sd", "min", "max", "between_sd")


def _group_means(y: np.ndarray, block) -> np.ndarray:
    return np.bincount(block.codes, weights=y, minlength=block.m) / np.bincount(block.codes, minlength=block.m)


def _factors(design) -> list:
    """One block per grouping factor (a factor with an intercept and a slope term counts once)."""
    seen, out = set(), []
    for block in design.blocks:
        if block.group not in seen:
            seen.add(block.group)
            out.append(block)
    return out


def builtin_statistics(names, design) -> dict:
    """Named statistics f(y) -> float for the built-in names; 'between_sd' and 'group_means' expand per factor."""
    simple = {"mean": np.mean, "sd": lambda y: np.std(y, ddof=1), "min": np.min, "max": np.max}
    out = {}
    for name in names:
        if name in simple:
            out[name] = simple[name]
        elif name == "between_sd":
            for block in _factors(design):
                out[f"between_sd[{block.group}]"] = lambda y, b=block: float(np.std(_group_means(y, b), ddof=1))
        elif name == "group_means":
            for block in _factors(design):
                for g, level in enumerate(block.levels):
                    out[f"mean[{block.group}={level}]"] = lambda y, b=block, g=g: float(_group_means(y, b)[g])
        else:
            raise MultilevelError(
                f"unknown statistic {name!r}: use {list(simple) + ['between_sd', 'group_means']} or pass a dict "
                "{name: function(y, design) -> number}"
            )
    return out


def _statistics(stats, design) -> dict:
    """The statistics as name -> f(y): built-in names, or user functions of (y, design)."""
    if stats is None:
        stats = DEFAULT_STATS
    if isinstance(stats, str):
        stats = [stats]
    if isinstance(stats, dict):
        for name, f in stats.items():
            if not callable(f):
                raise MultilevelError(f"statistic {name!r} must be a function of (y, design), got {type(f).__name__}")
        return {name: (lambda y, f=f: f(y, design)) for name, f in stats.items()}
    return builtin_statistics(list(stats), design)


@dataclass
class PredictiveCheck:
    """Observed statistics, their replicated values (one row per replicate) and predictive p-values."""

    observed: pd.Series
    replicated: pd.DataFrame
    kind: str  # "posterior predictive" or "parametric bootstrap"

    @property
    def table(self) -> pd.DataFrame:
        rep = self.replicated
        return pd.DataFrame(
            {
                "observed": self.observed,
                "mean": rep.mean(),
                "sd": rep.std(ddof=1),
                "q2.5": rep.quantile(0.025),
                "q97.5": rep.quantile(0.975),
                "p_value": (rep >= self.observed).mean(),
            }
        ).rename_axis("statistic")

    def _heading(self) -> str:
        return f"{self.kind.capitalize()} check, {len(self.replicated)} replicates"

    def __repr__(self) -> str:
        return f"{self._heading()}\n{self.table.to_string()}"

    def _repr_html_(self) -> str:
        return result_html(self._heading(), ["p_value: share of replicates at or above the observed value"], [("", self.table)])


def ppc(result, stats=None, n: int = 1000, seed=None) -> PredictiveCheck:
    """Predictive check of `stats` (names from ``DEFAULT_STATS``/'group_means', or {name: f(y, design)}).

    Bayesian fits use every posterior draw; frequentist fits `n` parametric-bootstrap data sets.
    """
    design = result.design
    refuse_rows(design, "a predictive check (a statistic of every row of each simulated data set)")
    functions = _statistics(stats, design)
    if isinstance(result, Frequentist):
        yrep, kind = result.simulate(n, seed), "parametric bootstrap"
    else:
        yrep = result.posterior_predictive(seed).reshape(-1, design.nobs)
        kind = "posterior predictive"
    observed = pd.Series({name: float(f(design.y)) for name, f in functions.items()})
    replicated = pd.DataFrame({name: [float(f(y)) for y in yrep] for name, f in functions.items()})
    return PredictiveCheck(observed, replicated, kind)
