"""The exact gradient of the Laplace objective when every random-effect term is scalar (any number of terms).

With A = Z Lambda (n x q), M = A'VA + I (V the Laplace weights) and the modes u-hat from `pirls`,

    D = -2 sum log f(y | u-hat) + |u-hat|^2 + log det M.

The first two terms need only their partial derivatives (u-hat is their minimiser). d log det M = tr(M^-1 dM):
Lambda's own derivative gives 2 sum_i V_i z_ti (M^-1 A')[col_t(i), i], and the weights' move with eta gives
sum_i V'_i h_i d eta_i, h_i = a_i' M^-1 a_i the leverages, where d eta includes A du-hat, du-hat from implicit
differentiation of A's = u (observed information W): one more solve, r = M_W^-1 A'(V' h), carries all of it.
The term with most levels is eliminated as a diagonal (a Schur complement S on the others, dense), so the n
right-hand sides cost one dense Cholesky of S and n triangular solves of its size: for models whose other terms
have moderately many levels (`applies`).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from .families import Family
from .pirls import Pirls

MAX_DENSE_SOLUTION = 4_000_000  # n x (levels of the other terms) entries held at once; larger: derivative-free search
WEIGHT_STEP = 1e-5  # central-difference step in eta of the weights' derivative (error ~1e-10)


class ScalarTermsGradient:
    """Value and exact gradient in (theta, beta) of `pirls`'s Laplace objective, all terms scalar."""

    def __init__(self, pirls: Pirls):
        blocks = pirls.design.blocks
        self.pirls, self.n_terms = pirls, len(blocks)
        self.first = int(np.argmax([b.m for b in blocks]))  # eliminated as a diagonal
        self.rest = [t for t in range(len(blocks)) if t != self.first]
        self.codes, self.m = blocks[self.first].codes, blocks[self.first].m
        self.z = np.asarray(blocks[self.first].Z[:, 0], dtype=float)
        starts = np.cumsum([0] + [blocks[t].m for t in self.rest])
        n = len(self.codes)
        self.q2 = int(starts[-1])
        # each row's column among the other terms' levels, and its covariate, per other term: (n, T - 1)
        self.cols = np.column_stack([blocks[t].codes + s for t, s in zip(self.rest, starts)] or [np.zeros((n, 0), int)])
        self.z2 = np.column_stack([blocks[t].Z[:, 0] for t in self.rest] or [np.zeros((n, 0))]).astype(float)
        self.rows = np.arange(n)

    @staticmethod
    def applies(design) -> bool:
        """Every term scalar and n x (levels of all but the largest term) small enough to hold."""
        ms = sorted(b.m for b in design.blocks)
        return all(b.k == 1 for b in design.blocks) and design.nobs * sum(ms[:-1]) <= MAX_DENSE_SOLUTION

    def _system(self, theta: np.ndarray, w: np.ndarray):
        """M = A'diag(w)A + I in blocks: the first term's diagonal D, the coupling B (m x q2, dense) and the
        Cholesky factor of the Schur complement S = M22 - B'D^-1 B; a1, a2 the rows' entries of A."""
        q2, cols = self.q2, self.cols
        a1 = theta[self.first] * self.z
        a2 = self.z2 * theta[self.rest]
        D = 1.0 + np.bincount(self.codes, a1 * a1 * w, self.m)
        M22 = np.zeros(q2 * q2)
        for t in range(cols.shape[1]):
            for s in range(cols.shape[1]):
                M22 += np.bincount(cols[:, t] * q2 + cols[:, s], a2[:, t] * w * a2[:, s], q2 * q2)
        T2 = cols.shape[1]
        entries = ((a1 * w)[:, None] * a2).ravel()
        B = sp.csr_matrix((entries, (np.repeat(self.codes, T2), cols.ravel())), shape=(self.m, q2))
        coupling = (B.T @ sp.diags(1.0 / D) @ B).toarray()  # B'D^-1 B from the sparse B (few levels per row)
        S = M22.reshape(q2, q2) + np.eye(q2) - coupling
        return a1, a2, D, B.toarray(), sla.cho_factor(S, lower=True, check_finite=False)

    @staticmethod
    def _solve(system, v1: np.ndarray, v2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """M^-1 [v1; v2] by block elimination."""
        _, _, D, B, chol = system
        r2 = sla.cho_solve(chol, v2 - B.T @ (v1 / D), check_finite=False)
        return (v1 - B @ r2) / D, r2

    def _per_term(self, v1: np.ndarray, v2: np.ndarray) -> np.ndarray:
        """n x T: for each row and term t, z_ti v[col_t(i)] (v = [v1; v2] a vector over the terms' levels)."""
        out = np.zeros((len(self.codes), self.n_terms))
        out[:, self.rest] = self.z2 * v2[self.cols]
        out[:, self.first] = self.z * v1[self.codes]
        return out

    def gradient(self, theta: np.ndarray, beta: np.ndarray, family: Family,
                 with_size: bool = False) -> tuple[float, np.ndarray, np.ndarray, float | None]:
        """The Laplace objective and its derivatives in theta (per term), beta and (with_size) log NB size: at fixed
        eta, sum_i -2 dl_i + h_i dV_i + (A r)_i ds_i (the modes' move carried by r, as for beta)."""
        p, g, cols = self.pirls, self.codes, self.cols
        mode = p.mode(theta, beta, family)
        eta = mode.eta
        u1 = mode.u[self.first][:, 0]
        u2 = np.concatenate([mode.u[t][:, 0] for t in self.rest] or [np.zeros(0)])
        score = family.score(p.y, eta, p.prior_weights)
        W = p.weights(eta, family, "observed")
        expected = p.information == "expected" and not family.canonical
        kind = "expected" if expected else "observed"
        V = p.weights(eta, family, kind) if expected else W
        dV = (p.weights(eta + WEIGHT_STEP, family, kind) - p.weights(eta - WEIGHT_STEP, family, kind)) / (2 * WEIGHT_STEP)
        system = self._system(theta, V)
        a1, a2, D, B, chol = system
        Bg = B[g]  # (n, q2): each row's first-term level's coupling
        C2 = -(a1 / D[g])[:, None] * Bg
        for t in range(cols.shape[1]):
            C2[self.rows, cols[:, t]] += a2[:, t]
        X2 = sla.cho_solve(chol, C2.T, check_finite=False)  # (q2, n): the other terms' part of M^-1 a_i
        h = a1 * a1 / D[g] + np.sum(C2 * X2.T, axis=1)  # leverages a_i' M^-1 a_i
        C = np.zeros((len(g), self.n_terms))  # C[i, t] = z_ti (M^-1 a_i)[col_t(i)]
        C[:, self.rest] = self.z2 * X2[cols, self.rows[:, None]]
        C[:, self.first] = self.z * (a1 - np.sum(Bg * X2.T, axis=1)) / D[g]
        vh = dV * h
        v2 = sum(np.bincount(cols[:, t], a2[:, t] * vh, self.q2) for t in range(cols.shape[1]))
        r1, r2 = self._solve(self._system(theta, W) if expected else system, np.bincount(g, a1 * vh, self.m),
                             np.asarray(v2, dtype=float))
        Ar = a1 * r1[g] + np.sum(a2 * r2[cols], axis=1)
        Du, Dr = self._per_term(u1, u2), self._per_term(r1, r2)
        d_theta = (-2.0 * Du.T @ score + 2.0 * C.T @ V + Du.T @ vh + Dr.T @ score - Du.T @ (W * Ar))
        d_beta = p.design.X.T @ (-2.0 * score + vh - W * Ar)
        d_size = None
        if with_size:
            dl, ds, dw = p.size_partials(eta, family, kind)
            d_size = float(np.sum(-2.0 * dl + h * dw + Ar * ds))
        return mode.laplace, d_theta, d_beta, d_size
