"""Peer test suites' weak spots: optima on the boundary are reached and flagged (boundary polish), and balanced
designs get their exact Satterthwaite df."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import multilevel as mlv
from hostile_support import sleep_fit  # noqa: F401 (fixture)
from multilevel import lmm
from multilevel.optimize import OptimumInfo, boundary_polish

SLOPES = "y ~ x1 + x2 + x3 + (x1 + x2 + x3 | c) + (1 | p)"


def three_slopes(seed: int = 22) -> pd.DataFrame:
    """Three correlated slopes per consumer, one with no variance, and a crossed product factor."""
    rng = np.random.default_rng(seed)
    c, p = np.repeat(np.arange(12), 6), np.tile(np.arange(6), 12)
    x1, x2, x3 = rng.normal(size=(3, c.size))
    L = np.array([[1, 0, 0, 0], [0.9, 0.1, 0, 0], [0.3, 0.2, 0.5, 0], [0, 0, 0, 0]])
    b = rng.normal(size=(12, 4)) @ L.T
    y = b[c, 0] + (1 + b[c, 1]) * x1 + b[c, 2] * x2 + (0.5 + b[c, 3]) * x3 + rng.normal(0, 0.3, 6)[p] + rng.normal(size=c.size)
    return pd.DataFrame(dict(y=y, x1=x1, x2=x2, x3=x3, c=c, p=p))


def test_three_slopes_reach_the_boundary_optimum(monkeypatch):
    model = mlv.Model(SLOPES, three_slopes())
    polished = model.fit(warn=False)
    monkeypatch.setattr(lmm, "boundary_polish", lambda fun, info, lower: info)
    stopped = mlv.Model(SLOPES, three_slopes()).fit(warn=False)
    assert not stopped.converged  # what the optimiser alone gives: a point 8.6e-8 above the optimum
    assert polished.converged and polished.is_singular
    assert polished.objective < stopped.objective - 5e-8


def nudged(fit, by: float) -> OptimumInfo:
    """The optimiser's report as if it had stopped `by` above the boundary in every zero coordinate."""
    theta = np.where(fit.theta == 0, by, fit.theta)
    return OptimumInfo(theta, fit.model.engine.objective(theta, fit.reml), 0, "stopped short")


@pytest.mark.parametrize("by", [1e-5, 1e-4, 1e-3, 5e-3])
def test_a_point_short_of_the_boundary_is_put_on_it(by):
    model = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff2"))
    fit = model.fit(warn=False)
    assert fit.theta[0] == 0 and fit.is_singular  # lme4: theta 0, a singular fit
    objective = lambda t: model.engine.objective(t, True)  # noqa: E731
    info = boundary_polish(objective, nudged(fit, by), model.engine.theta_lower())
    assert info.x[0] == 0 and info.fun <= objective(np.array([by]))
    refit = lmm.fit_at(model, "REML", None, info, warn=False)
    assert refit.is_singular and refit.objective == pytest.approx(fit.objective, abs=1e-10)


def test_interior_optima_are_left_alone(sleep_fit):
    info = OptimumInfo(sleep_fit.theta, sleep_fit.objective, 0, "converged")
    assert boundary_polish(lambda t: sleep_fit.model.engine.objective(t, True), info, sleep_fit.model.engine.theta_lower()) is info


def test_penalised_fits_are_never_put_on_the_boundary():
    fit = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff2")).fit(prior="zero-avoiding", warn=False)
    assert fit.theta[0] > 0.01 and not fit.is_singular


@pytest.mark.parametrize("term", ["(Intercept)", "Days"])
def test_balanced_sleepstudy_satterthwaite_df_is_17(sleep_fit, term):
    df = dict(zip(sleep_fit.fixed_effects.index, sleep_fit.satterthwaite_df))
    assert abs(df[term] - 17) < 1e-5  # 18 subjects, balanced: exactly 17 (lmerTest's numDeriv: 16.9997, 16.99998)


def test_satterthwaite_in_the_table(sleep_fit):
    np.testing.assert_allclose(sleep_fit.fixed_effects["df"], 17, atol=1e-5)
