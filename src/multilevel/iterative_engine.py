"""The APPROXIMATE profiled criterion of crossed scalar terms with many levels (``fit(solver="iterative")``),
at a cost linear in the cross-products' non-zeros, with no dense block.

As in `engine`, the first term is eliminated level by level (a scalar each). What remains for the other terms'
effects is S = Lambda'(C - B diag(M) B')Lambda + I, dense when users rate many items (docs/scale.md: 38-84 % of its
triangle at 3e6-1e7 crossed rows), so it is never formed: it is applied to a block of vectors by sparse products.
Solves with S are by conjugate gradients preconditioned by its diagonal (to a relative residual of 1e-10, so r^2
and beta are exact to rounding); log det(S) by stochastic Lanczos quadrature with fixed Rademacher probes from a
seed (`krylov.lanczos_logdet`), so the criterion is one smooth function of theta for the optimiser, and its
estimated error is carried into the result. The effects' common shift against the first term's (the
smallest eigenvalue's direction) is deflated from the probes and computed without sampling error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .crossprod import CrossProducts
from .engine import profiled_criterion
from .errors import MultilevelError
from .krylov import LogDet, conjugate_gradients, lanczos_logdet, rademacher_probes

CG_TOL = 1e-10  # relative residual of the solves: r^2's error is of the square of it
CG_MAX_ITER = 2_000


@dataclass
class Evaluation:
    """The approximate criterion at one theta and what the fit reads from it (held units)."""

    criterion: float
    logdet: LogDet  # of the other terms' block S; the first term's part is exact
    r2: float
    beta: np.ndarray  # as the cross-products hold X
    modes: list[np.ndarray]  # spherical modes u per term, (m, 1)
    rx: np.ndarray  # lower Cholesky factor of X's block of the Schur complement (held units)
    iterations: int  # of conjugate gradients


class IterativeEngine:
    """The profiled ML/REML criterion of scalar random terms from the cross-products, by iterative linear algebra."""

    def __init__(self, cp: CrossProducts, ks: list[int], ms: list[int], probes: int, steps: int, seed: int):
        if len(ks) < 2 or any(k != 1 for k in ks):
            raise MultilevelError("solver='iterative' fits crossed scalar terms such as (1 | user) + (1 | item); this "
                                  "model has " + ("a random slope" if any(k != 1 for k in ks) else "one random term")
                                  + ": fit it with the exact solver (the default)")
        self.cp, self.ms, self.n, self.p = cp, list(ms), cp.n, cp.p
        self.g0 = cp.diag[0][:, 0, 0]
        self.bt = sp.hstack([cp.off[(0, a)] for a in range(1, len(ms))], format="csr")  # (m0, q2): Z_0'WZ_rest
        self.b = self.bt.T  # its transpose as a CSC view: products scatter user by user (10x faster than a CSR
        # copy's gather over 500,000 users at 3e6 rows, 0.019 against 0.19 s for 21 columns)
        self.c = self._rest_block()
        self.term = np.repeat(np.arange(1, len(ms)), ms[1:])  # each rest effect's term
        self.b_squared = self.bt.multiply(self.bt).T
        self.c_diagonal = self.c.diagonal()
        self.probes, self.steps = rademacher_probes(self.c.shape[0], probes, seed), steps

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

    def evaluate(self, theta: np.ndarray, reml: bool) -> Evaluation:
        """The approximate criterion and the solutions at theta."""
        theta = np.asarray(theta, dtype=float)
        t0, lam = theta[0], theta[self.term]
        a11 = t0**2 * self.g0 + 1.0
        m = t0**2 / a11  # the first term's M per level

        def apply(V: np.ndarray) -> np.ndarray:
            LV = lam[:, None] * V
            return lam[:, None] * (self.c @ LV - self.b @ (m[:, None] * (self.bt @ LV))) + V

        diagonal = lam**2 * (self.c_diagonal - self.b_squared @ m) + 1.0
        zxy0 = self.cp.zxy[0]
        s_zxy = lam[:, None] * (np.vstack(self.cp.zxy[1:]) - self.b @ (m[:, None] * zxy0))  # (q2, p + 1)
        solved, iterations = conjugate_gradients(apply, s_zxy, diagonal, CG_TOL, CG_MAX_ITER)
        schur = self.cp.xy - zxy0.T @ (m[:, None] * zxy0) - s_zxy.T @ solved
        try:
            L = np.linalg.cholesky(schur)
        except np.linalg.LinAlgError:
            raise MultilevelError("the fixed effects' block is not positive definite at this theta (collinear "
                                  "columns?): fit with the exact solver, which reports it") from None
        d = np.diagonal(L) * self.cp.held.scale
        p = self.p
        beta = np.linalg.solve(L[:p, :p].T, L[p, :p]) if p else np.zeros(0)
        u_rest = solved[:, p] - solved[:, :p] @ beta
        u0 = t0 * (zxy0[:, p] - zxy0[:, :p] @ beta - self.bt @ (lam * u_rest)) / a11
        logdet = lanczos_logdet(apply, diagonal, self.probes, self.steps, self._shifts(diagonal))
        r2 = float(d[-1] ** 2)
        criterion = profiled_criterion(float(np.sum(np.log(a11))) + logdet.value, r2, 2.0 * float(np.sum(np.log(d[:p]))),
                                       self.n, p, self.cp.sum_log_w, reml)
        offsets = np.cumsum([0] + self.ms[1:])
        modes = [u0[:, None]] + [u_rest[offsets[i] : offsets[i + 1], None] for i in range(len(self.ms) - 1)]
        return Evaluation(criterion, logdet, r2, beta, modes, L[:p, :p], iterations)
