"""PIRLS and the exact gradient of the Laplace objective for one vector random-effect term, e.g. (1 + x | g).

With eta = X beta + offset + z_i' T u_g (T the term's lower-triangular relative factor, theta its entries column by
column as lme4), every group's modes solve their own k-dimensional problem: the Newton steps of `pirls.Pirls` are
k x k systems solved for all groups at once, H_g = I + T' G_g T with G_g = sum_{i in g} w_i z_i z_i'. The objective

    D(theta, beta) = -2 sum log f(y | u-hat) + |u-hat|^2 + sum_g log det H_g    (H_g with the Laplace weights V)

has the exact gradient of implicit differentiation (as `laplace_gradient`): the first two terms need their partial
derivatives only; d log det H_g = tr(H_g^-1 dH_g) takes T's own move, 2 G_g T H_g^-1 at T's entries, and the
weights' move with eta, sum_i V'_i h_i d eta_i (h_i = z_i' T H_g^-1 T' z_i the leverages), whose part through the
modes' move is carried by one more solve, r_g = (H_g^W)^-1 T' sum_{i in g} V'_i h_i z_i (observed information W).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .engine import theta_to_T, tri_index
from .errors import MultilevelError
from .families import Family
from .newton_modes import STEP_TOL, iterate
from .pirls import Pirls

NOT_POSITIVE = "penalised IRLS failed: the weighted system is not positive definite"


@dataclass
class VectorMode:
    """Conditional modes at one (theta, beta), with each group's curvature H_g at the Laplace weights."""

    theta: np.ndarray
    beta: np.ndarray
    u: np.ndarray  # (m, k) spherical modes
    eta: np.ndarray
    curvature: np.ndarray  # (m, k, k)
    minus2_cond_loglik: float
    score: np.ndarray  # per row at the modes
    w_observed: np.ndarray  # the observed information per row at the modes

    @property
    def laplace(self) -> float:
        return self.minus2_cond_loglik + float(np.sum(self.u * self.u)) + _logdet(self.curvature)


def _cholesky(H: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a stack of k x k matrices; a MultilevelError if one is not positive definite."""
    try:
        return np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        raise MultilevelError(NOT_POSITIVE) from None


def _logdet(H: np.ndarray) -> float:
    """Sum of the log-determinants of a stack of positive definite matrices."""
    return 2.0 * float(np.sum(np.log(np.diagonal(_cholesky(H), axis1=1, axis2=2))))


def _solve(H: np.ndarray, b: np.ndarray) -> np.ndarray:
    """H_g^-1 b_g for every group (b (m, k) or (m, k, j))."""
    try:
        return np.linalg.solve(H, b[..., None])[..., 0] if b.ndim == 2 else np.linalg.solve(H, b)
    except np.linalg.LinAlgError:
        raise MultilevelError(NOT_POSITIVE) from None


class VectorTermGradient:
    """Modes, value and exact gradient in (theta, beta) of `pirls`'s Laplace objective for one vector term; warm
    starts shared with `pirls`."""

    def __init__(self, pirls: Pirls):
        block = pirls.design.blocks[0]
        self.pirls, self.codes, self.m, self.k = pirls, block.codes, block.m, block.k
        self.Z = np.asarray(block.Z, dtype=float)  # (n, k)
        self.X = pirls.design.X
        n, k = self.Z.shape
        self.zz = (self.Z[:, :, None] * self.Z[:, None, :]).reshape(n, k * k)  # each row's z z'
        self.group_sum = sp.csr_matrix((np.ones(n), (self.codes, np.arange(n))), shape=(self.m, n))
        self.tri = tuple(np.array(tri_index(k)).T)  # theta's entries of T

    @staticmethod
    def applies(design) -> bool:
        """Whether the model has exactly one random-effect term, and it is a vector (k > 1)."""
        return len(design.blocks) == 1 and design.blocks[0].k > 1

    def _gram(self, w: np.ndarray) -> np.ndarray:
        """G_g = sum_{i in g} w_i z_i z_i', (m, k, k)."""
        return (self.group_sum @ (w[:, None] * self.zz)).reshape(self.m, self.k, self.k)

    def _curvature(self, T: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """H_g = I + T' G_g T at weights w, with G."""
        G = self._gram(w)
        return np.eye(self.k) + T.T @ G @ T, G

    def _random(self, T: np.ndarray, u: np.ndarray) -> np.ndarray:
        """z_i' T u_g per row."""
        return np.einsum("ij,ij->i", self.Z, (u @ T.T)[self.codes])

    # ------------------------------------------------------------------ modes
    def mode(self, theta: np.ndarray, beta: np.ndarray | None, family: Family, tol: float = STEP_TOL) -> VectorMode:
        """Modes at theta and beta by PIRLS (as `Pirls.mode`; beta None: found jointly, lme4's nAGQ = 0); raises
        MultilevelError as Pirls. `tol`: the stopping rule's step size (Pirls's unless asked for tighter)."""
        p, X = self.pirls, self.X
        theta = np.asarray(theta, dtype=float)
        T = theta_to_T(theta, self.k)
        joint = beta is None
        beta = p.beta.copy() if joint else np.asarray(beta, dtype=float)

        def evaluate(beta, u):
            eta = X @ beta + p.offset + self._random(T, u[0])
            minus2, score, w = p.evaluation(eta, family)
            return minus2 + float(np.sum(u[0] * u[0])), (eta, score, w)

        def newton_step(beta, u, state):
            eta, score, w = state
            if joint:
                new_beta, new_u = self._joint_step(T, eta, w, score)
                return new_beta, [new_u], None
            H, _ = self._curvature(T, w)
            s = self.group_sum @ (score[:, None] * self.Z)
            return beta, [u[0] + _solve(H, s @ T - u[0])], None

        u = p.u[0].copy()
        pdev, state = evaluate(beta, [u])
        beta, (u,), (eta, score, w), pdev, _ = iterate(beta, [u], state, pdev, newton_step, evaluate, tol,
                                                       lambda: f"theta = {np.round(theta, 4)}")
        p.u = [u.copy()]
        if joint:
            p.beta = beta.copy()
        H, _ = self._curvature(T, self._laplace_weights(eta, family, w))
        return VectorMode(theta, beta, u, eta, H, pdev - float(np.sum(u * u)), score, w)

    def _laplace_weights(self, eta, family, w_observed=None):
        """V: the expected information if `pirls` asks for it (non-canonical links), else the observed."""
        if self.pirls.information == "expected" and not family.canonical:
            return self.pirls.weights(eta, family, "expected")
        return self.pirls.weights(eta, family, "observed") if w_observed is None else w_observed

    def _beta_information(self, T, w):
        """beta's information given theta at weights w (X'WX less what the groups take), with the coupling
        C_g = T' sum_{i in g} w_i z_i x_i' (m, k, p) and H."""
        n, p = self.X.shape
        H, _ = self._curvature(T, w)
        wzx = (w[:, None, None] * self.Z[:, :, None] * self.X[:, None, :]).reshape(n, self.k * p)
        C = T.T @ (self.group_sum @ wzx).reshape(self.m, self.k, p)
        HC = _solve(H, C)
        return (self.X * w[:, None]).T @ self.X - np.einsum("gkp,gkq->pq", C, HC), C, H, HC

    def _joint_step(self, T, eta, w, score):
        """Newton step in (beta, u) together: the groups' blocks eliminated (a Schur complement in beta)."""
        r = eta - self.pirls.offset + score / w  # working response without the offset
        S, C, H, HC = self._beta_information(T, w)
        Hc = _solve(H, (self.group_sum @ ((w * r)[:, None] * self.Z)) @ T)
        try:
            beta = np.linalg.solve(S, (self.X * w[:, None]).T @ r - np.einsum("gkp,gk->p", C, Hc))
        except np.linalg.LinAlgError:
            raise MultilevelError(NOT_POSITIVE) from None
        return beta, Hc - HC @ beta

    def beta_precision_factor(self, mode: VectorMode, family: Family) -> np.ndarray:
        """Lower Cholesky factor of beta's information given theta at the modes, with the Laplace weights (lme4's RX)."""
        T = theta_to_T(mode.theta, self.k)
        return np.linalg.cholesky(self._beta_information(T, self._laplace_weights(mode.eta, family))[0])

    def laplace(self, theta: np.ndarray, beta: np.ndarray, family: Family) -> float:
        """The Laplace objective (-2 log-likelihood) at theta and beta."""
        return self.mode(theta, beta, family).laplace

    # ------------------------------------------------------------------ the gradient
    def gradient(self, theta: np.ndarray, beta: np.ndarray, family: Family,
                 with_size: bool = False) -> tuple[float, np.ndarray, np.ndarray, float | None]:
        """The Laplace objective and its derivatives in theta, beta and (with_size) log NB size: at fixed eta,
        sum_i -2 dl_i + h_i dV_i + (Z T r)_i ds_i (the modes' move carried by r)."""
        p, Z, g = self.pirls, self.Z, self.codes
        mode = self.mode(theta, beta, family)
        T, eta, u = theta_to_T(mode.theta, self.k), mode.eta, mode.u
        score, W = mode.score, mode.w_observed
        expected = p.information == "expected" and not family.canonical
        kind = "expected" if expected else "observed"
        V = p.weights(eta, family, kind) if expected else W
        HV, GV = self._curvature(T, V)
        HW, GW = self._curvature(T, W) if expected else (HV, GV)
        P = np.linalg.inv(HV)
        h = np.sum(self.zz * (T @ P @ T.T).reshape(self.m, -1)[g], axis=1)  # z_i' T P_g T' z_i
        vh = p.weights_slope(eta, family, kind) * h
        s = self.group_sum @ (score[:, None] * Z)  # (m, k)
        q = self.group_sum @ (vh[:, None] * Z)
        r = _solve(HW, q @ T)
        Ar = self._random(T, r)
        GWTr = (GW @ (r @ T.T)[:, :, None])[:, :, 0]
        d_T = (-2.0 * s + q - GWTr).T @ u + s.T @ r + 2.0 * np.sum(GV @ T @ P, axis=0)
        d_beta = self.X.T @ (-2.0 * score + vh - W * Ar)
        d_size = None
        if with_size:
            dl, ds, dw = p.size_partials(eta, family, kind)
            d_size = float(np.sum(-2.0 * dl + h * dw + Ar * ds))
        return mode.laplace, d_T[self.tri], d_beta, d_size
