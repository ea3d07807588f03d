"""Pooling table: no pooling is per-group least squares, shrinkage follows its closed form."""

import numpy as np
import pytest

import multilevel as mlv
from multilevel.errors import MultilevelError
from multilevel.pooling import pooling


def test_radon_no_pooling_equals_per_county_least_squares():
    df = mlv.datasets.load("radon")
    fit = mlv.Model("log_radon ~ floor + (1 | county)", df).fit()
    table = pooling(fit)
    counties = df["county"].cat.categories
    dummies = (df["county"].to_numpy()[:, None] == np.asarray(counties)[None, :]).astype(float)
    A = np.column_stack([df["floor"].to_numpy(float), dummies])
    coef = np.linalg.lstsq(A, df["log_radon"].to_numpy(), rcond=None)[0]
    by_county = dict(zip(counties, coef[1:]))
    expected = table["level"].map(by_county).to_numpy()
    np.testing.assert_allclose(table["no_pooling"].to_numpy(), expected, rtol=0, atol=1e-10)
    ols = np.polyfit(df["floor"], df["log_radon"], 1)[1]
    assert table["complete_pooling"].iloc[0] == pytest.approx(ols, rel=1e-10)
    np.testing.assert_allclose(table["partial_pooling"], fit.beta[0] + fit.random_effects[0][:, 0], rtol=1e-12)


def test_random_intercept_shrinkage_has_its_closed_form():
    """Intercept only: partial = beta + lambda_j (ybar_j - beta), shrinkage = sigma²/n_j / (tau² + sigma²/n_j)."""
    fit = mlv.Model("mAch ~ 1 + (1 | school)", mlv.datasets.load("Hsb82")).fit()
    table = pooling(fit)
    tau2, s2 = fit.covariances[0][0, 0], fit.sigma**2
    expected = (s2 / table["n"]) / (tau2 + s2 / table["n"])
    np.testing.assert_allclose(table["shrinkage"], expected, rtol=1e-7)


def test_sleepstudy_no_pooling_is_a_separate_regression_per_subject():
    df = mlv.datasets.load("sleepstudy")
    table = pooling(mlv.Model("Reaction ~ Days + (Days | Subject)", df).fit())
    for subject, rows in df.groupby("Subject", observed=True):
        slope, intercept = np.polyfit(rows["Days"], rows["Reaction"], 1)
        got = table[table["level"].astype(str) == str(subject)].set_index("term")["no_pooling"]
        assert got["(Intercept)"] == pytest.approx(intercept, rel=1e-10)
        assert got["Days"] == pytest.approx(slope, rel=1e-10)


def test_several_terms_need_a_group_name():
    fit = mlv.Model("strength ~ 1 + (1 | batch/cask)", mlv.datasets.load("Pastes")).fit()
    with pytest.raises(MultilevelError, match="group="):
        pooling(fit)
    assert len(pooling(fit, group="batch")) == 10
    with pytest.raises(MultilevelError, match="no random term"):
        pooling(fit, group="nope")
