"""A GLMM's marginal posterior over phi = (log SD, [log shape,] alpha, beta) when one scalar term carries the
group effects, in NumPy and vectorised over many points (the independence sampler's target, `imh`).

The same density as `glmm_density.log_density` with `nodes` > 0 (each group's effect integrated by adaptive
Gauss-Hermite quadrature about its mode, the same nodes, Newton steps and stopping rule), evaluated for a batch
of points at once without JAX: its import and compilation cost more than a whole run on small models
(docs/bayes.md, "The independence sampler"). Rows that share group, covariates, offset and slope are merged
first (their log-likelihoods are linear in the response's sums), and the negative binomial's log-gamma terms are
taken once per distinct count. The group effects are drawn exactly given phi as `glmm_density` draws them:
rejection from the minimum of h's tangents (h is concave for these links). Links: logit (binomial), log
(Poisson, negative binomial), as `LINKS` lists.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import special

from .collapsed import constrain
from .errors import MultilevelError
from .glmm_density import (
    MAX_NEWTON_STEP,
    NEWTON_STEPS,
    NEWTON_TOL,
    TANGENTS,
    GlmmLayout,
)

LINKS = {"binomial": "logit", "poisson": "log", "negative_binomial": "log"}  # the links written here
CHUNK = 256  # at most this many points per block of the quadrature's (points, nodes, rows) arrays
BLOCK_ENTRIES = 1 << 21  # and at most this many entries in one such array (16 MB: large data stay within memory)


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + e^x), stable, in place of a temporary: a quarter of `np.logaddexp(0, x)`'s CPU time (measured)."""
    out = np.exp(-np.abs(x))
    np.log1p(out, out=out)
    out += np.maximum(x, 0.0)
    return out


def logistic(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x), stable: 40 % of `scipy.special.expit`'s CPU time on these arrays (measured)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0, e) / (1.0 + e)


class ScalarMarginal:
    """The log posterior of phi (`log_density`) and exact draws of the group effects (`draw_effects`)."""

    def __init__(self, layout: GlmmLayout, data: dict, anchor: np.ndarray | None = None):
        """`anchor`: group effects b (m,) where the Newton steps to each point's modes begin (as u = b / sd; None: 0)."""
        self.layout, self.data, self.anchor = layout, data, anchor
        codes, X, offset, z = data["codes0"], data["X"], data["offset"], data["Z0"][:, 0]
        a, w = (data["y"], data["w"]) if layout.family == "binomial" else (data["w"] * data["y"], data["w"])
        key = np.column_stack([codes, X, offset, z])
        rows, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        self.codes, self.X, self.offset, self.z = codes[first], X[first], offset[first], z[first]
        self.a, self.w = np.bincount(inverse, a, len(rows)), np.bincount(inverse, w, len(rows))
        self.m = layout.base.ms[0]
        self.starts = np.searchsorted(self.codes, np.arange(self.m))  # each group's first merged row
        if np.any(np.bincount(self.codes, minlength=self.m) == 0):
            raise MultilevelError("a level of the grouping factor has no rows: drop unused levels")
        if layout.family == "negative_binomial":
            self.counts, at = np.unique(data["y"], return_inverse=True)
            self.count_w = np.bincount(at.ravel(), data["w"], len(self.counts))

    def _block(self, per_point: int) -> int:
        """Points per block when each point needs `per_point` rows-long arrays (nodes or tangents)."""
        return max(1, min(CHUNK, BLOCK_ENTRIES // (per_point * len(self.codes))))

    @property
    def dim(self) -> int:
        return self.layout.n_base + self.layout.p_c

    # ------------------------------------------------------------------ per group, the log-likelihood in u
    def _at(self, x: np.ndarray) -> _At:
        """What h needs at points x (points, dim), and each point's SD and log prior."""
        eta0, sd, shape, lp = self.parameters(x)
        slope = sd[:, None] * self.z
        if self.layout.family == "negative_binomial":
            n, log_shape = self.w * shape + self.a, np.log(shape)
        else:
            n, log_shape = np.broadcast_to(self.w, eta0.shape), None
        at = _At(eta0, slope, n, log_shape, self._sum(self.a * eta0), self._sum(self.a * slope))
        return at, sd, shape, lp

    def _sum(self, v):
        """Sums of v (..., rows) over each group's rows (the merged rows are sorted by group): (..., m)."""
        return np.add.reduceat(v, self.starts, axis=-1)

    def _h(self, at: _At, u):
        """Per group h(u) = its rows' log-likelihood at eta0 + slope u[code] - u^2 / 2, for u (points, m) or
        (points, nodes, m). The rows' terms linear in eta are summed once per group (`_At.lin0`, `lin1`)."""
        at = at.widened() if u.ndim == 3 else at
        eta = at.eta0 + at.slope * u[..., self.codes]
        family = self.layout.family
        if family == "poisson":
            f = np.exp(eta)
        elif at.log_shape is None:  # binomial: log(1 + e^eta)
            f = softplus(eta)
        else:  # negative binomial: log(shape + mu)
            f = at.log_shape + softplus(eta - at.log_shape)
        return at.lin0 + u * at.lin1 - self._sum(at.n * f) - 0.5 * u**2

    def _dh(self, at: _At, u):
        """h' and h'' per group at u (points, m)."""
        eta = at.eta0 + at.slope * u[..., self.codes]
        if self.layout.family == "poisson":
            q = at.n * np.exp(eta)
            q2 = q
        else:
            p = logistic(eta if at.log_shape is None else eta - at.log_shape)
            q = at.n * p
            q2 = q * (1.0 - p)
        return at.lin1 - self._sum(q * at.slope) - u, -self._sum(q2 * at.slope**2) - 1.0

    def _mode(self, at: _At, sd: np.ndarray):
        """Each group's mode and conditional SD 1 / sqrt(-h'') (the curvature at the last step's start), by the
        damped Newton steps of `glmm_density._mode`, from the anchor (or 0), until no group of any point moves more
        than NEWTON_TOL."""
        u = np.zeros(at.lin0.shape) if self.anchor is None else self.anchor / sd[:, None]
        h2 = -np.ones_like(u)
        for _ in range(NEWTON_STEPS):
            h1, h2 = self._dh(at, u)
            move = np.clip(-h1 / h2, -MAX_NEWTON_STEP, MAX_NEWTON_STEP)
            u = u + move
            if np.max(np.abs(move)) <= NEWTON_TOL:
                break
        return u, 1.0 / np.sqrt(-h2)

    # ------------------------------------------------------------------ the density
    def parameters(self, x: np.ndarray):
        """(points, dim) -> the fixed linear predictor (points, rows), the SD (points,), shapes (points, 1) or None,
        the log prior."""
        layout, data = self.layout, self.data
        nb = layout.n_base
        sds, _, shape, alpha, lp = constrain(layout.base, x[:, :nb], np, data["priors"])
        if shape is None and "shape" in data:
            shape = np.full(len(x), float(data["shape"]))
        beta = x[:, nb : nb + layout.p_c]
        prec, mean = data["b_prec"], data["b_mean"]
        normal = 0.5 * np.log(np.where(prec > 0, prec, 1.0) / (2 * np.pi)) - 0.5 * prec * (beta - mean) ** 2
        lp = lp + np.sum(np.where(prec > 0, normal, 0.0), axis=-1)
        eta0 = self.offset + beta @ self.X.T + (alpha[:, None] if layout.base.intercept else 0.0)
        return eta0, sds[0][:, 0], None if shape is None else shape[:, None], lp

    def log_density(self, x: np.ndarray, modes: bool = False):
        """Unnormalised log posterior at points x (points, dim), -inf where it is not finite; with `modes`, also
        each point's groups' conditional modes and SDs (points, m) (`draw_effects` reuses them)."""
        x = np.atleast_2d(np.asarray(x, float))
        out, mode, s = np.empty(len(x)), np.empty((len(x), self.m)), np.empty((len(x), self.m))
        block = self._block(len(self.data["gh_x"]))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for i in range(0, len(x), block):
                at, sd, shape, lp = self._at(x[i : i + block])
                mode[i : i + block], s[i : i + block] = self._mode(at, sd)
                out[i : i + block] = self._log_density(at, shape, lp, mode[i : i + block], s[i : i + block])
        out = np.where(np.isfinite(out), out, -np.inf)
        return (out, mode, s) if modes else out

    def _log_density(self, at: _At, shape, lp, mode, s):
        data = self.data
        t = mode[:, None, :] + np.sqrt(2.0) * s[:, None, :] * data["gh_x"][:, None]  # (points, nodes, m)
        logw = data["gh_logw"][:, None] + self._h(at, t)
        top = logw.max(axis=1)
        lse = top + np.log(np.sum(np.exp(logw - top[:, None]), axis=1))
        per_group = np.log(np.sqrt(2.0) * s) + lse - 0.5 * np.log(2 * np.pi)
        return lp + per_group.sum(axis=1) + self._shape_loglik(shape) + float(data["const"])

    def _shape_loglik(self, shape):
        """The negative binomial's terms free of eta, per point (0 for the other families)."""
        if shape is None:
            return 0.0
        s = shape[:, 0]
        total_w = self.count_w.sum()
        return special.gammaln(self.counts + shape) @ self.count_w - total_w * (special.gammaln(s) - s * np.log(s))

    def effect_modes(self, x: np.ndarray) -> np.ndarray:
        """The groups' conditional modes b (m,) at one point x (an anchor for other points' Newton steps)."""
        _, mode, _ = self.log_density(x, modes=True)
        return mode[0] * self.parameters(np.atleast_2d(x))[1][0]

    # ------------------------------------------------------------------ exact draws of the group effects
    def draw_effects(self, x: np.ndarray, rng: np.random.Generator, modes=None) -> np.ndarray:
        """One exact draw of every group's effect b (points, m) given each point of x, by rejection from the
        tangent envelope of `glmm_density._rejection_draw`; proposals are redrawn until each is accepted. A point
        repeated in x (a rejected move) has its envelope built once and gets draws of its own. `modes`: the
        points' conditional modes and SDs from `log_density` (else found again)."""
        distinct, first, inverse = np.unique(x, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        out = np.empty((len(x), self.m))
        block = self._block(len(TANGENTS))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for i in range(0, len(distinct), block):
                at, sd, _, _ = self._at(distinct[i : i + block])
                found = self._mode(at, sd) if modes is None else tuple(v[first[i : i + block]] for v in modes)
                envelope = self._envelope(at, *found)
                rows = np.flatnonzero((inverse >= i) & (inverse < i + block))
                pick = inverse[rows] - i
                u = self._rejection(at.take(pick), tuple(v[:, pick] for v in envelope), rng)
                out[rows] = sd[pick, None] * u
        return out

    def _rejection(self, at: _At, envelope, rng):
        """Proposals from the envelope, accepted with probability exp(h - envelope), until every group of every point
        has one; each round evaluates h only at the points still waiting."""
        u = np.empty(at.lin0.shape)
        todo = np.ones(u.shape, bool)
        rows = np.arange(len(u))
        while len(rows):
            env = tuple(v[:, rows] for v in envelope)
            prop = _envelope_proposal(env, rng.uniform(size=(2, len(rows), u.shape[1])))
            h, d, a = env[:3]
            log_env = np.min(h + d * (prop[None] - a), axis=0)
            accept = np.log(rng.uniform(size=prop.shape)) <= self._h(at.take(rows), prop) - log_env
            take = todo[rows] & accept
            u[rows[:, None], np.arange(u.shape[1])] = np.where(take, prop, u[rows])
            todo[rows] &= ~accept
            rows = rows[todo[rows].any(axis=1)]
        return u

    def _envelope(self, at: _At, mode, s):
        """The tangents' values h, slopes d and points a (each (4, points, m)), and the pieces' left ends, widths
        and log masses (the minimum of the tangents, piecewise exponential)."""
        a = mode[None] + TANGENTS[:, None, None] * s[None]
        h = np.stack([self._h(at, ai) for ai in a])
        d = np.stack([self._dh(at, ai)[0] for ai in a])
        zc = (h[1:] - h[:-1] - d[1:] * a[1:] + d[:-1] * a[:-1]) / (d[:-1] - d[1:])  # consecutive tangents meet
        lo = np.concatenate([zc[:1], zc])
        width = np.concatenate([np.zeros_like(zc[:1]), zc[1:] - zc[:-1], np.zeros_like(zc[:1])])
        e_lo = h + d * (lo - a)
        r = d * width
        small = np.abs(r) < 1e-8
        middle = np.log(np.where(width > 0, width, 1.0)) + np.where(
            small, 0.5 * r, np.log(np.expm1(r) / np.where(r == 0, 1.0, r)))
        log_mass = np.where(width > 0, e_lo + middle, e_lo - np.log(np.abs(d)))
        log_mass[1:-1] = np.where(width[1:-1] > 0, log_mass[1:-1], -np.inf)
        return h, d, a, lo, width, log_mass


class _At(NamedTuple):
    """h's inputs at a batch of points: the fixed linear predictor and slopes of the merged rows (points, rows),
    their weights in the nonlinear term, the log shape (negative binomial), the linear terms' group sums."""

    eta0: np.ndarray
    slope: np.ndarray
    n: np.ndarray
    log_shape: np.ndarray | None
    lin0: np.ndarray
    lin1: np.ndarray

    def widened(self) -> _At:
        """With a nodes axis after the points' (broadcasting against (points, nodes, m))."""
        return _At(*(None if v is None else v[:, None] for v in self))

    def take(self, index) -> _At:
        return _At(*(None if v is None else v[index] for v in self))


def _envelope_proposal(env, uniforms):
    """A draw from the piecewise-exponential envelope per group: a piece by its mass, then by inverse CDF."""
    _, d, _, lo, width, log_mass = env
    mass = np.exp(log_mass - log_mass.max(axis=0))
    cum = np.cumsum(mass / mass.sum(axis=0), axis=0)
    u1, u2 = uniforms
    piece = np.sum(u1[None] > cum[:-1], axis=0)[None]
    dd, ll, ww = (np.take_along_axis(v, piece, axis=0)[0] for v in (d, lo, width))
    rr = dd * ww
    inner = ll + np.where(np.abs(rr) < 1e-8, u2 * ww, np.log1p(u2 * np.expm1(rr)) / np.where(rr == 0, 1.0, dd))
    outer = ll + np.log(u2) / dd  # the first piece (d > 0) leftwards, the last (d < 0) rightwards
    return np.where(ww > 0, inner, outer)
