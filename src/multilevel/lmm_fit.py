"""`LmmFit`: the values of an ML/REML fit (pipeline step 7), read by the checks it delegates to.

A fit stores what fitting computed (theta, the Cholesky factor, sigma, beta, the conditional modes, the
criterion, the warnings) and derives tables from those values; statistics that take a fit (Satterthwaite
df, profile intervals, ICC, pooling, predictive checks, bootstrap, saving) live in their own modules and
receive the fit, never the other way round. Refits go through the model (`fit.model.with_response`).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd
from scipy import stats

from . import predict as _predict
from . import saving
from .arguments import check_flag
from .bootstrap import bootstrap
from .components import SINGULAR_TOL, variance_table
from .engine import Engine, Factor
from .kinds import Criteria, Frequentist, OfModel
from .optimize import OptimumInfo
from .partitioned import PartitionedDesign, refuse_rows
from .pooling import pooling
from .ppc import ppc
from .profile import intervals
from .satterthwaite import satterthwaite_df
from .summary import LmmText
from .tables import callable_table, estimates_table
from .variance import icc, r2, variance_decomposition


class LmmFit(LmmText, Criteria, Frequentist, OfModel):
    """Results of an ML/REML fit; the same vocabulary as the Bayesian results."""

    def __init__(self, model, method: str, prior: str | None, info: OptimumInfo, factor: Factor, sigma: float,
                 held_beta: np.ndarray, held_b: list[np.ndarray], objective: float, penalized_objective: float, warnings: list[str]):
        self.model, self.method, self.prior, self.info = model, method, prior, info
        self.engine: Engine = model.engine
        self.reml = method == "REML"
        self.theta = info.x
        self.factor, self.sigma = factor, sigma
        self.held_beta, self.held_b = held_beta, held_b  # of the columns as the engine holds them: fitted values use these
        self.beta, self._b = self.engine.held.coefficients(held_beta), self.engine.held.random_effects(held_b)
        self.objective, self.penalized_objective = objective, penalized_objective
        self.warnings = warnings

    # ------------------------------------------------------------------ scalars
    @property
    def loglik(self) -> float:
        """Log-likelihood (the REML log-likelihood for REML fits, as lme4 reports)."""
        return -0.5 * self.objective

    @property
    def n_params(self) -> int:
        return self.engine.p + self.engine.n_theta + 1

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
        inv = self.engine.beta_covariance_factor(self.factor)
        names = self.design.fixed_names
        return pd.DataFrame(self.sigma**2 * inv.T @ inv, index=names, columns=names)

    @cached_property
    def satterthwaite_df(self) -> np.ndarray:
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

    def _random_maps(self) -> list[np.ndarray]:
        """Per term, M mapping effects held with centred covariates to the user's (identity unless centred)."""
        return [self.engine.held.random_map(i, b.k) for i, b in enumerate(self.design.blocks)]

    @cached_property
    def covariances(self) -> list[np.ndarray]:
        """Covariance matrix of each random term, sigma^2 M T T' M' (y units squared; M undoes the centring of a
        far random-slope covariate, identity otherwise)."""
        return [self.sigma**2 * (M @ T) @ (M @ T).T for M, T in zip(self._random_maps(), self.factor.T)]

    @cached_property
    def variance_components(self) -> pd.DataFrame:
        """Variances, SDs and correlations of each random term, then the residual (as lme4's VarCorr)."""
        return variance_table(self.design.blocks, self.covariances, self.sigma)

    @cached_property
    def conditional_covariances(self) -> list[np.ndarray]:
        """Per term (m, k, k): conditional covariance of the group effects given the data and beta-hat."""
        return [self.sigma**2 * M @ c @ M.T for M, c in zip(self._random_maps(), self.engine.conditional_covariances(self.factor))]

    @cached_property
    def group_effects(self) -> pd.DataFrame:
        """Conditional modes (BLUPs) of every group effect with their conditional SDs (also callable)."""
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
        """Fitted values X beta + Z b (plus offset) for the rows used (partitioned data: a lazy Dask series)."""
        return self._linear_predictor(True)

    def residuals(self) -> np.ndarray:
        if isinstance(self.design, PartitionedDesign):
            return self.design.residuals(self.held_beta, self.held_b, self.engine.held)
        return self.design.y - self.fitted()

    def log_likelihood(self):
        """Each row's log-likelihood given the conditional modes, log N(y | fitted, sigma / sqrt(weight)), at the
        estimates (partitioned data: a lazy Dask series, one more pass when computed)."""
        if isinstance(self.design, PartitionedDesign):
            return self.design.log_likelihood(self.held_beta, self.held_b, self.engine.held, self.model.family, self.sigma)
        return _predict.row_log_likelihood(self.design, self.model.family, self.fitted(), self.sigma)

    def _linear_predictor(self, include_groups: bool):
        """On the model's rows, formed of the held columns (`predict.held_predictor`)."""
        b = self.held_b if include_groups else None
        if isinstance(self.design, PartitionedDesign):
            return self.design.fitted(self.held_beta, b, self.engine.held)
        return _predict.held_predictor(self.design, self.engine.held, self.held_beta, b)

    def predict(self, new_data=None, include_groups: bool = True, offset=None) -> np.ndarray:
        """Predictions X beta + Z b for new rows (the fitted rows if None). A group level not seen in fitting
        gets no group effect (its expected value, 0): the population-level prediction for that term.
        ``include_groups=False`` gives X beta for every row; ``offset`` is needed if the model has one. New rows in
        a Dask DataFrame (and the fitted rows of partitioned data) give a lazy Dask Series."""
        include_groups = check_flag(include_groups, "include_groups")
        if new_data is None:
            return self._linear_predictor(include_groups)
        return _predict.predict_new(self.design, self.held_beta, self.held_b if include_groups else None, new_data, offset,
                                    held=self.engine.held)

    @property
    def held(self):
        """The `Scaling` of the columns as the engine holds them (what `held_beta`, `held_b` are coefficients of)."""
        return self.engine.held

    @property
    def held_covariances(self) -> list[np.ndarray]:
        """Covariance of each term's group effects as held (a far random-slope covariate centred): sigma^2 T T'."""
        return [self.sigma**2 * T @ T.T for T in self.factor.T]

    def simulate(self, n: int = 1, seed=None) -> np.ndarray:
        """n new response vectors (n x nobs) drawn from the fitted model, new group effects included."""
        refuse_rows(self.design, "simulating responses")
        return _predict.simulate(_predict.held_rows(self.design, self.engine.held), self.model.family,
                                 self._linear_predictor(False), self.held_covariances, self.sigma, n, seed)

    def confint(self, method: str = "Wald", level: float = 0.95) -> pd.DataFrame:
        """Intervals: ``"Wald"`` for fixed effects, ``"profile"`` for every parameter (as lme4's confint)."""
        return intervals(self, method, level)

    def to_frame(self) -> pd.DataFrame:
        """Fixed effects and variance components in one long table."""
        return estimates_table(self.fixed_effects, self.variance_components)

    def icc(self, conditional: bool = False, level: float = 0.95, bootstrap: int = 0, seed=None) -> pd.DataFrame:
        """Share of variance at each level (adjusted / conditional ICC); bootstrap > 0 adds intervals."""
        return icc(self, conditional, level, bootstrap, seed)

    def r2(self, level: float = 0.95, bootstrap: int = 0, seed=None) -> pd.DataFrame:
        """Nakagawa & Schielzeth marginal and conditional R^2."""
        return r2(self, level, bootstrap, seed)

    def variance_decomposition(self) -> pd.DataFrame:
        return variance_decomposition(self)

    def pooling(self, group: str | None = None) -> pd.DataFrame:
        """Per group: size, no-, complete- and partial-pooling estimates and the shrinkage factor."""
        return pooling(self, group)

    def ppc(self, stats=None, n: int = 1000, seed=None):
        """Parametric-bootstrap predictive check of test statistics."""
        return ppc(self, stats, n, seed)

    def bootstrap(self, n: int = 1000, seed=None, cores: int = 1, statistic=None):
        """Parametric bootstrap: refits on simulated data; reproducible whatever `cores`."""
        return bootstrap(self, n, seed, cores, statistic)

    def save(self, path, force: bool = False):
        """Write the fit (and its data) to JSON (never overwrites unless force=True); reopen with `mlv.load`."""
        return saving.save(self, path, force=force)

