"""The single-season occupancy likelihood with the latent occupancy summed out (MacKenzie et al. 2002).

Data are held site by visit: `X` (sites x a) the occupancy design, `V` (sites x visits x b) the detection design,
`Y` the detections and `mask` the visits made (1) or not (0, padding). Site i contributes
log(psi_i prod_j p_ij^y (1 - p_ij)^(1 - y) + (1 - psi_i) 1[no detection at i]). One function serves NumPy (the
ML fit) and JAX (NUTS): `xp` is the array module.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np


@dataclass(frozen=True)
class OccupancyArrays:
    """A model's numbers site by visit (see the module docstring); `detected` marks sites with a detection."""

    X: np.ndarray
    V: np.ndarray
    Y: np.ndarray
    mask: np.ndarray

    @property
    def detected(self) -> np.ndarray:
        return (self.Y * self.mask).max(axis=1) > 0

    @property
    def a(self) -> int:
        return self.X.shape[1]


def logits(params, X, V, shift_psi=0.0, shift_p=0.0):
    """The occupancy logit per site and the detection logit per survey; `shift_psi` and `shift_p` (per site) are
    added to them: a site's random effect."""
    a = X.shape[1]
    return X @ params[:a] + shift_psi, V @ params[a:] + (shift_p[:, None] if np.ndim(shift_p) else shift_p)


def _sigmoid(xp, eta, e):
    """1 / (1 + e^-eta) given e = e^-|eta|."""
    return xp.where(eta >= 0, 1.0, e) / (1.0 + e)


def site_likelihood(xp, eta_psi, eta_p, Y, mask):
    """Per site from the logits: log P(y_i) (z summed out), w_i = P(z_i = 1 | y_i), psi_i, and p per survey
    (NumPy or JAX: `xp`).

    With A = log(psi P(y | z = 1)) and B = log(1 - psi) (a site never detected; else B = -inf), log P(y) = A +
    softplus(B - A) there; every log(1 + e^t) is written max(t, 0) + log(1 + e^-|t|), so a site costs two
    exponentials and two logarithms and a survey one exponential (the log of a product over the site's surveys,
    each factor in [1, 2]): on OVEN a gradient costs a third of autodiff through log-sum-exps."""
    e_psi, e = xp.exp(-xp.abs(eta_psi)), xp.exp(-xp.abs(eta_p))
    seen = xp.sum(mask * Y * eta_p, axis=-1)  # sum of y eta
    softplus = xp.sum(mask * xp.maximum(eta_p, 0.0), axis=-1) + xp.log(xp.prod(xp.where(mask > 0, 1.0 + e, 1.0), axis=-1))
    missed = xp.max(mask * Y, axis=-1) <= 0  # never detected: z may be 0
    r = softplus - seen - eta_psi  # B - A
    e_r = xp.exp(-xp.abs(r))
    ll = (xp.minimum(eta_psi, 0.0) + seen - softplus + xp.where(missed, xp.maximum(r, 0.0), 0.0)
          + xp.log(xp.where(missed, 1.0 + e_r, 1.0) / (1.0 + e_psi)))
    w = xp.where(missed, xp.where(r >= 0, e_r, 1.0) / (1.0 + e_r), 1.0)
    return ll, w, _sigmoid(xp, eta_psi, e_psi), _sigmoid(xp, eta_p, e)


@cache
def jax_site_loglik():
    """Per site log-likelihood from the logits, (eta_psi, eta_p, Y, mask) -> log P(y_i), as a JAX function whose
    derivative is the analytic one (`gradient_hessian`'s algebra): d/d eta_psi = w - psi, d/d eta_p = w (y - p)."""
    import jax
    import jax.numpy as jnp

    @jax.custom_jvp
    def site_loglik(eta_psi, eta_p, Y, mask):
        return site_likelihood(jnp, eta_psi, eta_p, Y, mask)[0]

    @site_loglik.defjvp
    def _derivative(primals, tangents):
        eta_psi, eta_p, Y, mask = primals
        ll, w, psi, p = site_likelihood(jnp, eta_psi, eta_p, Y, mask)
        return ll, (w - psi) * tangents[0] + w * jnp.sum(mask * (Y - p) * tangents[1], axis=1)

    return site_loglik


def loglik(params, arrays: OccupancyArrays) -> float:
    """The log-likelihood: the sum over sites of log P(y_i), z summed out."""
    return float(np.sum(site_posterior(params, arrays)[0]))


def site_posterior(params: np.ndarray, arrays: OccupancyArrays, shift_psi=0.0, shift_p=0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per site: its log-likelihood and P(z_i = 1 | y_i) (1 where the species was detected)."""
    eta_psi, eta_p = logits(params, arrays.X, arrays.V, shift_psi, shift_p)
    return site_likelihood(np, eta_psi, eta_p, arrays.Y, arrays.mask)[:2]


def site_posteriors(draws: np.ndarray, arrays: OccupancyArrays, shift_psi=0.0, shift_p=0.0) -> tuple[np.ndarray, np.ndarray]:
    """`site_posterior` at many draws at once: draws (n x coefficients), shifts (n x sites) -> (n x sites) each."""
    a = arrays.a
    eta_psi = draws[:, :a] @ arrays.X.T + shift_psi
    eta_p = np.einsum("sjb,nb->nsj", arrays.V, draws[:, a:]) + (shift_p[..., None] if np.ndim(shift_p) else shift_p)
    return site_likelihood(np, eta_psi, eta_p, arrays.Y, arrays.mask)[:2]


def conditional_occupancy(params: np.ndarray, arrays: OccupancyArrays, shift_psi=0.0, shift_p=0.0) -> np.ndarray:
    """P(z_i = 1 | y_i) per site: 1 where the species was detected, else the posterior share of occupancy."""
    return site_posterior(params, arrays, shift_psi, shift_p)[1]


def gradient_hessian(params: np.ndarray, arrays: OccupancyArrays) -> tuple[np.ndarray, np.ndarray]:
    """Analytic gradient and Hessian of the log-likelihood.

    With w = P(z = 1 | y), site i's log-likelihood is log(e^A + e^B): its gradient is w dA + (1 - w) dB and its
    Hessian w d2A + (1 - w) d2B + w (1 - w) (dA - dB)(dA - dB)'; dA - dB = (x_i, sum_j (y - p) v_ij)."""
    X, V, Y, mask = arrays.X, arrays.V, arrays.Y, arrays.mask
    a = X.shape[1]
    _, w, psi, p = site_likelihood(np, *logits(params, X, V), Y, mask)
    g_det = np.einsum("sj,sjk->sk", mask * (Y - p), V)  # per site, the detection part's score given z = 1
    grad = np.concatenate([X.T @ (w - psi), w @ g_det])
    diff = np.concatenate([X, g_det], axis=1)
    hess = (diff * (w * (1 - w))[:, None]).T @ diff
    hess[:a, :a] -= (X * (psi * (1 - psi))[:, None]).T @ X
    hess[a:, a:] -= np.einsum("sj,sjk,sjl->kl", mask * p * (1 - p) * w[:, None], V, V)
    return grad, hess


def shift_derivatives(params: np.ndarray, arrays: OccupancyArrays, part: str, shift: np.ndarray):
    """Per site: log-likelihood and its first two derivatives in a shift of the psi logit (part "psi") or of
    all the site's p logits (part "p"), at that shift; the same algebra as `gradient_hessian`."""
    kw = {"shift_psi": shift} if part == "psi" else {"shift_p": shift}
    ll, w, psi, p = site_likelihood(np, *logits(params, arrays.X, arrays.V, **kw), arrays.Y, arrays.mask)
    if part == "psi":
        return ll, w - psi, w * (1 - w) - psi * (1 - psi)
    mask = arrays.mask
    g = np.sum(mask * (arrays.Y - p), axis=1)
    return ll, w * g, w * (1 - w) * g**2 - w * np.sum(mask * p * (1 - p), axis=1)


@dataclass(frozen=True)
class OccupancyLayout:
    """What NUTS (`nuts.run_chains`) needs of an occupancy model, occupancy summed out. The sampled vector is
    (beta, alpha) with independent normal priors (variance `data["prior_var"]`), then, with a random intercept on
    `part` over `m` groups, log sigma and the standardised effects u (b = sigma u, u ~ N(0, 1); sigma^2 ~
    inverse-gamma(shape, scale) = `data["sd_prior"]`, spOccupancy's prior on random-effect variances)."""

    n_sites: int
    a: int
    b: int
    part: str | None = None
    m: int = 0
    dense_metric: bool = False  # NUTS adapts a dense mass matrix (nuts.py reads it)

    @property
    def k(self) -> int:
        """Number of coefficients."""
        return self.a + self.b

    def _split(self, data: dict, x):
        """Coefficients, and the random effects as per-site shifts for `logits`."""
        if self.part is None:
            return x, {}
        import jax.numpy as jnp

        b = jnp.exp(x[self.k]) * x[self.k + 1:]
        return x[: self.k], {f"shift_{self.part}": b[data["codes"]]}

    def log_density(self, data: dict, x):
        """Log posterior (up to a constant) at the sampled vector x (JAX)."""
        import jax.numpy as jnp

        coef, shifts = self._split(data, x)
        site_ll = jax_site_loglik()(*logits(coef, data["X"], data["V"], **shifts), data["Y"], data["mask"])
        lp = jnp.sum(site_ll) - 0.5 * jnp.sum(coef**2 / data["prior_var"])
        if self.part is not None:  # inverse-gamma on sigma^2 with the Jacobian of log sigma: -2 shape log sigma - scale / sigma^2
            shape, scale = data["sd_prior"][0], data["sd_prior"][1]
            lp = lp - 2 * shape * x[self.k] - scale * jnp.exp(-2 * x[self.k]) - 0.5 * jnp.sum(x[self.k + 1:] ** 2)
        return lp


# ---------------------------------------------------------------------------------------------- NUTS target
# `nuts.run_chains` takes a target module with these functions (as `collapsed` and `glmm_density`), here without a
# conditional draw: the latent occupancy is drawn after sampling, for all of a chain's draws at once in NumPy
# (`site_posteriors`). As a compiled program (OVEN, 4 x 2000 draws) it cost 0.5 CPU-s to compile and 0.4 s to run.


def log_density(layout: OccupancyLayout, data: dict, x):
    """Unnormalised log posterior at one unconstrained point (JAX), occupancy summed out."""
    return layout.log_density(data, x)


def work(data: dict) -> int:
    """Multiply-adds per density evaluation, roughly: small per-row terms, so XLA's fast-compiling pipeline."""
    return sum(int(np.size(v)) for v in data.values())
