"""Degenerate data are named, not answered with numbers: a constant response, a response constant within every
group, noise-free data that a model reproduces exactly, predictors that are constant overall or within groups;
for fit() and sample() alike."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hostile_support import grouped, refused, warned

import multilevel as mlv

RNG = np.random.default_rng(3)
G = np.repeat(np.arange(12), 5)
X = np.tile(np.arange(5.0), 12)
A, S = RNG.normal(0, 1.5, 12), RNG.normal(0, 1, 12)


def frame(y) -> pd.DataFrame:
    return pd.DataFrame({"y": y, "x": X, "g": G, "h": G % 3})


@pytest.mark.parametrize("value", [0.0, 3.0, -2.5, 1e9])
@pytest.mark.parametrize("formula", ["y ~ 1 + (1 | g)", "y ~ x + (1 | g)", "y ~ x + (x | g)", "y ~ 1 + (1 | g) + (1 | h)"])
def test_constant_response(formula, value):
    refused(lambda: mlv.Model(formula, frame(np.full(60, value))), "constant", f"{value:g}")


@pytest.mark.parametrize("formula", ["y ~ 1 + (1 | g)", "y ~ x + (1 | g)", "y ~ 1 + (1 | h) + (1 | g)"])
def test_response_constant_within_every_group(formula):
    refused(lambda: mlv.Model(formula, frame(A[G])), "constant within every level of 'g'", "residual variance is 0")


def test_response_constant_within_groups_of_a_term_without_intercept_is_not_refused():
    model = mlv.Model("y ~ x + (0 + x | g)", frame(A[G] + RNG.normal(size=60)))
    assert model.nobs == 60


def test_constant_within_some_groups_only_is_fine():
    y = A[G] + np.where(G < 6, 0.0, RNG.normal(size=60))
    fit = mlv.Model("y ~ 1 + (1 | g)", frame(y)).fit(warn=False)
    assert np.isfinite(fit.sigma) and fit.sigma > 0.1


def test_constant_response_refused_for_sample_too():
    refused(lambda: mlv.Model("y ~ 1 + (1 | g)", frame(np.full(60, 2.0))).sample(sampler="gibbs", draws=10, warmup=50),
            "constant")


NOISE_FREE = {
    "intercepts": ("y ~ x + (1 | g)", A[G] + 2 * X),
    "slopes": ("y ~ x + (x | g)", A[G] + S[G] * X),
    "fixed-only": ("y ~ x + (1 | g)", 1 + 2 * X),
    "crossed": ("y ~ 1 + (1 | g) + (1 | x)", A[G] + np.array([0.3, -1.0, 2.0, 0.5, 1.1])[X.astype(int)]),
}


@pytest.mark.parametrize("case", list(NOISE_FREE))
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_noise_free_fit_is_named(case, method):
    formula, y = NOISE_FREE[case]
    fit = warned(lambda: mlv.Model(formula, frame(y)).fit(method=method), "reproduces the response almost exactly")
    assert fit.warnings[0].startswith("the model reproduces the response")


def test_noise_free_gibbs_is_named():
    model = mlv.Model(NOISE_FREE["intercepts"][0], frame(NOISE_FREE["intercepts"][1]))
    refused(lambda: model.sample(sampler="gibbs", chains=1, draws=100, warmup=100, seed=1, progress=False), "noise-free")


def test_noise_free_posterior_is_named():
    """The sampler's warnings name noise-free data when the residual SD's draws are about 0."""
    model = mlv.Model("y ~ x + (1 | g)", frame(A[G] + 2 * X + RNG.normal(size=60)))
    post = model.sample(sampler="gibbs", chains=1, draws=100, warmup=100, seed=1, progress=False)
    post.sigma = post.sigma * 1e-6
    assert any("noise-free" in w for w in mlv.bayes.diagnosed(post, warn=False).warnings)


@pytest.mark.parametrize("noise", [1e-3, 1.0, 100.0])
def test_noisy_data_have_no_exact_fit_warning(noise):
    y = A[G] + 2 * X + noise * RNG.normal(size=60)
    fit = mlv.Model("y ~ x + (1 | g)", frame(y)).fit(warn=False)
    assert not any("reproduces" in w for w in fit.warnings)


@pytest.mark.parametrize("value", [1.0, 0.0, 7.5])
def test_constant_predictor_is_named(value):
    data = frame(A[G] + 2 * X + RNG.normal(size=60)).assign(z=value)
    model = warned(lambda: mlv.Model("y ~ x + z + (1 | g)", data), "constant" if value else "aliased")
    assert model.fixed_names == ["(Intercept)", "x"]


def test_constant_predictor_without_intercept_is_the_intercept():
    data = frame(A[G] + 2 * X + RNG.normal(size=60)).assign(z=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        without = mlv.Model("y ~ 0 + z + x + (1 | g)", data).fit(warn=False)
    usual = mlv.Model("y ~ x + (1 | g)", data).fit(warn=False)
    assert without.fixed_effects.loc["z", "estimate"] == pytest.approx(usual.fixed_effects.loc["(Intercept)", "estimate"], rel=1e-6)


def test_slope_of_a_group_level_predictor_is_named():
    data = frame(A[G] + 2 * X + RNG.normal(size=60)).assign(w=S[G])
    warned(lambda: mlv.Model("y ~ x + w + (w | g)", data), "'w' does not vary within any level of 'g'")


def test_slope_of_a_constant_predictor_is_named():
    data = frame(A[G] + 2 * X + RNG.normal(size=60)).assign(w=2.0)
    warned(lambda: mlv.Model("y ~ x + (w | g)", data), "'w' does not vary within any level of 'g'")


def test_slopes_varying_within_groups_are_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mlv.Model("y ~ x + (x | g)", frame(A[G] + 2 * X + RNG.normal(size=60)))


def test_known_standard_errors_allow_one_value_per_group():
    data = pd.DataFrame({"y": A, "s": np.full(12, 0.5), "g": np.arange(12)})
    assert mlv.Model("y | se(s) ~ 1 + (1 | g)", data).nobs == 12


def test_noise_free_nuts_is_named():
    model = mlv.Model(NOISE_FREE["intercepts"][0], frame(NOISE_FREE["intercepts"][1]))
    post = warned(lambda: model.sample(chains=1, draws=200, warmup=200, seed=1, progress=False), "noise-free")
    assert np.median(post.sigma) < 1e-4 * np.std(NOISE_FREE["intercepts"][1])


# ---------------------------------------------------------------- found in a second pass (issue 16)
def _binary(seed: int = 1) -> pd.DataFrame:
    data = grouped(10, 5, seed)
    return data.assign(s=(data.y > data.y.median()).astype(int))


@pytest.mark.parametrize("edges", [(0, 1), (1, 0)], ids=["even-groups-0", "even-groups-1"])
def test_binomial_groups_that_separate_the_outcome_are_refused(edges):
    """Every group all 0 or all 1: the ML group SD is infinite. Before: an SD of 59 on the logit scale, no warning."""
    data = _binary()
    s = np.where(data.g % 2 == 0, *edges)
    refused(lambda: mlv.Model("s ~ x + (1 | g)", data.assign(s=s), family="binomial").fit(),
            "'g'", "all 0 or all 1", "no maximum", "sample()")


def test_binomial_groups_with_one_mixed_group_still_fit():
    """One group with both outcomes: the SD has a finite maximum, and the fit runs (the check is not a heuristic)."""
    data = _binary()
    s = np.where(data.g % 2 == 0, 0, 1)
    s[:2] = [0, 1]  # group 0 has both
    fit = mlv.Model("s ~ x + (1 | g)", data.assign(s=s), family="binomial").fit(warn=False)
    assert np.isfinite(fit.variance_components["sd"].iloc[0])


@pytest.mark.parametrize("column, factor", [("y", 1e200), ("y", 1e-200), ("x", 1e300), ("x", 1e-170)],
                         ids=["y-1e200", "y-1e-200", "x-1e300", "x-1e-170"])
def test_values_beyond_the_range_of_sums_of_squares_are_refused(column, factor):
    """Before: y * 1e-200 gave sigma = 0 with numpy's 'divide by zero' warning; y * 1e200 'numerically degenerate';
    x * 1e300 numbers after numpy overflow warnings."""
    data = grouped()
    refused(lambda: mlv.Model("y ~ x + (1 | g)", data.assign(**{column: data[column] * factor})).fit(),
            "reaches", "double precision", "other units")


@pytest.mark.parametrize("factor", [1e-100, 1e100])
def test_values_within_the_range_fit_as_the_unscaled_data(factor):
    """Scalings far beyond 1e+-8 but within range: the fit of y * s is the fit of y scaled (powers of ten are not exact
    in binary, so to 1e-6 relative)."""
    data = grouped()
    f0 = mlv.Model("y ~ x + (1 | g)", data).fit()
    f = mlv.Model("y ~ x + (1 | g)", data.assign(y=data.y * factor)).fit()
    np.testing.assert_allclose(f.sigma / factor, f0.sigma, rtol=1e-6)
    np.testing.assert_allclose(f.beta / factor, f0.beta, rtol=1e-6)
    np.testing.assert_allclose(f.theta, f0.theta, rtol=1e-6)


@pytest.mark.parametrize("factor", [1e200, 1e-200], ids=["y-1e200", "y-1e-200"])
def test_sampling_values_beyond_the_range_is_refused(factor):
    """Before: an OverflowError from the Gibbs sampler at 1e200; at 1e-200 a 'not positive definite' error blaming
    collinear columns."""
    data = grouped()
    model = mlv.Model("y ~ x + (1 | g)", data.assign(y=data.y * factor))
    refused(lambda: model.sample(sampler="gibbs", chains=1, draws=20, warmup=20, progress=False), "reaches",
            "double precision")
