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
from .errors import emit
from .scaling import FAR_TRANSFORM, Scaling, column_centres, held_products, product_columns


def sampler_columns(X: np.ndarray, names: list[str], informative=frozenset()) -> Scaling:
    """The samplers' columns as a `Scaling` (scale 1): every column but the intercept centred at its mean, products
    with a factor far from zero formed of the centred factors first, unless a factor's coefficient has an
    informative prior (`informative`: names), which the product's coefficient would otherwise mix in (then said,
    where the factor lies far enough from zero to cost digits: `informative_messages`)."""
    p, i0 = X.shape[1], names.index("(Intercept)")
    unit = np.eye(p)[i0]
    products = product_columns(X, names, column_centres(X, unit), unit)
    emit(informative_messages(products, names, X.mean(axis=0), X.std(axis=0), informative))
    products = kept_products(products, names, informative)
    centre = np.where(unit == 0, X.mean(axis=0), 0.0)
    if products:  # a product's centre: the mean of the product of its centred factors
        held = X.copy()
        held_products(held, centre, products)
        centre = np.where(unit == 0, held.mean(axis=0), 0.0)
    return Scaling(np.append(centre, 0.0), np.ones(p + 1), unit, products=products)


def columns_from_means(names: list[str], means: np.ndarray, sds: np.ndarray, products: tuple,
                       informative=frozenset()) -> Scaling:
    """`sampler_columns` for data known by their sums (partitioned): centres from the columns' means, the products
    the cross-products hold (`Scaling.products`) formed of centred factors unless a factor has an informative prior
    (said as `sampler_columns` says it, from the columns' `sds`); a product's centre, the mean of the product of its
    centred factors, from the means of its expansion's columns (nearby is enough: the map to the user's coefficients
    is exact whatever the centre)."""
    p, i0 = len(names), names.index("(Intercept)")
    unit = np.eye(p)[i0]
    emit(informative_messages(products, names, means, sds, informative))
    products = kept_products(products, names, informative)
    centre = np.where(unit == 0, means, 0.0)
    for k, _, expansion in products:
        centre[k] = sum(np.prod(-centre[list(left)]) * (1.0 if row < 0 else means[row]) for row, left in expansion)
    return Scaling(np.append(centre, 0.0), np.ones(p + 1), unit, products=products)


def product_centres_from_sums(columns: Scaling, cp, intercept: int) -> Scaling:
    """`columns` with each product's centre moved to the mean of the product of its centred factors as the held
    cross-products give it (`cp.xy`'s intercept row, mapped exactly by `Scaling.map_to`): from the user's column means
    it is a difference of numbers near c^2 (x + 1e9: off by ~100, which moves the intercept's prior location)."""
    if not columns.products:
        return columns
    means = cp.xy[intercept] / cp.xy[intercept, intercept] @ cp.held.map_to(columns)  # of the samplers' columns
    centre = columns.centre.copy()
    for k, _, _ in columns.products:
        centre[k] += means[k]
    return replace(columns, centre=centre)


def kept_products(products: tuple, names: list[str], informative) -> tuple:
    """The products none of whose factors has an informative prior."""
    return tuple(pr for pr in products if not any(names[j] in informative for j in pr[1]))


def informative_messages(products: tuple, names: list[str], mean: np.ndarray, sd: np.ndarray, informative) -> list[str]:
    """Plain words for a product kept as given because a factor's coefficient has an informative prior, where a factor
    lies more than FAR_TRANSFORM SDs from zero (the product, centred alone, is then nearly a multiple of the other
    factor and its draws lose digits)."""
    out = []
    for k, parents, _ in products:
        held = [names[j] for j in parents if names[j] in informative]
        far = [j for j in parents if sd[j] > 0 and abs(mean[j]) > FAR_TRANSFORM * sd[j]]
        if held and far:
            x = names[far[0]]
            out.append(
                f"the informative prior on {', '.join('b_' + n for n in held)} keeps the product '{names[k]}' formed of the uncentred '{x}' "
                f"(averaging {mean[far[0]]:.3g}, more than {FAR_TRANSFORM:g} times its spread from zero): centred alone "
                "the product is nearly a multiple of its other factor and the samplers lose digits of its coefficient. "
                f"Centre '{x}' in the data (and move the prior with it) for draws formed of centred factors"
            )
    return out


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
    M = cp.held.map_to(replace(columns, centre=np.append(columns.centre[:-1], y0)))[:, order]  # A[i0, p] = -y0
    return replace(cp, zxy=[z @ M for z in cp.zxy], xy=M.T @ cp.xy @ M, scaling=None)


def uncentre(names: list[str], centred_names: list[str], beta_c: np.ndarray, columns: Scaling,
             y0: float = 0.0) -> np.ndarray:
    """Draws (..., p) of the centred design's coefficients (intercept last; the response less y0) in the user's
    columns: beta = A beta_c, A the map `columns` makes (X_c = X A)."""
    held, _ = held_draws(names, centred_names, beta_c, columns)
    p = len(names)
    beta = held @ columns.matrix[:p, :p].T
    if "(Intercept)" in names:
        beta[..., names.index("(Intercept)")] += y0
    return beta


def held_draws(names: list[str], centred_names: list[str], beta_c: np.ndarray, columns: Scaling,
               y0: float = 0.0) -> tuple[np.ndarray, Scaling]:
    """Draws of the centred design's coefficients in the user's column order, with the `Scaling` that holds the
    columns they multiply (`columns`, the response's centre y0 last): what predictions are formed of
    (`predict.held_predictor`), since X beta of the user's columns loses the digits of a column far from zero."""
    held = np.empty_like(beta_c)
    for j, name in enumerate(centred_names):
        held[..., names.index(name)] = beta_c[..., j]
    return held, replace(columns, centre=np.append(columns.centre[:-1], y0))
