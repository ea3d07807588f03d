"""Results of a frequentist fit: the summary's plain-words messages, warnings, and derived quantities."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import reference
from scipy import stats

import multilevel as mlv
from multilevel.errors import MultilevelError, MultilevelWarning
from multilevel.lmm import fit_at
from multilevel.optimize import OptimumInfo, finite_difference_checks


def flat(text: str) -> str:
    """The summary with line wrapping undone, so phrases can be searched."""
    return " ".join(text.split())



def test_singular_fit_is_explained_in_plain_words_with_what_to_do():
    model = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff2"))
    with pytest.warns(MultilevelWarning, match="singular"):
        fit = model.fit()
    text = flat(fit.summary())
    assert "boundary (singular) fit" in text
    assert "the variance of '(Intercept)' between levels of 'Batch' is estimated as 0" in text
    assert "no variation of that effect between groups" in text
    assert "simplify the random effects" in text
    assert "prior='zero-avoiding'" in text and "model.sample()" in text


def test_perfect_correlation_is_named_as_such(sleep):
    """At a boundary point where the slope's factor column is a multiple of the intercept's."""
    model = mlv.Model("Reaction ~ Days + (Days | Subject)", sleep)
    info = OptimumInfo(np.array([1.0, 0.2, 0.0]), np.nan, 0, "boundary point")
    with pytest.warns(MultilevelWarning, match="perfectly correlated"):
        fit = fit_at(model, "REML", None, info)
    assert fit.is_singular
    assert "'Days' by 'Subject' is perfectly correlated" in flat(fit.summary())


def test_zero_avoiding_fit_is_not_singular_and_says_so_in_header():
    with warnings.catch_warnings():
        warnings.simplefilter("error", MultilevelWarning)
        fit = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff2")).fit(prior="zero-avoiding")
    assert not fit.is_singular and not fit.warnings
    assert "zero-avoiding covariance prior" in fit.summary()
    assert "Warnings" not in fit.summary()


def test_convergence_failure_is_reported(sleep):
    """The gradient check, run at a point that is not the optimum (theta 5 % off it), must flag it."""
    model = mlv.Model("Reaction ~ Days + (Days | Subject)", sleep)
    engine = model.engine
    off = 1.05 * model.fit().theta
    info = OptimumInfo(off, engine.objective(off), 0, "stopped early")
    info = finite_difference_checks(lambda th: engine.objective(th, True), info, engine.theta_lower())
    with pytest.warns(MultilevelWarning, match="may not have converged"):
        fit = fit_at(model, "REML", None, info)
    assert not fit.converged
    assert "may not have converged" in flat(fit.summary())


def test_converged_fit_has_no_warnings(sleep):
    with warnings.catch_warnings():
        warnings.simplefilter("error", MultilevelWarning)
        fit = mlv.Model("Reaction ~ Days + (Days | Subject)", sleep).fit()
    assert fit.converged and fit.warnings == []


def test_dropped_rows_and_aliased_columns_are_reported(sleep):
    data = sleep.assign(Days2=2 * sleep["Days"])
    data.loc[[3, 50], "Reaction"] = np.nan
    fit = mlv.Model("Reaction ~ Days + Days2 + (Days | Subject)", data).fit()
    text = flat(fit.summary())
    assert fit.nobs == 178
    assert "Number of obs: 178 (2 rows dropped for missing values)" in text
    assert "Dropped aliased fixed-effect columns" in text and "Days2" in text
    assert list(fit.fixed_effects.index) == ["(Intercept)", "Days"]


def test_summary_shows_the_numbers_lme4_prints(sleep):
    ref = reference("sleepstudy_slopes_reml")
    text = mlv.Model(ref["formula"], sleep).fit().summary()
    assert f"REML criterion: {ref['REMLcrit']:.4f}" in text
    assert "Number of obs: 180; groups: Subject, 18" in text
    assert "Satterthwaite" in text


def test_reml_deviance_is_ml_criterion_at_reml_theta(sleep):
    fit = mlv.Model("Reaction ~ Days + (Days | Subject)", sleep).fit()
    assert fit.deviance == pytest.approx(fit.engine.objective(fit.theta, reml=False), rel=1e-12)


def test_wald_interval_is_estimate_plus_minus_normal_quantile(sleep):
    fit = mlv.Model("Reaction ~ Days + (Days | Subject)", sleep).fit()
    ci = fit.confint(level=0.9)
    fe = fit.fixed_effects
    z = stats.norm.ppf(0.95)
    np.testing.assert_allclose(ci["lower"], fe["estimate"] - z * fe["std_error"], rtol=1e-12)
    np.testing.assert_allclose(ci["upper"], fe["estimate"] + z * fe["std_error"], rtol=1e-12)
    with pytest.raises(MultilevelError, match="confint method"):
        fit.confint(method="boot")


def test_bad_method_and_prior_are_refused(sleep):
    model = mlv.Model("Reaction ~ Days + (1 | Subject)", sleep)
    with pytest.raises(MultilevelError, match="method"):
        model.fit(method="GLS")
    with pytest.raises(MultilevelError, match="prior"):
        model.fit(prior="flat")


def test_group_effects_read_as_attribute_or_call():
    """DESIGN.md's attribute and the user guide's call give the same table."""
    fit = mlv.Model("Reaction ~ Days + (Days | Subject)", mlv.datasets.load("sleepstudy")).fit()
    pd.testing.assert_frame_equal(pd.DataFrame(fit.group_effects), fit.group_effects())
    assert list(fit.group_effects.columns[:4]) == ["group", "level", "term", "estimate"]


def test_moment_start_is_a_valid_interior_start():
    """The large-model start is finite, off the boundary, one value per scalar term, and nearer the optimum than 1."""
    from multilevel.lmm import moment_start

    model = mlv.Model("diameter ~ 1 + (1 | plate) + (1 | sample)", mlv.datasets.load("Penicillin"))
    start = moment_start(model.design)
    assert start.shape == (2,) and np.all(start >= 0.1) and np.all(np.isfinite(start))
    theta = model.fit().theta
    assert np.linalg.norm(np.log(start / theta)) < np.linalg.norm(np.log(1 / theta))
