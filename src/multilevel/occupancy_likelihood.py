"""The single-season occupancy likelihood with the latent occupancy summed out (MacKenzie et al. 2002).

Data are held site by visit: `X` (sites x a) the occupancy design, `V` (sites x visits x b) the detection design,
`Y` the detections and `mask` the visits made (1) or not (0, padding). Site i contributes
log(psi_i prod_j p_ij^y (1 - p_ij)^(1 - y) + (1 - psi_i) 1[no detection at i]). One function serves NumPy (the
ML fit) and JAX (NUTS): `xp` is the array module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OccupancyArrays:
    """A model's numbers site by visit (see the module docstring); `detected` marks sites with a detection."""

    X: np.ndarray
    V: np.ndarray
    Y: np.ndarray
    mask: np.ndarray

    @property
    def detected(self) -> np.ndarray:
        return (self.Y * self.mask).max(axis=1) > 0

    @property
    def a(self) -> int:
        return self.X.shape[1]


def _log_sigmoid(xp, eta):
    return -xp.logaddexp(0.0, -eta)


def site_terms(xp, params, X, V, Y, mask):
    """Per site: log(psi * P(y | z = 1)) and log(P(z = 0, y)) (minus infinity where something was detected)."""
    a = X.shape[1]
    eta_psi, eta_p = X @ params[:a], V @ params[a:]
    detection = xp.sum(mask * (Y * _log_sigmoid(xp, eta_p) + (1 - Y) * _log_sigmoid(xp, -eta_p)), axis=1)
    detected = xp.max(Y * mask, axis=1) > 0
    return _log_sigmoid(xp, eta_psi) + detection, xp.where(detected, -xp.inf, _log_sigmoid(xp, -eta_psi))


def loglik(xp, params, X, V, Y, mask):
    """The log-likelihood: the sum over sites of the log-sum-exp over z in {0, 1}."""
    occupied, empty = site_terms(xp, params, X, V, Y, mask)
    return xp.sum(xp.logaddexp(occupied, empty))


def conditional_occupancy(params: np.ndarray, arrays: OccupancyArrays) -> np.ndarray:
    """P(z_i = 1 | y_i) per site: 1 where the species was detected, else the posterior share of occupancy."""
    occupied, empty = site_terms(np, params, arrays.X, arrays.V, arrays.Y, arrays.mask)
    return np.exp(occupied - np.logaddexp(occupied, empty))


def gradient_hessian(params: np.ndarray, arrays: OccupancyArrays) -> tuple[np.ndarray, np.ndarray]:
    """Analytic gradient and Hessian of the log-likelihood.

    With w = P(z = 1 | y), site i's log-likelihood is log(e^A + e^B): its gradient is w dA + (1 - w) dB and its
    Hessian w d2A + (1 - w) d2B + w (1 - w) (dA - dB)(dA - dB)'; dA - dB = (x_i, sum_j (y - p) v_ij)."""
    X, V, Y, mask = arrays.X, arrays.V, arrays.Y, arrays.mask
    a = X.shape[1]
    psi = 1 / (1 + np.exp(-X @ params[:a]))
    p = 1 / (1 + np.exp(-V @ params[a:]))
    w = conditional_occupancy(params, arrays)
    g_det = np.einsum("sj,sjk->sk", mask * (Y - p), V)  # per site, the detection part's score given z = 1
    grad = np.concatenate([X.T @ (w - psi), w @ g_det])
    diff = np.concatenate([X, g_det], axis=1)
    hess = (diff * (w * (1 - w))[:, None]).T @ diff
    hess[:a, :a] -= (X * (psi * (1 - psi))[:, None]).T @ X
    hess[a:, a:] -= np.einsum("sj,sjk,sjl->kl", mask * p * (1 - p) * w[:, None], V, V)
    return grad, hess
