"""`GlmmFit`: the values of a GLMM fit by maximum likelihood (pipeline step 7), laid out as `LmmFit`.

Fitting (`glmm.fit_glmm`) computes the optimum, the conditional modes there, both covariances of the fixed
effects and the warnings; the fit stores them and derives tables. Parameters are on the linear-predictor
scale: the covariances of the group effects are M T T' M' (no residual variance scales them). PIRLS may hold the
columns centred and scaled (`glmm.held_design`): theta, `factor` and `mode` are as it holds them; the fixed
effects, covariances and group effects reported are the user's (`Scaling`: beta = A beta_held, b = M b_held).
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
from .errors import MultilevelError
from .families import Family
from .glmm_checks import SimulatedResiduals, binned_residuals, overdispersion, simulated_residuals
from .kinds import Criteria, Generalized, OfModel
from .optimize import OptimumInfo
from .pirls import Mode
from .profile import held_theta, intervals
from .summary import GlmmText
from .tables import callable_table, estimates_table
from .variance import icc, r2

APPROXIMATIONS = {0: "Laplace, fixed effects inside PIRLS (nAGQ = 0)", 1: "Laplace"}


class GlmmFit(GlmmText, Criteria, Generalized, OfModel):
    """Results of a GLMM fit, with the vocabulary of the Gaussian `LmmFit`."""

    def __init__(self, model, family: Family, info: OptimumInfo, mode: Mode, deviance_function,
                 objective: float, n_params: int, vcov: np.ndarray | None,
                 parameter_covariance: np.ndarray | None, log_size_se: float, warnings: list[str]):
        self.model, self.family, self.info, self.mode = model, family, info, mode
        self.nAGQ, self.information_kind = deviance_function.n_agq, deviance_function.pirls.information
        self.information = self.information_kind if not family.canonical else "observed = expected (canonical link)"
        self.size_estimated = bool(deviance_function.estimate_size)
        self._deviance_function, self.held = deviance_function, deviance_function.held
        self.theta, self.beta = mode.theta, self.held.coefficients(mode.beta)
        self.objective, self.n_params = objective, n_params
        self._hessian_vcov = vcov  # None (nAGQ = 0): the PIRLS-based one, `vcov_rx`
        self.log_size_se = log_size_se  # SE of log NB size (NaN unless estimated with a Hessian)
        self.parameter_covariance = parameter_covariance  # 2 H^-1 of the optimiser's parameters (None for nAGQ = 0)
        self.warnings = warnings

    # ---- scalars
    def deviance_at(self, theta: np.ndarray, beta: np.ndarray, size: float | None = None) -> float:
        """-2 log-likelihood by this fit's approximation at other parameters, given as the fit holds its own: theta as
        `fit.theta` (so `deviance_at(fit.theta, fit.beta)` is `fit.deviance`), beta as `fit.beta` (NB size: None
        keeps the fit's)."""
        theta, beta = np.asarray(theta, float), np.asarray(beta, float)
        if theta.shape != self.theta.shape or beta.shape != self.beta.shape:
            raise MultilevelError(f"deviance_at takes theta of {self.theta.size} and beta of {self.beta.size} values (this "
                                  f"fit's), not {theta.size} and {beta.size}")
        if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(beta))):
            raise MultilevelError(f"deviance_at takes finite parameters, not theta {theta} and beta {beta}")
        return self._deviance(theta, self.held.held_coefficients(beta), size)

    def held_deviance_at(self, theta: np.ndarray, beta_held: np.ndarray, size: float | None = None) -> float:
        """The deviance at theta of the user's columns (the factor of the terms' covariances M T T' M') and the fixed
        effects of the columns as PIRLS holds them (`held`): well conditioned where the user's are not (a predictor far
        from zero beside the intercept); what profiles minimise over."""
        return self._deviance(held_theta(self.held, np.asarray(theta, float), [b.k for b in self.design.blocks]),
                              np.asarray(beta_held, float), size)

    def _deviance(self, theta_held: np.ndarray, beta_held: np.ndarray, size: float | None) -> float:
        family = self.family if size is None else self.family.with_dispersion(float(size))
        return self._deviance_function.deviance(theta_held, beta_held, family)

    @cached_property
    def held_beta_covariance(self) -> np.ndarray:
        """Covariance of beta-hat of the columns as PIRLS holds them (from its information given theta; the user's
        is `vcov_rx`)."""
        return self._deviance_function.held_beta_covariance(self.mode, self.family)

    @property
    def factor(self):
        """The engine's factor at the optimum (information weights at the modes), built when first asked for."""
        return self.mode.factor

    @property
    def approximation(self) -> str:
        return APPROXIMATIONS.get(self.nAGQ, f"adaptive Gauss-Hermite quadrature, {self.nAGQ} nodes")

    @property
    def deviance(self) -> float:
        """-2 log-likelihood on the absolute scale (what glmer prints as deviance for nAGQ = 1)."""
        return self.objective

    @property
    def loglik(self) -> float:
        return -0.5 * self.objective

    @property
    def is_singular(self) -> bool:
        """lme4's rule: a diagonal element of a relative factor within 1e-4 of its bound 0."""
        return any(np.any(np.diag(T) < SINGULAR_TOL) for T in self.mode.T)

    @property
    def nb_theta(self) -> float | None:
        """The negative-binomial size theta (lme4/MASS theta = glmmTMB's phi = brms's shape); None otherwise."""
        return self.family.dispersion if self.family.name == "negative_binomial" else None

    # ---- tables
    @cached_property
    def vcov(self) -> pd.DataFrame:
        """Covariance of the fixed effects: Hessian-based (lme4's default) for nAGQ >= 1, else `vcov_rx`."""
        return self._frame(self._vcov)

    @cached_property
    def vcov_rx(self) -> pd.DataFrame:
        """Covariance of beta-hat from the PIRLS information given theta (lme4's use.hessian = FALSE)."""
        return self._frame(self._vcov_rx)

    @property
    def _vcov(self) -> np.ndarray:
        return self._vcov_rx if self._hessian_vcov is None else self._hessian_vcov

    @cached_property
    def _vcov_rx(self) -> np.ndarray:
        """`vcov_rx`'s values (the user's columns), computed when first asked for."""
        return self.held.coefficient_covariance(self.held_beta_covariance)

    def _frame(self, values: np.ndarray) -> pd.DataFrame:
        names = self.design.fixed_names
        return pd.DataFrame(values, index=names, columns=names)

    @cached_property
    def fixed_effects(self) -> pd.DataFrame:
        """Estimates, standard errors, Wald z and p values and 95 % intervals."""
        se = np.sqrt(np.diag(self._vcov))
        z = self.beta / se
        q = stats.norm.ppf(0.975)
        return pd.DataFrame(
            {"estimate": self.beta, "std_error": se, "z_value": z, "p_value": 2 * stats.norm.sf(np.abs(z)),
             "ci_lower": self.beta - q * se, "ci_upper": self.beta + q * se},
            index=pd.Index(self.design.fixed_names, name="term"),
        )

    @cached_property
    def covariances(self) -> list[np.ndarray]:
        """Covariance matrix of each random term on the linear-predictor scale, M T T' M' (M undoes the centring of
        a far random-slope covariate, identity otherwise)."""
        return [(M @ T) @ (M @ T).T for M, T in zip(self._random_maps(), self.mode.T)]

    def _random_maps(self) -> list[np.ndarray]:
        """Per term, M mapping effects held with centred covariates to the user's (identity unless centred)."""
        return [self.held.random_map(i, b.k) for i, b in enumerate(self.design.blocks)]

    @cached_property
    def variance_components(self) -> pd.DataFrame:
        """Variances, SDs and correlations of each random term (no residual row: the family fixes it)."""
        return variance_table(self.design.blocks, self.covariances, None)

    @cached_property
    def dispersion(self) -> pd.DataFrame | None:
        """The negative-binomial size in both conventions, with the SE of its log: theta (= glmmTMB phi, brms
        shape; Var = mu + mu^2 / theta) and alpha = 1 / theta (Stata, statsmodels)."""
        if self.nb_theta is None:
            return None
        theta, se = float(self.nb_theta), self.log_size_se
        return pd.DataFrame({"estimate": [theta, 1 / theta, np.log(theta)], "std_error_log": [se, se, se]},
                            index=pd.Index(["theta (size; glmmTMB phi)", "alpha = 1/theta", "log theta"], name="parameter"))

    @cached_property
    def group_effects(self) -> pd.DataFrame:
        """Conditional modes of the group effects with conditional SDs (lme4's ranef with condVar)."""
        cond = [M @ c @ M.T for M, c in zip(self._random_maps(), self.mode.engine.conditional_covariances(self.factor))]
        rows = []
        for block, b, cov in zip(self.design.blocks, self.random_effects, cond):
            sd = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
            for j, name in enumerate(block.coef_names):
                rows.append(pd.DataFrame({"group": block.group, "level": block.levels, "term": name,
                                          "estimate": b[:, j], "std_error": sd[:, j]}))
        return callable_table(pd.concat(rows, ignore_index=True))

    @property
    def random_effects(self) -> list[np.ndarray]:
        """Conditional modes per term as (levels x coefficients) arrays."""
        return self.held.random_effects(self.mode.b)

    # ---- data scale
    def fitted(self, type: str = "response") -> np.ndarray:
        """Fitted values on the link or response scale (group effects included)."""
        return self._scale(self.mode.eta, type)

    def _scale(self, eta: np.ndarray, type: str) -> np.ndarray:
        if type == "link":
            return eta
        if type == "response" and hasattr(eta, "map_partitions"):  # new rows in Dask partitions: a lazy Series
            return eta.map_partitions(lambda e: pd.Series(self.family.link.linkinv(e.to_numpy()), index=e.index, name=e.name),
                                      meta=eta._meta)
        if type == "response":
            return self.family.link.linkinv(eta)
        raise MultilevelError(f"type must be 'link' or 'response', not {type!r}")

    def predict(self, new_data=None, type: str = "link", include_groups: bool = True, offset=None) -> np.ndarray:
        """Predictions on the link or response scale; unseen group levels get no group effect. Offsets written
        in the formula are evaluated on the new rows; ``offset`` is needed if the model was given one. New rows in a
        Dask DataFrame give a lazy Dask Series."""
        include_groups = check_flag(include_groups, "include_groups")
        if new_data is None:
            eta = self.mode.eta if include_groups else self._fixed_predictor()
        else:
            eta = _predict.predict_new(self.design, self.mode.beta, self.mode.b if include_groups else None, new_data,
                                       offset, held=self.held)
        return self._scale(eta, type)

    def _fixed_predictor(self) -> np.ndarray:
        """X beta (+ offset) on the model's rows, formed of the columns as PIRLS holds them (`predict.held_predictor`)."""
        return _predict.held_predictor(self.design, self.held, self.mode.beta, None)

    @property
    def held_covariances(self) -> list[np.ndarray]:
        """Covariance of each term's group effects as held (a far random-slope covariate centred): T T'."""
        return [T @ T.T for T in self.mode.T]

    def simulate(self, n: int = 1, seed=None) -> np.ndarray:
        """n new response vectors (n x nobs) with new group effects; binomial responses as success counts
        when the model has trials (cbind or trials()), else on the response's own scale."""
        return _predict.simulate(_predict.held_rows(self.design, self.held), self.family, self._fixed_predictor(),
                                 self.held_covariances, None, n, seed)

    def confint(self, method: str = "Wald", level: float = 0.95) -> pd.DataFrame:
        """Intervals: ``"Wald"`` for fixed effects, ``"profile"`` for SDs, correlations and fixed effects (glmer's)."""
        return intervals(self, method, level)

    def bootstrap(self, n: int = 1000, seed=None, cores: int = 1, statistic=None):
        """Parametric bootstrap: refits on simulated responses; reproducible whatever `cores`."""
        return bootstrap(self, n, seed, cores, statistic)

    def icc(self, conditional: bool = False, level: float = 0.95, bootstrap: int = 0, seed=None) -> pd.DataFrame:
        """Share of variance at each level on the latent scale (docs/glmm.md); bootstrap > 0 adds intervals."""
        return icc(self, conditional, level, bootstrap, seed)

    def r2(self, level: float = 0.95, bootstrap: int = 0, seed=None) -> pd.DataFrame:
        """Nakagawa, Johnson & Schielzeth's marginal and conditional R^2 on the latent scale."""
        return r2(self, level, bootstrap, seed)

    def overdispersion(self) -> dict:
        """Pearson chi-square given the group effects, its df, their ratio and the p value of overdispersion."""
        return overdispersion(self)

    def simulated_residuals(self, n: int = 250, seed=None) -> SimulatedResiduals:
        """DHARMa-style scaled residuals from n simulated responses; `.tests()` for uniformity, dispersion, zeros."""
        return simulated_residuals(self, n, seed)

    def binned_residuals(self, bins: int | None = None) -> pd.DataFrame:
        """Binned residuals of a binary response against fitted probabilities, with +/- 2 SE bounds."""
        return binned_residuals(self, bins)

    def save(self, path, force: bool = False):
        """Write the fit (and its data) to JSON (never overwrites unless force=True); reopen with `mlv.load`."""
        return saving.save(self, path, force=force)

    def to_frame(self) -> pd.DataFrame:
        """Fixed effects and variance components in one long table."""
        return estimates_table(self.fixed_effects, self.variance_components)
