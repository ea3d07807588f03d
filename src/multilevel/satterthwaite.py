"""Satterthwaite degrees of freedom for fixed-effect t tests, as lmerTest computes them.

For a coefficient j, df = 2 V_j(p)^2 / (g' A g), where p = (theta, sigma), V_j(p) is the sampling
variance of beta_j as a function of p, g its gradient and A = 2 H^{-1} the asymptotic covariance of p
from the Hessian H of the (REML or ML) deviance -2 log L(theta, sigma). Derivatives by central
differences (lmerTest uses numDeriv); accurate far beyond the 1 % the df are compared at.
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
        RXinv = np.linalg.inv(engine.beta_precision_factor(f))
        return par[-1] ** 2 * np.sum(RXinv**2, axis=0)

    _, H = gradient_hessian(deviance, point, np.ones(len(point), bool))
    try:
        A = 2.0 * np.linalg.inv(H)
    except np.linalg.LinAlgError:
        return np.full(p, np.inf)
    steps = 1e-4 * np.maximum(np.abs(point), 0.1)
    J = np.empty((len(point), p))
    for a in range(len(point)):
        e = np.zeros(len(point))
        e[a] = steps[a]
        J[a] = (beta_variances(point + e) - beta_variances(point - e)) / (2 * steps[a])
    var = beta_variances(point)
    denom = np.einsum("aj,ab,bj->j", J, A, J)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = 2 * var**2 / denom
    return np.where(np.isfinite(df) & (df > 0), df, np.inf)
