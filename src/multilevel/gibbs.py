"""Blocked Gibbs sampler for Gaussian mixed models (``sampler="gibbs"``), for users coming from BUGS/JAGS.

Each iteration draws

1. all fixed effects and group effects in ONE Gaussian draw given the variances, with the engine's
   blocked Cholesky factor (the same factorisation as the frequentist fit);
2. sigma and every SD from their full conditionals given the group effects and residuals:
   half-student-t priors (brms's default) through Huang & Wand's (2013) augmentation, which is exact:
   sd^2 | a ~ IG(nu/2, nu/a), a ~ IG(1/2, 1/A^2) gives sd ~ half-t(nu, A);
3. any other prior on a scalar SD or sigma, and the covariance matrix of every vector-valued term with
   brms's half-t SDs and LKJ correlation prior, by an independence Metropolis step whose proposal is the
   conditional under the working prior |Sigma|^(-k/2) (an inverse-Wishart); the acceptance ratio is
   prod_i p(sd_i) det(R)^(eta - 1 + k/2), bounded, so brms's prior is kept exactly;
4. the scale of the centred intercept's student-t prior from its normal scale-mixture representation.

Chains run in separate processes with ``cores > 1``; chain c uses ``np.random.default_rng([seed, c])``,
so draws do not depend on the number of cores.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.linalg as sla

from .centring import held_draws, uncentre
from . import chains as runner
from .coefficient_prior import CoefficientPrior
from .crossprod import CrossProducts, cross_products, residual_sum_of_squares, response
from .design import Design
from .engine import Engine, tri_index
from .errors import MultilevelError
from .partitioned import PartitionedDesign, response_values, sampler_inputs
from .posterior import Posterior
from .priors import Prior, PriorSet, coefficient_prior, for_centred_response
from .scaling import Scaling


class GaussianBlock:
    """Joint draws of the (centred) coefficients and all group effects given the variances."""

    def __init__(self, design: Design, cp: CrossProducts | None = None):
        cp = cross_products(design, Scaling.identity(design.p)) if cp is None else cp  # draws in the user's units
        self.engine = Engine(cp, [b.k for b in design.blocks], [b.m for b in design.blocks])
        self.p, self.q2 = design.p, self.engine.q_rest
        self.tri = [tuple(np.array(ix) for ix in zip(*tri_index(k))) for k in self.engine.ks]
        self._cross_block()

    def refresh(self, cp: CrossProducts) -> None:
        """New weights and response on the same design (`crossprod.Reweighting`: Pólya–Gamma augmentation)."""
        self.engine = self.engine.refresh(cp)
        self._cross_block()

    def _cross_block(self) -> None:
        """The engine's cross block B = [Z_rest X y]'WZ_0 as used per draw: its response row (kept whole by the
        engine, so it is the cross-products' column) and B' (a transposed view: slicing copies cost more than the
        draw on small models)."""
        self.B_y = self.engine.cp.zxy[0][:, -1]
        self.B_T = self.engine.B.T  # (q0, r); its last column, the response's, meets a zero in `draw`

    def draw(self, T: list[np.ndarray], sigma: float, prior: CoefficientPrior, rng) -> tuple[np.ndarray, list]:
        """(beta, [b per term (m, k)]) from their joint Gaussian conditional; T are the relative factors chol(Sigma)/sigma."""
        e, q2, p = self.engine, self.q2, self.p
        theta = np.concatenate([t[ix] for t, ix in zip(T, self.tri)])
        f = e.factor(theta, prior, sigma)
        if f is None:
            raise MultilevelError(
                f"the Gibbs sampler met a system that is not positive definite at a residual SD of {sigma:.2g}: check "
                "the design for collinear columns, and if that SD is about 0, whether the data are noise-free (the model "
                "reproduces the response exactly, e.g. y computed from the predictors and the groups)"
            )
        nt = q2 + p
        k0, m0 = e.ks[0], e.ms[0]
        z0 = rng.standard_normal((m0, k0))
        zt = rng.standard_normal(nt)
        w = sla.solve_triangular(f.Ls[:nt, :nt], f.Ls[-1, :nt] + sigma * zt, lower=True, trans="T", check_finite=False)
        scaled, b_rest = w.copy(), []
        offs = e.rest_offsets
        for a in range(1, e.n_terms):
            sa = slice(offs[a - 1], offs[a])
            b = w[sa].reshape(e.ms[a], e.ks[a]) @ T[a].T
            scaled[sa] = b.ravel()
            b_rest.append(b)
        rhs = (self.B_y - self.B_T @ np.append(scaled, 0.0)).reshape(m0, k0) @ T[0]  # T0' v_g per level
        noise = np.linalg.solve(np.swapaxes(f.L11, 1, 2), z0[:, :, None])[:, :, 0]
        u0 = np.linalg.solve(f.A11, rhs[:, :, None])[:, :, 0] + sigma * noise
        return w[q2:], [u0 @ T[0].T] + b_rest


def inv_gamma(rng, shape: float, scale: float) -> float:
    """One draw from the inverse-gamma(shape, scale) distribution."""
    return scale / rng.gamma(shape)


def huang_wand(rng, ss: float, m: float, var: float, prior: Prior) -> float:
    """New variance of a half-t(nu, A) SD given m values with sum of squares ss: a | var, then var | a, data."""
    nu, A = prior.params
    a = inv_gamma(rng, (nu + 1) / 2, nu / var + 1 / A**2)
    return inv_gamma(rng, (nu + m) / 2, nu / a + ss / 2)


def log_weight(cov: np.ndarray, sd_priors: list[Prior], eta: float) -> float:
    """Log of target prior over the working prior |Sigma|^(-k/2): prod p(sd_i) det(R)^(eta - 1 + k/2)."""
    sd = np.sqrt(np.diag(cov))
    k = len(sd)
    out = sum(float(p.logpdf(s)) for p, s in zip(sd_priors, sd))
    if k > 1:
        R = cov / np.outer(sd, sd)
        out += (eta - 1 + k / 2) * np.linalg.slogdet(R)[1]
    return out


def inv_wishart(rng, df: float, S: np.ndarray) -> np.ndarray:
    """One draw from the inverse-Wishart(df, S) distribution (Bartlett decomposition of its inverse)."""
    k = S.shape[0]
    if k == 1:
        return S / rng.chisquare(df)
    C = np.linalg.cholesky(np.linalg.inv(S))
    A = np.tril(rng.standard_normal((k, k)), -1)
    A[np.diag_indices(k)] = np.sqrt(rng.chisquare(df - np.arange(k)))
    CA = C @ A
    return np.linalg.inv(CA @ CA.T)


def metropolis_cov(rng, S: np.ndarray, m: float, cov: np.ndarray, sd_priors: list[Prior], eta: float) -> tuple[np.ndarray, bool]:
    """Independence Metropolis step for a covariance matrix: proposal IW(m - 1, S), exact for the target prior."""
    prop = inv_wishart(rng, m - 1, S)
    accept = np.log(rng.uniform()) < log_weight(prop, sd_priors, eta) - log_weight(cov, sd_priors, eta)
    return (prop, True) if accept else (cov, False)


class Conditionals:
    """A Gaussian Gibbs chain's priors and variance state (SDs, sigma, the student-t mixture weights) and their
    conditional draws given the coefficients and group effects, shared by the blocked `Chain` and
    `crossed_gibbs.CrossedChain`."""

    shape: float | None = None  # a negative binomial's shape (`glmm_gibbs.NegativeBinomialChain`)

    def __init__(self, design: Design, ps: PriorSet, rng: np.random.Generator, sd_y: float):
        self.design, self.rng = design, rng
        names = design.fixed_names
        self.b_priors = [ps.intercept if n == "(Intercept)" else ps.b[n] for n in names]
        self.sd_priors = [[ps.sd[(i, c)] for c in blk.coef_names] for i, blk in enumerate(design.blocks)]
        self.eta = [ps.cor[i].params[0] if i in ps.cor else 1.0 for i in range(len(design.blocks))]
        self.sigma_prior = ps.sigma
        for i, blk in enumerate(design.blocks):
            if blk.m <= blk.k and not (blk.k == 1 and self._hw(self.sd_priors[i][0])):
                raise MultilevelError(
                    f"the Gibbs sampler needs more levels than coefficients in '({' + '.join(blk.coef_names)} | {blk.group})' "
                    f"({blk.m} levels): use sampler='nuts'"
                )
        sd_y = sd_y or 1.0
        self.cov = [np.diag((sd_y / 2 * np.exp(rng.uniform(-1, 1, blk.k))) ** 2) for blk in design.blocks]
        self.sigma = sd_y / 2 * np.exp(rng.uniform(-1, 1)) if ps.sigma is not None else None
        self.lam = np.ones(len(names))  # student-t scale-mixture weights (1 where unused)

    @staticmethod
    def _hw(prior: Prior) -> bool:
        return prior.family == "half_student_t"

    def coefficient_prior(self) -> CoefficientPrior:
        """The coefficients' priors as normals (student-t ones given their current mixture weights)."""
        return coefficient_prior(self.b_priors, self.lam)

    def draw_variances(self, rss) -> float:
        """Given the current beta and b: the student-t mixture weights, every term's covariance, then sigma from
        `rss()` (the weighted residual sum of squares); returns the share of Metropolis steps accepted (1 if none)."""
        rng, design = self.rng, self.design
        for j, p in enumerate(self.b_priors):
            if p.family == "student_t":
                nu, mu, s = p.params
                self.lam[j] = rng.gamma((nu + 1) / 2, 2 / (nu + ((self.beta[j] - mu) / s) ** 2))
        moves = []
        for i, blk in enumerate(design.blocks):
            b = self.b[i]
            if blk.k == 1 and self._hw(self.sd_priors[i][0]):
                var = huang_wand(rng, float(b[:, 0] @ b[:, 0]), blk.m, self.cov[i][0, 0], self.sd_priors[i][0])
                self.cov[i] = np.array([[var]])
            else:
                self.cov[i], ok = metropolis_cov(rng, b.T @ b, blk.m, self.cov[i], self.sd_priors[i], self.eta[i])
                moves.append(ok)
        if self.sigma is not None:
            ss = rss()
            if self._hw(self.sigma_prior):
                var = huang_wand(rng, ss, design.nobs, self.sigma**2, self.sigma_prior)
                self.sigma = float(np.sqrt(var))
            else:
                cov, ok = metropolis_cov(rng, np.array([[ss]]), design.nobs, np.array([[self.sigma**2]]), [self.sigma_prior], 1.0)
                self.sigma = float(np.sqrt(cov[0, 0]))
                moves.append(ok)
        return float(np.mean(moves)) if moves else 1.0


class Chain(Conditionals):
    """One blocked Gibbs chain: the state and one full sweep of conditional draws."""

    def __init__(self, design: Design, ps: PriorSet, rng: np.random.Generator, cp: CrossProducts | None = None):
        self.block = GaussianBlock(design, cp)
        self.rows = not isinstance(design, PartitionedDesign)  # else residual sums from the cross-products
        if self.rows:
            self.y = response(design)
            w = design.weights
            if design.se is not None:
                w = (1.0 if w is None else w) / design.se**2
            self.w = w
        super().__init__(design, ps, rng, float(np.std(response_values(design) if not self.rows else self.y)))

    def sweep(self) -> float:
        """One Gibbs iteration; returns the share of Metropolis steps accepted (1 if there were none)."""
        sigma = 1.0 if self.sigma is None else self.sigma
        T = [np.linalg.cholesky(c) / sigma for c in self.cov]
        self.beta, self.b = self.block.draw(T, sigma, self.coefficient_prior(), self.rng)
        return self.draw_variances(self._rss)

    def _rss(self) -> float:
        """The weighted residual sum of squares at the current beta and b: over the rows in memory, else as a
        quadratic form in the cross-products."""
        if not self.rows:
            return residual_sum_of_squares(self.block.engine.cp, self.beta, self.b)
        e = self.y - self.design.X @ self.beta
        for blk, b in zip(self.design.blocks, self.b):
            e -= np.einsum("nk,nk->n", blk.Z, b[blk.codes])
        return float(e @ e if self.w is None else (self.w * e) @ e)


def run_chain(design: Design, ps: PriorSet, seed: int, chain: int, warmup: int, draws: int, cp=None, report=None) -> dict:
    """Burn in, then keep `draws` sweeps of one chain (its own generator: default_rng([seed, chain])); `cp`, the
    design's cross-products, when they are not computed from its rows. After a stop request (Ctrl-C,
    `chains.stop_requested()`), the draws finished so far, or None before the first.

    `report(chain, sweeps_done)` is called about a hundred times along the way (progress bars)."""
    return keep_sweeps(Chain(design, ps, np.random.default_rng([seed, chain]), cp), chain, warmup, draws, report)


def keep_sweeps(ch: Chain, chain: int, warmup: int, draws: int, report=None) -> dict:
    """Sweep chain number `chain` `warmup` times, then keep `draws` sweeps' states (and report progress)."""
    design = ch.design
    blocks = design.blocks
    out = {
        "beta": np.empty((draws, design.p)),
        "sd": [np.empty((draws, b.k)) for b in blocks],
        "corr": [np.empty((draws, b.k, b.k)) for b in blocks],
        "b": [np.empty((draws, b.m, b.k)) for b in blocks],
        "sigma": np.empty(draws) if ch.sigma is not None else None,
        "shape": np.empty(draws) if ch.shape is not None else None,
        "accept_rate": np.empty(draws),
    }
    step = max(1, (warmup + draws) // 100)
    for it in range(warmup + draws):
        if runner.stop_requested():
            return _first(out, it - warmup) if it > warmup else None
        rate = ch.sweep()
        if report is not None and ((it + 1) % step == 0 or it + 1 == warmup + draws):
            report(chain, it + 1)
        d = it - warmup
        if d < 0:
            continue
        out["beta"][d] = ch.beta
        out["accept_rate"][d] = rate
        for i, cov in enumerate(ch.cov):
            sd = np.sqrt(np.diag(cov))
            out["sd"][i][d] = sd
            out["corr"][i][d] = cov / np.outer(sd, sd)
            out["b"][i][d] = ch.b[i]
        if ch.sigma is not None:
            out["sigma"][d] = ch.sigma
        if ch.shape is not None:
            out["shape"][d] = ch.shape
    return out


def _first(out: dict, n: int) -> dict:
    """A chain's output cut to its first n draws."""
    return {k: None if v is None else [a[:n] for a in v] if isinstance(v, list) else v[:n] for k, v in out.items()}


def _per_term(results: list[dict], key: str) -> list[np.ndarray]:
    """Per random term, the chains' draws of `key` stacked as (chains, draws, ...)."""
    return [np.stack([r[key][i] for r in results]) for i in range(len(results[0][key]))]


def sample_gibbs(model, ps: PriorSet, chains: int, draws: int, warmup: int, seed: int, cores: int, progress: bool):
    """Blocked Gibbs draws of every parameter, returned as a `Posterior` (same tables as NUTS)."""
    start = time.perf_counter()
    y0, held = for_centred_response(model.design, ps)  # sampled: the model of y - y0 (its intercept prior moved)
    design, cp, columns, _ = sampler_inputs(model, y0, ps.informative)
    if not design.blocks:
        raise MultilevelError("the formula has no random term such as '(1 | group)'")
    jobs = [(design, held, seed, c, warmup, draws, cp) for c in range(chains)]
    res = runner.run(run_chain, jobs, cores, warmup, draws, progress, label="gibbs chain", stoppable=True)
    return posterior_of(model, design.fixed_names, columns, res, draws, ps, seed, time.perf_counter() - start, y0)


def posterior_of(model, centred_names: list[str], columns: Scaling, res: list, draws: int, ps: PriorSet, seed: int,
                 seconds: float, y0: float = 0.0, sampler: str = "gibbs") -> Posterior:
    """The `Posterior` of the chains' kept sweeps (`keep_sweeps`; after Ctrl-C, the longest equal run of them),
    coefficients back in the user's columns (the response less y0 was sampled)."""
    res, n, finished = runner.kept_chains(res, lambda r: len(r["beta"]), draws)
    res = [_first(r, n) for r in res]
    beta_c = np.stack([r["beta"] for r in res])
    beta = uncentre(model.design.fixed_names, centred_names, beta_c, columns, y0)
    sigma, shape = (None if res[0][k] is None else np.stack([r[k] for r in res]) for k in ("sigma", "shape"))
    stats = {"accept_rate": np.stack([r["accept_rate"] for r in res])}
    return Posterior(model, beta, _per_term(res, "sd"), _per_term(res, "corr"), sigma, _per_term(res, "b"), stats, ps,
                     seed, seconds, sampler, shape=shape, finished=finished,
                     held=held_draws(model.design.fixed_names, centred_names, beta_c, columns, y0))
