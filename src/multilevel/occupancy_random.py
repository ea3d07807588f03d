"""One scalar random intercept in an occupancy model, b_g ~ N(0, sigma^2) on the psi or p logit of the sites of
group g, integrated out group by group: Newton to each group's mode, then the Laplace approximation (1 node)
or adaptive Gauss-Hermite quadrature (lme4's nAGQ). Sites must be nested in the groups, so the integral factorises.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .occupancy_likelihood import OccupancyArrays, shift_derivatives

NEWTON_TOL = 1e-10
MAX_NEWTON = 50


@dataclass(frozen=True)
class RandomIntercept:
    """The term: which logit it shifts ("psi" or "p"), each site's group code and the number of groups."""

    part: str
    codes: np.ndarray
    m: int


def _group_sums(term: RandomIntercept, values: np.ndarray) -> np.ndarray:
    return np.bincount(term.codes, weights=values, minlength=term.m)


def modes(params: np.ndarray, sigma: float, arrays: OccupancyArrays, term: RandomIntercept):
    """Each group's conditional mode of b and the curvature -h'' there (h: the group's log joint density)."""
    b = np.zeros(term.m)
    for _ in range(MAX_NEWTON):
        _, d1, d2 = shift_derivatives(params, arrays, term.part, b[term.codes])
        grad = _group_sums(term, d1) - b / sigma**2
        curv = 1 / sigma**2 - _group_sums(term, d2)
        step = grad / np.where(curv > 0, curv, np.abs(curv) + 1 / sigma**2)  # ascent even where h is not concave
        b = b + np.clip(step, -1.0, 1.0)
        if np.max(np.abs(grad)) < NEWTON_TOL:
            break
    _, _, d2 = shift_derivatives(params, arrays, term.part, b[term.codes])
    return b, 1 / sigma**2 - _group_sums(term, d2)


def marginal_loglik(params: np.ndarray, sigma: float, arrays: OccupancyArrays, term: RandomIntercept, n_agq: int = 1) -> float:
    """log of the product over groups of the integral of exp(h_g(b)) db, by adaptive Gauss-Hermite quadrature
    with `n_agq` nodes around each mode (1 = Laplace)."""
    mode, curv = modes(params, sigma, arrays, term)
    x, w = np.polynomial.hermite.hermgauss(n_agq)
    scale = np.sqrt(2 / curv)
    parts = []
    for xk, wk in zip(x, w):
        b = mode + scale * xk
        ll = shift_derivatives(params, arrays, term.part, b[term.codes])[0]
        h = _group_sums(term, ll) - b**2 / (2 * sigma**2) - 0.5 * np.log(2 * np.pi * sigma**2)
        parts.append(np.log(wk) + xk**2 + h)
    return float(np.sum(np.log(scale) + np.logaddexp.reduce(np.array(parts), axis=0)))
