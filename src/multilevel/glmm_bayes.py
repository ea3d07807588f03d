"""`model.sample()` for binomial, Poisson and negative-binomial mixed models (pipeline step 6).

NUTS on the coefficients, the SDs and correlations (and the negative binomial's shape). A model's only term,
when scalar, is integrated out by adaptive Gauss-Hermite quadrature and drawn exactly per draw, and NUTS adapts a
dense mass matrix over the few parameters left; with several terms (or a vector one) every term's effects are
sampled (the joint posterior: one quadrature evaluation cost 27-53x a joint one on VerbAgg and grouseticks), a
scalar term's levels partially centred by how much the data tell of each (`centring_weights`), and the outer of
two nested random intercepts integrated out in closed form (`nested_pair`). Exact; see `glmm_density` and
docs/bayes.md.
"""

from __future__ import annotations

import time

import numpy as np

from . import glmm_density, nuts
from .centring import centred_design, held_draws, uncentre
from .collapsed import Layout, constrain
from .errors import MultilevelError
from .glmm import fit_glmm
from .glmm_density import GlmmLayout, make_data
from .posterior import Posterior
from .priors import PriorSet, brms_scale, coefficient_prior

MAX_INFORMATION = 1e12  # a level's information is capped here (w = 1 to rounding; never inf / inf in the density)
CENTRE_MIN_ROWS = 10  # without an ML fit, a scalar term whose levels average this many rows is sampled centred
# NUTS's acceptance target for the joint: 0.99 with a non-centred term (grouseticks: 178 divergences at 0.8, 3 at
# 0.95, none at 0.99, as brms needed adapt_delta 0.99), 0.95 when every term is scalar, so partially centred
# (VerbAgg, grouseticks: none)
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
    data.update(term_data(model, layout))
    return layout, data, centred, columns


def term_data(model, layout: GlmmLayout) -> dict:
    """What the joint density reads of its terms' parametrisation: centring information, the nested pair's map."""
    return {**(centring_weights(model, layout) if layout.centred else {}),
            **(nesting_data(model, layout) if layout.nested else {})}


def centring_weights(model, layout: GlmmLayout) -> dict:
    """Per partially centred term t, data["information<t>"]: each level's information I = 1 / conditional variance -
    1 / variance at the ML (Laplace) fit, from which the density centres level j by w = I sd^2 / (1 + I sd^2) (the
    best w for a Gaussian level, Papaspiliopoulos, Roberts & Skold 2007); without that fit, I = MAX_INFORMATION
    (centred) where the term's levels average CENTRE_MIN_ROWS rows, else 0."""
    blocks = model.design.blocks
    try:
        fit = fit_glmm(model, 1, warn=False)
        conditional = np.split(fit.group_effects["std_error"].to_numpy(), np.cumsum([b.k * b.m for b in blocks])[:-1])
        sds = [np.sqrt(np.diag(c)) for c in fit.covariances]
    except MultilevelError:
        fit = None
    information = {}
    for t, block in enumerate(blocks):
        if not layout.centred[t]:
            continue
        if fit is None or not sds[t][0] > 0:
            centre = model.design.nobs >= CENTRE_MIN_ROWS * block.m
            information[f"information{t}"] = np.full(block.m, MAX_INFORMATION * centre)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):  # a zero conditional SD: fully centred
                info = 1.0 / conditional[t] ** 2 - 1.0 / sds[t][0] ** 2
            information[f"information{t}"] = np.nan_to_num(np.clip(info, 0.0, MAX_INFORMATION))
    return information


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
    centred = tuple(b.k == 1 for b in blocks)
    return GlmmLayout(base, model.family.name, model.family.link.name, p_c, 0, centred=centred,
                      target_accept=JOINT_TARGET_ACCEPT[all(centred)], nested=nested_pair(blocks))


def nested_pair(blocks) -> tuple:
    """(outer, inner): of the random intercepts whose levels each lie within one level of another's, the outer term
    with the fewest levels and, nested in it, the inner term with the fewest; () if none. The outer term's effects
    are integrated out in closed form (`glmm_density`): its SD's funnel goes (grouseticks' LOCATION)."""
    plain = [t for t, b in enumerate(blocks) if b.k == 1 and np.all(np.asarray(b.Z) == 1.0)]
    pairs = [(blocks[a].m, blocks[i].m, a, i) for a in plain for i in plain
             if blocks[i].m > blocks[a].m and len(set(zip(blocks[i].codes, blocks[a].codes))) == blocks[i].m]
    return min(pairs)[2:] if pairs else ()


def nesting_data(model, layout: GlmmLayout) -> dict:
    """For a nested pair: each inner level's outer level (`parent`) and each outer level's count of inner levels."""
    outer, inner = (model.design.blocks[t] for t in layout.nested)
    parent = np.zeros(inner.m, np.int32)
    parent[inner.codes] = outer.codes
    return {"parent": parent, "outer_count": np.bincount(parent, minlength=outer.m).astype(float)}


def initial_point(layout: GlmmLayout, model, rng: np.random.Generator) -> np.ndarray:
    """Random start: SDs about 0.5, shape about 1, the intercept near brms's prior location, the rest near 0."""
    base = layout.base
    x = rng.uniform(-1, 1, layout.dim)
    x[: base.n_sd] += np.log(0.5)
    x[base.n_sd : base.n_sd + base.n_cor] *= 0.5
    if base.intercept:
        x[base.dim - 1] = brms_scale(model.design.y, model.family.link.name)[0] + rng.uniform(-0.5, 0.5)
    return x
