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


def uncentre(names: list[str], centred_names: list[str], beta_c: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Draws (..., p) of the centred design's coefficients (intercept last) in the user's column order."""
    beta = np.empty_like(beta_c)
    for j, name in enumerate(centred_names):
        beta[..., names.index(name)] = beta_c[..., j]
    if "(Intercept)" in names:
        beta[..., names.index("(Intercept)")] = beta_c[..., -1] - beta_c[..., :-1] @ means
    return beta
