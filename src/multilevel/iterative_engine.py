"""The APPROXIMATE profiled criterion of crossed random terms with many levels (``fit(solver="iterative")``),
at a cost linear in the cross-products' non-zeros, with no dense block.

As in `engine`, the first term (the most levels; with or without random slopes) is eliminated level by level (a
k0 x k0 block each); the other terms are scalar. What remains for their effects is
S = Lambda'(C - B M B')Lambda + I, M = blockdiag(T0 A11^-1 T0'), dense when users rate many items (docs/scale.md:
38-84 % of its triangle at 3e6-1e7 crossed rows), so it is never formed: it is applied to a block of vectors by
sparse products. Solves with S are by conjugate gradients preconditioned by its diagonal (to a relative residual of
1e-10, so r^2 and beta are exact to rounding); log det(S) by stochastic Lanczos quadrature with fixed Rademacher
probes from a seed (`krylov.lanczos_logdet`), so the criterion is one smooth function of theta for the optimiser,
and its estimated error is carried into the result. The effects' common shift against the first term's (the
smallest eigenvalue's direction) is deflated from the probes and computed without sampling error. For scalar terms
the criterion's gradient is exact for this estimate (the probes fixed): reverse mode through the Lanczos runs
(`krylov.lanczos_logdet_slopes`) and the envelope theorem for r^2 and R_X.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import solve_triangular

from .crossprod import CrossProducts
from .engine import profiled_criterion, theta_to_T
from .errors import MultilevelError
from .krylov import (
    LogDet,
    LogDetSlopes,
    conjugate_gradients,
    lanczos_logdet,
    lanczos_logdet_slopes,
    rademacher_probes,
)

CG_TOL = 1e-10  # relative residual of the solves: r^2's error is of the square of it
CG_MAX_ITER = 2_000


@dataclass
class Evaluation:
    """The approximate criterion at one theta and what the fit reads from it (held units)."""

    criterion: float
    logdet: LogDet  # of the other terms' block S; the first term's part is exact
    r2: float
    beta: np.ndarray  # as the cross-products hold X
    modes: list[np.ndarray]  # spherical modes u per term, (m, k)
    rx: np.ndarray  # lower Cholesky factor of X's block of the Schur complement (held units)
    iterations: int  # of conjugate gradients
    gradient: np.ndarray | None = None  # the criterion's exact derivatives by theta (the probes fixed), when asked


class IterativeEngine:
    """The profiled ML/REML criterion of crossed random terms from the cross-products, by iterative linear algebra:
    the first term (the most levels) with or without random slopes, the others scalar. theta is lme4's: the first
    term's lower-triangular factor column by column, then one value per other term."""

    def __init__(self, cp: CrossProducts, ks: list[int], ms: list[int], probes: int, steps: int, seed: int):
        if len(ks) < 2 or any(k != 1 for k in ks[1:]):
            raise MultilevelError("solver='iterative' fits crossed terms such as (1 + x | user) + (1 | item): random "
                                  "slopes on the term with the most levels only; this model has " +
                                  ("a random slope on a term with fewer levels" if len(ks) > 1 else "one random term")
                                  + ": fit it with the exact solver (the default)")
        self.cp, self.ms, self.n, self.p = cp, list(ms), cp.n, cp.p
        self.k0, self.n0 = ks[0], ks[0] * (ks[0] + 1) // 2  # the first term's size and number of theta values
        self.g0 = cp.diag[0]
        self.bt = sp.hstack([cp.off[(0, a)] for a in range(1, len(ms))], format="csr")  # (m0 k0, q2): Z_0'WZ_rest
        self.b = self.bt.T  # its transpose as a CSC view: products scatter user by user (10x faster than a CSR
        # copy's gather over 500,000 users at 3e6 rows, 0.019 against 0.19 s for 21 columns)
        self.c = self._rest_block()
        self.term = np.repeat(np.arange(1, len(ms)), ms[1:])  # each rest effect's term
        self.offsets = np.cumsum([0] + self.ms[1:])
        k0 = self.k0
        self.b_squared = {(a, b): self.bt[a::k0].multiply(self.bt[b::k0]).T.tocsr() for a in range(k0) for b in range(k0)}
        self.c_diagonal = self.c.diagonal()
        self.probes, self.steps = rademacher_probes(self.c.shape[0], probes, seed), steps

    @property
    def has_gradient(self) -> bool:
        """The exact gradient is derived for scalar terms (a first term without slopes)."""
        return self.k0 == 1

    def _times_blocks(self, M: np.ndarray, X: np.ndarray) -> np.ndarray:
        """diag(M_1..M_m0) X for the first term's per-level k0 x k0 blocks M and (m0 k0, c) X."""
        m0, k0 = M.shape[0], self.k0
        if k0 == 1:  # scalar: a broadcast product (einsum is 1.35x slower at 500,000 users x 18 columns)
            return M[:, 0, 0, None] * X
        return np.einsum("gab,gbc->gac", M, X.reshape(m0, k0, -1)).reshape(m0 * k0, -1)

    def _rest_block(self) -> sp.csr_matrix:
        """Z_rest'WZ_rest (q2 x q2, sparse): the other terms' diagonals and their cross blocks."""
        n_terms = len(self.ms)
        rows = []
        for a in range(1, n_terms):
            row = [sp.diags(self.cp.diag[a][:, 0, 0]) if b == a else
                   (self.cp.off[(a, b)] if b > a else self.cp.off[(b, a)].T) for b in range(1, n_terms)]
            rows.append(row)
        return sp.block_array(rows, format="csr")

    def _shifts(self, diagonal: np.ndarray) -> np.ndarray:
        """Per other term, its effects' common shift (against the first term's) in S's preconditioned coordinates,
        D^1/2 1 on the term's effects, normalised: near the smallest eigenvector, deflated from the log-determinant's
        probes (their standard error fell 3.4x at 3e6 crossed rows)."""
        W = np.zeros((len(diagonal), len(self.ms) - 1))
        W[np.arange(len(diagonal)), self.term - 1] = np.sqrt(diagonal)
        return W / np.linalg.norm(W, axis=0)

    def evaluate(self, theta: np.ndarray, reml: bool, gradient: bool = False) -> Evaluation:
        """The approximate criterion and the solutions at theta (and the criterion's exact gradient if asked)."""
        theta = np.asarray(theta, dtype=float)
        if gradient and not self.has_gradient:
            raise MultilevelError("the iterative criterion's gradient is derived for scalar terms only")
        T0, lam = theta_to_T(theta[: self.n0], self.k0), theta[self.n0 - 1 + self.term]
        A11 = np.einsum("ba,gbc,cd->gad", T0, self.g0, T0) + np.eye(self.k0)  # T0'G0 T0 + I per level
        L11 = np.linalg.cholesky(A11)
        M = T0 @ np.linalg.solve(A11, np.broadcast_to(T0.T, A11.shape)) # T0 A11^-1 T0' per level
        m = M[:, 0, 0]

        def apply(V: np.ndarray) -> np.ndarray:
            LV = lam[:, None] * V
            return lam[:, None] * (self.c @ LV - self.b @ self._times_blocks(M, self.bt @ LV)) + V

        base = self.c_diagonal - sum(Bab @ M[:, a, b] for (a, b), Bab in self.b_squared.items())
        diagonal = lam**2 * base + 1.0
        zxy0 = self.cp.zxy[0]
        s_zxy = lam[:, None] * (np.vstack(self.cp.zxy[1:]) - self.b @ self._times_blocks(M, zxy0))  # (q2, p + 1)
        solved, iterations = conjugate_gradients(apply, s_zxy, diagonal, CG_TOL, CG_MAX_ITER)
        schur = self.cp.xy - zxy0.T @ self._times_blocks(M, zxy0) - s_zxy.T @ solved
        try:
            L = np.linalg.cholesky(schur)
        except np.linalg.LinAlgError:
            raise MultilevelError("the fixed effects' block is not positive definite at this theta (collinear "
                                  "columns?): fit with the exact solver, which reports it") from None
        d = np.diagonal(L) * self.cp.held.scale
        p = self.p
        beta = np.linalg.solve(L[:p, :p].T, L[p, :p]) if p else np.zeros(0)
        rhs0 = (zxy0 - self.bt @ (lam[:, None] * solved)).reshape(len(A11), self.k0, -1)
        first = np.linalg.solve(A11, np.einsum("ba,gbc->gac", T0, rhs0)).reshape(zxy0.shape)
        solutions = [first] + [solved[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]  # Omega^-1 Lambda'Z'[X y]
        omega = np.r_[-beta, 1.0]
        modes = [(u @ omega).reshape(-1, self.k0 if t == 0 else 1) for t, u in enumerate(solutions)]
        shifts = self._shifts(diagonal)
        slope = None
        if gradient:
            t0, a11 = theta[0], A11[:, 0, 0]
            dm = 2.0 * t0 / a11**2  # d m / d theta_0
            logdet, slopes = lanczos_logdet_slopes(apply, self._pullback(lam, m, dm), diagonal, self.probes, self.steps,
                                                   shifts)
            slope = slopes.operator + self._diagonal_slope(slopes, diagonal, shifts, theta, base, dm)
            slope[0] += 2.0 * t0 * float(np.sum(self.g0[:, 0, 0] / a11))
            slope += self._envelope_slope(theta, solutions, L, omega, reml)
        else:
            logdet = lanczos_logdet(apply, diagonal, self.probes, self.steps, shifts)
        r2 = float(d[-1] ** 2)
        log_det = 2.0 * float(np.sum(np.log(np.diagonal(L11, axis1=1, axis2=2)))) + logdet.value
        criterion = profiled_criterion(log_det, r2, 2.0 * float(np.sum(np.log(d[:p]))), self.n, p, self.cp.sum_log_w, reml)
        return Evaluation(criterion, logdet, r2, beta, modes, L[:p, :p], iterations, slope)

    def _pullback(self, lam: np.ndarray, m: np.ndarray, dm: np.ndarray):
        """`krylov.Pullback` of S(theta) = Lambda(C - B diag(m) B')Lambda + I: S a, S b and, per theta_t, b' dS/dtheta_t a
        summed over columns (dS/dtheta_t = P_t G Lambda + Lambda G P_t for the other terms, -Lambda B diag(dm) B' Lambda
        for the first)."""

        def pullback(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            c = a.shape[1]
            LV = lam[:, None] * np.hstack([a, b])
            T = self.bt @ LV  # (m0, 2c): 144 MB at 500,000 users, so no temporaries of its size
            slope = np.empty(len(self.ms))
            slope[0] = -float(dm @ np.einsum("ij,ij->i", T[:, :c], T[:, c:]))
            T *= m[:, None]
            G = self.c @ LV - self.b @ T
            slope[1:] = np.bincount(self.term - 1, np.sum(b * G[:, :c] + a * G[:, c:], axis=1), minlength=len(self.ms) - 1)
            return lam[:, None] * G[:, :c] + a, lam[:, None] * G[:, c:] + b, slope

        return pullback

    def _diagonal_slope(self, slopes: LogDetSlopes, diagonal: np.ndarray, shifts: np.ndarray, theta: np.ndarray,
                        base: np.ndarray, dm: np.ndarray) -> np.ndarray:
        """The log-determinant's derivative through S's diagonal lam^2 (C_ii - (B^2 m)_i) + 1 (its preconditioner, its
        own log terms and the deflated shifts, sqrt(diagonal) normalised per term)."""
        column = self.term - 1
        rows = np.arange(len(diagonal))
        w, w_bar = shifts[rows, column], slopes.directions[rows, column]
        per_term = np.bincount(column, w_bar * w) / np.bincount(column, diagonal)
        d_bar = slopes.diagonal + 0.5 * w_bar * w / diagonal - 0.5 * per_term[column]
        lam = theta[self.term]
        slope = np.empty(len(self.ms))
        slope[0] = -float(dm @ (self.b_squared[0, 0].T @ (lam**2 * d_bar)))
        slope[1:] = np.bincount(column, 2.0 * lam * base * d_bar, minlength=len(self.ms) - 1)
        return slope

    def _envelope_slope(self, theta: np.ndarray, solutions: list[np.ndarray], L: np.ndarray, omega: np.ndarray,
                        reml: bool) -> np.ndarray:
        """The exact parts' derivatives (r^2 and, for REML, log|R_X|^2): by the envelope theorem the Schur complement
        of [X y] moves by -2 Y_t'Y_t / theta_t, Y_t term t's rows of Omega^-1 Lambda'Z'[X y] (the solves)."""
        p, nu = self.p, (self.n - self.p if reml else self.n)
        slope = np.zeros(len(self.ms))
        for t, Y in enumerate(solutions):
            if theta[t] == 0.0:
                continue  # Y_t'Y_t / theta_t vanishes with theta_t
            slope[t] = -2.0 * nu * float(np.sum((Y @ omega) ** 2)) / (theta[t] * L[p, p] ** 2)
            if reml and p:
                slope[t] -= 2.0 * float(np.sum(solve_triangular(L[:p, :p], Y[:, :p].T, lower=True) ** 2)) / theta[t]
        return slope
