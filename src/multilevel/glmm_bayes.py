"""`model.sample()` for binomial, Poisson and negative-binomial mixed models (pipeline step 6).

NUTS on the coefficients, the SDs and correlations (and the negative binomial's shape). A model's only term,
when scalar, is integrated out by adaptive Gauss-Hermite quadrature and drawn exactly per draw, and NUTS adapts a
dense mass matrix over the few parameters left; with several terms (or a vector one) every term's effects are
sampled (the joint posterior: one quadrature evaluation cost 27-53x a joint one on VerbAgg and grouseticks),
centred where a scalar term's levels average CENTRE_MIN_ROWS rows. Exact; see `glmm_density` and docs/bayes.md.
"""

from __future__ import annotations

import time

import numpy as np

from . import glmm_density, nuts
from .centring import centred_design, held_draws, uncentre
from .collapsed import Layout, constrain
from .errors import MultilevelError
from .glmm_density import GlmmLayout, make_data
from .posterior import Posterior
from .priors import PriorSet, brms_scale, coefficient_prior

CENTRE_MIN_ROWS = 10  # a scalar term whose levels average this many rows is sampled centred (docs/bayes.md)
# NUTS's acceptance target for the joint: 0.99 with a non-centred term (grouseticks: 178 divergences at 0.8, 3 at
# 0.95, none at 0.99, as brms needed adapt_delta 0.99), 0.95 when every term is centred (VerbAgg: none)
JOINT_TARGET_ACCEPT = {False: 0.99, True: 0.95}
NODES = 21  # quadrature nodes per group: log-density error below 1e-5 for SDs from 0.1 to 3 on cbpp and salamanders (tested)


def sample_glmm(model, ps: PriorSet, chains: int, draws: int, warmup: int, seed: int, cores: int, progress: bool,
                nodes: int = NODES) -> Posterior:
    """Draws of a GLMM's posterior; `nodes=0` samples every term's effects (the joint posterior)."""
    start = time.perf_counter()
    layout, data, centred, columns = target_inputs(model, ps, nodes)
    inits = [initial_point(layout, model, np.random.default_rng([seed, c])) for c in range(chains)]
    positions, stats, cond, finished = nuts.run_chains(glmm_density, layout, data, seed, inits, warmup, draws, cores, progress)
    return to_posterior(model, ps, layout, centred, columns, positions, stats, cond, finished, seed, start, "nuts")


def target_inputs(model, ps: PriorSet, nodes: int):
    """The density's layout and data, the centred design and the scaling that maps its columns back."""
    design = model.design
    if not design.blocks:
        raise MultilevelError("the formula has no random term such as '(1 | group)'")
    centred, columns, intercept = centred_design(design, ps.informative)
    p_c = centred.p - int(intercept)
    layout = _layout(model, ps, p_c, intercept, nodes)
    offset = np.zeros(design.nobs) if design.offset is None else np.asarray(design.offset, float)
    b_prior = coefficient_prior([ps.b[n] for n in centred.fixed_names[:p_c]])
    data = make_data(layout, design, centred.X[:, :p_c], offset, b_prior)
    if ps.shape is None and model.family.has_dispersion:
        data["shape"] = np.array(model.family.theta)
    return layout, data, centred, columns


def to_posterior(model, ps: PriorSet, layout: GlmmLayout, centred, columns, positions, stats, cond, finished, seed: int,
                 start: float, sampler: str) -> Posterior:
    """The `Posterior` of a GLMM target's chains: parameters constrained, coefficients uncentred."""
    nb, p_c = layout.n_base, layout.p_c
    sds, chols, shape, alpha, _ = constrain(layout.base, positions[..., :nb], np)
    beta_c = positions[..., nb : nb + p_c]
    if layout.base.intercept:
        beta_c = np.concatenate([beta_c, alpha[..., None]], axis=-1)
    beta = uncentre(model.design.fixed_names, centred.fixed_names, beta_c, columns)
    corr = [np.einsum("...ab,...cb->...ac", L, L) for L in chols]
    return Posterior(model, beta, sds, corr, None, cond, stats, ps, seed, time.perf_counter() - start, sampler,
                     shape=shape, finished=finished, held=held_draws(model.design.fixed_names, centred.fixed_names, beta_c, columns))


def _layout(model, ps: PriorSet, p_c: int, intercept: bool, nodes: int) -> GlmmLayout:
    blocks = model.design.blocks
    sd = [ps.sd[(i, c)] for i, b in enumerate(blocks) for c in b.coef_names]
    cor = [ps.cor[i] for i, b in enumerate(blocks) if b.k > 1]
    rest = [p for p in (ps.shape, ps.intercept) if p is not None]
    base = Layout(tuple(b.k for b in blocks), tuple(b.m for b in blocks), 0, intercept, ps.shape is not None,
                  tuple(sd + cor + rest), ())
    quadrature = nodes if len(blocks) == 1 and blocks[0].k == 1 else 0
    if quadrature:
        return GlmmLayout(base, model.family.name, model.family.link.name, p_c, quadrature, dense_metric=True)
    centred = tuple(b.k == 1 and model.design.nobs >= CENTRE_MIN_ROWS * b.m for b in blocks)
    return GlmmLayout(base, model.family.name, model.family.link.name, p_c, 0, centred=centred,
                      target_accept=JOINT_TARGET_ACCEPT[all(centred)])


def initial_point(layout: GlmmLayout, model, rng: np.random.Generator) -> np.ndarray:
    """Random start: SDs about 0.5, shape about 1, the intercept near brms's prior location, the rest near 0."""
    base = layout.base
    x = rng.uniform(-1, 1, layout.dim)
    x[: base.n_sd] += np.log(0.5)
    x[base.n_sd : base.n_sd + base.n_cor] *= 0.5
    if base.intercept:
        x[base.dim - 1] = brms_scale(model.design.y, model.family.link.name)[0] + rng.uniform(-0.5, 0.5)
    return x
