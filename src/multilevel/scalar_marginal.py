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

import numpy as np
from scipy import special

from .collapsed import constrain
from .glmm_density import MAX_NEWTON_STEP, NEWTON_STEPS, NEWTON_TOL, TANGENTS, GlmmLayout

LINKS = {"binomial": "logit", "poisson": "log", "negative_binomial": "log"}  # the links written here
CHUNK = 256  # points per block of the quadrature's (points, nodes, rows) arrays (they stay in cache)


class ScalarMarginal:
    """The log posterior of phi (`log_density`) and exact draws of the group effects (`draw_effects`)."""

    def __init__(self, layout: GlmmLayout, data: dict):
        self.layout, self.data = layout, data
        codes, X, offset, z = data["codes0"], data["X"], data["offset"], data["Z0"][:, 0]
        a, w = (data["y"], data["w"]) if layout.family == "binomial" else (data["w"] * data["y"], data["w"])
        key = np.column_stack([codes, X, offset, z])
        rows, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        self.codes, self.X, self.offset, self.z = codes[first], X[first], offset[first], z[first]
        self.a, self.w = np.bincount(inverse, a, len(rows)), np.bincount(inverse, w, len(rows))
        self.m = layout.base.ms[0]
        self.indicator = np.eye(self.m)[self.codes]  # (rows, m): per-group sums as a product
        if layout.family == "negative_binomial":
            self.counts, at = np.unique(data["y"], return_inverse=True)
            self.count_w = np.bincount(at.ravel(), data["w"], len(self.counts))

    @property
    def dim(self) -> int:
        return self.layout.n_base + self.layout.p_c

    # ------------------------------------------------------------------ the rows' log-likelihood in eta
    def _rows(self, eta, shape, order: int):
        """Each merged row's log-likelihood at eta (order 0) or its first and second derivatives (order 2)."""
        a, w, family = self.a, self.w, self.layout.family
        if family == "poisson":
            mu = np.exp(eta)
            return a * eta - w * mu if order == 0 else (a - w * mu, -w * mu)
        if family == "binomial":
            n, shift = w, eta
        else:  # negative binomial: a eta - (w shape + a) log(shape + mu), the logistic form about log(shape)
            n, shift = w * shape + a, eta - np.log(shape)
        if order == 0:
            return a * eta - n * (np.logaddexp(0.0, shift) + (0.0 if family == "binomial" else np.log(shape)))
        p = special.expit(shift)
        return a - n * p, -n * p * (1.0 - p)

    def _h(self, eta0, shape, slope, u):
        """Per group h(u) = its rows' log-likelihood at eta0 + slope u[code] - u^2 / 2; u (..., m)."""
        return self._rows(eta0 + slope * u[..., self.codes], shape, 0) @ self.indicator - 0.5 * u**2

    def _dh(self, eta0, shape, slope, u):
        """h' and h'' per group at u (..., m)."""
        d1, d2 = self._rows(eta0 + slope * u[..., self.codes], shape, 2)
        return (d1 * slope) @ self.indicator - u, (d2 * slope**2) @ self.indicator - 1.0

    def _mode(self, eta0, shape, slope):
        """Each group's mode and conditional SD 1 / sqrt(-h'') (the curvature at the last step's start), by the
        damped Newton steps of `glmm_density._mode`, from 0, until no group of any point moves more than NEWTON_TOL."""
        u = np.zeros(eta0.shape[:-1] + (self.m,))
        h2 = -np.ones_like(u)
        for _ in range(NEWTON_STEPS):
            h1, h2 = self._dh(eta0, shape, slope, u)
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

    def log_density(self, x: np.ndarray) -> np.ndarray:
        """Unnormalised log posterior at points x (points, dim), -inf where it is not finite."""
        x = np.atleast_2d(np.asarray(x, float))
        out = np.empty(len(x))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for i in range(0, len(x), CHUNK):
                out[i : i + CHUNK] = self._log_density(x[i : i + CHUNK])
        return np.where(np.isfinite(out), out, -np.inf)

    def _log_density(self, x):
        data = self.data
        eta0, sd, shape, lp = self.parameters(x)
        slope = sd[:, None] * self.z
        mode, s = self._mode(eta0, shape, slope)
        gh_x, gh_logw = data["gh_x"][:, None], data["gh_logw"][:, None]
        t = mode[:, None, :] + np.sqrt(2.0) * s[:, None, :] * gh_x  # (points, nodes, m)
        sh = None if shape is None else shape[:, :, None]
        logw = gh_logw + self._h(eta0[:, None, :], sh, slope[:, None, :], t)
        per_group = np.log(np.sqrt(2.0) * s) + special.logsumexp(logw, axis=1) - 0.5 * np.log(2 * np.pi)
        return lp + per_group.sum(axis=1) + self._shape_loglik(shape) + float(data["const"])

    def _shape_loglik(self, shape):
        """The negative binomial's terms free of eta, per point (0 for the other families)."""
        if shape is None:
            return 0.0
        s = shape[:, 0]
        total_w = self.count_w.sum()
        return special.gammaln(self.counts + shape) @ self.count_w - total_w * (special.gammaln(s) - s * np.log(s))

    # ------------------------------------------------------------------ exact draws of the group effects
    def draw_effects(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One exact draw of every group's effect b (points, m) given each point of x, by rejection from the
        tangent envelope of `glmm_density._rejection_draw`; proposals are redrawn until each is accepted."""
        out = np.empty((len(x), self.m))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for i in range(0, len(x), CHUNK):
                eta0, sd, shape, _ = self.parameters(x[i : i + CHUNK])
                out[i : i + CHUNK] = sd[:, None] * self._draw_u(eta0, shape, sd[:, None] * self.z, rng)
        return out

    def _draw_u(self, eta0, shape, slope, rng):
        mode, s = self._mode(eta0, shape, slope)
        env = self._envelope(eta0, shape, slope, mode, s)
        u = np.empty_like(mode)
        todo = np.ones(mode.shape, bool)
        while todo.any():
            prop = _envelope_proposal(env, rng.uniform(size=(2,) + mode.shape))
            log_env = np.min(env[0] + env[1] * (prop[None] - env[2]), axis=0)
            accept = np.log(rng.uniform(size=mode.shape)) <= self._h(eta0, shape, slope, prop) - log_env
            take = todo & accept
            u[take] = prop[take]
            todo &= ~accept
        return u

    def _envelope(self, eta0, shape, slope, mode, s):
        """The tangents' values h, slopes d and points a (each (4, points, m)), and the pieces' left ends, widths
        and log masses (the minimum of the tangents, piecewise exponential)."""
        a = mode[None] + TANGENTS[:, None, None] * s[None]
        h = np.stack([self._h(eta0, shape, slope, ai) for ai in a])
        d = np.stack([self._dh(eta0, shape, slope, ai)[0] for ai in a])
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
