"""Likelihood-ratio tests: ML deviances against lme4's, chi-square and p from their definitions."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import reference
from scipy import stats

import multilevel as mlv
from multilevel.anova import anova
from multilevel.errors import MultilevelError

SMALL = "Reaction ~ 1 + Days + (1 | Subject)"
BIG = "Reaction ~ 1 + Days + (1 + Days | Subject)"



@pytest.fixture(scope="module")
def table(sleep):
    """REML fits, as users make them: anova refits both by ML."""
    return anova(mlv.Model(SMALL, sleep).fit(), mlv.Model(BIG, sleep).fit(), names=["intercepts", "slopes"])


def test_reml_fits_are_refitted_by_ml(table):
    ref = reference("sleepstudy_slopes_ml")
    row = table.loc["slopes"]
    assert row["deviance"] == pytest.approx(ref["deviance"], rel=1e-8)
    assert row["logLik"] == pytest.approx(ref["logLik"], rel=1e-8)
    assert row["AIC"] == pytest.approx(ref["AIC"], rel=1e-8)
    assert row["BIC"] == pytest.approx(ref["BIC"], rel=1e-8)
    assert row["npar"] == ref["logLik_df"]


def test_chisquare_is_the_deviance_drop_and_p_from_scipy(table, sleep):
    small_ml = mlv.Model(SMALL, sleep).fit(method="ML")
    assert table.loc["intercepts", "deviance"] == pytest.approx(small_ml.objective, rel=1e-10)
    chisq = table.loc["intercepts", "deviance"] - table.loc["slopes", "deviance"]
    assert table.loc["slopes", "Chisq"] == pytest.approx(chisq, rel=1e-12)
    assert table.loc["slopes", "Df"] == 2
    assert table.loc["slopes", "p_value"] == pytest.approx(stats.chi2.sf(chisq, 2), rel=1e-12)
    assert np.isnan(table.loc["intercepts", ["Chisq", "Df", "p_value"]].to_numpy(dtype=float)).all()
    assert list(table.columns) == ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "p_value"]


def test_models_are_ordered_by_number_of_parameters(sleep, table):
    reversed_order = anova(mlv.Model(BIG, sleep).fit(), mlv.Model(SMALL, sleep).fit(), names=["slopes", "intercepts"])
    assert list(reversed_order.index) == ["intercepts", "slopes"]
    assert reversed_order.loc["slopes", "Chisq"] == pytest.approx(table.loc["slopes", "Chisq"], rel=1e-10)


def test_dyestuff_ml_deviance_matches_lme4():
    data = mlv.datasets.load("Dyestuff")
    ref = reference("dyestuff_ml")
    big = mlv.Model("Yield ~ 1 + (1 | Batch)", data).fit()
    # a crossed copy of the same factor adds one parameter (its variance goes to 0): Chisq ~ 0
    data2 = data.assign(Batch2=data["Batch"])
    bigger = mlv.Model("Yield ~ 1 + (1 | Batch) + (1 | Batch2)", data2).fit()
    out = anova(big, bigger)
    assert out.loc["model1", "deviance"] == pytest.approx(ref["deviance"], rel=1e-8)
    assert out.loc["model2", "Chisq"] == pytest.approx(0.0, abs=1e-6)


def test_different_data_is_refused(sleep):
    full = mlv.Model(SMALL, sleep).fit()
    part = mlv.Model(BIG, sleep.iloc[:150]).fit()
    with pytest.raises(MultilevelError, match="different data"):
        anova(full, part)


def test_needs_two_fits_and_plain_likelihoods(sleep):
    fit = mlv.Model(SMALL, sleep).fit()
    with pytest.raises(MultilevelError, match="two or more"):
        anova(fit)
    with pytest.raises(MultilevelError, match="penalised"):
        anova(fit, mlv.Model(BIG, sleep).fit(prior="zero-avoiding"))
