"""Bound-constrained minimisation of the profiled criterion over theta, and convergence checks.

NLopt's BOBYQA, as lme4 (nloptwrap) and MixedModels.jl use: derivative-free, respects the lower bounds
on the diagonal of each relative factor, and needs ~10-60 evaluations on these models. We run it with
tighter tolerances than lme4's defaults (which stop early, by up to 8.5e-4 on an SD), then check the
gradient and Hessian at the optimum by finite differences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import nlopt
import numpy as np


@dataclass
class OptimumInfo:
    """Where the optimiser stopped and what the checks found there."""

    x: np.ndarray
    fun: float
    evaluations: int
    message: str
    gradient: np.ndarray = field(default_factory=lambda: np.zeros(0))
    hessian: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    warnings: list[str] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return not self.warnings


def bobyqa(fun: Callable[[np.ndarray], float], x0: np.ndarray, lower: np.ndarray) -> OptimumInfo:
    """Minimise fun from x0 subject to x >= lower; keeps the best point even if NLopt stops on round-off."""
    best = {"x": np.array(x0, dtype=float), "f": np.inf, "n": 0}

    def wrapped(x, _grad):
        value = fun(x)
        best["n"] += 1
        if value < best["f"]:
            best["x"], best["f"] = np.array(x), value
        return value if np.isfinite(value) else 1e300

    x = np.array(x0, dtype=float)
    message = "converged"
    for rho in (0.2, 0.02):  # a restart with a smaller trust region polishes the optimum
        opt = nlopt.opt(nlopt.LN_BOBYQA, len(x))
        opt.set_min_objective(wrapped)
        opt.set_lower_bounds(np.where(np.isfinite(lower), lower, -np.inf))
        opt.set_initial_step(rho)
        opt.set_ftol_abs(1e-11)
        opt.set_xtol_abs(1e-9)
        opt.set_maxeval(20000)
        start = np.maximum(best["x"] if np.isfinite(best["f"]) else x, lower)
        try:
            opt.optimize(start)
        except nlopt.RoundoffLimited:
            message = "stopped by round-off (best point kept)"
        except (RuntimeError, ValueError) as exc:  # NLopt failure: report, keep the best point
            message = f"optimiser stopped: {exc}"
    return OptimumInfo(best["x"], float(best["f"]), best["n"], message)


def finite_difference_checks(
    fun: Callable[[np.ndarray], float], info: OptimumInfo, lower: np.ndarray, tol: float = 2e-3
) -> OptimumInfo:
    """Gradient and Hessian at the optimum (interior coordinates); warn as lme4 does when they fail."""
    x = info.x
    free = ~(np.isfinite(lower) & (x - lower < 1e-6))
    grad, hess = gradient_hessian(fun, x, free)
    info.gradient, info.hessian = grad, hess
    idx = np.flatnonzero(free)
    if idx.size == 0:
        return info
    H = hess[np.ix_(idx, idx)]
    g = grad[idx]
    try:
        eig = np.linalg.eigvalsh(H)
    except np.linalg.LinAlgError:
        eig = np.array([np.nan])
    if not np.all(np.isfinite(eig)) or eig.min() <= 0:
        info.warnings.append(
            "the Hessian of the criterion is not positive definite at the optimum: the model is probably "
            "over-parametrised (nearly unidentifiable); simplify the random effects"
        )
        return info
    step = np.abs(np.linalg.solve(H, g))
    if step.max() > tol:
        info.warnings.append(
            f"the fit may not have converged: the scaled gradient at the optimum is {step.max():.2g} "
            f"(tolerance {tol}); try rescaling predictors or simplifying the model"
        )
    return info


def gradient_hessian(fun, x: np.ndarray, free: np.ndarray, h: float = 1e-4):
    """Central finite-difference gradient and Hessian over the free coordinates."""
    n = len(x)
    grad, hess = np.zeros(n), np.zeros((n, n))
    f0 = fun(x)
    steps = h * np.maximum(np.abs(x), 0.1)
    idx = np.flatnonzero(free)
    for a in idx:
        ea = np.zeros(n)
        ea[a] = steps[a]
        fp, fm = fun(x + ea), fun(x - ea)
        grad[a] = (fp - fm) / (2 * steps[a])
        hess[a, a] = (fp - 2 * f0 + fm) / steps[a] ** 2
        for b in idx[idx > a]:
            eb = np.zeros(n)
            eb[b] = steps[b]
            val = (fun(x + ea + eb) - fun(x + ea - eb) - fun(x - ea + eb) + fun(x - ea - eb)) / (4 * steps[a] * steps[b])
            hess[a, b] = hess[b, a] = val
    return grad, hess
