"""PIRLS and the exact gradient of the Laplace objective for random-effect terms with at least one vector among them,
e.g. (1 + x | g), (1 + x | g) + (1 | h) or crossed and nested vector terms (1 + x | subject) + (1 + x | item).

With eta = X beta + offset + sum_t z_ti' T_t u_t[level] (T_t term t's lower-triangular relative factor, theta its
entries column by column as lme4; a scalar term's T_t is theta_t), A = Z Lambda and M = A'WA + I, the first term (the
one of most levels x k, so that the rest is smallest) is eliminated group by group: each group's k x k
H_g = I + T' G_g T (G_g = sum_{i in g} w_i z_i z_i'), solved for all groups at once. The other terms' levels
(q2 = sum_t m_t k_t of them; each row has entries a2_i = T_t' z_ti at its levels' k_t columns) couple to it through
B_g = T' sum_{i in g} w_i z_i a2_i' and are left in the dense Schur complement S = M22 - sum_g B_g' H_g^-1 B_g (one
term only: S empty, each group on its own). The objective

    D(theta, beta) = -2 sum log f(y | u-hat) + |u-hat|^2 + log det M    (M with the Laplace weights V)

has the exact gradient of implicit differentiation (as `laplace_gradient`): the first two terms need their partial
derivatives only; d log det M = tr(M^-1 dM) takes Lambda's own move, 2 sum_i V_i z_i' dLambda M^-1 a_i, and the
weights' move with eta, sum_i V'_i h_i d eta_i (h_i = a_i' M^-1 a_i the leverages), whose part through the modes'
move is carried by one more solve, r = M_W^-1 A'(V' h) (observed information W). Every term's derivative in its T_t
is then Z_t' P_t (P_t: each row's k_t coefficients of a_i at its own levels), T_t's lower triangle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import cho_solve

from .engine import theta_to_T, tri_index
from .errors import MultilevelError
from .families import Family
from .newton_modes import STEP_TOL, JointMode, iterate
from .pirls import Pirls

NOT_POSITIVE = "penalised IRLS failed: the weighted system is not positive definite"
MAX_DENSE_ROWS = 4_000_000  # n x k x q2 entries held at once (q2: the other terms' levels x k_t); larger: BOBYQA


@dataclass
class VectorSystem:
    """M = A'diag(w)A + I in blocks: the rows' entries of A (first term (n, k), the others (n, c2)), each group's
    H_g and its inverse (m, k, k), H_g^-1 B_g (m, k, q2) and the lower Cholesky factor L of S (q2 x q2)."""

    a1: np.ndarray
    a2: np.ndarray
    H: np.ndarray
    Hinv: np.ndarray
    HB: np.ndarray
    L: np.ndarray

    @property
    def logdet(self) -> float:
        """log det M = sum_g log det H_g + log det S."""
        return _logdet(self.H) + 2.0 * float(np.sum(np.log(np.diagonal(self.L))))


def _cholesky(H: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a matrix or a stack of them; a MultilevelError if one is not positive definite (or
    not finite: weights that overflowed)."""
    try:
        L = np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        raise MultilevelError(NOT_POSITIVE) from None
    if not np.all(np.isfinite(L)):
        raise MultilevelError(NOT_POSITIVE)
    return L


def _logdet(H: np.ndarray) -> float:
    """Sum of the log-determinants of a stack of positive definite matrices."""
    return 2.0 * float(np.sum(np.log(np.diagonal(_cholesky(H), axis1=1, axis2=2))))


def _first_term(blocks) -> int:
    """The term eliminated group by group: the one of most levels x k (the dense rest is then smallest)."""
    return int(np.argmax([b.m * b.k for b in blocks]))


def _factor_gradient(Z: np.ndarray, per_row: np.ndarray) -> np.ndarray:
    """A term's derivative in its theta (T's lower triangle, lme4's order) from each row's coefficients of
    a_i = T'z_i: sum_i z_i per_row_i', its entries in T's lower triangle."""
    return (Z.T @ per_row)[tuple(np.array(tri_index(Z.shape[1])).T)]


def _inverse(H: np.ndarray) -> np.ndarray:
    """H_g^-1 for every group (k x k each: one inverse is cheaper than solves against many right-hand sides)."""
    try:
        return np.linalg.inv(H)
    except np.linalg.LinAlgError:
        raise MultilevelError(NOT_POSITIVE) from None


class VectorTermGradient:
    """Modes, value and exact gradient in (theta, beta) of `pirls`'s Laplace objective for terms with a vector among
    them (any number of vector and scalar terms); warm starts shared with `pirls`."""

    def __init__(self, pirls: Pirls):
        blocks = pirls.design.blocks
        self.first = _first_term(blocks)
        self.rest = [t for t in range(len(blocks)) if t != self.first]
        block = blocks[self.first]
        self.pirls, self.codes, self.m, self.k = pirls, block.codes, block.m, block.k
        self.Z = np.asarray(block.Z, dtype=float)  # (n, k)
        self.X = pirls.design.X
        n, k = self.Z.shape
        self.zz = (self.Z[:, :, None] * self.Z[:, None, :]).reshape(n, k * k)  # each row's z z'
        self.group_sum = sp.csr_matrix((np.ones(n), (self.codes, np.arange(n))), shape=(self.m, n))
        ks = [blocks[t].k for t in self.rest]
        self.starts = np.cumsum([0] + [blocks[t].m * blocks[t].k for t in self.rest])  # each term's levels x k_t
        self.q2 = int(self.starts[-1])
        self.entries = np.cumsum([0] + ks)  # each other term's entries in a row: c2 = sum_t k_t in all
        # each row's columns among the other terms' levels (level * k_t + j within its term) and its covariates: (n, c2)
        self.cols = np.column_stack([blocks[t].codes[:, None] * kt + s + np.arange(kt)
                                     for t, kt, s in zip(self.rest, ks, self.starts)] or [np.zeros((n, 0), int)])
        self.z2 = np.column_stack([blocks[t].Z for t in self.rest] or [np.zeros((n, 0))]).astype(float)
        self.rows = np.arange(n)
        # where each row's products land in M22 (q2 x q2) and in B (m, k, q2), flat
        self._m22_index = (self.cols[:, :, None] * self.q2 + self.cols[:, None, :]).ravel()
        self._b_index = ((self.codes[:, None, None] * k + np.arange(k)[None, :, None]) * self.q2
                         + self.cols[:, None, :]).ravel()

    @staticmethod
    def applies(design) -> bool:
        """Whether a random-effect term is a vector (k > 1) and n x k x q2 (k the first term's, q2 the other terms'
        levels x k_t) small enough to hold."""
        blocks = design.blocks
        if not any(b.k > 1 for b in blocks):
            return False
        first = _first_term(blocks)
        q2 = sum(b.m * b.k for t, b in enumerate(blocks) if t != first)
        return design.nobs * blocks[first].k * q2 <= MAX_DENSE_ROWS

    # ------------------------------------------------------------------ the blocked system
    def _entries(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """T and the rows' entries of A = Z Lambda: the first term's a1_i = T' z_i (n, k), the others' T_t' z_ti side
        by side (n, c2)."""
        slices = self.pirls.theta_slices
        T = theta_to_T(theta[slices[self.first]], self.k)
        a2 = np.empty_like(self.z2)
        for t, lo, hi in zip(self.rest, self.entries[:-1], self.entries[1:]):
            a2[:, lo:hi] = self.z2[:, lo:hi] @ theta_to_T(theta[slices[t]], hi - lo)
        return T, self.Z @ T, a2

    def _system(self, T: np.ndarray, a1: np.ndarray, a2: np.ndarray, w: np.ndarray) -> VectorSystem:
        """M at weights w in blocks (a1 = Z T); a MultilevelError if it is not positive definite."""
        m, k, q2 = self.m, self.k, self.q2
        H = np.eye(k) + T.T @ (self.group_sum @ (w[:, None] * self.zz)).reshape(m, k, k) @ T  # I + T' G_g T
        Hinv = _inverse(H)
        if not q2:  # one term: each group on its own
            return VectorSystem(a1, a2, H, Hinv, np.zeros((m, k, 0)), np.zeros((0, 0)))
        wa2 = w[:, None] * a2
        B = np.bincount(self._b_index, (a1[:, :, None] * wa2[:, None, :]).ravel(), m * k * q2).reshape(m, k, q2)
        HB = Hinv @ B
        S = np.bincount(self._m22_index, (wa2[:, :, None] * a2[:, None, :]).ravel(), q2 * q2).reshape(q2, q2)
        S = S + np.eye(q2) - np.einsum("gkp,gkq->pq", B, HB)
        return VectorSystem(a1, a2, H, Hinv, HB, _cholesky(S))

    def _solve_system(self, system: VectorSystem, v1: np.ndarray, v2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """M^-1 [v1; v2] (v1 (m, k), v2 (q2,)) by block elimination."""
        y2 = cho_solve((system.L, True), v2 - np.einsum("gkq,gk->q", system.HB, v1)) if self.q2 else v2
        return (system.Hinv @ v1[:, :, None])[:, :, 0] - system.HB @ y2, y2

    def _transpose_times(self, a1: np.ndarray, a2: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A'v in the two blocks."""
        return self.group_sum @ (v[:, None] * a1), np.bincount(self.cols.ravel(), (a2 * v[:, None]).ravel(), self.q2)

    def _times(self, a1: np.ndarray, a2: np.ndarray, u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
        """A u."""
        return np.einsum("ij,ij->i", a1, u1[self.codes]) + np.sum(a2 * u2[self.cols], axis=1)

    # ------------------------------------------------------------------ modes
    def mode(self, theta: np.ndarray, beta: np.ndarray | None, family: Family, tol: float = STEP_TOL) -> JointMode:
        """Modes at theta and beta by PIRLS (as `Pirls.mode`; beta None: found jointly, lme4's nAGQ = 0); raises
        MultilevelError as Pirls. `tol`: the stopping rule's step size (Pirls's unless asked for tighter)."""
        p, X = self.pirls, self.X
        theta = np.asarray(theta, dtype=float)
        T, a1, a2 = self._entries(theta)
        joint = beta is None
        beta = p.beta.copy() if joint else np.asarray(beta, dtype=float)

        def evaluate(beta, u):
            eta = X @ beta + p.offset + self._times(a1, a2, *u)
            minus2, score, w = p.evaluation(eta, family)
            return minus2 + float(np.sum(u[0] * u[0]) + u[1] @ u[1]), (eta, score, w)

        def newton_step(beta, u, state):
            _, score, w = state
            system = self._system(T, a1, a2, w)
            s1, s2 = self._transpose_times(a1, a2, score)
            d1, d2 = self._solve_system(system, s1 - u[0], s2 - u[1])
            if not joint:
                return beta, [u[0] + d1, u[1] + d2], system
            db, d1, d2 = self._joint_step(system, w, score, d1, d2)
            return beta + db, [u[0] + d1, u[1] + d2], system

        u = [p.u[self.first].copy(), np.concatenate([p.u[t].ravel() for t in self.rest] or [np.zeros(0)])]
        pdev, state = evaluate(beta, u)
        beta, (u1, u2), (eta, score, w), pdev, system = iterate(beta, u, state, pdev, newton_step, evaluate, tol,
                                                                lambda: f"theta = {np.round(theta, 4)}")
        p.u[self.first] = u1.copy()
        for j, t in enumerate(self.rest):
            p.u[t] = u2[self.starts[j] : self.starts[j + 1]].reshape(-1, p.ks[t]).copy()
        if joint:
            p.beta = beta.copy()
        observed = system
        if p.determinant_kind(family) == "expected":
            system = self._system(T, a1, a2, p.weights(eta, family, "expected"))
        minus2 = pdev - float(np.sum(u1 * u1) + u2 @ u2)
        return JointMode(theta, beta, u1, u2, eta, system, minus2, score, w, observed)

    def _joint_step(self, system: VectorSystem, w: np.ndarray, score: np.ndarray, r1: np.ndarray, r2: np.ndarray):
        """The Newton step in (beta, u) together from the step in u alone (r = M^-1 (A's - u)): beta's by the Schur
        complement X'WX - X'WA M^-1 A'WX, the modes' by one solve per fixed-effect column."""
        information, F, Q = self._beta_information(system, w)
        try:
            db = np.linalg.solve(information, self.X.T @ score - np.array([np.sum(f1 * r1) + f2 @ r2 for f1, f2 in F]))
        except np.linalg.LinAlgError:
            raise MultilevelError(NOT_POSITIVE) from None
        Q1, Q2 = np.array([q[0] for q in Q]), np.array([q[1] for q in Q]).reshape(len(Q), -1)
        return db, r1 - np.einsum("jgk,j->gk", Q1, db), r2 - Q2.T @ db

    def _beta_information(self, system: VectorSystem, w: np.ndarray):
        """beta's information given theta, X'WX - X'WA M^-1 A'WX (system: M at w), with A'WX and M^-1 A'WX by column."""
        WX = w[:, None] * self.X
        F = [self._transpose_times(system.a1, system.a2, column) for column in WX.T]
        Q = [self._solve_system(system, f1, f2) for f1, f2 in F]
        cross = np.array([[np.sum(f1 * q1) + f2 @ q2 for q1, q2 in Q] for f1, f2 in F])
        return self.X.T @ WX - cross, F, Q

    def beta_precision_factor(self, mode: JointMode, family: Family) -> np.ndarray:
        """Lower Cholesky factor of beta's information given theta at the modes, with the Laplace weights (lme4's RX)."""
        p = self.pirls
        kind = p.determinant_kind(family)
        return np.linalg.cholesky(self._beta_information(mode.system, p.weights(mode.eta, family, kind))[0])

    def laplace(self, theta: np.ndarray, beta: np.ndarray, family: Family) -> float:
        """The Laplace objective (-2 log-likelihood) at theta and beta."""
        return self.mode(theta, beta, family).laplace

    # ------------------------------------------------------------------ the gradient
    def _leverage_solutions(self, system: VectorSystem) -> tuple[np.ndarray, np.ndarray]:
        """Each row's M^-1 a_i: the first term's part at its own group (n, k) and the other terms' part (n, q2),
        Y_i = S^-1 c_i with c_i = a2_i - B_g' H_g^-1 a1_i."""
        g, a1 = self.codes, system.a1
        HB = system.HB[g]  # (n, k, q2)
        c = -np.einsum("ikq,ik->iq", HB, a1)
        c[self.rows[:, None], self.cols] += system.a2
        Y = cho_solve((system.L, True), c.T).T if self.q2 else c
        return np.einsum("ikl,il->ik", system.Hinv[g], a1) - np.einsum("ikq,iq->ik", HB, Y), Y

    def gradient(self, theta: np.ndarray, beta: np.ndarray, family: Family,
                 with_size: bool = False, tol: float = STEP_TOL) -> tuple[float, np.ndarray, np.ndarray, float | None]:
        """The Laplace objective and its derivatives in theta (lme4's order), beta and (with_size) log NB size: at
        fixed eta, sum_i -2 dl_i + h_i dV_i + (A r)_i ds_i (the modes' move carried by r). `tol`: PIRLS's stopping step
        (`mode`)."""
        p, g = self.pirls, self.codes
        mode = self.mode(theta, beta, family, tol)
        eta, system = mode.eta, mode.system
        a1, a2 = system.a1, system.a2
        score, W = mode.score, mode.w_observed
        kind = p.determinant_kind(family)
        expected = kind == "expected"
        V = p.weights(eta, family, kind) if expected else W
        P1, Y = self._leverage_solutions(system)
        own = Y[self.rows[:, None], self.cols]  # (M^-1 a_i) at the row's own levels of the other terms
        h = np.sum(a1 * P1, axis=1) + np.sum(a2 * own, axis=1)
        vh = p.weights_slope(eta, family, kind) * h
        r1, r2 = self._solve_system(mode.observed, *self._transpose_times(a1, a2, vh))
        Ar = self._times(a1, a2, r1, r2)
        coef = -2.0 * score + vh - W * Ar
        d_theta = np.empty(len(mode.theta))
        slices = p.theta_slices
        per_row = coef[:, None] * mode.u1[g] + score[:, None] * r1[g] + 2.0 * V[:, None] * P1
        d_theta[slices[self.first]] = _factor_gradient(self.Z, per_row)
        per_entry = coef[:, None] * mode.u2[self.cols] + score[:, None] * r2[self.cols] + 2.0 * V[:, None] * own
        for t, lo, hi in zip(self.rest, self.entries[:-1], self.entries[1:]):
            d_theta[slices[t]] = _factor_gradient(self.z2[:, lo:hi], per_entry[:, lo:hi])
        d_beta = self.X.T @ coef
        d_size = None
        if with_size:
            dl, ds, dw = p.size_partials(eta, family, kind)
            d_size = float(np.sum(-2.0 * dl + h * dw + Ar * ds))
        return mode.laplace, d_theta, d_beta, d_size
