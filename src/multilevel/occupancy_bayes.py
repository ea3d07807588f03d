"""Bayesian occupancy models: NUTS (BlackJAX, through `nuts.run_chains`) on the coefficients with the latent
occupancy summed out, then z drawn exactly per draw. Default priors are spOccupancy's: normal with variance
2.72 on every logit-scale coefficient of both parts."""

from __future__ import annotations

import time

import numpy as np

from . import nuts
from .bayes import _check_counts
from .diagnostics import sampler_warnings
from .errors import MultilevelError, emit
from .occupancy_likelihood import OccupancyLayout
from .occupancy_posterior import OccupancyPosterior

SPOCCUPANCY_PRIOR_VARIANCE = 2.72


def sample(model, chains: int = 4, draws: int = 1000, warmup: int = 1000, seed: int = 1, cores: int = 1,
           prior_variance: float = SPOCCUPANCY_PRIOR_VARIANCE, progress: bool = False) -> OccupancyPosterior:
    """Draw from the posterior of an `Occupancy` model (no random effects); warnings from the diagnostics."""
    if model.random is not None:
        raise MultilevelError("sampling occupancy models with random effects is not supported yet: use fit()")
    _check_counts(chains, draws, warmup, cores)
    if not prior_variance > 0:
        raise MultilevelError(f"prior_variance must be positive, got {prior_variance!r}")
    start = time.perf_counter()
    a = model.arrays
    layout = OccupancyLayout(a.X.shape[0], a.X.shape[1], a.V.shape[2])
    k = layout.a + layout.b
    data = {"X": a.X, "V": a.V, "Y": a.Y, "mask": a.mask, "prior_var": np.full(k, float(prior_variance))}
    inits = [np.random.default_rng([seed, c]).uniform(-1, 1, k) for c in range(chains)]
    with nuts.chains.gc_paused():
        positions, stats, (z, w, site_ll) = nuts.run_chains(layout, data, seed, inits, warmup, draws, cores, progress)
    post = OccupancyPosterior(model, positions, z, w, site_ll, stats, seed, time.perf_counter() - start, prior_variance)
    post.warnings = sampler_warnings(post)
    emit(post.warnings)
    return post
