"""Hostile GLMM fits found by cross-checking the maximum-likelihood fits against an independent implementation: each
test checks the fit against mathematics or against our own independent paths (the derivative-free fit, the same
objective at two points), never against numbers the fit itself produced."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtr

import multilevel as mlv
from multilevel.scalar_pirls import ScalarPirls


def exposure_counts(seed: int, n: int = 200, groups: int = 20) -> pd.DataFrame:
    """Poisson counts of ~e^3 per unit over exposures of e^3 to e^8 (counts of hundreds to ~10^5), one random
    intercept of SD 0.5: an offset far from zero."""
    rng = np.random.default_rng(seed)
    g, x, lexp = np.arange(n) % groups, rng.normal(size=n), rng.uniform(3, 8, n)
    y = rng.poisson(np.exp(3.0 + 0.3 * x + lexp + rng.normal(0, 0.5, groups)[g]))
    return pd.DataFrame({"y": y, "x": x, "lexp": lexp, "g": g.astype(str)})


@pytest.mark.parametrize("nagq", [0, 1, 5])
def test_one_scalar_term_keeps_numpys_overflow_warnings_to_itself(nagq, monkeypatch):
    """The one scalar term's solver (`ScalarPirls`) at far trial points (exp(eta) overflowing) printed 8-22 numpy
    RuntimeWarnings ('overflow encountered in exp', 'invalid value encountered in subtract') per fit of every seed of
    these counts (nAGQ 1 and 5); the crossed and vector solvers already kept them inside. The fit, silent, is at the
    derivative-free fit's optimum (-2 log L; each fixed effect within 1e-3 of its own SE, the slope's 1e-4 of the
    intercept's)."""
    model = mlv.Model("y ~ x + offset(lexp) + (1 | g)", exposure_counts(0), family="poisson")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fit = model.fit(nAGQ=nagq, warn=False)
    assert np.isfinite(fit.deviance)
    if nagq == 1:
        monkeypatch.setattr(ScalarPirls, "applies", staticmethod(lambda design: False))
        free = model.fit(warn=False)
        assert fit.deviance <= free.deviance * (1 + 1e-9)
        assert fit.deviance == pytest.approx(free.deviance, rel=1e-6)
        np.testing.assert_array_less(np.abs(fit.beta - free.beta), 1e-3 * fit.fixed_effects["std_error"].to_numpy())


def probit_crossed(seed: int) -> pd.DataFrame:
    """2000 0/1 responses by probit, a's 60 intercepts of SD 0.03 crossed with b's 25 of SD 0.72 (probit scale)."""
    rng = np.random.default_rng(seed)
    a, b, x = rng.integers(0, 60, 2000), rng.integers(0, 25, 2000), rng.normal(size=2000)
    eta = 0.6 * (-0.2 + 0.5 * x + rng.normal(0, 0.05, 60)[a] + rng.normal(0, 1.2, 25)[b])
    y = rng.binomial(1, ndtr(eta))
    return pd.DataFrame({"y": y, "x": x, "a": a.astype(str), "b": b.astype(str)})


def test_variance_held_at_zero_leaves_for_an_optimum_nearer_than_the_probe():
    """-2 log L is even in a scalar term's theta, so L-BFGS-B stops at theta = 0 with slope 0 and the KKT check reads
    the slope at a probe 0.01 inside. Here the optimum is at ~0.007 and the slope at the probe is already up: the fit
    reported theta 0 ('boundary (singular) fit') with -2 log L 1.8e-5 above the same objective at theta 0.0067 and the
    fit's other parameters. No point on a grid of a's theta (1e-4 to 0.02) may be lower than the fit."""
    fit = mlv.Model("y ~ x + (1 | a) + (1 | b)", probit_crossed(18), family="binomial(probit)").fit(warn=False)
    grid = np.geomspace(1e-4, 2e-2, 30)
    lowest = min(fit.deviance_at([t, fit.theta[1]], fit.beta) for t in grid)
    assert fit.deviance <= lowest + 1e-8
    assert fit.theta[0] > 0 and not any("boundary" in m for m in fit.warnings)


def poisson_slopes(seed: int, n: int = 1500, groups: int = 40) -> pd.DataFrame:
    """Counts with correlated random intercepts (SD 1.5) and slopes (SD 0.8, correlation -0.6) over 40 groups."""
    rng = np.random.default_rng(seed)
    g, x, z = rng.integers(0, groups, n), rng.normal(size=n), rng.normal(size=(groups, 2))
    b0, b1 = 1.5 * z[:, 0], 0.8 * (-0.6 * z[:, 0] + 0.8 * z[:, 1])
    y = rng.poisson(np.exp(np.clip(0.1 + 0.4 * x + b0[g] + b1[g] * x, -20, 6)))
    return pd.DataFrame({"y": y, "x": x, "g": g.astype(str)})


def value_hessian_se(fit, h: float = 5e-3) -> np.ndarray:
    """The fixed effects' SEs from the Hessian of -2 log L in (theta, beta) by central second differences of the
    objective's values (`deviance_at`): no gradient, no PIRLS tolerance in the differences (error O(h^2) ~1e-6)."""
    x0, nt = np.concatenate([fit.theta, fit.beta]), len(fit.theta)
    n, E = len(x0), np.eye(len(x0)) * h
    H = np.zeros((n, n))
    for i in range(n):
        for j in range(i, n):
            H[i, j] = H[j, i] = sum(s * t * fit.deviance_at(*np.split(x0 + s * E[i] + t * E[j], [nt]))
                                    for s in (1, -1) for t in (1, -1)) / (4 * h * h)
    return np.sqrt(np.diag(2 * np.linalg.inv(H)))[nt:]


@pytest.mark.parametrize("seed", [3, 6])
def test_standard_errors_from_the_gradient_match_the_objectives_own_curvature(seed):
    """The Hessian is forward differences (step 3e-5) of the exact gradient, whose modes PIRLS stopped at STEP_TOL: the
    gradient moved ~1e-7 with the modes' start, and the SEs of a Poisson random-slope fit were 1e-4 to 1.4e-3 off those
    from the objective's values (these seeds: 7.6e-4 and 1.4e-3). Within 1e-4 (glmm.py's FORWARD_HESSIAN_STEP)."""
    fit = mlv.Model("y ~ x + (1 + x | g)", poisson_slopes(seed), family="poisson").fit(warn=False)
    np.testing.assert_allclose(fit.fixed_effects["std_error"].to_numpy(), value_hessian_se(fit), rtol=1e-4)


def test_deviance_at_the_fits_own_parameters_is_its_deviance_when_a_slope_is_held_rescaled():
    """A random slope in a covariate around 1000 is held centred and scaled (`Scaling`); `deviance_at` took theta in
    the user's columns while `fit.theta` is as PIRLS holds it, so `deviance_at(fit.theta, fit.beta)` gave another
    model's value (543.44 against 142.64 on a cross-check data set), silently."""
    rng = np.random.default_rng(92)
    g = np.repeat(np.arange(15), 12)
    x = 1000 + rng.normal(0, 2, g.size)
    eta = -1 + 0.3 * (x - 1000) + rng.normal(0, 0.5, 15)[g] + rng.normal(0, 0.2, 15)[g] * (x - 1000)
    data = pd.DataFrame({"y": rng.poisson(np.exp(eta)), "x": x, "g": g})
    fit = mlv.Model("y ~ x + (1 + x | g)", data, family="poisson").fit(warn=False)
    assert fit.held.random_held  # the case: the slope's column held rescaled
    assert fit.deviance_at(fit.theta, fit.beta) == pytest.approx(fit.deviance, rel=1e-9)
    moved = fit.theta * np.array([1.1, 1.0, 0.9])  # and elsewhere it is the objective there, above the optimum
    assert fit.deviance_at(moved, fit.beta) > fit.deviance
