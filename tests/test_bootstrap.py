"""Parametric bootstrap: y-only refits equal full refits, reproducible across cores, sensible intervals."""

import numpy as np
import pytest
from conftest import reference

import multilevel as mlv
from multilevel.bootstrap import bootstrap, refit_on
from multilevel.errors import MultilevelError


@pytest.fixture(scope="module")
def sleep_fit():
    return mlv.Model("Reaction ~ Days + (Days | Subject)", mlv.datasets.load("sleepstudy")).fit()


def test_refit_on_new_response_equals_a_model_built_from_scratch(sleep_fit):
    y = sleep_fit.simulate(1, seed=7)[0]
    quick = refit_on(sleep_fit, y)
    df = mlv.datasets.load("sleepstudy").assign(Reaction=y)
    full = mlv.Model("Reaction ~ Days + (Days | Subject)", df).fit()
    assert quick.objective == pytest.approx(full.objective, abs=1e-10)
    np.testing.assert_allclose(quick.theta, full.theta, atol=1e-10)
    np.testing.assert_allclose(quick.beta, full.beta, rtol=1e-12)


def test_refit_keeps_weights_and_offset():
    df = mlv.datasets.load("sleepstudy")
    rng = np.random.default_rng(0)
    w, off = rng.uniform(0.5, 2.0, len(df)), rng.normal(0, 5, len(df))
    fit = mlv.Model("Reaction ~ Days + (Days | Subject)", df, weights=w, offset=off).fit()
    y = fit.simulate(1, seed=3)[0]
    quick = refit_on(fit, y)
    full = mlv.Model("Reaction ~ Days + (Days | Subject)", df.assign(Reaction=y), weights=w, offset=off).fit()
    np.testing.assert_allclose(quick.engine.cp.xy, full.engine.cp.xy, rtol=1e-12)
    np.testing.assert_allclose(quick.engine.cp.zxy[0], full.engine.cp.zxy[0], rtol=1e-12, atol=1e-9)
    assert quick.objective == pytest.approx(full.objective, abs=1e-9)


def test_results_do_not_depend_on_cores(sleep_fit):
    one = bootstrap(sleep_fit, n=6, seed=11, cores=1)
    two = bootstrap(sleep_fit, n=6, seed=11, cores=2)
    np.testing.assert_array_equal(one.replicates.to_numpy(), two.replicates.to_numpy())


def test_slope_sd_interval_covers_the_reml_estimate(sleep_fit):
    sd_days = reference("sleepstudy_slopes_reml")["varcomp"][0]["sd"][1]  # lme4's REML estimate, 5.92
    boot = bootstrap(sleep_fit, n=40, seed=2024)
    ci = boot.interval().loc["sd_Subject__Days"]
    assert ci["lower"] < sd_days < ci["upper"]
    assert 1.0 < ci["upper"] - ci["lower"] < 10.0
    assert ci["estimate"] == pytest.approx(sd_days, rel=1e-4)


@pytest.mark.slow
def test_slope_sd_interval_covers_the_profile_interval_centre(sleep_fit):
    """lme4's profile interval for sd_Days is about (3.8, 8.75); its centre must lie inside the bootstrap one."""
    profile = sleep_fit.confint(method="profile").loc["sd_Days|Subject"]
    ci = bootstrap(sleep_fit, n=400, seed=5).interval().loc["sd_Subject__Days"]
    assert ci["lower"] < (profile["lower"] + profile["upper"]) / 2 < ci["upper"]
    assert 2.0 < ci["upper"] - ci["lower"] < 8.0


def test_basic_interval_reflects_the_percentile_one(sleep_fit):
    boot = bootstrap(sleep_fit, n=10, seed=1, statistic=lambda f: {"slope": f.beta[1], "sigma": f.sigma})
    pct, basic = boot.interval(0.9), boot.interval(0.9, kind="basic")
    np.testing.assert_allclose(basic["lower"], 2 * pct["estimate"] - pct["upper"])
    np.testing.assert_allclose(basic["upper"], 2 * pct["estimate"] - pct["lower"])
    assert list(boot.replicates.columns) == ["slope", "sigma"]


def test_bad_arguments(sleep_fit):
    with pytest.raises(MultilevelError, match="n must be"):
        bootstrap(sleep_fit, n=0)
    with pytest.raises(MultilevelError, match="kind must be"):
        bootstrap(sleep_fit, n=2, seed=1).interval(kind="bca")
