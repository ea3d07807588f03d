"""Frequentist fits (pipeline step 5): ML/REML by minimising the profiled criterion, and their results.

>>> import multilevel as mlv
>>> fit = mlv.Model("Reaction ~ Days + (Days | Subject)", mlv.datasets.load("sleepstudy")).fit()
>>> round(fit.objective, 4)
1743.6283
>>> fit.fixed_effects.loc["Days", "estimate"].round(4)
np.float64(10.4673)
"""

from __future__ import annotations

import warnings
from functools import cached_property, partial

import numpy as np
import pandas as pd
from scipy import stats

from . import predict as _predict
from .engine import Engine, Factor, tri_index
from .errors import MultilevelError, MultilevelWarning
from .optimize import OptimumInfo, bobyqa, finite_difference_checks, lbfgsb

SINGULAR_TOL = 1e-4  # lme4's isSingular tolerance on the relative factor's diagonal
BLME_EXTRA_DF = 2.5  # blme's default Wishart df = q + 2.5
GRADIENT_MIN_SIZE = 200  # the analytic gradient pays only when one evaluation is expensive (docs/performance.md)


def blme_penalty(engine: Engine, theta: np.ndarray) -> float:
    """blme's default covariance prior as a deviance penalty: -(df - q - 1) log det(T T') per term."""
    total = 0.0
    for T in engine.factors_of(theta):
        d = np.abs(np.diag(T))
        if np.any(d <= 0):
            return np.inf
        total -= (BLME_EXTRA_DF - 1.0) * 2.0 * float(np.sum(np.log(d)))
    return total


def _value_and_gradient(engine: Engine, reml: bool, prior: str | None, theta: np.ndarray):
    """Criterion and analytic gradient (scalar-term models), with blme's penalty when asked."""
    value, grad = engine.objective_and_gradient(theta, reml)
    if prior:
        value += blme_penalty(engine, theta)
        with np.errstate(divide="ignore"):
            grad = grad - (BLME_EXTRA_DF - 1.0) * 2.0 / theta
    return value, grad


def moment_start(design) -> np.ndarray:
    """A start for scalar-term models nearer the optimum than lme4's theta = 1: one backfitting sweep of
    per-group regressions on the least-squares residuals gives each term's coefficients and the residual
    variance; var(group coefficient) ~ tau^2 + sigma^2 / sum(z^2). Kept away from 0, where the
    criterion's slope vanishes."""
    y = design.y if design.offset is None else design.y - design.offset
    beta = np.linalg.lstsq(design.X, y, rcond=None)[0] if design.p else np.zeros(0)
    e = y - design.X @ beta
    coefs = []
    for block in design.blocks:
        z = block.Z[:, 0]
        szz = np.bincount(block.codes, z * z, block.m)
        coef = np.divide(np.bincount(block.codes, z * e, block.m), szz, out=np.zeros(block.m), where=szz > 0)
        e = e - z * coef[block.codes]
        coefs.append((coef[szz > 0], szz[szz > 0]))
    s2 = float(np.var(e)) or 1.0
    tau2 = [float(np.var(coef) - np.mean(s2 / szz)) for coef, szz in coefs]
    return np.clip(np.sqrt(np.maximum(tau2, 0.0) / s2), 0.1, 10.0)


def fit_lmm(model, method: str = "REML", prior: str | None = None) -> LmmFit:
    """Fit a linear mixed model by REML or ML, optionally with the zero-avoiding covariance prior."""
    method = str(method).upper()
    if method not in ("REML", "ML"):
        raise MultilevelError(f"method must be 'REML' or 'ML', not {method!r}")
    if prior not in (None, "zero-avoiding"):
        raise MultilevelError(f"prior must be None or 'zero-avoiding', not {prior!r}")
    if model.design.se is not None:
        raise MultilevelError(
            "a model with known standard errors (se()) has no residual variance to estimate by ML/REML here: "
            "fit it with model.sample()"
        )
    engine, reml = model.engine, method == "REML"

    def objective(theta):
        value = engine.objective(theta, reml)
        return value + blme_penalty(engine, theta) if prior else value

    lower = engine.theta_lower()
    if engine.has_gradient and engine.r > GRADIENT_MIN_SIZE:
        start = moment_start(model.design)
        info = lbfgsb(partial(_value_and_gradient, engine, reml, prior), objective, start, lower)
    else:
        info = bobyqa(objective, engine.theta_start(), lower)
    info = finite_difference_checks(objective, info, lower)
    return LmmFit(model, method, prior, info)


class LmmFit:
    """Results of an ML/REML fit; the same vocabulary as the Bayesian results."""

    def __init__(self, model, method: str, prior: str | None, info: OptimumInfo):
        self.model, self.method, self.prior, self.info = model, method, prior, info
        self.engine: Engine = model.engine
        self.reml = method == "REML"
        self.theta = info.x
        factor = self.engine.factor(self.theta)
        if factor is None:
            raise MultilevelError("the fitted model is numerically degenerate (the system is not positive definite)")
        self.factor: Factor = factor
        n, p = self.engine.n, self.engine.p
        self.sigma = float(np.sqrt(factor.r2 / (n - p if self.reml else n)))
        self.beta, self._b = self.engine.solve(factor)
        self.objective = self.engine.criterion(factor, self.reml)
        self.penalized_objective = self.objective + (blme_penalty(self.engine, self.theta) if prior else 0.0)
        self.warnings = list(info.warnings)
        if self.is_singular:
            self.warnings.append(singular_message(self))
        for message in self.warnings:
            warnings.warn(message, MultilevelWarning, stacklevel=3)

    # ------------------------------------------------------------------ scalars
    @property
    def design(self):
        return self.model.design

    @property
    def nobs(self) -> int:
        return self.engine.n

    @property
    def converged(self) -> bool:
        return self.info.converged

    @property
    def loglik(self) -> float:
        """Log-likelihood (the REML log-likelihood for REML fits, as lme4 reports)."""
        return -0.5 * self.objective

    @property
    def n_params(self) -> int:
        return self.engine.p + self.engine.n_theta + 1

    @property
    def aic(self) -> float:
        return -2 * self.loglik + 2 * self.n_params

    @property
    def bic(self) -> float:
        return -2 * self.loglik + np.log(self.nobs) * self.n_params

    @property
    def deviance(self) -> float:
        """-2 log-likelihood; for a REML fit, the ML criterion at the REML estimate of theta."""
        return self.objective if not self.reml else self.engine.criterion(self.factor, reml=False)

    @property
    def is_singular(self) -> bool:
        """lme4's rule: a diagonal element of a relative factor within 1e-4 of its bound 0."""
        lower = self.engine.theta_lower()
        bounded = np.isfinite(lower)
        return bool(np.any(self.theta[bounded] < SINGULAR_TOL))

    # ------------------------------------------------------------------ tables
    @cached_property
    def vcov(self) -> pd.DataFrame:
        """Covariance of the fixed-effect estimates, sigma^2 (R_X'R_X)^{-1}."""
        RX = self.engine.beta_precision_factor(self.factor)
        inv = np.linalg.inv(RX)
        names = self.design.fixed_names
        return pd.DataFrame(self.sigma**2 * inv.T @ inv, index=names, columns=names)

    @cached_property
    def satterthwaite_df(self) -> np.ndarray:
        from .satterthwaite import satterthwaite_df

        return satterthwaite_df(self)

    @cached_property
    def fixed_effects(self) -> pd.DataFrame:
        """Estimates, standard errors, t values, Satterthwaite df and p-values (as lmerTest), Wald 95 % CIs."""
        se = np.sqrt(np.diag(self.vcov.to_numpy()))
        t = self.beta / se
        df = self.satterthwaite_df
        z = stats.norm.ppf(0.975)
        return pd.DataFrame(
            {
                "estimate": self.beta,
                "std_error": se,
                "t_value": t,
                "df": df,
                "p_value": 2 * stats.t.sf(np.abs(t), df),
                "ci_lower": self.beta - z * se,
                "ci_upper": self.beta + z * se,
            },
            index=pd.Index(self.design.fixed_names, name="term"),
        )

    @cached_property
    def covariances(self) -> list[np.ndarray]:
        """Covariance matrix of each random term, sigma^2 T T' (y units squared)."""
        return [self.sigma**2 * T @ T.T for T in self.factor.T]

    @cached_property
    def variance_components(self) -> pd.DataFrame:
        """Variances, SDs and correlations of each random term, then the residual (as lme4's VarCorr)."""
        return variance_table(self.design.blocks, self.covariances, self.sigma)

    @cached_property
    def conditional_covariances(self) -> list[np.ndarray]:
        """Per term (m, k, k): conditional covariance of the group effects given the data and beta-hat."""
        return [self.sigma**2 * c for c in self.engine.conditional_covariances(self.factor)]

    @cached_property
    def group_effects(self) -> pd.DataFrame:
        """Conditional modes (BLUPs) of every group effect with their conditional SDs (also callable)."""
        from .tables import callable_table

        return callable_table(self._group_effects())

    def _group_effects(self) -> pd.DataFrame:
        rows = []
        for block, b, cov in zip(self.design.blocks, self._b, self.conditional_covariances):
            sd = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
            for j, name in enumerate(block.coef_names):
                rows.append(
                    pd.DataFrame(
                        {"group": block.group, "level": block.levels, "term": name, "estimate": b[:, j], "std_error": sd[:, j]}
                    )
                )
        return pd.concat(rows, ignore_index=True)

    @property
    def random_effects(self) -> list[np.ndarray]:
        """Conditional modes per term as (levels x coefficients) arrays."""
        return [b.copy() for b in self._b]

    # ------------------------------------------------------------------ data-scale quantities
    def fitted(self) -> np.ndarray:
        """Fitted values X beta + Z b (plus offset) for the rows used."""
        return _predict.linear_predictor(self.design, self.beta, self._b)

    def residuals(self) -> np.ndarray:
        return self.design.y - self.fitted()

    def predict(self, new_data=None, include_groups: bool = True, offset=None) -> np.ndarray:
        """Predictions X beta + Z b for new rows (the fitted rows if None). A group level not seen in fitting
        gets no group effect (its expected value, 0): the population-level prediction for that term.
        ``include_groups=False`` gives X beta for every row; ``offset`` is needed if the model has one."""
        if new_data is None:
            return self.fitted() if include_groups else _predict.linear_predictor(self.design, self.beta, None)
        return _predict.predict_new(self.design, self.beta, self._b if include_groups else None, new_data, offset)

    def simulate(self, n: int = 1, seed=None) -> np.ndarray:
        """n new response vectors (n x nobs) drawn from the fitted model, new group effects included."""
        return _predict.simulate(self.design, self.beta, self.covariances, self.sigma, n, seed)

    def confint(self, method: str = "Wald", level: float = 0.95) -> pd.DataFrame:
        """Intervals: ``"Wald"`` for fixed effects, ``"profile"`` for every parameter (as lme4's confint)."""
        if method.lower() == "wald":
            z = stats.norm.ppf(0.5 + level / 2)
            fe = self.fixed_effects
            se = fe["std_error"]
            est = fe["estimate"]
            return pd.DataFrame({"estimate": est, "lower": est - z * se, "upper": est + z * se})
        if method.lower() == "profile":
            from .profile import profile_intervals

            return profile_intervals(self, level)
        raise MultilevelError(f"confint method must be 'Wald' or 'profile', not {method!r}")

    def to_frame(self) -> pd.DataFrame:
        """Fixed effects and variance components in one long table."""
        fe = self.fixed_effects.reset_index().assign(kind="fixed")
        vc = self.variance_components.assign(kind="variance")
        return pd.concat([fe, vc], ignore_index=True)

    def icc(self, conditional: bool = False, level: float = 0.95, bootstrap: int = 0, seed=None) -> pd.DataFrame:
        """Share of variance at each level (adjusted / conditional ICC); bootstrap > 0 adds intervals."""
        from .variance import icc

        return icc(self, conditional, level, bootstrap, seed)

    def r2(self, level: float = 0.95, bootstrap: int = 0, seed=None) -> pd.DataFrame:
        """Nakagawa & Schielzeth marginal and conditional R^2."""
        from .variance import r2

        return r2(self, level, bootstrap, seed)

    def variance_decomposition(self) -> pd.DataFrame:
        from .variance import variance_decomposition

        return variance_decomposition(self)

    def pooling(self, group: str | None = None) -> pd.DataFrame:
        """Per group: size, no-, complete- and partial-pooling estimates and the shrinkage factor."""
        from .pooling import pooling

        return pooling(self, group)

    def ppc(self, stats=None, n: int = 1000, seed=None):
        """Parametric-bootstrap predictive check of test statistics."""
        from .ppc import ppc

        return ppc(self, stats, n, seed)

    def bootstrap(self, n: int = 1000, seed=None, cores: int = 1, statistic=None):
        """Parametric bootstrap: refits on simulated data; reproducible whatever `cores`."""
        from .bootstrap import bootstrap

        return bootstrap(self, n, seed, cores, statistic)

    def save(self, path, force: bool = False):
        """Write the fit to JSON (never overwrites unless force=True); reopen with `mlv.load`."""
        from .io import save

        return save(self, path, force=force)

    def summary(self) -> str:
        from .summary import lmm_summary

        return lmm_summary(self)

    def __repr__(self) -> str:
        return self.summary()


def variance_table(blocks, covariances: list[np.ndarray], sigma: float | None) -> pd.DataFrame:
    """lme4's VarCorr as a table: a row per variance, one per covariance (term2 set), then Residual."""
    rows = []
    for block, cov in zip(blocks, covariances):
        names = block.coef_names
        sds = np.sqrt(np.diag(cov))
        for a, name in enumerate(names):
            rows.append((block.group, name, "", cov[a, a], sds[a], np.nan))
        for a, b in tri_index(len(names)):
            if a != b:
                corr = cov[a, b] / (sds[a] * sds[b]) if sds[a] > 0 and sds[b] > 0 else np.nan
                rows.append((block.group, names[b], names[a], cov[a, b], np.nan, corr))
    if sigma is not None:
        rows.append(("Residual", "", "", sigma**2, sigma, np.nan))
    return pd.DataFrame(rows, columns=["group", "term", "term2", "variance", "sd", "corr"])


def singular_message(fit: LmmFit) -> str:
    """Plain words for a boundary fit: which parameter is on the boundary, what it means, what to do."""
    return (
        f"boundary (singular) fit: {'; '.join(boundary_parameters(fit))}. The data show no variation of that "
        "effect between groups beyond the residual noise (or two effects that vary together exactly), so the "
        "estimate sits on the edge of what is possible and its uncertainty is not captured by this fit; the "
        "fixed effects remain usable. What to do: simplify the random effects (drop that term, or its "
        "correlation with '||'), or refit with prior='zero-avoiding' (a penalised fit that stays off the "
        "boundary) or model.sample() (full Bayes)."
    )


def boundary_parameters(fit: LmmFit) -> list[str]:
    """Each zero diagonal of a relative factor, in words: a variance of 0 or a perfect correlation."""
    out = []
    for block, T in zip(fit.design.blocks, fit.factor.T):
        for i, name in enumerate(block.coef_names):
            if T[i, i] >= SINGULAR_TOL:
                continue
            if np.all(np.abs(T[i, :i]) < SINGULAR_TOL):
                out.append(f"the variance of '{name}' between levels of '{block.group}' is estimated as 0")
            else:
                out.append(
                    f"'{name}' by '{block.group}' is perfectly correlated with the terms before it "
                    "(a correlation of +/-1)"
                )
    return out
