"""GLMM checks: Pearson overdispersion, DHARMa-style simulated residuals and their tests, binned residuals, plots."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import multilevel as mlv
from multilevel import plots
from multilevel.errors import MultilevelError


def counts(size: float | None, seed: int = 4, groups: int = 30, per: int = 10, intercept: float = 0.5) -> pd.DataFrame:
    """Counts with a group intercept (SD 0.5) and one predictor: Poisson, or negative binomial of `size`."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), per)
    x = rng.normal(size=g.size)
    mu = np.exp(intercept + 0.3 * x + rng.normal(0, 0.5, groups)[g])
    y = rng.poisson(mu) if size is None else rng.negative_binomial(size, size / (size + mu))
    return pd.DataFrame({"y": y, "x": x, "g": g})


@pytest.fixture(scope="module")
def cbpp_fit():
    return mlv.Model("cbind(incidence, size - incidence) ~ period + (1 | herd)", mlv.datasets.load("cbpp"),
                     family="binomial").fit()


def test_pearson_overdispersion_is_the_binomial_formula(cbpp_fit):
    cbpp = mlv.datasets.load("cbpp")
    n, k, p = cbpp["size"].to_numpy(), cbpp["incidence"].to_numpy(), cbpp_fit.fitted()
    chisq = np.sum((k - n * p) ** 2 / (n * p * (1 - p)))
    out = cbpp_fit.overdispersion()
    assert out["chisq"] == pytest.approx(chisq, rel=1e-12) and out["df"] == 56 - 5
    assert out["p_value"] == pytest.approx(stats.chi2.sf(chisq, 51))


def test_overdispersed_counts_fail_the_poisson_checks_and_pass_the_negative_binomial():
    data = counts(size=1.0)
    poisson = mlv.Model("y ~ x + (1 | g)", data, family="poisson").fit()
    assert poisson.overdispersion()["ratio"] > 1.5 and poisson.overdispersion()["p_value"] < 1e-6
    tests = poisson.simulated_residuals(n=200, seed=1).tests()
    assert tests.loc["dispersion (ratio)", "statistic"] > 1.5 and tests.loc["dispersion (ratio)", "p_value"] < 0.01
    nb = mlv.Model("y ~ x + (1 | g)", data, family="negbinomial").fit()
    assert nb.simulated_residuals(n=200, seed=1).tests()["p_value"].min() > 0.05


def test_added_zeros_are_flagged_and_residuals_lie_in_the_unit_interval():
    data = counts(size=None, intercept=1.5)
    data.loc[data.index % 4 == 0, "y"] = 0
    fit = mlv.Model("y ~ x + (1 | g)", data, family="poisson").fit()
    sim = fit.simulated_residuals(n=200, seed=2)
    assert np.all((sim.residuals >= 0) & (sim.residuals <= 1))
    zero = sim.tests().loc["zero inflation (ratio)"]
    assert zero["statistic"] > 2 and zero["p_value"] < 0.01
    fig = plots.quantile_residuals(sim)
    assert len(fig.axes) == 2


def test_binned_residuals_partition_the_rows_and_refuse_counts(cbpp_fit):
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(40), 12)
    x = rng.normal(size=g.size)
    y = rng.binomial(1, 1 / (1 + np.exp(-(x + rng.normal(0, 1, 40)[g]))))
    fit = mlv.Model("y ~ x + (1 | g)", pd.DataFrame({"y": y, "x": x, "g": g}), family="binomial").fit()
    table = fit.binned_residuals()
    assert len(table) == int(np.sqrt(480)) and table["n"].sum() == 480
    assert np.sum(table["n"] * table["residual"]) == pytest.approx(np.sum(y - fit.fitted()), abs=1e-9)
    assert np.all(np.diff(table["fitted"]) > 0)
    assert len(plots.binned_residuals(table).axes) == 1
    with pytest.raises(MultilevelError, match="binary"):
        cbpp_fit.binned_residuals()


@pytest.mark.parametrize("kwargs, message", [({"n": 1}, "n \\(simulations\\) must be a whole number >= 2"),
                                             ({"n": 2.5}, "whole number"), ({"seed": "x"}, "seed must be")])
def test_simulated_residuals_refuse_bad_arguments_in_words(cbpp_fit, kwargs, message):
    with pytest.raises(MultilevelError, match=message):
        cbpp_fit.simulated_residuals(**kwargs)
