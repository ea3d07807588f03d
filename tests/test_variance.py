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
