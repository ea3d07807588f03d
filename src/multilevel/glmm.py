"""Generalized linear mixed models by maximum likelihood (binomial, Poisson, negative binomial), as glmer.

Fitting follows lme4: stage 1 optimises theta with the fixed effects inside PIRLS (nAGQ = 0); stage 2 optimises
theta and beta jointly on the Laplace approximation (nAGQ = 1) or adaptive Gauss-Hermite quadrature (nAGQ > 1,
one scalar random-effect term). Stage 2 works in fixed effects whitened by stage 1's information, so the
optimiser sees a round problem whatever the scaling of the predictors. Every objective value is exact (PIRLS
converged to rounding): the optimum is the true Laplace / quadrature optimum, which lme4's defaults approach
to ~1e-3. With the Laplace approximation (and quadrature of one scalar term) the objective has an exact gradient
(`scalar_pirls`; `laplace_gradient` when every term is scalar; `vector_pirls` for any terms with a vector among them,
crossed or nested) unless the dense part of the system is too large to hold: stage 2 is then L-BFGS-B from lme4's
start (stage 1 only whitens there) and the Hessian comes from differences of the gradient; otherwise both stages are
BOBYQA. Negative-binomial sizes are estimated jointly
on the log scale. Standard errors come from the Hessian of -2 log-likelihood in all parameters (lme4's default;
the PIRLS-based ones are `vcov_rx`), which also serves lme4's convergence checks. The values at the optimum
become a `GlmmFit`; the warnings are raised here, once.

>>> import multilevel as mlv
>>> m = mlv.Model("cbind(incidence, size - incidence) ~ period + (1 | herd)", mlv.datasets.load("cbpp"),
...               family="binomial")
>>> round(m.fit().deviance, 4)
184.0526
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import scipy.linalg as sla

from .components import boundary_parameters
from .crossprod import design_scaling
from .data import as_frame
from .design import Design
from .engine import theta_to_T, tri_index
from .errors import MultilevelError, emit
from .families import Binomial, Family, Gaussian, Poisson
from .formula import Formula, parse
from .glmm_fit import GlmmFit
from .laplace_gradient import ScalarTermsGradient
from .newton_modes import STEP_TOL
from .optimize import (
    NEWTON_TRUST,
    OFF_BOUND_PROBE,
    OptimumInfo,
    bobyqa,
    cholesky_or_none,
    finite_difference_checks,
    free_coordinates,
    gradient_hessian,
    hessian_from_gradient,
    lbfgsb,
)
from .pirls import Mode, Pirls
from .scalar_pirls import ScalarPirls
from .scaling import Scaling, far_covariate_messages, held_blocks, precision_message
from .vector_pirls import VectorTermGradient

HESSIAN_STEP = 1e-2  # relative finite-difference step of the final Hessian: ~1e-3 SE in whitened coordinates
GRADIENT_HESSIAN_STEP = 1e-3  # the same from central differences of the exact gradient (error ~1e-6)
FORWARD_HESSIAN_STEP = 3e-5  # forward differences of the exact gradient (half the gradients): SEs within 1e-4 of those
NEARLY_SINGULAR = 1e-3  # smallest / largest eigenvalue (unit diagonal) below which forward differences' O(h) error
# could hide singularity
STAGE2_FTOL, STAGE2_GTOL = 1e-10, 1e-5  # L-BFGS-B stops ~1e-5 from the optimum: the final Newton step goes the rest
THETA_SCALE = 4.0  # L-BFGS-B sees theta times this: its curvature (20-850 on the references) is that much above the
# whitened fixed effects' (2), and the first step's unit length then stays in reach (a third fewer gradients)
FINAL_STEP_TOL = 1e-13  # PIRLS's stopping step for the modes a fit reports (STEP_TOL leaves them ~1e-12 from exact)
MAX_NAGQ = 100  # quadrature nodes, as lme4's GHrule
LARGE_COUNT = 1e5  # counts from here on can stall PIRLS at a rounding floor (Poisson counts of 1e6: steps of ~1e-8)
SPREAD_BITS = 10  # columns near zero whose spread is within 2^+-10 of 1 are held as given (the whitening absorbs it)


# ---------------------------------------------------------------------- input
def prepare_data(formula, data, family: Family):
    """A binomial response given as a two-level factor, strings or booleans becomes 0/1 (first level = 0, as R)."""
    if not isinstance(family, Binomial):
        return data
    frame = as_frame(data)
    name = (formula if isinstance(formula, Formula) else parse(formula)).response.strip()
    if name not in frame.columns:
        return data
    col = frame[name]
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        return data
    levels = list(col.cat.categories) if isinstance(col.dtype, pd.CategoricalDtype) else sorted(col.dropna().unique())
    if len(levels) > 2:
        raise MultilevelError(f"the binomial response '{name}' has {len(levels)} levels {levels[:5]}: a binary outcome "
                              "has two; recode it as 0/1")
    if len(levels) < 2 and not pd.api.types.is_bool_dtype(col.dtype):
        raise MultilevelError(f"the binomial response '{name}' takes {len(levels)} value(s) {levels}: a binary outcome "
                              "needs two to tell apart (R would code every row as a failure); check the column")
    coded = pd.Series(np.where(col.isna(), np.nan, (col != levels[0]).astype(float)), index=frame.index)
    return frame.assign(**{name: coded})


def validate(design: Design, family: Family) -> None:
    """Refuse what the family cannot fit: responses outside its support (naming the rows), se(), no random term."""
    if isinstance(family, Gaussian):
        if design.trials is not None:
            raise MultilevelError("cbind(successes, failures) and trials() describe binomial data: add family='binomial'")
        if family.link.name != "identity":
            raise MultilevelError(f"Gaussian models are fitted with the identity link, not {family.link.name!r}: "
                                  "transform the response instead (e.g. log(y) ~ ...)")
        return
    if design.se is not None:
        raise MultilevelError("se() in the response is for Gaussian models with known standard errors")
    if design.trials is not None and not isinstance(family, Binomial):
        raise MultilevelError(f"cbind(successes, failures) and trials() describe binomial data, not {family.name}: use "
                              "family='binomial' (or model the counts themselves, e.g. successes ~ ... + offset=log(trials))")
    if not design.blocks:
        raise MultilevelError("the formula has no random term such as '(1 | group)': this is a GLM, not a mixed model")
    family.check_response(design.y, design.family_weights)


def explain_failure(design: Design, family: Family) -> str:
    """What makes PIRLS diverge, in words: fixed-effect columns that separate the outcome (their estimate runs to
    infinity) and groups whose responses all sit on the boundary (zero counts; all failures or all successes)."""
    y, found = design.y, []
    edges = (0.0, 1.0) if isinstance(family, Binomial) else (0.0,)
    for name, x in zip(design.fixed_names, design.X.T):
        if np.ptp(x) == 0:
            continue
        binary = bool(np.all((x == 0) | (x == 1)))
        hits = [(v, edge) for v in (1, 0) for edge in edges if binary and np.all(y[x == v] == edge)]
        if hits:
            found.append(f"every row where '{name}' is {hits[0][0]} has response {hits[0][1]:g}")
        if not binary and isinstance(family, Binomial) and np.all((y == 0) | (y == 1)) and 0 < y.sum() < len(y):
            lo, hi = x[y == 0], x[y == 1]
            if lo.max() < hi.min() or hi.max() < lo.min():
                found.append(f"'{name}' separates the outcome completely (a threshold on it predicts every response)")
    message = ""
    if found:
        message += ("complete separation: " + "; ".join(found) + ". The coefficients of those columns run to infinity: "
                    "drop the column or recode it (merge the level with another). ")
    for block in design.blocks:
        for edge in edges:
            at_edge = np.bincount(block.codes, y == edge, block.m) == np.bincount(block.codes, minlength=block.m)
            if at_edge.any():
                levels = [str(v) for v in np.asarray(block.levels)[at_edge]]
                message += (f"{len(levels)} of {block.m} '{block.group}' groups have only responses {edge:g} "
                            f"({', '.join(levels[:8])}{' ...' if len(levels) > 8 else ''}). ")
    counts = y * design.family_weights if isinstance(family, Binomial) and design.family_weights is not None else y
    if np.max(counts, initial=0.0) >= LARGE_COUNT:
        message += (f"The counts reach {np.max(counts):.3g}: weights this large leave rounding noise in the Newton steps "
                    "of penalised IRLS above its stop (docs/limitations.md); a Gaussian model of log counts avoids it "
                    "(with counts this large it is close to the Poisson's). ")
    return message


def check_separating_groups(design: Design, family: Family) -> None:
    """Refuse a binomial model whose every level of a term with an intercept has all its responses 0 or all 1: the
    groups separate the outcome and the likelihood rises without bound as that term's SD grows (a fit stops where
    the optimiser gives up: an SD of 59 on the logit scale, said nowhere)."""
    if not isinstance(family, Binomial):
        return
    y = design.y
    for block in design.blocks:
        if "(Intercept)" not in block.coef_names:
            continue
        n = np.bincount(block.codes, minlength=block.m)
        edge = [np.bincount(block.codes, y == v, block.m) == n for v in (0.0, 1.0)]
        if np.all(edge[0] | edge[1]) and edge[0].any() and edge[1].any():
            raise MultilevelError(
                f"every level of '{block.group}' has responses all 0 or all 1 ({int(edge[0].sum())} levels all 0, "
                f"{int(edge[1].sum())} all 1): the groups separate the outcome, so the likelihood rises without bound as "
                f"the SD of {block.term} grows and there is no maximum-likelihood fit. Model the groups as a fixed effect "
                "only if other rows inform them, or use model.sample(), whose prior keeps the SD finite"
            )


def held_design(design: Design) -> tuple[Design, Scaling]:
    """The design as PIRLS holds it (`Scaling`, as the LMM's cross-products: columns far from zero centred, products
    formed of centred parents, spreads scaled by powers of two; a random slope's far covariate centred in its term),
    with that `Scaling`; the design as given (an identity scaling) when no column needs it, as is usual."""
    held = design_scaling(design, with_response=False)
    if not (np.any(held.centre) or held.random_held or np.any(np.abs(np.log2(held.scale)) > SPREAD_BITS)):
        return design, Scaling.identity(design.p)
    X = held.apply(np.column_stack([design.X, np.zeros(design.nobs)]))[:, :-1]
    return replace(design, X=X, blocks=held_blocks(design, held)), held


# ---------------------------------------------------------------------- objective
class GlmmObjective:
    """-2 log-likelihood of one parameter vector x = (theta, gamma, [log NB size]) with beta = beta0 + J gamma, of the
    columns as `held` holds them (PIRLS's design)."""

    def __init__(self, pirls: Pirls, n_agq: int, estimate_size: bool, held: Scaling | None = None):
        self.pirls, self.n_agq, self.estimate_size = pirls, n_agq, estimate_size
        self.held = Scaling.identity(pirls.design.p) if held is None else held
        self.n_theta = sum(sl.stop - sl.start for sl in pirls.theta_slices)
        self.beta0 = np.zeros(pirls.design.p)
        self.J = np.eye(pirls.design.p)
        self.scalar = ScalarPirls(pirls) if ScalarPirls.applies(pirls.design) else None
        self.terms = None  # the Laplace solver with a gradient for several scalar terms or terms with a vector among them
        if self.scalar is None and n_agq == 1 and ScalarTermsGradient.applies(pirls.design):
            self.terms = ScalarTermsGradient(pirls)
        elif n_agq == 1 and VectorTermGradient.applies(pirls.design):
            self.terms = VectorTermGradient(pirls)
        self._last: list = []  # the last two (x, value, gradient): the optimiser's best point is the Hessian's, though the
        # bounds' check (`optimize.lbfgsb`) may have probed another since

    @property
    def has_gradient(self) -> bool:
        """Whether `value_and_gradient` exists: one scalar term (Laplace or quadrature), or (Laplace) several scalar terms
        or any terms with a vector among them whose dense part fits in memory (`ScalarTermsGradient.applies`,
        `VectorTermGradient.applies`)."""
        return (self.scalar is not None and self.n_agq >= 1) or self.terms is not None

    def whiten(self, beta0: np.ndarray, precision_factor: np.ndarray) -> None:
        """beta = beta0 + L'^-1 gamma, L the lower Cholesky factor of beta's information (cov(gamma) ~ I)."""
        self.beta0 = beta0.copy()
        self.J = sla.solve_triangular(precision_factor.T, np.eye(len(beta0)), lower=False, check_finite=False)
        self._last = []

    def split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, Family]:
        theta = x[: self.n_theta]
        gamma = x[self.n_theta : self.n_theta + self.pirls.design.p]
        return theta, self.beta0 + self.J @ gamma, self.family(x)

    def family(self, x: np.ndarray) -> Family:
        fam = self.pirls.family
        return fam.with_dispersion(float(np.exp(x[-1]))) if self.estimate_size else fam

    @np.errstate(over="ignore", invalid="ignore")  # exp(eta) overflowing at a far point: a failure PIRLS reports
    def stage1(self, x: np.ndarray) -> float:
        """nAGQ = 0: x = (theta, [log size]), beta inside PIRLS."""
        fam = self.family(x)
        try:
            if self.scalar is None:
                return self.from_zero_if_failed(lambda: self.pirls.mode(x[: self.n_theta], None, fam)).laplace
            return self.scalar.mode(float(x[0]), None, fam).laplace
        except MultilevelError:
            return np.inf

    def joint_start(self, x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """At x = (theta, [log size]) with beta found with the modes (objectives with a gradient only): the Laplace
        value, beta and the lower Cholesky factor of its information (for `whiten`)."""
        fam = self.family(x)
        mode = self._solver_mode(x[: self.n_theta], None, fam)
        return mode.laplace, mode.beta, self._solver().beta_precision_factor(mode, fam)

    def beta_precision_factor(self, theta: np.ndarray, beta: np.ndarray, family: Family) -> np.ndarray:
        """The lower Cholesky factor of beta's information given theta at the modes (objectives with a gradient)."""
        return self._solver().beta_precision_factor(self._solver_mode(theta, beta, family), family)

    def _solver(self):
        return self.terms if self.terms is not None else self.scalar

    def _solver_mode(self, theta: np.ndarray, beta: np.ndarray | None, family: Family, tol: float = STEP_TOL):
        if self.terms is not None:
            return self.from_zero_if_failed(lambda: self.terms.mode(theta, beta, family, tol))
        return self.from_zero_if_failed(lambda: self.scalar.mode(float(theta[0]), beta, family, tol))

    def from_zero_if_failed(self, solve):
        """solve() (PIRLS from the last modes, and beta's where found with them); where it fails, once more from modes 0
        and glm's beta (lme4's start): the last ones, of a point far off (a line search's trial), can start PIRLS where
        its weights overflow. Where both fail, the last ones are kept for the next start. Overflow at a far trial point
        (weights exp(eta)) is such a failure, judged by the solver (a system not positive definite), not numpy's
        warning."""
        pirls = self.pirls
        last = ([u.copy() for u in pirls.u], pirls.beta.copy())
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                return solve()
            except MultilevelError:
                pass
            pirls.u, pirls.beta = [np.zeros_like(u) for u in last[0]], pirls.beta_start.copy()
            try:
                return solve()
            except MultilevelError:
                pirls.u, pirls.beta = last
                raise

    def final_mode(self, theta: np.ndarray, beta: np.ndarray, family: Family) -> Mode:
        """The modes at the optimum as a `Mode`: by the objective's own solver where it has one (the engine is then
        built only if a result asks for it), else by the engine's PIRLS."""
        if not self.has_gradient:
            return self.from_zero_if_failed(lambda: self.pirls.mode(theta, beta, family))
        try:  # modes exact to rounding, whatever the start (a fit and its saved copy agree)
            mode = self._solver_mode(theta, beta, family, FINAL_STEP_TOL)
        except MultilevelError:
            mode = self._solver_mode(theta, beta, family)
        return self.pirls.settled(theta, beta, self.pirls.u, mode.eta, mode.minus2_cond_loglik, family)

    def held_beta_covariance(self, mode: Mode, family: Family) -> np.ndarray:
        """Covariance of the held columns' beta-hat from the PIRLS information given theta at `mode`: by the
        vectorised PIRLS where the objective has one (its modes start where `mode`'s are), else the engine's."""
        if self.has_gradient:
            inv = np.linalg.inv(self.beta_precision_factor(mode.theta, mode.beta, family))
        else:
            pirls = self.pirls
            engine = pirls.engine(mode.eta, pirls.offset, family, pirls.determinant_kind(family), True)
            inv = engine.beta_covariance_factor(engine.factor(mode.theta))
        return inv.T @ inv

    def __call__(self, x: np.ndarray) -> float:
        return self.deviance(*self.split(x))

    @np.errstate(over="ignore", invalid="ignore")  # as in `from_zero_if_failed`: the one scalar term's solver too
    def deviance(self, theta: np.ndarray, beta: np.ndarray, fam: Family) -> float:
        """-2 log-likelihood (Laplace or quadrature) at theta and beta; inf where PIRLS fails."""
        try:
            if self.terms is not None:
                return self.from_zero_if_failed(lambda: self.terms.laplace(theta, beta, fam))
            if self.scalar is None:
                return self.from_zero_if_failed(lambda: self.pirls.mode(theta, beta, fam)).laplace
            mode = self.scalar.mode(float(theta[0]), beta, fam)
        except MultilevelError:
            return np.inf
        return mode.laplace if self.n_agq == 1 else self.scalar.agq(mode, fam, self.n_agq)

    def value_and_gradient(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """The objective and its gradient in x = (theta, gamma, [log size]) (the last two points' are kept)."""
        for last, value, grad in self._last:
            if np.array_equal(last, x):
                return value, grad.copy()
        value, grad = self._value_and_gradient(x)
        self._last = [(np.array(x, dtype=float), value, grad.copy())] + self._last[:1]
        return value, grad

    @np.errstate(over="ignore", invalid="ignore")  # as in `from_zero_if_failed`: the one scalar term's solver too
    def _value_and_gradient(self, x: np.ndarray, tol: float = STEP_TOL) -> tuple[float, np.ndarray]:
        """`value_and_gradient` uncached, PIRLS run to the step `tol`."""
        theta, beta, fam = self.split(x)
        try:
            if self.scalar is not None:
                value, d_theta, d_beta, d_size = self.scalar.gradient(float(theta[0]), beta, fam, self.n_agq,
                                                                      self.estimate_size, tol)
            else:
                value, d_theta, d_beta, d_size = self.from_zero_if_failed(
                    lambda: self.terms.gradient(theta, beta, fam, self.estimate_size, tol))
        except MultilevelError:
            return np.inf, np.zeros_like(x)
        return value, np.concatenate([np.atleast_1d(d_theta), self.J.T @ d_beta, [d_size] if self.estimate_size else []])

    def exact_gradient(self, x: np.ndarray) -> np.ndarray:
        """The gradient with PIRLS run to FINAL_STEP_TOL (not cached), for the Hessian's differences: at STEP_TOL it
        moves ~1e-7 with the modes' start, which forward differences of 3e-5 made SEs 1e-3 off (a Poisson random slope;
        5e-2 for a binomial with crossed terms). Where PIRLS cannot get there (a rounding floor), at STEP_TOL."""
        value, grad = self._value_and_gradient(x, FINAL_STEP_TOL)
        return grad if np.isfinite(value) else self._value_and_gradient(x)[1]


# ---------------------------------------------------------------------- fitting
def fit_glmm(model, nAGQ: int = 1, information: str = "observed", warn: bool = True) -> GlmmFit:
    """Maximum-likelihood fit of a GLMM: Laplace (nAGQ = 1, default), adaptive quadrature (nAGQ > 1, one
    scalar random-effect term) or lme4's fast nAGQ = 0. `information` picks the Laplace log-determinant for
    non-canonical links: "observed" (the Laplace approximation proper, glmmTMB) or "expected" (lme4). With
    ``warn=False`` the warnings are only kept in ``fit.warnings`` (refits in a loop)."""
    design, family = model.design, model.family
    n_agq = _check_nagq(nAGQ, design)
    check_separating_groups(design, family)
    held_rows, held = held_design(design)
    pirls = Pirls(held_rows, family, information)
    estimate_size = family.has_dispersion and family.dispersion is None
    objective = GlmmObjective(pirls, n_agq, estimate_size, held)
    start = np.concatenate([_theta_start(pirls), [_log_size_start(objective)] if estimate_size else []])
    lower1 = np.concatenate([_theta_lower(pirls), [-np.inf] if estimate_size else []])
    try:
        if objective.has_gradient:  # a gradient method needs no better start than lme4's: stage 1 only whitens
            value1, beta1, rx = objective.joint_start(start)
            stage1 = OptimumInfo(start, value1, 1, "the start")
        else:
            stage1 = bobyqa(objective.stage1, start, lower1, polish=n_agq == 0)  # else only stage 2's start
            mode1 = objective.from_zero_if_failed(
                lambda: pirls.mode(stage1.x[: objective.n_theta], None, objective.family(stage1.x)))
            beta1, rx = mode1.beta, mode1.engine.beta_precision_factor(mode1.factor)
    except MultilevelError as exc:
        raise MultilevelError(f"{explain_failure(design, family)}({exc})") from None
    if n_agq == 0:
        return _fit_at(model, objective, stage1, mode1, None, mode1.laplace, warn)
    objective.whiten(beta1, rx)
    x0 = np.concatenate([stage1.x[: objective.n_theta], np.zeros(design.p), stage1.x[objective.n_theta :]])
    lower = np.concatenate([_theta_lower(pirls), np.full(design.p + estimate_size, -np.inf)])
    info = _gradient_search(objective, x0, lower) if objective.has_gradient else bobyqa(objective, x0, lower, polish=False)
    hessian, far = _final_hessian(objective, info, lower)
    if far:  # the optimiser stopped short of the optimum: once more from the Newton step
        again = (_gradient_search(objective, info.x, lower) if objective.has_gradient
                 else bobyqa(objective, info.x, lower))
        info = replace(again, evaluations=info.evaluations + again.evaluations)
        hessian, _ = _final_hessian(objective, info, lower)
    finite_difference_checks(objective, info, lower)
    theta, beta, fam = objective.split(info.x)
    mode = objective.final_mode(theta, beta, fam)
    value = float(info.fun) if n_agq > 1 or objective.has_gradient else mode.laplace
    return _fit_at(model, objective, info, mode, hessian, value, warn)


def _gradient_search(objective: GlmmObjective, x0: np.ndarray, lower: np.ndarray) -> OptimumInfo:
    """Stage 2 with the exact gradient: L-BFGS-B from x0 (resumed off a variance's bound 0 it should leave), and again
    with a relative factor's column sign flipped where its diagonal is stuck at 0 (the lower value kept)."""
    scale = np.concatenate([np.full(objective.n_theta, THETA_SCALE), np.ones(len(x0) - objective.n_theta)])

    def search(start):
        return lbfgsb(objective.value_and_gradient, objective, start, lower, polish=False, ftol=STAGE2_FTOL,
                      gtol=STAGE2_GTOL, scale=scale)

    info = search(x0)
    for restart in (_flipped_columns, _correlated_off_bound):  # the same covariance with a column's sign flipped; a
        start = restart(objective.pirls, info.x)  # correlation of +/-1 left (its boundary can hold a worse optimum)
        if start is not None:
            again = search(start)
            best = again if again.fun < info.fun else info
            info = OptimumInfo(best.x, best.fun, info.evaluations + again.evaluations, best.message)
    return info


def _fit_at(model, objective: GlmmObjective, info: OptimumInfo, mode: Mode, hessian: np.ndarray | None, value: float,
            warn: bool) -> GlmmFit:
    """The fit at the optimum: covariances of the estimates (Hessian-based and PIRLS-based; of the user's columns) and
    the warnings."""
    pirls, p, n_theta = objective.pirls, model.design.p, objective.n_theta
    family = objective.family(info.x)
    cov, vcov, log_size_se = None, None, np.nan  # no Hessian (nAGQ = 0): the PIRLS-based covariance, made by the fit
    if hessian is not None:
        lower = np.concatenate([_theta_lower(pirls), np.full(len(info.x) - n_theta, -np.inf)])
        idx = np.flatnonzero(free_coordinates(info.x, lower))
        cov = np.full(hessian.shape, np.nan)
        cov[np.ix_(idx, idx)] = 2.0 * np.linalg.inv(hessian[np.ix_(idx, idx)])
        held_vcov = objective.J @ cov[n_theta : n_theta + p, n_theta : n_theta + p] @ objective.J.T
        vcov = objective.held.coefficient_covariance(held_vcov) if cholesky_or_none(held_vcov) is not None else None
        if objective.estimate_size and cov[-1, -1] > 0:
            log_size_se = float(np.sqrt(cov[-1, -1]))
    messages = list(info.warnings) + [precision_message(c) for c in objective.held.lost]
    if hessian is not None and vcov is None:
        messages.append("the covariance of the fixed effects from the Hessian is not positive definite: their standard "
                        "errors are the PIRLS-based ones (vcov_rx), as lme4 falls back to; simplify the model")
    messages += far_covariate_messages(model.design.blocks, objective.held)
    boundary = boundary_parameters(model.design.blocks, mode.T)
    if boundary:
        messages.append(f"boundary (singular) fit: {'; '.join(boundary)}. Simplify the random effects (drop that term, "
                        "or its correlation with '||')")
    if warn:
        emit(messages)
    n_params = p + n_theta + int(objective.estimate_size)
    return GlmmFit(model, family, info, mode, objective, value, n_params, vcov, cov, log_size_se, messages)


def restore_glmm(model, n_agq: int, information: str, theta: np.ndarray, beta: np.ndarray, size: float | None,
                 info: OptimumInfo, value: float, vcov: np.ndarray, parameter_covariance: np.ndarray | None,
                 log_size_se: float, held_beta: np.ndarray | None = None) -> GlmmFit:
    """A saved GLMM fit at its stored parameters (size: an estimated NB size; theta as the fit holds its terms, beta
    the user's, `held_beta` the held columns' (files before it: mapped from beta, which loses the digits a predictor
    far from zero costs)): modes recomputed by PIRLS, the Hessian-based covariances as stored, nothing re-optimised."""
    held_rows, held = held_design(model.design)
    pirls = Pirls(held_rows, model.family, information)
    objective = GlmmObjective(pirls, _check_nagq(n_agq, model.design), size is not None, held)
    family = model.family if size is None else model.family.with_dispersion(size)
    mode = objective.final_mode(theta, held.held_coefficients(beta) if held_beta is None else held_beta, family)
    n_params = model.design.p + objective.n_theta + int(objective.estimate_size)
    return GlmmFit(model, family, info, mode, objective, value, n_params, vcov, parameter_covariance, log_size_se, [])


def _check_nagq(nAGQ, design: Design) -> int:
    """nAGQ as a whole number from 0 to MAX_NAGQ (lme4's limit; with 400 nodes the weights underflow to an infinite
    deviance), refused by name otherwise."""
    try:
        n = int(nAGQ)
    except (TypeError, ValueError, OverflowError):  # NaN, inf, text
        n = None
    if n is None or n != nAGQ or not 0 <= n <= MAX_NAGQ:
        raise MultilevelError(f"nAGQ must be a whole number >= 0 and at most {MAX_NAGQ} (as in lme4), not {nAGQ!r}")
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


def _flipped_columns(pirls: Pirls, x: np.ndarray) -> np.ndarray | None:
    """x with the entries below the diagonal negated in every relative-factor column whose diagonal is 0 (T T', the
    covariance, unchanged; the bound T_jj >= 0 can hold a gradient method on the wrong sign); None if there are none."""
    out, start = np.array(x, dtype=float), 0
    for k in pirls.ks:
        for j in range(k):
            column = slice(start, start + k - j)  # T[j:, j], the diagonal first
            if out[column.start] == 0.0 and np.any(out[column.start + 1 : column.stop] != 0.0):
                out[column.start + 1 : column.stop] *= -1.0
            start = column.stop
    return None if np.array_equal(out, x) else out


def _correlated_off_bound(pirls: Pirls, x: np.ndarray) -> np.ndarray | None:
    """x with every relative factor's diagonal T_jj (j > 0) moved OFF_BOUND_PROBE off its bound 0 where row j has an
    entry left of it (effect j perfectly correlated with those before it); None if there are none."""
    out, start = np.array(x, dtype=float), 0
    for k in pirls.ks:
        index = tri_index(k)
        T = theta_to_T(x[start : start + len(index)], k)
        for j in range(1, k):
            if T[j, j] == 0.0 and np.any(T[j, :j] != 0.0):
                out[start + index.index((j, j))] = OFF_BOUND_PROBE
        start += len(index)
    return None if np.array_equal(out, x) else out


def _log_size_start(objective: GlmmObjective) -> float:
    """A moment estimate of the negative-binomial size from a Poisson fit of the fixed part (kept in [0.01, 1000])."""
    pirls, theta = objective.pirls, np.zeros(objective.n_theta)
    mode = objective._solver_mode(theta, None, Poisson()) if objective.has_gradient else pirls.mode(theta, None, Poisson())
    mu = np.exp(mode.eta)
    excess = np.sum((pirls.y - mu) ** 2 - mu)
    size = np.sum(mu**2) / excess if excess > 0 else 1000.0
    pirls.u = [np.zeros_like(u) for u in pirls.u]
    return float(np.log(np.clip(size, 0.01, 1000.0)))


def _final_hessian(objective: GlmmObjective, info: OptimumInfo, lower: np.ndarray) -> tuple[np.ndarray, bool]:
    """Central-difference Hessian of -2 log L at the optimum (all free parameters), and whether the optimum is
    still far: a last Newton step is taken when it lowers the objective, and 'far' if it is longer than NEWTON_TRUST."""
    free = free_coordinates(info.x, lower)
    if objective.has_gradient:
        gradient = objective.exact_gradient
        exact = objective.pirls.family.exact_information_slope  # the gradient exact to rounding
        if exact:
            grad, hess = hessian_from_gradient(gradient, info.x, free, h=FORWARD_HESSIAN_STEP, forward=True)
        if not exact or _nearly_singular(hess[np.ix_(free, free)]):  # central: ~1e-6, and tells singularity apart
            grad, hess = hessian_from_gradient(gradient, info.x, free, h=GRADIENT_HESSIAN_STEP)
    else:
        objective(info.x)
        pirls = objective.pirls
        u, beta = [x.copy() for x in pirls.u], pirls.beta.copy()

        def from_optimum(x):  # every evaluation starts PIRLS from the optimum's modes: a smooth function for differences
            pirls.u, pirls.beta = [a.copy() for a in u], beta.copy()
            return objective(x)

        grad, hess = gradient_hessian(from_optimum, info.x, free, h=HESSIAN_STEP, f0=info.fun, paired=True)
    idx = np.flatnonzero(free)
    try:
        step = -np.linalg.solve(hess[np.ix_(idx, idx)], grad[idx])
    except np.linalg.LinAlgError:
        return hess, False
    info.gradient, info.hessian, info.checked_at = grad, hess, info.x.copy()
    trial = info.x.copy()
    trial[idx] += step
    trial = np.maximum(trial, lower)
    value, trial_gradient = objective.value_and_gradient(trial) if objective.has_gradient else (objective(trial), None)
    if value >= info.fun:
        return hess, False
    info.x, info.fun = trial, value
    far = bool(np.max(np.abs(step)) > NEWTON_TRUST)
    if not far:  # the convergence check reads the gradient where the fit now is, not where the optimiser stopped
        info.gradient = trial_gradient if objective.has_gradient else _central_gradient(from_optimum, trial, free)
        info.checked_at = trial.copy()
    return hess, far


def _central_gradient(fun, x: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Central differences of fun at x over the free coordinates (the final Hessian's relative step)."""
    grad = np.zeros(len(x))
    for a in np.flatnonzero(free):
        step = np.zeros(len(x))
        step[a] = HESSIAN_STEP * max(abs(x[a]), 0.1)
        grad[a] = (fun(x + step) - fun(x - step)) / (2 * step[a])
    return grad


def _nearly_singular(hess: np.ndarray) -> bool:
    """Whether the symmetric matrix scaled to a unit diagonal has its smallest eigenvalue below NEARLY_SINGULAR times
    its largest (or a diagonal element not positive): the coordinates' own scales (toenail's, whitened far from the
    optimum) do not count, a direction the data cannot tell apart does."""
    if hess.size == 0:
        return False
    diagonal = np.diag(hess)
    if not np.all(diagonal > 0):
        return True
    eigenvalues = np.linalg.eigvalsh(hess / np.sqrt(np.outer(diagonal, diagonal)))
    return bool(eigenvalues[0] <= NEARLY_SINGULAR * abs(eigenvalues[-1]))
