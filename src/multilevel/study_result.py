"""`StudyResult`: what a repeated-sampling study (`multilevel.study`) found, and its scores.

The result stores one row per replicate x method x parameter (`estimates`) and one per replicate x method
(`runs`: seconds, failure, warnings); `table` derives the scores from them. Every score is a mean over
replicates of a per-replicate value, so its Monte Carlo standard error is that value's SD / sqrt(n)
(Morris, White & Crowther 2019); RMSE's comes by the delta method, MCSE(MSE) / (2 RMSE). Group effects are
pooled within a replicate first (one parameter per term coefficient, `r_g[,Intercept]`), so the replicates
stay the independent units. Saved as plain JSON (`save`), read back by `multilevel.io.load`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from .errors import MultilevelError
from .html_tables import result_html
from .kinds import Study
from .saving import FORMAT, plain, save_record

STUDY_VERSION = 1
ESTIMATE_COLUMNS = ["replicate", "method", "kind", "parameter", "truth", "estimate", "error", "sq_error",
                    "covered", "width", "on_boundary"]
RUN_COLUMNS = ["replicate", "method", "seconds", "failed", "warnings", "message"]
TABLE_COLUMNS = ["method", "kind", "parameter", "truth", "mean", "bias", "bias_mcse", "rmse", "rmse_mcse",
                 "coverage", "coverage_mcse", "width", "width_mcse", "boundary_share", "boundary_mcse", "n",
                 "failures", "warnings", "seconds"]


@dataclass
class StudyResult(Study):
    """Estimates of every method on every replicate, the runs' costs and failures, and the settings."""

    estimates: pd.DataFrame  # ESTIMATE_COLUMNS
    runs: pd.DataFrame  # RUN_COLUMNS
    settings: dict = field(default_factory=dict)  # formula, truth, methods, replicates, seed, partial, ...

    @property
    def partial(self) -> bool:
        """True when the study was interrupted: the scores use the finished replicates only."""
        return bool(self.settings.get("partial", False))

    @cached_property
    def table(self) -> pd.DataFrame:
        """One row per method x parameter: truth, mean, bias, RMSE, coverage, width, boundary share (each with
        its Monte Carlo SE), successful replicates n, failures, warnings and mean seconds per replicate."""
        return score(self.estimates, self.runs, self.settings.get("methods"))

    def save(self, path, force: bool = False) -> None:
        """Write the study as JSON (plain data, no pickle); `multilevel.io.load` reads it back."""
        save_record(self.record(), path, force)

    def record(self) -> dict:
        """The study as JSON-ready values."""
        return {"format": FORMAT, "kind": "study", "version": STUDY_VERSION, "settings": self.settings,
                "estimates": _columns(self.estimates), "runs": _columns(self.runs)}

    @classmethod
    def from_record(cls, record: dict) -> StudyResult:
        """A study from its JSON record (see `record`)."""
        if record.get("version", 0) > STUDY_VERSION:
            raise MultilevelError(f"this study was written by a newer multilevel (format {record['version']}): upgrade")
        estimates = pd.DataFrame(record["estimates"], columns=ESTIMATE_COLUMNS)
        runs = pd.DataFrame(record["runs"], columns=RUN_COLUMNS)
        numeric = [c for c in ESTIMATE_COLUMNS if c not in ("method", "kind", "parameter")]
        estimates[numeric] = estimates[numeric].astype(float)
        runs = runs.astype({"replicate": int, "seconds": float, "failed": bool, "warnings": int})
        return cls(estimates.astype({"replicate": int}), runs, record["settings"])

    def _overview(self) -> tuple[str, pd.DataFrame]:
        """The heading and the main columns of the scores, as `repr` and the notebook show them."""
        s = self.settings
        done = self.runs["replicate"].nunique()
        head = f"Study of {s.get('formula', '?')}: {done} replicates (seed {s.get('seed')})"
        if self.partial:
            head += f" - PARTIAL, interrupted after {done} of {s.get('replicates')}"
        cols = ["method", "parameter", "truth", "bias", "bias_mcse", "rmse", "coverage", "coverage_mcse", "boundary_share"]
        return head, self.table[cols]

    def __repr__(self) -> str:
        head, table = self._overview()
        return head + "\n" + table.round(4).to_string(index=False)

    def _repr_html_(self) -> str:
        head, table = self._overview()
        failures = self.runs[self.runs["failed"]]
        warnings = [f"{len(failures)} of {len(self.runs)} runs failed"] if len(failures) else []
        return result_html(head, [f"Truth: {self.settings.get('truth')}"], [("", table)], warnings)


def _columns(frame: pd.DataFrame) -> dict:
    return {c: plain(frame[c].to_numpy()) for c in frame.columns}


def score(estimates: pd.DataFrame, runs: pd.DataFrame, methods: list[str] | None = None) -> pd.DataFrame:
    """The scores of `StudyResult.table` from the per-replicate rows."""
    if estimates.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    groups = estimates.groupby(["method", "parameter"], sort=False)
    rows = [_score(method, parameter, g) for (method, parameter), g in groups]
    table = pd.DataFrame(rows)
    per_method = runs.groupby("method").agg(
        failures=("failed", "sum"), warnings=("warnings", "sum"),
        seconds=("seconds", lambda s: s[~runs.loc[s.index, "failed"]].mean()),
    )
    table = table.join(per_method, on="method")
    order = methods or list(dict.fromkeys(estimates["method"]))
    table["_order"] = table["method"].map({m: i for i, m in enumerate(order)})
    return table.sort_values("_order", kind="stable")[TABLE_COLUMNS].reset_index(drop=True)


def _score(method: str, parameter: str, g: pd.DataFrame) -> dict:
    """Scores of one method and parameter over its replicates."""
    mse, mse_se = _mean_se(g["sq_error"])
    rmse = float(np.sqrt(mse))
    bias, bias_se = _mean_se(g["error"])
    coverage, coverage_se = _mean_se(g["covered"])
    width, width_se = _mean_se(g["width"])
    boundary, boundary_se = _mean_se(g["on_boundary"])
    return {
        "method": method, "kind": g["kind"].iloc[0], "parameter": parameter, "truth": g["truth"].mean(),
        "mean": g["estimate"].mean(), "bias": bias, "bias_mcse": bias_se, "rmse": rmse,
        "rmse_mcse": mse_se / (2 * rmse) if rmse > 0 else np.nan, "coverage": coverage, "coverage_mcse": coverage_se,
        "width": width, "width_mcse": width_se, "boundary_share": boundary, "boundary_mcse": boundary_se,
        "n": len(g),
    }


def _mean_se(values: pd.Series) -> tuple[float, float]:
    """Mean over replicates and its Monte Carlo SE (NaN when the method gives no such value)."""
    v = values.dropna().to_numpy(dtype=float)
    if len(v) == 0:
        return np.nan, np.nan
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else np.nan
