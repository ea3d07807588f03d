"""ICC and R²: the lme4 reference ICC, shares that sum to 1, and the definitions computed independently."""

import numpy as np
import pytest
from conftest import reference

import multilevel as mlv
from multilevel.errors import MultilevelError
from multilevel.variance import icc, r2, variance_decomposition


def test_hsb82_null_icc_equals_lme4_reference():
    fit = mlv.Model("mAch ~ 1 + (1 | school)", mlv.datasets.load("Hsb82")).fit()
    assert icc(fit).loc["school", "estimate"] == pytest.approx(reference("hsb82_null_reml")["ICC"]["value"], abs=1e-6)


def test_pastes_three_level_shares_sum_to_one_and_match_lme4_variances():
    fit = mlv.Model("strength ~ 1 + (1 | batch/cask)", mlv.datasets.load("Pastes")).fit()
    table = icc(fit)
    assert table["estimate"].sum() == pytest.approx(1.0, abs=1e-12)
    ref = reference("pastes_nested_reml")
    variances = [v["variance"][0] for v in ref["varcomp"]] + [ref["residual"]["variance"]]
    assert sorted(table["estimate"]) == pytest.approx(sorted(np.array(variances) / sum(variances)), rel=1e-4)


def test_slopes_decomposition_follows_its_definition():
    """var_random = mean_i z_i' Sigma z_i (row by row), var_fixed = var(X beta); R² and ICC from them."""
    fit = mlv.Model("Reaction ~ Days + (Days | Subject)", mlv.datasets.load("sleepstudy")).fit()
    Z, S = fit.design.blocks[0].Z, fit.covariances[0]
    v_rand = np.mean([z @ S @ z for z in Z])
    v_fix = np.var(fit.design.X @ fit.beta, ddof=1)
    v_res = fit.sigma**2
    total = v_fix + v_rand + v_res
    assert r2(fit).loc["marginal", "estimate"] == pytest.approx(v_fix / total, rel=1e-12)
    assert r2(fit).loc["conditional", "estimate"] == pytest.approx((v_fix + v_rand) / total, rel=1e-12)
    assert icc(fit).loc["Subject", "estimate"] == pytest.approx(v_rand / (v_rand + v_res), rel=1e-12)
    assert icc(fit, conditional=True).loc["Subject", "estimate"] == pytest.approx(v_rand / total, rel=1e-12)
    assert variance_decomposition(fit)["share_total"].sum() == pytest.approx(1.0)


def test_bootstrap_intervals_bracket_the_estimate():
    fit = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff")).fit()
    table = icc(fit, bootstrap=30, seed=3)
    assert np.all(table["ci_lower"] < table["ci_upper"])
    assert table.loc["Batch", "ci_lower"] < table.loc["Batch", "estimate"] < table.loc["Batch", "ci_upper"]


def test_bayesian_icc_is_summarised_per_draw():
    post = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff")).sample(
        chains=2, draws=200, warmup=200, seed=1, progress=False
    )
    table = icc(post)
    assert table["estimate"].sum() == pytest.approx(1.0, abs=1e-12)  # per-draw shares sum to 1, so do their means
    sd = post.sd[0][..., 0].ravel()
    share = sd**2 / (sd**2 + post.sigma.ravel() ** 2)
    assert table.loc["Batch", "ci_lower"] == pytest.approx(np.quantile(share, 0.025))
    assert list(r2(post).columns) == ["estimate", "std_error", "ci_lower", "ci_upper"]


def test_known_standard_errors_have_no_residual_share():
    model = mlv.Model("y | se(sigma) ~ 1 + (1 | school)", mlv.datasets.load("eight_schools"))
    post = model.sample(chains=1, draws=100, warmup=100, seed=1, progress=False)
    with pytest.raises(MultilevelError, match="known standard errors"):
        icc(post)


def test_binomial_icc_on_the_latent_scale_from_lme4s_variance():
    """Logit link: the latent residual variance is pi^2/3 (Nakagawa, Johnson & Schielzeth 2017); lme4's herd
    variance gives the reference ICC (its optimum is ~1e-4 from the exact Laplace one: 1e-3 relative)."""
    model = mlv.Model("incidence | trials(size) ~ period + (1 | herd)", mlv.datasets.load("cbpp"), family="binomial")
    var = reference("cbpp_binomial_laplace")["varcomp"][0]["variance"][0]
    table = model.fit().icc()
    assert list(table.index) == ["herd", "Residual (latent)"]
    assert table.loc["herd", "estimate"] == pytest.approx(var / (var + np.pi**2 / 3), rel=1e-3)
    probit = mlv.Model("incidence | trials(size) ~ period + (1 | herd)", mlv.datasets.load("cbpp"),
                       family="binomial(probit)").fit()
    v = probit.variance_components["variance"].iloc[0]
    assert probit.icc().loc["herd", "estimate"] == pytest.approx(v / (v + 1.0), rel=1e-12)


def test_negative_binomial_icc_uses_the_lognormal_approximation():
    """Log link: residual ln(1 + 1/lambda + 1/shape), lambda = exp(mean fixed part + variance / 2), from glmmTMB's
    estimates; R² from the same parts."""
    data = mlv.datasets.load("Salamanders")
    model = mlv.Model("count ~ spp + mined + (1 | site)", data, family="negbinomial")
    ref = reference("salamanders_nb2")
    beta = np.array(ref["fixef"]["estimate"])
    var, phi = ref["varcomp"][0]["variance"][0], ref["dispersion"]["value"]
    eta = model.design.X @ beta
    residual = np.log1p(1 / np.exp(eta.mean() + var / 2) + 1 / phi)
    fit = model.fit()
    assert fit.icc().loc["site", "estimate"] == pytest.approx(var / (var + residual), rel=2e-3)
    fixed = eta.var(ddof=1)
    assert fit.r2().loc["marginal", "estimate"] == pytest.approx(fixed / (fixed + var + residual), rel=2e-3)


def test_bayesian_glmm_icc_is_the_latent_share_per_draw():
    model = mlv.Model("incidence | trials(size) ~ period + (1 | herd)", mlv.datasets.load("cbpp"), family="binomial")
    post = model.sample(sampler="gibbs", chains=2, draws=200, warmup=100, seed=3, progress=False)
    s2 = post.sd[0][..., 0].ravel() ** 2
    table = post.icc()
    assert table.loc["herd", "estimate"] == pytest.approx(np.mean(s2 / (s2 + np.pi**2 / 3)), rel=1e-12)
    assert table.loc["Residual (latent)", "estimate"] == pytest.approx(np.mean(1 - s2 / (s2 + np.pi**2 / 3)), rel=1e-12)
