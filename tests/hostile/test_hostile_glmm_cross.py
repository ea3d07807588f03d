"""Hostile GLMM fits found by cross-checking the maximum-likelihood fits against an independent implementation: each
test checks the fit against mathematics or against our own independent paths (the derivative-free fit, the same
objective at two points), never against numbers the fit itself produced."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

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

