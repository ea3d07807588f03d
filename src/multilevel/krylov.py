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
EXHAUSTED = 1.5e-8  # a Lanczos run whose next beta is this small against alpha has exhausted its Krylov space: without
# reorthogonalisation that beta is rounding amplified to ~1e-10, not 1e-16; dropping a coupling beta changes the
# quadrature by O(beta^2) (it enters T's continued fraction squared), so sqrt(machine epsilon) costs nothing
Pullback = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]  # (a, b) -> (A a, A b, slope):
# slope[t] = sum over columns of b' (dA / dtheta_t) a


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


@dataclass
class LogDetSlopes:
    """The estimate's exact derivatives (the probes fixed): by A's diagonal, by the deflated directions (q x d), and
    through A itself, as the pullback's coordinates (see `lanczos_logdet_slopes`)."""

    diagonal: np.ndarray
    directions: np.ndarray
    operator: np.ndarray


def lanczos_logdet(apply: Operator, diagonal: np.ndarray, probes: np.ndarray, steps: int,
                   directions: np.ndarray | None = None) -> LogDet:
    """log det(A) = sum log diag(A) + tr log(K), K = D^-1/2 A D^-1/2, the trace by Hutchinson's estimator over the
    probe columns, each quadratic form z' log(K) z by `steps` Lanczos steps (Gauss quadrature). `directions`
    (orthonormal columns W, e.g. near K's smallest eigenvectors) are deflated: tr log(K) = sum_i w_i' log(K) w_i
    (by their own Lanczos runs, without sampling error) + the estimator over probes projected off W."""
    return _estimate(apply, diagonal, probes, steps, directions, None)[0]


def lanczos_logdet_slopes(apply: Operator, pullback: Pullback, diagonal: np.ndarray, probes: np.ndarray, steps: int,
                          directions: np.ndarray | None = None) -> tuple[LogDet, LogDetSlopes]:
    """`lanczos_logdet` and its exact derivatives, by reverse mode through the Lanczos recurrences and quadratures
    (the same floating-point algorithm, not the derivative of the exact log det). `pullback(a, b)` returns A a, A b
    and, per coordinate t of A's parameter, the sum over columns of b' (dA/dt) a."""
    return _estimate(apply, diagonal, probes, steps, directions, pullback)


def _estimate(apply: Operator, diagonal: np.ndarray, probes: np.ndarray, steps: int, directions: np.ndarray | None,
              pullback: Pullback | None) -> tuple[LogDet, LogDetSlopes | None]:
    """The estimate of `lanczos_logdet`, and its slopes when `pullback` is given."""
    if steps < 2:
        raise MultilevelError(f"the Lanczos quadrature needs at least 2 steps (its error is the change from half of them), not {steps}")
    if directions is None:
        directions = np.zeros((len(diagonal), 0))
    d = directions.shape[1]
    columns = np.hstack([directions, probes - directions @ (directions.T @ probes)])
    weights = np.r_[np.ones(d), np.full(probes.shape[1], 1.0 / probes.shape[1])]  # a direction's form, a probe's mean
    scale = 1.0 / np.sqrt(diagonal)
    tape = _lanczos(apply, scale, columns, steps, keep=pullback is not None)
    quadratures = tape.norms2 * tape.forms
    sampled = quadratures[d:]
    full = float(np.sum(quadratures[:d]) + np.mean(sampled))
    half = float(np.sum(tape.norms2[:d] * tape.halves[:d]) + np.mean(tape.norms2[d:] * tape.halves[d:]))
    spread = float(np.std(sampled, ddof=1) / np.sqrt(len(sampled))) if len(sampled) > 1 else np.inf
    logdet = LogDet(float(np.sum(np.log(diagonal))) + full, spread, abs(full - half))
    if pullback is None:
        return logdet, None
    column_bar, scale_bar, operator_bar = _backward(tape, pullback, scale, weights)
    probe_bar = column_bar[:, d:]
    directions_bar = column_bar[:, :d] - probe_bar @ (probes.T @ directions) - probes @ (probe_bar.T @ directions)
    return logdet, LogDetSlopes(1.0 / diagonal - 0.5 * scale**3 * scale_bar, directions_bar, operator_bar)


@dataclass
class _Tape:
    """A block Lanczos run, one independent run a column: what the quadratures and the reverse pass read."""

    columns: np.ndarray  # the starting vectors (an empty column replaced by ones: its form counts 0)
    norms2: np.ndarray  # their squared norms (0 for an empty column)
    alphas: np.ndarray  # (steps, columns)
    divisors: np.ndarray  # (steps, columns): the betas, 1 where a run had nothing left
    length: np.ndarray  # steps before each column's Krylov space was exhausted
    vectors: list[np.ndarray]  # the Lanczos vectors of each step (kept for the reverse pass; 0 past a column's length)
    forms: np.ndarray  # e1' log(T) e1 per column, all steps
    halves: np.ndarray  # the same with half the steps
    form_slopes: list[tuple[np.ndarray, np.ndarray]]  # d forms / d (alphas, betas) per column


def _lanczos(apply: Operator, scale: np.ndarray, columns: np.ndarray, steps: int, keep: bool) -> _Tape:
    """Each column's z' log(K) z / |z|^2, K = diag(scale) A diag(scale), by Gauss quadrature on `steps` Lanczos steps
    (the columns applied together), and the same with half the steps."""
    count = columns.shape[1]
    norms2 = np.sum(columns**2, axis=0)
    empty = norms2 == 0  # a probe with nothing left after deflation: its form is 0
    columns = np.where(empty, 1.0, columns)
    V, V_prev = columns / np.linalg.norm(columns, axis=0), np.zeros_like(columns)
    alphas, divisors = np.zeros((steps, count)), np.ones((steps, count))
    length = np.full(count, steps)
    vectors = []
    beta = np.zeros(count)
    for j in range(steps):
        if keep:
            vectors.append(V)
        W = scale[:, None] * apply(scale[:, None] * V)
        alphas[j] = np.sum(V * W, axis=0)
        W -= alphas[j] * V + beta * V_prev
        beta = np.linalg.norm(W, axis=0)
        exhausted = (beta <= EXHAUSTED * np.abs(alphas[j])) & (length == steps)
        length[exhausted] = j + 1
        beta = np.where(length > j + 1, beta, 1.0)  # a finished run's next vector is 0, not rounding noise
        divisors[j] = beta
        V_prev, V = V, np.where(length > j + 1, W / beta, 0.0)
    quadratures = [_quadrature(alphas[: length[i], i], divisors[: length[i] - 1, i]) for i in range(count)]
    forms = np.array([value for value, _, _ in quadratures])
    halves = np.array([_quadrature(alphas[: steps // 2, i], divisors[: steps // 2 - 1, i])[0] if length[i] == steps
                       else forms[i] for i in range(count)])  # an exhausted Krylov space makes the quadrature exact
    return _Tape(columns, np.where(empty, 0.0, norms2), alphas, divisors, length, vectors, forms, halves,
                 [(da, db) for _, da, db in quadratures])


def _backward(tape: _Tape, pullback: Pullback, scale: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reverse mode through `_lanczos` for sum_i weights_i |z_i|^2 forms_i: its derivatives by the columns, by
    `scale` and by A's parameter (the pullback's coordinates)."""
    steps, count = tape.alphas.shape
    factor = weights * tape.norms2
    alpha_bar, beta_bar = np.zeros((steps, count)), np.zeros((steps, count))
    for i, (da, db) in enumerate(tape.form_slopes):
        alpha_bar[: len(da), i], beta_bar[: len(db), i] = factor[i] * da, factor[i] * db
    V = tape.vectors
    V_bar = [np.zeros_like(v) for v in V]
    scale_bar, operator_bar = np.zeros(len(scale)), 0.0
    s = scale[:, None]
    for j in reversed(range(steps)):
        v = V[j]
        r_bar = np.zeros_like(v)
        if j + 1 < steps:  # v_{j+1} = r_j / beta_j, beta_j = |r_j|
            nxt, nxt_bar, div = V[j + 1], V_bar[j + 1], tape.divisors[j]
            r_bar = nxt_bar / div + (beta_bar[j] - np.sum(nxt_bar * nxt, axis=0) / div) * nxt
        a_bar = alpha_bar[j] - np.sum(r_bar * v, axis=0)  # r_j = w_j - alpha_j v_j - beta_{j-1} v_{j-1}
        w_bar = r_bar + a_bar * v  # alpha_j = v_j' w_j
        Aa, Ab, slope = pullback(s * v, s * w_bar)  # w_j = K v_j
        operator_bar = operator_bar + slope
        scale_bar += np.sum(w_bar * Aa + v * Ab, axis=1)
        V_bar[j] += a_bar * (s * Aa) - tape.alphas[j] * r_bar + s * Ab
        if j:
            beta_bar[j - 1] -= np.sum(r_bar * V[j - 1], axis=0)
            V_bar[j - 1] -= tape.divisors[j - 1] * r_bar
    norms = np.sqrt(np.where(tape.norms2 > 0, tape.norms2, 1.0))
    v0 = V[0]
    column_bar = (V_bar[0] - v0 * np.sum(v0 * V_bar[0], axis=0)) / norms + 2.0 * weights * tape.forms * tape.columns
    column_bar[:, tape.norms2 == 0] = 0.0
    return column_bar, scale_bar, operator_bar


def _quadrature(alpha: np.ndarray, beta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """e1' log(T) e1 for the Lanczos tridiagonal T (diagonal alpha, off-diagonal beta), and its derivatives by
    alpha and beta (the Daleckii-Krein formula: divided differences of log between T's eigenvalues)."""
    if len(alpha) == 1:
        return float(np.log(alpha[0])), 1.0 / alpha, np.zeros(0)
    values, vectors = eigh_tridiagonal(alpha, beta)
    if values[0] <= 0:
        raise MultilevelError("the Lanczos quadrature met a non-positive Ritz value: the system is not positive definite")
    first = vectors[0]
    la, lb = values[:, None], values[None, :]
    gap = la - lb
    close = np.abs(gap) <= 1e-9 * np.maximum(la, lb)
    divided = np.where(close, 2.0 / (la + lb), np.log(la / lb) / np.where(close, 1.0, gap))
    M = vectors @ (divided * np.outer(first, first)) @ vectors.T
    return float(np.sum(first**2 * np.log(values))), np.diagonal(M).copy(), 2.0 * np.diagonal(M, 1)
