"""Bayesian occupancy models: NUTS (BlackJAX, through `nuts.run_chains`) on the coefficients with the latent
occupancy summed out, then z drawn exactly per draw; or Pólya-Gamma Gibbs (`occupancy_gibbs`, spOccupancy's
sampler). Default priors are spOccupancy's: normal with variance 2.72 on every logit-scale coefficient of both
parts, inverse-gamma(0.1, 0.1) on a random-effect variance."""

from __future__ import annotations

import time

import numpy as np

from . import chains, nuts, occupancy_gibbs, occupancy_likelihood
from .arguments import check_seed
from .bayes import _check_counts
from .diagnostics import interrupted_message, sampler_warnings
from .errors import MultilevelError, emit
from .occupancy_likelihood import OccupancyLayout
from .occupancy_posterior import OccupancyPosterior
from .scaling import precision_message

SPOCCUPANCY_PRIOR_VARIANCE = 2.72
SPOCCUPANCY_IG = (0.1, 0.1)  # inverse-gamma shape and scale on a random-effect variance


def sample(model, chains: int = 4, draws: int = 1000, warmup: int = 1000, seed: int = 1, cores: int = 1,
           prior_variance: float = SPOCCUPANCY_PRIOR_VARIANCE, sd_prior: tuple[float, float] = SPOCCUPANCY_IG,
           progress: bool = False, sampler: str = "nuts") -> OccupancyPosterior:
    """Draw from the posterior of an `Occupancy` model by `sampler` ("nuts" or "gibbs"); warnings from the
    diagnostics. A random intercept's variance has an inverse-gamma(shape, scale) = `sd_prior` prior."""
    _check_counts(chains, draws, warmup, cores)
    if check_seed(seed, generators=False) is None:
        raise MultilevelError("seed must be a whole number (chains start and draw from it, reproducibly), not None")
    number = (int, float, np.integer, np.floating)
    pair = isinstance(sd_prior, (tuple, list)) and len(sd_prior) == 2 and all(isinstance(v, number) for v in sd_prior)
    if isinstance(prior_variance, bool) or not isinstance(prior_variance, number) or not prior_variance > 0 or not pair \
            or not min(sd_prior) > 0:
        raise MultilevelError(f"prior_variance must be a positive number and sd_prior two positive numbers (shape, scale), "
                              f"got {prior_variance!r}, {sd_prior!r}")
    if sampler not in ("nuts", "gibbs"):
        raise MultilevelError(f"sampler must be 'nuts' or 'gibbs', not {sampler!r}")
    sample_with = _gibbs if sampler == "gibbs" else _nuts
    held, B, lost = model.held_model(scaled=False)  # centred far covariates; unscaled: the priors are per unit
    post = sample_with(held, chains, draws, warmup, seed, cores, float(prior_variance), tuple(map(float, sd_prior)), progress)
    if B is not None:  # the user's coefficients
        post.held = (held, post.draws)  # predictions are formed of these: no digits lost to a far covariate
        post.model, post.draws = model, post.draws @ B.T
    post.warnings = (interrupted_message(post.finished, post.n_chains, post.n_draws) + sampler_warnings(post)
                     + [precision_message(c) for c in lost])
    emit(post.warnings)
    return post


def _inits(seed: int, chains: int, dim: int) -> list[np.ndarray]:
    """Each chain's starting point, uniform on (-1, 1) (the same for either sampler)."""
    return [np.random.default_rng([seed, c]).uniform(-1, 1, dim) for c in range(chains)]


def _gibbs(model, n_chains, draws, warmup, seed, cores, prior_variance, sd_prior, progress) -> OccupancyPosterior:
    """Pólya-Gamma Gibbs chains (`occupancy_gibbs`), in processes when cores > 1; draws depend on the seed only.
    After Ctrl-C, the draws the chains finished (`chains.kept_chains`), marked partial."""
    start = time.perf_counter()
    jobs = [(model, prior_variance, sd_prior, seed, c, init, warmup, draws)
            for c, init in enumerate(_inits(seed, n_chains, len(model.parameter_names)))]
    res = chains.run(occupancy_gibbs.run_chain, jobs, cores, warmup, draws, progress, label="gibbs chain", stoppable=True)
    res, n, finished = chains.kept_chains(res, lambda r: len(r["draws"]), draws)

    def stacked(key):
        return np.stack([r[key][:n] for r in res])

    random = model.random is not None
    post = OccupancyPosterior(model, stacked("draws"), stacked("sd") if random else None, stacked("b") if random else None,
                              stacked("z"), stacked("w"), stacked("site_loglik"), {}, seed, time.perf_counter() - start,
                              prior_variance, sampler="gibbs")
    post.finished = finished
    return post


def _nuts(model, chains, draws, warmup, seed, cores, prior_variance, sd_prior, progress) -> OccupancyPosterior:
    """NUTS on the coefficients (non-centred random intercept), occupancy summed out; z drawn per draw
    (`_occupancy_draws`)."""
    start = time.perf_counter()
    a = model.arrays
    part, m = (model.random[1].part, model.random[1].m) if model.random else (None, 0)
    # a dense metric for the few, correlated coefficients (OVEN: 6.6 leapfrog steps per draw instead of 10.6 and
    # 1.6x the bulk ESS); the non-centred effects of a random intercept are near-independent: diagonal
    layout = OccupancyLayout(a.X.shape[0], a.X.shape[1], a.V.shape[2], part, m, dense_metric=part is None)
    data = {"X": a.X, "V": a.V, "Y": a.Y, "mask": a.mask, "prior_var": np.full(layout.k, float(prior_variance))}
    if part is not None:
        data |= {"codes": model.random[1].codes, "sd_prior": np.asarray(sd_prior, float)}
    dim = layout.k + (m + 1 if part else 0)
    inits = _inits(seed, chains, dim)
    with nuts.chains.gc_paused():
        positions, stats, _, finished = nuts.run_chains(occupancy_likelihood, layout, data, seed, inits, warmup, draws,
                                                        cores, progress)
    k = layout.k
    sd = np.exp(positions[..., k]) if part else None
    b = sd[..., None] * positions[..., k + 1:] if part else None
    kept = range(len(positions)) if finished is None else [c for c, n in enumerate(finished) if n >= positions.shape[1]]
    z, w, site_ll = map(np.stack, zip(*[_occupancy_draws(model, positions[i, :, :k], None if b is None else b[i], seed, c)
                                        for i, c in enumerate(kept)]))
    post = OccupancyPosterior(model, positions[..., :k], sd, b, z, w, site_ll, stats, seed, time.perf_counter() - start,
                              prior_variance)
    post.finished = finished
    return post


def _occupancy_draws(model, coef: np.ndarray, b: np.ndarray | None, seed: int, chain: int) -> tuple:
    """Chain number `chain`'s latent occupancy z per draw and site, drawn from P(z = 1 | y) (its own generator,
    default_rng([seed, chain]), one row per draw: a stopped chain's rows are the full chain's first), that
    probability and each site's log-likelihood. In NumPy, a chain's draws at once (`site_posteriors`)."""
    shifts = {} if b is None else {f"shift_{model.random[1].part}": b[:, model.random[1].codes]}
    site_ll, w = occupancy_likelihood.site_posteriors(coef, model.arrays, **shifts)
    z = (np.random.default_rng([seed, chain]).random(w.shape) < w).astype(float)
    return z, w, site_ll
