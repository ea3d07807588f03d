"""`model.sample(sampler="laplace")`: NUTS over a GLMM's coefficients and variance parameters with every group
effect integrated out by the Laplace approximation (`laplace_density`). APPROXIMATE, opt-in and labelled so in
every output; an importance-sampling check against the exact joint (`laplace_check`) measures its error on the
user's model. For one scalar term the default sampler is exact and as fast: this one is for several or crossed
grouping factors, where the exact default samples every effect (docs/bayes.md).
"""

from __future__ import annotations

import time

import numpy as np

from . import laplace_density, nuts
from .errors import MultilevelError
from .glmm import fit_glmm
from .glmm_bayes import initial_point, target_inputs, to_posterior
from .laplace_check import importance_check
from .laplace_density import laplace_inputs
from .posterior import Posterior
from .priors import PriorSet

CHECK_DRAWS = 100  # posterior draws the importance-sampling check re-weights (its bias MCSE ~0.015 posterior SD)
CHECK_PROPOSALS = 100  # Laplace-Gaussian draws of the group effects per checked draw


def sample_laplace(model, ps: PriorSet, chains: int, draws: int, warmup: int, seed: int, cores: int,
                   progress: bool) -> Posterior:
    """Draws of (beta, theta) from the Laplace-marginal posterior, effects from the Laplace Gaussian per draw,
    and the importance-sampling check in `post.importance_check`."""
    start = time.perf_counter()
    glmm, data, centred, columns = target_inputs(model, ps, 0)
    layout, data = laplace_inputs(glmm, data, model.design)
    data = {**data, **anchor(model)}
    inits = [chain_start(layout, model, data, np.random.default_rng([seed, c])) for c in range(chains)]
    positions, stats, cond, finished = nuts.run_chains(laplace_density, layout, data, seed, inits, warmup, draws, cores,
                                                       progress)
    post = to_posterior(model, ps, layout, centred, columns, positions, stats, list(cond), finished, seed, start, "laplace")
    nuts.setup_jax()  # the check runs in this process (the chains may have run in others)
    post.importance_check = importance_check(post, layout, data, positions, CHECK_DRAWS, CHECK_PROPOSALS)
    post.seconds = time.perf_counter() - start
    return post


def chain_start(layout, model, data: dict, rng: np.random.Generator) -> np.ndarray:
    """A chain's start: `glmm_bayes.initial_point` with each coefficient divided by its column's SD where that exceeds
    1 (near 0 on the data's scale: grouseticks' cHEIGHT, SD 23, at +-1 put counts of e^47 in the linear predictor,
    where every chain stayed: the modes overflowed, the density was -inf and its gradient NaN)."""
    x = initial_point(layout, model, rng)
    nb = layout.n_base
    x[nb : nb + layout.p_c] /= np.maximum(np.asarray(data["X"]).std(axis=0), 1.0)
    return x


def anchor(model) -> dict:
    """The maximum-likelihood (Laplace) fit's group effects per term, data["anchor<t>"] (m, k): the density starts its
    Newton steps to each point's modes from them (`laplace_density.start_point`) instead of from 0. Empty (start
    from 0) when that fit fails."""
    try:
        effects = fit_glmm(model, 1, warn=False).random_effects
    except MultilevelError:
        return {}
    return {f"anchor{t}": np.asarray(b, float) for t, b in enumerate(effects)}
