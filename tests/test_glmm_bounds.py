"""GLMM fits with the exact gradient whose L-BFGS-B stops on a variance's bound 0: resumed by gradient (the KKT check of
`optimize.lbfgsb`), never handed over to BOBYQA, at BOBYQA's optimum."""

import numpy as np
import pandas as pd
import pytest

import multilevel as mlv
from conftest import assert_same_optimum
from multilevel import glmm, optimize
from multilevel.laplace_gradient import ScalarTermsGradient
from multilevel.scalar_pirls import ScalarPirls
from multilevel.vector_pirls import VectorTermGradient


def binary(seed: int, formula: str, sd_h: float = 0.0) -> mlv.Model:
    """500 (600 with a random slope) simulated binary rows: g's intercept SD 0 when it is the only term, else h's sd_h."""
    rng = np.random.default_rng(seed)
    if "x | g" in formula:
        g, h, x = np.repeat(np.arange(60), 10), rng.integers(0, 25, 600), rng.normal(size=600)
        eta = 0.3 + 0.5 * x + rng.normal(0, 0.6, 60)[g] + rng.normal(0, 0.4, 60)[g] * x + rng.normal(0, sd_h, 25)[h]
    elif "h)" in formula:
        g, h, x = rng.integers(0, 30, 500), rng.integers(0, 20, 500), rng.normal(size=500)
        eta = -0.3 + 0.6 * x + rng.normal(0, 0.7, 30)[g] + rng.normal(0, sd_h, 20)[h]
    else:
        g, x = rng.integers(0, 30, 500), rng.normal(size=500)
        h, eta = g, -0.3 + 0.6 * x + rng.normal(0, 0.0, 30)[g]
    y = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    return mlv.Model(formula, pd.DataFrame({"y": y, "x": x, "g": g.astype(str), "h": h.astype(str)}), family="binomial")


def gradient_fit(model, monkeypatch):
    """The fit with the gradient, BOBYQA refused for gradient objectives; with its gradients and the resumptions."""
    original, off_bounds = optimize.bobyqa, optimize._off_bounds
    counts = {"gradients": 0, "resumed": 0}

    def refused(fun, *args, **kwargs):
        assert not (isinstance(fun, glmm.GlmmObjective) and fun.has_gradient), "BOBYQA took over a gradient fit"
        return original(fun, *args, **kwargs)

    def counted_off_bounds(*args):
        start = off_bounds(*args)
        counts["resumed"] += start is not None
        return start

    gradient = glmm.GlmmObjective._value_and_gradient

    def counted_gradient(self, x, *tol):
        counts["gradients"] += 1
        return gradient(self, x, *tol)

    monkeypatch.setattr(optimize, "bobyqa", refused)
    monkeypatch.setattr(glmm, "bobyqa", refused)
    monkeypatch.setattr(optimize, "_off_bounds", counted_off_bounds)
    monkeypatch.setattr(glmm.GlmmObjective, "_value_and_gradient", counted_gradient)
    fit = model.fit(warn=False)
    monkeypatch.undo()
    return fit, counts


def derivative_free_fit(model, monkeypatch):
    """The same model fitted by BOBYQA (no solver with a gradient applies)."""
    for solver in (ScalarPirls, ScalarTermsGradient, VectorTermGradient):
        monkeypatch.setattr(solver, "applies", staticmethod(lambda design: False))
    fit = model.fit(warn=False)
    monkeypatch.undo()
    return fit


# (seed, formula, sd of h): L-BFGS-B first stops with a theta at 0 where the optimum has it positive. Measured: BOBYQA
# then took 35, 45 and 84 values beside 14, 17 and 19 gradients; resumed L-BFGS-B takes 26, 30 and 32 gradients
CASES = [(1, "y ~ x + (1 | g)", 0.0), (8, "y ~ x + (1 | g) + (1 | h)", 0.1), (1, "y ~ x + (1 + x | g) + (1 | h)", 0.0)]


@pytest.mark.parametrize("seed, formula, sd_h", CASES)
def test_gradient_fit_leaves_a_variance_bound_by_gradient_at_bobyqas_optimum(seed, formula, sd_h, monkeypatch):
    """L-BFGS-B stops on theta = 0 (the even objective's slope there is 0 whatever the optimum); the slope 0.01 inside
    says the objective falls off the bound, so L-BFGS-B resumes there: no BOBYQA, under 45 gradients (measured 26-32),
    -2 log L no higher than BOBYQA's (1e-9) and within issue 12's tolerances of it, the variance left positive."""
    model = binary(seed, formula, sd_h)
    fit, counts = gradient_fit(model, monkeypatch)
    assert counts["resumed"] >= 1
    assert counts["gradients"] < 45
    free = derivative_free_fit(model, monkeypatch)
    assert_same_optimum(fit, free)
    assert not fit.is_singular and fit.warnings == []


@pytest.mark.parametrize("seed, formula", [(0, "y ~ x + (1 | g)"), (0, "y ~ x + (1 | g) + (1 | h)")])
def test_gradient_fit_keeps_a_variance_at_zero_where_the_slope_inside_rises(seed, formula, monkeypatch):
    """A true SD of 0 and a fit that stays there: the slope inside the bound is positive (KKT), L-BFGS-B is not resumed,
    BOBYQA is not called, and the singular optimum is BOBYQA's (no higher)."""
    model = binary(seed, formula)
    fit, counts = gradient_fit(model, monkeypatch)
    assert counts["resumed"] == 0
    assert fit.is_singular and fit.theta[-1] == 0.0
    free = derivative_free_fit(model, monkeypatch)
    assert_same_optimum(fit, free)


def test_a_far_newton_step_resumes_the_gradient_search_not_bobyqa(cbpp, monkeypatch):
    """Every final Newton step counted far (NEWTON_TRUST 0): stage 2 resumes L-BFGS-B from the Newton point instead of
    BOBYQA, and the fit is still cbpp's derivative-free optimum."""
    model = mlv.Model("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")
    searches, search = [], glmm._gradient_search
    monkeypatch.setattr(glmm, "_gradient_search", lambda *args: searches.append(1) or search(*args))
    monkeypatch.setattr(glmm, "NEWTON_TRUST", 0.0)
    fit, _ = gradient_fit(model, monkeypatch)
    assert len(searches) == 2 and fit.warnings == []
    assert_same_optimum(fit, derivative_free_fit(model, monkeypatch))
