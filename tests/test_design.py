"""Design: y, X with lme4's names and coding, random blocks, missing values, aliasing, input types."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import multilevel as mlv
from multilevel.design import build_design



def test_sleepstudy_design_holds_the_data(sleep):
    d = build_design("Reaction ~ 1 + Days + (1 + Days | Subject)", sleep)
    assert d.nobs == 180 and d.p == 2 and d.n_dropped == 0
    np.testing.assert_array_equal(d.y, sleep.Reaction.to_numpy())
    np.testing.assert_array_equal(d.X, np.column_stack([np.ones(180), sleep.Days]))
    (block,) = d.blocks
    assert block.coef_names == ["(Intercept)", "Days"] and (block.m, block.k, block.q) == (18, 2, 36)
    np.testing.assert_array_equal(block.Z, d.X)
    assert list(block.levels) == list(sleep.Subject.cat.categories)
    np.testing.assert_array_equal(block.levels[block.codes], sleep.Subject.astype(str))


def test_uncorrelated_terms_are_separate_blocks(sleep):
    d = build_design("Reaction ~ Days + (Days || Subject)", sleep)
    assert [b.coef_names for b in d.blocks] == [["(Intercept)"], ["Days"]]
    assert all(not b.term.correlated for b in d.blocks)


def test_blocks_in_lme4_order_decreasing_levels():
    pastes = mlv.datasets.load("Pastes")
    d = build_design("strength ~ 1 + (1 | batch/cask)", pastes)
    assert [(b.group, b.m) for b in d.blocks] == [("batch:cask", 30), ("batch", 10)]
    inner = d.blocks[0]
    # the interaction's labels are the pairs that occur, and each row points at its own pair
    pairs = pastes.batch.astype(str) + ":" + pastes.cask.astype(str)
    np.testing.assert_array_equal(inner.levels[inner.codes], pairs)
    assert sorted(inner.levels) == sorted(set(pairs))


def test_missing_values_drop_rows_and_are_counted(sleep):
    data = sleep.copy()
    data["x"] = np.where(np.arange(180) % 10 == 0, np.nan, 1.0 + np.arange(180) % 7)
    data.loc[[1, 2], "Reaction"] = np.nan
    data["Subject"] = data.Subject.astype(object)
    data.loc[[3, 10], "Subject"] = None  # row 10 is also missing x
    data["unused"] = np.nan  # columns the model does not read do not matter
    d = build_design("Reaction ~ x + (1 | Subject)", data)
    assert d.n_dropped == 18 + 2 + 1
    assert d.nobs == 180 - d.n_dropped
    assert "21 dropped for missing values" in d.summary()
    kept = data.dropna(subset=["Reaction", "x", "Subject"])
    np.testing.assert_array_equal(d.y, kept.Reaction.to_numpy())


def test_missing_values_in_nullable_and_categorical_columns(sleep):
    data = sleep.assign(n=pd.array([None if i % 3 == 0 else i for i in range(180)], dtype="Int64"))
    data["Subject"] = data.Subject.where(data.Days != 0)  # categorical NaN
    d = build_design("Reaction ~ n + (1 | Subject)", data)
    assert d.n_dropped == int((data.n.isna() | data.Subject.isna()).sum())


def test_rank_deficient_x_drops_aliased_columns_with_a_warning(sleep):
    data = sleep.assign(twice=2.0 * sleep.Days, const=3.0, shifted=sleep.Days + 1.0)
    with pytest.warns(mlv.MultilevelWarning, match=r"dropping 3 aliased column\(s\) \['twice', 'const', 'shifted'\]"):
        d = build_design("Reaction ~ Days + twice + const + shifted + (1 | Subject)", data)
    assert d.fixed_names == ["(Intercept)", "Days"]
    assert d.aliased == ["twice", "const", "shifted"]
    assert "aliased" in d.summary()
    # the later of two aliased columns goes, as in R: order decides
    with pytest.warns(mlv.MultilevelWarning, match=r"\['Days'\]"):
        d = build_design("Reaction ~ twice + Days + (1 | Subject)", data)
    assert d.fixed_names == ["(Intercept)", "twice"]


def test_aliasing_within_categorical_interactions():
    # a 2x2 design with one empty cell: the interaction column is all zero and is aliased
    data = pd.DataFrame({
        "y": np.arange(12.0) ** 1.5,
        "a": list("ppqqppqqppqq"),
        "b": list("uuuuvvuuvvuu"),
        "g": list("ghghghghghgh"),
    })
    data = data[~((data.a == "q") & (data.b == "v"))]
    with pytest.warns(mlv.MultilevelWarning, match=r"\['aq:bv'\]"):
        d = build_design("y ~ a * b + (1 | g)", data)
    assert d.fixed_names == ["(Intercept)", "aq", "bv"]


def test_strings_get_sorted_levels_and_categoricals_keep_their_order(sleep):
    base = pd.DataFrame({
        "y": np.arange(12.0) ** 1.3,
        "s": ["b", "c", "a", "b", "c", "a", "c", "b", "a", "c", "a", "b"],
        "g": list("ghghghghghgh"),
    })
    d = build_design("y ~ s + (1 | g)", base)
    assert d.fixed_names == ["(Intercept)", "sb", "sc"]  # reference 'a': sorted
    np.testing.assert_array_equal(d.X[:, 1], (base.s == "b").to_numpy(float))
    cat = base.assign(s=pd.Categorical(base.s, categories=["c", "a", "b"]))
    d = build_design("y ~ s + (1 | g)", cat)
    assert d.fixed_names == ["(Intercept)", "sa", "sb"]  # reference 'c': the categorical's own first level
    np.testing.assert_array_equal(d.X[:, 2], (base.s == "b").to_numpy(float))


def test_reference_data_use_r_level_order():
    hsb = mlv.datasets.load("Hsb82")
    d = build_design("mAch ~ sector + sx + (1 | school)", hsb)
    assert d.fixed_names == ["(Intercept)", "sectorCatholic", "sxFemale"]


def test_booleans_and_numbers_as_factors():
    data = pd.DataFrame({"y": np.arange(10.0) ** 1.2, "b": [True, False] * 5, "g": [3, 1, 2, 1, 2, 3, 1, 2, 3, 1]})
    d = build_design("y ~ b + C(g) + (1 | g)", data)
    assert d.fixed_names == ["(Intercept)", "bTRUE", "C(g)2", "C(g)3"]
    assert list(d.blocks[0].levels) == ["1", "2", "3"]


def test_transform_names_follow_r():
    cake = mlv.datasets.load("cake")
    d = build_design("angle ~ temp + I(temp^2) + I(temp**3) + recipe:temp + (1 | replicate)", cake)
    assert d.fixed_names == ["(Intercept)", "temp", "I(temp^2)", "I(temp^3)", "temp:recipeB", "temp:recipeC"]
    np.testing.assert_allclose(d.X[:, 2], cake.temp.to_numpy(float) ** 2)
    np.testing.assert_allclose(d.X[:, 3], cake.temp.to_numpy(float) ** 3)


def test_no_intercept(sleep):
    assert build_design("Reaction ~ 0 + Days + (1 | Subject)", sleep).fixed_names == ["Days"]
    assert build_design("Reaction ~ Days - 1 + (1 | Subject)", sleep).fixed_names == ["Days"]
    cake = mlv.datasets.load("cake")
    assert build_design("angle ~ 0 + recipe + (1 | replicate)", cake).fixed_names == ["recipeA", "recipeB", "recipeC"]


def test_weights_offset_and_se(sleep):
    w = 1.0 + (np.arange(180) % 3)
    d = build_design("Reaction ~ Days + (1 | Subject)", sleep, weights=w, offset="Days")
    np.testing.assert_array_equal(d.weights, w)
    np.testing.assert_array_equal(d.offset, sleep.Days.to_numpy(float))
    schools = mlv.datasets.load("eight_schools")
    d = build_design("y | se(sigma) ~ 1 + (1 | school)", schools.assign(school=schools.school))
    np.testing.assert_array_equal(d.se, schools.sigma.to_numpy(float))


def test_weights_given_as_array_follow_dropped_rows(sleep):
    data = sleep.assign(x=np.where(np.arange(180) < 5, np.nan, 1.0 + np.arange(180) % 4))
    w = np.arange(1.0, 181.0)
    d = build_design("Reaction ~ x + (1 | Subject)", data, weights=w)
    np.testing.assert_array_equal(d.weights, w[5:])


def test_object_column_of_numbers_is_numeric(sleep):
    data = sleep.assign(x=pd.Series([int(v) for v in sleep.Days], dtype=object))
    assert build_design("Reaction ~ x + (1 | Subject)", data).fixed_names == ["(Intercept)", "x"]


def _same_design(a, b):
    assert a.fixed_names == b.fixed_names and a.n_levels == b.n_levels
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    for x, y in zip(a.blocks, b.blocks):
        np.testing.assert_array_equal(x.levels[x.codes], y.levels[y.codes])


def test_dict_of_arrays(sleep):
    data = {"Reaction": sleep.Reaction.to_numpy(), "Days": list(sleep.Days), "Subject": sleep.Subject.astype(str).to_numpy()}
    formula = "Reaction ~ Days + (Days | Subject)"
    _same_design(build_design(formula, data), build_design(formula, sleep))


def test_pyarrow_table():
    pa = pytest.importorskip("pyarrow")
    hsb = mlv.datasets.load("Hsb82")
    formula = "mAch ~ meanses*cses + sector*cses + (1 + cses | school)"
    table = pa.Table.from_pandas(hsb, preserve_index=False)  # categoricals become dictionaries, order kept
    _same_design(build_design(formula, table), build_design(formula, hsb))


def test_polars_dataframe():
    pl = pytest.importorskip("polars")
    hsb = mlv.datasets.load("Hsb82")
    formula = "mAch ~ meanses*cses + sector*cses + (1 + cses | school)"
    frame = pl.from_pandas(hsb.assign(sector=hsb.sector.astype(str), school=hsb.school.astype(str)))
    plain = build_design(formula, frame)  # strings: sorted levels, so Catholic is the reference
    assert plain.fixed_names == ["(Intercept)", "meanses", "cses", "sectorPublic", "meanses:cses", "cses:sectorPublic"]
    enum = frame.with_columns(pl.col("sector").cast(pl.Enum(["Public", "Catholic"])))
    _same_design(build_design(formula, enum), build_design(formula, hsb))


def test_summary_describes_the_design(sleep):
    text = build_design("Reaction ~ Days + (Days | Subject)", sleep).summary()
    assert "Observations: 180 used" in text
    assert "Fixed effects (2): (Intercept), Days" in text
    assert "Random: (Intercept), Days | Subject  (18 levels, correlated)" in text


def test_arithmetic_columns_are_evaluated_as_formulaic_would():
    """cbind's failures, trials() and formula offsets written as arithmetic of columns skip formulaic but give its
    values; anything else (here a power) still goes through formulaic."""
    import formulaic

    from multilevel.design import Arithmetic

    frame = pd.DataFrame({"k": [1, 4, 0, 7], "n": [3, 9, 2, 7], "e": [0.5, 2.0, 1.5, 3.0]})
    for expr in ("n - k", "k + (n - k)", "log(e) - 2 * e / n", "-log10(n) + exp(e)"):
        spec = Arithmetic.parse(expr, frame)
        expected = formulaic.model_matrix(f"0 + I({expr})", frame).to_numpy()[:, 0]
        np.testing.assert_allclose(spec.values(frame), expected, rtol=1e-15)
    assert all(Arithmetic.parse(expr, frame) is None for expr in ("n ** 2", "missing - k", "sqrt(n)", "np.log(n)"))
    design = build_design("cbind(k, n - k) ~ 1 + (1 | g) + offset(log(e))", frame.assign(g=list("aabb")), residual=False)
    np.testing.assert_allclose(design.trials, frame.n)
    np.testing.assert_allclose(design.offset, np.log(frame.e))


def test_plain_fixed_terms_are_coded_as_formulaic_codes_them():
    """Intercept, numeric columns, plain factors and two-way products with their main effects skip formulaic but give
    its matrix, column order and (lme4) names, on the learning rows and on new ones; anything else goes through it."""
    import formulaic

    from multilevel.data import prepare_categoricals
    from multilevel.design import PlainTerms, lme4_name, names_in

    frame = pd.DataFrame({"a": list("xyzxyzxyzx"), "b": list("ppqqrrppqq"), "v": np.arange(10.0),
                          "w": np.arange(10.0) ** 2, "s": [True, False] * 5})
    frame = prepare_categoricals(frame, list(frame.columns))
    for expr in ("a", "a + v", "v + a*b", "b*a", "a:v + a + v", "a*b + s*v", "v*w + a"):
        spec = PlainTerms.parse(expr, frame)
        expected = formulaic.model_matrix(expr, frame)
        assert spec.names == [lme4_name(c, names_in(expr, frame.columns)) for c in expected.columns]
        np.testing.assert_array_equal(spec.matrix(frame), expected.to_numpy())
        new = frame.iloc[[5, 2, 9]].astype({"a": str, "b": str})
        np.testing.assert_array_equal(spec.matrix(new), expected.model_spec.get_model_matrix(new).to_numpy())
    assert all(PlainTerms.parse(expr, frame) is None for expr in ("a:b", "a + a:v", "v + w", "0 + a", "a*b*v", "log(v) + a"))
