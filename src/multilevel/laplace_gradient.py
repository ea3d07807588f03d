"""PIRLS and the exact gradient of the Laplace objective when every random-effect term is scalar (any number of terms).

With A = Z Lambda (n x q), M = A'VA + I (V the Laplace weights) and the modes u-hat,

    D = -2 sum log f(y | u-hat) + |u-hat|^2 + log det M.

The term with most levels is eliminated as a diagonal: M = [D B; B' M22], leaving the others' Schur complement
S = M22 - B'D^-1 B. When the first term is nested in another (each of its levels within one level of that term,
as an observation-level effect within broods), that term's block of S is diagonal too (D2) and is eliminated
next: S = [D2 E; E' S33], and only S3 = S33 - E'D2^-1 E, over the remaining terms, is dense (as MixedModels.jl
keeps nested blocks diagonal). Which entries of B, M22 and B'D^-1 B each row feeds never changes, so they are
found once (`_Pattern`) and every system is a few sums over rows and one small dense Cholesky: the modes' Newton
steps at fixed beta (the steps of `pirls.Pirls`, same weights and stopping rule, so the same values) need no
sparse matrix rebuilt.

The first two terms of D need only their partial derivatives (u-hat is their minimiser). d log det M =
tr(M^-1 dM): Lambda's own derivative gives 2 sum_i V_i z_ti (M^-1 A')[col_t(i), i], and the weights' move with
eta gives sum_i V'_i h_i d eta_i, h_i = a_i' M^-1 a_i the leverages, where d eta includes A du-hat, du-hat from
implicit differentiation of A's = u (observed information W): one more solve, r = M_W^-1 A'(V' h), carries all
of it. The leverages come from S^-1 and each row's few nonzeros of the other terms' part of M^-1 a_i's
right-hand side: for models whose other terms have moderately many levels (`applies`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from .errors import MultilevelError
from .families import Family
from .newton_modes import STEP_TOL, JointMode, iterate
from .pirls import Pirls

DENSE_PAIRS = 8  # B is held dense when its level pairs are at least 1/8 of m x q2^2 (the dense product's size)
MAX_DENSE_SOLUTION = 4_000_000  # n x (levels of the other terms) entries held at once; larger: derivative-free search


def _blocks_of(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenated ranges starts[j] .. starts[j] + sizes[j] - 1."""
    total = int(np.sum(sizes))
    offsets = np.repeat(np.cumsum(sizes) - sizes, sizes)
    return np.repeat(starts, sizes) + np.arange(total) - offsets


def _nested(first: np.ndarray, other: np.ndarray) -> bool:
    """Whether every level of the first term's codes lies within one level of the other's."""
    return len(np.unique(first * (int(other.max()) + 1) + other)) == len(np.unique(first))


def _cholesky(S: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor (empty for an empty S); a MultilevelError if S is not positive definite."""
    if S.size == 0:
        return S
    L, info = lapack.dpotrf(S, lower=1, clean=1)
    if info != 0:
        raise MultilevelError("penalised IRLS failed: the weighted system is not positive definite")
    return L


def _cho_solve(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(L L')^-1 b; L a vector: the square roots of a diagonal matrix."""
    if L.ndim == 1:
        return b / (L * L)
    return b if L.size == 0 else lapack.dpotrs(L, b, lower=1)[0]


def _cho_inverse(L: np.ndarray) -> np.ndarray:
    """(L L')^-1, both triangles (L a vector: the square roots of a diagonal matrix)."""
    if L.ndim == 1:
        return np.diag(1.0 / (L * L))
    if L.size == 0:
        return L
    inverse, info = lapack.dpotri(L, lower=1)
    if info != 0:
        raise MultilevelError("penalised IRLS failed: the weighted system is not positive definite")
    inverse += inverse.T  # potri fills the lower triangle; the upper one is L's, zero
    inverse.flat[:: len(L) + 1] *= 0.5
    return inverse


class _Pattern:
    """Where each row's products land in B (m x q2, its nonzeros sorted by first-term level), in S (dense, flat)
    and in the rows' right-hand sides c_i = a2_i - (a1_i / D_g) B[g, :] (each row: its level's nonzeros of B)."""

    def __init__(self, codes: np.ndarray, m: int, cols: np.ndarray, q2: int):
        n, t2 = cols.shape
        keys, self.b_slot = np.unique((codes[:, None] * q2 + cols).ravel(), return_inverse=True)
        self.b_slot = self.b_slot.ravel()
        self.b_row, self.b_col = keys // q2, keys % q2
        counts = np.bincount(self.b_row, minlength=m)
        starts = np.cumsum(counts) - counts
        # S: M22's products (row i, terms t and s) and B'D^-1 B's (two nonzeros of one level of B)
        pair_a = np.repeat(np.arange(len(keys)), counts[self.b_row])
        pair_b = _blocks_of(starts[self.b_row], counts[self.b_row])
        self.pair_a, self.pair_b = pair_a, pair_b
        m22 = (cols[:, :, None] * q2 + cols[:, None, :]).ravel()
        self.s_index = np.concatenate([m22, self.b_col[pair_a] * q2 + self.b_col[pair_b]])
        # the rows' right-hand sides, CSR
        sizes = counts[codes]
        self.c_indptr = np.concatenate([[0], np.cumsum(sizes)])
        self.c_row = np.repeat(np.arange(n), sizes)
        self.c_nz = _blocks_of(starts[codes], sizes)
        self.c_col = self.b_col[self.c_nz]
        self.c_own = (self.c_indptr[:-1, None] + self.b_slot.reshape(n, t2) - starts[codes][:, None]).ravel()

    @staticmethod
    def size(codes: np.ndarray, cols: np.ndarray, q2: int) -> int:
        """Entries the pattern holds at most (B'D^-1 B's pairs, the rows' right-hand sides)."""
        keys = np.unique((codes[:, None] * q2 + cols).ravel())
        counts = np.bincount(keys // max(q2, 1))
        return int(np.sum(counts**2) + np.sum(counts[codes]))


@dataclass
class TermsSystem:
    """M = A'diag(w)A + I: the rows' entries of A (first term, others), the diagonal D, B's nonzeros, the second
    diagonal D2 with K = D2^-1 E, and the lower Cholesky factor L of S3 (a vector when S3 is diagonal)."""

    a1: np.ndarray
    a2: np.ndarray
    D: np.ndarray
    B: np.ndarray
    D2: np.ndarray
    K: np.ndarray
    L: np.ndarray

    @property
    def logdet(self) -> float:
        """log det M."""
        return float(np.sum(np.log(self.D)) + np.sum(np.log(self.D2)) + 2.0 * np.sum(np.log(self.L if self.L.ndim == 1 else np.diag(self.L))))


class ScalarTermsGradient:
    """Modes, value and exact gradient in (theta, beta) of `pirls`'s Laplace objective, all terms scalar; warm starts
    shared with `pirls`."""

    def __init__(self, pirls: Pirls):
        blocks = pirls.design.blocks
        self.pirls, self.n_terms = pirls, len(blocks)
        self.first = int(np.argmax([b.m for b in blocks]))  # eliminated as a diagonal
        self.codes, self.m = blocks[self.first].codes, blocks[self.first].m
        rest = sorted((t for t in range(len(blocks)) if t != self.first), key=lambda t: -blocks[t].m)
        nesting = [t for t in rest if _nested(self.codes, blocks[t].codes)]  # the second diagonal, if any
        self.rest = nesting[:1] + [t for t in rest if t not in nesting[:1]]
        self.m2 = blocks[nesting[0]].m if nesting else 0
        self.z = np.asarray(blocks[self.first].Z[:, 0], dtype=float)
        self.starts = np.cumsum([0] + [blocks[t].m for t in self.rest])
        self.q2 = int(self.starts[-1])
        # each row's column among the other terms' levels, and its covariate, per other term: (n, T - 1)
        self.cols = np.column_stack([blocks[t].codes + s for t, s in zip(self.rest, self.starts)])
        self.cols_flat = self.cols.ravel()
        self.z2 = np.column_stack([blocks[t].Z[:, 0] for t in self.rest]).astype(float)
        self.rows = np.arange(len(self.codes))
        self.pattern = _Pattern(self.codes, self.m, self.cols, self.q2)
        pat = self.pattern
        # S's entries by block, flat one after the other: the second diagonal D2 (S[:m2, :m2] holds nothing else: the
        # first term is nested in that one), E = S[:m2, m2:] and S33 = S[m2:, m2:] (the mirror image E' not summed)
        m2, r = self.m2, self.q2 - self.m2
        row, col = np.divmod(pat.s_index, self.q2)
        keep = (row < m2) | (col >= m2)
        n_m22 = self.cols.size * self.cols.shape[1]
        self._m22_keep = np.flatnonzero(keep[:n_m22])  # M22's products kept, their rows, and the pairs of B'D^-1 B
        self._m22_rows = self._m22_keep // (self.cols.shape[1] ** 2)
        pairs = np.flatnonzero(keep[n_m22:])
        self._pair_a, self._pair_b = pat.pair_a[pairs], pat.pair_b[pairs]
        self._pair_row = pat.b_row[self._pair_a]
        row, col = row[keep], col[keep]
        self._s_target = np.where(row >= m2, m2 + m2 * r + (row - m2) * r + col - m2,
                                  np.where(col < m2, row, m2 + row * r + col - m2))
        self._s_size = m2 + m2 * r + r * r
        # E's structural nonzeros (row by row): with few per row (the second term nested in the others, one each),
        # E'D2^-1 E is summed over pairs of nonzeros in one row and K applied as a sparse matrix
        e_flat = np.unique(self._s_target[(self._s_target >= m2) & (self._s_target < m2 + m2 * r)]) - m2
        self._e_row, e_col = np.divmod(e_flat, max(r, 1))
        counts = np.bincount(self._e_row, minlength=m2)
        starts = np.cumsum(counts) - counts
        self._e_pair_a = np.repeat(np.arange(len(e_flat)), counts[self._e_row])
        self._e_pair_b = _blocks_of(starts[self._e_row], counts[self._e_row])
        self._e_flat = e_flat
        self._sparse_e = 8 * len(self._e_pair_a) < m2 * r * r
        self._e_pair_target = e_col[self._e_pair_a] * r + e_col[self._e_pair_b]
        # S3 diagonal (each term nested in the next: INDEX in BROOD in LOCATION): its factor is a vector
        s33 = self._s_target[self._s_target >= m2 + m2 * r] - (m2 + m2 * r)
        self._diagonal_s3 = bool(np.all(s33 // max(r, 1) == s33 % max(r, 1))) and self._sparse_e and bool(
            np.all(self._e_pair_target // max(r, 1) == self._e_pair_target % max(r, 1)))
        # B dense (m x q2) when its pairs fill much of B'D^-1 B (crossed terms whose levels all meet, as subjects and
        # items): B'D^-1 B and the leverages are then a few matrix products (BLAS) rather than sums over pairs
        self._dense_b = m2 == 0 and DENSE_PAIRS * len(self._pair_a) >= self.m * self.q2**2 and (
            self.m * self.q2 <= MAX_DENSE_SOLUTION)
        if self._dense_b:
            self._b_flat = pat.b_row * self.q2 + pat.b_col
            self._pair_a = self._pair_b = self._pair_row = np.zeros(0, int)
            self._s_target = self._s_target[: len(self._m22_keep)]
        self._K = sp.csr_matrix((np.zeros(len(e_flat)), e_col, np.concatenate([[0], np.cumsum(counts)])), shape=(m2, r))
        # the rows' right-hand sides as a sparse matrix whose values `_leverages` replaces; their nonzeros in the
        # second diagonal's levels and in the dense part (flat in the rows' dense solutions), and for the first, K's
        # nonzeros in their row (K sparse) with where those fall in the rows' dense solutions
        self._rhs = sp.csr_matrix((np.zeros(len(pat.c_row)), pat.c_col, pat.c_indptr), shape=(len(self.codes), self.q2))
        self._c_second = np.flatnonzero(pat.c_col < m2)
        dense = np.flatnonzero(pat.c_col >= m2)
        self._c_dense, self._c_dense_flat = dense, pat.c_row[dense] * r + pat.c_col[dense] - m2
        k_counts = np.diff(self._K.indptr)[pat.c_col[self._c_second]]
        self._ck_entry = np.repeat(np.arange(len(self._c_second)), k_counts)
        self._ck_pos = _blocks_of(self._K.indptr[pat.c_col[self._c_second]], k_counts)
        self._ck_flat = pat.c_row[self._c_second][self._ck_entry] * r + self._K.indices[self._ck_pos]

    @staticmethod
    def applies(design) -> bool:
        """Two or more terms, every one scalar, and n x (levels of all but the largest term) small enough to hold."""
        blocks = design.blocks
        if len(blocks) < 2 or any(b.k != 1 for b in blocks):
            return False
        first = int(np.argmax([b.m for b in blocks]))
        others = [b for t, b in enumerate(blocks) if t != first]
        q2 = sum(b.m for b in others)
        if design.nobs * q2 > MAX_DENSE_SOLUTION:
            return False
        starts = np.cumsum([0] + [b.m for b in others])
        cols = np.column_stack([b.codes + s for b, s in zip(others, starts)])
        return _Pattern.size(blocks[first].codes, cols, q2) <= MAX_DENSE_SOLUTION

    # ------------------------------------------------------------------ the blocked system
    def _entries(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows' entries of A = Z Lambda: first term (n,), the others (n, T - 1)."""
        return theta[self.first] * self.z, self.z2 * theta[self.rest]

    def _products(self, a1: np.ndarray, a2: np.ndarray) -> tuple:
        """What M's blocks need of A's entries alone (fixed while theta is): a1^2, a1 a2 and M22's kept products."""
        return a1, a2, a1 * a1, a1[:, None] * a2, (a2[:, :, None] * a2[:, None, :]).ravel()[self._m22_keep]

    def _system(self, products: tuple, w: np.ndarray) -> TermsSystem:
        """M at weights w in blocks (`products`: `_products` of A's entries); a MultilevelError if it is not positive
        definite."""
        pat, q2, m2 = self.pattern, self.q2, self.m2
        a1, a2, a1a1, a1a2, a2a2 = products
        D = 1.0 + np.bincount(self.codes, a1a1 * w, self.m)
        B = np.bincount(pat.b_slot, (a1a2 * w[:, None]).ravel(), len(pat.b_row))
        coupling = B[self._pair_a] * B[self._pair_b] / D[self._pair_row]
        blocks = np.bincount(self._s_target, np.concatenate([a2a2 * w[self._m22_rows], -coupling]), self._s_size)
        r = q2 - m2
        D2 = blocks[:m2] + 1.0
        if not np.all(D2 > 0):
            raise MultilevelError("penalised IRLS failed: the weighted system is not positive definite")
        E, S33 = blocks[m2 : m2 + m2 * r].reshape(m2, r), blocks[m2 + m2 * r :].reshape(r, r)
        S33.flat[:: r + 1] += 1.0
        if self._dense_b:
            dense = self._dense(B)
            S33 -= (dense / D[:, None]).T @ dense
        K = E / D2[:, None]
        if self._sparse_e:
            e = E.ravel()[self._e_flat]
            S33 -= np.bincount(self._e_pair_target, e[self._e_pair_a] * (e / D2[self._e_row])[self._e_pair_b],
                               r * r).reshape(r, r)
            if self._diagonal_s3:
                d3 = np.diagonal(S33)
                if not np.all(d3 > 0):
                    raise MultilevelError("penalised IRLS failed: the weighted system is not positive definite")
                return TermsSystem(a1, a2, D, B, D2, K, np.sqrt(d3))
            return TermsSystem(a1, a2, D, B, D2, K, _cholesky(S33))
        return TermsSystem(a1, a2, D, B, D2, K, _cholesky(S33 - E.T @ K))

    def _solve(self, system: TermsSystem, v1: np.ndarray, v2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """M^-1 [v1; v2] by block elimination."""
        pat, m2 = self.pattern, self.m2
        rhs = v2 - np.bincount(pat.b_col, system.B * (v1 / system.D)[pat.b_row], self.q2)
        tail = _cho_solve(system.L, rhs[m2:] - system.K.T @ rhs[:m2])
        r2 = np.concatenate([rhs[:m2] / system.D2 - system.K @ tail, tail])
        return (v1 - np.bincount(pat.b_row, system.B * r2[pat.b_col], self.m)) / system.D, r2

    def _transpose_times(self, a1: np.ndarray, a2: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A'v in the two blocks."""
        return np.bincount(self.codes, a1 * v, self.m), np.bincount(self.cols_flat, (a2 * v[:, None]).ravel(), self.q2)

    def _times(self, a1: np.ndarray, a2: np.ndarray, u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
        """A u."""
        return a1 * u1[self.codes] + np.sum(a2 * u2[self.cols], axis=1)

    # ------------------------------------------------------------------ modes
    def mode(self, theta: np.ndarray, beta: np.ndarray | None, family: Family, tol: float = STEP_TOL) -> JointMode:
        """Modes at theta and beta by PIRLS (as `Pirls.mode`; beta None: found jointly, lme4's nAGQ = 0); raises
        MultilevelError as Pirls. `tol`: the stopping rule's step size (Pirls's unless asked for tighter)."""
        p, X = self.pirls, self.pirls.design.X
        joint = beta is None
        beta = p.beta.copy() if joint else np.asarray(beta, dtype=float)
        theta = np.asarray(theta, dtype=float)
        products = self._products(*self._entries(theta))
        a1, a2 = products[:2]

        def evaluate(beta, u):
            eta = X @ beta + p.offset + self._times(a1, a2, *u)
            minus2, score, w = p.evaluation(eta, family)
            return minus2 + float(u[0] @ u[0] + u[1] @ u[1]), (eta, score, w)

        def newton_step(beta, u, state):
            _, score, w = state
            system = self._system(products, w)
            s1, s2 = self._transpose_times(a1, a2, score)
            d1, d2 = self._solve(system, s1 - u[0], s2 - u[1])
            if not joint:
                return beta, [u[0] + d1, u[1] + d2], system
            db, d1, d2 = self._joint_step(system, w, score, d1, d2)
            return beta + db, [u[0] + d1, u[1] + d2], system

        u = [p.u[self.first][:, 0].copy(), np.concatenate([p.u[t][:, 0] for t in self.rest])]
        pdev, state = evaluate(beta, u)
        beta, (u1, u2), state, pdev, system = iterate(beta, u, state, pdev, newton_step, evaluate, tol,
                                                      lambda: f"theta = {np.round(theta, 4)}")
        if joint:
            p.beta = beta.copy()
        return self._finish(theta, beta, u1, u2, state, pdev, products, system, family)

    def _joint_step(self, system: TermsSystem, w: np.ndarray, score: np.ndarray, r1: np.ndarray, r2: np.ndarray):
        """The Newton step in (beta, u) together from the step in u alone (r = M^-1 (A's - u)): beta's by the Schur
        complement X'WX - X'WA M^-1 A'WX, the modes' by one solve per fixed-effect column."""
        information, F1, F2, Q1, Q2 = self._beta_information(system, w)
        try:
            db = np.linalg.solve(information, self.pirls.design.X.T @ score - F1.T @ r1 - F2.T @ r2)
        except np.linalg.LinAlgError:
            raise MultilevelError("penalised IRLS failed: the weighted system is not positive definite") from None
        return db, r1 - Q1 @ db, r2 - Q2 @ db

    def _beta_information(self, system: TermsSystem, w: np.ndarray):
        """beta's information given theta, X'WX - X'WA M^-1 A'WX (system: M at w), with A'WX and M^-1 A'WX in the
        two blocks."""
        X = self.pirls.design.X
        WX = w[:, None] * X
        F = [self._transpose_times(system.a1, system.a2, column) for column in WX.T]  # A'WX, by column
        Q = [self._solve(system, f1, f2) for f1, f2 in F]  # M^-1 A'WX
        F1, F2 = np.column_stack([f[0] for f in F]), np.column_stack([f[1] for f in F])
        Q1, Q2 = np.column_stack([q[0] for q in Q]), np.column_stack([q[1] for q in Q])
        return X.T @ WX - F1.T @ Q1 - F2.T @ Q2, F1, F2, Q1, Q2

    def beta_precision_factor(self, mode: JointMode, family: Family) -> np.ndarray:
        """Lower Cholesky factor of beta's information given theta at the modes, with the Laplace weights (lme4's RX)."""
        p = self.pirls
        kind = p.determinant_kind(family)
        return np.linalg.cholesky(self._beta_information(mode.system, p.weights(mode.eta, family, kind))[0])

    def _finish(self, theta, beta, u1, u2, state, pdev, products, system, family) -> JointMode:
        """Store the modes for the next start; the system with the expected information if `pirls` asks for it."""
        p = self.pirls
        p.u[self.first] = u1[:, None].copy()
        for j, t in enumerate(self.rest):
            p.u[t] = u2[self.starts[j] : self.starts[j + 1], None].copy()
        eta, score, w = state
        observed = system
        if p.determinant_kind(family) == "expected":
            system = self._system(products, p.weights(eta, family, "expected"))
        return JointMode(theta, beta, u1, u2, eta, system, pdev - float(u1 @ u1 + u2 @ u2), score, w, observed)

    def laplace(self, theta: np.ndarray, beta: np.ndarray, family: Family) -> float:
        """The Laplace objective (-2 log-likelihood) at theta and beta."""
        return self.mode(theta, beta, family).laplace

    # ------------------------------------------------------------------ the gradient
    def _per_term(self, v1: np.ndarray, v2: np.ndarray) -> np.ndarray:
        """n x T: for each row and term t, z_ti v[col_t(i)] (v = [v1; v2] a vector over the terms' levels)."""
        out = np.zeros((len(self.codes), self.n_terms))
        out[:, self.rest] = self.z2 * v2[self.cols]
        out[:, self.first] = self.z * v1[self.codes]
        return out

    def _dense(self, B: np.ndarray) -> np.ndarray:
        """B's nonzeros as the dense m x q2 matrix."""
        dense = np.zeros(self.m * self.q2)
        dense[self._b_flat] = B
        return dense.reshape(self.m, self.q2)

    def _dense_leverages(self, system: TermsSystem) -> tuple[np.ndarray, np.ndarray]:
        """`_leverages` with B dense and no second diagonal: with c_i = sum_t a2_it e_col_t(i) - f_i B_g (f_i = a1_i /
        D_g), S^-1 c_i at the row's own columns and c_i'S^-1 c_i come from S^-1's entries among them, G = B S^-1 and
        B_g S^-1 B_g', per row O(T^2)."""
        g, a1, a2 = self.codes, system.a1, system.a2
        dense = self._dense(system.B)
        inverse = _cho_inverse(system.L)
        G = dense @ inverse
        BSB = np.einsum("gq,gq->g", G, dense)[g]
        f = a1 / system.D[g]
        own = inverse[self.cols[:, :, None], self.cols[:, None, :]]  # (n, T - 1, T - 1)
        G_own = G[g[:, None], self.cols]
        y = np.einsum("its,is->it", own, a2) - f[:, None] * G_own  # (S^-1 c_i) at the row's own columns
        b_solution = np.sum(a2 * G_own, axis=1) - f * BSB  # B_g S^-1 c_i
        h = a1 * f + np.sum(a2 * y, axis=1) - f * b_solution
        C = np.zeros((len(g), self.n_terms))
        C[:, self.rest] = self.z2 * y
        C[:, self.first] = self.z * (a1 - b_solution) / system.D[g]
        return h, C

    def _leverages(self, system: TermsSystem) -> tuple[np.ndarray, np.ndarray]:
        """h_i = a_i' M^-1 a_i and C[i, t] = z_ti (M^-1 a_i)[col_t(i)], from each row's right-hand side c_i (the
        other terms' part of M^-1 a_i is S^-1 c_i, needed only where c_i is not zero): the dense part S3^-1 by
        potri, the second diagonal's part from it as in `_solve`."""
        if self._dense_b:
            return self._dense_leverages(system)
        pat, g, n = self.pattern, self.codes, len(self.codes)
        a1, D, B, K = system.a1, system.D, system.B, system.K
        c = -(a1 / D[g])[pat.c_row] * B[pat.c_nz] + np.bincount(pat.c_own, system.a2.ravel(), len(pat.c_row))
        inverse = _cho_inverse(system.L)
        if self._sparse_e:
            self._K.data = K.ravel()[self._e_flat]
            inverse_K = -K / (system.L * system.L) if system.L.ndim == 1 else -(self._K @ inverse)
            stacked = np.vstack([inverse_K, inverse])  # S^-1's columns of the dense part
        else:
            stacked = np.vstack([-K @ inverse, inverse])
        self._rhs.data = c
        tail = self._rhs @ stacked  # (n, q2 - m2)
        Gc = np.empty(len(c))  # (S^-1 c_i) at c_i's nonzeros
        second = self._c_second
        Gc[self._c_dense] = tail.ravel()[self._c_dense_flat]
        if self._sparse_e:  # K_b . tail_i over K's nonzeros in row b
            K_tail = np.bincount(self._ck_entry, self._K.data[self._ck_pos] * tail.ravel()[self._ck_flat], len(second))
        else:
            K_tail = np.einsum("ij,ij->i", tail[pat.c_row[second]], K[pat.c_col[second]])
        Gc[second] = c[second] / system.D2[pat.c_col[second]] - K_tail
        h = a1 * a1 / D[g] + np.bincount(pat.c_row, c * Gc, n)
        C = np.zeros((n, self.n_terms))
        C[:, self.rest] = self.z2 * Gc[pat.c_own].reshape(n, -1)
        C[:, self.first] = self.z * (a1 - np.bincount(pat.c_row, B[pat.c_nz] * Gc, n)) / D[g]
        return h, C

    def gradient(self, theta: np.ndarray, beta: np.ndarray, family: Family,
                 with_size: bool = False, tol: float = STEP_TOL) -> tuple[float, np.ndarray, np.ndarray, float | None]:
        """The Laplace objective and its derivatives in theta (per term), beta and (with_size) log NB size: at fixed
        eta, sum_i -2 dl_i + h_i dV_i + (A r)_i ds_i (the modes' move carried by r, as for beta). `tol`: PIRLS's
        stopping step (`mode`)."""
        p = self.pirls
        mode = self.mode(theta, beta, family, tol)
        eta, system = mode.eta, mode.system
        a1, a2 = system.a1, system.a2
        score, W = mode.score, mode.w_observed
        kind = p.determinant_kind(family)
        expected = kind == "expected"
        V = p.weights(eta, family, kind) if expected else W
        dV = p.weights_slope(eta, family, kind)
        h, C = self._leverages(system)
        vh = dV * h
        r1, r2 = self._solve(mode.observed, *self._transpose_times(a1, a2, vh))
        Ar = self._times(a1, a2, r1, r2)
        Du, Dr = self._per_term(mode.u1, mode.u2), self._per_term(r1, r2)
        d_theta = (-2.0 * Du.T @ score + 2.0 * C.T @ V + Du.T @ vh + Dr.T @ score - Du.T @ (W * Ar))
        d_beta = p.design.X.T @ (-2.0 * score + vh - W * Ar)
        d_size = None
        if with_size:
            dl, ds, dw = p.size_partials(eta, family, kind)
            d_size = float(np.sum(-2.0 * dl + h * dw + Ar * ds))
        return mode.laplace, d_theta, d_beta, d_size
