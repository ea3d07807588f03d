"""Centring of the fixed-effect columns for the samplers, and its exact inverse.

brms samples the intercept of centred predictors (nearly independent of the slopes); the samplers do the
same: non-intercept columns centred and the intercept column moved last. `uncentre` maps draws of those
coefficients back to the user's columns: the slopes are unchanged, the intercept is alpha - slopes . means.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .design import Design


def centred_design(design: Design) -> tuple[Design, np.ndarray, bool]:
    """The design with non-intercept columns centred (as brms) and the intercept column moved last."""
    names = design.fixed_names
    intercept = "(Intercept)" in names
    if not intercept:
        return design, np.zeros(len(names)), False
    keep = [j for j, n in enumerate(names) if n != "(Intercept)"]
    Xc = design.X[:, keep]
    means = Xc.mean(axis=0)
    X = np.column_stack([Xc - means, np.ones(design.nobs)])
    return replace(design, X=X, fixed_names=[names[j] for j in keep] + ["(Intercept)"]), means, True


def centred_cross_products(cp, names: list[str], means: np.ndarray, y0: float = 0.0):
    """The cross-products of `centred_design`'s columns and y - y0, in the user's units, from sums however they
    are held (data in partitions): [X_c y-y0] = [X y] A = held B^-1 A, so Z'W[X_c y-y0] = Z'W held (B^-1 A), and
    so on. From centred sums, B^-1 A holds only differences of nearby centres: no digits of y + 1e9 are lost."""
    p, i0 = len(names), names.index("(Intercept)")
    keep = [j for j in range(p) if j != i0]
    A = np.zeros((p + 1, p + 1))
    A[keep, np.arange(p - 1)] = 1.0
    A[i0, : p - 1] = -means
    A[i0, p] = -y0
    A[i0, p - 1] = A[p, p] = 1.0
    M = cp.held.inverse @ A
    return replace(cp, zxy=[z @ M for z in cp.zxy], xy=M.T @ cp.xy @ M, scaling=None)


def uncentre(names: list[str], centred_names: list[str], beta_c: np.ndarray, means: np.ndarray,
             y0: float = 0.0) -> np.ndarray:
    """Draws (..., p) of the centred design's coefficients (intercept last; the response less y0) in the user's
    column order."""
    beta = np.empty_like(beta_c)
    for j, name in enumerate(centred_names):
        beta[..., names.index(name)] = beta_c[..., j]
    if "(Intercept)" in names:
        beta[..., names.index("(Intercept)")] = beta_c[..., -1] - beta_c[..., :-1] @ means + y0
    return beta
