"""Hostile numbers: data far from zero where nothing in the model can absorb the distance, and other numeric range
cases the shift/scale invariance tests (tests/test_shift_invariance.py) do not reach."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import multilevel as mlv
from multilevel.errors import MultilevelWarning
from hostile_support import warned  # noqa: I001 (tests/hostile is on the path)

NO_INTERCEPT = ["Reaction ~ 0 + Days + (1 | Subject)", "Reaction ~ 0 + Days + (Days | Subject)"]


def sleep():
    return mlv.datasets.load("sleepstudy")


@pytest.mark.parametrize("c", [1e6, 1e9, 1e12])
@pytest.mark.parametrize("formula", NO_INTERCEPT)
def test_a_far_response_without_an_intercept_warns_that_precision_runs_out(formula, c):
    """y + c without an intercept: the random effects must carry c, their variance c^2, and the criterion cannot resolve
    sigma (at 1e9 sigma came out 2.3 times the limit the fits approach, 30.90, with only a convergence warning). The
    fit now says why and names the fix."""
    data = sleep()
    warned(lambda: mlv.Model(formula, data.assign(Reaction=data.Reaction + c)).fit(method="ML"),
           r"no intercept.*absorb.*Add an intercept")


@pytest.mark.parametrize("formula", NO_INTERCEPT)
def test_a_model_through_zero_near_its_data_does_not_warn(formula):
    """The same models on the data as they are (the response 5 SDs from zero) and shifted by 1e3 (23 SDs), where the
    fit converges: no warning at all."""
    data = sleep()
    for c in (0.0, 1e3):
        with warnings.catch_warnings():
            warnings.simplefilter("error", MultilevelWarning)
            mlv.Model(formula, data.assign(Reaction=data.Reaction + c)).fit(method="ML")


def test_a_far_response_with_cell_means_is_absorbed_without_a_warning():
    """A factor's full set of dummies (`0 + f`) is a constant column: it absorbs y + 1e9 exactly, so the fit is the
    unshifted one (sigma to 1e-6) and nothing is said."""
    data = sleep().assign(half=lambda d: np.where(d.Days < 5, "early", "late"))
    formula = "Reaction ~ 0 + half + (1 | Subject)"
    f0 = mlv.Model(formula, data).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("error", MultilevelWarning)
        f = mlv.Model(formula, data.assign(Reaction=data.Reaction + 1e9)).fit()
    assert abs(f.sigma / f0.sigma - 1) < 1e-6


# ---------------------------------------------------------------- statistics that read the rows, with a far covariate
SLOPES = "Reaction ~ Days + (Days | Subject)"


def shifted_fit(c: float, formula: str = SLOPES):
    data = sleep()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MultilevelWarning)  # the far random slope's note
        return mlv.Model(formula, data.assign(Days=data.Days + c)).fit()


def base_fit(formula: str = SLOPES):
    return mlv.Model(formula, sleep()).fit()


@pytest.mark.parametrize("c", [1e6, 1e9, 1e12])
def test_icc_and_r2_with_a_far_random_slope_covariate(c):
    """mean_i z_i' Sigma z_i is the variance of a row's group effect, the same whatever the covariate's origin: ICC, R^2
    and the variance decomposition of Days + c equal the unshifted fit's to 1e-6. Before, they were formed of the
    user's covariance (its intercept variance near c^2 times the slope's) and z = (1, Days + c): at c = 1e9 the
    ICC came out 0 and R^2 off by 109 %, silently."""
    f, f0 = shifted_fit(c), base_fit()
    for table, table0 in ((f.icc(), f0.icc()), (f.r2(), f0.r2()), (f.icc(conditional=True), f0.icc(conditional=True))):
        np.testing.assert_allclose(table["estimate"].to_numpy(), table0["estimate"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(f.variance_decomposition().select_dtypes("number").to_numpy(),
                               f0.variance_decomposition().select_dtypes("number").to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("c", [1e6, 1e9])
def test_glmm_icc_with_a_far_random_slope_covariate(c):
    """The same for a binomial GLMM with a random slope of period as a number (cbpp), on the latent scale."""
    cbpp = mlv.datasets.load("cbpp").assign(p=lambda d: d.period.astype(float))
    formula = "cbind(incidence, size - incidence) ~ p + (p | herd)"
    f0 = mlv.Model(formula, cbpp, family="binomial").fit(warn=False)
    f = mlv.Model(formula, cbpp.assign(p=cbpp.p + c), family="binomial").fit(warn=False)
    np.testing.assert_allclose(f.icc()["estimate"].to_numpy(), f0.icc()["estimate"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(f.r2()["estimate"].to_numpy(), f0.r2()["estimate"].to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("c", [1e6, 1e9, 1e12])
def test_pooling_with_a_far_random_slope_covariate(c):
    """No- and complete-pooling regressions are solved in centred columns: with Days + c every subject's own slope,
    the complete-pooling slope and the slopes' shrinkage are the unshifted ones to 1e-6, and the no-pooling intercepts
    (at Days + c = 0) are the unshifted ones moved by -c times the slope. Before, at c = 1e9 every no-pooling value
    was NaN, blamed on 'too few distinct rows'."""
    t, t0 = shifted_fit(c).pooling(), base_fit().pooling()
    slope, intercept = (t0.term == "Days").to_numpy(), (t0.term == "(Intercept)").to_numpy()
    for column in ("no_pooling", "complete_pooling"):
        np.testing.assert_allclose(t[column][slope].to_numpy(), t0[column][slope].to_numpy(), rtol=1e-6)
    # a share of order 1 (one near 0): to 1e-6 of 1, as the fits' partial pooling agree to 1e-8 relative
    np.testing.assert_allclose(t.shrinkage[slope].to_numpy(), t0.shrinkage[slope].to_numpy(), rtol=0, atol=1e-6)
    moved = t0.no_pooling[intercept].to_numpy() - c * t0.no_pooling[slope].to_numpy()
    np.testing.assert_allclose(t.no_pooling[intercept].to_numpy(), moved, rtol=1e-6)


@pytest.mark.parametrize("c", [1e6, 1e9])
def test_pooling_of_a_quadratic_far_from_zero_is_not_refused(c):
    """A quadratic in Days + c beside random intercepts: before, the no-pooling regression's columns were collinear to
    rounding and pooling() refused, blaming 'a group-level predictor'. Now it answers, and its intercepts' no-pooling
    values are each subject's mean residual of the common quadratic, as the unshifted fit's at the same rows."""
    formula = "Reaction ~ Days + I(Days^2) + (1 | Subject)"
    t = shifted_fit(c, formula).pooling()
    assert np.all(np.isfinite(t[["no_pooling", "complete_pooling", "partial_pooling"]].to_numpy()))


@pytest.mark.parametrize("c", [1e6, 1e9, 1e12])
def test_ridge_toward_the_group_mean_with_a_far_predictor(c):
    """mlv.methods' 'ridge toward group mean' projects the fixed columns out: of x + c's columns as given the projection
    lost the slope (b_Days 3e-7 instead of 10.47 at c = 1e9, sigma 44 instead of 31), silently. Now of the centred
    columns: b_Days, sigma and the implied SD equal the unshifted ones to 1e-6."""
    data = sleep()
    formula = "Reaction ~ Days + (1 | Subject)"

    def table(frame):
        t = mlv.methods(mlv.Model(formula, frame), include=["ridge toward group mean"]).table
        return t.set_index("parameter")["estimate"]

    t0, t = table(data), table(data.assign(Days=data.Days + c))
    for name in ("b_Days", "sigma", "sd_Subject__Intercept"):
        assert abs(t[name] / t0[name] - 1) < 1e-6, (name, t[name], t0[name])


def weighted_sleep():
    data = sleep()
    return data.assign(w=np.random.default_rng(1).uniform(0.5, 2, len(data)))


@pytest.mark.parametrize("k", [1e-6, 1e4, 1e8])
def test_weights_far_from_1_warn(k):
    """Prior weights times k: sigma moves by 1 / sqrt(k) and theta = SD / sigma by sqrt(k), so lme4's absolute boundary
    rules misjudge (k = 1e8: a false singular fit, beta 0.2 % off; k = 1e4: beta 4e-6 off), before without a word.
    Now the fit says so and names the fix."""
    data = weighted_sleep()
    warned(lambda: mlv.Model("Reaction ~ Days + (Days | Subject)", data.assign(w=data.w * k), weights="w").fit(),
           r"weights average.*Divide the weights by their mean")


def test_weights_divided_by_their_mean_give_the_same_fixed_effects_and_sds():
    """The fix the warning names: weights / mean(w) give the fit of the weights as they were, up to sigma's scale (the
    fixed effects and the random effects' SDs to 1e-6; sigma divided by sqrt(mean(w)))."""
    data = weighted_sleep().assign(w=lambda d: d.w * 3.7)
    formula = "Reaction ~ Days + (Days | Subject)"
    with warnings.catch_warnings():
        warnings.simplefilter("error", MultilevelWarning)
        f = mlv.Model(formula, data, weights="w").fit()
        g = mlv.Model(formula, data.assign(w=data.w / data.w.mean()), weights="w").fit()
    np.testing.assert_allclose(g.beta, f.beta, rtol=1e-6)
    sds = (f.variance_components["term2"] == "") & (f.variance_components["group"] != "Residual")
    np.testing.assert_allclose(g.variance_components["sd"][sds], f.variance_components["sd"][sds], rtol=1e-6)
    np.testing.assert_allclose(g.sigma, f.sigma / np.sqrt(data.w.mean()), rtol=1e-6)  # sigma^2 / w = sigma_g^2 / (w / m)
