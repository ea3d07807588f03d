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
