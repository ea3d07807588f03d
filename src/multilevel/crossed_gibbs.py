"""Collapsed Gibbs for Gaussian models whose random terms are all scalar (``sampler="crossed-gibbs"``): crossed
designs too large for the blocked sampler's dense system, at a cost per sweep linear in the rows.

Each sweep draws, for each term k in turn, the fixed effects and term k's effects JOINTLY given the other terms'
effects and the variances: the coefficients from their conditional with term k's effects integrated out (a p x p
Gaussian), then term k's effects given them (independent across levels: a diagonal precision). This is the
collapsed Gibbs sampler of Papaspiliopoulos, Roberts & Zanella (2020, Biometrika 107(1)), who update the global
mean jointly with each factor and prove that its convergence does not degrade as crossed designs grow (where the
plain Gibbs sampler's does); here every fixed effect is collapsed with each factor, not only the mean. Each term's
SD is then moved given its standardised effects (interweaving, `CrossedChain._rescale`). Last the
SDs and sigma are drawn from their conditionals as the blocked sampler draws them (`gibbs.Conditionals`:
half-t priors by Huang & Wand's augmentation, others by an exact Metropolis step).

Everything is read from the cross-products, which hold per level the (weighted) sums Z_k'WZ_k, Z_k'W[X y] and,
per pair of terms, the sparse Z_j'WZ_k: a sweep is one sparse product per ordered pair of terms (about the rows'
count of non-zeros each) plus O(levels x p^2); the residual sum of squares for sigma comes from the same
products. Partitioned data need no second pass.

>>> import multilevel as mlv
>>> model = mlv.Model("diameter ~ 1 + (1 | plate) + (1 | sample)", mlv.datasets.load("Penicillin"))
>>> post = model.sample(sampler="crossed-gibbs", chains=2, draws=300, warmup=100, seed=1, progress=False)
>>> post.sampler, list(post.summary().index)
('crossed-gibbs', ['b_Intercept', 'sd_plate__Intercept', 'sd_sample__Intercept', 'sigma'])
"""

from __future__ import annotations

import time

import numpy as np

from . import chains as runner
from .crossprod import CrossProducts
from .dense_memory import available_bytes, dense_size
from .design import Design
from .errors import MultilevelError
from .gibbs import Conditionals, keep_sweeps, posterior_of
from .partitioned import response_values, sampler_inputs
from .priors import PriorSet, for_centred_response

NAME = "crossed-gibbs"
DENSE_SIDE = 3_000  # `sampler="gibbs"` takes this sampler when the blocked one's dense system is larger (docs/bayes.md)
MEMORY_SHARE = 0.5  # the kept draws may take at most this share of the memory available
COPIES = 2  # the chains' draws of the group effects and the posterior's stacked copy (measured: 4.5 GB peak for 2.1 GB)


def applies(design: Design) -> str | None:
    """Why the crossed sampler cannot run this design (None when it can): every random term must be scalar."""
    if not design.blocks:
        return "the formula has no random term such as '(1 | group)'"
    vector = [f"({' + '.join(b.coef_names)} | {b.group})" for b in design.blocks if b.k > 1]
    if vector:
        return (f"sampler='{NAME}' draws scalar random terms such as (1 | g) or (0 + x | g); {', '.join(vector)} "
                "has several coefficients: write it as uncorrelated scalar terms with '||', or use sampler='gibbs' "
                "(blocked) or 'nuts'")
    return None


def preferred(design: Design) -> bool:
    """`sampler="gibbs"`'s rule: the crossed sampler when every term is scalar, there are at least two, and the
    blocked sampler's dense system (effects of every term after the first, fixed effects, response) has more than
    DENSE_SIDE rows."""
    return len(design.blocks) > 1 and applies(design) is None and dense_size(design) > DENSE_SIDE


class CrossedChain(Conditionals):
    """One chain: per term, (beta, b_k) given the other terms' effects; then the variances."""

    def __init__(self, design: Design, ps: PriorSet, rng: np.random.Generator, cp: CrossProducts):
        super().__init__(design, ps, rng, float(np.std(response_values(design))))
        p = design.p
        self.xtx, self.xty, self.yty = cp.xy[:p, :p], cp.xy[:p, p], cp.yty
        self.zx = [z[:, :p] for z in cp.zxy]
        self.zy = [z[:, p] for z in cp.zxy]
        self.ztz = [d[:, 0, 0] for d in cp.diag]
        self.off = cp.off
        self.b = [np.zeros((blk.m, 1)) for blk in design.blocks]
        self.beta = np.zeros(p)

    def sweep(self) -> float:
        """One iteration; returns the share of Metropolis steps accepted (1 if there were none)."""
        s2 = 1.0 if self.sigma is None else self.sigma**2
        prior = self.coefficient_prior()
        a = [b[:, 0] for b in self.b]
        earlier = []  # per term, sum over earlier terms j of Z_k'WZ_j a_j at their new values (for the rss)
        for k in range(len(a)):
            lower = sum((self.off[(j, k)].T @ a[j] for j in range(k)), np.zeros(len(a[k])))
            upper = sum((self.off[(k, j)] @ a[j] for j in range(k + 1, len(a))), np.zeros(len(a[k])))
            zr = self.zy[k] - lower - upper  # Z_k'W(y - sum_{j != k} Z_j a_j)
            xr = self.xty - sum(self.zx[j].T @ a[j] for j in range(len(a)) if j != k)
            self.beta, a[k] = self._draw_pair(k, zr, xr, s2, prior)
            a[k] = self._rescale(k, a[k], zr - self.zx[k] @ self.beta, s2)
            earlier.append(lower)
        self.b = [x[:, None] for x in a]
        return self.draw_variances(lambda: self._rss(a, earlier))

    def _draw_pair(self, k: int, zr: np.ndarray, xr: np.ndarray, s2: float, prior) -> tuple[np.ndarray, np.ndarray]:
        """(beta, b_k) from their joint Gaussian given the other terms: beta with b_k integrated out (its precision
        X'WX/s2 + P less the levels' shares), then b_k | beta, independent across levels."""
        d = self.ztz[k] / s2 + 1.0 / self.cov[k][0, 0]  # b_k's conditional precisions
        zx = self.zx[k]
        shrink = 1.0 / (s2 * s2 * d)
        precision = self.xtx / s2 + np.diag(prior.precision) - (zx.T * shrink) @ zx
        rhs = xr / s2 + prior.precision * prior.mean - zx.T @ (zr * shrink)
        try:
            L = np.linalg.cholesky(precision)
        except np.linalg.LinAlgError:
            raise MultilevelError(
                f"the crossed Gibbs sampler met a coefficient system that is not positive definite at a residual SD of "
                f"{np.sqrt(s2):.2g}: check the design for collinear columns (or a fixed effect that one grouping "
                "factor determines), and if that SD is about 0, whether the data are noise-free"
            ) from None
        mean = np.linalg.solve(L.T, np.linalg.solve(L, rhs))
        beta = mean + np.linalg.solve(L.T, self.rng.standard_normal(len(rhs)))
        b = (zr - zx @ beta) / (s2 * d) + self.rng.standard_normal(len(d)) / np.sqrt(d)
        return beta, b

    def _rescale(self, k: int, b: np.ndarray, g: np.ndarray, s2: float) -> np.ndarray:
        """Term k's SD s given its standardised effects u = b / s (interweaving, Yu & Meng 2011; as
        `glmm_gibbs.PolyaGammaChain._rescale`): given u, beta and the other terms, the data are Gaussian in s with
        precision P = u'Z_k'WZ_k u / s2 and mean u'g / (s2 P), g = Z_k'W(y - X beta - other terms); a draw from it on
        the real line is accepted with the prior ratio p(|s'|) / p(|s|). Exact; it moves the SD where weakly informed
        levels and their SD pin each other (the centred draw alone then barely moves). Returns the effects s' u."""
        s = float(np.sqrt(self.cov[k][0, 0]))
        u = b / s
        precision = float(u @ (self.ztz[k] * u)) / s2
        proposal = float(u @ g) / s2 / precision + self.rng.standard_normal() / np.sqrt(precision)
        prior = self.sd_priors[k][0]
        if np.log(self.rng.uniform()) >= float(prior.logpdf(abs(proposal))) - float(prior.logpdf(s)):
            return b
        self.cov[k] = np.array([[proposal**2]])
        return proposal * u

    def _rss(self, a: list[np.ndarray], earlier: list[np.ndarray]) -> float:
        """|y - X beta - sum_k Z_k b_k|^2_W as a quadratic form in the cross-products; the pairs' products were
        formed in the sweep (`earlier`), so this costs O(levels x p)."""
        beta = self.beta
        rss = self.yty - 2.0 * beta @ self.xty + beta @ self.xtx @ beta
        for k, ak in enumerate(a):
            rss += -2.0 * ak @ (self.zy[k] - self.zx[k] @ beta) + ak @ (self.ztz[k] * ak) + 2.0 * ak @ earlier[k]
        return max(float(rss), 0.0)


def run_chain(design: Design, ps: PriorSet, seed: int, chain: int, warmup: int, draws: int, cp: CrossProducts,
              report=None) -> dict:
    """`gibbs.run_chain` for the crossed sampler: chain `chain` with its own generator default_rng([seed, chain])."""
    return keep_sweeps(CrossedChain(design, ps, np.random.default_rng([seed, chain]), cp), chain, warmup, draws, report)


def check_kept_size(design: Design, chains: int, draws: int) -> None:
    """Refuse a run whose kept draws of the group effects cannot fit in memory, naming the numbers and the fix."""
    effects = sum(b.q for b in design.blocks)
    need = COPIES * 8 * chains * draws * effects
    free = available_bytes()
    if free is not None and need > MEMORY_SHARE * free:
        fit = max(1, int(MEMORY_SHARE * free / (COPIES * 8 * chains * effects)))
        raise MultilevelError(
            f"keeping {chains} chains x {draws} draws of the {effects:,} group effects takes {need / 2**30:.1f} GiB "
            "(the chains' draws and the posterior's copy), "
            f"more than half the {free / 2**30:.1f} GiB of memory available: ask for fewer draws (at most {fit:,} "
            "with these chains) or chains"
        )


def sample_crossed(model, ps: PriorSet, chains: int, draws: int, warmup: int, seed: int, cores: int, progress: bool):
    """Collapsed crossed Gibbs draws of every parameter, returned as a `Posterior` (same tables as the others)."""
    start = time.perf_counter()
    why = applies(model.design)
    if why is not None:
        raise MultilevelError(why)
    check_kept_size(model.design, chains, draws)
    y0, held = for_centred_response(model.design, ps)  # sampled: the model of y - y0 (its intercept prior moved)
    design, cp, columns, _ = sampler_inputs(model, y0, ps.informative)
    jobs = [(design, held, seed, c, warmup, draws, cp) for c in range(chains)]
    res = runner.run(run_chain, jobs, cores, warmup, draws, progress, label="crossed gibbs chain", stoppable=True)
    return posterior_of(model, design.fixed_names, columns, res, draws, ps, seed, time.perf_counter() - start, y0, NAME)
