"""Predictive checks: observed statistics, replicated ones, and p-values that detect a missing random slope."""

import numpy as np
import pytest

import multilevel as mlv
from multilevel.errors import MultilevelError
from multilevel.ppc import ppc


def slope_sd(y, design):
    """SD between subjects of their own least-squares slopes on Days."""
    block, days = design.blocks[0], design.X[:, 1]
    slopes = [np.polyfit(days[block.codes == g], y[block.codes == g], 1)[0] for g in range(block.m)]
    return float(np.std(slopes, ddof=1))



def test_check_flags_a_model_without_random_slopes(sleep):
    wrong = ppc(mlv.Model("Reaction ~ Days + (1 | Subject)", sleep).fit(), {"slope_sd": slope_sd}, n=200, seed=1)
    right = ppc(mlv.Model("Reaction ~ Days + (Days | Subject)", sleep).fit(), {"slope_sd": slope_sd}, n=200, seed=1)
    assert wrong.table.loc["slope_sd", "p_value"] < 0.01
    assert 0.05 < right.table.loc["slope_sd", "p_value"] < 0.95


def test_observed_statistics_and_replicates(sleep):
    fit = mlv.Model("Reaction ~ Days + (Days | Subject)", sleep).fit()
    check = ppc(fit, ["mean", "sd", "min", "max", "between_sd", "group_means"], n=50, seed=2)
    y = sleep["Reaction"].to_numpy()
    obs = check.observed
    assert obs["mean"] == pytest.approx(y.mean()) and obs["sd"] == pytest.approx(y.std(ddof=1))
    assert obs["min"] == y.min() and obs["max"] == y.max()
    means = sleep.groupby("Subject", observed=True)["Reaction"].mean()
    assert obs["between_sd[Subject]"] == pytest.approx(means.std(ddof=1))
    assert obs[f"mean[Subject={means.index[0]}]"] == pytest.approx(means.iloc[0])
    sims = fit.simulate(50, 2)
    np.testing.assert_allclose(check.replicated["max"], sims.max(axis=1))
    assert check.table.loc["mean", "p_value"] == pytest.approx(np.mean(sims.mean(axis=1) >= y.mean()))


def test_posterior_predictive_uses_every_draw():
    post = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff")).sample(
        chains=2, draws=150, warmup=150, seed=1, progress=False
    )
    check = ppc(post, seed=4)
    assert check.kind == "posterior predictive" and len(check.replicated) == 300
    yrep = post.posterior_predictive(4).reshape(300, -1)
    np.testing.assert_allclose(check.replicated["sd"], yrep.std(axis=1, ddof=1))


def test_bad_statistics_are_named(sleep):
    fit = mlv.Model("Reaction ~ Days + (1 | Subject)", sleep).fit()
    with pytest.raises(MultilevelError, match="unknown statistic 'median'"):
        ppc(fit, ["median"])
    with pytest.raises(MultilevelError, match="must be a function"):
        ppc(fit, {"x": 3})
