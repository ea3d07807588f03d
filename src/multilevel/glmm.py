"""Generalized linear mixed models by maximum likelihood (binomial, Poisson, negative binomial), as glmer.

Fitting follows lme4: stage 1 optimises theta with the fixed effects inside PIRLS (nAGQ = 0); stage 2 optimises
theta and beta jointly on the Laplace approximation (nAGQ = 1) or adaptive Gauss-Hermite quadrature (nAGQ > 1,
one scalar random-effect term). Stage 2 works in fixed effects whitened by stage 1's information, so the
optimiser sees a round problem whatever the scaling of the predictors. Every objective value is exact (PIRLS
converged to rounding): the optimum is the true Laplace / quadrature optimum, which lme4's defaults approach
to ~1e-3. Negative-binomial sizes are estimated jointly on the log scale. Standard errors come from the
Hessian of -2 log-likelihood in all parameters (lme4's default; the PIRLS-based ones are `vcov_rx`).

>>> import multilevel as mlv
>>> m = mlv.Model("cbind(incidence, size - incidence) ~ period + (1 | herd)", mlv.datasets.load("cbpp"),
...               family="binomial")
>>> round(m.fit().deviance, 4)
184.0526
"""

from __future__ import annotations

import textwrap
import warnings
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.linalg as sla
from scipy import special, stats

from . import predict as _predict
from .data import as_frame
from .design import Design, _expression
from .errors import MultilevelError, MultilevelWarning
from .families import Binomial, Family, Gaussian
from .lmm import SINGULAR_TOL, variance_table
from .optimize import OptimumInfo, bobyqa, free_coordinates, gradient_hessian
from .pirls import Mode, Pirls
from .summary import _pvalue, variance_lines

HESSIAN_STEP = 1e-2  # relative finite-difference step of the final Hessian: ~1e-3 SE in whitened coordinates
LOG2PI = float(np.log(2 * np.pi))


# ---------------------------------------------------------------------- input
def prepare_data(formula: str, data, family: Family):
    """A binomial response given as a two-level factor, strings or booleans becomes 0/1 (first level = 0, as R)."""
    if not isinstance(family, Binomial) or not isinstance(formula, str) or "~" not in formula:
        return data
    frame = as_frame(data)
    name = formula.split("~")[0].split("|")[0].strip()
    if name not in frame.columns or pd.api.types.is_numeric_dtype(frame[name].dtype) and not pd.api.types.is_bool_dtype(frame[name].dtype):
        return data
    col = frame[name]
    levels = list(col.cat.categories) if isinstance(col.dtype, pd.CategoricalDtype) else sorted(col.dropna().unique())
    if len(levels) > 2:
        raise MultilevelError(f"the binomial response '{name}' has {len(levels)} levels {levels[:5]}: a binary outcome "
                              "has two; recode it as 0/1")
    coded = pd.Series(np.where(col.isna(), np.nan, (col != levels[0]).astype(float)), index=frame.index)
    return frame.assign(**{name: coded})


def validate(design: Design, family: Family) -> None:
    """Refuse responses outside the family's support, naming the rows."""
    if isinstance(family, Gaussian):
        if design.trials is not None:
            raise MultilevelError("cbind(successes, failures) and trials() describe binomial data: add family='binomial'")
        return
    if design.se is not None:
        raise MultilevelError("se() in the response is for Gaussian models with known standard errors")
    if not design.blocks:
        raise MultilevelError("the formula has no random term such as '(1 | group)': this is a GLM, not a mixed model")
    trials = np.ones(design.nobs) if design.trials is None else design.trials
    family.check_response(design.y, trials if design.weights is None else trials * design.weights)


# ---------------------------------------------------------------------- objective
class GlmmObjective:
    """-2 log-likelihood of one parameter vector x = (theta, gamma, [log NB size]) with beta = beta0 + J gamma."""

    def __init__(self, pirls: Pirls, n_agq: int, estimate_size: bool):
        self.pirls, self.n_agq, self.estimate_size = pirls, n_agq, estimate_size
        self.n_theta = sum(sl.stop - sl.start for sl in pirls.theta_slices)
        self.beta0 = np.zeros(pirls.design.p)
        self.J = np.eye(pirls.design.p)

    def whiten(self, beta0: np.ndarray, precision_factor: np.ndarray) -> None:
        """beta = beta0 + L'^-1 gamma, L the lower Cholesky factor of beta's information (cov(gamma) ~ I)."""
        self.beta0 = beta0.copy()
        self.J = sla.solve_triangular(precision_factor.T, np.eye(len(beta0)), lower=False)

    def split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, Family]:
        theta = x[: self.n_theta]
        gamma = x[self.n_theta : self.n_theta + self.pirls.design.p]
        return theta, self.beta0 + self.J @ gamma, self.family(x)

    def family(self, x: np.ndarray) -> Family:
        fam = self.pirls.family
        return fam.with_dispersion(float(np.exp(x[-1]))) if self.estimate_size else fam

    def stage1(self, x: np.ndarray) -> float:
        """nAGQ = 0: x = (theta, [log size]), beta inside PIRLS."""
        fam = self.family(x)
        return self.pirls.laplace(x[: self.n_theta], None, fam)

    def __call__(self, x: np.ndarray) -> float:
        theta, beta, fam = self.split(x)
        try:
            mode = self.pirls.mode(theta, beta, fam)
        except MultilevelError:
            return np.inf
        return mode.laplace if self.n_agq == 1 else agq_deviance(self.pirls, mode, fam, self.n_agq)


def agq_deviance(pirls: Pirls, mode: Mode, family: Family, n_nodes: int) -> float:
    """-2 log-likelihood by adaptive Gauss-Hermite quadrature, one scalar random-effect term: each group's
    integral over its u, with nodes centred at the mode and scaled by the curvature there (absolute scale)."""
    block = pirls.design.blocks[0]
    x, w = np.polynomial.hermite.hermgauss(n_nodes)
    scale = 1.0 / np.sqrt(mode.factor.A11.reshape(-1))
    u_hat = mode.u[0][:, 0]
    shift = np.sqrt(2.0) * scale[:, None] * x[None, :]  # (m, K): u - u-hat at the nodes
    eta = mode.eta[:, None] + mode.theta[0] * block.Z[:, :1] * shift[block.codes]
    ll = family.loglik(pirls.y[:, None], family.link.linkinv(eta), pirls.prior_weights[:, None])
    group_ll = np.stack([np.bincount(block.codes, ll[:, k], block.m) for k in range(n_nodes)], axis=1)
    u = u_hat[:, None] + shift
    log_terms = group_ll - 0.5 * u**2 + x[None, :] ** 2 + np.log(w)[None, :]
    log_integral = special.logsumexp(log_terms, axis=1) + np.log(np.sqrt(2.0) * scale) - 0.5 * LOG2PI
    return float(-2.0 * np.sum(log_integral))


# ---------------------------------------------------------------------- fitting
def fit_glmm(model, nAGQ: int = 1, information: str = "observed") -> GlmmFit:
    """Maximum-likelihood fit of a GLMM: Laplace (nAGQ = 1, default), adaptive quadrature (nAGQ > 1, one
    scalar random-effect term) or lme4's fast nAGQ = 0. `information` picks the Laplace log-determinant for
    non-canonical links: "observed" (the Laplace approximation proper, glmmTMB) or "expected" (lme4)."""
    design, family = model.design, model.family
    n_agq = _check_nagq(nAGQ, design)
    pirls = Pirls(design, family, information)
    estimate_size = family.has_dispersion and family.dispersion is None
    objective = GlmmObjective(pirls, n_agq, estimate_size)
    start = np.concatenate([_theta_start(pirls), [_log_size_start(pirls)] if estimate_size else []])
    lower1 = np.concatenate([_theta_lower(pirls), [-np.inf] if estimate_size else []])
    stage1 = bobyqa(objective.stage1, start, lower1)
    mode1 = pirls.mode(stage1.x[: objective.n_theta], None, objective.family(stage1.x))
    rx = mode1.engine.beta_precision_factor(mode1.factor)
    if n_agq == 0:
        return GlmmFit(model, objective, stage1, mode1, None, information, n_agq)
    objective.whiten(mode1.beta, rx)
    x0 = np.concatenate([stage1.x[: objective.n_theta], np.zeros(design.p), stage1.x[objective.n_theta :]])
    lower = np.concatenate([_theta_lower(pirls), np.full(design.p + estimate_size, -np.inf)])
    info = bobyqa(objective, x0, lower)
    hessian = _final_hessian(objective, info, lower)
    theta, beta, fam = objective.split(info.x)
    mode = pirls.mode(theta, beta, fam)
    return GlmmFit(model, objective, info, mode, hessian, information, n_agq)


def _check_nagq(nAGQ, design: Design) -> int:
    n = int(nAGQ)
    if n != nAGQ or n < 0:
        raise MultilevelError(f"nAGQ must be a whole number >= 0, not {nAGQ!r}")
    if n > 1 and (len(design.blocks) != 1 or design.blocks[0].k != 1):
        raise MultilevelError(
            "adaptive Gauss-Hermite quadrature (nAGQ > 1) needs a single scalar random-effect term such as "
            "(1 | group), as in glmer; use nAGQ = 1 (Laplace) for this model"
        )
    return n


def _theta_start(pirls: Pirls) -> np.ndarray:
    """lme4's start: identity relative factors."""
    return np.isfinite(_theta_lower(pirls)).astype(float)


def _theta_lower(pirls: Pirls) -> np.ndarray:
    """0 on the diagonal of each relative factor, unbounded elsewhere."""
    out = []
    for k in pirls.ks:
        out += [0.0 if i == j else -np.inf for j in range(k) for i in range(j, k)]
    return np.array(out)


def _log_size_start(pirls: Pirls) -> float:
    """A moment estimate of the negative-binomial size from a Poisson fit of the fixed part (kept in [0.01, 1000])."""
    from .families import Poisson

    mode = pirls.mode(np.zeros(sum(sl.stop - sl.start for sl in pirls.theta_slices)), None, Poisson())
    mu = np.exp(mode.eta)
    excess = np.sum((pirls.y - mu) ** 2 - mu)
    size = np.sum(mu**2) / excess if excess > 0 else 1000.0
    pirls.u = [np.zeros_like(u) for u in pirls.u]
    return float(np.log(np.clip(size, 0.01, 1000.0)))


def _final_hessian(objective: GlmmObjective, info: OptimumInfo, lower: np.ndarray) -> np.ndarray:
    """Central-difference Hessian of -2 log L at the optimum (all free parameters); a last Newton step is
    taken first when it lowers the objective."""
    free = free_coordinates(info.x, lower)
    objective(info.x)
    pirls = objective.pirls
    u, beta = [x.copy() for x in pirls.u], pirls.beta.copy()

    def from_optimum(x):  # every evaluation starts PIRLS from the optimum's modes: a smooth function for differences
        pirls.u, pirls.beta = [a.copy() for a in u], beta.copy()
        return objective(x)

    grad, hess = gradient_hessian(from_optimum, info.x, free, h=HESSIAN_STEP, f0=info.fun)
    idx = np.flatnonzero(free)
    try:
        step = -np.linalg.solve(hess[np.ix_(idx, idx)], grad[idx])
    except np.linalg.LinAlgError:
        return hess
    trial = info.x.copy()
    trial[idx] += step
    trial = np.maximum(trial, lower)
    value = objective(trial)
    if value < info.fun:
        info.x, info.fun = trial, value
    info.gradient, info.hessian, info.checked_at = grad, hess, info.x.copy()
    return hess


# ---------------------------------------------------------------------- results
class GlmmFit:
    """Results of a GLMM fit, with the vocabulary of the Gaussian `LmmFit`."""

    def __init__(self, model, objective: GlmmObjective, info: OptimumInfo, mode: Mode, hessian, information, n_agq):
        self.model, self.info, self.mode, self.nAGQ = model, info, mode, n_agq
        self._objective, self._hessian = objective, hessian
        self.family: Family = objective.family(info.x)
        self.information = information if not self.family.canonical else "observed = expected (canonical link)"
        self.theta, self.beta = mode.theta, mode.beta
        self.factor = mode.factor
        self.objective = float(info.fun) if n_agq > 1 else mode.laplace
        self.warnings = list(info.warnings)
        if self.is_singular:
            self.warnings.append("boundary (singular) fit: a random-effect variance is estimated as 0 (or a correlation "
                                 "as +/-1); simplify the random effects")
        for message in self.warnings:
            warnings.warn(message, MultilevelWarning, stacklevel=3)

    # ---- scalars
    @property
    def design(self) -> Design:
        return self.model.design

    @property
    def nobs(self) -> int:
        return self.design.nobs

    @property
    def converged(self) -> bool:
        return not self.info.warnings

    @property
    def approximation(self) -> str:
        return {0: "Laplace, fixed effects inside PIRLS (nAGQ = 0)", 1: "Laplace"}.get(
            self.nAGQ, f"adaptive Gauss-Hermite quadrature, {self.nAGQ} nodes")

    @property
    def deviance(self) -> float:
        """-2 log-likelihood on the absolute scale (what glmer prints as deviance for nAGQ = 1)."""
        return self.objective

    @property
    def loglik(self) -> float:
        return -0.5 * self.objective

    @property
    def n_params(self) -> int:
        return self.design.p + self._objective.n_theta + int(self._objective.estimate_size)

    @property
    def aic(self) -> float:
        return self.objective + 2 * self.n_params

    @property
    def bic(self) -> float:
        return self.objective + np.log(self.nobs) * self.n_params

    @property
    def is_singular(self) -> bool:
        bounded = np.isfinite(_theta_lower(self._objective.pirls))
        return bool(np.any(self.theta[bounded] < SINGULAR_TOL))

    @property
    def nb_theta(self) -> float | None:
        """The negative-binomial size theta (lme4/MASS theta = glmmTMB's phi = brms's shape); None otherwise."""
        return self.family.dispersion if self.family.name == "negative_binomial" else None

    # ---- covariances
    @cached_property
    def parameter_covariance(self) -> np.ndarray | None:
        """Covariance of the optimiser's free parameters, 2 H^-1 (None for nAGQ = 0)."""
        if self._hessian is None:
            return None
        free = free_coordinates(self.info.x, np.concatenate([_theta_lower(self._objective.pirls),
                                                             np.full(len(self.info.x) - self._objective.n_theta, -np.inf)]))
        idx = np.flatnonzero(free)
        cov = np.full(self._hessian.shape, np.nan)
        cov[np.ix_(idx, idx)] = 2.0 * np.linalg.inv(self._hessian[np.ix_(idx, idx)])
        return cov

    @cached_property
    def vcov_rx(self) -> pd.DataFrame:
        """Covariance of beta-hat from the PIRLS information given theta (lme4's use.hessian = FALSE)."""
        pirls = self._objective.pirls
        kind = "expected" if self.information == "expected" else "observed"
        engine = pirls.engine(pirls.weights(self.mode.eta, self.family, kind), self.mode.eta - pirls.offset, True)
        inv = np.linalg.inv(engine.beta_precision_factor(engine.factor(self.theta)))
        return self._frame(inv.T @ inv)

    @cached_property
    def vcov(self) -> pd.DataFrame:
        """Covariance of the fixed effects: Hessian-based (lme4's default) for nAGQ >= 1, else `vcov_rx`."""
        cov = self.parameter_covariance
        if cov is None:
            return self.vcov_rx
        n_theta, p = self._objective.n_theta, self.design.p
        J = self._objective.J
        return self._frame(J @ cov[n_theta : n_theta + p, n_theta : n_theta + p] @ J.T)

    def _frame(self, values: np.ndarray) -> pd.DataFrame:
        names = self.design.fixed_names
        return pd.DataFrame(values, index=names, columns=names)

    # ---- tables
    @cached_property
    def fixed_effects(self) -> pd.DataFrame:
        """Estimates, standard errors, Wald z and p values and 95 % intervals."""
        se = np.sqrt(np.diag(self.vcov.to_numpy()))
        z = self.beta / se
        q = stats.norm.ppf(0.975)
        return pd.DataFrame(
            {"estimate": self.beta, "std_error": se, "z_value": z, "p_value": 2 * stats.norm.sf(np.abs(z)),
             "ci_lower": self.beta - q * se, "ci_upper": self.beta + q * se},
            index=pd.Index(self.design.fixed_names, name="term"),
        )

    @cached_property
    def covariances(self) -> list[np.ndarray]:
        """Covariance matrix of each random term on the linear-predictor scale, T T'."""
        return [T @ T.T for T in self.factor.T]

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
        cov = self.parameter_covariance
        se = float(np.sqrt(cov[-1, -1])) if cov is not None and self._objective.estimate_size else np.nan
        theta = float(self.nb_theta)
        return pd.DataFrame({"estimate": [theta, 1 / theta, np.log(theta)], "std_error_log": [se, se, se]},
                            index=pd.Index(["theta (size; glmmTMB phi)", "alpha = 1/theta", "log theta"], name="parameter"))

    @cached_property
    def group_effects(self) -> pd.DataFrame:
        """Conditional modes of the group effects with conditional SDs (lme4's ranef with condVar)."""
        from .tables import callable_table

        cond = self.mode.engine.conditional_covariances(self.factor)
        rows = []
        for block, b, cov in zip(self.design.blocks, self.mode.b, cond):
            sd = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
            for j, name in enumerate(block.coef_names):
                rows.append(pd.DataFrame({"group": block.group, "level": block.levels, "term": name,
                                          "estimate": b[:, j], "std_error": sd[:, j]}))
        return callable_table(pd.concat(rows, ignore_index=True))

    # ---- data scale
    def fitted(self, type: str = "response") -> np.ndarray:
        """Fitted values on the link or response scale (group effects included)."""
        return self._scale(self.mode.eta, type)

    def _scale(self, eta: np.ndarray, type: str) -> np.ndarray:
        if type == "link":
            return eta
        if type == "response":
            return self.family.link.linkinv(eta)
        raise MultilevelError(f"type must be 'link' or 'response', not {type!r}")

    def predict(self, new_data=None, type: str = "link", include_groups: bool = True, offset=None) -> np.ndarray:
        """Predictions on the link or response scale; unseen group levels get no group effect. Offsets written
        in the formula are evaluated on the new data; an `offset=` argument adds to them."""
        if new_data is None:
            eta = self.mode.eta if include_groups else _predict.linear_predictor(self.design, self.beta, None)
            return self._scale(eta, type)
        frame = as_frame(new_data)
        formula_offset = sum((_expression(o, frame, f"offset({o})") for o in self.design.formula.offsets), 0.0)
        if offset is None and self.design.formula.offsets:
            offset = np.zeros(len(frame))
        elif offset is not None and not isinstance(offset, str):
            offset = np.asarray(offset, float)
        if isinstance(offset, str):
            offset = frame[offset].to_numpy(dtype=float)
        eta = _predict.predict_new(self.design, self.beta, self.mode.b if include_groups else None, frame,
                                   None if offset is None else offset + formula_offset)
        return self._scale(eta, type)

    def simulate(self, n: int = 1, seed=None) -> np.ndarray:
        """n new response vectors (n x nobs) with new group effects; binomial responses as success counts
        when the model has trials (cbind or trials()), else on the response's own scale."""
        rng = np.random.default_rng(seed)
        pirls = self._objective.pirls
        eta0 = _predict.linear_predictor(self.design, self.beta, None)
        out = np.empty((n, self.nobs))
        for i in range(n):
            b = [_predict.draw_group_effects(rng, cov, block.m) for block, cov in zip(self.design.blocks, self.covariances)]
            mu = self.family.link.linkinv(eta0 + _predict.random_part(self.design, b))
            y = self.family.simulate(mu, pirls.prior_weights, rng)
            out[i] = np.round(y * self.design.trials) if self.design.trials is not None else y
        return out

    def to_frame(self) -> pd.DataFrame:
        fe = self.fixed_effects.reset_index().assign(kind="fixed")
        vc = self.variance_components.assign(kind="variance")
        return pd.concat([fe, vc], ignore_index=True)

    def summary(self) -> str:
        """glmer-style text."""
        fam = self.family
        lines = [f"Generalized linear mixed model fit by maximum likelihood ({self.approximation})",
                 f" Family: {fam.name} ({fam.link.name})" + (f", theta = {fam.dispersion:.5g}" if self.nb_theta else ""),
                 f"Formula: {self.design.formula}"]
        if not fam.canonical:
            lines.append(f"Laplace log-determinant: {self.information} information")
        lines += ["", f"     AIC      BIC   logLik  deviance", f"{self.aic:8.1f} {self.bic:8.1f} {self.loglik:8.1f} {self.deviance:9.1f}",
                  "", "Random effects:"] + variance_lines(self.variance_components)
        groups = ", ".join(f"{g}, {m}" for g, m in self.model.n_levels.items())
        lines.append(f"Number of obs: {self.nobs}; groups: {groups}")
        lines += ["", "Fixed effects:", f" {'':<24} {'Estimate':>10} {'Std. Error':>10} {'z value':>8} {'Pr(>|z|)':>9}"]
        for name, row in self.fixed_effects.iterrows():
            lines.append(f" {name:<24} {row['estimate']:>10.5g} {row['std_error']:>10.4g} {row['z_value']:>8.3f} "
                         f"{_pvalue(row['p_value']):>9}")
        if self.warnings:
            lines += ["", "Warnings:"]
            for w in self.warnings:
                lines += textwrap.wrap(w, width=100, initial_indent=" * ", subsequent_indent="   ")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()
