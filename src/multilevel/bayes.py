"""`model.sample()`: full Bayesian fits of Gaussian mixed models (pipeline step 6).

>>> import multilevel as mlv
>>> model = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff"))
>>> post = model.sample(chains=2, draws=300, warmup=300, seed=1, progress=False)
>>> list(post.summary().index)
['b_Intercept', 'sd_Batch__Intercept', 'sigma']
"""

from __future__ import annotations

import time

import numpy as np

from . import collapsed, imh, nuts
from .arguments import check_count, check_seed
from .centring import held_draws, uncentre
from .chains import gc_paused
from .collapsed import Layout, constrain, jax_data, make_layout
from .crossed_gibbs import NAME as CROSSED, preferred as crossed_preferred, sample_crossed
from .dense_memory import check_dense_size
from .design import Design
from .diagnostics import exact_fit_message, interrupted_message, sampler_warnings
from .engine import Engine
from .errors import MultilevelError, emit
from .gibbs import sample_gibbs
from .glmm_bayes import nested_pair, sample_glmm
from .glmm_gibbs import sample_polya_gamma
from .glmm_laplace import sample_laplace
from .laplace_check import messages as approximation_messages
from .partitioned import response_values, sampler_inputs
from .polya_gamma import check_shapes
from .posterior import Posterior
from .priors import brms_scale, for_centred_response, resolve_priors

MAX_DENSE = 4_000_000  # entries of the dense first-term cross block the NUTS path handles
MAX_TRAILING = 400  # rows of the dense system factored at every leapfrog step; beyond it NUTS takes hours


def sample(
    model,
    chains: int = 4,
    draws: int = 1000,
    warmup: int = 1000,
    seed: int | None = None,
    cores: int = 1,
    prior: dict | None = None,
    sampler: str = "auto",
    progress: bool | None = None,
):
    """Draw from the posterior with brms's default priors (or `prior` overrides).

    ``sampler="nuts"`` runs NUTS on the variance parameters (and the centred intercept) with the group
    effects and other coefficients integrated out, then draws those exactly; ``"imh"`` (binomial-logit, Poisson and
    negative-binomial models with one scalar random term) is an exact independence Metropolis-Hastings sampler
    over the same few parameters; ``"auto"`` (the default) runs ``"imh"`` where it applies and its proposal passes
    its check (``post.proposal_check``), else ``"gibbs"`` for a binomial-logit model with crossed scalar terms, else
    ``"nuts"``, and says why in ``post.sampler_note``; ``"gibbs"`` is a blocked
    Gibbs sampler (Pólya–Gamma augmented for binomial-logit models), which for a Gaussian model whose random terms
    are all scalar and crossed into a dense system of more than 3,000 rows runs ``"crossed-gibbs"``: collapsed
    Gibbs with a cost per sweep linear in the rows (docs/bayes.md); ``"laplace"`` (binomial, Poisson and
    negative-binomial models) is NUTS with the group effects integrated out by the Laplace approximation:
    APPROXIMATE, labelled so, with an importance-sampling check of its error in ``post.importance_check``. Chains run in `cores` processes; a seed gives
    the same draws whatever `cores` is. Ctrl-C returns the draws finished by then, marked ``post.partial`` with a
    warning (docs/reliability.md).
    """
    _check_counts(chains, draws, warmup, cores)
    seed = check_seed(seed, generators=False)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**31))
    if progress is None:
        import sys

        progress = sys.stderr.isatty()
    if sampler not in ("auto", "nuts", "imh", "gibbs", "laplace", CROSSED):
        raise MultilevelError(f"sampler must be 'auto', 'nuts', 'imh', 'gibbs', '{CROSSED}' or 'laplace', not {sampler!r}")
    if sampler == CROSSED and not model.gaussian:
        raise MultilevelError(f"sampler='{CROSSED}' is for Gaussian models; use sampler='gibbs' or 'nuts'")
    if sampler == "imh" and model.gaussian:
        raise MultilevelError("sampler='imh' is for binomial, Poisson and negative-binomial models: a Gaussian "
                              "model's collapsed NUTS sampler (sampler='nuts', the default) already integrates the "
                              "group effects out exactly")
    if sampler == "laplace" and model.gaussian:
        raise MultilevelError("sampler='laplace' is for binomial, Poisson and negative-binomial models: a Gaussian "
                              "model's group effects integrate out exactly with sampler='nuts' (the default)")
    ps = resolve_priors(model, prior)
    if model.gaussian and (sampler == CROSSED or (sampler == "gibbs" and crossed_preferred(model.design))):
        return diagnosed(sample_crossed(model, ps, chains, draws, warmup, seed, cores, progress))
    if model.design.blocks:
        check_dense_size(model.design)
    if not model.gaussian:
        if sampler == "gibbs":
            return diagnosed(sample_polya_gamma(model, ps, chains, draws, warmup, seed, cores, progress))
        if sampler in ("auto", "imh"):
            return diagnosed(_independence_or_nuts(model, ps, sampler, chains, draws, warmup, seed, cores, progress))
        with gc_paused():
            run = sample_laplace if sampler == "laplace" else sample_glmm
            post = run(model, ps, chains, draws, warmup, seed, cores, progress)
    elif sampler == "gibbs":
        post = sample_gibbs(model, ps, chains, draws, warmup, seed, cores, progress)
    else:
        with gc_paused():  # JAX's tracing and imports (docs/bayes.md, "Speed")
            post = _sample_nuts(model, ps, chains, draws, warmup, seed, cores, progress)
    return diagnosed(post)


def _independence_or_nuts(model, ps, sampler: str, chains, draws, warmup, seed, cores, progress) -> Posterior:
    """`sampler="imh"`: the independence sampler (an error where it does not apply); `"auto"`: it too, unless it
    does not apply or its proposal fails its check, then Pólya–Gamma Gibbs where `polya_gamma_preferred`, else NUTS,
    with the reason in `sampler_note`."""
    reason = imh.reason_unsupported(model)
    if reason is None:
        try:
            post = imh.sample_imh(model, ps, chains, draws, warmup, seed)
        except imh.ProposalFailed as failed:
            reason = str(failed)
        else:
            if sampler == "imh" or not post.proposal_check["reason"]:
                return post
            reason = post.proposal_check["reason"]
    if sampler == "imh":
        raise MultilevelError(f"sampler='imh' does not apply to this model: {reason}. Use sampler='auto' or 'nuts'")
    if polya_gamma_preferred(model):
        post = sample_polya_gamma(model, ps, chains, draws, warmup, seed, cores, progress)
        post.sampler_note = (f"Pólya–Gamma Gibbs ran (crossed scalar terms of a binomial-logit model: faster than NUTS "
                             f"here, docs/bayes.md): the independence sampler was not used because {reason}")
        return post
    with gc_paused():
        post = sample_glmm(model, ps, chains, draws, warmup, seed, cores, progress)
    post.sampler_note = f"NUTS ran: the independence sampler was not used because {reason}"
    return post


def polya_gamma_preferred(model) -> bool:
    """`"auto"`'s choice of Pólya–Gamma Gibbs over NUTS, by measurement (docs/bayes.md): a binomial-logit model with
    whole trials and two or more scalar random terms none of which nests another (VerbAgg: 11.5x brms's ESS/s, NUTS
    below)."""
    blocks = model.design.blocks
    if model.family.name != "binomial" or model.family.link.name != "logit" or len(blocks) < 2:
        return False
    if any(b.k != 1 for b in blocks) or nested_pair(blocks):
        return False
    try:
        check_shapes(model.design.family_weights, "trials")
    except MultilevelError:
        return False
    return True


def diagnosed(post: Posterior, warn: bool = True) -> Posterior:
    """The posterior with the sampler's diagnostics (an approximate sampler's label and check, interrupted,
    noise-free data, divergences, R-hat, ESS) in `warnings`, raised once."""
    sigma = None if post.sigma is None else float(np.median(post.sigma))
    post.warnings = (approximation_messages(post) + imh.messages(post) + interrupted_message(post.finished, post.n_chains, post.n_draws)
                     + exact_fit_message(sigma, post.design) + sampler_warnings(post))
    if warn:
        emit(post.warnings)
    return post


def _check_counts(chains: int, draws: int, warmup: int, cores: int) -> None:
    for name, value, low in (("chains", chains, 1), ("draws", draws, 1), ("warmup", warmup, 0), ("cores", cores, 1)):
        check_count(value, name, low)
    if warmup < 50:
        raise MultilevelError(f"warmup={warmup} is too short for NUTS to adapt its step size; use at least 50 (default 1000)")


def _sample_nuts(model, ps, chains, draws, warmup, seed, cores, progress):
    start = time.perf_counter()
    y0, held = for_centred_response(model.design, ps)  # sampled: the model of y - y0 (its intercept prior moved)
    design, cp, columns, intercept = sampler_inputs(model, y0, ps.informative)
    if not design.blocks:
        raise MultilevelError("the formula has no random term such as '(1 | group)'")
    engine = Engine(cp, [b.k for b in design.blocks], [b.m for b in design.blocks])
    p_c = design.p - int(intercept)
    layout = make_layout(model, held, p_c, intercept)
    if engine.B.shape[0] * engine.B.shape[1] > MAX_DENSE or engine.r > MAX_TRAILING:
        raise MultilevelError(
            f"this model is too large for the NUTS sampler: after the first term, {engine.r - 1} effects and "
            "coefficients form a dense system refactored at every leapfrog step. Use sampler='gibbs', which "
            "factors it once per iteration (InstEval-sized models sample in minutes), or for scalar random terms "
            f"sampler='{CROSSED}', which never forms it"
        )
    data = jax_data(engine, layout)
    inits = [_init(layout, model.design, y0, np.random.default_rng([seed, c])) for c in range(chains)]
    positions, stats, cond, finished = nuts.run_chains(collapsed, layout, data, seed, inits, warmup, draws, cores, progress)
    beta_c, b = _split_effects(layout, *cond)
    sampling_time = time.perf_counter() - start
    sds, chols, sigma, alpha, _ = constrain(layout, positions, np)
    if intercept:
        beta_c = np.concatenate([beta_c, alpha[..., None]], axis=-1)
    beta = uncentre(model.design.fixed_names, design.fixed_names, beta_c, columns, y0)
    corr = [np.einsum("...ab,...cb->...ac", L, L) for L in chols]
    return Posterior(model, beta, sds, corr, sigma, b, stats, ps, seed, sampling_time, "nuts", finished=finished,
                     held=held_draws(model.design.fixed_names, design.fixed_names, beta_c, columns, y0))


def _init(layout: Layout, design: Design, y0: float, rng: np.random.Generator) -> np.ndarray:
    """Random start near the data's scale (like Stan's uniform(-2, 2), but on a sensible scale); the intercept
    that of y - y0."""
    y = response_values(design)
    loc, scale = brms_scale(y)
    sd_y = float(np.std(y)) or scale
    x = np.empty(layout.dim)
    x[: layout.n_sd] = np.log(sd_y / 2) + rng.uniform(-1, 1, layout.n_sd)
    x[layout.n_sd : layout.n_sd + layout.n_cor] = rng.uniform(-0.5, 0.5, layout.n_cor)
    i = layout.n_sd + layout.n_cor
    if layout.has_sigma:
        x[i] = np.log(sd_y / 2) + rng.uniform(-1, 1)
        i += 1
    if layout.intercept:
        x[i] = float(np.mean(y - y0)) + rng.uniform(-0.5, 0.5) * sd_y / np.sqrt(design.nobs)
    return x


def _split_effects(layout: Layout, beta_c: np.ndarray, b0: np.ndarray, b_rest: np.ndarray):
    """Per-term group effects (chains, draws, m, k) from the sampler's stacked conditional draws."""
    chains, n = b0.shape[:2]
    blocks = [b0.reshape(chains, n, layout.ms[0], layout.ks[0])]
    start = 0
    for k, m in zip(layout.ks[1:], layout.ms[1:]):
        blocks.append(b_rest[:, :, start : start + k * m].reshape(chains, n, m, k))
        start += k * m
    return beta_c.reshape(chains, n, layout.p_c), blocks
