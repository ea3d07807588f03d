"""The exact gradient of the Laplace objective when every random-effect term is scalar (any number of terms).

With A = Z Lambda (n x q), M = A'VA + I (V the Laplace weights) and the modes u-hat from `pirls`,

    D = -2 sum log f(y | u-hat) + |u-hat|^2 + log det M.

The first two terms need only their partial derivatives (u-hat is their minimiser). d log det M = tr(M^-1 dM):
Lambda's own derivative gives 2 sum_i V_i z_ti (M^-1 A')[col_t(i), i], and the weights' move with eta gives
sum_i V'_i h_i d eta_i, h_i = a_i' M^-1 a_i the leverages, where d eta includes A du-hat, du-hat from implicit
differentiation of A's = u (observed information W): one more solve, r = M_W^-1 A'(V' h), carries all of it.
One sparse LU of M and n right-hand sides per gradient: for models of moderate size (`applies`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from .crossprod import z_matrix
from .families import Family
from .pirls import Pirls

MAX_DENSE_SOLUTION = 4_000_000  # q x n entries of M^-1 A' held at once; larger models keep derivative-free search
WEIGHT_STEP = 1e-5  # central-difference step in eta of the weights' derivative (error ~1e-10)


class ScalarTermsGradient:
    """Value and exact gradient in (theta, beta) of `pirls`'s Laplace objective, all terms scalar."""

    def __init__(self, pirls: Pirls):
        blocks = pirls.design.blocks
        self.pirls = pirls
        self.Z = sp.hstack([z_matrix(b) for b in blocks]).tocsr()  # n x q
        term = np.repeat(np.arange(len(blocks)), [b.m for b in blocks])
        self.term_of_column = term
        self.by_term = sp.csr_matrix((np.ones(len(term)), (np.arange(len(term)), term)), shape=(len(term), len(blocks)))

    @staticmethod
    def applies(design) -> bool:
        """Every term scalar and M^-1 A' small enough to hold."""
        q = sum(b.m for b in design.blocks)
        return all(b.k == 1 for b in design.blocks) and q * design.nobs <= MAX_DENSE_SOLUTION

    def _per_term(self, v: np.ndarray) -> np.ndarray:
        """n x T: for each row and term, z_ti v[col_t(i)] (v a q-vector)."""
        return np.asarray((self.Z @ sp.diags(v)) @ self.by_term.toarray())

    def gradient(self, theta: np.ndarray, beta: np.ndarray, family: Family) -> tuple[float, np.ndarray, np.ndarray]:
        """The Laplace objective and its derivatives in theta (per term) and beta."""
        p = self.pirls
        mode = p.mode(theta, beta, family)
        eta, u = mode.eta, np.concatenate([x[:, 0] for x in mode.u])
        A = (self.Z @ sp.diags(theta[self.term_of_column])).tocsr()
        score = family.score(p.y, eta, p.prior_weights)
        W = p.weights(eta, family, "observed")
        expected = p.information == "expected" and not family.canonical
        kind = "expected" if expected else "observed"
        V = p.weights(eta, family, kind) if expected else W
        dV = (p.weights(eta + WEIGHT_STEP, family, kind) - p.weights(eta - WEIGHT_STEP, family, kind)) / (2 * WEIGHT_STEP)
        lu = _factor(A, V)
        Y = lu.solve(A.T.toarray())  # q x n: M^-1 A'
        C = np.asarray(self.Z.multiply(Y.T) @ self.by_term.toarray())  # C[i, t] = z_ti (M^-1 A')[col_t(i), i]
        h = C @ theta  # leverages a_i' M^-1 a_i
        vh = dV * h
        r = (_factor(A, W) if expected else lu).solve(A.T @ vh)
        Ar = A @ r
        Du, Dr = self._per_term(u), self._per_term(r)
        d_theta = (-2.0 * Du.T @ score + 2.0 * C.T @ V + Du.T @ vh + Dr.T @ score - Du.T @ (W * Ar))
        d_beta = p.design.X.T @ (-2.0 * score + vh - W * Ar)
        return mode.laplace, d_theta, d_beta


def _factor(A: sp.csr_matrix, w: np.ndarray):
    """Sparse LU of A' diag(w) A + I (symmetric positive definite: no pivoting off the diagonal)."""
    M = (A.T @ sp.diags(w) @ A + sp.identity(A.shape[1])).tocsc()
    return splu(M, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
