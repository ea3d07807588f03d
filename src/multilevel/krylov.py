"""Krylov methods on a symmetric positive-definite operator given as a function of a block of vectors: conjugate
gradients preconditioned by the diagonal, and the log-determinant by stochastic Lanczos quadrature (Ubaru, Chen &
Saad 2017, SIAM J. Matrix Anal. Appl. 38(4)). The approximate crossed fit (`iterative_engine`) uses both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.linalg import eigh_tridiagonal

from .errors import MultilevelError

Operator = Callable[[np.ndarray], np.ndarray]  # (q, c) -> (q, c): A times each column


def conjugate_gradients(apply: Operator, rhs: np.ndarray, diagonal: np.ndarray, tol: float, max_iter: int) -> tuple[np.ndarray, int]:
    """A^-1 rhs (q x c, columns solved together) by conjugate gradients preconditioned by A's diagonal, to a
    residual of `tol` times each right-hand side's norm; the solution and the iterations taken."""
    X, R = np.zeros_like(rhs), rhs.copy()
    target = tol * np.linalg.norm(rhs, axis=0)
    Z = R / diagonal[:, None]
    P, rz = Z.copy(), np.sum(R * Z, axis=0)
    for iteration in range(1, max_iter + 1):
        AP = apply(P)
        curvature = np.sum(P * AP, axis=0)
        if np.any((curvature <= 0) & (rz > 0)):
            raise MultilevelError("conjugate gradients met a direction of non-positive curvature: the system is not "
                                  "positive definite; fit with the exact solver, which reports where")
        alpha = np.divide(rz, curvature, out=np.zeros_like(rz), where=curvature > 0)
        X += P * alpha
        R -= AP * alpha
        if np.all(np.linalg.norm(R, axis=0) <= target):
            return X, iteration
        Z = R / diagonal[:, None]
        rz_new = np.sum(R * Z, axis=0)
        P = Z + P * np.divide(rz_new, rz, out=np.zeros_like(rz), where=rz > 0)
        rz = rz_new
    raise MultilevelError(f"conjugate gradients did not reach a relative residual of {tol:g} in {max_iter} iterations: "
                          "the system is too ill-conditioned for the iterative solver; fit with the exact solver")


@dataclass
class LogDet:
    """log det(A) estimated by stochastic Lanczos quadrature, with its estimated error."""

    value: float
    standard_error: float  # of the mean over the probes (their spread / sqrt(probes))
    quadrature_change: float  # |estimate with all Lanczos steps - with half of them|: over-estimates the quadrature's error (it
    # falls geometrically with the steps)

    @property
    def error(self) -> float:
        """The stated error: three standard errors of the probes plus the quadrature's change."""
        return 3.0 * self.standard_error + self.quadrature_change


def rademacher_probes(size: int, probes: int, seed: int) -> np.ndarray:
    """Fixed probe vectors of +-1 (size x probes) from a seed: the same estimator at every theta."""
    return np.random.default_rng(seed).choice(np.array([-1.0, 1.0]), size=(size, probes))


def lanczos_logdet(apply: Operator, diagonal: np.ndarray, probes: np.ndarray, steps: int,
                   directions: np.ndarray | None = None) -> LogDet:
    """log det(A) = sum log diag(A) + tr log(K), K = D^-1/2 A D^-1/2, the trace by Hutchinson's estimator over the
    probe columns, each quadratic form z' log(K) z by `steps` Lanczos steps (Gauss quadrature). `directions`
    (orthonormal columns W, e.g. near K's smallest eigenvectors) are deflated: tr log(K) = sum_i w_i' log(K) w_i
    (by their own Lanczos runs, without sampling error) + the estimator over probes projected off W."""
    if steps < 2:
        raise MultilevelError(f"the Lanczos quadrature needs at least 2 steps (its error is the change from half of them), not {steps}")
    if directions is None:
        directions = np.zeros((len(diagonal), 0))
    probes = probes - directions @ (directions.T @ probes)
    columns = np.hstack([directions, probes])
    quadratures, halves = _lanczos_quadratures(apply, 1.0 / np.sqrt(diagonal), columns, steps)
    d = directions.shape[1]
    sampled, sampled_half = quadratures[d:], halves[d:]
    full = float(np.sum(quadratures[:d]) + np.mean(sampled))
    half = float(np.sum(halves[:d]) + np.mean(sampled_half))
    spread = float(np.std(sampled, ddof=1) / np.sqrt(len(sampled))) if len(sampled) > 1 else np.inf
    return LogDet(float(np.sum(np.log(diagonal))) + full, spread, abs(full - half))


def _lanczos_quadratures(apply: Operator, scale: np.ndarray, columns: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Each column's z' log(K) z, K = diag(scale) A diag(scale), by Gauss quadrature on `steps` Lanczos steps (one
    Lanczos run a column, the columns applied together), and the same with half the steps."""
    count = columns.shape[1]
    norms2 = np.sum(columns**2, axis=0)
    empty = norms2 == 0  # a probe with nothing left after deflation: its form is 0
    columns, norms2 = np.where(empty, 1.0, columns), np.where(empty, 0.0, norms2)
    V, V_prev = columns / np.linalg.norm(columns, axis=0), np.zeros_like(columns)
    alphas, betas = np.zeros((steps, count)), np.zeros((steps, count))
    length = np.full(count, steps)  # steps before the Krylov space of a column is exhausted
    beta = np.zeros(count)
    for j in range(steps):
        W = scale[:, None] * apply(scale[:, None] * V)
        alphas[j] = np.sum(V * W, axis=0)
        W -= alphas[j] * V + beta * V_prev
        beta = np.linalg.norm(W, axis=0)
        exhausted = (beta <= 1e-12 * np.abs(alphas[j])) & (length == steps)
        length[exhausted] = j + 1
        betas[j] = beta
        beta = np.where(beta > 0, beta, 1.0)
        V_prev, V = V, W / beta
    full = np.array([_quadrature(alphas[: length[i], i], betas[: length[i] - 1, i]) for i in range(count)])
    half = np.array([_quadrature(alphas[: steps // 2, i], betas[: steps // 2 - 1, i]) if length[i] == steps else full[i]
                     for i in range(count)])  # an exhausted Krylov space makes the quadrature exact
    return full * norms2, half * norms2


def _quadrature(alpha: np.ndarray, beta: np.ndarray) -> float:
    """e1' log(T) e1 for the Lanczos tridiagonal T (diagonal alpha, off-diagonal beta)."""
    if len(alpha) == 1:
        return float(np.log(alpha[0]))
    values, vectors = eigh_tridiagonal(alpha, beta)
    if values[0] <= 0:
        raise MultilevelError("the Lanczos quadrature met a non-positive Ritz value: the system is not positive definite")
    return float(np.sum(vectors[0] ** 2 * np.log(values)))

