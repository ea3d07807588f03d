"""PIRLS, the Laplace and quadrature objectives and their exact gradients for one scalar random-effect term.

With eta = X beta + offset + theta z u[g] every group's mode solves its own one-dimensional problem, so the
Newton steps of `pirls.Pirls` become vector operations over the groups (no factorisation), and the gradient of

    D(theta, beta) = -2 sum log f(y | u-hat) + |u-hat|^2 + sum_g log H_g,   H_g = 1 + theta^2 sum_{i in g} z_i^2 w_i,

follows by implicit differentiation of the mode: the first two terms need only their partial derivatives (u-hat
is their minimiser); log H_g moves with eta through the weights' derivative in eta and through du-hat/d(theta,
beta) = (d score / d parameter) / H_g (observed information). The values are those of `Pirls` (same steps, same
weights, same stopping rule), only faster.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import MultilevelError
from .families import Family
from .newton_modes import STEP_TOL, iterate
from .pirls import Pirls

LOG2PI = float(np.log(2 * np.pi))
NEAR_MOVE = 1e-2  # modes predicted to move less than this (relative) start there without trying the last modes
SQRT2 = float(np.sqrt(2.0))


@dataclass
class ScalarMode:
    """Conditional modes at one (theta, beta) with what the objective and its gradient are made of."""

    theta: float
    beta: np.ndarray
    u: np.ndarray  # (m,) spherical modes
    eta: np.ndarray
    curvature: np.ndarray  # (m,) H_g with the Laplace weights (the log-determinant's)
    minus2_cond_loglik: float
    score: np.ndarray  # per row at the modes
    w_observed: np.ndarray  # the observed information per row at the modes

    @property
    def laplace(self) -> float:
        return self.minus2_cond_loglik + float(self.u @ self.u) + float(np.sum(np.log(self.curvature)))


class ScalarPirls:
    """`Pirls` for one scalar term as vector operations over its groups; warm starts shared with `pirls`."""

    def __init__(self, pirls: Pirls):
        block = pirls.design.blocks[0]
        self.pirls, self.codes, self.m = pirls, block.codes, block.m
        self.z = np.asarray(block.Z[:, 0], dtype=float)
        self.zsq = self.z * self.z
        self.unit = bool(np.all(self.z == 1.0))  # a random intercept: products with z (which change no bit) skipped
        self.X = pirls.design.X
        n = len(self.codes)
        order = np.argsort(self.codes, kind="stable")
        self._order = None if np.array_equal(order, np.arange(n)) else order
        self._starts = np.searchsorted(self.codes[order], np.arange(self.m))  # each group's first row, in that order
        if np.any(np.bincount(self.codes, minlength=self.m) == 0):
            self._starts = None  # a level without rows: sums column by column
        self._normaliser: tuple = (None, np.zeros(self.m))
        self._tangent: tuple | None = None  # (theta, beta, modes, their derivatives, NEAR_MOVE reach) at the last gradient

    @staticmethod
    def applies(design) -> bool:
        """Whether the model has exactly one random-effect term, and it is scalar."""
        return len(design.blocks) == 1 and design.blocks[0].k == 1

    def _sum(self, v: np.ndarray) -> np.ndarray:
        """Per-group sums of a row vector."""
        return np.bincount(self.codes, v, self.m)

    def _zsum(self, v: np.ndarray) -> np.ndarray:
        """Per-group sums of z v."""
        return self._sum(v if self.unit else self.z * v)

    def _zsqsum(self, v: np.ndarray) -> np.ndarray:
        """Per-group sums of z^2 v."""
        return self._sum(v if self.unit else self.zsq * v)

    def _sum_rows(self, M: np.ndarray) -> np.ndarray:
        """Per-group sums of the rows of an (n, j) array, (m, j): contiguous runs of rows summed in place."""
        if self._starts is None:
            return np.column_stack([self._sum(column) for column in M.T])
        return np.add.reduceat(M if self._order is None else M[self._order], self._starts, axis=0)

    # ------------------------------------------------------------------ modes
    def mode(self, theta: float, beta: np.ndarray | None, family: Family, tol: float = STEP_TOL) -> ScalarMode:
        """Modes at theta and beta (beta None: found jointly, lme4's nAGQ = 0); raises MultilevelError as Pirls.
        `tol`: the stopping rule's step size (Pirls's unless asked for tighter)."""
        p = self.pirls
        joint = beta is None
        beta = p.beta.copy() if joint else np.asarray(beta, dtype=float)
        base = self.X @ beta + p.offset
        if not joint and self._tangent is not None:  # the first-order prediction where it is the better start
            predicted, move, reach = self._predicted(theta, beta)
            u, state, pdev = self._start(predicted, theta, base, family)
            if np.maximum.reduce(np.abs(move), initial=0.0) > reach:
                last = self._start(p.u[0][:, 0].copy(), theta, base, family)  # a long move: the better of the two
                u, state, pdev = (u, state, pdev) if pdev < last[2] else last
        else:
            u, state, pdev = self._start(p.u[0][:, 0].copy(), theta, base, family)

        def newton_step(beta, u, state):
            eta, score, w = state
            if joint:
                new_beta, new_u = self._joint_step(theta, eta, w, score)
                return new_beta, [new_u], None
            H = 1.0 + theta**2 * self._zsqsum(w)
            return beta, [u[0] + (theta * self._zsum(score) - u[0]) / H], None

        def evaluate(beta, u):
            _, state, pdev = self._start(u[0], theta, base if beta is base_beta else self.X @ beta + p.offset, family)
            return pdev, state

        base_beta = beta
        beta, (u,), state, pdev, _ = iterate(beta, [u], state, pdev, newton_step, evaluate, tol,
                                             lambda: f"theta = {theta:.4g}")
        p.u, p.beta = [u[:, None].copy()], beta.copy()
        return self._finish(theta, beta, u, state, pdev - float(u @ u), family)

    def _beta_information(self, theta, w):
        """beta's information given theta at weights w, X'WX less what the groups take (the Schur complement S of
        the groups' diagonal block H), with the coupling C = theta Z'WX per group and H."""
        H = 1.0 + theta**2 * self._zsqsum(w)
        C = theta * (self._sum_rows((w if self.unit else self.z * w)[:, None] * self.X))  # (m, p)
        return (self.X * w[:, None]).T @ self.X - C.T @ (C / H[:, None]), C, H

    def beta_precision_factor(self, mode: ScalarMode, family: Family) -> np.ndarray:
        """Lower Cholesky factor of beta's information given theta at the modes, with the Laplace weights (lme4's RX)."""
        return np.linalg.cholesky(self._beta_information(mode.theta, self._laplace_weights(mode.eta, family))[0])

    def _start(self, u: np.ndarray, theta: float, base: np.ndarray, family: Family):
        """Modes u with the state there (the linear predictor, the score and the observed weights) and the
        penalised deviance."""
        eta = base + (theta if self.unit else theta * self.z) * u[self.codes]
        minus2, score, w = self.pirls.evaluation(eta, family)
        return u, (eta, score, w), minus2 + float(u @ u)

    def _predicted(self, theta: float, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Modes at (theta, beta) predicted from the last gradient's modes and their derivatives (first order: near
        that point PIRLS then needs about one Newton step fewer than from the last modes alone), the predicted move
        and the largest move (NEAR_MOVE) taken without trying the last modes."""
        theta0, beta0, u0, du_dtheta, du_dbeta, reach = self._tangent
        move = du_dtheta * (theta - theta0) + du_dbeta @ (beta - beta0)
        return u0 + move, move, reach

    def _joint_step(self, theta, eta, w, score):
        """Newton step in (beta, u) together: the groups' diagonal block eliminated (a Schur complement in beta)."""
        p = self.pirls
        r = eta - p.offset + score / w  # working response without the offset
        S, C, H = self._beta_information(theta, w)
        c = theta * self._zsum(w * r)
        rhs = (self.X * w[:, None]).T @ r - C.T @ (c / H)
        try:
            beta = np.linalg.solve(S, rhs)
        except np.linalg.LinAlgError:
            raise MultilevelError("penalised IRLS failed: the weighted system is not positive definite") from None
        return beta, (c - C @ beta) / H

    def _finish(self, theta, beta, u, state, minus2, family) -> ScalarMode:
        """The curvature with the Laplace weights (the expected information if `pirls` asks for it)."""
        eta, score, w_observed = state
        w = self._laplace_weights(eta, family, w_observed)
        return ScalarMode(theta, beta, u, eta, 1.0 + theta**2 * self._zsqsum(w), minus2, score, w_observed)

    def _laplace_weights(self, eta, family, w_observed=None):
        if self.pirls.determinant_kind(family) == "expected":
            return self.pirls.weights(eta, family, "expected")
        return self.pirls.weights(eta, family, "observed") if w_observed is None else w_observed

    # ------------------------------------------------------------------ quadrature and the gradient
    def _quadrature(self, theta, mode: ScalarMode, family: Family, n_nodes: int, with_score: bool = False):
        """Adaptive Gauss-Hermite nodes t (m, K) about the modes, the linear predictor there (n, K), each group's
        weights of its nodes in its integral (m, K), each group's -2 log integral (m,) and (with_score) the rows'
        scores at the nodes (n, K)."""
        p = self.pirls
        x, log_weight = _hermite(n_nodes)
        scale = 1.0 / np.sqrt(mode.curvature)
        shift = (SQRT2 * scale)[:, None] * x[None, :]  # (m, K): u - u-hat at the nodes
        eta = mode.eta[:, None] + (theta if self.unit else (theta * self.z)[:, None]) * shift[self.codes]
        if with_score:
            ll, score = family.loglik_kernel_and_score(p.y[:, None], eta, p.prior_weights[:, None])
        else:
            ll, score = family.kernel_at(p.y[:, None], eta, p.prior_weights[:, None]), None
        t = mode.u[:, None] + shift
        log_terms = self._sum_rows(ll) - 0.5 * t * t + log_weight
        top = np.max(log_terms, axis=1)
        P = np.exp(log_terms - top[:, None])
        total = np.sum(P, axis=1)
        lse = top + np.log(total)  # log-sum-exp over the nodes
        constant = self._group_normaliser(family)  # the log-likelihood's terms free of u
        per_group = -2.0 * (lse + constant + np.log(SQRT2 * scale) - 0.5 * LOG2PI)
        return x, t, eta, P / total[:, None], per_group, score

    def _group_normaliser(self, family: Family) -> np.ndarray:
        """Per group, the sum of its rows' log-likelihood terms free of eta (kept for the last family asked)."""
        if self._normaliser[0] != family:
            p = self.pirls
            self._normaliser = (family, self._sum(family.log_normaliser(p.y, p.prior_weights)))
        return self._normaliser[1]

    def agq(self, mode: ScalarMode, family: Family, n_nodes: int) -> float:
        """-2 log-likelihood by adaptive Gauss-Hermite quadrature: each group's integral over its u, with nodes
        centred at the mode and scaled by the curvature there (absolute scale; one node: the Laplace value)."""
        return float(np.sum(self._quadrature(mode.theta, mode, family, n_nodes)[4]))

    def gradient(self, theta: float, beta: np.ndarray, family: Family, n_nodes: int,
                 with_size: bool = False, tol: float = STEP_TOL) -> tuple[float, float, np.ndarray, float | None]:
        """-2 log-likelihood (Laplace for n_nodes = 1, else quadrature) and its exact derivatives in theta, beta and
        (with_size) log NB size (its partials at fixed eta, `Pirls.size_partials`).

        The nodes move with the modes and the curvature: d t / d phi = d u-hat / d phi - t-shift / 2 d log H / d phi,
        with d u-hat / d phi by implicit differentiation (observed information) and d log H / d phi through the
        weights' derivative in eta. `tol`: PIRLS's stopping step (`mode`)."""
        p, g, z, X = self.pirls, self.codes, self.z, self.X
        mode = self.mode(theta, beta, family, tol)
        eta, u = mode.eta, mode.u
        score, w_obs = mode.score, mode.w_observed
        V = self._laplace_weights(eta, family, w_obs)
        dV = p.weights_slope(eta, family, p.determinant_kind(family))
        zw, sz = self._zsqsum(w_obs), self._zsum(score)
        H = mode.curvature
        H_obs = H if V is w_obs else 1.0 + theta**2 * zw
        du_dtheta = (sz - theta * u * zw) / H_obs
        du_dbeta = -theta * (self._sum_rows((w_obs if self.unit else z * w_obs)[:, None] * X)) / H_obs[:, None]  # (m, p)
        reach = NEAR_MOVE * (1.0 + float(np.maximum.reduce(np.abs(u), initial=0.0)))
        self._tangent = (theta, beta.copy(), u.copy(), du_dtheta, du_dbeta, reach)
        c = (theta**2 if self.unit else theta**2 * self.zsq) * dV / H[g]  # d log H_g / d eta_i
        cz = self._zsum(c)
        dlogH_dtheta = 2 * theta * (zw if V is w_obs else self._zsqsum(V)) / H + cz * (u + theta * du_dtheta)
        dlogH_dbeta = self._sum_rows(c[:, None] * X) + theta * cz[:, None] * du_dbeta
        if n_nodes == 1:  # Laplace: the one node is the mode itself (weight 1, kappa = -1/2), where all is known
            value, kappa, eta_k, P = mode.laplace, -0.5, None, None
            a1 = theta * sz - u  # d log integrand / d u at the modes
            d_theta = -2.0 * (float(sz @ u) + float(a1 @ du_dtheta) + kappa * float(np.sum(dlogH_dtheta)))
            d_beta = -2.0 * (X.T @ score + du_dbeta.T @ a1 + kappa * np.sum(dlogH_dbeta, axis=0))
        else:
            x, t, eta_k, P, per_group, score_k = self._quadrature(theta, mode, family, n_nodes, True)
            averaged = P[g] * score_k
            d = theta * (self._sum_rows(score_k if self.unit else z[:, None] * score_k)) - t  # d log integrand / d t, (m, K)
            Pd = P * d
            a1 = np.sum(Pd, axis=1)
            kappa = -0.5 - np.sum(Pd * x[None, :], axis=1) / (SQRT2 * np.sqrt(H))
            d_theta = -2.0 * (float(z @ np.sum(averaged * t[g], axis=1)) + float(a1 @ du_dtheta)
                              + float(kappa @ dlogH_dtheta))
            d_beta = -2.0 * (X.T @ np.sum(averaged, axis=1) + du_dbeta.T @ a1 + dlogH_dbeta.T @ kappa)
            value = float(np.sum(per_group))
        d_size = None
        if with_size:
            kind = p.determinant_kind(family)
            dl, ds, dw = p.size_partials(eta, family, kind)
            du = theta * self._zsum(ds) / H_obs
            dlogH = theta**2 * self._zsqsum(dw) / H + cz * theta * du
            if n_nodes == 1:
                nodes_dl = float(np.sum(dl))
            else:
                nodes_dl = float(np.sum(P * self._sum_rows(p.loglik_size_partial(eta_k, family))))
            d_size = -2.0 * (nodes_dl + float(a1 @ du) + float(np.sum(kappa * dlogH)))
        return value, d_theta, d_beta, d_size


@lru_cache(maxsize=16)
def _hermite(n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes x and log(weight) + x^2 (computed once per count)."""
    x, w = np.polynomial.hermite.hermgauss(n_nodes)
    return x, np.log(w) + x**2
