"""Parametric bootstrap of a frequentist fit: simulate from the fitted model, refit, summarise any statistic.

Each replicate draws new group effects and residuals from the fit (`LmmFit.simulate`) and refits with the
same method and prior through `Model.with_response`: only the response changes, so a refit needs new
cross-products Z'y, X'y, y'y only; everything else is shared with the original model. Replicate i uses its own seed from
``np.random.SeedSequence(seed).spawn(n)[i]``, so results do not depend on how many processes run them.

>>> import multilevel as mlv
>>> fit = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff")).fit()
>>> boot = bootstrap(fit, n=20, seed=1)
>>> boot.replicates.shape
(20, 3)
>>> list(boot.interval().columns)
['estimate', 'lower', 'upper']
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .arguments import check_count, check_level, check_seed
from .chains import run
from .errors import MultilevelError, MultilevelWarning
from .html_tables import result_html
from .kinds import Frequentist, Generalized
from .names import fixed_name, variance_names
from .partitioned import refuse_rows


def parameters(fit) -> pd.Series:
    """A frequentist fit's parameters with brms's names: b_*, sd_*, cor_*, sigma or a GLMM's NB shape."""
    return pd.Series(parameter_values(fit), dtype=float)


def parameter_values(fit) -> dict[str, float]:
    """`parameters` as a dict (no Series: a study reads thousands of fits)."""
    out = {fixed_name(n): v for n, v in zip(fit.design.fixed_names, fit.beta)}
    for block, cov in zip(fit.design.blocks, fit.covariances):
        sd = np.sqrt(np.diag(cov))
        sd_names, cor_entries = variance_names(block)
        out.update(zip(sd_names, sd))
        for a, c, name in cor_entries:
            out[name] = cov[a, c] / (sd[a] * sd[c]) if sd[a] > 0 and sd[c] > 0 else np.nan
    if isinstance(fit, Generalized):
        if fit.size_estimated:
            out["shape"] = fit.nb_theta  # brms's name of the negative-binomial size
    else:
        out["sigma"] = fit.sigma
    return out


def refit_on(fit, y: np.ndarray):
    """The fit's model refitted (same method and prior, or nAGQ and information) to a new response vector y,
    warnings kept in the fit."""
    if isinstance(fit, Generalized):
        return fit.model.with_response(y).fit(nAGQ=fit.nAGQ, information=fit.information_kind, warn=False)
    return fit.model.with_response(y).fit(method=fit.method, prior=fit.prior, warn=False)


@dataclass
class BootstrapResult:
    """Replicated statistics of a parametric bootstrap, with percentile and basic intervals."""

    estimate: pd.Series  # the statistic on the original fit
    replicates: pd.DataFrame  # one row per successful replicate
    n_failed: int
    n_singular: int
    seed: int

    def interval(self, level: float = 0.95, kind: str = "percentile") -> pd.DataFrame:
        """Intervals per statistic: ``"percentile"`` (quantiles of the replicates) or ``"basic"`` (2 est - q)."""
        check_level(level)
        q = self.replicates.quantile([(1 - level) / 2, (1 + level) / 2]).T.to_numpy()
        est = self.estimate.to_numpy()
        if kind == "percentile":
            lower, upper = q[:, 0], q[:, 1]
        elif kind == "basic":
            lower, upper = 2 * est - q[:, 1], 2 * est - q[:, 0]
        else:
            raise MultilevelError(f"kind must be 'percentile' or 'basic', not {kind!r}")
        return pd.DataFrame({"estimate": est, "lower": lower, "upper": upper}, index=self.estimate.index)

    def _heading(self) -> str:
        head = f"Parametric bootstrap: {len(self.replicates)} refits (seed {self.seed})"
        if self.n_failed:
            head += f", {self.n_failed} failed"
        if self.n_singular:
            head += f", {self.n_singular} on the boundary (singular)"
        return head

    def __repr__(self) -> str:
        return self._heading() + "\n" + self.interval().to_string()

    def _repr_html_(self) -> str:
        failed = [f"{self.n_failed} refits failed and were left out"] if self.n_failed else []
        return result_html(self._heading(), [], [("95 % percentile intervals", self.interval())], failed)


def bootstrap(fit, n: int = 1000, seed: int | None = None, cores: int = 1, statistic=None) -> BootstrapResult:
    """Refit `fit` on `n` data sets simulated from it; `statistic(fit) -> Series/dict/array` (default: every
    parameter, brms names). Parallel over `cores` processes; a seed gives the same result for any `cores`."""
    n, cores, seed = check_count(n, "n"), check_count(cores, "cores"), check_seed(seed, generators=False)
    if not isinstance(fit, Frequentist):
        raise MultilevelError("bootstrap needs a frequentist fit from model.fit(); for Bayesian fits use the draws")
    refuse_rows(fit.design, "the parametric bootstrap (every row simulated and refitted, n times)")
    statistic = statistic or parameters
    estimate = _as_series(statistic(fit))
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**31))
    seeds = np.random.SeedSequence(seed).spawn(n)
    chunks = [c for c in np.array_split(np.arange(n), cores) if len(c)]
    parts = run(_run, [(fit, statistic, [seeds[i] for i in c]) for c in chunks], cores, 0, 0, progress=False)
    rows = [r for part in parts for r in part]
    values = [r[0] for r in rows if r[0] is not None]
    n_failed = sum(r[0] is None for r in rows)
    n_singular = sum(bool(r[1]) for r in rows)
    if not values:
        raise MultilevelError("every bootstrap refit failed: the model cannot be refitted to data simulated from it")
    if n_failed:
        warnings.warn(f"{n_failed} of {n} bootstrap refits failed and were left out", MultilevelWarning, stacklevel=2)
    table = pd.DataFrame([_as_series(v, estimate.index).to_numpy() for v in values], columns=estimate.index)
    return BootstrapResult(estimate, table, n_failed, n_singular, seed)


def _run(fit, statistic, seeds, report=None) -> list[tuple]:
    """Simulate and refit once per seed: (statistic or None if the refit failed, singular flag)."""
    out = []
    for s in seeds:
        y = fit.simulate(1, s)[0]
        try:
            new = refit_on(fit, y)
            out.append((statistic(new), new.is_singular))
        except MultilevelError:
            out.append((None, False))
    return out


def _as_series(value, index=None) -> pd.Series:
    """A statistic's value as a float Series (scalars get the name 'statistic')."""
    if isinstance(value, pd.Series):
        s = value.astype(float)
    elif isinstance(value, dict):
        s = pd.Series(value, dtype=float)
    else:
        arr = np.atleast_1d(np.asarray(value, dtype=float))
        s = pd.Series(arr, index=["statistic"] if arr.size == 1 else [f"statistic[{i}]" for i in range(arr.size)])
    return s if index is None else s.reindex(index)
