"""A GLMM's posterior of (beta, theta) with every group effect integrated out by the Laplace approximation, in
JAX for NUTS (``sampler="laplace"``; APPROXIMATE, see docs/bayes.md).

At each point the standardised effects u (b = diag(sd) L u per level) go to the mode u* of
f(u) = sum of the rows' log-likelihood - |u|^2 / 2 (term-by-term sweeps, then full Newton steps, each shortened
until it improves f; from the ML fit's modes when the data hold them, a constant, else from 0), and the log
marginal likelihood is f(u*) - log det(H) / 2 with H = I + A'WA the negative Hessian (A: each row's loading on
u, W the rows' observed information). H is held in blocks as the engine's: the first term's k x k blocks per
level, a dense Schur complement for the others (the rows' loadings on them held sparse, a few entries per row).
The gradient is exact for the approximation: the mode enters through one Newton step from its stopped value,
whose derivative is the mode's implicit derivative H^-1 dg/dtheta; where that step is still long the mode was
not found and the density is -inf (NUTS's divergence), never NaN. The effects are drawn per draw from the
Laplace Gaussian N(u*, H^-1) (approximate too); `importance_draws` and `marginal_importance_draws` give the
`laplace_check` its weights against the exact joint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .glmm_density import GlmmLayout, _parameters, first_term_integral, row_loglik, shape_loglik

NEWTON_STEPS = 40  # at most this many Newton steps to the mode
NEWTON_TOL = 1e-6  # until no coordinate moves more (standardised units); the final Newton step in
# `log_density` takes the error to ~1e-12, its square
SWEEPS = 6  # term-by-term Newton sweeps (each costs gradients only) before the full Newton steps, from u = 0
WARM_SWEEPS = 1  # the same from the ML fit's modes (`start_point`): VerbAgg 6 sweeps + 3 steps from 0 -> 1 + 3-4
MAX_STEP = 3.0  # a step's largest coordinate (standardised units): keeps flat logistic likelihoods in range
MODE_CHECK = 1e-3  # a last Newton step longer than this (standardised units) means the mode was not found
HALVINGS = 12  # step lengths the line search may try: 1, 1/2, ..., 1/2048


@dataclass(frozen=True)
class LaplaceLayout(GlmmLayout):
    """As `GlmmLayout`, with no group effect sampled: NUTS runs on (sds, correlations, shape, alpha, beta).
    `pairs`: the Schur complement's correction summed over pairs of rows sharing a first-term level (sparse)
    rather than as a dense product (see `laplace_inputs`)."""

    pairs: bool = False

    @property
    def q_sampled(self) -> int:
        return 0

    @property
    def q_first(self) -> int:
        return self.base.ks[0] * self.base.ms[0]

    @property
    def q_rest(self) -> int:
        return self.base.q_rest


def laplace_inputs(glmm: GlmmLayout, data: dict, design) -> tuple[LaplaceLayout, dict]:
    """The layout and data of the Laplace density from the GLMM density's (`nodes=0`): with a scalar first term
    whose levels' rows pair up more cheaply than the dense product (m0 q_rest^2), the row pairs' indices."""
    layout = LaplaceLayout(glmm.base, glmm.family, glmm.link, glmm.p_c, 0)
    codes = design.blocks[0].codes
    sizes = np.bincount(codes, minlength=layout.base.ms[0])
    entries = sum(layout.base.ks[1:])
    if layout.base.ks[0] > 1 or not layout.q_rest or (sizes**2).sum() * entries**2 >= layout.q_first * layout.q_rest**2:
        return layout, data
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    pairs = [(a, b) for g in range(len(sizes)) for a in order[starts[g] : starts[g + 1]] for b in order[starts[g] : starts[g + 1]]]
    i, j = np.array(pairs, dtype=np.int32).T
    return LaplaceLayout(glmm.base, glmm.family, glmm.link, glmm.p_c, 0, pairs=True), {**data, "pair_i": i, "pair_j": j}


def loadings(layout: LaplaceLayout, data: dict, sds, chols):
    """Each row's loading on its level's u, per term: (n, k_t) = Z_t diag(sd_t) L_t."""
    return [data[f"Z{t}"] @ (sds[t][:, None] * chols[t]) for t in range(len(layout.base.ks))]


def _rest_entries(layout: LaplaceLayout, data: dict, A):
    """The other terms' loadings as each row's entries of a sparse (n, q_rest) matrix R: columns (n, E) and
    values (n, E), E the other terms' coefficients (columns level-major within each term)."""
    import jax.numpy as jnp

    cols, start = [], 0
    for t in range(1, len(layout.base.ks)):
        k, m = layout.base.ks[t], layout.base.ms[t]
        cols.append(start + data[f"codes{t}"][:, None] * k + jnp.arange(k))
        start += k * m
    return jnp.concatenate(cols, axis=1), jnp.concatenate(A[1:], axis=1)


def _split(layout: LaplaceLayout, u):
    return u[: layout.q_first].reshape(layout.base.ms[0], layout.base.ks[0]), u[layout.q_first :]


def _eta(layout: LaplaceLayout, data: dict, eta0, A, R, u):
    """The linear predictor at the standardised effects u."""
    import jax.numpy as jnp

    u0, u1 = _split(layout, u)
    eta = eta0 + jnp.sum(A[0] * u0[data["codes0"]], axis=1)
    return eta + jnp.sum(R[1] * u1[R[0]], axis=1) if layout.q_rest else eta


def objective(layout: LaplaceLayout, data: dict, eta0, shape, A, R, u):
    """f(u): the rows' log-likelihood at the effects u minus |u|^2 / 2."""
    return row_loglik(layout, data, _eta(layout, data, eta0, A, R, u), shape).sum() - 0.5 * u @ u


def _gradient_and_weights(layout: LaplaceLayout, data: dict, eta0, shape, A, R, u):
    """f'(u) and the rows' observed information W = -d2 ll / d eta2 at u."""
    import jax
    import jax.numpy as jnp

    def rows(eta):
        return row_loglik(layout, data, eta, shape).sum()

    eta = _eta(layout, data, eta0, A, R, u)
    d1 = jax.grad(rows)(eta)
    w = -jax.grad(lambda e: jax.grad(rows)(e) @ jnp.ones_like(e))(eta)  # rows are separable: the diagonal
    m0 = layout.base.ms[0]
    g0 = jax.ops.segment_sum(d1[:, None] * A[0], data["codes0"], num_segments=m0).reshape(-1)
    if layout.q_rest:
        g1 = jax.ops.segment_sum((d1[:, None] * R[1]).reshape(-1), R[0].reshape(-1), num_segments=layout.q_rest)
        g0 = jnp.concatenate([g0, g1])
    return g0 - u, w


def factor(layout: LaplaceLayout, data: dict, A, R, w):
    """H = I + A'WA in blocks: (L0, M, Ls) with L0 the first term's per-level Cholesky factors (m0, k0, k0),
    M = L0^-1 H01 (m0, k0, q_rest) and Ls the Cholesky factor of the Schur complement H11 - M'M."""
    import jax
    import jax.numpy as jnp

    m0, k0 = layout.base.ms[0], layout.base.ks[0]
    wa = w[:, None] * A[0]
    H00 = jnp.eye(k0) + jax.ops.segment_sum(wa[:, :, None] * A[0][:, None, :], data["codes0"], num_segments=m0)
    L0 = jnp.linalg.cholesky(H00)
    if not layout.q_rest:
        return L0, None, None
    cols, vals = R
    r, codes = layout.q_rest, data["codes0"][:, None, None]
    H01 = jnp.zeros((m0, k0, r)).at[codes, jnp.arange(k0)[None, :, None], cols[:, None, :]].add(wa[:, :, None] * vals[:, None, :])
    M = jax.scipy.linalg.solve_triangular(L0, H01, lower=True)
    Mf = M.reshape(m0 * k0, r)
    H11 = jnp.eye(r).at[cols[:, :, None], cols[:, None, :]].add(w[:, None, None] * vals[:, :, None] * vals[:, None, :])
    if layout.pairs:  # M'M = sum over rows i, j of one level g of wa_i wa_j / H00_g times their entries' products
        i, j = data["pair_i"], data["pair_j"]
        c = wa[i, 0] * wa[j, 0] / H00[data["codes0"][i], 0, 0]
        MtM = jnp.zeros((r, r)).at[cols[i][:, :, None], cols[j][:, None, :]].add(
            c[:, None, None] * vals[i][:, :, None] * vals[j][:, None, :])
    else:
        MtM = Mf.T @ Mf
    S = H11 - MtM
    return L0, M, jnp.linalg.cholesky(S)


def solve(layout: LaplaceLayout, factors, g):
    """H^-1 g from `factor`'s blocks."""
    import jax.numpy as jnp
    from jax.scipy.linalg import solve_triangular

    L0, M, Ls = factors
    g0, g1 = _split(layout, g)
    y0 = solve_triangular(L0, g0[..., None], lower=True)[..., 0]
    if not layout.q_rest:
        return solve_triangular(L0, y0[..., None], lower=True, trans=1)[..., 0].reshape(-1)
    Mf = M.reshape(-1, layout.q_rest)
    d1 = solve_triangular(Ls, solve_triangular(Ls, g1 - Mf.T @ y0.reshape(-1), lower=True), lower=True, trans=1)
    r0 = y0 - (Mf @ d1).reshape(y0.shape)
    d0 = solve_triangular(L0, r0[..., None], lower=True, trans=1)[..., 0]
    return jnp.concatenate([d0.reshape(-1), d1])


def log_det(factors):
    """log det H from `factor`'s blocks."""
    import jax.numpy as jnp

    L0, _, Ls = factors
    total = 2.0 * jnp.sum(jnp.log(jnp.diagonal(L0, axis1=-2, axis2=-1)))
    return total if Ls is None else total + 2.0 * jnp.sum(jnp.log(jnp.diag(Ls)))


def gaussian_draw(layout: LaplaceLayout, factors, mode, z):
    """mode + a draw of N(0, H^-1) from standard normals z (q,): the other terms from their marginal (precision
    the Schur complement), then the first term's levels given them."""
    import jax.numpy as jnp
    from jax.scipy.linalg import solve_triangular

    L0, M, Ls = factors
    z0, z1 = _split(layout, z)
    if not layout.q_rest:
        return mode + solve_triangular(L0, z0[..., None], lower=True, trans=1)[..., 0].reshape(-1)
    d1 = solve_triangular(Ls, z1, lower=True, trans=1)
    r0 = z0 - (M.reshape(-1, layout.q_rest) @ d1).reshape(z0.shape)
    d0 = solve_triangular(L0, r0[..., None], lower=True, trans=1)[..., 0]
    return mode + jnp.concatenate([d0.reshape(-1), d1])


def find_mode(layout: LaplaceLayout, data: dict, eta0, shape, A, R, start):
    """u* by Newton steps from `start` (each at most MAX_STEP in any coordinate and shortened by `_line_search`
    until it improves f, so no step leaves the finite region); no gradient flows."""
    import jax
    import jax.numpy as jnp

    eta0, shape, A, R, start = jax.tree_util.tree_map(jax.lax.stop_gradient, (eta0, shape, A, R, start))

    def f(u):
        return objective(layout, data, eta0, shape, A, R, u)

    def step(state):
        i, u, fu, _ = state
        g, w = _gradient_and_weights(layout, data, eta0, shape, A, R, u)
        u, fu, size = _line_search(f, u, fu, solve(layout, factor(layout, data, A, R, w), g))
        return i + 1, u, fu, size

    def more(state):
        return (state[0] < NEWTON_STEPS) & (state[3] > NEWTON_TOL)

    sweeps = WARM_SWEEPS if "anchor0" in data else SWEEPS
    u, fu = jax.lax.fori_loop(0, sweeps, lambda _, s: _sweep(layout, data, eta0, shape, A, R, *s, f), (start, f(start)))
    _, u, _, _ = jax.lax.while_loop(more, step, (0, u, fu, jnp.inf))
    return u


def _line_search(f, u, fu, move):
    """u + s move for the largest s in 1, 1/2, ..., 2^-(HALVINGS - 1) at which f is finite and not below f(u) (the
    move first capped at MAX_STEP per coordinate; 1 and 1/2 tried together, the rest one by one only when both fail),
    with f there and the step's largest coordinate; u itself when none is (then the step's size is 0)."""
    import jax
    import jax.numpy as jnp

    move = move * jnp.minimum(1.0, MAX_STEP / jnp.max(jnp.abs(move)))

    def good(value):
        return jnp.isfinite(value) & (value >= fu)

    def halve(state):
        i, s, _ = state
        return i + 1, 0.5 * s, f(u + 0.5 * s * move)

    def shorter(_):
        return jax.lax.while_loop(lambda st: (st[0] < HALVINGS) & ~good(st[2]), halve, (2, 0.5, -jnp.inf))

    pair = jax.vmap(lambda s: f(u + s * move))(jnp.array([1.0, 0.5]))
    first = good(pair[0])
    i, s, value = jax.lax.cond(good(pair).any(), lambda _: (1, jnp.where(first, 1.0, 0.5), jnp.where(first, pair[0], pair[1])),
                               shorter, None)
    s = jnp.where(i < HALVINGS, s, 0.0)
    return u + s * move, jnp.where(i < HALVINGS, value, fu), s * jnp.max(jnp.abs(move))


def _sweep(layout: LaplaceLayout, data: dict, eta0, shape, A, R, u, fu, f):
    """One cheap sweep towards the mode: a Newton step in each term's effects in turn, the others held (the
    levels of one term are independent given the others, so the diagonal is their Hessian for scalar terms).
    Returns u and f(u)."""
    import jax.numpy as jnp

    start = 0
    for k, m in zip(layout.base.ks, layout.base.ms):
        g, w = _gradient_and_weights(layout, data, eta0, shape, A, R, u)
        mask = jnp.zeros(u.shape[0]).at[start : start + k * m].set(1.0)
        u, fu, _ = _line_search(f, u, fu, mask * g / _diagonal(layout, data, A, R, w))
        start += k * m
    return u, fu


def _diagonal(layout: LaplaceLayout, data: dict, A, R, w):
    """The diagonal of H = I + A'WA."""
    import jax
    import jax.numpy as jnp

    d0 = jax.ops.segment_sum(w[:, None] * A[0] ** 2, data["codes0"], num_segments=layout.base.ms[0]).reshape(-1)
    if layout.q_rest:
        d1 = jax.ops.segment_sum((w[:, None] * R[1] ** 2).reshape(-1), R[0].reshape(-1), num_segments=layout.q_rest)
        d0 = jnp.concatenate([d0, d1])
    return 1.0 + d0


def start_point(layout: LaplaceLayout, data: dict, sds, chols):
    """Where the Newton steps begin: the anchor effects b (data["anchor<t>"], (m, k) per term, the ML fit's modes:
    `glmm_laplace.anchor`) standardised at this point, u = (diag(sd) L)^-1 b per level; 0 without them. A constant
    of the data, so the density stays a function of (beta, theta) alone."""
    import jax.numpy as jnp
    from jax.scipy.linalg import solve_triangular

    if "anchor0" not in data:
        return jnp.zeros(layout.q_first + layout.q_rest)
    parts = [solve_triangular(sds[t][:, None] * chols[t], data[f"anchor{t}"].T, lower=True).T.reshape(-1)
             for t in range(len(layout.base.ks))]
    return jnp.concatenate(parts)


def _at_mode(layout: LaplaceLayout, data: dict, x):
    """Everything at one point: log prior, shape, the loadings, the stopped mode and its factors."""
    import jax

    sds, chols, shape, lp, eta0 = _parameters(layout, data, x)
    A = loadings(layout, data, sds, chols)
    R = _rest_entries(layout, data, A) if layout.q_rest else None
    mode = find_mode(layout, data, eta0, shape, A, R, start_point(layout, data, sds, chols))
    g, w = _gradient_and_weights(layout, data, eta0, shape, A, R, mode)
    factors = factor(layout, data, *jax.lax.stop_gradient((A, R, w)))
    return sds, chols, shape, lp, eta0, A, R, mode, g, factors


def log_density(layout: LaplaceLayout, data: dict, x):
    """Unnormalised log posterior of (beta, theta) at one unconstrained point, effects integrated out by Laplace;
    -inf where the mode was not found (a divergence to NUTS, so reported, not hidden)."""
    import jax
    import jax.numpy as jnp

    _, _, shape, lp, eta0, A, R, mode, g, factors = _at_mode(layout, data, x)
    correction = solve(layout, factors, g)
    u = mode + correction  # = the mode in value; its derivative is the mode's implicit derivative
    _, w = _gradient_and_weights(layout, data, eta0, shape, A, R, u)
    ll = objective(layout, data, eta0, shape, A, R, u) - 0.5 * log_det(factor(layout, data, A, R, w))
    total = lp + ll + shape_loglik(layout, data, shape) + data["const"]
    found = jnp.max(jnp.abs(jax.lax.stop_gradient(correction))) < MODE_CHECK  # else the Newton steps ran out
    return jnp.where(jnp.isfinite(total) & found, total, -jnp.inf)


def noise_size(layout: LaplaceLayout) -> int:
    """Standard normals each conditional draw consumes: one per standardised effect."""
    return layout.q_first + layout.q_rest


def work(data: dict) -> int:
    """Multiply-adds per density evaluation, roughly (chooses the XLA pipeline)."""
    return data["y"].shape[0] * (NEWTON_STEPS + data["X"].shape[1])


def conditional_draw(layout: LaplaceLayout, data: dict, x, z):
    """Each term's group effects (m, k) for one draw, from the Laplace Gaussian N(u*, H^-1) (approximate)."""
    sds, chols, _, _, _, _, _, mode, _, factors = _at_mode(layout, data, x)
    return effect_blocks(layout, sds, chols, gaussian_draw(layout, factors, mode, z))


def mode_effects(layout: LaplaceLayout, data: dict, x):
    """Each term's group effects (m, k) at the mode: the Laplace Gaussian's mean."""
    sds, chols, *_, mode, _, _ = _at_mode(layout, data, x)
    return effect_blocks(layout, sds, chols, mode)


def effect_blocks(layout: LaplaceLayout, sds, chols, u):
    """Per term, the group effects (m, k) of the standardised u."""
    out, start = [], 0
    for t, (k, m) in enumerate(zip(layout.base.ks, layout.base.ms)):
        out.append(u[start : start + k * m].reshape(m, k) @ (sds[t][:, None] * chols[t]).T)
        start += k * m
    return tuple(out)


def importance_draws(layout: LaplaceLayout, data: dict, x, z):
    """Draws of the group effects from the Laplace Gaussian at x, one per row of z (K, q), and their log ratios
    log p(y, u | x) / (Laplace's p(y | x) N(u; u*, H^-1)): the ratios' mean exponential estimates the exact
    marginal likelihood over Laplace's (1 if the approximation were exact). Returns (ratios (K,), effects)."""
    import jax

    sds, chols, shape, _, eta0, A, R, mode, _, factors = _at_mode(layout, data, x)
    f_mode = objective(layout, data, eta0, shape, A, R, mode)

    def one(zk):
        u = gaussian_draw(layout, factors, mode, zk)
        ratio = objective(layout, data, eta0, shape, A, R, u) - f_mode + 0.5 * zk @ zk
        return ratio, effect_blocks(layout, sds, chols, u)

    return jax.vmap(one)(z)


def marginal_importance_draws(layout: LaplaceLayout, data: dict, x, z):
    """As `importance_draws` with the scalar first term integrated out exactly (adaptive quadrature, nodes in
    data) given the other terms' effects, drawn from their Laplace marginal N(u1*, S^-1) by z (K, q_rest): the
    weights then cover only the other terms. Each draw's effects are the first term's exact conditional means
    given the others, and the others' draws."""
    import jax
    import jax.numpy as jnp
    from jax.scipy.linalg import solve_triangular
    from jax.scipy.special import softmax

    sds, chols, shape, _, eta0, A, R, mode, _, factors = _at_mode(layout, data, x)
    L0, M, Ls = factors
    base = log_det((L0, None, None)) / 2 - objective(layout, data, eta0, shape, A, R, mode)
    slope = sds[0][0] * data["Z0"][:, 0]

    def one(zk):
        if layout.q_rest:
            d1 = solve_triangular(Ls, zk, lower=True, trans=1)
            u1, eta = mode[layout.q_first :] + d1, eta0 + jnp.sum(R[1] * (mode[layout.q_first :] + d1)[R[0]], axis=1)
            start = mode[: layout.q_first] - solve_triangular(L0, (M @ d1)[..., None], lower=True, trans=1)[..., 0, 0]
        else:
            u1, eta, start = zk, eta0, mode
        per_group, t, logw = first_term_integral(layout, data, eta, shape, slope, start)  # from the Gaussian's mean
        u0 = jnp.sum(softmax(logw, axis=0) * t, axis=0)  # each group's exact conditional mean
        ratio = jnp.sum(per_group) - 0.5 * u1 @ u1 + 0.5 * zk @ zk + base
        return ratio, effect_blocks(layout, sds, chols, jnp.concatenate([u0, u1]))

    return jax.vmap(one)(z)
