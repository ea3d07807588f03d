"""Frequentist fits (pipeline step 5): ML/REML by minimising the profiled criterion; the values at the
optimum become an `LmmFit`, and the warnings (convergence, boundary) are raised here, once.

>>> import multilevel as mlv
>>> fit = mlv.Model("Reaction ~ Days + (Days | Subject)", mlv.datasets.load("sleepstudy")).fit()
>>> round(fit.objective, 4)
1743.6283
>>> fit.fixed_effects.loc["Days", "estimate"].round(4)
np.float64(10.4673)
"""

from __future__ import annotations

from functools import partial

import numpy as np

from .components import boundary_parameters
from .crossprod import CrossProducts
from .diagnostics import exact_fit_message, weight_scale_message
from .engine import Engine
from .errors import MultilevelError, emit
from .lmm_fit import LmmFit
from .optimize import OptimumInfo, bobyqa, boundary_polish, finite_difference_checks, lbfgsb
from .partitioned import PartitionedDesign
from .scaling import far_covariate_messages, precision_message, unabsorbed_messages

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
    return _theta_from_sweep(coefs, float(np.var(e)))


def moment_start_from(cp: CrossProducts) -> np.ndarray:
    """`moment_start` from the cross-products alone (partitioned data): the same sweep, with each term's
    Z'e updated through the cross blocks instead of the rows, and the residual variance as e'e / n."""
    p, n_terms = cp.p, len(cp.diag)
    beta = np.linalg.lstsq(cp.xy[:p, :p], cp.xy[:p, p], rcond=None)[0] if p else np.zeros(0)
    ze = [z[:, p] - z[:, :p] @ beta for z in cp.zxy]  # Z_i'e for the least-squares residuals e
    ee = cp.yty - 2.0 * beta @ cp.xy[:p, p] + beta @ cp.xy[:p, :p] @ beta
    coefs = []
    for i in range(n_terms):
        szz = cp.diag[i][:, 0, 0]
        coef = np.divide(ze[i], szz, out=np.zeros_like(szz), where=szz > 0)
        ee -= 2.0 * coef @ ze[i] - coef @ (szz * coef)
        for j in range(i + 1, n_terms):
            ze[j] = ze[j] - cp.off[(i, j)].T @ coef
        coefs.append((coef[szz > 0], szz[szz > 0]))
    return _theta_from_sweep(coefs, max(float(ee) / cp.n, 0.0))


def _theta_from_sweep(coefs: list, s2: float) -> np.ndarray:
    """Relative SDs from one sweep's per-group coefficients and residual variance: var(coef) ~ tau^2 +
    s2 / sum(z^2), kept within [0.1, 10] where the criterion has a usable slope."""
    s2 = s2 or 1.0
    tau2 = [float(np.var(coef) - np.mean(s2 / szz)) for coef, szz in coefs]
    return np.clip(np.sqrt(np.maximum(tau2, 0.0) / s2), 0.1, 10.0)


def checked_method(method: str) -> str:
    """'REML' or 'ML' (any case), upper-cased; anything else refused."""
    if str(method).upper() not in ("REML", "ML"):
        raise MultilevelError(f"method must be 'REML' or 'ML', not {method!r}")
    return str(method).upper()


def fit_lmm(model, method: str = "REML", prior: str | None = None, warn: bool = True) -> LmmFit:
    """Fit a linear mixed model by REML or ML, optionally with the zero-avoiding covariance prior; with
    ``warn=False`` the warnings are only kept in ``fit.warnings`` (refits in a loop)."""
    method = checked_method(method)
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
        partitioned = isinstance(model.design, PartitionedDesign)
        start = moment_start_from(model.cross_products) if partitioned else moment_start(model.design)
        info = lbfgsb(partial(_value_and_gradient, engine, reml, prior), objective, start, lower)
    else:
        info = bobyqa(objective, engine.theta_start(), lower)
    info = finite_difference_checks(objective, boundary_polish(objective, info, lower), lower)
    return fit_at(model, method, prior, info, warn)


def fit_at(model, method: str, prior: str | None, info: OptimumInfo, warn: bool = True) -> LmmFit:
    """The fit at the optimiser's theta (``info.x``): sigma, beta and the modes in closed form, the criterion,
    the warnings. Also rebuilds a saved fit from its theta, so both give the same numbers."""
    engine, reml = model.engine, method == "REML"
    factor = engine.factor(info.x)
    if factor is None:
        raise MultilevelError("the fitted model is numerically degenerate (the system is not positive definite)")
    sigma = float(np.sqrt(factor.r2 / (engine.n - engine.p if reml else engine.n)))
    beta, b = engine.solve_held(factor)  # the held columns': LmmFit reports the user's
    objective = engine.criterion(factor, reml)
    penalized = objective + (blme_penalty(engine, info.x) if prior else 0.0)
    in_memory = not isinstance(model.design, PartitionedDesign)  # partitions' weights are not held in memory
    messages = exact_fit_message(sigma, model.design) + (weight_scale_message(model.design) if in_memory else [])
    messages += list(info.warnings)
    messages += [precision_message(c) for c in engine.held.lost] + unabsorbed_messages(engine.held)
    messages += far_covariate_messages(model.design.blocks, engine.held)
    if boundary_parameters(model.design.blocks, factor.T):
        messages.append(singular_message(model.design.blocks, factor.T))
    if warn:
        emit(messages)
    return LmmFit(model, method, prior, info, factor, sigma, beta, b, objective, penalized, messages)


def singular_message(blocks, factors: list[np.ndarray]) -> str:
    """Plain words for a boundary fit: which parameter is on the boundary, what it means, what to do."""
    return (
        f"boundary (singular) fit: {'; '.join(boundary_parameters(blocks, factors))}. The data show no variation of that "
        "effect between groups beyond the residual noise (or two effects that vary together exactly), so the "
        "estimate sits on the edge of what is possible and its uncertainty is not captured by this fit; the "
        "fixed effects remain usable. What to do: simplify the random effects (drop that term, or its "
        "correlation with '||'), or refit with prior='zero-avoiding' (a penalised fit that stays off the "
        "boundary) or model.sample() (full Bayes)."
    )
