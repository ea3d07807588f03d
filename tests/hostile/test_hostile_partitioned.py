"""Partitioned data as a hostile user would hand it over: Dask DataFrames and Parquet folders with empty, incomplete,
mistyped or missing pieces. Each case gives the in-memory answer (fits compared with the same data in memory) or a
clear error naming the problem, where it is (the partition or file) and the fix."""

from __future__ import annotations

import os
import warnings

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from conftest import reference
from hostile_support import refused, warned

import multilevel as mlv
from multilevel.lmm import fit_at
from multilevel.optimize import OptimumInfo

SLOPES = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def sleep():
    """sleepstudy with text subject ids (their levels are learned by the levels pass, not taken as known)."""
    data = mlv.datasets.load("sleepstudy")
    return data.assign(Subject=data.Subject.astype(str), Days=data.Days.astype(float))


def fits(data, memory: pd.DataFrame, formula: str):
    """The models and fits of partitioned `data` and of `memory` in memory, with the same rows used and dropped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, whole = mlv.Model(formula, data), mlv.Model(formula, memory)
        fit, expected = model.fit(), whole.fit()
    assert (model.nobs, model.design.n_dropped, model.fixed_names) == (whole.nobs, whole.design.n_dropped, whole.fixed_names)
    return fit, expected


def same_fit(data, memory: pd.DataFrame, formula: str = SLOPES):
    """The fit of partitioned `data` is the fit of `memory` in memory: at the in-memory optimum the same criterion,
    sigma, beta and variance components (1e-10), and optimised on its own the same criterion (1e-10)."""
    fit, expected = fits(data, memory, formula)
    at = fit_at(fit.model, expected.method, None, OptimumInfo(expected.theta, 0.0, 0, ""), warn=False)
    assert at.objective == pytest.approx(expected.objective, rel=1e-10)
    assert at.sigma == pytest.approx(expected.sigma, rel=1e-10)
    np.testing.assert_allclose(at.beta, expected.beta, rtol=1e-10)
    np.testing.assert_allclose(at.variance_components["variance"], expected.variance_components["variance"], rtol=1e-10)
    assert fit.objective == pytest.approx(expected.objective, rel=1e-10)
    return fit


def parts(*frames: pd.DataFrame) -> dd.DataFrame:
    """A Dask DataFrame with one partition per frame (empty ones included)."""
    return dd.concat([dd.from_pandas(f, npartitions=1) for f in frames])


def lying(data: pd.DataFrame, change, npartitions: int = 3) -> dd.DataFrame:
    """A Dask DataFrame whose partitions are changed by `change(partition, i)` behind its declared types (meta), as
    frames built from delayed pieces or other files can be."""
    frame = dd.from_pandas(data, npartitions=npartitions)
    return frame.map_partitions(lambda p, partition_info=None: change(p, partition_info["number"]), meta=frame._meta)


def folder(root, name: str, frames: list[pd.DataFrame]) -> str:
    path = os.path.join(root, name)
    os.makedirs(path)
    for i, frame in enumerate(frames):
        frame.to_parquet(os.path.join(path, f"part-{i}.parquet"))
    return path


def thirds(data: pd.DataFrame) -> list[pd.DataFrame]:
    return [data.iloc[rows] for rows in np.array_split(np.arange(len(data)), 3)]


# ----------------------------------------------------------------------------------------------- Dask DataFrames
def test_empty_partitions_first_between_and_last(sleep):
    empty = sleep.iloc[:0]
    same_fit(parts(empty, sleep.iloc[:90], empty, sleep.iloc[90:], empty), sleep)


def test_a_partition_whose_rows_all_miss_a_predictor(sleep):
    """Its rows are dropped and counted, as in memory; three subjects lose every row and are not levels."""
    data = sleep.copy()
    data.loc[data.index[:30], "Days"] = np.nan
    same_fit(dd.from_pandas(data, npartitions=6, sort=False), data)


def test_known_categories_left_without_rows_by_missing_values_are_refused_naming_the_fix(sleep):
    data = sleep.assign(Subject=sleep.Subject.astype("category"))
    data.loc[data.index[:30], "Days"] = np.nan
    refused(lambda: mlv.Model(SLOPES, dd.from_pandas(data, npartitions=6, sort=False)),
            "'308'", "no complete rows", "as_unknown()")


@pytest.mark.parametrize("column", ["Reaction", "Days"])
@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_value_in_a_late_partition_names_column_partition_and_row(sleep, column, value):
    data = sleep.copy()
    data.loc[data.index[170], column] = value
    refused(lambda: mlv.Model(SLOPES, dd.from_pandas(data, npartitions=6, sort=False)),
            f"column '{column}'", "infinite", "partition 5 (of 6)", "index 170", "remove or replace")


def test_missing_response_in_a_late_partition_is_dropped_and_counted(sleep):
    data = sleep.copy()
    data.loc[data.index[[150, 171, 179]], "Reaction"] = np.nan
    same_fit(dd.from_pandas(data, npartitions=6, sort=False), data)


@pytest.mark.parametrize("shift", ["response", "predictor", "both"])
@pytest.mark.parametrize("formula", ["Reaction ~ Days + (1 | Subject)", SLOPES])
def test_columns_shifted_by_1e12_keep_their_digits_in_17_partitions(sleep, formula, shift):
    """Sums of 17 shuffled partitions' cross-products of columns near 1e12: each side optimised, the in-memory
    criterion, sigma, beta, standard errors and variance components to 1e-6 relative (a far random-slope covariate
    is held centred at another centre in each path, so their thetas are not comparable), and lme4's slope."""
    c = 1e12
    data = sleep.assign(Reaction=sleep.Reaction + (c if shift != "predictor" else 0.0),
                        Days=sleep.Days + (c if shift != "response" else 0.0))
    fit, expected = fits(dd.from_pandas(data.sample(frac=1, random_state=17), npartitions=17, sort=False), data, formula)
    assert fit.objective == pytest.approx(expected.objective, rel=1e-6)
    assert fit.sigma == pytest.approx(expected.sigma, rel=1e-6)
    np.testing.assert_allclose(fit.beta, expected.beta, rtol=1e-6)
    np.testing.assert_allclose(fit.fixed_effects["std_error"], expected.fixed_effects["std_error"], rtol=1e-6)
    np.testing.assert_allclose(fit.variance_components["variance"], expected.variance_components["variance"], rtol=1e-6)
    name = "sleepstudy_slopes_reml" if "Days |" in formula else "sleepstudy_intercept_reml"
    assert fit.beta[1] == pytest.approx(reference(name)["fixef"]["estimate"][1], rel=1e-6)  # lme4's Days slope


@pytest.mark.parametrize("npartitions", [1, 3, 17])
def test_a_far_predictor_constant_in_the_first_row_of_every_group_is_still_centred(sleep, npartitions):
    """Days + 1e6 is 1e6 in the first row of every subject, the rows the levels pass keeps per level: the scaling
    learned from those alone did not centre it, so I(x^2) was summed uncentred (sigma 0.06 % and theta 0.35 % off,
    no warning). Rows spread over each partition join them: the fit of Days + I(Days^2), the same column space."""
    formula = "Reaction ~ x + I(x^2) + (1 | Subject)"
    data = sleep.assign(x=sleep.Days + 1e6)
    fit, expected = fits(dd.from_pandas(data, npartitions=npartitions), data, formula)
    plain = mlv.Model("Reaction ~ Days + I(Days^2) + (1 | Subject)", sleep).fit()
    for f in (fit, expected):
        assert f.sigma == pytest.approx(plain.sigma, rel=1e-6)
        np.testing.assert_allclose(f.theta, plain.theta, rtol=1e-6)
        assert f.beta[2] == pytest.approx(plain.beta[2], rel=1e-6)  # the square's coefficient


def test_a_level_present_in_only_one_partition(sleep):
    data = sleep.assign(Subject=np.where(sleep.Subject == "308", "only-here", sleep.Subject)).sort_values("Subject", kind="stable")
    same_fit(dd.from_pandas(data, npartitions=9, sort=False), data)


def test_group_ids_as_text_integers_and_categories_in_different_partitions(sleep):
    kinds = [lambda s: s, lambda s: s.astype(int), lambda s: s.astype("category")]
    same_fit(lying(sleep, lambda p, i: p.assign(Subject=kinds[i](p.Subject))), sleep)


def test_a_predictor_stored_as_text_in_one_partition_is_refused_naming_it(sleep):
    data = lying(sleep, lambda p, i: p.assign(Days=p.Days.astype(str)) if i == 2 else p)
    refused(lambda: mlv.Model(SLOPES, data), "column 'Days'", "text", "partition 2 (of 3)", "one type in every partition")


def test_a_partition_missing_a_column_is_refused_naming_it(sleep):
    data = lying(sleep, lambda p, i: p.drop(columns="Days") if i == 1 else p)
    refused(lambda: mlv.Model(SLOPES, data), "Dask could not compute", "Days", "partitions[i].compute()")


def test_unused_known_categories_are_refused_and_unknown_ones_dropped(sleep):
    data = sleep.assign(Subject=pd.Categorical(sleep.Subject, categories=sorted(sleep.Subject.unique()) + ["ghost"]))
    refused(lambda: mlv.Model(SLOPES, dd.from_pandas(data, npartitions=3)), "'ghost'", "remove_unused_categories")
    frame = dd.from_pandas(data, npartitions=3)
    frame["Subject"] = frame.Subject.cat.as_unknown()
    same_fit(frame, data)


def test_a_factor_with_one_level_is_refused(sleep):
    refused(lambda: mlv.Model("Reaction ~ Days + k + (1 | Subject)", dd.from_pandas(sleep.assign(k="a"), npartitions=3)),
            "'k'", "one level", "drop it")
    refused(lambda: mlv.Model("Reaction ~ Days + (1 | g)", dd.from_pandas(sleep.assign(g="a"), npartitions=3)),
            "'g'", "only 1 level", "drop the term")


def test_rank_deficiency_seen_in_the_summed_cross_products(sleep):
    """x2 + x3 = 1 over all rows, while each partition holds one of them constant: x3 dropped, as in memory."""
    data = sleep.assign(x2=np.where(np.arange(len(sleep)) < 90, 1.0, 0.0))
    data = data.assign(x3=1.0 - data.x2)
    formula = "Reaction ~ Days + x2 + x3 + (1 | Subject)"
    fit = same_fit(dd.from_pandas(data, npartitions=6, sort=False), data, formula)
    assert fit.model.design.aliased == ["x3"]


def test_a_factor_level_seen_only_in_the_last_partition(sleep):
    data = sleep.assign(k=np.where(np.arange(len(sleep)) < 170, "a", "b"))
    same_fit(dd.from_pandas(data, npartitions=6, sort=False), data, "Reaction ~ Days + k + (1 | Subject)")


@pytest.mark.parametrize("npartitions", [1, 180])
def test_one_partition_and_a_row_per_partition(sleep, npartitions):
    same_fit(dd.from_pandas(sleep.sample(frac=1, random_state=1), npartitions=npartitions, sort=False), sleep)


# ----------------------------------------------------------------------------------------------- Parquet folders
def test_200_files_some_empty(sleep, tmp_path):
    pieces = np.array_split(np.random.default_rng(0).permutation(len(sleep)), 200)  # 20 of them empty
    same_fit(folder(tmp_path, "many", [sleep.iloc[rows] for rows in pieces]), sleep)


@pytest.mark.parametrize("which", [0, 1])
def test_a_file_missing_a_column_is_refused_naming_file_and_column(sleep, tmp_path, which):
    frames = thirds(sleep)
    frames[which] = frames[which].drop(columns="Days")
    path = folder(tmp_path, "missing", frames)
    refused(lambda: mlv.Model(SLOPES, path), f"part-{which}.parquet", "lacks the column(s) ['Days']", "add them to every file")


def test_numeric_and_group_id_types_differing_between_files(sleep, tmp_path):
    a, b, c = thirds(sleep)
    frames = [a.assign(Subject=a.Subject.astype("category")), b.assign(Days=b.Days.astype(int)), c.assign(Subject=c.Subject.astype(int))]
    same_fit(folder(tmp_path, "types", frames), sleep)


@pytest.mark.parametrize("which", [0, 1])
def test_a_predictor_as_text_in_some_files_is_refused_naming_the_file(sleep, tmp_path, which):
    frames = thirds(sleep)
    frames[which] = frames[which].assign(Days=frames[which].Days.astype(str))
    path = folder(tmp_path, "text", frames)
    refused(lambda: mlv.Model(SLOPES, path), "column 'Days'", "part-1.parquet", "one type in every partition")


def test_a_glob_matching_nothing_is_refused(tmp_path):
    refused(lambda: mlv.Model(SLOPES, str(tmp_path / "nowhere" / "*.parquet")), "no file or folder matches")


def test_other_files_in_a_folder_are_left_out_as_dask_does(sleep, tmp_path):
    path = folder(tmp_path, "mixed", thirds(sleep))
    (tmp_path / "mixed" / "README.txt").write_text("data of the sleep study")
    sleep.to_csv(tmp_path / "mixed" / "copy.csv")
    same_fit(path, sleep)
    refused(lambda: mlv.Model(SLOPES, os.path.join(path, "*")), "README.txt", "not Parquet")  # the first in order


def test_a_folder_without_parquet_files_is_refused_naming_the_glob_fix(tmp_path):
    (tmp_path / "empty").mkdir()
    refused(lambda: mlv.Model(SLOPES, str(tmp_path / "empty")), "no Parquet files", "it is empty")
    (tmp_path / "empty" / "000000_0").write_bytes(b"not parquet")
    refused(lambda: mlv.Model(SLOPES, str(tmp_path / "empty")), "no Parquet files", "000000_0", "*")


def test_a_truncated_file_is_refused_naming_it(sleep, tmp_path):
    path = folder(tmp_path, "truncated", thirds(sleep))
    with open(os.path.join(path, "part-2.parquet"), "r+b") as f:
        f.truncate(100)
    refused(lambda: mlv.Model(SLOPES, path), "part-2.parquet", "cannot read")


def test_infinite_value_in_a_late_file_names_file_and_row(sleep, tmp_path):
    frames = thirds(sleep)
    frames[2] = frames[2].assign(Reaction=np.where(np.arange(len(frames[2])) == 33, np.inf, frames[2].Reaction))
    path = folder(tmp_path, "inf", frames)
    refused(lambda: mlv.Model(SLOPES, path), "part-2.parquet", "column 'Reaction'", "infinite", "index 33")


def test_unused_categories_in_parquet_files_are_not_levels(sleep, tmp_path):
    categories = sorted(sleep.Subject.unique()) + ["ghost"]
    frames = [f.assign(Subject=pd.Categorical(f.Subject, categories=categories)) for f in thirds(sleep)]
    same_fit(folder(tmp_path, "unused", frames), sleep)


# ----------------------------------------------------------------------------------------------- degenerate data
def test_known_ordered_categories_keep_their_polynomial_contrasts(sleep):
    """An ordered categorical with known categories (no levels pass) is coded as in memory: k.L, k.Q."""
    k = pd.Categorical(np.where(sleep.Days < 3, "lo", np.where(sleep.Days < 7, "mid", "hi")), categories=["lo", "mid", "hi"], ordered=True)
    data = sleep.assign(k=k, Subject=sleep.Subject.astype("category"))
    fit = same_fit(dd.from_pandas(data, npartitions=3), data, "Reaction ~ k + (1 | Subject)")
    assert fit.model.fixed_names == ["(Intercept)", "k.L", "k.Q"]


@pytest.mark.parametrize("shift", [0.0, 1e9])
def test_a_constant_response_and_one_constant_within_groups_are_refused(sleep, shift):
    """As in memory: no variation, or none within the groups (the residual variance is 0, the likelihood unbounded)."""
    refused(lambda: mlv.Model(SLOPES, dd.from_pandas(sleep.assign(Reaction=1.0 + shift), npartitions=3)),
            "'Reaction' is constant", "180 values")
    means = sleep.groupby("Subject").Reaction.transform("mean") + shift
    refused(lambda: mlv.Model("Reaction ~ 1 + (1 | Subject)", dd.from_pandas(sleep.assign(Reaction=means), npartitions=17)),
            "constant within every level of 'Subject'", "precision of the sums", "one value per group")


def test_a_response_nearly_constant_within_groups_is_fitted_with_the_warning(sleep):
    """Noise of 1e-5 within groups 30 apart (an SD ratio of 3e-7, above the sums' 1e-7): fitted, not refused, with
    the in-memory path's warning that the data look noise-free; sigma on the noise's scale (the sums resolve the
    within-level sum of squares, 1e-13 of the total, to about a tenth here)."""
    noise = 1e-5 * np.random.default_rng(1).normal(size=len(sleep))
    data = sleep.assign(Reaction=sleep.groupby("Subject").Reaction.transform("mean") + noise)
    fit = warned(lambda: mlv.Model("Reaction ~ 1 + (1 | Subject)", dd.from_pandas(data, npartitions=3)).fit(),
                 "reproduces the response almost exactly")
    assert 0.5e-5 < fit.sigma < 2e-5


# ----------------------------------------------------------------------------------------------- predictions
def test_predictions_for_a_dask_dataframe_of_new_rows_are_a_lazy_series(sleep):
    """New rows in partitions (one empty, an unseen subject): a lazy Dask Series equal to the in-memory predictions."""
    fit = mlv.Model(SLOPES, dd.from_pandas(sleep, npartitions=3)).fit()
    new = sleep.iloc[::7].assign(Subject=lambda d: np.where(d.Days == 3, "new", d.Subject))
    predicted = fit.predict(parts(new.iloc[:10], new.iloc[:0], new.iloc[10:]))
    assert isinstance(predicted, dd.Series)
    expected = mlv.Model(SLOPES, sleep).fit().predict(new)
    np.testing.assert_allclose(predicted.compute(scheduler="synchronous").to_numpy(), expected, rtol=1e-8)


def test_dask_objects_where_rows_must_be_in_memory_are_refused_naming_the_fix(sleep):
    refused(lambda: mlv.Model(SLOPES, dd.from_pandas(sleep, npartitions=3).Reaction), "Dask Series", ".to_frame()")
    post = mlv.Model("Reaction ~ Days + (1 | Subject)", sleep).sample(sampler="gibbs", chains=1, draws=20, warmup=60, seed=1, progress=False)
    refused(lambda: post.predict(dd.from_pandas(sleep, npartitions=3)), "Dask DataFrame", ".compute()")


def test_glmm_predictions_for_a_dask_dataframe_stay_lazy_on_both_scales():
    cbpp = mlv.datasets.load("cbpp")
    fit = mlv.Model("incidence | trials(size) ~ period + (1 | herd)", cbpp, family="binomial").fit()
    for scale in ("link", "response"):
        predicted = fit.predict(dd.from_pandas(cbpp, npartitions=3), type=scale)
        assert isinstance(predicted, dd.Series)
        np.testing.assert_allclose(predicted.compute(scheduler="synchronous").to_numpy(), fit.predict(cbpp, type=scale), rtol=1e-12)


def test_saving_a_result_of_partitioned_data_is_refused_naming_what_to_save(sleep, tmp_path):
    model = mlv.Model("Reaction ~ Days + (1 | Subject)", dd.from_pandas(sleep, npartitions=3))
    post = model.sample(sampler="gibbs", chains=1, draws=20, warmup=60, seed=1, progress=False)
    for result, name in ((model.fit(), "fit.json"), (post, "post.nc")):
        refused(lambda: result.save(tmp_path / name), "partitioned data", "cannot be saved", "to_frame()")
        assert not (tmp_path / name).exists()


def test_with_levels_given_only_an_unseen_level_blames_them(sleep, tmp_path):
    """levels= skips the levels pass; a row's level outside them is blamed on levels=, other bad data are not."""
    levels = {"Subject": sorted(sleep.Subject.unique())}
    refused(lambda: mlv.Model(SLOPES, dd.from_pandas(sleep, npartitions=3), levels={"Subject": levels["Subject"][1:]}),
            "the coding was not learned with", "levels= must list every level")
    data = sleep.copy()
    data.loc[data.index[170], "Reaction"] = np.inf
    error = refused(lambda: mlv.Model(SLOPES, dd.from_pandas(data, npartitions=3), levels=levels), "infinite", "partition 2 (of 3)")
    assert "levels=" not in str(error)
