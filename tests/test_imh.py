"""The independence Metropolis-Hastings sampler of GLMMs with one scalar term (`imh`, `scalar_marginal`): its
NumPy target is the quadrature density NUTS samples, its group effects are exact conditional draws, its posterior
agrees with brms's, and `sampler="auto"` falls back to NUTS, saying why, where its proposal is poor."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import CBPP, SALAMANDERS, model_of, reference
from test_glmm_bayes import compare, density_inputs, points

import multilevel as mlv
from multilevel import glmm_bayes, glmm_density, imh
from multilevel.errors import MultilevelError
from multilevel.scalar_marginal import ScalarMarginal

POISSON = ("TICKS ~ YEAR + cHEIGHT + (1 | BROOD)", "grouseticks", "poisson")


@pytest.mark.parametrize("spec", [CBPP, SALAMANDERS, POISSON], ids=["binomial", "negbinomial", "poisson"])
def test_numpy_marginal_is_the_quadrature_density(spec):
    """Same nodes, Newton steps and stopping rule as the JAX density NUTS samples: equal to rounding."""
    from multilevel.nuts import setup_jax

    setup_jax()
    layout, data = density_inputs(model_of(spec), glmm_bayes.NODES)
    x = points(layout, np.random.default_rng(2))
    ours = ScalarMarginal(layout, data).log_density(x)
    theirs = np.array([float(glmm_density.log_density(layout, data, xi)) for xi in x])
    assert np.all(np.isfinite(ours)) and np.allclose(ours, theirs, rtol=1e-12, atol=1e-9)


def test_group_effects_are_drawn_from_their_exact_conditional():
    """Each herd's draws given phi have the mean and SD of its conditional (200-node quadrature about its mode)."""
    layout, data = density_inputs(model_of(CBPP), 200)
    target = ScalarMarginal(layout, data)
    x = np.array([np.log(0.8), -1.5, -1.0, -1.2, -1.6])
    n = 20_000
    b = target.draw_effects(np.repeat(x[None], n, axis=0), np.random.default_rng(3))
    at, sd, _, _ = target._at(x[None])
    mode, s = target._mode(at, sd)
    t = mode[:, None, :] + np.sqrt(2.0) * s[:, None, :] * data["gh_x"][:, None]
    logw = data["gh_logw"][:, None] + target._h(at, t)
    w = np.exp(logw - logw.max(axis=1, keepdims=True))[0]
    w /= w.sum(axis=0)
    mean = sd[0] * (w * t[0]).sum(axis=0)
    spread = sd[0] * np.sqrt((w * t[0] ** 2).sum(axis=0) - (w * t[0]).sum(axis=0) ** 2)
    assert np.all(np.abs(b.mean(axis=0) - mean) < 4 * spread / np.sqrt(n))
    assert np.all(np.abs(b.std(axis=0) / spread - 1) < 4 * np.sqrt(0.5 / n) * 1.5)


def test_cbpp_matches_the_long_brms_run():
    """The default sampler on cbpp is the independence sampler; its draws against brms's 4 x 25,000."""
    post = model_of(CBPP).sample(chains=4, draws=2500, warmup=1000, seed=1, progress=False)
    assert post.sampler == "imh" and not post.warnings and not post.sampler_note
    assert post.proposal_check["pareto_k"] <= imh.PARETO_K_LIMIT
    compare(post, "cbpp_binomial_brms_long", 0.05, 0.10, group_effects=True)
    compare(post, "cbpp_binomial_brms", 0.1, 0.10)
    assert post.to_arviz().log_likelihood["y"].shape == (4, 2500, 56)
    assert abs(post.waic()["elpd_waic"] - reference("cbpp_binomial_brms_long")["waic"]["elpd_waic"]["estimate"]) < 0.5


def test_salamanders_negative_binomial_matches_brms():
    post = model_of(SALAMANDERS).sample(chains=4, draws=1000, warmup=1000, seed=1, progress=False, sampler="imh")
    assert post.sampler == "imh" and not post.warnings
    compare(post, "salamanders_nb_brms", 0.1, 0.10)
    assert abs(post.waic()["elpd_waic"] - reference("salamanders_nb_brms")["waic"]["elpd_waic"]["estimate"]) < 1.0


def no_successes():
    """Bernoulli rows that are all failures: the likelihood tends to 1 as the intercept goes to minus infinity, so the
    intercept's posterior keeps its student_t(3) prior's left tail, heavier than any t(10) proposal's: the
    importance ratios are unbounded (Pareto k measured 0.59-1.15 at seeds 1, 2, 3, 5 of 2 x 200 draws; seed 4's
    400 proposals missed the tail, k -0.05: the check is a statistical one)."""
    g = np.repeat(np.arange(10), 5)
    return mlv.Model("y ~ 1 + (1 | g)", pd.DataFrame({"y": np.zeros(50, int), "g": [f"g{i}" for i in g]}), family="bernoulli")


def test_a_poor_proposal_falls_back_to_nuts_and_says_so():
    post = no_successes().sample(chains=2, draws=200, warmup=200, seed=1, progress=False)
    assert post.sampler == "nuts" and "independence sampler was not used" in post.sampler_note
    assert "Pareto k" in post.sampler_note and post.sampler_note in repr(post)
    with pytest.warns(mlv.MultilevelWarning, match="proposal is poor"):  # forced, it runs and warns
        forced = no_successes().sample(chains=2, draws=200, warmup=200, seed=1, progress=False, sampler="imh")
    assert forced.sampler == "imh" and forced.proposal_check["pareto_k"] > imh.PARETO_K_LIMIT


def test_sampler_imh_refuses_models_it_does_not_handle():
    two_terms = mlv.Model("TICKS ~ YEAR + (1 | BROOD) + (1 | LOCATION)", mlv.datasets.load("grouseticks"), family="poisson")
    with pytest.raises(MultilevelError, match="one scalar random term"):
        two_terms.sample(sampler="imh", chains=1, draws=10, warmup=50, progress=False)
    probit = mlv.Model("incidence | trials(size) ~ period + (1 | herd)", mlv.datasets.load("cbpp"), family="binomial(probit)")
    with pytest.raises(MultilevelError, match="logit"):
        probit.sample(sampler="imh", chains=1, draws=10, warmup=50, progress=False)
    with pytest.raises(MultilevelError, match="Gaussian"):
        mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff")).sample(sampler="imh", progress=False)


def test_draws_do_not_depend_on_cores():
    model = model_of(CBPP)
    one, two = (model.sample(chains=2, draws=200, warmup=200, seed=5, cores=c, progress=False) for c in (1, 2))
    assert np.array_equal(one.beta, two.beta) and np.array_equal(one.b[0], two.b[0])


def test_points_evaluated_in_smaller_blocks_give_the_same_density(monkeypatch):
    """Large data evaluate fewer points at a time (BLOCK_ENTRIES bounds each array): the values do not change."""
    from multilevel import scalar_marginal

    layout, data = density_inputs(model_of(SALAMANDERS), glmm_bayes.NODES)
    x = points(layout, np.random.default_rng(4), n=40)
    whole = ScalarMarginal(layout, data).log_density(x)
    monkeypatch.setattr(scalar_marginal, "BLOCK_ENTRIES", 3 * 21 * 161)  # 3 points a block
    assert ScalarMarginal(layout, data)._block(21) == 3
    assert np.allclose(ScalarMarginal(layout, data).log_density(x), whole, rtol=1e-13, atol=0)


def test_anchor_and_fast_link_functions_change_nothing():
    """Newton steps begun at an anchor's modes give the density begun at 0 (to the steps' tolerance), and the
    stable softplus and logistic equal NumPy's and SciPy's from -800 to 800."""
    from scipy import special

    from multilevel.scalar_marginal import logistic, softplus

    layout, data = density_inputs(model_of(SALAMANDERS), glmm_bayes.NODES)
    x = points(layout, np.random.default_rng(5))
    plain = ScalarMarginal(layout, data)
    anchored = ScalarMarginal(layout, data, plain.effect_modes(x[2]))
    assert np.allclose(anchored.log_density(x), plain.log_density(x), rtol=0, atol=1e-9)
    v = np.linspace(-800, 800, 100_001)
    assert np.allclose(softplus(v), np.logaddexp(0.0, v), rtol=1e-15, atol=1e-300)
    assert np.allclose(logistic(v), special.expit(v), rtol=1e-15, atol=1e-300)
