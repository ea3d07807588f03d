"""Pólya–Gamma Gibbs for binomial-logit and negative-binomial GLMMs: exact PG draws (whole and fractional shapes),
agreement with brms, reproducibility, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CBPP, SALAMANDERS, VERBAGG, model_of, reference

import multilevel as mlv
from multilevel import polya_gamma
from multilevel.errors import MultilevelError


def pg_moments(h: float, z: float) -> tuple[float, float]:
    """Exact mean and variance of PG(h, z) (Polson, Scott & Windle 2013, from its Laplace transform)."""
    if z == 0:
        return h / 4, h / 24
    return h / (2 * z) * np.tanh(z / 2), h / (4 * z**3) * (np.sinh(z) - z) / np.cosh(z / 2) ** 2


@pytest.mark.parametrize("h", [0.05, 0.3, 0.7, 1, 2, 2.5, 5, 13.7, 50])
@pytest.mark.parametrize("z", [0.0, 2.0, -7.0])
def test_draws_have_the_exact_moments(h, z):
    """Where the package's 'alternate' method was measured 14 MC SEs off (h = 2, z = 0; h = 0.3: 3.4; h = 5.3: 18),
    ours must not be: whole shapes by Devroye's sampler, fractional parts by our own."""
    n = 400_000
    seed = [h if h % 1 == 0 else round(1000 * h), int(z) + 10]
    x = polya_gamma.draw(np.random.default_rng(seed), np.full(n, float(h)), np.full(n, z))
    mean, var = pg_moments(h, z)
    assert abs(x.mean() - mean) < 4 * np.sqrt(var / n)
    assert abs(x.var() / var - 1) < 0.03


def test_fractional_acceptance_ratio_is_the_density_over_its_first_term():
    """J*(f)'s left series over its first term lies in [0, 1] (so the inverse-Gaussian envelope holds), and at f = 1
    equals the right-hand series pi sum (-1)^n (n + 1/2) exp(-(n + 1/2)^2 pi^2 x / 2) over the first term
    2 exp(-1 / (2x)) / sqrt(2 pi x^3) (Devroye 2009)."""
    x = np.geomspace(1e-3, polya_gamma.X_MAX, 2000)
    for f in (0.01, 0.3, 0.7, 0.999, 1.0):
        r = polya_gamma._accept_ratio(x, np.full(x.size, f))
        assert r.max() <= 1 + 1e-12 and r.min() >= -1e-12
    x, n = x[x >= 0.25], np.arange(60)[:, None]  # where 60 terms of the right-hand series converge
    right = np.pi * np.sum((-1.0) ** n * (n + 0.5) * np.exp(-((n + 0.5) ** 2) * np.pi**2 * x / 2), axis=0)
    first = 2 * np.exp(-1 / (2 * x)) / np.sqrt(2 * np.pi * x**3)
    np.testing.assert_allclose(polya_gamma._accept_ratio(x, np.ones(x.size)), right / first, rtol=1e-9, atol=1e-13)


def test_augmented_likelihood_is_gaussian_in_psi():
    """E over omega of N(z; psi, 1/omega)-kernel exp(kappa psi - omega psi^2 / 2) equals the logistic factor:
    2^-h exp(kappa psi) E[exp(-omega psi^2 / 2)] with omega ~ PG(h, 0) is e^(kappa psi) / (1 + e^psi)^h."""
    rng, h, k, n = np.random.default_rng(4), 3.0, 2.0, 400_000
    omega = polya_gamma.draw(rng, np.full(n, h), np.zeros(n))
    for psi in (-1.5, 0.3, 2.0):
        terms = np.exp(-omega * psi**2 / 2)
        estimate = 2**-h * np.exp((k - h / 2) * psi) * terms.mean()
        exact = np.exp(k * psi) / (1 + np.exp(psi)) ** h
        assert abs(estimate - exact) < 4 * 2**-h * np.exp((k - h / 2) * psi) * terms.std() / np.sqrt(n)


def test_shapes_must_be_whole():
    assert np.array_equal(polya_gamma.check_shapes(np.array([1.0, 3.0 + 1e-12]), "trials"), [1.0, 3.0])
    for bad in ([1.5, 2.0], [0.0, 1.0]):
        with pytest.raises(MultilevelError, match="whole, positive trials"):
            polya_gamma.check_shapes(np.array(bad), "trials")


def within_mcse(post, name: str, k: float = 4.0, sd_tol: float = 0.10, group_effects: bool = False) -> None:
    """Every posterior mean within k combined Monte Carlo SEs (each: sd / sqrt(bulk ESS) unless the reference gives its own)
    of the reference's, and every SD within sd_tol (relative)."""
    ref = reference(name)
    ours = post.summary(group_effects=group_effects)
    rows = ref["posterior_summary"] + (ref["group_level_all"] if group_effects else [])
    for row in rows:
        got = ours.loc[row["variable"]]
        theirs = row.get("mcse_mean", row["sd"] / np.sqrt(row["ess_bulk"]))
        mcse = np.hypot(got["sd"] / np.sqrt(got["ess_bulk"]), theirs)
        assert abs(got["mean"] - row["mean"]) < k * mcse, row["variable"]
        assert abs(got["sd"] / row["sd"] - 1) < sd_tol, row["variable"]


def test_cbpp_matches_brms():
    post = model_of(CBPP).sample(sampler="gibbs", chains=4, draws=2500, warmup=500, seed=1, progress=False)
    assert post.sampler == "gibbs" and not post.warnings
    within_mcse(post, "cbpp_binomial_brms_long", group_effects=True)
    within_mcse(post, "cbpp_binomial_brms")
    assert post.to_arviz().log_likelihood["y"].shape == (4, 2500, 56)


@pytest.mark.slow
def test_verbagg_crossed_bernoulli_matches_brms():
    """Crossed subjects x items, 7,584 Bernoulli rows: all effects in one Gaussian block given the PG weights."""
    post = model_of(VERBAGG).sample(sampler="gibbs", chains=4, draws=1000, warmup=500, seed=1, progress=False)
    assert not post.warnings
    within_mcse(post, "verbagg_bernoulli_brms")


def test_auto_runs_gibbs_for_crossed_binomial_logit_terms():
    """sampler="auto" takes Pólya–Gamma Gibbs for a binomial-logit model with crossed scalar terms (VerbAgg), not for
    one term (cbpp: the independence sampler's), nested terms (NUTS integrates the outer out), probit or Poisson."""
    from multilevel.bayes import polya_gamma_preferred

    cbpp = mlv.datasets.load("cbpp")
    assert polya_gamma_preferred(model_of(VERBAGG)) and not polya_gamma_preferred(model_of(CBPP))
    nested = mlv.Model("incidence | trials(size) ~ period + (1 | herd) + (1 | herd:period)", cbpp, family="binomial")
    probit = mlv.Model(VERBAGG[0], mlv.datasets.load("VerbAgg"), family="binomial(probit)")
    poisson = mlv.Model("incidence ~ period + (1 | herd) + (1 | period)", cbpp, family="poisson")
    assert not any(polya_gamma_preferred(m) for m in (nested, probit, poisson))
    post = model_of(VERBAGG).sample(chains=1, draws=30, warmup=50, seed=1, progress=False)
    assert post.sampler == "gibbs" and post.sampler_note.startswith("Pólya–Gamma Gibbs ran")


def test_salamanders_negative_binomial_matches_brms():
    """PG(y + shape, eta - log shape) augmentation with the shape slice-sampled: every mean within 0.1 posterior SD of
    brms's and every SD within 10 %; the shape's draws feed the pointwise log-likelihood (WAIC as brms's)."""
    post = model_of(SALAMANDERS).sample(sampler="gibbs", chains=4, draws=1000, warmup=1000, seed=1, progress=False)
    assert post.sampler == "gibbs" and not post.warnings
    ref, ours = reference("salamanders_nb_brms"), post.summary()
    ours.index = [v.replace("-", "M") for v in ours.index]  # brms writes '-' in names as 'M'
    for row in ref["posterior_summary"]:
        got = ours.loc[row["variable"]]
        assert abs(got["mean"] - row["mean"]) < 0.1 * row["sd"], row["variable"]
        assert abs(got["sd"] / row["sd"] - 1) < 0.10, row["variable"]
    assert post.shape.shape == (4, 1000) and "shape" in ours.index
    assert abs(post.waic()["elpd_waic"] - ref["waic"]["elpd_waic"]["estimate"]) < 1.0


def test_negative_binomial_with_a_fixed_shape_samples_no_shape():
    model = mlv.Model("count ~ mined + (1 | site)", mlv.datasets.load("Salamanders"), family=mlv.families.NegativeBinomial(theta=1.0))
    post = model.sample(sampler="gibbs", chains=1, draws=50, warmup=50, seed=1, progress=False)
    assert post.shape is None and "shape" not in post.summary().index


def test_same_draws_whatever_the_number_of_cores():
    model = model_of(CBPP)
    kw = dict(sampler="gibbs", chains=2, draws=60, warmup=50, seed=5, progress=False)
    one, two = model.sample(cores=1, **kw), model.sample(cores=2, **kw)
    np.testing.assert_array_equal(one.beta, two.beta)
    np.testing.assert_array_equal(one.sd[0], two.sd[0])
    np.testing.assert_array_equal(one.b[0], two.b[0])
    assert not np.array_equal(one.beta, model.sample(cores=1, **(kw | {"seed": 6})).beta)


@pytest.mark.parametrize("formula, data, family, match", [
    ("incidence | trials(size) ~ period + (1 | herd)", "cbpp", "binomial(probit)", "logit link"),
    ("count ~ spp + mined + (1 | site)", "Salamanders", "poisson", "binomial family"),
])
def test_other_families_are_refused_in_words(formula, data, family, match):
    model = mlv.Model(formula, mlv.datasets.load(data), family=family)
    with pytest.raises(MultilevelError, match=match):
        model.sample(sampler="gibbs", chains=1, draws=10, warmup=50, seed=1, progress=False)
