"""Shifts and scalings of the response and of predictors change no estimate beyond 1e-6 relative (issue 16).

A shifted fit of y + c is compared with the fit of (y + c) - c: the same numbers, which the subtraction recovers
exactly (both are near c). Storing y + c already rounds each value to the spacing of doubles at c; that loss is
the data's, and it is what the lost-digits warning reports. Intercepts that absorb a shift are compared to within
that spacing too (a double near 1e12 holds 4 decimals).
"""

from __future__ import annotations

from functools import lru_cache

import dask.dataframe as dd
import numpy as np
import pytest

import multilevel as mlv
from multilevel.errors import MultilevelWarning
from multilevel.lmm import precision_message

TOL = 1e-6
MODELS = {
    "sleepstudy slopes REML": ("Reaction ~ 1 + Days + (1 + Days | Subject)", "sleepstudy", "REML"),
    "sleepstudy slopes ML": ("Reaction ~ 1 + Days + (1 + Days | Subject)", "sleepstudy", "ML"),
    "Dyestuff": ("Yield ~ 1 + (1 | Batch)", "Dyestuff", "REML"),
    "Penicillin": ("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin", "REML"),
    "radon slopes": ("log_radon ~ floor + (1 + floor | county)", "radon", "REML"),
    "Hsb82 null": ("mAch ~ 1 + (1 | school)", "Hsb82", "REML"),
}
PREDICTORS = {  # predictors that enter the fixed part only (a random slope's covariate is another matter: below)
    "sleepstudy intercepts": ("Reaction ~ 1 + Days + (1 | Subject)", "sleepstudy", "REML", "Days"),
    "Hsb82 context": ("mAch ~ meanses + cses + (1 + cses | school)", "Hsb82", "REML", "meanses"),
}


@lru_cache(maxsize=None)
def data(name: str):
    return mlv.datasets.load(name)


def fit(formula: str, frame, method: str = "REML"):
    return mlv.Model(formula, frame).fit(method=method, warn=False)


@lru_cache(maxsize=None)
def base_fit(formula: str, dataset: str, method: str):
    return fit(formula, data(dataset), method)


def close(actual, expected, rel=TOL, floor=0.0):
    """Each entry within rel of its expected value (plus an absolute floor)."""
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    assert np.all(np.abs(actual - expected) <= rel * np.abs(expected) + floor), (actual, expected)


def close_vector(actual, expected, rel=TOL):
    """The vector within rel of its largest entry (theta: a near-zero correlation parameter has no relative digits)."""
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    assert np.max(np.abs(actual - expected)) <= rel * np.max(np.abs(expected)), (actual, expected)


def assert_same_fit(f, f0, *, y_scale=1.0, shift=None, x_scale=None, criterion_shift=0.0, intercept_se=True):
    """f on transformed data against f0: theta, sigma, criterion, beta (the transformation undone), SEs and variance
    components. `shift`: {coefficient: amount it absorbs}; `x_scale`: (column, factor it was multiplied by);
    `intercept_se=False` when a predictor was shifted (the intercept then is the mean response at another x)."""
    close_vector(f.theta, f0.theta)
    close(f.sigma / y_scale, f0.sigma)
    close(f.objective - criterion_shift, f0.objective)
    beta, se = f.beta.copy() / y_scale, f.fixed_effects["std_error"].to_numpy() / y_scale
    floor = np.zeros_like(beta)
    for name, amount in (shift or {}).items():
        j = f.model.fixed_names.index(name)
        floor[j] = 4 * np.spacing(abs(f.beta[j]) + abs(amount)) / y_scale
        beta[j] -= amount / y_scale
    if x_scale:
        j = f.model.fixed_names.index(x_scale[0])
        beta[j], se[j] = beta[j] * x_scale[1], se[j] * x_scale[1]
    close(beta, f0.beta, floor=floor)
    keep = [intercept_se or n != "(Intercept)" for n in f.model.fixed_names]
    close(se[keep], f0.fixed_effects["std_error"].to_numpy()[keep])
    vc, vc0 = f.variance_components, f0.variance_components
    close(vc["sd"].dropna().to_numpy() / y_scale, vc0["sd"].dropna().to_numpy())  # covariance rows have no sd
    close(vc["corr"].fillna(0).to_numpy(), vc0["corr"].fillna(0).to_numpy(), rel=0, floor=TOL)


def nu(f) -> int:
    """The criterion's degrees of freedom: n for ML, n - p for REML."""
    return f.model.nobs - (f.model.design.p if f.method == "REML" else 0)


@pytest.mark.parametrize("c", [1e3, 1e6, 1e9, 1e12])
@pytest.mark.parametrize("key", list(MODELS))
def test_response_shift(key, c):
    formula, dataset, method = MODELS[key]
    response = formula.split("~")[0].strip()
    shifted = data(dataset).assign(**{response: data(dataset)[response] + c})
    same = shifted.assign(**{response: shifted[response] - c})
    f, f0 = fit(formula, shifted, method), fit(formula, same, method)
    assert_same_fit(f, f0, shift={"(Intercept)": c})
    y = shifted[response].to_numpy()
    lost = np.finfo(float).eps * abs(y.mean()) > 1e-4 * y.std()  # stored to less than 1e-4 of the spread: radon, Penicillin at 1e12
    assert [w for w in f.warnings if w not in f0.warnings] == ([precision_message("the response")] if lost else [])
    theta = base_fit(formula, dataset, method).theta  # and at one theta the criterion agrees to rounding
    reml = method == "REML"
    assert f.model.engine.objective(theta, reml) == pytest.approx(f0.model.engine.objective(theta, reml), rel=1e-12)


@pytest.mark.parametrize("s", [1e-8, 1e8])
@pytest.mark.parametrize("key", list(MODELS))
def test_response_scale(key, s):
    formula, dataset, method = MODELS[key]
    response = formula.split("~")[0].strip()
    f0 = base_fit(formula, dataset, method)
    f = fit(formula, data(dataset).assign(**{response: data(dataset)[response] * s}), method)
    assert_same_fit(f, f0, y_scale=s, criterion_shift=nu(f0) * np.log(s**2))


@pytest.mark.parametrize("c", [1e3, 1e6, 1e9, 1e12])
@pytest.mark.parametrize("key", list(PREDICTORS))
def test_predictor_shift(key, c):
    formula, dataset, method, x = PREDICTORS[key]
    shifted = data(dataset).assign(**{x: data(dataset)[x] + c})
    same = shifted.assign(**{x: shifted[x] - c})
    f, f0 = fit(formula, shifted, method), fit(formula, same, method)
    slope = f.beta[f.model.fixed_names.index(x)]
    assert_same_fit(f, f0, shift={"(Intercept)": -slope * c}, intercept_se=False)  # y = b0 + b x = (b0 - b c) + b (x + c)


@pytest.mark.parametrize("s", [1e-8, 1e8])
@pytest.mark.parametrize("key", list(PREDICTORS))
def test_predictor_scale(key, s):
    formula, dataset, method, x = PREDICTORS[key]
    f0 = base_fit(formula, dataset, method)
    f = fit(formula, data(dataset).assign(**{x: data(dataset)[x] * s}), method)
    assert_same_fit(f, f0, x_scale=(x, s), criterion_shift=2 * np.log(s) if method == "REML" else 0.0)  # log|R_X|^2


def test_partitioned_data_shifted():
    """The Dask path centres with centres from the levels pass's rows: the same fit as in memory, shifted or not."""
    formula, dataset, method = MODELS["sleepstudy slopes REML"]
    c = 1e9
    shifted = data(dataset).assign(Reaction=data(dataset).Reaction + c)
    parts = dd.from_pandas(shifted.sample(frac=1, random_state=3), npartitions=3, sort=False)
    f = mlv.Model(formula, parts).fit(warn=False)
    f0 = fit(formula, shifted.assign(Reaction=shifted.Reaction - c))
    assert_same_fit(f, f0, shift={"(Intercept)": c})


def test_cell_means_absorb_a_response_shift():
    """Without an intercept, a full set of dummies (X u = 1) absorbs a shift of y in every coefficient."""
    sleep = data("sleepstudy").assign(half=lambda d: np.where(d.Days >= 5, "late", "early"))
    formula, c = "Reaction ~ 0 + half + Days + (1 | Subject)", 1e9
    shifted = sleep.assign(Reaction=sleep.Reaction + c)
    f, f0 = fit(formula, shifted), fit(formula, shifted.assign(Reaction=shifted.Reaction - c))
    assert f.model.cross_products.scaling.centre[-1] != 0  # the response was centred
    assert_same_fit(f, f0, shift={"halfearly": c, "halflate": c})


def test_without_a_constant_column_only_scaling():
    """`0 + x` cannot absorb a shift: nothing is centred (that would change the model), and scaling is exact."""
    formula, s = "Reaction ~ 0 + Days + (1 | Subject)", 1e8
    sleep = data("sleepstudy")
    f0 = fit(formula, sleep)
    assert not np.any(f0.model.cross_products.scaling.centre)
    f = fit(formula, sleep.assign(Reaction=sleep.Reaction * s))
    assert_same_fit(f, f0, y_scale=s, criterion_shift=nu(f0) * np.log(s**2))


def test_hopeless_shift_warns():
    """y + 1e17: the stored values are rounded to 16, a third of the spread: the data lost the digits; say so."""
    sleep = data("sleepstudy")
    model = mlv.Model("Reaction ~ 1 + Days + (1 + Days | Subject)", sleep.assign(Reaction=sleep.Reaction + 1e17))
    with pytest.warns(MultilevelWarning, match="the response lies so far from zero .* lost digits"):
        model.fit()


def test_random_slope_far_from_zero_warns():
    """A random slope's covariate far from zero: the intercept's variance refers to a point outside the data."""
    sleep = data("sleepstudy")
    model = mlv.Model("Reaction ~ 1 + Days + (1 + Days | Subject)", sleep.assign(Days=sleep.Days + 1e5))
    fit_ = model.fit(warn=False)
    assert any("Centre 'Days'" in w for w in fit_.warnings)
    assert not any("Centre" in w for w in base_fit("Reaction ~ 1 + Days + (1 + Days | Subject)", "sleepstudy", "REML").warnings)


def test_a_random_slope_covariate_far_from_zero_warns_instead_of_crashing():
    """Days + 1e12 in a random slope: the first block's factor loses definiteness to rounding; the fit reports it
    (not converged, the far-covariate warning) instead of raising numpy's LinAlgError."""
    import warnings

    import multilevel as mlv

    data = mlv.datasets.load("sleepstudy")
    data = data.assign(Days=data["Days"] + 1e12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no numpy warning leaks either
        fit = mlv.Model("Reaction ~ Days + (Days | Subject)", data).fit(warn=False)
    assert not fit.converged
    assert any("averaging 1e+12" in w for w in fit.warnings)
