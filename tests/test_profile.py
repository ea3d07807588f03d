"""Profile-likelihood intervals, checked by their defining property: at each end, the deviance minimised
over all other parameters (here by an independent minimiser, scipy, or a refit with an offset) exceeds
its minimum by the chi-square(1) quantile. The reference files hold no profile intervals."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

import multilevel as mlv
from multilevel.errors import MultilevelError
from multilevel.profile import interval_end

CHISQ = stats.chi2.ppf(0.95, 1)  # 3.841


@lru_cache(maxsize=None)
def profiled(formula: str, dataset: str, method: str):
    fit = mlv.Model(formula, mlv.datasets.load(dataset)).fit(method=method)
    return fit, fit.confint(method="profile")


def deviance(engine, sds, sigma):
    """ML deviance at SDs of scalar terms and sigma, written directly with the engine's likelihood."""
    f = engine.factor(np.asarray(sds, dtype=float) / sigma)
    return np.inf if f is None else -2 * engine.loglik_fixed_sigma(f, sigma, reml=False)


def test_dyestuff_ends_raise_the_deviance_by_the_chisquare_quantile():
    fit, ci = profiled("Yield ~ 1 + (1 | Batch)", "Dyestuff", "ML")
    engine, base = fit.engine, fit.objective
    for end in ci.loc["sd_(Intercept)|Batch", ["lower", "upper"]]:
        best = optimize.minimize_scalar(lambda s: deviance(engine, [end], s), bounds=(1, 200), method="bounded",
                                        options={"xatol": 1e-9})
        assert best.fun - base == pytest.approx(CHISQ, abs=1e-3)
    for end in ci.loc["sigma", ["lower", "upper"]]:
        best = optimize.minimize_scalar(lambda sd: deviance(engine, [sd], end), bounds=(0, 300), method="bounded",
                                        options={"xatol": 1e-9})
        assert best.fun - base == pytest.approx(CHISQ, abs=1e-3)


def test_sleepstudy_variance_parameters_ends():
    """Each end of each SD, the correlation and sigma: the other three re-optimised by Nelder-Mead."""
    fit, ci = profiled("Reaction ~ Days + (Days | Subject)", "sleepstudy", "ML")
    engine, base = fit.engine, fit.objective
    names = ["sd_(Intercept)|Subject", "sd_Days|Subject", "cor_Days.(Intercept)|Subject", "sigma"]
    start = ci.loc[names, "estimate"].to_numpy()

    def dev(s):  # s = (sd0, sd1, corr, sigma)
        sd0, sd1, r, sigma = s
        if sd0 < 0 or sd1 < 0 or abs(r) > 1 or sigma <= 0:
            return np.inf
        T = np.array([[sd0, 0.0], [r * sd1, np.sqrt(1 - r * r) * sd1]]) / sigma
        f = engine.factor(np.array([T[0, 0], T[1, 0], T[1, 1]]))
        return -2 * engine.loglik_fixed_sigma(f, sigma, reml=False)

    for w, name in enumerate(names):
        others = [i for i in range(4) if i != w]
        for end in ci.loc[name, ["lower", "upper"]]:
            def restricted(v, w=w, end=end, others=others):
                s = np.empty(4)
                s[w], s[others] = end, v
                return dev(s)

            best = optimize.minimize(restricted, start[others], method="Nelder-Mead",
                                     options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 20000})
            assert best.fun - base == pytest.approx(CHISQ, abs=1e-3), (name, end)


def test_fixed_effect_ends_match_refits_with_an_offset():
    """Holding Days' coefficient at an end = an ML fit without Days and with offset b * Days."""
    fit, ci = profiled("Reaction ~ Days + (Days | Subject)", "sleepstudy", "ML")
    data = mlv.datasets.load("sleepstudy")
    for end in ci.loc["Days", ["lower", "upper"]]:
        refit = mlv.Model("Reaction ~ 1 + (Days | Subject)", data, offset=end * data["Days"].to_numpy()).fit(method="ML")
        assert refit.objective - fit.objective == pytest.approx(CHISQ, abs=1e-3)


@pytest.mark.parametrize(
    "formula, dataset", [("Yield ~ 1 + (1 | Batch)", "Dyestuff"), ("Reaction ~ Days + (Days | Subject)", "sleepstudy")]
)
def test_intervals_contain_the_estimate(formula, dataset):
    _, ci = profiled(formula, dataset, "ML")
    assert (ci["lower"] < ci["estimate"]).all() and (ci["estimate"] < ci["upper"]).all()


def test_reml_fit_is_profiled_on_the_ml_deviance_as_lme4():
    _, from_reml = profiled("Yield ~ 1 + (1 | Batch)", "Dyestuff", "REML")
    _, from_ml = profiled("Yield ~ 1 + (1 | Batch)", "Dyestuff", "ML")
    pd.testing.assert_frame_equal(from_reml, from_ml, rtol=1e-6)


def test_singular_dyestuff2_sd_interval_starts_at_zero():
    fit, ci = profiled("Yield ~ 1 + (1 | Batch)", "Dyestuff2", "REML")
    ml = fit.model.fit(method="ML")
    assert ci.loc["sd_(Intercept)|Batch", "lower"] == 0.0
    # the deviance at SD 0 (sigma re-optimised) is within the chi-square quantile of the minimum
    at_zero = optimize.minimize_scalar(lambda s: deviance(ml.engine, [0.0], s), bounds=(0.1, 20), method="bounded")
    assert at_zero.fun - ml.objective < CHISQ
    upper = ci.loc["sd_(Intercept)|Batch", "upper"]
    best = optimize.minimize_scalar(lambda s: deviance(ml.engine, [upper], s), bounds=(0.1, 20), method="bounded",
                                    options={"xatol": 1e-9})
    assert best.fun - ml.objective == pytest.approx(CHISQ, abs=1e-3)


def test_profile_close_to_wald_for_a_fixed_effect_on_large_balanced_data():
    """Asymptotically the fixed-effect profile is quadratic: 400 groups x 10 rows, slope interval ends
    within 0.1 % of the Wald half-width of the Wald ends."""
    rng = np.random.default_rng(20240611)
    groups, per = 400, 10
    g = np.repeat(np.arange(groups), per)
    x = np.tile(np.linspace(-1, 1, per), groups)
    y = 1.0 + 0.5 * x + rng.normal(0, 0.7, groups)[g] + rng.normal(0, 1.0, groups * per)
    data = pd.DataFrame({"y": y, "x": x, "g": pd.Categorical(g.astype(str))})
    fit = mlv.Model("y ~ x + (1 | g)", data).fit(method="ML")
    wald = fit.confint()
    prof = fit.confint(method="profile")
    half = (wald.loc["x", "upper"] - wald.loc["x", "lower"]) / 2
    for end in ("lower", "upper"):
        assert abs(prof.loc["x", end] - wald.loc["x", end]) <= 0.001 * half


def test_penalised_fit_is_refused():
    fit = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff2")).fit(prior="zero-avoiding")
    with pytest.raises(MultilevelError, match="penalised"):
        fit.confint(method="profile")


def test_a_profile_that_changes_when_evaluated_again_is_reported():
    """A zeta that is not a function of its argument (the inner minimisation lands elsewhere each time, as with a
    GLMM's predictor at x + 100 beside the intercept) gives our error, not brentq's ValueError."""
    calls = iter([0.5, 2.5, 2.5, 2.5])  # below the target, then above it at every point, the bracket's end included
    with pytest.raises(mlv.MultilevelError, match="profile of parameter 0 is not resolved"):
        interval_end(lambda w, x: next(calls), 0, 1.96, 0.0, np.inf, 1.0)
