"""Centring of the fixed-effect columns for the samplers, and its exact inverse.

brms samples the intercept of centred predictors (nearly independent of the slopes); the samplers do the
same: non-intercept columns centred and the intercept column moved last. A product column whose factors lie far
from zero (x:w with x + 1e9) is first formed of its centred factors, as the frequentist fit holds it
(`scaling.product_columns`): centred alone it would be nearly a multiple of w. `uncentre` maps draws of those
coefficients back to the user's columns: beta = A beta_c for the centred columns X_c = X A (without products, the
slopes are unchanged and the intercept is alpha - slopes . means).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .design import Design
from .scaling import Scaling, column_centres, held_products, product_columns


def sampler_columns(X: np.ndarray, names: list[str], informative=frozenset()) -> Scaling:
    """The samplers' columns as a `Scaling` (scale 1): every column but the intercept centred at its mean, products
    with a factor far from zero formed of the centred factors first, unless a factor's coefficient has an
    informative prior (`informative`: names), which the product's coefficient would otherwise mix in."""
    p, i0 = X.shape[1], names.index("(Intercept)")
    unit = np.eye(p)[i0]
    centre = np.where(unit == 0, X.mean(axis=0), 0.0)
    products = tuple(pr for pr in product_columns(X, names, column_centres(X, unit), unit)
                     if not any(names[j] in informative for j in pr[1]))
    if products:  # a product's centre: the mean of the product of its centred factors
        held = X.copy()
        held_products(held, centre, products)
        centre = np.where(unit == 0, held.mean(axis=0), 0.0)
    return Scaling(np.append(centre, 0.0), np.ones(p + 1), unit, products=products)


def centred_design(design: Design, informative=frozenset()) -> tuple[Design, Scaling, bool]:
    """The design in the samplers' columns (`sampler_columns`), the intercept column moved last; with the
    `Scaling` that makes them and whether there is an intercept (without one, the columns as given)."""
    names = design.fixed_names
    if "(Intercept)" not in names:
        return design, Scaling.identity(len(names)), False
    columns = sampler_columns(design.X, names, informative)
    X = columns.apply(np.column_stack([design.X, np.zeros(design.nobs)]))[:, :-1]
    order = [j for j, n in enumerate(names) if n != "(Intercept)"] + [names.index("(Intercept)")]
    return replace(design, X=X[:, order], fixed_names=[names[j] for j in order]), columns, True


def centred_cross_products(cp, names: list[str], columns: Scaling, y0: float = 0.0):
    """The cross-products of `centred_design`'s columns and y - y0, in the user's units, from sums however they
    are held (data in partitions): [X_c y-y0] = [X y] A = held B^-1 A, so Z'W[X_c y-y0] = Z'W held (B^-1 A), and
    so on. From centred sums, B^-1 A holds only differences of nearby centres: no digits of y + 1e9 are lost."""
    p, i0 = len(names), names.index("(Intercept)")
    order = [j for j in range(p) if j != i0] + [i0, p]
    A = columns.matrix
    A[i0, p] = -y0
    M = cp.held.inverse @ A[:, order]
    return replace(cp, zxy=[z @ M for z in cp.zxy], xy=M.T @ cp.xy @ M, scaling=None)


def uncentre(names: list[str], centred_names: list[str], beta_c: np.ndarray, columns: Scaling,
             y0: float = 0.0) -> np.ndarray:
    """Draws (..., p) of the centred design's coefficients (intercept last; the response less y0) in the user's
    columns: beta = A beta_c, A the map `columns` makes (X_c = X A)."""
    held = np.empty_like(beta_c)
    for j, name in enumerate(centred_names):
        held[..., names.index(name)] = beta_c[..., j]
    p = len(names)
    beta = held @ columns.matrix[:p, :p].T
    if "(Intercept)" in names:
        beta[..., names.index("(Intercept)")] += y0
    return beta
