"""Bound-constrained minimisation of the profiled criterion over theta, and convergence checks.

NLopt's BOBYQA, as lme4 (nloptwrap) and MixedModels.jl use: derivative-free and respects the lower
bounds on the diagonal of each relative factor. It is run only until it is close (relative x-tolerance
1e-3); the last digits come from a Newton step on the finite-difference gradient and Hessian, which the
convergence check (as lme4's: scaled gradient and positive-definite Hessian) needs anyway. Tight BOBYQA
tolerances and a second BOBYQA run cost 1.5-2x more evaluations for the same optimum
(docs/performance.md); the second run is kept for when the Newton step says BOBYQA stopped too early.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import nlopt
import numpy as np

BOBYQA_XTOL_REL = 1e-3  # BOBYQA's stop; the Newton step takes the error from ~1e-3 to ~1e-6 and below
NEWTON_TRUST = 1e-2  # a larger Newton step means BOBYQA stopped far from the optimum: run it again
AT_BOUND = 1e-6  # a coordinate this close to its bound is on it: no derivatives across it
OFF_BOUND_PROBE = 1e-2  # how far inside a coordinate on its bound the slope is read (the KKT check of `lbfgsb`)
MAX_RESTARTS = 3  # L-BFGS-B resumed at most this often off bounds it should leave


@dataclass
class OptimumInfo:
    """Where the optimiser stopped and what the checks found there.

    `gradient` and `hessian` are finite differences at `checked_at`, the point BOBYQA returned; `x` is
    that point after the Newton step from those derivatives (when it lowered the criterion).
    """

    x: np.ndarray
    fun: float
    evaluations: int
    message: str
    gradient: np.ndarray = field(default_factory=lambda: np.zeros(0))
    hessian: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    warnings: list[str] = field(default_factory=list)
    checked_at: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def converged(self) -> bool:
        return not self.warnings


class _Tracked:
    """The objective, counting evaluations and keeping the best point seen."""

    def __init__(self, fun: Callable[[np.ndarray], float], x0: np.ndarray):
        self.fun, self.n = fun, 0
        self.x, self.f = np.array(x0, dtype=float), np.inf

    def __call__(self, x: np.ndarray) -> float:
        value = self.fun(x)
        self.n += 1
        if value < self.f:
            self.x, self.f = np.array(x, dtype=float), value
        return value


def _run_bobyqa(fun: _Tracked, lower: np.ndarray, rho: float) -> str:
    """One BOBYQA run from fun's best point; returns how it stopped."""

    def objective(x, _grad):
        value = fun(x)
        return value if np.isfinite(value) else 1e300

    opt = nlopt.opt(nlopt.LN_BOBYQA, len(fun.x))
    opt.set_min_objective(objective)
    opt.set_lower_bounds(np.where(np.isfinite(lower), lower, -np.inf))
    opt.set_initial_step(rho)
    opt.set_xtol_rel(BOBYQA_XTOL_REL)
    opt.set_maxeval(20000)
    try:
        opt.optimize(np.maximum(fun.x, lower))
    except nlopt.RoundoffLimited:
        return "stopped by round-off (best point kept)"
    except (RuntimeError, ValueError) as exc:  # NLopt failure: report, keep the best point
        return f"optimiser stopped: {exc}"
    return "converged"


def free_coordinates(x: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Coordinates not on their lower bound."""
    return ~(np.isfinite(lower) & (x - lower < AT_BOUND))


def cholesky_or_none(matrix: np.ndarray) -> np.ndarray | None:
    """The lower Cholesky factor of a finite, positive-definite matrix; None for any other."""
    if not np.all(np.isfinite(matrix)):
        return None
    try:
        return np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        return None


def _newton_step(grad: np.ndarray, hess: np.ndarray, free: np.ndarray) -> np.ndarray | None:
    """-H^{-1} g over the free coordinates; None where the Hessian is not positive definite."""
    idx = np.flatnonzero(free)
    step = np.zeros(len(grad))
    if idx.size == 0:
        return step
    H, g = hess[np.ix_(idx, idx)], grad[idx]
    C = cholesky_or_none(H)
    if C is None or not np.all(np.isfinite(g)):
        return None
    step[idx] = -np.linalg.solve(C.T, np.linalg.solve(C, g))
    return step


def _polish(fun: _Tracked, lower: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Derivatives at the best point and one Newton step from it (kept only if it lowers the criterion)."""
    x, f0 = fun.x.copy(), fun.f
    free = free_coordinates(x, lower)
    grad, hess = gradient_hessian(fun, x, free, f0=f0, cheap=True)
    step = _newton_step(grad, hess, free)
    if step is not None and np.any(step):
        fun(np.maximum(x + step, lower))  # _Tracked keeps it if it is better
    return x, grad, hess, step


def bobyqa(fun: Callable[[np.ndarray], float], x0: np.ndarray, lower: np.ndarray, polish: bool = True) -> OptimumInfo:
    """Minimise fun from x0 subject to x >= lower; keeps the best point even if NLopt stops on round-off.
    ``polish=False`` skips the derivatives and Newton step at the end (for callers that take their own)."""
    tracked = _Tracked(fun, x0)
    message = _run_bobyqa(tracked, lower, 0.2)
    if not polish:
        return OptimumInfo(tracked.x, float(tracked.f), tracked.n, message)
    checked_at, grad, hess, step = _polish(tracked, lower)
    if step is None or np.max(np.abs(step), initial=0.0) > NEWTON_TRUST:
        message = _run_bobyqa(tracked, lower, 0.02)  # BOBYQA stopped early, or not near a minimum yet
        checked_at, grad, hess, _ = _polish(tracked, lower)
    return OptimumInfo(tracked.x, float(tracked.f), tracked.n, message, grad, hess, checked_at=checked_at)


NEAR_BOUND = 1e-2  # a bounded coordinate this close to its bound is tried on it (boundary_polish)


def boundary_polish(fun: Callable[[np.ndarray], float], info: OptimumInfo, lower: np.ndarray) -> OptimumInfo:
    """Boundary optima reached exactly: each bounded coordinate within NEAR_BOUND of its bound (and all of them
    together) is put on the bound and the others re-optimised with it held there; the lowest criterion wins.
    An optimiser creeping towards a variance of 0 stops short of it, and the fit is then neither converged nor
    flagged singular; the point on the bound is both."""
    near = np.flatnonzero(np.isfinite(lower) & (info.x > lower) & (info.x - lower < NEAR_BOUND))
    best, evaluations = info, info.evaluations
    for held in [[a] for a in near] + ([list(near)] if len(near) > 1 else []):
        trial = _held_at_bound(fun, best.x, lower, np.asarray(held))
        evaluations += trial.evaluations
        if trial.fun < best.fun:
            best = trial
    if best is info:
        return info
    return OptimumInfo(best.x, best.fun, evaluations, f"{info.message}; polished on the boundary")


def _held_at_bound(fun, x: np.ndarray, lower: np.ndarray, held: np.ndarray) -> OptimumInfo:
    """Minimise over the other coordinates with `held` fixed at their bounds (BOBYQA on the reduced problem)."""
    rest = np.setdiff1d(np.arange(len(x)), held)
    start = x.copy()
    start[held] = lower[held]

    def reduced(z):
        full = start.copy()
        full[rest] = z
        return fun(full)

    if rest.size == 0:
        return OptimumInfo(start, float(fun(start)), 1, "")
    found = bobyqa(reduced, start[rest], lower[rest])
    full = start.copy()
    full[rest] = found.x
    return OptimumInfo(full, found.fun, found.evaluations, found.message)


def lbfgsb(
    fun_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    fun: Callable[[np.ndarray], float],
    x0: np.ndarray,
    lower: np.ndarray,
    polish: bool = True,
    ftol: float = 1e-13,
    gtol: float = 1e-6,
    scale: np.ndarray | None = None,
) -> OptimumInfo:
    """Minimise with an analytic gradient (L-BFGS-B, bounds x >= lower), then the same derivative checks
    (``polish=False``: none, for callers that take their own; L-BFGS-B is resumed off a bound it should leave,
    `_off_bounds`). `ftol`, `gtol`: L-BFGS-B's stopping rules (looser for callers that finish with a Newton step of
    their own). `scale`: L-BFGS-B works in x * scale (its first step has unit length; powers of two change no bit of x).

    Used when the engine has the gradient (scalar terms): it needs 3-5x fewer evaluations than BOBYQA,
    which pays on large models where one evaluation costs tens of milliseconds (docs/performance.md).
    """
    from scipy.optimize import minimize

    tracked = _Tracked(fun, x0)
    calls, failed = [0], [False]
    scale = np.ones(len(x0)) if scale is None else np.asarray(scale, dtype=float)

    def wrapped(y):
        calls[0] += 1
        x = y / scale
        value, grad = fun_and_grad(x)
        if value < tracked.f:
            tracked.x, tracked.f = np.array(x, dtype=float), value
        if not np.isfinite(value) or not np.all(np.isfinite(grad)):
            failed[0] = True
            return 1e300, np.zeros_like(x)
        return value, grad / scale

    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower * scale]

    def search(start):
        failed[0] = False
        result = minimize(wrapped, np.maximum(start, lower) * scale, jac=True, method="L-BFGS-B", bounds=bounds,
                          options={"ftol": ftol, "gtol": gtol, "maxiter": 1000})
        return "converged" if result.success else f"L-BFGS-B: {result.message}"

    message = search(x0)
    if not polish:
        for _ in range(MAX_RESTARTS):
            start = _off_bounds(lambda x: wrapped(x * scale), tracked.x, lower, gtol)
            if start is None and failed[0] and _projected_gradient(wrapped(tracked.x * scale)[1], tracked.x, lower) > gtol:
                start = tracked.x  # a failed evaluation (no slope) cut the line search short: resumed, memory cleared
            if start is None:
                break
            message = search(start)
        return OptimumInfo(tracked.x, float(tracked.f), tracked.n + calls[0], message)
    checked_at, grad, hess, step = _polish(tracked, lower)
    if step is None or np.max(np.abs(step), initial=0.0) > NEWTON_TRUST or _leaves_bound(tracked, lower):
        return bobyqa(fun, tracked.x, lower)  # not at a minimum: derivative-free from here
    return OptimumInfo(tracked.x, float(tracked.f), tracked.n + calls[0], message, grad, hess, checked_at=checked_at)


def _projected_gradient(grad: np.ndarray, x: np.ndarray, lower: np.ndarray) -> float:
    """The largest entry of the gradient projected on the bounds x >= lower (L-BFGS-B's own stopping measure)."""
    return float(np.max(np.abs(np.where(free_coordinates(x, lower), grad, np.minimum(grad, 0.0))), initial=0.0))


def _off_bounds(fun_and_grad, x: np.ndarray, lower: np.ndarray, tol: float) -> np.ndarray | None:
    """x with the coordinates on their bound that should leave it moved OFF_BOUND_PROBE off; None if none should (the
    KKT condition). The criterion is even in a last diagonal element of a relative factor (a scalar term's theta), so
    its slope there is 0 whatever the optimum: the slope a probe's step inside tells which way it curves (theta_j = 0
    is optimal when d/dtheta_j >= 0 there, i.e. when the criterion rises with the variance theta_j^2). A coordinate
    leaves when that slope, as fun_and_grad gives it (the optimiser's coordinates), is below -tol (its own gradient
    tolerance: it would not move for less) at OFF_BOUND_PROBE or, failing that, at a tenth of it (an optimum SD of
    0.004 between them: the slope at 0.01 is up; L-BFGS-B from the near probe stops on its relative-reduction rule in a
    well of depth ~1e-6, short of it, so the start is the root of the slope as a cubic A t + B t^3 through both)."""
    at = np.flatnonzero(~free_coordinates(x, lower))
    if at.size == 0:
        return None
    start, far, near = np.array(x, dtype=float), OFF_BOUND_PROBE, OFF_BOUND_PROBE / 10
    probe = np.array(x, dtype=float)
    probe[at] = lower[at] + far
    slope_far = fun_and_grad(probe)[1][at]
    start[at] = np.where(slope_far < -tol, probe[at], start[at])
    stay = slope_far >= -tol  # an optimum inside the probe: the slope there is up again (the criterion's quartic
    if np.any(stay):  # term), a tenth of the way in still down
        probe = np.array(x, dtype=float)
        probe[at[stay]] = lower[at[stay]] + near
        slope_near = fun_and_grad(probe)[1][at[stay]]
        # the slope s(t) = A t + B t^3 through both probes; its root sqrt(-A / B) is the start (curving up there)
        B = (slope_far[stay] / far - slope_near / near) / (far**2 - near**2)
        A = slope_near / near - B * near**2
        with np.errstate(divide="ignore", invalid="ignore"):
            root = np.clip(np.sqrt(-A / B), near, far)
        root = np.where(np.isfinite(root), root, near)
        start[at[stay]] = np.where(slope_near < -tol, lower[at[stay]] + root, start[at[stay]])
    return None if np.array_equal(start, x) else start


def _leaves_bound(fun: _Tracked, lower: np.ndarray, probe: float = OFF_BOUND_PROBE) -> bool:
    """True if moving a coordinate off its bound lowers the criterion: the even criterion has zero slope at a
    zero diagonal element, so a gradient method can stop there on a maximum along that coordinate."""
    x, f0 = fun.x.copy(), fun.f
    for a in np.flatnonzero(~free_coordinates(x, lower)):
        trial = x.copy()
        trial[a] = lower[a] + probe
        if fun(trial) < f0:
            return True
    return False


def finite_difference_checks(
    fun: Callable[[np.ndarray], float], info: OptimumInfo, lower: np.ndarray, tol: float = 2e-3
) -> OptimumInfo:
    """lme4's checks: positive-definite Hessian and scaled gradient |H^-1 g| < tol; warn when they fail.

    Reuses the derivatives `bobyqa` computed; computes them at `info.x` for an `info` from elsewhere.
    """
    if info.checked_at.size == 0:
        info.checked_at = info.x.copy()
        info.gradient, info.hessian = gradient_hessian(fun, info.x, free_coordinates(info.x, lower), cheap=True)
    free = free_coordinates(info.checked_at, lower)
    if not np.any(free):
        return info
    step = _newton_step(info.gradient, info.hessian, free)
    if step is None:
        info.warnings.append(
            "the Hessian of the criterion is not positive definite at the optimum: the model is probably "
            "over-parametrised (nearly unidentifiable); simplify the random effects"
        )
    elif np.max(np.abs(step)) > tol:
        info.warnings.append(
            f"the fit may not have converged: the scaled gradient at the optimum is {np.max(np.abs(step)):.2g} "
            f"(tolerance {tol}); try rescaling predictors or simplifying the model"
        )
    return info


def hessian_from_gradient(grad_fun, x: np.ndarray, free: np.ndarray, h: float = 1e-3,
                          forward: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The gradient at x and the Hessian over the free coordinates by differences of an exact gradient, symmetrised
    (steps relative as in `gradient_hessian`): central (2 gradients per coordinate, error O(h^2)) or, with
    ``forward=True``, forward (one gradient per coordinate, error O(h): for a small h and a gradient exact to rounding)."""
    n = len(x)
    grad, hess = np.array(grad_fun(x), dtype=float), np.zeros((n, n))
    steps = h * np.maximum(np.abs(x), 0.1)
    idx = np.flatnonzero(free)
    for a in idx:
        ea = np.zeros(n)
        ea[a] = steps[a]
        if forward:
            hess[a, idx] = (np.asarray(grad_fun(x + ea))[idx] - grad[idx]) / steps[a]
        else:
            hess[a, idx] = (np.asarray(grad_fun(x + ea))[idx] - np.asarray(grad_fun(x - ea))[idx]) / (2 * steps[a])
    sub = hess[np.ix_(idx, idx)]
    hess[np.ix_(idx, idx)] = 0.5 * (sub + sub.T)
    grad[~free] = 0.0
    return grad, hess


@np.errstate(invalid="ignore", over="ignore")  # inf - inf where the criterion is infinite: NaN, judged by the checks
def gradient_hessian(fun, x: np.ndarray, free: np.ndarray, h: float = 1e-4, f0: float | None = None, cheap: bool = False,
                     paired: bool = False):
    """Central finite-difference gradient and Hessian over the free coordinates (f0 = fun(x) if known).

    cheap=True takes the mixed second derivatives from one extra point per pair, f(x + e_a + e_b), instead
    of four: error O(h) instead of O(h^2), ample for a Newton step and a convergence check, and 1 + 2n +
    n(n-1)/2 evaluations instead of 1 + 2n + 2n(n-1). paired=True takes them from two, f(x + e_a + e_b) and
    f(x - e_a - e_b), with the single steps already made (Abramowitz & Stegun 25.3.27): still O(h^2), 1 + 2n + n(n-1).
    """
    n = len(x)
    grad, hess = np.zeros(n), np.zeros((n, n))
    f0 = fun(x) if f0 is None else f0
    steps = h * np.maximum(np.abs(x), 0.1)
    idx = np.flatnonzero(free)
    plus, minus = np.zeros(n), np.zeros(n)
    for a in idx:
        ea = np.zeros(n)
        ea[a] = steps[a]
        plus[a], minus[a] = fun(x + ea), fun(x - ea)
        grad[a] = (plus[a] - minus[a]) / (2 * steps[a])
        hess[a, a] = (plus[a] - 2 * f0 + minus[a]) / steps[a] ** 2
    for a in idx:
        ea = np.zeros(n)
        ea[a] = steps[a]
        for b in idx[idx > a]:
            eb = np.zeros(n)
            eb[b] = steps[b]
            if cheap:
                val = (fun(x + ea + eb) - plus[a] - plus[b] + f0) / (steps[a] * steps[b])
            elif paired:
                val = (fun(x + ea + eb) + fun(x - ea - eb) - plus[a] - plus[b] - minus[a] - minus[b] + 2 * f0) / (
                    2 * steps[a] * steps[b])
            else:
                val = (fun(x + ea + eb) - fun(x + ea - eb) - fun(x - ea + eb) + fun(x - ea - eb)) / (4 * steps[a] * steps[b])
            hess[a, b] = hess[b, a] = val
    return grad, hess
