"""Bad input: every case gets a MultilevelError naming the problem and the fix, never a library traceback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import multilevel as mlv
from multilevel.design import build_design
from multilevel.errors import FormulaError, MultilevelError



def raises(formula, data, *words):
    """Build the design, expect our error, and check the message holds every word; return it."""
    with pytest.raises(MultilevelError) as info:
        build_design(formula, data)
    message = str(info.value)
    for word in words:
        assert word in message, message
    error = info.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)  # none chained
    return message


@pytest.mark.parametrize(
    "formula, wrong, right, where",
    [
        ("Reaction ~ Dayz + (1 | Subject)", "Dayz", "Days", "fixed part"),
        ("Reactio ~ Days + (1 | Subject)", "Reactio", "Reaction", "response"),
        ("Reaction ~ Days + (1 | Subjekt)", "Subjekt", "Subject", "grouping factor"),
        ("Reaction ~ Days + (Dayz | Subject)", "Dayz", "Days", "random term"),
        ("Reaction ~ I(Dayz^2) + (1 | Subject)", "Dayz", "Days", "fixed part"),
        ("Reaction ~ C(Dayz) + (1 | Subject)", "Dayz", "Days", "fixed part"),
        ("Reaction ~ Days:Dayz + (1 | Subject)", "Dayz", "Days", "fixed part"),
        ("Reaction ~ days + (1 | Subject)", "days", "Days", "fixed part"),
    ],
)
def test_unknown_column_names_the_closest_columns(sleep, formula, wrong, right, where):
    raises(formula, sleep, f"column '{wrong}'", where, f"Did you mean '{right}'")


def test_unknown_column_without_close_name_lists_the_columns(sleep):
    raises("Reaction ~ zzz + (1 | Subject)", sleep, "'zzz'", "The columns are: Reaction, Days, Subject")


def test_unknown_function_is_reported(sleep):
    raises("Reaction ~ foo(Days) + (1 | Subject)", sleep, "foo", "fixed part")


def test_syntax_error_is_a_formula_error_with_position(sleep):
    with pytest.raises(FormulaError, match="position 18"):
        build_design("Reaction ~ Days + (1 | Subject", sleep)


@pytest.mark.parametrize("column", ["Subject", "as_text", "as_bool"])
def test_non_numeric_response(sleep, column):
    data = sleep.assign(as_text=sleep.Reaction.astype(str), as_bool=sleep.Reaction > 300)
    raises(f"{column} ~ Days + (1 | Subject)", data, f"response '{column}' is not numeric", "convert it")


def test_grouping_factor_with_one_level(sleep):
    raises("Reaction ~ Days + (1 | g)", sleep.assign(g="only"), "'g' has only 1 level", "at least two groups")


def test_grouping_factor_with_one_level_after_dropping_missing(sleep):
    g = np.where(sleep.Subject.astype(str) == "308", "a", None)
    raises("Reaction ~ Days + (1 | g)", sleep.assign(g=g), "'g' has only 1 level")


def test_no_rows_left_after_dropping_missing(sleep):
    raises("Reaction ~ x + (1 | Subject)", sleep.assign(x=np.nan), "no rows are left", "missing values")


@pytest.mark.parametrize("column", ["Reaction", "x"])
def test_infinite_values(sleep, column):
    data = sleep.assign(x=1.0)
    data[column] = np.where(sleep.Days > 8, -np.inf, data[column])
    raises("Reaction ~ x + (1 | Subject)", data, f"column '{column}' has 18 infinite value(s)", "remove or replace")


def test_infinite_values_made_by_a_transformation(sleep):
    raises("Reaction ~ np.log(Days) + (1 | Subject)", sleep, "18 row(s)", "np.log(Days)", "infinite")


def test_more_random_effects_than_observations(sleep):
    data = sleep.assign(g=np.arange(180) % 100)  # 100 groups x 2 coefficients = 200 > 180 rows
    raises("Reaction ~ Days + (1 + Days | g)", data, "200 random effects for 180 observations")


def test_as_many_levels_as_observations(sleep):
    raises("Reaction ~ 1 + (1 | g)", sleep.assign(g=np.arange(180)), "180 levels for 180 observations")


def test_more_fixed_effects_than_observations():
    data = pd.DataFrame({"y": [1.0, 2, 3, 4], "g": list("aabb"), "f": list("abcd")})
    raises("y ~ f + (1 | g)", data, "only 4 observations for 4 fixed effects")


@pytest.mark.parametrize(
    "formula, term",
    [
        ("Reaction ~ Days + (1 | Subject) + (1 | Subject)", "(1 | Subject)"),
        ("Reaction ~ Days + Days + (1 | Subject)", "'Days'"),
    ],
)
def test_duplicate_terms(sleep, formula, term):
    with pytest.raises(FormulaError, match="appears twice") as info:
        build_design(formula, sleep)
    assert term in str(info.value) and "remove one" in str(info.value)


def test_empty_table(sleep):
    raises("Reaction ~ Days + (1 | Subject)", sleep.iloc[:0], "empty")
    raises("Reaction ~ Days + (1 | Subject)", {}, "empty")


def test_unsupported_data_type():
    raises("y ~ (1 | g)", [1, 2, 3], "pandas or polars DataFrame", "not list")


def test_dict_with_unequal_or_two_dimensional_columns():
    raises("y ~ (1 | g)", {"y": [1.0, 2.0], "g": ["a"]}, "different lengths")
    raises("y ~ (1 | g)", {"y": np.ones((4, 2)), "g": list("aabb")}, "'y'", "one-dimensional")


def test_duplicate_column_names(sleep):
    raises("Reaction ~ Days + (1 | Subject)", pd.concat([sleep, sleep[["Days"]]], axis=1), "duplicate column")


def test_complex_and_date_columns(sleep):
    raises("Reaction ~ x + (1 | Subject)", sleep.assign(x=sleep.Days + 1j), "'x' holds complex numbers")
    dates = pd.date_range("2020-01-01", periods=180)
    raises("Reaction ~ x + (1 | Subject)", sleep.assign(x=dates), "'x' holds dates", "days since")


def test_bad_weights(sleep):
    with pytest.raises(MultilevelError, match="weights must be positive"):
        build_design("Reaction ~ Days + (1 | Subject)", sleep, weights=np.full(180, -1.0))
    with pytest.raises(MultilevelError, match="weights has 3 values for 180 rows"):
        build_design("Reaction ~ Days + (1 | Subject)", sleep, weights=[1.0, 2.0, 3.0])
    with pytest.raises(MultilevelError, match="Did you mean"):
        build_design("Reaction ~ Days + (1 | Subject)", sleep, weights="Dayz")


def test_no_random_term_is_refused_by_the_model(sleep):
    with pytest.raises(MultilevelError, match="no random term"):
        mlv.Model("Reaction ~ Days", sleep).fit()


@pytest.mark.parametrize("formula, where", [
    ("Reaction ~ Days + f + (1 | Subject)", "the fixed part"),
    ("Reaction ~ Days + flag + (1 | Subject)", "the fixed part"),
    ("Reaction ~ Days + (f | Subject)", "the random term"),
])
def test_a_factor_with_one_level_is_refused_not_dropped(formula, where):
    """R's contrasts refuse a one-level factor; coded by treatment contrasts it would silently vanish from the model."""
    sleep = mlv.datasets.load("sleepstudy").assign(f="a", flag=True)
    message = raises(formula, sleep, "has one level", where, "Drop it")
    assert "'f'" in message or "'flag'" in message


def test_a_one_level_factor_is_refused_in_glmm_partitioned_data_and_occupancy():
    dd = pytest.importorskip("dask.dataframe")
    cbpp = mlv.datasets.load("cbpp").assign(f=lambda d: np.where(d.index < 3, "b", "a"), y=lambda d: d["incidence"])
    cbpp.loc[cbpp.index < 3, "incidence"] = np.nan  # the only rows of level 'b' go
    with pytest.raises(MultilevelError, match="'f' in the fixed part has one level"):
        mlv.Model("cbind(incidence, size - incidence) ~ period + f + (1 | herd)", cbpp, family="binomial")
    sleep = mlv.datasets.load("sleepstudy").assign(f="a")
    with pytest.raises(MultilevelError, match="'f' in the fixed part has one level"):  # partitioned: after its levels pass
        mlv.Model("Reaction ~ Days + f + (1 | Subject)", dd.from_pandas(sleep, npartitions=2))
    pcru = mlv.datasets.load("pcru_occupancy").assign(habitat="forest")
    with pytest.raises(MultilevelError, match="'habitat' in the fixed part has one level"):
        mlv.Occupancy("~ habitat", "~ 1", pcru)
