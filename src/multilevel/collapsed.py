"""The collapsed posterior of a Gaussian mixed model, written in JAX for NUTS (pipeline step 6).

Given the SDs and correlations of each random term, sigma and the centred intercept alpha, the group
effects and the other (centred) coefficients are jointly Gaussian, so they are integrated out exactly
with the same blocked penalised-least-squares factorisation as the engine: the first term's k x k
blocks per level, then a dense Schur complement for the other terms, the centred X, the intercept
column and y. NUTS then runs only on

    [log sd (per term and coefficient), CPC-transformed correlations (per term), log sigma, alpha].

The data enter as runtime arguments (cross-products, and the priors' values, which brms's defaults take
from y), so one compiled program serves every data set of the same shapes and prior families; JAX's
persistent compilation cache keeps it across sessions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .coefficient_prior import CoefficientPrior
from .errors import MultilevelError
from .priors import PARAM_WIDTH, Prior, PriorSet, coefficient_prior, log_kernel, log_normaliser


@dataclass(frozen=True)
class Layout:
    """Static shape of the sampled parameter vector and the model (hashable: a jit static argument and the compiled
    programs' key). The priors' families belong to it; their values do not (compare=False): they are runtime data."""

    ks: tuple[int, ...]
    ms: tuple[int, ...]
    p_c: int  # centred coefficients integrated out
    intercept: bool  # alpha sampled
    has_sigma: bool  # False with known se() only
    priors: tuple[Prior, ...] = field(compare=False, repr=False)  # sds, then correlations (terms with k > 1), sigma, alpha
    b_priors: tuple[Prior, ...] = field(compare=False, repr=False)  # flat or normal, per centred coefficient
    families: tuple[str, ...] = field(init=False)  # of `priors`

    def __post_init__(self):
        object.__setattr__(self, "families", tuple(p.family for p in self.priors))

    @property
    def n_sd(self) -> int:
        return sum(self.ks)

    @property
    def n_cor(self) -> int:
        return sum(k * (k - 1) // 2 for k in self.ks)

    @property
    def dim(self) -> int:
        return self.n_sd + self.n_cor + int(self.has_sigma) + int(self.intercept)

    @property
    def q_rest(self) -> int:
        return sum(k * m for k, m in zip(self.ks[1:], self.ms[1:]))

    @property
    def n_effects(self) -> int:
        """Group effects and centred coefficients: integrated out, then drawn exactly for each draw."""
        return self.ks[0] * self.ms[0] + self.q_rest + self.p_c


def make_layout(model, ps: PriorSet, p_c: int, intercept: bool) -> Layout:
    blocks = model.design.blocks
    sd = [ps.sd[(i, c)] for i, b in enumerate(blocks) for c in b.coef_names]
    cor = [ps.cor[i] for i, b in enumerate(blocks) if b.k > 1]
    rest = [p for p in (ps.sigma, ps.intercept) if p is not None]
    names = [n for n in model.design.fixed_names if n != "(Intercept)"] if intercept else model.design.fixed_names
    return Layout(
        tuple(b.k for b in blocks), tuple(b.m for b in blocks), p_c, intercept, ps.sigma is not None,
        tuple(sd + cor + rest), tuple(ps.b[n] for n in names),
    )


def prior_params(layout: Layout) -> np.ndarray:
    """The priors' values (runtime data of the compiled density), a row per prior of `layout.priors`: its
    parameters, zero-padded, then its log normaliser (computed here: in XLA log-gamma costs compile time)."""
    out = np.zeros((len(layout.priors), PARAM_WIDTH + 1))
    for i, p in enumerate(layout.priors):
        out[i, : len(p.params)] = p.params
        out[i, -1] = log_normaliser(p.family, p.params)
    return out


def _log_prior(layout: Layout, params, i: int, x, xp):
    """Log density of the layout's i-th prior at x, its values read from the `prior_params` rows `params`."""
    return log_kernel(layout.families[i], params[i], x, xp) + params[i][PARAM_WIDTH]


def split(layout: Layout, x, xp=np):
    """Unconstrained vector(s) (..., dim) -> (log sds, cpc values, log sigma or None, alpha or None)."""
    i = layout.n_sd
    log_sd = x[..., :i]
    cpc = x[..., i : i + layout.n_cor]
    i += layout.n_cor
    log_sigma = x[..., i] if layout.has_sigma else None
    i += int(layout.has_sigma)
    alpha = x[..., i] if layout.intercept else None
    return log_sd, cpc, log_sigma, alpha


def corr_cholesky(z, k: int, xp=np):
    """Cholesky factor of a correlation matrix from k(k-1)/2 values in (-1, 1) (canonical partial
    correlations, row-wise), and the log-Jacobian of that map. Works on leading batch dimensions."""
    batch = z.shape[:-1]
    rows = []
    logjac = xp.zeros(batch)
    idx = 0
    for i in range(k):
        row, ssq = [], xp.zeros(batch)
        for j in range(i):
            w = z[..., idx]
            idx += 1
            logjac = logjac + 0.5 * xp.log1p(-ssq)
            val = w * xp.sqrt(1.0 - ssq)
            ssq = ssq + val**2
            row.append(val)
        row.append(xp.sqrt(1.0 - ssq) if i else xp.ones(batch))
        row += [xp.zeros(batch)] * (k - i - 1)
        rows.append(xp.stack(row, axis=-1))
    return xp.stack(rows, axis=-2), logjac


def lkj_cholesky_logpdf(L, eta, xp=np):
    """LKJ(eta) density of a correlation matrix, expressed on its Cholesky factor (unnormalised)."""
    k = L.shape[-1]
    diag = xp.diagonal(L, axis1=-2, axis2=-1)[..., 1:]
    powers = xp.asarray([k - i - 1.0 for i in range(1, k)]) + 2.0 * (eta - 1.0)
    return xp.sum(powers * xp.log(diag), axis=-1)


def constrain(layout: Layout, x, xp=np, params=None):
    """Unconstrained -> (sd per term [(..., k)], corr Cholesky per term [(..., k, k)], sigma, alpha, log prior + Jacobian).

    `params` are the priors' values as `prior_params` gives them (traced in JAX); by default the layout's own."""
    params = prior_params(layout) if params is None else params
    log_sd, cpc, log_sigma, alpha = split(layout, x, xp)
    sds, chols = [], []
    lp = xp.sum(log_sd, axis=-1)  # Jacobian of exp
    s = c = 0
    j = layout.n_sd  # the next prior after the sds'
    for k in layout.ks:
        sd = xp.exp(log_sd[..., s : s + k])
        for a in range(k):
            lp = lp + _log_prior(layout, params, s + a, sd[..., a], xp)
        s += k
        ncor = k * (k - 1) // 2
        if ncor:
            zt = xp.tanh(cpc[..., c : c + ncor])
            L, logjac = corr_cholesky(zt, k, xp)
            y = xp.abs(cpc[..., c : c + ncor])
            log_dtanh = 2.0 * (np.log(2.0) - y - xp.log1p(xp.exp(-2.0 * y)))  # log(1 - tanh^2), stable in the tails
            lp = lp + logjac + xp.sum(log_dtanh, axis=-1)
            lp = lp + lkj_cholesky_logpdf(L, params[j][0], xp)
            c += ncor
            j += 1
        else:
            L = xp.ones(x.shape[:-1] + (1, 1))
        sds.append(sd)
        chols.append(L)
    sigma = None
    if layout.has_sigma:
        sigma = xp.exp(log_sigma)
        lp = lp + log_sigma + _log_prior(layout, params, j, sigma, xp)
        j += 1
    if layout.intercept:
        lp = lp + _log_prior(layout, params, j, alpha, xp)
    return sds, chols, sigma, alpha, lp


def relative_factors(sds, chols, sigma, xp=np):
    """Per term, the lower-triangular relative factor T = diag(sd) L / sigma (lme4's Lambda block)."""
    scale = 1.0 if sigma is None else sigma
    out = []
    for sd, L in zip(sds, chols):
        out.append(sd[..., :, None] * L / xp.asarray(scale)[..., None, None])
    return out


def jax_data(engine, layout: Layout) -> dict:
    """The arrays the JAX density reads, from the engine built on the centred design."""
    k0, m0 = layout.ks[0], layout.ms[0]
    r = engine.C22.shape[0]
    B = engine.B.toarray().reshape(r, m0, k0)
    prior = coefficient_prior(list(layout.b_priors) + [Prior("flat")] * int(layout.intercept))  # alpha is sampled
    if engine.fill_map is None:
        raise MultilevelError(
            "the crossed terms have too many levels for the samplers' fill map (the fit forms it by sparse products "
            "instead): sample with sampler='gibbs', fit with Model.fit(), or sample a subsample of the levels"
        )
    fill = sp.coo_matrix(engine.fill_map)  # the engine's map from M (per level, flattened) to the fill's lower part
    targets = engine.fill_targets
    rows, cols = targets // r, targets % r
    return {
        "G": np.asarray(engine.cp.diag[0]),
        "B": B,
        "C22": np.asarray(engine.C22),
        "fill_vals": fill.data.astype(float),
        "fill_rows": fill.row.astype(np.int32),
        "fill_cols": fill.col.astype(np.int32),
        "fill_lower": targets.astype(np.int32),
        "fill_upper": (cols * r + rows).astype(np.int32),
        "fill_mirror": (rows != cols).astype(float),
        "b_prec": prior.precision,  # one per column of the centred X, intercept column last (flat)
        "b_mean": prior.mean,
        "priors": prior_params(layout),
        "consts": np.array([engine.n, engine.cp.sum_log_w]),
    }


def _system(layout: Layout, data: dict, x):
    """Constrained parameters and the blocked factor of the augmented system at one point (JAX)."""
    import jax.numpy as jnp

    sds, chols, sigma, alpha, lp = constrain(layout, x, jnp, data["priors"])
    T = relative_factors(sds, chols, sigma, jnp)
    first = _first_term(T[0], data["G"], layout.ks[0])
    M = jnp.einsum("ab,gbc,dc->gad", T[0], first["Ainv"], T[0])  # T0 A11^{-1} T0'
    S = _fill_schur(data, M)
    q2, p_c = layout.q_rest, layout.p_c
    lam = _rest_lambda(layout, T, S.shape[0], jnp)
    if q2:
        S = lam.T @ S @ lam
    sig2 = 1.0 if sigma is None else sigma**2
    S = S + jnp.diag(jnp.concatenate([jnp.ones(q2), jnp.zeros(S.shape[0] - q2)]))  # + I on the group-effect rows
    if p_c:  # normal priors on the centred coefficients, on the relative scale (hence sigma^2)
        S = S.at[q2:, q2:].add(CoefficientPrior(data["b_prec"], data["b_mean"]).augmentation(sig2, jnp))
    L = _cholesky(S)
    return dict(T=T, first=first, L=L, lam=lam, sigma=sigma, sig2=sig2, alpha=alpha, lp=lp)


DENSE_FILL_FLOPS = 1_000_000  # below this a dense B M B' is cheaper in XLA than gather/scatter of the fill map


def _fill_schur(data: dict, M):
    """C22 - B M B': the engine's sparse fill map applied to the per-level M (cost ~ its nonzeros, not r^2 q0)."""
    import jax
    import jax.numpy as jnp

    C, B = data["C22"], data["B"]
    if B.shape[0] ** 2 * B.shape[1] * B.shape[2] <= DENSE_FILL_FLOPS:  # small: one fused product beats scatters
        return C - jnp.einsum("rga,gab,sgb->rs", B, M, B)
    contrib = data["fill_vals"] * M.reshape(-1)[data["fill_cols"]]
    vals = jax.ops.segment_sum(contrib, data["fill_rows"], num_segments=data["fill_lower"].shape[0])
    flat = C.reshape(-1).at[data["fill_lower"]].add(-vals).at[data["fill_upper"]].add(-vals * data["fill_mirror"])
    return flat.reshape(C.shape)


def _first_term(T0, G, k0: int) -> dict:
    """Per level of the first term: A = T0'G T0 + I, its inverse, its Cholesky factor and sum log det A.

    Scalar and 2 x 2 blocks (random intercepts; intercept and slope) are written out elementwise: XLA fuses
    them, where batched LAPACK calls on tiny matrices cost a call per level.
    """
    import jax.numpy as jnp

    if k0 == 1:
        a = T0[0, 0] ** 2 * G[:, 0, 0] + 1.0
        return dict(Ainv=(1.0 / a)[:, None, None], L=jnp.sqrt(a)[:, None, None], logdet=jnp.sum(jnp.log(a)))
    if k0 == 2:
        (t00, _), (t10, t11) = T0[0], T0[1]  # lower triangular: T0[0, 1] is 0
        g00, g01, g11 = G[:, 0, 0], G[:, 0, 1], G[:, 1, 1]
        a00 = t00 * (t00 * g00 + t10 * g01) + t10 * (t00 * g01 + t10 * g11) + 1.0
        a01 = t11 * (t00 * g01 + t10 * g11)
        a11 = t11 * t11 * g11 + 1.0
        det = a00 * a11 - a01 * a01
        Ainv = jnp.stack([jnp.stack([a11, -a01], -1), jnp.stack([-a01, a00], -1)], -2) / det[:, None, None]
        l00 = jnp.sqrt(a00)
        l10 = a01 / l00
        zero = jnp.zeros_like(l00)
        L = jnp.stack([jnp.stack([l00, zero], -1), jnp.stack([l10, jnp.sqrt(a11 - l10 * l10)], -1)], -2)
        return dict(Ainv=Ainv, L=L, logdet=jnp.sum(jnp.log(det)))
    A = jnp.einsum("ba,gbc,cd->gad", T0, G, T0) + jnp.eye(k0)
    L = jnp.linalg.cholesky(A)
    return dict(Ainv=jnp.linalg.inv(A), L=L, logdet=2 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=1, axis2=2))))


SMALL = 8  # dense systems up to this size are factored by unrolled scalar code, fused by XLA


def _cholesky(S):
    """Lower Cholesky factor; unrolled for small systems (a LAPACK call per leapfrog step costs more)."""
    import jax.numpy as jnp

    r = S.shape[0]
    if r > SMALL:
        return jnp.linalg.cholesky(S)
    L = [[None] * r for _ in range(r)]
    for j in range(r):
        L[j][j] = jnp.sqrt(S[j, j] - sum((L[j][k] ** 2 for k in range(j)), 0.0))
        for i in range(j + 1, r):
            L[i][j] = (S[i, j] - sum((L[i][k] * L[j][k] for k in range(j)), 0.0)) / L[j][j]
    zero = jnp.zeros_like(S[0, 0])
    return jnp.stack([jnp.stack([L[i][j] if j <= i else zero for j in range(r)]) for i in range(r)])


def _solve_upper_from_lower(L, v):
    """Solve L' x = v for one lower-triangular L; unrolled for small systems."""
    import jax.numpy as jnp
    import jax.scipy.linalg as jsl

    r = L.shape[0]
    if r > SMALL or r == 0:
        return jsl.solve_triangular(L, v, lower=True, trans="T")
    x = [None] * r
    for i in reversed(range(r)):
        x[i] = (v[i] - sum((L[k, i] * x[k] for k in range(i + 1, r)), 0.0)) / L[i, i]
    return jnp.stack(x)


def _solve_lt(L, z):
    """Solve L' x = z for each level's lower-triangular L (closed form for 1 x 1 and 2 x 2)."""
    import jax.numpy as jnp
    import jax.scipy.linalg as jsl

    k = L.shape[-1]
    if k == 1:
        return z / L[:, 0, :]
    if k == 2:
        x1 = z[:, 1] / L[:, 1, 1]
        x0 = (z[:, 0] - L[:, 1, 0] * x1) / L[:, 0, 0]
        return jnp.stack([x0, x1], -1)
    return jsl.solve_triangular(L, z[..., None], lower=True, trans="T")[..., 0]


def log_density(layout: Layout, data: dict, x):
    """Unnormalised log posterior at one unconstrained point (JAX)."""
    import jax.numpy as jnp

    s = _system(layout, data, x)
    L, d = s["L"], jnp.diagonal(s["L"])
    n, sum_log_w = data["consts"][0], data["consts"][1]
    q2, p_c = layout.q_rest, layout.p_c
    ld = s["first"]["logdet"] + 2 * jnp.sum(jnp.log(d[: q2 + p_c]))
    r2 = (L[-1, -2] - d[-2] * s["alpha"]) ** 2 + d[-1] ** 2 if layout.intercept else d[-1] ** 2
    # integrating the centred coefficients gives (2 pi sigma^2)^(p_c/2) / |R_X|, times normal priors' normalisers
    normal_b = jnp.sum(jnp.where(data["b_prec"] > 0, 0.5 * jnp.log(data["b_prec"] / (2 * jnp.pi)), 0.0))
    log_sig2 = 0.0 if s["sigma"] is None else jnp.log(s["sig2"])
    ll = -0.5 * ((n - p_c) * (jnp.log(2 * jnp.pi) + log_sig2) + ld - sum_log_w + r2 / s["sig2"]) + normal_b
    total = s["lp"] + ll
    return jnp.where(jnp.isfinite(total), total, -jnp.inf)  # degenerate corners have no mass, never NaN


def noise_size(layout: Layout) -> int:
    """Standard normals each conditional draw consumes."""
    return layout.n_effects


def work(data: dict) -> int:
    """Multiply-adds per density evaluation, roughly (chooses the XLA pipeline)."""
    C, B = data["C22"], data["B"]
    return C.shape[0] ** 3 // 3 + B.size * B.shape[-1] + data["fill_vals"].size


def conditional_draw(layout: Layout, data: dict, x, z):
    """One exact draw of (centred coefficients, group effects per term) given the sampled parameters (JAX).

    Solves L' w = l_y - alpha l_alpha + sigma z blockwise: the dense trailing part, then each level of the
    first term; group effects are returned on the response scale (b = Lambda u).
    """
    import jax.numpy as jnp

    s = _system(layout, data, x)
    L, q2, p_c = s["L"], layout.q_rest, layout.p_c
    nt = q2 + p_c
    sigma = 1.0 if s["sigma"] is None else s["sigma"]
    k0, m0 = layout.ks[0], layout.ms[0]
    z0, zt = z[: m0 * k0].reshape(m0, k0), z[m0 * k0 :]
    v = L[-1, :nt] + sigma * zt
    if layout.intercept:
        v = v - s["alpha"] * L[-2, :nt]
    wt = _solve_upper_from_lower(L[:nt, :nt], v)
    scaled = s["lam"][:nt, :nt] @ wt  # b_rest on the response scale, then beta_c
    B = data["B"]
    resid = B[-1] - jnp.einsum("rga,r->ga", B[:nt], scaled)
    if layout.intercept:
        resid = resid - s["alpha"] * B[-2]
    rhs = jnp.einsum("ga,ab->gb", resid, s["T"][0])  # T0' v_g
    u0 = jnp.einsum("gab,gb->ga", s["first"]["Ainv"], rhs) + sigma * _solve_lt(s["first"]["L"], z0)
    b0 = u0 @ s["T"][0].T
    return scaled[q2:], b0, scaled[:q2]


def _rest_lambda(layout: Layout, T, r: int, xp):
    """Block-diagonal Lambda for the trailing terms, identity on the X, intercept and y rows."""
    blocks = [xp.kron(xp.eye(layout.ms[i]), T[i]) for i in range(1, len(layout.ks))]
    size = layout.q_rest
    out = xp.eye(r)
    if size:
        import jax.scipy.linalg as jsl

        out = out.at[:size, :size].set(jsl.block_diag(*blocks))
    return out
