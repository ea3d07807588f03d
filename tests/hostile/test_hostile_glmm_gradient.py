"""Hostile fits for the GLMM's exact Laplace gradient (vector terms, crossed scalar terms, L-BFGS-B's restarts): each
gradient fit reaches the optimum the derivative-free (BOBYQA) fit finds, or lower."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import assert_same_optimum

import multilevel as mlv
from multilevel.vector_pirls import VectorTermGradient


def slope_in_tens(seed: int, n: int, subjects: int, items: int, family: str) -> pd.DataFrame:
    """Counts or 0/1 with a random slope in x of SD ~10 over few subjects: L-BFGS-B's early steps reach theta whose
    modes start PIRLS at the next point where the weights overflow."""
    rng = np.random.default_rng(seed)
    s, i, h = rng.integers(0, subjects, n), rng.integers(0, items, n), rng.integers(0, 4, n)
    x = 10 * rng.normal(size=n)
    z = x / x.std()
    eta = -0.3 + 0.4 * z + rng.normal(0, 1.0, subjects)[s] * z + rng.normal(0, 1.0, items)[i] * (1 + z)
    y = rng.poisson(np.exp(eta)) if family == "poisson" else rng.binomial(1, 1 / (1 + np.exp(-eta)))
    return pd.DataFrame({"y": y, "x": x, "s": s.astype(str), "i": i.astype(str), "h": h.astype(str)})


@pytest.mark.parametrize("seed", [1, 4, 25, 30])
def test_gradient_fit_restarts_pirls_from_zero_where_the_last_modes_fail(seed, monkeypatch):
    """PIRLS started from the last point's modes failed (weights overflowed) at points it solves from modes 0: the fit
    stopped 4 above the optimum (seed 1), or raised a MultilevelError (4, 30) or numpy's ValueError (25, cho_solve of
    infinite weights). -2 log L does not depend on x's units, so BOBYQA on x / 10 (where its PIRLS does not fail) gives
    the optimum: the gradient fit on x reaches it (1e-9 relative above at most, 1e-6 from it; beta x's units apart)."""
    data = slope_in_tens(seed, 300, 9, 4, "poisson")
    formula = "y ~ x + (1 + x | s) + (1 | i)"
    fit = mlv.Model(formula, data, family="poisson").fit(warn=False)
    monkeypatch.setattr(VectorTermGradient, "applies", staticmethod(lambda design: False))
    free = mlv.Model(formula, data.assign(x=data["x"] / 10), family="poisson").fit(warn=False)
    assert fit.deviance <= free.deviance * (1 + 1e-9)
    assert fit.deviance == pytest.approx(free.deviance, rel=1e-6)
    se = free.fixed_effects["std_error"].to_numpy()
    np.testing.assert_allclose(fit.beta * [1, 10], free.beta, atol=1e-3 * se.min())


def test_gradient_fit_is_not_stopped_by_a_failed_evaluation(monkeypatch):
    """Probit, three terms: a failed PIRLS evaluation (L-BFGS-B handed a huge value with no slope) cut its line search
    to a step of nothing: it stopped on its relative-reduction rule with the gradient ~100, -2 log L 8 above BOBYQA's,
    the Hessian not positive definite. The gradient fit must reach BOBYQA's optimum."""
    model = mlv.Model("y ~ x + (1 | s) + (1 + x | i) + (1 | h)", slope_in_tens(21, 102, 10, 8, "bernoulli"),
                      family="binomial(probit)")
    fit = model.fit(warn=False)
    monkeypatch.setattr(VectorTermGradient, "applies", staticmethod(lambda design: False))
    free = model.fit(warn=False)
    assert_same_optimum(fit, free)


def random_design(seed: int, counts: bool = False) -> pd.DataFrame:
    """One of the fuzzing designs: 40-400 rows, 2-24 subjects s crossed with 2-14 items i, a 4-level h, x of SD 1 or
    10, 0/1 (or Poisson counts) from intercepts and slopes of SD 0, 0.05, 0.5 or 1."""
    rng = np.random.default_rng(1000 + seed)
    n, ms, mi = int(rng.integers(40, 400)), int(rng.integers(2, 25)), int(rng.integers(2, 15))
    s, i, h = rng.integers(0, ms, n), rng.integers(0, mi, n), rng.integers(0, 4, n)
    rng.integers(0, 3, n)
    x = rng.normal(size=n) * rng.choice([1, 1, 10])
    z = x / x.std()
    sd = rng.choice([0, 0.05, 0.5, 1.0], size=4)
    eta = (-0.3 + 0.4 * z + rng.normal(0, sd[0], ms)[s] + rng.normal(0, sd[1], ms)[s] * z + rng.normal(0, sd[2], mi)[i]
           + rng.normal(0, sd[3], mi)[i] * z)
    rng.choice(5), rng.choice(6)
    y = rng.poisson(np.exp(eta)) if counts else rng.binomial(1, 1 / (1 + np.exp(-eta)))
    return pd.DataFrame({"y": y, "x": x, "s": s.astype(str), "i": i.astype(str), "h": h.astype(str)})


def test_gradient_fit_resumes_where_a_failed_evaluation_cut_its_line_search(monkeypatch):
    """L-BFGS-B's fourth point (beta -26 in whitened units) fails in PIRLS from any start; handed a huge value with no
    slope, its line search shrank to nothing and it stopped on its relative-reduction rule with the gradient 39 (6
    evaluations, -2 log L 142.63 against BOBYQA's 134.43). Resumed from its best point, it reaches BOBYQA's optimum."""
    model = mlv.Model("y ~ x + (1 | s) + (1 + x | i) + (1 | h)", random_design(21), family="binomial(probit)")
    fit = model.fit(warn=False)
    monkeypatch.setattr(VectorTermGradient, "applies", staticmethod(lambda design: False))
    free = model.fit(warn=False)
    assert_same_optimum(fit, free)


def test_gradient_fit_leaves_a_correlation_of_one_for_a_lower_optimum(monkeypatch):
    """L-BFGS-B reached T_22 = 0 with T_21 != 0 (the slope perfectly correlated with the intercept), where the slope
    0.01 inside rises (the KKT check keeps it): -2 log L 727.722, BOBYQA's optimum 727.615 at a correlation of -0.46.
    Searched again from T_22 = 0.01, the gradient fit reaches it (-2 log L as `assert_same_optimum`; each coefficient
    within 1e-3 of its own SE: x's, in units of tens, is 1/40 of the intercept's)."""
    model = mlv.Model("y ~ x + (1 + x | s) + (1 | i)", slope_in_tens(11, 300, 9, 4, "poisson"), family="poisson")
    fit = model.fit(warn=False)
    monkeypatch.setattr(VectorTermGradient, "applies", staticmethod(lambda design: False))
    free = model.fit(warn=False)
    assert fit.deviance <= free.deviance * (1 + 1e-9)
    assert fit.deviance == pytest.approx(free.deviance, rel=1e-6)
    np.testing.assert_array_less(np.abs(fit.beta - free.beta), 1e-3 * fit.fixed_effects["std_error"].to_numpy())
    np.testing.assert_allclose(fit.variance_components["sd"], free.variance_components["sd"], atol=1e-3)


@pytest.mark.parametrize("size", [1e8, 1.3e11, 1e14])
def test_negative_binomial_loglik_of_a_huge_size_is_the_poisson_one(size):
    """NB2's log-likelihood tends to Poisson's as the size grows (the difference ~ ((y - mu)^2 - y) / 2 size, below
    2e-6 here). Written as t log t - t log(t + mu) and lgamma(y + t) - lgamma(t), it cancelled to 3e-4 per row at size
    1.3e11 (where a Poisson-like NB fit's log size goes), enough to hand L-BFGS-B a false optimum."""
    from scipy import stats

    from multilevel.families import NegativeBinomial

    y, mu = np.array([0, 1, 5, 30, 200.0]), np.array([0.5, 2.0, 4.0, 25.0, 180.0])
    bound = np.abs((y - mu) ** 2 - y) / size
    np.testing.assert_array_less(np.abs(NegativeBinomial(size).loglik(y, mu) - stats.poisson.logpmf(y, mu)), bound + 1e-11)


def test_negative_binomial_loglik_of_a_small_size_is_scipys():
    """The stable form keeps NB2's log-likelihood at ordinary sizes (scipy's nbinom: size t, p = t / (t + mu))."""
    from scipy import stats

    from multilevel.families import NegativeBinomial

    y, mu = np.array([0, 1, 5, 30, 200.0]), np.array([0.5, 2.0, 4.0, 25.0, 180.0])
    for size in (0.3, 2.0, 50.0):
        np.testing.assert_allclose(NegativeBinomial(size).loglik(y, mu), stats.nbinom.logpmf(y, size, size / (size + mu)),
                                   rtol=1e-12, atol=1e-12)


def test_negative_binomial_gradient_fit_near_the_poisson_limit_is_not_held_by_rounding(monkeypatch):
    """NB with (1 + x | s) + (1 | i) on Poisson counts: L-BFGS-B's line search went to log size 25.6, where the
    cancelling log-likelihood gave -2 log L 1048.130 (PIRLS failing next to it) and it stopped there with the gradient
    125. With the stable log-likelihood it reaches 1047.960, below BOBYQA's (1047.967, itself not converged)."""
    model = mlv.Model("y ~ x + (1 + x | s) + (1 | i)", random_design(61, counts=True), family="negbinomial")
    fit = model.fit(warn=False)
    monkeypatch.setattr(VectorTermGradient, "applies", staticmethod(lambda design: False))
    free = model.fit(warn=False)
    assert fit.deviance <= free.deviance * (1 + 1e-9)


@pytest.mark.parametrize("seed, formula, family", [
    (42, "y ~ x + (1 + x || s) + (1 + x | i)", "binomial(cloglog)"),
    (71, "y ~ x + (1 | s) + (0 + x | s) + (1 | i)", "poisson"),  # scalar terms only: ScalarTermsGradient
])
def test_gradient_fit_keeps_numpys_overflow_warnings_to_itself(seed, formula, family):
    """exp(eta) overflowing at a far trial point is a failed evaluation the solver reports (not positive definite) and
    the search steps back from; numpy's RuntimeWarnings ('overflow encountered in exp') reached the user from 9 of 100
    fuzzed fits."""
    import warnings

    model = mlv.Model(formula, random_design(seed, counts=family == "poisson"), family=family)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fit = model.fit(warn=False)
    assert np.isfinite(fit.deviance)


@pytest.mark.parametrize("seed", [1, 2, 4, 7])
def test_derivative_free_fit_of_a_slope_in_tens_fits(seed, monkeypatch):
    """The same models as `test_gradient_fit_restarts_pirls_from_zero_where_the_last_modes_fail`, fitted without the
    gradient (as models too large for it are): the engine's PIRLS, warm-started from a far point's modes, failed where
    it solves from modes 0 (seeds 1, 2, 4, 7 and 10 of 1-12 raised); it now retries from modes 0 and glm's beta and reaches
    the gradient fit's optimum."""
    data = slope_in_tens(seed, 300, 9, 4, "poisson")
    model = mlv.Model("y ~ x + (1 + x | s) + (1 | i)", data, family="poisson")
    fit = model.fit(warn=False)
    monkeypatch.setattr(VectorTermGradient, "applies", staticmethod(lambda design: False))
    free = model.fit(warn=False)
    assert free.deviance == pytest.approx(fit.deviance, rel=1e-6)
