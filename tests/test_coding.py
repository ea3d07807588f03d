"""Learning the coding of the data once and applying it to any rows: partitions get the rows of the whole
design (global codes, learned contrasts and transforms), and prediction is the same apply on new data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import multilevel as mlv
from multilevel.design import apply_coding, build_design, check_counts, learn_coding
from multilevel.errors import MultilevelError

# an ordered factor (polynomial contrasts), an interaction, a stateful transform (centring by the mean of the
# learning rows) and an interaction grouping factor
CAKE = "angle ~ recipe * temperature + center(temp) + (1 | recipe:replicate)"
HSB = "mAch ~ meanses*cses + sector*cses + (1 + cses | school)"


@pytest.fixture(scope="module")
def cake():
    return mlv.datasets.load("cake")


@pytest.fixture(scope="module")
def hsb():
    return mlv.datasets.load("Hsb82")


def assert_rows(part, whole, rows):
    """The partition's numbers are exactly the given rows of the whole design, with the whole's codes."""
    assert part.fixed_names == whole.fixed_names
    np.testing.assert_array_equal(part.y, whole.y[rows])
    np.testing.assert_array_equal(part.X, whole.X[rows])
    for p, w in zip(part.blocks, whole.blocks, strict=True):
        assert p.group == w.group and p.coef_names == w.coef_names
        np.testing.assert_array_equal(p.levels, w.levels)  # the learned levels, not the partition's
        np.testing.assert_array_equal(p.codes, w.codes[rows])
        np.testing.assert_array_equal(p.Z, w.Z[rows])


@pytest.mark.parametrize("formula, dataset", [(CAKE, "cake"), (HSB, "Hsb82"), ("strength ~ 1 + (1 | batch/cask)", "Pastes")])
def test_partitions_are_rows_of_the_whole_design(formula, dataset):
    data = mlv.datasets.load(dataset)
    whole = build_design(formula, data)
    coding = learn_coding(formula, data)
    for rows in np.array_split(np.arange(len(data)), 4):
        assert_rows(apply_coding(coding, data.iloc[rows]), whole, rows)
    shuffled = np.random.default_rng(1).permutation(len(data))[:50]
    assert_rows(apply_coding(coding, data.iloc[shuffled]), whole, shuffled)


def test_a_partition_missing_levels_keeps_the_learned_contrasts_and_transforms(cake):
    rows = np.flatnonzero((cake.recipe == "A").to_numpy() & cake.temperature.isin(["175", "185"]).to_numpy())
    whole = build_design(CAKE, cake)
    part = apply_coding(learn_coding(CAKE, cake), cake.iloc[rows])
    assert_rows(part, whole, rows)
    # recipe B and C columns are there (all zero); center(temp) is aliased with temperature in the whole data and
    # dropped, while the partition's polynomial columns (2 temperatures only) are kept as learned
    assert not part.X[:, part.fixed_names.index("recipeB")].any()
    assert part.aliased == ["center(temp)"] and "temperature^5" in part.fixed_names
    # group codes are global: the partition's groups keep their indices among all 45 recipe:replicate levels
    (block,) = part.blocks
    assert block.m == 45 and set(block.levels[block.codes]) == {f"A:{r}" for r in cake.replicate.iloc[rows].astype(str)}
    # a stateful transform is learned once: centred by the whole data's mean, not the partition's
    formula = "angle ~ recipe + center(temp) + (1 | replicate)"
    part = apply_coding(learn_coding(formula, cake), cake.iloc[rows])
    assert_rows(part, build_design(formula, cake), rows)
    centred = part.X[:, part.fixed_names.index("center(temp)")]
    np.testing.assert_allclose(centred, cake.temp.to_numpy(float)[rows] - cake.temp.mean(), rtol=1e-15)
    assert centred.mean() < -5  # re-learned on these rows, the centring would give mean 0


def test_string_partition_gets_the_learned_levels_not_its_own(hsb):
    data = hsb.assign(sector=hsb.sector.astype(str), school=hsb.school.astype(str))
    whole = build_design(HSB, data)
    coding = learn_coding(HSB, data)
    # only Public schools: learned alone, strings would give sectorPublic a single level and no contrast
    rows = np.flatnonzero((data.sector == "Public").to_numpy())[:200]
    assert_rows(apply_coding(coding, data.iloc[rows]), whole, rows)
    assert coding.categories["sector"].categories.tolist() == ["Catholic", "Public"]


def test_missing_values_dropped_per_partition(sleep):
    data = sleep.assign(x=np.where(np.arange(180) % 7 == 0, np.nan, 1.0 + np.arange(180) % 5))
    formula = "Reaction ~ x + (1 | Subject)"
    whole = build_design(formula, data)
    coding = learn_coding(formula, data)
    kept = np.cumsum(data.x.notna().to_numpy()) - 1  # index of each complete row among the kept rows
    parts = [apply_coding(coding, data.iloc[rows]) for rows in np.array_split(np.arange(180), 3)]
    assert sum(p.n_dropped for p in parts) == whole.n_dropped == 26
    for rows, part in zip(np.array_split(np.arange(180), 3), parts):
        assert_rows(part, whole, kept[rows[data.x.notna().to_numpy()[rows]]])


def test_weights_array_is_passed_again_per_partition(sleep):
    w = 1.0 + np.arange(180) % 4
    formula = "Reaction ~ Days + (1 | Subject)"
    coding = learn_coding(formula, sleep, weights=w, offset="Days")
    part = apply_coding(coding, sleep.iloc[10:40], weights=w[10:40])
    np.testing.assert_array_equal(part.weights, w[10:40])
    np.testing.assert_array_equal(part.offset, sleep.Days.to_numpy(float)[10:40])
    with pytest.raises(MultilevelError, match="learned with weights given as an array: pass weights="):
        apply_coding(coding, sleep.iloc[10:40])


def test_partition_size_is_not_checked_but_the_whole_data_is(sleep):
    coding = learn_coding("Reaction ~ Days + (Days | Subject)", sleep)
    part = apply_coding(coding, sleep.iloc[:5])  # 5 rows, 18 levels, 36 random effects: fine for a partition
    assert part.nobs == 5 and part.blocks[0].m == 18
    check_counts(coding, 180)
    with pytest.raises(MultilevelError, match="has 18 levels for 10 observations"):
        check_counts(coding, 10)


def test_model_rows_with_levels_not_learned_are_refused(sleep, hsb):
    coding = learn_coding("Reaction ~ Days + (1 | Subject)", sleep.iloc[:100])
    with pytest.raises(MultilevelError, match=r"column 'Subject' has level\(s\) \['349'.*coding was not learned with"):
        apply_coding(coding, sleep)
    public = hsb[hsb.sector == "Public"].assign(sector=lambda d: d.sector.astype(str))
    coding = learn_coding("mAch ~ cses + sx + (1 | school)", public.assign(sx=public.sx.astype(str)))
    with pytest.raises(MultilevelError, match=r"column 'sx' has level\(s\) \['Other'\] the coding was not learned"):
        apply_coding(coding, public.assign(sx="Other"))


def test_predict_is_apply_then_multiply_with_no_effect_for_unseen_groups(hsb):
    fit = mlv.Model(HSB, hsb).fit()
    new = hsb.iloc[[0, 500, 3000, 7000]].assign(school=["1224", "unseen", "9586", "also new"])
    d = apply_coding(fit.design.coding, new, new=True)
    assert d.y is None and d.nobs == 4 and d.fixed_names == fit.design.fixed_names
    (block,) = d.blocks
    np.testing.assert_array_equal(block.codes[[1, 3]], [-1, -1])
    assert list(block.levels[block.codes[[0, 2]]]) == ["1224", "9586"]
    beta = fit.fixed_effects["estimate"].to_numpy()
    b = fit._b[0]
    expected = d.X @ beta + np.where(block.codes[:, None] >= 0, block.Z * b[block.codes], 0.0).sum(axis=1)
    np.testing.assert_allclose(fit.predict(new), expected, rtol=1e-14)
    np.testing.assert_allclose(fit.predict(new)[[1, 3]], (d.X @ beta)[[1, 3]], rtol=1e-14)


def test_unseen_combination_of_known_levels_is_an_unseen_group():
    pastes = mlv.datasets.load("Pastes")
    fit = mlv.Model("strength ~ 1 + (1 | batch/cask)", pastes).fit()
    effects = fit.group_effects.set_index(["group", "level"])["estimate"]
    batch = str(pastes.batch.iloc[0])
    new = pd.DataFrame({"batch": [batch], "cask": ["z"]})  # batch seen, batch:z never
    intercept = fit.fixed_effects.loc["(Intercept)", "estimate"]
    assert fit.predict(new)[0] == pytest.approx(intercept + effects[("batch", batch)], rel=1e-14)
    d = apply_coding(fit.design.coding, new, new=True)
    assert {b.group: int(b.codes[0]) for b in d.blocks}["batch:cask"] == -1


def test_missing_group_value_in_new_rows_is_no_effect_but_missing_covariate_is_refused(sleep):
    fit = mlv.Model("Reaction ~ Days + (Days | Subject)", sleep).fit()
    new = pd.DataFrame({"Days": [3.0, 3.0], "Subject": pd.Categorical([None, "308"])})
    population = fit.predict(new, include_groups=False)
    assert fit.predict(new)[0] == population[0] and fit.predict(new)[1] != population[1]
    with pytest.raises(MultilevelError, match="column 'Days' of the new data has 1 missing"):
        fit.predict(pd.DataFrame({"Days": [np.nan, 1.0], "Subject": ["308", "308"]}))


def test_unseen_level_of_a_fixed_factor_in_new_rows_is_refused(cake):
    fit = mlv.Model("angle ~ recipe + temp + (1 | replicate)", cake).fit()
    with pytest.raises(MultilevelError, match=r"column 'recipe' has level\(s\) \['D'\] not seen in fitting: fixed effects"):
        fit.predict(cake.iloc[:2].assign(recipe=["A", "D"]))


def test_boolean_factors_and_numeric_grouping_factors_predict_as_fitted(sleep):
    """The labels of new rows are made as in fitting: booleans 'TRUE'/'FALSE', numbers 2 not '2.0'."""
    data = sleep.assign(even=sleep.Days % 2 == 0, g=sleep.Subject.cat.codes.astype(float))
    fit = mlv.Model("Reaction ~ Days + even + (1 | g)", data).fit()
    assert fit.design.fixed_names == ["(Intercept)", "Days", "evenTRUE"]
    np.testing.assert_array_equal(fit.predict(data), fit.fitted())
    np.testing.assert_array_equal(fit.predict(data.iloc[::-1]), fit.fitted()[::-1])


CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
OWLS = "SiblingNegotiation ~ FoodTreatment*SexParent + offset(log(BroodSize)) + (1 | Nest)"


@pytest.mark.parametrize("formula, dataset", [(CBPP, "cbpp"), ("incidence | trials(size) ~ period + (1 | herd)", "cbpp"),
                                              (OWLS, "Owls")])
def test_binomial_trials_and_formula_offsets_are_learned_and_applied_per_partition(formula, dataset):
    data = mlv.datasets.load(dataset)
    whole = build_design(formula, data, residual=False)
    coding = learn_coding(formula, data)
    for rows in np.array_split(np.arange(len(data)), 3):
        part = apply_coding(coding, data.iloc[rows])
        assert_rows(part, whole, rows)
        for name in ("trials", "offset"):
            if getattr(whole, name) is not None:
                np.testing.assert_array_equal(getattr(part, name), getattr(whole, name)[rows])


def test_new_rows_get_the_formula_offset_and_an_offset_argument_adds_to_it():
    owls = mlv.datasets.load("Owls")
    coding = learn_coding(OWLS, owls)
    new = owls.iloc[:5].drop(columns="SiblingNegotiation")
    log_brood = np.log(owls["BroodSize"].to_numpy()[:5])
    np.testing.assert_array_equal(apply_coding(coding, new, new=True).offset, log_brood)
    np.testing.assert_array_equal(apply_coding(coding, new, offset=np.ones(5), new=True).offset, log_brood + 1)
    with pytest.raises(MultilevelError, match="BroodSize"):
        apply_coding(coding, new.drop(columns="BroodSize"), new=True)


def test_a_level_per_row_needs_a_family_without_residual_variance():
    ticks = mlv.datasets.load("grouseticks")
    with pytest.raises(MultilevelError, match="403 levels for 403 observations"):
        build_design("TICKS ~ 1 + (1 | INDEX)", ticks)
    assert build_design("TICKS ~ 1 + (1 | INDEX)", ticks, residual=False).blocks[0].m == 403


@pytest.mark.parametrize("ids", [[-3, 0, 2, 5, 7], [-3, 0, 2, 5, 10**12]], ids=["lookup table", "binary search"])
def test_integer_group_ids_get_their_rank_among_the_learned_ids_and_unseen_ids_none(ids):
    """Integer ids are coded by a lookup table over their range, or by search when they are spread thinly: either
    way a row's code is its id's position in the sorted learned ids, and an id not learned (inside the range, below
    or above it) gets -1 (no group effect) in new rows."""
    rng = np.random.default_rng(4)
    train = pd.DataFrame({"g": np.repeat(ids, 3), "y": rng.normal(size=15)})
    coding = learn_coding("y ~ 1 + (1 | g)", train)
    new = pd.DataFrame({"g": [ids[3], ids[0], 4, ids[-1] + 1, -10, ids[-1]]})
    codes = apply_coding(coding, new, new=True).blocks[0].codes
    np.testing.assert_array_equal(codes, [3, 0, -1, -1, -1, 4])
    assert list(coding.terms[0].levels) == [str(i) for i in ids]
