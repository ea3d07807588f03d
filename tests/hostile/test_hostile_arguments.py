"""Arguments: every bad value raises our error naming the argument (and the fix), never a numpy, pandas or
formulaic traceback; good values give the right numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hostile_support import grouped, refused, warned, sleep_fit, sleep_post  # noqa: F401 (fixtures)
from scipy import stats

import multilevel as mlv
from multilevel import dense_memory
from multilevel.errors import FormulaError

BAD_LEVELS = [95, 95.0, 0, 1, 1.0, -0.5, 1.5, float("nan"), float("inf"), "0.95", None, True, [0.9]]


@pytest.mark.parametrize("level", BAD_LEVELS, ids=repr)
def test_confint_level_outside_0_1(sleep_fit, level):
    refused(lambda: sleep_fit.confint(level=level), "level", "between 0 and 1")


def test_confint_level_95_suggests_095(sleep_fit):
    refused(lambda: sleep_fit.confint(level=95), "0.95")


@pytest.mark.parametrize("level", [95, 0, 1.5, "0.9"], ids=repr)
@pytest.mark.parametrize("call", ["icc", "r2", "profile"])
def test_other_levels_outside_0_1(sleep_fit, call, level):
    calls = {"icc": lambda: sleep_fit.icc(level=level), "r2": lambda: sleep_fit.r2(level=level),
             "profile": lambda: sleep_fit.confint("profile", level=level)}
    refused(calls[call], "level")


@pytest.mark.parametrize("prob", [95, 0, 1, -1], ids=repr)
def test_posterior_summary_prob(sleep_post, prob):
    refused(lambda: sleep_post.summary(prob=prob), "prob")


@pytest.mark.parametrize("level", [0.5, 0.9, 0.99])
def test_wald_interval_numbers(sleep_fit, level):
    ci = sleep_fit.confint(level=level)
    fe = sleep_fit.fixed_effects
    half = stats.norm.ppf(0.5 + level / 2) * fe["std_error"]
    np.testing.assert_allclose(ci["upper"] - ci["lower"], 2 * half, rtol=1e-12)


@pytest.mark.parametrize("n", [-1, 0, 2.5, 2.0, "3", True, None], ids=repr)
def test_simulate_counts(sleep_fit, n):
    refused(lambda: sleep_fit.simulate(n=n), "n", "whole number")


@pytest.mark.parametrize("seed", ["abc", -1, 1.5, 2**64, [1, "a"]], ids=repr)
def test_simulate_seeds(sleep_fit, seed):
    refused(lambda: sleep_fit.simulate(n=1, seed=seed), "seed")


@pytest.mark.parametrize("seed", [0, 7, np.int64(7), np.random.default_rng(7)], ids=["0", "7", "np7", "generator"])
def test_simulate_good_seeds(sleep_fit, seed):
    y = sleep_fit.simulate(n=2, seed=seed)
    assert y.shape == (2, 180) and np.all(np.isfinite(y))


def test_simulate_seed_repeats(sleep_fit):
    np.testing.assert_array_equal(sleep_fit.simulate(3, seed=5), sleep_fit.simulate(3, seed=5))


@pytest.mark.parametrize("n", [-1, 0, 2.5, "10"], ids=repr)
def test_ppc_and_bootstrap_counts(sleep_fit, n):
    refused(lambda: sleep_fit.ppc(n=n), "n")
    refused(lambda: sleep_fit.bootstrap(n=n), "n")


@pytest.mark.parametrize("seed", ["x", -3, 0.5], ids=repr)
def test_bootstrap_seeds(sleep_fit, seed):
    refused(lambda: sleep_fit.bootstrap(n=2, seed=seed), "seed")


@pytest.mark.parametrize("prior", ["bogus", 3, ["b"], ("sigma", 1)], ids=repr)
def test_sample_prior_not_a_dict(prior):
    model = mlv.Model("y ~ x + (1 | g)", grouped())
    refused(lambda: model.sample(prior=prior, sampler="gibbs", draws=10, warmup=50), "prior must be a dict")


@pytest.mark.parametrize("kwargs,word", [
    ({"chains": 0}, "chains"), ({"chains": 2.0}, "chains"), ({"draws": -5}, "draws"), ({"draws": "100"}, "draws"),
    ({"warmup": 10}, "warmup"), ({"cores": 0}, "cores"), ({"seed": "abc"}, "seed"), ({"seed": -1}, "seed"),
    ({"seed": np.random.default_rng(1)}, "seed"), ({"sampler": "hmc"}, "sampler"), ({"prior": {"b": 3}}, "mlv.prior"),
    ({"prior": {"nonsense": mlv.prior.normal(0, 1)}}, "nonsense"),
], ids=lambda v: str(v) if isinstance(v, str) else None)
def test_sample_arguments(kwargs, word):
    model = mlv.Model("y ~ x + (1 | g)", grouped())
    refused(lambda: model.sample(**{"sampler": "gibbs", "draws": 10, "warmup": 50, **kwargs}), word)


@pytest.mark.parametrize("kwargs,word", [({"method": "OLS"}, "method"), ({"prior": "flat"}, "prior"), ({"method": 3}, "method")])
def test_fit_arguments(kwargs, word):
    refused(lambda: mlv.Model("y ~ x + (1 | g)", grouped()).fit(**kwargs), word)


@pytest.mark.parametrize("method", ["wald", "WALD", "Wald"])
def test_confint_method_any_case(sleep_fit, method):
    assert list(sleep_fit.confint(method).columns) == ["estimate", "lower", "upper"]


@pytest.mark.parametrize("method", ["bootstrap", 3, None], ids=repr)
def test_confint_unknown_method(sleep_fit, method):
    refused(lambda: sleep_fit.confint(method), "method")


def weighted():
    return grouped().assign(w=np.tile([1.0, 2.0], 30))


@pytest.mark.parametrize("given", ["w", np.tile([1.0, 2.0], 30)], ids=["column", "array"])
def test_weights_twice(given):
    refused(lambda: mlv.Model("y | weights(w) ~ x + (1 | g)", weighted(), weights=given), "weights", "twice")


def test_weights_once_either_way_agree():
    a = mlv.Model("y | weights(w) ~ x + (1 | g)", weighted()).fit(warn=False)
    b = mlv.Model("y ~ x + (1 | g)", weighted(), weights="w").fit(warn=False)
    assert a.objective == b.objective and np.array_equal(a.theta, b.theta)


@pytest.mark.parametrize("expr", ["x", "log(w)"])
def test_offset_in_formula_equals_the_argument(expr):
    """lme4's offset(...) in the formula is the same model as offset= (formula offsets came with the GLMMs)."""
    data = weighted()
    in_formula = mlv.Model(f"y ~ x + offset({expr}) + (1 | g)", data).fit(warn=False)
    values = data["x"] if expr == "x" else np.log(data["w"])
    as_argument = mlv.Model("y ~ x + (1 | g)", data, offset=np.asarray(values, float)).fit(warn=False)
    assert in_formula.objective == pytest.approx(as_argument.objective, rel=1e-12)
    np.testing.assert_allclose(in_formula.beta, as_argument.beta, rtol=1e-10)


@pytest.mark.parametrize("formula", ["y ~ .", "y ~ . + (1 | g)", "y ~ . - x + (1 | g)", "y ~ x + (. | g)"])
def test_r_dot_is_refused_in_our_words(formula):
    with pytest.raises(FormulaError) as info:
        mlv.Model(formula, weighted())
    message = str(info.value)
    assert "not supported" in message and "name the predictors" in message and "formulaic" not in message


@pytest.mark.parametrize("formula", ["y ~ x + I(x * .5) + (1 | g)", "y ~ I(x + 0.5) + (1 | g)"])
def test_decimal_points_are_not_dots(formula):
    assert mlv.Model(formula, weighted()).nobs == 60


def crossed(items: int) -> pd.DataFrame:
    """Two crossed factors, every subject seeing a few items."""
    rng = np.random.default_rng(2)
    n = 4 * items
    return pd.DataFrame({"y": rng.normal(size=n), "s": rng.integers(0, items, n), "i": rng.integers(0, items, n)})


def test_crossed_dense_block_refused_with_its_size(monkeypatch):
    monkeypatch.setattr(dense_memory, "available_bytes", lambda: 50 * 2**20)
    monkeypatch.setattr(dense_memory, "WARN_BYTES", 2**20)
    model = mlv.Model("y ~ 1 + (1 | s) + (1 | i)", crossed(2000))
    r = min(model.n_levels.values()) + 2  # the term with most levels is eliminated first
    error = refused(model.fit, "dense", f"{r:,} x {r:,}", "GiB", "available")
    assert f"{3 * 8 * r * r / 2**30:.1f} GiB" in str(error)
    assert "solver='iterative'" in str(error)  # the way round it for crossed scalar terms
    refused(lambda: model.sample(sampler="gibbs", draws=10, warmup=50), "dense", "available")


def test_crossed_dense_block_warned_when_it_fits(monkeypatch):
    monkeypatch.setattr(dense_memory, "WARN_BYTES", 2**20)
    model = mlv.Model("y ~ 1 + (1 | s) + (1 | i)", crossed(400))
    warned(lambda: model.engine, r"dense \d+ x \d+ matrix: about .* GiB")


def test_small_crossed_models_are_silent():
    model = mlv.Model("y ~ 1 + (1 | s) + (1 | i)", crossed(100))
    assert dense_memory.dense_size(model.design) == min(model.n_levels.values()) + 2
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.engine


# ---------------------------------------------------------------- found in a second pass (issue 16)
@pytest.fixture(scope="module")
def approximate_fit():
    """The APPROXIMATE (iterative) fit of sleepstudy with a crossed day term."""
    sleep = mlv.datasets.load("sleepstudy")
    data = sleep.assign(day=sleep.Days.astype(str))
    return mlv.Model("Reaction ~ Days + (1 | Subject) + (1 | day)", data).fit(solver="iterative", warn=False)


@pytest.mark.parametrize("level", [95, 0, 1, -0.5, float("nan"), "0.95", None], ids=repr)
def test_approximate_confint_level_outside_0_1(approximate_fit, level):
    """Before: level=95 gave NaN intervals and level=0 intervals of width 0, silently."""
    refused(lambda: approximate_fit.confint(level=level), "level", "between 0 and 1")


def test_approximate_confint_at_90_is_the_wald_interval(approximate_fit):
    ci = approximate_fit.confint(level=0.9)
    se = approximate_fit.fixed_effects["std_error"].to_numpy()
    np.testing.assert_allclose(ci["upper"] - ci["lower"], 2 * stats.norm.ppf(0.95) * se, rtol=1e-12)


@pytest.mark.parametrize("prob", [1.5, 95, 0, "0.9"], ids=repr)
def test_posterior_group_effects_prob_outside_0_1(sleep_post, prob):
    """Before: a numpy 'Quantiles must be in the range [0, 1]' ValueError."""
    refused(lambda: sleep_post.group_effects(prob=prob), "prob", "between 0 and 1")


@pytest.mark.parametrize("seed", ["abc", -1, 1.5, [1, 2]], ids=repr)
@pytest.mark.parametrize("call", ["posterior_predictive", "ppc"])
def test_posterior_predictive_seeds(sleep_post, call, seed):
    """Before: numpy's 'SeedSequence expects int or sequence of ints' TypeError."""
    refused(lambda: getattr(sleep_post, call)(seed=seed), "seed", "whole number")


def test_an_offset_for_a_model_without_one_is_refused(sleep_fit, sleep_post):
    """Before: the offset was silently left out of the predictions."""
    rows = mlv.datasets.load("sleepstudy").head()
    for result in (sleep_fit, sleep_post):
        refused(lambda: result.predict(rows, offset=np.ones(5)), "offset", "fitted without an offset")


def test_text_where_a_numeric_predictor_was_fitted(sleep_fit):
    """Before: pandas' 'could not convert string to float' ValueError."""
    rows = mlv.datasets.load("sleepstudy").head().assign(Days="x")
    refused(lambda: sleep_fit.predict(rows), "'Days'", "numeric", "pd.to_numeric")


def test_numbers_given_as_another_numeric_type_still_predict(sleep_fit):
    rows = mlv.datasets.load("sleepstudy").head()
    np.testing.assert_array_equal(sleep_fit.predict(rows.assign(Days=rows.Days.astype("int32"))), sleep_fit.predict(rows))


@pytest.mark.parametrize("y", ["abc", [["a"] * 180], {"a": 1}], ids=["str", "nested-text", "dict"])
def test_with_response_of_text(y):
    """Before: numpy's 'could not convert string to float' ValueError."""
    model = mlv.Model("Reaction ~ Days + (1 | Subject)", mlv.datasets.load("sleepstudy"))
    refused(lambda: model.with_response(y), "new response", "numbers")


@pytest.mark.parametrize("value", ["abc", None, 3, {"a": 1}], ids=repr)
def test_methods_of_something_not_a_model(value):
    """Before: AttributeError: 'str' object has no attribute 'design'."""
    refused(lambda: mlv.methods(value), "methods takes a model")


@pytest.fixture(scope="module")
def cbpp_fit():
    """glmer's cbpp model."""
    return mlv.Model("cbind(incidence, size - incidence) ~ period + (1 | herd)", mlv.datasets.load("cbpp"),
                     family="binomial").fit(warn=False)


@pytest.mark.parametrize("flag", ["no", "False", 0, 1, None, [True]], ids=repr)
def test_predict_flags_are_true_or_false(sleep_fit, sleep_post, approximate_fit, cbpp_fit, flag):
    """Before: summary="no" or include_groups="False" counted as true and silently gave the other answer."""
    for result in (sleep_fit, sleep_post, approximate_fit, cbpp_fit):
        refused(lambda: result.predict(include_groups=flag), "include_groups", "True or False")
    refused(lambda: sleep_post.predict(summary=flag), "summary", "True or False")


def test_numpy_booleans_are_flags(sleep_fit, sleep_post):
    np.testing.assert_array_equal(sleep_fit.predict(include_groups=np.False_), sleep_fit.predict(include_groups=False))
    assert isinstance(sleep_post.predict(summary=np.True_), pd.DataFrame)
