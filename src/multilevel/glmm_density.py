"""The posterior of a binomial, Poisson or negative-binomial mixed model in JAX, for NUTS (pipeline step 6).

NUTS runs on [log sds, CPC-transformed correlations, log shape (negative binomial), alpha (the centred
intercept), the other centred coefficients] and 
the sampled terms' effects: a vector term's standardised (b = diag(sd) L u per level, non-centred), a scalar term's
partially centred (b = sd^(1 - w) v per level, w = I sd^2 / (1 + I sd^2) from 0 to 1 with I the level's information:
Papaspiliopoulos, Roberts & Skold 2007; w depends on sd only, so the Jacobian is sd^(1 - w) per level). With `nodes` > 0 the
first term (the only one, for `glmm_bayes`), when scalar (e.g. ``(1 | herd)``), is not sampled: given everything else its groups'
effects are independent (each row has one level), so each is integrated out by adaptive Gauss-Hermite
quadrature (nodes centred at the group's mode, scaled by its curvature; the mode and scale enter as constants,
so the gradient is the quadrature's), and drawn exactly for every draw by rejection from a tangent envelope,
valid because every supported family and link has a log-concave likelihood in the linear predictor. With
`nodes=0` (or a vector first term) every term is sampled: the joint posterior.

As the Gaussian density, the data and the priors' values are runtime arguments: a new response compiles nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from .collapsed import Layout, constrain, prior_params

NEWTON_STEPS = 30  # at most this many damped Newton steps to each group's mode (from 0; quadratic convergence)
NEWTON_TOL = 1e-6  # until no group's step is larger (standardised units; convergence is quadratic, so the mode is then
# good to ~1e-12, and the curvature, taken at the last step's start, to ~1e-6 relative: both move the quadrature far
# less than its tested error)
MAX_NEWTON_STEP = 2.0  # in standardised units: keeps the first steps of a flat logistic likelihood in range
TANGENTS = np.array([-1.5, -0.5, 0.5, 1.5])  # envelope tangent points, in conditional SDs from the mode
MAX_INDICATOR = 200_000  # rows x groups up to which per-group sums are a dense product (faster than a scatter)
CONDITIONAL_PER_DRAW = True  # the conditional draws evaluate the likelihood (nuts.py compiles them at -O1)
TRIES = 16  # rejection proposals per group and draw (each accepted with probability ~0.9: all fail ~1e-16)
UNIFORM_NOISE = True  # the conditional draws take uniforms on (0, 1) (nuts.py): erfinv and ndtr cost 3/4 of the draw


@dataclass(frozen=True)
class GlmmLayout:
    """Static shape of the sampled vector and the model (hashable: the compiled programs' key)."""

    base: Layout  # sds, correlations, the negative binomial's shape (in the sigma slot), alpha; nothing integrated out
    family: str
    link: str
    p_c: int  # centred coefficients other than the intercept
    nodes: int  # quadrature nodes per group of the first term; 0: every term sampled
    dense_metric: bool = False  # NUTS adapts a dense mass matrix (nuts.py reads it)
    centred: tuple = ()  # per term: True samples a scalar term partially centred by its levels' data["information<t>"]
    target_accept: float = 0.8  # NUTS's step-size adaptation target (nuts.py reads it)
    nested: tuple = ()  # (outer, inner): scalar intercept terms, inner's levels within outer's; outer integrated out

    @property
    def q_outer(self) -> int:
        """Levels of the integrated-out outer term (0 without one)."""
        return self.base.ms[self.nested[0]] if self.nested else 0

    @property
    def dim(self) -> int:
        return self.base.dim + self.p_c + self.q_sampled

    @property
    def q_sampled(self) -> int:
        """Standardised group effects NUTS samples: every term's, but for the quadrature's first term."""
        return sum(k * m for t, (k, m) in enumerate(zip(self.base.ks, self.base.ms)) if t or not self.nodes) - self.q_outer

    @property
    def n_base(self) -> int:
        return self.base.dim


def make_data(layout: GlmmLayout, design, X_c: np.ndarray, offset: np.ndarray, b_prior) -> dict:
    """The arrays the density reads: responses as counts, trials, the centred X, each term's codes and covariates."""
    w = np.asarray(design.family_weights, float)
    y = np.round(design.y * w) if layout.family == "binomial" else np.asarray(design.y, float)
    if layout.family == "binomial":
        const = special.gammaln(w + 1) - special.gammaln(y + 1) - special.gammaln(w - y + 1)
    else:
        const = -w * special.gammaln(y + 1)
    data = {"y": y, "w": w, "X": X_c, "offset": offset, "const": np.array(const.sum()), "priors": prior_params(layout.base),
            "b_prec": b_prior.precision, "b_mean": b_prior.mean}
    for t, block in enumerate(design.blocks):
        data[f"codes{t}"] = block.codes.astype(np.int32)
        data[f"Z{t}"] = np.asarray(block.Z, float)
    if layout.nodes:
        if design.nobs * layout.base.ms[0] <= MAX_INDICATOR:
            data["indicator"] = np.eye(layout.base.ms[0])[design.blocks[0].codes]
        data.update(quadrature_nodes(layout.nodes))
    return data


def quadrature_nodes(nodes: int) -> dict:
    """Gauss-Hermite nodes and log weights (times exp(x^2): the integrand's own Gaussian is in h) for the data."""
    x, wts = np.polynomial.hermite.hermgauss(nodes)
    return {"gh_x": x, "gh_logw": np.log(wts) + x**2}


def softplus(x):
    """log(1 + e^x), whose derivative (the logistic function) reuses the value's e^-|x|: one exponential per point
    for value and gradient, where `jax.nn.softplus` takes a second (the quadrature's rows x nodes: docs/bayes.md)."""
    import jax
    import jax.numpy as jnp

    @jax.custom_jvp
    def f(x):
        return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))

    @f.defjvp
    def f_jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        e = jnp.exp(-jnp.abs(x))
        return jnp.maximum(x, 0.0) + jnp.log1p(e), jnp.where(x >= 0, 1.0, e) / (1.0 + e) * dx

    return f(x)


def row_loglik(layout: GlmmLayout, data: dict, eta, shape):
    """Each row's log-likelihood at eta, without the terms free of the parameters (in data["const"])."""
    import jax.numpy as jnp
    from jax.scipy.special import log_ndtr

    y, w, link = data["y"], data["w"], layout.link
    if layout.family == "binomial":
        if link == "logit":
            return y * eta - w * softplus(eta)
        if link == "probit":
            return y * log_ndtr(eta) + (w - y) * log_ndtr(-eta)
        e = jnp.exp(eta)  # cloglog: P(y = 1) = 1 - exp(-e)
        return y * jnp.log(-jnp.expm1(-e)) - (w - y) * e
    if layout.family == "poisson":
        return w * (y * eta - jnp.exp(eta)) if link == "log" else w * (y * jnp.log(eta) - eta)
    log_shape = jnp.log(shape)
    return w * (y * eta - (shape + y) * (log_shape + softplus(eta - log_shape)))  # log(shape + mu), stable


def shape_loglik(layout: GlmmLayout, data: dict, shape):
    """The log-likelihood's terms free of eta but not of the negative binomial's shape (0 for other families):
    kept out of `row_loglik`, which the quadrature evaluates at every node."""
    import jax.numpy as jnp
    from jax.scipy.special import gammaln

    if layout.family != "negative_binomial":
        return 0.0
    y, w = data["y"], data["w"]
    return jnp.sum(w * (gammaln(y + shape) - gammaln(shape) + shape * jnp.log(shape)))


def _parameters(layout: GlmmLayout, data: dict, x):
    """Constrained parameters, the log prior (+ Jacobian) and the fixed part of the linear predictor at one point."""
    import jax.numpy as jnp

    nb = layout.n_base
    sds, chols, shape, alpha, lp = constrain(layout.base, x[:nb], jnp, data["priors"])
    shape = data["shape"] if shape is None and "shape" in data else shape  # a fixed theta
    beta = x[nb : nb + layout.p_c]
    prec = data["b_prec"]
    normal = 0.5 * jnp.log(prec / (2 * jnp.pi)) - 0.5 * prec * (beta - data["b_mean"]) ** 2
    lp = lp + jnp.sum(jnp.where(prec > 0, normal, 0.0))  # normal priors; flat ones (precision 0) add nothing
    eta0 = data["offset"] + data["X"] @ beta + (alpha if layout.base.intercept else 0.0)
    return sds, chols, shape, lp, eta0


def _group_sums(layout: GlmmLayout, data: dict, eta0, shape, slope, u):
    """Per group, h(u) = sum of its rows' log-likelihood at eta0 + slope u - u^2 / 2 for u (..., m)."""
    ll = row_loglik(layout, data, eta0 + slope * u[..., data["codes0"]], shape)
    return _per_group(layout, data, ll) - 0.5 * u**2


def _per_group(layout: GlmmLayout, data: dict, v):
    """Sums of v (..., n) over each group's rows: (..., m); a product with the indicator matrix when it is small."""
    import jax
    import jax.numpy as jnp

    if "indicator" in data:
        return v @ data["indicator"]
    sums = jax.ops.segment_sum(jnp.moveaxis(v, -1, 0), data["codes0"], num_segments=layout.base.ms[0])
    return jnp.moveaxis(sums, 0, -1)


def _derivatives(layout: GlmmLayout, data: dict, eta0, shape, slope, u):
    """h' and h'' per group at u (m,)."""
    import jax

    import jax.numpy as jnp

    def rows(eta):
        return row_loglik(layout, data, eta, shape).sum()

    eta = eta0 + slope * u[data["codes0"]]
    g1, g2 = jax.jvp(jax.grad(rows), (eta,), (jnp.ones_like(eta),))  # each row's d ll / d eta and d2 ll / d eta2
    h1 = _per_group(layout, data, g1 * slope) - u
    h2 = _per_group(layout, data, g2 * slope**2) - 1.0
    return h1, h2


def _mode(layout: GlmmLayout, data: dict, eta0, shape, slope, start=None):
    """Each group's mode of h and its conditional SD 1 / sqrt(-h''), by damped Newton steps (no gradient flows)."""
    import jax
    import jax.numpy as jnp

    eta0, shape, slope = (jax.lax.stop_gradient(a) for a in (eta0, shape, slope))

    def step(state):
        i, u, _, _ = state
        h1, h2 = _derivatives(layout, data, eta0, shape, slope, u)
        move = jnp.clip(-h1 / h2, -MAX_NEWTON_STEP, MAX_NEWTON_STEP)
        return i + 1, u + move, jnp.max(jnp.abs(move)), h2

    def more(state):
        return (state[0] < NEWTON_STEPS) & (state[2] > NEWTON_TOL)

    u0 = jnp.zeros(layout.base.ms[0]) if start is None else jax.lax.stop_gradient(start)
    _, u, _, h2 = jax.lax.while_loop(more, step, (0, u0, jnp.inf, -jnp.ones_like(u0)))
    return u, 1.0 / jnp.sqrt(-h2)  # the curvature of the last step's start, within NEWTON_TOL of the mode


def _effects(layout: GlmmLayout, data: dict, sds, chols, u):
    """The sampled terms' group effects (m, k) from their part of x (every term but a quadrature's first), their
    sum in the linear predictor, and their log prior density."""
    import jax.numpy as jnp

    blocks, eta, lp, start = [], 0.0, -0.5 * u.size * np.log(2 * np.pi), 0
    for t, (k, m) in enumerate(zip(layout.base.ks, layout.base.ms)):
        if t == 0 and layout.nodes:
            continue
        if layout.nested and t == layout.nested[0]:
            blocks.append(None)  # integrated out: drawn given the inner totals (`conditional_draw`)
            continue
        v = u[start : start + k * m].reshape(m, k)
        start += k * m
        if layout.nested and t == layout.nested[1]:
            b, lp_t = _totals(layout, data, sds, v[:, 0])
            lp = lp + lp_t
        elif layout.centred and layout.centred[t]:  # scalar: b = sd^(1 - w) v, w = I sd^2 / (1 + I sd^2) per level
            log_sd = jnp.log(sds[t][0])
            b, w = _partially_centred(data[f"information{t}"], log_sd, v[:, 0])
            lp = lp - 0.5 * jnp.sum(v[:, 0] ** 2 * jnp.exp(-2.0 * w * log_sd)) - jnp.sum(w) * log_sd
            b = b[:, None]
        else:
            b = v @ (sds[t][:, None] * chols[t]).T
            lp = lp - 0.5 * jnp.sum(v**2)
        blocks.append(b)
        eta = eta + jnp.sum(data[f"Z{t}"] * b[data[f"codes{t}"]], axis=1)
    return blocks, eta, lp


def _partially_centred(info, log_sd, v):
    """Effects b = sd^(1 - w) v per level, w = I sd^2 / (1 + I sd^2) from each level's information I (0: non-centred),
    and the weights w."""
    import jax.numpy as jnp

    w = info / (info + jnp.exp(-2.0 * log_sd))
    return jnp.exp((1.0 - w) * log_sd) * v, w


def _totals(layout: GlmmLayout, data: dict, sds, v):
    """The inner nested term's totals c = b_inner + b_outer[parent] (m, 1), partially centred as a scalar term with
    SD s = sqrt(sd_outer^2 + sd_inner^2), and their log prior with the outer effects integrated out: the c of one
    outer level are N(0, sd_inner^2 I + sd_outer^2 J), so with n of them, S = sum c and Q = sum c^2, -1/2 (Q -
    sd_outer^2 S^2 / d) / sd_inner^2 - (n - 1) log sd_inner - log(d) / 2, d = sd_inner^2 + n sd_outer^2."""
    import jax.numpy as jnp

    outer, inner = layout.nested
    a2, b2 = sds[outer][0] ** 2, sds[inner][0] ** 2
    log_s = 0.5 * jnp.log(a2 + b2)
    c, w = _partially_centred(data[f"information{inner}"], log_s, v)
    n, S, Q = _outer_sums(layout, data, c)
    d = b2 + n * a2
    lp = (-0.5 * jnp.sum((Q - a2 * S**2 / d) / b2) - 0.5 * jnp.sum((n - 1.0) * jnp.log(b2) + jnp.log(d))
          + jnp.sum(1.0 - w) * log_s)
    return c[:, None], lp


def _outer_sums(layout: GlmmLayout, data: dict, c):
    """Per outer level: the number of inner levels, the sum of their totals and of their squares."""
    import jax

    m = layout.q_outer
    return data["outer_count"], jax.ops.segment_sum(c, data["parent"], m), jax.ops.segment_sum(c**2, data["parent"], m)


def _outer_draw(layout: GlmmLayout, data: dict, sds, c, z):
    """The integrated-out outer effects given the inner totals c (exact Gaussian: mean sd_outer^2 S / d, variance
    sd_outer^2 sd_inner^2 / d per level), and the inner effects c - b_outer[parent]."""
    import jax.numpy as jnp

    outer, inner = layout.nested
    a2, b2 = sds[outer][0] ** 2, sds[inner][0] ** 2
    n, S, _ = _outer_sums(layout, data, c)
    d = b2 + n * a2
    b_outer = a2 * S / d + jnp.sqrt(a2 * b2 / d) * z
    return b_outer[:, None], (c - b_outer[data["parent"]])[:, None]


def log_density(layout: GlmmLayout, data: dict, x):
    """Unnormalised log posterior at one unconstrained point (JAX)."""
    import jax.numpy as jnp

    sds, chols, shape, lp, eta0 = _parameters(layout, data, x)
    _, eta_b, lp_b = _effects(layout, data, sds, chols, x[layout.n_base + layout.p_c :])
    eta0, lp = eta0 + eta_b, lp + lp_b
    if layout.nodes:
        ll = jnp.sum(first_term_integral(layout, data, eta0, shape, sds[0][0] * data["Z0"][:, 0])[0])
    else:
        ll = jnp.sum(row_loglik(layout, data, eta0, shape))
    total = lp + ll + shape_loglik(layout, data, shape) + data["const"]
    return jnp.where(jnp.isfinite(total), total, -jnp.inf)  # degenerate corners have no mass, never NaN


def first_term_integral(layout: GlmmLayout, data: dict, eta0, shape, slope, start=None):
    """Per group of the scalar first term, the log of its likelihood integrated over its effect by adaptive
    Gauss-Hermite quadrature (m,), with the nodes t (nodes, m) in standardised units and their log weights;
    `start`: where the Newton steps to the groups' modes begin (0 if None)."""
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp

    mode, s = _mode(layout, data, eta0, shape, slope, start)
    t = mode + np.sqrt(2.0) * s * data["gh_x"][:, None]  # (nodes, m)
    logw = data["gh_logw"][:, None] + _group_sums(layout, data, eta0, shape, slope, t)
    return jnp.log(np.sqrt(2.0) * s) + logsumexp(logw, axis=0) - 0.5 * np.log(2 * np.pi), t, logw


def noise_size(layout: GlmmLayout) -> int:
    """Uniforms on (0, 1) each conditional draw consumes (three per proposal; one per integrated-out outer level)."""
    return 3 * TRIES * layout.base.ms[0] if layout.nodes else layout.q_outer


def work(data: dict) -> int:
    """Multiply-adds per density evaluation, roughly (chooses the XLA pipeline)."""
    evaluations = data["gh_x"].shape[0] + 2 * NEWTON_STEPS if "gh_x" in data else 1
    return data["y"].shape[0] * (evaluations + data["X"].shape[1])


def conditional_draw(layout: GlmmLayout, data: dict, x, z):
    """Each term's group effects (m, k) for one draw: the sampled ones read off x, a quadrature's first term
    drawn exactly given x."""
    sds, chols, shape, _, eta0 = _parameters(layout, data, x)
    sampled, eta_b, _ = _effects(layout, data, sds, chols, x[layout.n_base + layout.p_c :])
    if layout.nested:
        from jax.scipy.special import ndtri

        outer, inner = layout.nested
        sampled[outer], sampled[inner] = _outer_draw(layout, data, sds, sampled[inner][:, 0], ndtri(z))
    if not layout.nodes:
        return tuple(sampled)
    slope = sds[0][0] * data["Z0"][:, 0]
    u = _rejection_draw(layout, data, eta0 + eta_b, shape, slope, z.reshape(3, TRIES, -1))
    return ((sds[0][0] * u)[:, None], *sampled)


def _rejection_draw(layout: GlmmLayout, data: dict, eta0, shape, slope, z):
    """One exact draw of each group's standardised effect from its log-concave conditional h.

    The envelope is the minimum of h's tangents at TANGENTS conditional SDs about the mode (above h because h
    is concave); its exponential pieces are drawn by inverse CDF and accepted with probability exp(h - envelope).
    The first accepted of TRIES proposals is returned (all are rejected with probability below 1e-15)."""
    import jax
    import jax.numpy as jnp

    mode, s = _mode(layout, data, eta0, shape, slope)
    a = mode + TANGENTS[:, None] * s  # (4, m)
    h = _group_sums(layout, data, eta0, shape, slope, a)
    d = jax.vmap(lambda p: _derivatives(layout, data, eta0, shape, slope, p)[0])(a)
    zc = (h[1:] - h[:-1] - d[1:] * a[1:] + d[:-1] * a[:-1]) / (d[:-1] - d[1:])  # consecutive tangents meet
    lo = jnp.concatenate([zc[:1], zc])  # each piece's finite end: its left end, the first piece's right end
    e_lo = h + d * (lo - a)
    width = jnp.concatenate([jnp.zeros_like(zc[:1]), zc[1:] - zc[:-1], jnp.zeros_like(zc[:1])])
    r = d * width
    middle = jnp.log(width) + jnp.where(jnp.abs(r) < 1e-8, 0.5 * r, jnp.log(jnp.expm1(r) / jnp.where(r == 0, 1.0, r)))
    log_mass = jnp.where(width > 0, e_lo + middle, e_lo - jnp.log(jnp.abs(d)))
    log_mass = log_mass.at[1:-1].set(jnp.where(width[1:-1] > 0, log_mass[1:-1], -jnp.inf))
    cum = jnp.cumsum(jax.nn.softmax(log_mass, axis=0), axis=0)  # (4, m)
    u1, u2, u3 = z  # (TRIES, m) each
    piece = jnp.sum(u1[None] > cum[:-1, None], axis=0)  # (TRIES, m)
    pick = lambda v: jnp.take_along_axis(v, piece, axis=0)  # noqa: E731 - per try and group, the piece's value
    dd, ll, ww = pick(d), pick(lo), pick(width)
    rr = dd * ww
    inner = ll + jnp.where(jnp.abs(rr) < 1e-8, u2 * ww, jnp.log1p(u2 * jnp.expm1(rr)) / jnp.where(rr == 0, 1.0, dd))
    outer = ll + jnp.log(u2) / dd  # first piece (d > 0) leftwards, last piece (d < 0) rightwards
    prop = jnp.where(ww > 0, inner, outer)
    envelope = jnp.min(h[:, None] + d[:, None] * (prop[None] - a[:, None]), axis=0)
    accept = jnp.log(u3) <= _group_sums(layout, data, eta0, shape, slope, prop) - envelope
    first = jnp.argmax(accept, axis=0)
    return jnp.take_along_axis(prop, first[None], axis=0)[0]
