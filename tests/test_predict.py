"""predict and simulate: exact identities on the training rows, population-level predictions for unseen
groups, and simulated moments against the moments the fitted model implies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import multilevel as mlv
from multilevel.errors import MultilevelError



@pytest.fixture(scope="module")
def slopes(sleep):
    return mlv.Model("Reaction ~ Days + (Days | Subject)", sleep).fit()


@pytest.mark.parametrize(
    "formula, dataset",
    [
        ("Reaction ~ Days + (Days | Subject)", "sleepstudy"),
        ("Reaction ~ Days + (Days || Subject)", "sleepstudy"),
        ("strength ~ 1 + (1 | batch/cask)", "Pastes"),
        ("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin"),
        ("mAch ~ meanses*cses + sector*cses + (1 + cses | school)", "Hsb82"),
    ],
)
def test_predict_on_training_rows_equals_fitted(formula, dataset):
    data = mlv.datasets.load(dataset)
    fit = mlv.Model(formula, data).fit()
    np.testing.assert_allclose(fit.predict(data), fit.fitted(), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(fit.fitted() + fit.residuals(), fit.design.y, rtol=1e-12)
    # a subset of rows, in another order, predicts the same values for those rows
    rows = np.arange(len(data))[::-7]
    np.testing.assert_allclose(fit.predict(data.iloc[rows]), fit.fitted()[rows], rtol=1e-12, atol=1e-9)


def test_without_groups_is_x_beta(slopes, sleep):
    beta = slopes.fixed_effects["estimate"]
    expected = beta["(Intercept)"] + beta["Days"] * sleep["Days"].to_numpy()
    np.testing.assert_allclose(slopes.predict(sleep, include_groups=False), expected, rtol=1e-12)
    np.testing.assert_allclose(slopes.predict(include_groups=False), expected, rtol=1e-12)
    # the grouping column is not needed then
    np.testing.assert_allclose(slopes.predict(sleep[["Days"]], include_groups=False), expected, rtol=1e-12)


def test_unseen_group_gets_the_population_prediction(slopes):
    beta = slopes.fixed_effects["estimate"]
    new = pd.DataFrame({"Days": [0.0, 4.5, 9.0], "Subject": ["new", "308", "new"]})
    pred = slopes.predict(new)
    effects = slopes.group_effects.set_index(["level", "term"])["estimate"]
    known = beta["(Intercept)"] + effects[("308", "(Intercept)")] + 4.5 * (beta["Days"] + effects[("308", "Days")])
    assert pred[0] == pytest.approx(beta["(Intercept)"], rel=1e-12)
    assert pred[1] == pytest.approx(known, rel=1e-12)
    assert pred[2] == pytest.approx(beta["(Intercept)"] + 9 * beta["Days"], rel=1e-12)


def test_crossed_terms_known_and_unseen_levels():
    data = mlv.datasets.load("Penicillin")
    fit = mlv.Model("diameter ~ 1 + (1 | plate) + (1 | sample)", data).fit()
    effects = fit.group_effects.set_index(["group", "level"])["estimate"]
    plate, sample = str(data["plate"].iloc[0]), str(data["sample"].iloc[0])
    new = pd.DataFrame({"plate": [plate, "zz"], "sample": ["unseen", sample]})
    intercept = fit.fixed_effects.loc["(Intercept)", "estimate"]
    np.testing.assert_allclose(
        fit.predict(new), [intercept + effects[("plate", plate)], intercept + effects[("sample", sample)]], rtol=1e-12
    )


def test_unknown_fixed_factor_level_and_missing_group_column_are_refused():
    data = mlv.datasets.load("Hsb82")
    fit = mlv.Model("mAch ~ sector + (1 | school)", data).fit()
    bad = data.iloc[:3].assign(sector=["Public", "Private", "Catholic"])
    with pytest.raises(MultilevelError, match="not seen in fitting"):
        fit.predict(bad)
    with pytest.raises(MultilevelError, match="school"):
        fit.predict(data[["sector"]].iloc[:3])


def test_offset_is_required_and_used(sleep):
    off = 2.0 * sleep["Days"].to_numpy()
    fit = mlv.Model("Reaction ~ Days + (1 | Subject)", sleep, offset=off).fit()
    with pytest.raises(MultilevelError, match="offset"):
        fit.predict(sleep)
    np.testing.assert_allclose(fit.predict(sleep, offset=off), fit.fitted(), rtol=1e-12)


def test_simulate_is_reproducible_by_seed(slopes):
    a, b, c = slopes.simulate(3, seed=1), slopes.simulate(3, seed=1), slopes.simulate(3, seed=2)
    assert a.shape == (3, slopes.nobs)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def implied_moments(fit):
    """Mean X beta and covariance Z Sigma Z' + sigma^2 I of y under the fitted model (dense, small data)."""
    d = fit.design
    cov = fit.sigma**2 * np.eye(d.nobs)
    for block, Sigma in zip(d.blocks, fit.covariances):
        same = block.codes[:, None] == block.codes[None, :]
        cov += same * (block.Z @ Sigma @ block.Z.T)
    return fit.predict(include_groups=False), cov


def test_simulated_moments_match_the_model(slopes):
    """20,000 draws: every row's sample mean and variance, and the covariance of two rows of a subject,
    within 4.5 Monte Carlo SEs of the implied values (P(any of the ~360 z > 4.5) < 0.3 % for a correct
    sampler; the seed is fixed, so the test is deterministic)."""
    n = 20_000
    draws = slopes.simulate(n, seed=20240611)
    mean, cov = implied_moments(slopes)
    var = np.diag(cov)
    z_mean = (draws.mean(axis=0) - mean) / np.sqrt(var / n)
    z_var = (draws.var(axis=0, ddof=1) - var) / (var * np.sqrt(2 / (n - 1)))
    assert np.abs(z_mean).max() < 4.5
    assert np.abs(z_var).max() < 4.5
    # rows 0 and 9: the same subject at Days 0 and 9; their covariance is the group-level part only
    c = np.cov(draws[:, 0], draws[:, 9])[0, 1]
    se = np.sqrt((cov[0, 0] * cov[9, 9] + cov[0, 9] ** 2) / n)
    assert abs(c - cov[0, 9]) < 4.5 * se
    # rows of different subjects are independent
    assert cov[0, 10] == 0 and abs(np.corrcoef(draws[:, 0], draws[:, 10])[0, 1]) < 4.5 / np.sqrt(n)
