"""Satterthwaite degrees of freedom for fixed-effect t tests, as lmerTest computes them.

For a coefficient j, df = 2 V_j(p)^2 / (g' A g), where p = (theta, sigma), V_j(p) is the sampling
variance of beta_j as a function of p, g its gradient and A = 2 H^{-1} the asymptotic covariance of p
from the Hessian H of the (REML or ML) deviance -2 log L(theta, sigma). Derivatives by central differences
with one Richardson extrapolation (as numDeriv, which lmerTest uses): relative steps of 1e-2 and 5e-3 cancel
the h^2 error and are large enough that the criterion's rounding does not show (balanced sleepstudy: 17 to
2e-6, where one step of 1e-4 gave 16.9947).
"""

from __future__ import annotations

import numpy as np

from .optimize import gradient_hessian


def satterthwaite_df(fit) -> np.ndarray:
    """df per fixed effect; inf where the variance parameters' covariance is not available."""
    engine, reml = fit.engine, fit.reml
    point = np.append(fit.theta, fit.sigma)
    p = engine.p

    def deviance(par):
        f = engine.factor(par[:-1])
        if f is None:
            return np.inf
        return -2.0 * engine.loglik_fixed_sigma(f, par[-1], reml)

    def beta_variances(par):
        f = engine.factor(par[:-1])
        RXinv = engine.beta_covariance_factor(f)
        return par[-1] ** 2 * np.sum(RXinv**2, axis=0)

    free = np.ones(len(point), bool)
    H = richardson(lambda h: gradient_hessian(deviance, point, free, h=h)[1])
    try:
        A = 2.0 * np.linalg.inv(H)
    except np.linalg.LinAlgError:
        return np.full(p, np.inf)
    J = richardson(lambda h: central_jacobian(beta_variances, point, h))
    var = beta_variances(point)
    denom = np.einsum("aj,ab,bj->j", J, A, J)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = 2 * var**2 / denom
    return np.where(np.isfinite(df) & (df > 0), df, np.inf)


RICHARDSON_STEP = 1e-2  # relative step of the coarser difference; the finer is half of it


def richardson(difference, h: float = RICHARDSON_STEP):
    """(4 D(h/2) - D(h)) / 3 for a central difference D(h) whose error is c h^2 + O(h^4)."""
    return (4.0 * difference(h / 2) - difference(h)) / 3.0


def central_jacobian(fun, x: np.ndarray, h: float) -> np.ndarray:
    """d fun / d x_a by central differences, one row per coordinate (steps h * max(|x_a|, 0.1))."""
    steps = h * np.maximum(np.abs(x), 0.1)
    rows = []
    for a, step in enumerate(steps):
        e = np.zeros(len(x))
        e[a] = step
        rows.append((fun(x + e) - fun(x - e)) / (2 * step))
    return np.array(rows)
