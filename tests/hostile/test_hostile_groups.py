"""Identity of groups: an id names one group whatever its type (int, float 1.0, numpy, Python big int, text that
reads the same), in the fit and in predict alike; ids that cannot be told apart exactly are warned about."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hostile_support import grouped, warned

import multilevel as mlv

BIG = 2**70  # beyond int64 and far beyond a float's exact integers


def with_ids(ids) -> pd.DataFrame:
    return grouped().assign(g=pd.Series(list(ids), dtype=object))


def fit_of(frame):
    return mlv.Model("y ~ x + (1 | g)", frame).fit(warn=False)


@pytest.fixture(scope="module")
def reference():
    """The fit with plain int64 ids 0..11."""
    return fit_of(grouped())


def codes(frame):
    return frame["g"].to_numpy()


ID_TYPES = {
    "float": lambda g: g.astype(float),
    "int32": lambda g: g.astype(np.int32),
    "uint64": lambda g: g.astype(np.uint64),
    "nullable": lambda g: pd.array(g, dtype="Int64"),
    "object-int": lambda g: pd.Series([int(v) for v in g], dtype=object),
    "object-float": lambda g: pd.Series([float(v) for v in g], dtype=object),
    "object-mixed-num": lambda g: pd.Series([int(v) if v % 2 else float(v) for v in g], dtype=object),
    "numpy-objects": lambda g: pd.Series([np.int64(v) for v in g], dtype=object),
}


@pytest.mark.parametrize("kind", list(ID_TYPES))
def test_numeric_ids_fit_as_int_ids(reference, kind):
    frame = grouped().assign(g=ID_TYPES[kind](grouped()["g"].to_numpy()))
    fit = fit_of(frame)
    assert fit.objective == pytest.approx(reference.objective, rel=1e-12)
    assert list(fit.group_effects["level"]) == list(reference.group_effects["level"])


@pytest.mark.parametrize("fitted", list(ID_TYPES))
@pytest.mark.parametrize("new", ["float", "object-int", "text"])
def test_predict_matches_ids_across_types(fitted, new):
    g = grouped()["g"].to_numpy()
    fit = fit_of(grouped().assign(g=ID_TYPES[fitted](g)))
    other = {"text": lambda v: v.astype(str), **ID_TYPES}[new](g)
    np.testing.assert_allclose(fit.predict(grouped().assign(g=other)), fit.fitted(), rtol=1e-13)


def test_big_integer_ids_stay_distinct():
    ids = [BIG + int(v) for v in grouped()["g"]]
    model = mlv.Model("y ~ x + (1 | g)", with_ids(ids))
    assert model.n_levels == {"g": 12}
    fit = model.fit(warn=False)
    assert list(fit.group_effects["level"]) == [str(BIG + i) for i in range(12)]
    np.testing.assert_allclose(fit.predict(with_ids(ids)), fit.fitted(), rtol=1e-13)


def test_big_integer_ids_fit_as_small_ones(reference):
    fit = fit_of(with_ids([BIG + int(v) for v in grouped()["g"]]))
    assert fit.objective == pytest.approx(reference.objective, rel=1e-12)


def test_big_integer_ids_in_new_data_are_new_groups():
    fit = fit_of(with_ids([BIG + int(v) for v in grouped()["g"]]))
    shifted = with_ids([BIG + 100 + int(v) for v in grouped()["g"]])
    np.testing.assert_allclose(fit.predict(shifted), fit.predict(shifted, include_groups=False), rtol=1e-13)


def test_int64_ids_beyond_float_precision_stay_distinct():
    ids = 2**60 + grouped()["g"].to_numpy()
    fit = fit_of(grouped().assign(g=ids))
    assert fit.model.n_levels == {"g": 12}
    np.testing.assert_allclose(fit.predict(grouped().assign(g=ids)), fit.fitted(), rtol=1e-13)


def test_object_int_levels_in_numeric_order():
    ids = [int(v) * 5 for v in grouped()["g"]]  # 0, 5, 10, ..., 55: text order would put 10 before 5
    fit = fit_of(with_ids(ids))
    assert list(fit.group_effects["level"]) == [str(5 * i) for i in range(12)]


def test_float_ids_beyond_2_53_are_warned():
    ids = 2.0**60 + 2048 * grouped()["g"].to_numpy()
    model = warned(lambda: mlv.Model("y ~ x + (1 | g)", grouped().assign(g=ids)), "2\\*\\*53")
    assert model.n_levels == {"g": 12}


def test_text_and_numbers_that_read_the_same_are_warned():
    ids = [str(v) if i % 2 else int(v) for i, v in enumerate(grouped()["g"])]
    model = warned(lambda: mlv.Model("y ~ x + (1 | g)", with_ids(ids)), "mixes text and numbers")
    assert model.n_levels == {"g": 12}


def test_text_and_numbers_that_differ_are_silent():
    import warnings

    ids = [f"s{v}" if v % 2 else int(v) for v in grouped()["g"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mlv.Model("y ~ x + (1 | g)", with_ids(ids)).n_levels == {"g": 12}


def test_boolean_ids_predict_as_fitted():
    frame = grouped().assign(h=grouped()["g"] % 2 == 0)
    fit = mlv.Model("y ~ x + (1 | g) + (1 | h)", frame).fit(warn=False)
    np.testing.assert_allclose(fit.predict(frame), fit.fitted(), rtol=1e-13)
    assert sorted(fit.group_effects.query("group == 'h'")["level"]) == ["FALSE", "TRUE"]


def test_interaction_of_float_and_text_ids():
    frame = grouped().assign(h=np.where(grouped()["x"] < 2, "a", "b"))
    fit = mlv.Model("y ~ x + (1 | g:h)", frame.assign(g=frame["g"].astype(float))).fit(warn=False)
    np.testing.assert_allclose(fit.predict(frame), fit.fitted(), rtol=1e-13)


def test_predicting_with_big_ids_stored_as_floats_warns():
    """Fitted with integer ids beyond 2**53, predicted with the same ids as floats: rounded, they match no fitted group
    and get the population prediction. Before: silently; now the new rows' ids are checked as the fitted ones are."""
    sleep = mlv.datasets.load("sleepstudy")
    big = sleep.assign(Subject=sleep.Subject.astype(int) + 2**60)
    fit = mlv.Model("Reaction ~ Days + (1 | Subject)", big).fit()
    rows = big.head(3)
    warned(lambda: fit.predict(rows.assign(Subject=rows.Subject.astype(float))), r"2\*\*53 or more.*floating-point")
    np.testing.assert_array_equal(fit.predict(rows), fit.predict(rows.assign(Subject=rows.Subject.astype(object))))


def test_occupancy_site_ids_beyond_2_53_as_floats_warn():
    """Site ids of 2**60 + k stored as floats round onto one another: before, the merged sites only surfaced as 'the
    site covariate varies within site 1.15e+18'; now the ids are warned about first, as grouping factors' are."""
    oven = mlv.datasets.load("oven_occupancy")
    ids = (oven.site.astype("category").cat.codes.astype("int64") + 2**60).astype(float)
    with pytest.warns(mlv.MultilevelWarning, match=r"2\*\*53 or more.*floating-point"):
        with pytest.raises(mlv.MultilevelError):
            mlv.Occupancy("~ Elevation_scaled", "~ day_scaled", oven.assign(site=ids))
    exact = oven.site.astype("category").cat.codes.astype("int64") + 2**60  # as integers: every site kept
    assert len(mlv.Occupancy("~ Elevation_scaled", "~ day_scaled", oven.assign(site=exact)).sites) == 373
