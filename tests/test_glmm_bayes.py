"""Bayesian GLMMs: quadrature error, exact conditional draws of the group effects, agreement with brms."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CBPP, SALAMANDERS, VERBAGG, model_of, reference

from multilevel import glmm_bayes, glmm_density
from multilevel.bayes import diagnosed
from multilevel.centring import centred_design
from multilevel.priors import coefficient_prior, resolve_priors

GROUSETICKS = ("TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", "grouseticks", "poisson")


def density_inputs(model, nodes):
    """The GLMM density's layout and data for `model` with `nodes` quadrature nodes."""
    ps = resolve_priors(model, None)
    centred, _, intercept = centred_design(model.design)
    p_c = centred.p - int(intercept)
    layout = glmm_bayes._layout(model, ps, p_c, intercept, nodes)
    b_prior = coefficient_prior([ps.b[n] for n in centred.fixed_names[:p_c]])
    data = glmm_density.make_data(layout, model.design, centred.X[:, :p_c], np.zeros(model.nobs), b_prior)
    return layout, {**data, **glmm_bayes.term_data(model, layout)}


def points(layout, rng, n=6):
    """Unconstrained points about a GLMM posterior's bulk and beyond (SDs 0.1 to 3)."""
    x = rng.normal(0, 0.5, (n, layout.dim))
    x[:, 0] = np.log(np.geomspace(0.1, 3.0, n))
    return x


@pytest.mark.parametrize("spec", [CBPP, SALAMANDERS], ids=["cbpp", "salamanders"])
def test_quadrature_error_is_negligible(spec):
    from multilevel.nuts import setup_jax

    setup_jax()
    model = model_of(spec)
    default, fine = density_inputs(model, glmm_bayes.NODES), density_inputs(model, 200)
    for x in points(default[0], np.random.default_rng(1)):
        a, b = float(glmm_density.log_density(*default, x)), float(glmm_density.log_density(*fine, x))
        assert np.isfinite(a) and abs(a - b) < 1e-5  # measured (21 nodes): at most 2.1e-6 (salamanders, far tail)


def test_softplus_and_its_derivatives_are_the_logistic_functions():
    import jax
    from scipy.special import expit

    from multilevel.nuts import setup_jax

    setup_jax()
    x = np.array([-800.0, -40.0, -3.0, -1e-3, 0.0, 1e-3, 2.0, 40.0, 800.0])
    d1 = jax.vmap(jax.grad(glmm_density.softplus))(x)
    d2 = jax.vmap(jax.grad(jax.grad(glmm_density.softplus)))(x)
    assert np.allclose(glmm_density.softplus(x), np.logaddexp(0.0, x), rtol=1e-15, atol=0)
    assert np.allclose(d1, expit(x), rtol=1e-15, atol=1e-300)
    assert np.allclose(d2, expit(x) * expit(-x), rtol=1e-14, atol=1e-300)


def test_group_effects_are_drawn_from_their_exact_conditional():
    import jax

    from multilevel.nuts import setup_jax

    setup_jax()
    layout, data = density_inputs(model_of(CBPP), 200)
    x = np.array([np.log(0.8), -1.5, -1.0, -1.2, -1.6])
    n = 20_000
    z = jax.random.uniform(jax.random.PRNGKey(3), (n, glmm_density.noise_size(layout)), minval=np.finfo(float).tiny)
    b = np.asarray(jax.vmap(lambda zz: glmm_density.conditional_draw(layout, data, x, zz)[0][:, 0])(z))
    # the exact conditional moments of each herd's effect, by 200-node quadrature about its mode
    sds, _, shape, _, eta0 = glmm_density._parameters(layout, data, x)
    slope = sds[0][0] * data["Z0"][:, 0]
    mode, s = glmm_density._mode(layout, data, eta0, shape, slope)
    t = np.asarray(mode + np.sqrt(2.0) * s * data["gh_x"][:, None])
    logw = data["gh_logw"][:, None] + np.asarray(glmm_density._group_sums(layout, data, eta0, shape, slope, t))
    w = np.exp(logw - logw.max(axis=0))
    w /= w.sum(axis=0)
    mean = float(sds[0][0]) * (w * t).sum(axis=0)
    sd = float(sds[0][0]) * np.sqrt((w * t**2).sum(axis=0) - ((w * t).sum(axis=0)) ** 2)
    assert np.all(np.abs(b.mean(axis=0) - mean) < 4 * sd / np.sqrt(n))
    assert np.all(np.abs(b.std(axis=0) / sd - 1) < 4 * np.sqrt(0.5 / n) * 1.5)


def compare(post, name: str, mean_tol: float, sd_tol: float, group_effects: bool = False) -> None:
    """Every posterior mean within mean_tol posterior SDs of the reference's, every SD within sd_tol."""
    ref = reference(name)
    ours = post.summary(group_effects=group_effects)
    ours.index = [v.replace("-", "M") for v in ours.index]  # brms writes '-' in names as 'M'
    rows = ref["posterior_summary"] + (ref["group_level_all"] if group_effects else [])
    for row in rows:
        got = ours.loc[row["variable"]]
        assert abs(got["mean"] - row["mean"]) < mean_tol * row["sd"], row["variable"]
        assert abs(got["sd"] / row["sd"] - 1) < sd_tol, row["variable"]


def test_cbpp_matches_the_long_brms_run():
    post = model_of(CBPP).sample(chains=4, draws=2500, warmup=1000, seed=1, progress=False, sampler="nuts")
    assert post.stats["diverging"].sum() == 0 and not post.warnings
    compare(post, "cbpp_binomial_brms_long", 0.05, 0.10, group_effects=True)
    compare(post, "cbpp_binomial_brms", 0.1, 0.10)
    assert post.to_arviz().log_likelihood["y"].shape == (4, 2500, 56)
    assert abs(post.waic()["elpd_waic"] - reference("cbpp_binomial_brms_long")["waic"]["elpd_waic"]["estimate"]) < 0.5


def test_salamanders_negative_binomial_matches_brms():
    post = model_of(SALAMANDERS).sample(chains=4, draws=500, warmup=500, seed=1, progress=False, sampler="nuts")
    compare(post, "salamanders_nb_brms", 0.1, 0.10)
    assert "shape" in post.summary().index and post.priors.shape.brms() == "gamma(0.01, 0.01)"
    # the pointwise log-likelihood holds each draw's shape
    assert abs(post.waic()["elpd_waic"] - reference("salamanders_nb_brms")["waic"]["elpd_waic"]["estimate"]) < 1.0


def test_joint_target_agrees_with_quadrature():
    """The joint (non-centred) sampler, the default for several terms, on cbpp against the long brms run."""
    model = model_of(CBPP)
    post = diagnosed(glmm_bayes.sample_glmm(model, resolve_priors(model, None), 4, 1000, 1000, 2, 1, False, nodes=0))
    compare(post, "cbpp_binomial_brms_long", 0.1, 0.10, group_effects=True)


def test_negative_binomial_icc_uses_each_draws_shape():
    """Latent-scale ICC per draw: residual ln(1 + 1/lambda + 1/shape) with that draw's shape and lambda =
    exp(mean fixed part + variance / 2) (Nakagawa, Johnson & Schielzeth 2017)."""
    model = model_of(SALAMANDERS)
    post = model.sample(chains=1, draws=100, warmup=100, seed=2, progress=False)
    beta, s2, shape = post.beta.reshape(-1, model.design.p), post.sd[0][..., 0].ravel() ** 2, post.shape.ravel()
    lam = np.exp((beta @ model.design.X.T).mean(axis=1) + s2 / 2)
    share = s2 / (s2 + np.log1p(1 / lam + 1 / shape))
    assert post.icc().loc["site", "estimate"] == pytest.approx(share.mean(), rel=1e-12)


def test_sampler_layout_follows_the_terms():
    """One scalar term: quadrature and a dense metric; several: the joint, every scalar term partially centred, and
    of nested random intercepts the outer one integrated out (grouseticks: LOCATION, within which BROOD lies)."""
    cbpp, verbagg, ticks = (density_inputs(model_of(s), glmm_bayes.NODES)[0] for s in (CBPP, VERBAGG, GROUSETICKS))
    assert cbpp.nodes == glmm_bayes.NODES and cbpp.dense_metric and cbpp.q_sampled == 0
    assert verbagg.nodes == 0 and verbagg.centred == (True, True) and not verbagg.dense_metric and verbagg.nested == ()
    blocks = model_of(GROUSETICKS).design.blocks
    assert [blocks[t].group for t in ticks.nested] == ["LOCATION", "BROOD"] and ticks.centred == (True, True, True)
    assert ticks.q_sampled == 403 + 118 and ticks.target_accept == verbagg.target_accept == 0.95


def test_partial_centring_changes_the_density_by_the_jacobian_only():
    """Sampling a scalar term's v = b / sd^(1 - w) rather than u = b / sd is a change of variables: at matching
    points the two log densities differ by -sum(w) log(sd), w = I sd^2 / (1 + I sd^2)."""
    from dataclasses import replace

    from multilevel.nuts import setup_jax

    setup_jax()
    layout, data = density_inputs(model_of(VERBAGG), 0)
    rng = np.random.default_rng(4)
    m = layout.base.ms[1]
    info = rng.uniform(0, 5, m)
    data = {**data, "information1": info}
    for _ in range(3):
        x = rng.normal(0, 0.5, layout.dim)
        start = layout.n_base + layout.p_c + layout.base.ms[0]  # the second term's block
        sd = np.exp(x[1])  # the second term's log SD is x[1]
        w = info * sd**2 / (1 + info * sd**2)
        partial = x.copy()
        partial[start:] *= sd**w  # v = sd u / sd^(1 - w)
        mixed = replace(layout, centred=(False, True))
        plain = replace(layout, centred=(False, False))
        diff = float(glmm_density.log_density(mixed, data, partial)) - float(glmm_density.log_density(plain, data, x))
        assert diff == pytest.approx(-np.sum(w) * x[1], abs=1e-8)


def test_nested_outer_term_is_integrated_out_exactly():
    """The inner term's totals c = b_BROOD + b_LOCATION have, per location, the Gaussian N(0, sd_B^2 I + sd_L^2 J)
    prior (scipy's density), and the outer effects drawn given c have the exact conditional mean and variance."""
    from scipy import stats

    from multilevel.nuts import setup_jax

    setup_jax()
    layout, data = density_inputs(model_of(GROUSETICKS), 0)
    outer, inner = layout.nested
    rng = np.random.default_rng(2)
    sd = {outer: np.array([0.4]), inner: np.array([0.9])}
    v = rng.normal(0, 1, layout.base.ms[inner])
    c, lp = glmm_density._totals(layout, data, sd, v)
    c = np.asarray(c)[:, 0]
    s2, info = 0.4**2 + 0.9**2, data[f"information{inner}"]
    jacobian = np.sum(1 - info * s2 / (1 + info * s2)) * 0.5 * np.log(s2)
    expected = jacobian + 0.5 * len(c) * np.log(2 * np.pi)  # _effects adds the 2 pi constant for every sampled value
    for level in range(layout.q_outer):
        cs = c[data["parent"] == level]
        cov = 0.81 * np.eye(len(cs)) + 0.16 * np.ones((len(cs), len(cs)))
        expected += stats.multivariate_normal(np.zeros(len(cs)), cov).logpdf(cs)
    assert float(lp) == pytest.approx(expected, abs=1e-9)
    level = int(np.argmax(data["outer_count"]))  # the location with most broods
    z = np.zeros(layout.q_outer)
    b_outer, b_inner = glmm_density._outer_draw(layout, data, sd, c, z)
    cs = c[data["parent"] == level]
    cov = 0.81 * np.eye(len(cs)) + 0.16 * np.ones((len(cs), len(cs)))
    mean = 0.16 * np.ones(len(cs)) @ np.linalg.solve(cov, cs)  # E[b_L | c] = Cov(b_L, c) Cov(c)^-1 c
    assert float(b_outer[level, 0]) == pytest.approx(mean, abs=1e-12)
    assert np.allclose(np.asarray(b_inner)[:, 0] + np.asarray(b_outer)[data["parent"], 0], c, atol=1e-14)
    one = np.zeros(layout.q_outer)
    one[level] = 1.0
    spread = float(glmm_density._outer_draw(layout, data, sd, c, one)[0][level, 0]) - mean
    assert spread**2 == pytest.approx(0.16 - 0.16**2 * np.ones(len(cs)) @ np.linalg.solve(cov, np.ones(len(cs))), rel=1e-10)


@pytest.mark.slow
def test_grouseticks_three_terms_match_brms_adapt_delta_099():
    """Three Poisson terms (INDEX one row per level) by joint NUTS, LOCATION integrated out, against brms with
    adapt_delta 0.99 (its default run had 188 divergences and is no truth); the first five broods' effects (drawn
    given the totals and LOCATION's exact conditional draw) too. Measured: means within 0.076 SD (sd_LOCATION:
    bulk ESS 1064 here, 258 in brms's run), SDs within 2 %; ~25 CPU s."""
    post = model_of(GROUSETICKS).sample(chains=4, draws=1000, warmup=1000, seed=1, progress=False)
    assert post.stats["diverging"].sum() == 0
    compare(post, "grouseticks_poisson_brms_ad099", 0.1, 0.10)
    ours = post.summary(group_effects=True)
    for row in reference("grouseticks_poisson_brms_ad099")["group_level_first5"]:
        assert abs(ours.loc[row["variable"], "mean"] - row["mean"]) < 0.1 * row["sd"], row["variable"]
        assert abs(ours.loc[row["variable"], "sd"] / row["sd"] - 1) < 0.10, row["variable"]


@pytest.mark.slow
def test_verbagg_crossed_bernoulli_matches_brms():
    """Crossed subjects x items, 7,584 Bernoulli rows, by joint NUTS with both terms partially centred (nearly
    centred: 24 and 316 rows a level). 4 x 3000 draws: at 4 x 1000 b_GenderM's bulk ESS is ~415 (Monte Carlo SE
    0.049 posterior SD, brms's 0.032), so 0.1 SD was two combined SEs (that run: 0.115 SD off, b_Anger's SD 9 % wide).
    Measured at 4 x 3000: means within 0.076 SD (b_GenderM, bulk ESS 1384), SDs within 6.0 % (b_Anger), no divergences.
    Gibbs is the default and the fast sampler here (tests/test_glmm_gibbs.py)."""
    post = model_of(VERBAGG).sample(chains=4, draws=3000, warmup=1000, seed=1, progress=False, sampler="nuts")
    assert post.stats["diverging"].sum() == 0
    compare(post, "verbagg_bernoulli_brms", 0.1, 0.10)
