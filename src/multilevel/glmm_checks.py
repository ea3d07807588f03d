"""Checks of a GLMM fit that glmer users reach for: overdispersion (Pearson ratio and chi-square test), simulated
quantile residuals with DHARMa's uniformity, dispersion and zero-inflation tests, and binned residuals for binary
data (Gelman & Hill, arm::binnedplot).

>>> import multilevel as mlv
>>> cbpp = mlv.datasets.load("cbpp")
>>> fit = mlv.Model("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial").fit()
>>> round(overdispersion(fit)["ratio"], 3)
1.237
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .arguments import check_count, check_seed
from .errors import MultilevelError


def overdispersion(fit) -> dict:
    """Sum of squared Pearson residuals (given the group effects) against a chi-square on nobs - parameters df:
    Bolker's ``overdisp_fun`` / performance::check_overdispersion for glmer fits."""
    y, w = fit.design.y, fit.design.family_weights
    chisq = float(np.sum(fit.family.pearson_residuals(y, fit.fitted(), w) ** 2))
    df = int(fit.nobs - fit.n_params)
    return {"chisq": chisq, "df": df, "ratio": chisq / df, "p_value": float(stats.chi2.sf(chisq, df))}


@dataclass
class SimulatedResiduals:
    """DHARMa's scaled residuals: where each observation falls among responses simulated from the fitted model."""

    residuals: np.ndarray  # in (0, 1); uniform if the model is right
    observed: np.ndarray  # the response on the simulation's scale (binomial with trials: success counts)
    simulated: np.ndarray  # (n, nobs)
    fitted: np.ndarray  # fitted means on the response scale

    def tests(self) -> pd.DataFrame:
        """Uniformity (Kolmogorov-Smirnov), dispersion and zero-inflation tests, as DHARMa's defaults."""
        ks = stats.kstest(self.residuals, "uniform")
        centre = self.simulated.mean(axis=0)
        dispersion = _simulated_test(np.var(self.observed - centre), np.var(self.simulated - centre, axis=1))
        zeros = _simulated_test(np.sum(self.observed == 0), np.sum(self.simulated == 0, axis=1))
        return pd.DataFrame(
            {"statistic": [ks.statistic, *dispersion[:1], *zeros[:1]], "p_value": [ks.pvalue, dispersion[1], zeros[1]]},
            index=pd.Index(["uniformity (KS D)", "dispersion (ratio)", "zero inflation (ratio)"], name="test"))


def _simulated_test(observed: float, simulated: np.ndarray) -> tuple[float, float]:
    """Ratio observed / mean simulated and DHARMa's two-sided p value from the simulated distribution."""
    mean = simulated.mean()
    ratio = observed / mean if mean > 0 else (np.nan if observed == 0 else np.inf)
    p = 2 * min(np.mean(simulated >= observed), np.mean(simulated <= observed))
    return float(ratio), float(min(p, 1.0))


def simulated_residuals(fit, n: int = 250, seed=None) -> SimulatedResiduals:
    """Scaled residuals from n simulated responses (new group effects, as DHARMa with lme4's simulate): the
    share of simulations below the observation, ties broken uniformly at random (a randomised PIT)."""
    n = check_count(n, "n (simulations)", 2)
    rng = np.random.default_rng(check_seed(seed))
    sims = fit.simulate(n, rng)
    trials = fit.design.trials
    observed = fit.design.y if trials is None else np.round(fit.design.y * trials)
    below = np.sum(sims < observed, axis=0)
    ties = np.sum(sims == observed, axis=0)
    residuals = (below + rng.uniform(size=fit.nobs) * ties) / n
    return SimulatedResiduals(residuals, observed, sims, fit.fitted())


def is_binary(fit) -> bool:
    """Whether a GLMM's response is 0/1 (binomial without trials beyond one): where binned residuals apply."""
    return fit.family.name == "binomial" and (fit.design.trials is None or bool(np.all(fit.design.trials == 1)))


def binned_residuals(fit, bins: int | None = None) -> pd.DataFrame:
    """Binary responses: rows sorted by fitted probability into bins (sqrt(n) by default, as arm::binnedplot),
    each with its mean fitted value, mean residual y - p and the +/- 2 SE band of that mean."""
    y, p = fit.design.y, fit.fitted()
    if not is_binary(fit):
        raise MultilevelError("binned residuals are for binary (0/1) responses; use simulated_residuals for "
                              "counts and binomial responses with trials")
    bins = int(np.floor(np.sqrt(len(y)))) if bins is None else bins
    if not 1 <= bins <= len(y):
        raise MultilevelError(f"bins must be between 1 and the number of rows ({len(y)}), got {bins!r}")
    order = np.argsort(p, kind="stable")
    rows = []
    for k, idx in enumerate(np.array_split(order, bins)):
        r = y[idx] - p[idx]
        se = np.std(r, ddof=1) / np.sqrt(len(idx)) if len(idx) > 1 else np.nan
        rows.append((k + 1, len(idx), p[idx].mean(), r.mean(), 2 * se))
    table = pd.DataFrame(rows, columns=["bin", "n", "fitted", "residual", "bound"]).set_index("bin")
    table["inside"] = table["residual"].abs() <= table["bound"]
    return table
