"""The engine (pipeline step 4): pure functions of the relative covariance parameters theta.

Penalised least squares as in Bates et al. (2015, JSS 67(1), sections 3-4). The augmented system

    [ L'Z'WZL + I   L'Z'W[X y] ]
    [ [X y]'WZL     [X y]'W[X y] ]

is factored blockwise: the first term's block (one k x k block per level) is eliminated level by
level; its fill into the rest is a fixed sparse pattern applied as one sparse matrix-vector product;
the remaining Schur complement (other terms, X and y) is dense. One factorisation gives the REML/ML
criterion, beta-hat, the conditional modes and their conditional covariances. Both the frequentist
fit and the Bayesian samplers use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from .crossprod import CrossProducts

LOG_2PI = float(np.log(2 * np.pi))


def tri_index(k: int) -> list[tuple[int, int]]:
    """Positions of a k x k lower-triangular factor in lme4's column-wise theta order."""
    return [(i, j) for j in range(k) for i in range(j, k)]


def theta_to_T(values: np.ndarray, k: int) -> np.ndarray:
    """The k x k lower-triangular relative factor of one term from its theta values."""
    T = np.zeros((k, k))
    rows, cols = zip(*tri_index(k))
    T[rows, cols] = values
    return T


@dataclass
class Factor:
    """Blocked Cholesky factor at one theta, with what solutions and variances need."""

    theta: np.ndarray
    T: list[np.ndarray]
    A11: np.ndarray  # (m0, k0, k0): T0'G T0 + I
    L11: np.ndarray  # (m0, k0, k0) lower Cholesky factors of A11
    Ls: np.ndarray  # lower Cholesky factor of the trailing Schur complement, (r, r)
    ldL2: float
    ldRX2: float
    r2: float


class Engine:
    """Evaluates the profiled criterion and its by-products for one set of cross-products."""

    def __init__(self, cp: CrossProducts, ks: list[int], ms: list[int]):
        self.cp, self.ks, self.ms = cp, list(ks), list(ms)
        self.n, self.p = cp.n, cp.p
        self.n_terms = len(ks)
        sizes = [k * (k + 1) // 2 for k in ks]
        self.theta_slices = []
        start = 0
        for s in sizes:
            self.theta_slices.append(slice(start, start + s))
            start += s
        self.n_theta = start
        self.q = [k * m for k, m in zip(ks, ms)]
        self.q_rest = sum(self.q[1:])
        self.r = self.q_rest + self.p + 1
        self._build_trailing()
        self._build_fill()

    # ------------------------------------------------------------------ parameters
    def theta_start(self) -> np.ndarray:
        """lme4's start: identity relative factors."""
        out = np.zeros(self.n_theta)
        for k, sl in zip(self.ks, self.theta_slices):
            out[sl] = [1.0 if i == j else 0.0 for i, j in tri_index(k)]
        return out

    def theta_lower(self) -> np.ndarray:
        """Lower bounds: 0 on the diagonal of each factor, none elsewhere."""
        out = np.full(self.n_theta, -np.inf)
        for k, sl in zip(self.ks, self.theta_slices):
            out[sl] = [0.0 if i == j else -np.inf for i, j in tri_index(k)]
        return out

    def factors_of(self, theta: np.ndarray) -> list[np.ndarray]:
        return [theta_to_T(theta[sl], k) for k, sl in zip(self.ks, self.theta_slices)]

    # ------------------------------------------------------------------ setup
    def _build_trailing(self) -> None:
        """Dense cross-product of [Z_2..Z_t, X, y], unscaled."""
        cp, r = self.cp, self.r
        C = np.zeros((r, r))
        offs = np.cumsum([0] + self.q[1:])
        self.rest_offsets = offs
        for a in range(1, self.n_terms):
            sa = slice(offs[a - 1], offs[a])
            m, k = self.ms[a], self.ks[a]
            D = cp.diag[a]
            block = np.zeros((m * k, m * k))
            idx = np.arange(m)[:, None] * k + np.arange(k)[None, :]
            block[idx[:, :, None], idx[:, None, :]] = D
            C[sa, sa] = block
            for b in range(a + 1, self.n_terms):
                sb = slice(offs[b - 1], offs[b])
                C[sa, sb] = cp.off[(a, b)].toarray()
                C[sb, sa] = C[sa, sb].T
            C[sa, self.q_rest :] = cp.zxy[a]
            C[self.q_rest :, sa] = cp.zxy[a].T
        C[self.q_rest :, self.q_rest :] = cp.xy
        self.C22 = C

    def _build_fill(self) -> None:
        """Sparse map from the first term's per-level matrices M_g to their fill B M B' (lower part)."""
        cp, k0, m0 = self.cp, self.ks[0], self.ms[0]
        parts = [cp.off[(0, a)].T.tocsr() for a in range(1, self.n_terms)]
        parts.append(sp.csr_matrix(cp.zxy[0].T))
        B = sp.vstack(parts).tocsc()  # (r, q0)
        B.eliminate_zeros()
        rows, vals = B.indices.astype(np.int64), B.data
        cols = np.repeat(np.arange(B.shape[1]), np.diff(B.indptr))
        level, coef = cols // k0, cols % k0
        order = np.argsort(level, kind="stable")
        rows, vals, level, coef = rows[order], vals[order], level[order], coef[order]
        counts = np.bincount(level, minlength=m0)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        reps = counts[level]
        e1 = np.repeat(np.arange(len(rows)), reps)
        group_start = np.repeat(np.concatenate([[0], np.cumsum(reps)[:-1]]), reps)
        e2 = starts[level[e1]] + (np.arange(len(e1)) - group_start)
        keep = rows[e1] >= rows[e2]
        e1, e2 = e1[keep], e2[keep]
        target = rows[e1] * self.r + rows[e2]
        mcol = level[e1] * k0 * k0 + coef[e1] * k0 + coef[e2]
        uniq, tidx = np.unique(target, return_inverse=True)
        Q = sp.csr_matrix((vals[e1] * vals[e2], (tidx.ravel(), mcol)), shape=(len(uniq), m0 * k0 * k0))
        self.fill_map = Q if Q.nnz < 0.3 * Q.shape[0] * Q.shape[1] else Q.toarray()
        self.fill_i, self.fill_j = uniq // self.r, uniq % self.r
        self.fill_off = self.fill_i != self.fill_j
        self.B = B.tocsr()

    # ------------------------------------------------------------------ evaluation
    def factor(self, theta: np.ndarray) -> Factor | None:
        """Blocked Cholesky factor at theta; None if the system is not positive definite."""
        theta = np.asarray(theta, dtype=float)
        T = self.factors_of(theta)
        T0, G, k0 = T[0], self.cp.diag[0], self.ks[0]
        if k0 == 1:
            t2 = T0[0, 0] ** 2
            A11 = t2 * G + 1.0
            L11 = np.sqrt(A11)
            M = (t2 / A11).reshape(-1)
            ld1 = float(np.sum(np.log(A11)))
        else:
            A11 = np.einsum("ba,gbc,cd->gad", T0, G, T0) + np.eye(k0)
            L11 = np.linalg.cholesky(A11)
            TL = np.linalg.solve(L11, np.broadcast_to(T0.T, A11.shape))  # L11^{-1} T0'
            M = np.einsum("gba,gbc->gac", TL, TL).reshape(-1)  # T0 A11^{-1} T0'
            ld1 = float(2 * np.sum(np.log(np.diagonal(L11, axis1=1, axis2=2))))
        S = self.C22.copy()
        fill = self.fill_map @ M
        S[self.fill_i, self.fill_j] -= fill
        S[self.fill_j[self.fill_off], self.fill_i[self.fill_off]] -= fill[self.fill_off]
        self._scale_rest(S, T)
        try:
            Ls = sla.cholesky(S, lower=True, check_finite=False)
        except sla.LinAlgError:
            return None
        d = np.diagonal(Ls)
        if not np.all(np.isfinite(d)) or np.any(d[:-1] <= 0):
            return None
        q2 = self.q_rest
        ld_rest = 2 * float(np.sum(np.log(d[:q2])))
        ldRX2 = 2 * float(np.sum(np.log(d[q2:-1])))
        return Factor(theta, T, A11, L11, Ls, ld1 + ld_rest, ldRX2, float(d[-1] ** 2))

    def _scale_rest(self, S: np.ndarray, T: list[np.ndarray]) -> None:
        """S <- Lambda_rest' S Lambda_rest (in place) and add I for the random-effect rows."""
        offs = self.rest_offsets
        scale = np.ones(self.r)
        for a in range(1, self.n_terms):
            sa = slice(offs[a - 1], offs[a])
            if self.ks[a] == 1:
                scale[sa] = T[a][0, 0]
        S *= scale[:, None]
        S *= scale[None, :]
        for a in range(1, self.n_terms):
            k = self.ks[a]
            if k == 1:
                continue
            sa = slice(offs[a - 1], offs[a])
            m = self.ms[a]
            rows = S[sa, :].reshape(m, k, self.r)
            S[sa, :] = np.einsum("ba,gbr->gar", T[a], rows).reshape(m * k, self.r)
            cols = S[:, sa].reshape(self.r, m, k)
            S[:, sa] = np.einsum("rgb,ba->rga", cols, T[a]).reshape(self.r, m * k)
        idx = np.arange(self.q_rest)
        S[idx, idx] += 1.0

    def objective(self, theta: np.ndarray, reml: bool = True) -> float:
        """lme4's profiled criterion: the REML criterion or the deviance (-2 log-likelihood)."""
        f = self.factor(theta)
        if f is None or f.r2 <= 0:
            return np.inf
        return self.criterion(f, reml)

    def criterion(self, f: Factor, reml: bool) -> float:
        n, p = self.n, self.p
        nu = n - p if reml else n
        dev = f.ldL2 - self.cp.sum_log_w + nu * (1.0 + LOG_2PI + np.log(f.r2 / nu))
        return float(dev + f.ldRX2) if reml else float(dev)

    def loglik_fixed_sigma(self, f: Factor, sigma: float, reml: bool) -> float:
        """Log (restricted) likelihood at theta and a given sigma (beta profiled / integrated)."""
        nu = self.n - self.p if reml else self.n
        val = f.ldL2 - self.cp.sum_log_w + nu * (LOG_2PI + 2 * np.log(sigma)) + f.r2 / sigma**2
        if reml:
            val += f.ldRX2
        return -0.5 * float(val)

    # ------------------------------------------------------------------ solutions
    def solve(self, f: Factor) -> tuple[np.ndarray, list[np.ndarray]]:
        """beta-hat and the conditional modes b (y units) per term, each (m, k)."""
        Ls, q2, p = f.Ls, self.q_rest, self.p
        x2 = sla.solve_triangular(Ls[:-1, :-1], Ls[-1, :-1], lower=True, trans="T", check_finite=False)
        b_rest = []
        scaled = x2.copy()
        offs = self.rest_offsets
        for a in range(1, self.n_terms):
            sa = slice(offs[a - 1], offs[a])
            u = x2[sa].reshape(self.ms[a], self.ks[a])
            b = u @ f.T[a].T
            b_rest.append(b)
            scaled[sa] = b.ravel()
        beta = x2[q2 : q2 + p]
        v = self.B[-1].toarray().ravel() - self.B[:-1].T @ scaled
        k0, m0 = self.ks[0], self.ms[0]
        rhs = v.reshape(m0, k0) @ f.T[0]  # T0' v_g
        u0 = np.linalg.solve(f.A11, rhs[:, :, None])[:, :, 0] if k0 > 1 else rhs / f.A11.reshape(m0, 1)
        b0 = u0 @ f.T[0].T
        return beta, [b0] + b_rest

    def beta_precision_factor(self, f: Factor) -> np.ndarray:
        """R_X (lower, p x p): (R_X R_X')^{-1} sigma^2 is the covariance of beta-hat."""
        q2, p = self.q_rest, self.p
        return f.Ls[q2 : q2 + p, q2 : q2 + p]

    def conditional_covariances(self, f: Factor) -> list[np.ndarray]:
        """Per term (m, k, k): blocks of Lambda (Lambda'Z'WZ Lambda + I)^{-1} Lambda' (times sigma^2 = lme4's condVar)."""
        q2, k0, m0 = self.q_rest, self.ks[0], self.ms[0]
        out = []
        A11inv = np.linalg.inv(f.A11) if k0 > 1 else (1.0 / f.A11).reshape(m0, 1, 1)
        if q2 == 0:
            blocks0 = A11inv
        else:
            Lzz = f.Ls[:q2, :q2]
            Bz = self.B[:q2].toarray()  # (q2, q0) unscaled Z_rest'WZ_0
            scale_rows = self._rest_lambda_t(f.T)  # Lambda_rest'
            W = scale_rows @ Bz
            W = W.reshape(q2, m0, k0) @ f.T[0]  # times T0 per level
            W = np.einsum("rga,gab->rgb", W, A11inv)
            V = sla.solve_triangular(Lzz, W.reshape(q2, m0 * k0), lower=True, check_finite=False).reshape(q2, m0, k0)
            blocks0 = A11inv + np.einsum("rga,rgb->gab", V, V)
            Linv = sla.solve_triangular(Lzz, np.eye(q2), lower=True, check_finite=False)
            offs = self.rest_offsets
            rest_blocks = []
            for a in range(1, self.n_terms):
                k, m = self.ks[a], self.ms[a]
                cols = Linv[:, offs[a - 1] : offs[a]].reshape(q2, m, k)
                rest_blocks.append(np.einsum("rga,rgb->gab", cols, cols))
        out.append(np.einsum("ab,gbc,dc->gad", f.T[0], blocks0, f.T[0]))
        if q2:
            for a, blk in enumerate(rest_blocks, start=1):
                out.append(np.einsum("ab,gbc,dc->gad", f.T[a], blk, f.T[a]))
        return out

    def _rest_lambda_t(self, T: list[np.ndarray]) -> np.ndarray:
        """Dense Lambda_rest' (q2 x q2), block diagonal."""
        out = np.zeros((self.q_rest, self.q_rest))
        offs = self.rest_offsets
        for a in range(1, self.n_terms):
            k, m = self.ks[a], self.ms[a]
            for g in range(m):
                s = offs[a - 1] + g * k
                out[s : s + k, s : s + k] = T[a].T
        return out
