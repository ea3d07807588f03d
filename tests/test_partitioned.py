"""Partitioned data (Dask DataFrames, Parquet folders): the same cross-products (1e-12 relative) and the same fit
as the in-memory path on the reference models, whatever the partitioning, row order and scheduler."""

from __future__ import annotations

import json
from functools import lru_cache

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from conftest import REFERENCE, reference

import multilevel as mlv
from multilevel.errors import MultilevelError, MultilevelWarning
from multilevel.crossprod import rescaled, residual_sum_of_squares
from multilevel.design import apply_coding, learn_coding
from multilevel.lmm import fit_at
from multilevel.optimize import OptimumInfo
from multilevel.level_partials import localised
from multilevel.partitioned import SKETCH_SIZE, Sketch, partial_sums, sampler_inputs, seen_in
from multilevel.predict import held_predictor, linear_predictor
from multilevel.priors import default_priors

MODELS = [
    ("Reaction ~ 1 + Days + (1 + Days | Subject)", "sleepstudy"),
    ("Reaction ~ 1 + Days + (1 + Days || Subject)", "sleepstudy"),
    ("Yield ~ 1 + (1 | Batch)", "Dyestuff"),
    ("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin"),
    ("strength ~ 1 + (1 | batch/cask)", "Pastes"),
    ("mAch ~ meanses*cses + sector*cses + (1 + cses | school)", "Hsb82"),
    ("log_radon ~ floor + (1 + floor | county)", "radon"),
    ("Yield ~ 1 + (1 | Batch)", "Dyestuff2"),
    ("Reaction ~ 1 + Days + (1 | Subject)", "sleepstudy"),
    ("mAch ~ 1 + (1 | school)", "Hsb82"),
    ("log_radon ~ floor + (1 | county)", "radon"),
]
INSTEVAL = "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)"


@lru_cache(maxsize=None)
def in_memory(formula: str, dataset: str) -> mlv.Model:
    return mlv.Model(formula, mlv.datasets.load(dataset))


@lru_cache(maxsize=None)
def from_partitions(formula: str, dataset: str, partitions: int) -> mlv.Model:
    return mlv.Model(formula, shuffled(mlv.datasets.load(dataset), partitions))


def shuffled(data: pd.DataFrame, partitions: int) -> dd.DataFrame:
    """The rows in a random order (seeded by the partition count), as a Dask DataFrame."""
    return dd.from_pandas(data.sample(frac=1, random_state=partitions), npartitions=partitions, sort=False)


def assert_same_cross_products(a, b):
    """Every array of two CrossProducts equal to 1e-12 of its largest entry, b mapped onto a's centring and scaling
    (partitioned data learn theirs from the levels pass's rows)."""
    assert (a.n, a.p) == (b.n, b.p) and a.off.keys() == b.off.keys()
    b = rescaled(b, a.scaling)
    pairs = list(zip(a.diag + a.zxy + [a.xy], b.diag + b.zxy + [b.xy]))
    pairs += [(a.off[key].toarray(), b.off[key].toarray()) for key in a.off]
    for x, y in pairs:
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-12 * np.max(np.abs(x)))
    assert b.sum_log_w == pytest.approx(a.sum_log_w, rel=1e-12, abs=1e-12)


def assert_same_fit(a, b):
    """The same fit: at a's theta both models give the same criterion, sigma and beta (1e-10: the residual sum
    of squares is y'y less its fitted part, so rounding of y'y grows by y'y / r2, 5e3 on Pastes); optimised on
    their own they reach the same criterion (1e-10), theta within the optimiser's stopping precision (1e-5)."""
    info = OptimumInfo(a.theta, 0.0, 0, "")
    at_a = fit_at(b.model, a.method, a.prior, info, warn=False)
    assert at_a.objective == pytest.approx(a.objective, rel=1e-10)
    assert at_a.penalized_objective == pytest.approx(a.penalized_objective, rel=1e-10)
    assert at_a.sigma == pytest.approx(a.sigma, rel=1e-10)
    np.testing.assert_allclose(at_a.beta, a.beta, rtol=1e-10, atol=1e-10 * np.max(np.abs(a.beta)))
    assert b.objective == pytest.approx(a.objective, rel=1e-10)
    np.testing.assert_allclose(b.theta, a.theta, atol=1e-5)


@pytest.mark.parametrize("formula, dataset", MODELS)
@pytest.mark.parametrize("partitions", [1, 3, 17])
def test_same_cross_products_and_fit_as_in_memory(formula, dataset, partitions):
    whole = in_memory(formula, dataset)
    model = from_partitions(formula, dataset, partitions)
    assert (model.nobs, model.fixed_names, model.n_levels) == (whole.nobs, whole.fixed_names, whole.n_levels)
    for ours, theirs in zip(model.design.blocks, whole.design.blocks, strict=True):
        np.testing.assert_array_equal(ours.levels, theirs.levels)
    assert_same_cross_products(whole.cross_products, model.cross_products)
    for method in ("REML", "ML"):
        assert_same_fit(whole.fit(method=method), model.fit(method=method))


def gaussian_references() -> dict[str, tuple[str, str]]:
    """Every Gaussian linear mixed model of ../shared/reference (lme4, blme, brms, rstanarm, JAGS, exact posteriors),
    by file: its (formula, data set)."""
    out = {}
    for path in sorted(REFERENCE.glob("*.json")):
        ref = json.loads(path.read_text())
        family = str(ref.get("family") or "gaussian")
        if "formula" in ref and "occupancy" not in path.stem and family.startswith("gaussian") and "glm" not in ref["kind"]:
            out[path.stem] = (ref["formula"], ref["dataset"])
    return out


def test_every_gaussian_reference_model_is_covered():
    """Each Gaussian reference model is among MODELS (1, 3, 17 shuffled partitions: the same sums and fits), is
    InstEval (at lme4's optimum below), or is refused for partitioned data (known se(): eight schools)."""
    spaced = {(f.replace(" ", ""), d) for f, d in MODELS} | {(INSTEVAL.replace(" ", ""), "InstEval")}
    refused = {("y|se(sigma)~1+(1|school)", "eight_schools")}
    found = {(f.replace(" ", ""), d) for f, d in gaussian_references().values()}
    assert len(gaussian_references()) >= 26 and found <= spaced | refused
    formula, dataset = next(iter(refused))
    with pytest.raises(MultilevelError, match="se\\(\\).*pandas frame"):
        mlv.Model("y | se(sigma) ~ 1 + (1 | school)", shuffled(mlv.datasets.load(dataset), 3))


@pytest.mark.parametrize("formula, dataset", [MODELS[0], MODELS[7]], ids=["sleepstudy", "Dyestuff2"])
@pytest.mark.parametrize("partitions", [1, 3, 17])
def test_zero_avoiding_fits_are_those_in_memory(formula, dataset, partitions):
    """blme's references (sleepstudy slopes, Dyestuff2): the penalised fit from the sums is the in-memory one."""
    whole, model = in_memory(formula, dataset), from_partitions(formula, dataset, partitions)
    assert_same_fit(whole.fit(prior="zero-avoiding"), model.fit(prior="zero-avoiding"))


@pytest.mark.parametrize("partitions", [1, 3, 17])
@pytest.mark.parametrize("name", ["insteval_reml", "insteval_ml"])
def test_insteval_at_lme4s_optimum(name, partitions):
    """InstEval (73k rows, 4k effects) in 1, 3 and 17 shuffled partitions: the same cross-products, at lme4's
    theta the same criterion and beta as in memory (and lme4's criterion to 1e-8), and the same fit."""
    ref = reference(name)
    whole = in_memory(INSTEVAL, "InstEval")
    model = from_partitions(INSTEVAL, "InstEval", partitions)
    assert_same_cross_products(whole.cross_products, model.cross_products)
    optimum = ref["objective_checks"]["points"][0]
    info = OptimumInfo(np.asarray(optimum["theta"]), 0.0, 0, "")
    method = "REML" if ref["REML"] else "ML"
    a, b = fit_at(whole, method, None, info, warn=False), fit_at(model, method, None, info, warn=False)
    assert b.objective == pytest.approx(a.objective, rel=1e-12)
    assert b.objective == pytest.approx(optimum["objective"], rel=1e-8)
    np.testing.assert_allclose(b.beta, a.beta, rtol=1e-10)
    assert_same_fit(memory_fit(INSTEVAL, "InstEval", method), model.fit(method=method))


@lru_cache(maxsize=None)
def memory_fit(formula: str, dataset: str, method: str):
    return in_memory(formula, dataset).fit(method=method)


def test_in_process_cluster_gives_the_same_fit():
    distributed = pytest.importorskip("distributed")
    formula, dataset = MODELS[4]
    with distributed.LocalCluster(n_workers=2, processes=False, dashboard_address=None) as cluster, distributed.Client(cluster):
        model = mlv.Model(formula, shuffled(mlv.datasets.load(dataset), 3))
        fit = model.fit()
        at_whole = fit_at(model, "REML", None, OptimumInfo(in_memory(formula, dataset).fit().theta, 0.0, 0, ""), warn=False)
        log_likelihood = at_whole.log_likelihood().compute().sort_index().to_numpy()  # the second pass on the cluster
    assert_same_cross_products(in_memory(formula, dataset).cross_products, model.cross_products)
    assert_same_fit(in_memory(formula, dataset).fit(), fit)
    np.testing.assert_allclose(log_likelihood, in_memory(formula, dataset).fit().log_likelihood(), rtol=1e-10)


@pytest.mark.slow
def test_process_cluster_gives_the_same_fit():
    distributed = pytest.importorskip("distributed")
    formula, dataset = MODELS[5]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, distributed.Client(cluster):
        model = mlv.Model(formula, shuffled(mlv.datasets.load(dataset), 5))
    assert_same_cross_products(in_memory(formula, dataset).cross_products, model.cross_products)
    assert_same_fit(in_memory(formula, dataset).fit(), model.fit())


@pytest.fixture
def messy_sleep(sleep):
    """sleepstudy with missing values, weights, an offset and an aliased column."""
    rng = np.random.default_rng(3)
    data = sleep.assign(w=rng.uniform(0.5, 2.0, len(sleep)), off=rng.normal(size=len(sleep)), Days2=2.0 * sleep.Days)
    data.loc[data.index[::17], "Reaction"] = np.nan
    return data


def test_parquet_folder_with_missing_values_weights_offset_and_aliasing(messy_sleep, tmp_path):
    formula = "Reaction ~ Days + Days2 + (Days | Subject)"
    with pytest.warns(MultilevelWarning, match="Days2"):
        whole = mlv.Model(formula, messy_sleep, weights="w", offset="off")
    dd.from_pandas(messy_sleep, npartitions=4).to_parquet(tmp_path / "sleep")
    with pytest.warns(MultilevelWarning, match="Days2"):
        model = mlv.Model(formula, str(tmp_path / "sleep"), weights="w", offset="off")
    assert (model.nobs, model.design.n_dropped, model.fixed_names) == (whole.nobs, whole.design.n_dropped, whole.fixed_names)
    assert model.design.aliased == ["Days2"]
    assert_same_cross_products(whole.cross_products, model.cross_products)
    assert_same_fit(whole.fit(), model.fit())
    glob = mlv.Model(formula, str(tmp_path / "sleep" / "*.parquet"), weights="w", offset="off")
    assert_same_cross_products(whole.cross_products, glob.cross_products)


def test_parquet_files_read_in_batches_an_empty_file_and_hive_folders(messy_sleep, tmp_path, monkeypatch):
    """Local files are read by pyarrow a batch at a time (here 7 rows) and summed per file; a file without rows adds
    nothing; a hive-partitioned folder (columns in folder names) goes through Dask's reader: all the same sums."""
    import multilevel.partition_sources as sources

    formula = "Reaction ~ Days + (Days | Subject)"
    whole = mlv.Model(formula, messy_sleep, weights="w")
    folder = tmp_path / "files"
    folder.mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(messy_sleep)), 3)):
        messy_sleep.iloc[rows].to_parquet(folder / f"part-{i}.parquet")
    messy_sleep.iloc[:0].to_parquet(folder / "part-3.parquet")
    monkeypatch.setattr(sources, "BATCH_ROWS", 7)
    model = mlv.Model(formula, str(folder), weights="w")
    assert isinstance(model.design._source, sources.ParquetFiles) and model.design._source.npartitions == 4
    assert (model.nobs, model.design.n_dropped) == (whole.nobs, whole.design.n_dropped)
    assert_same_cross_products(whole.cross_products, model.cross_products)
    fit = model.fit()
    expected = linear_predictor(whole.design, fit.beta, fit.random_effects)
    np.testing.assert_allclose(fit.fitted().compute(scheduler="synchronous").to_numpy(), expected, rtol=1e-12)
    messy_sleep.assign(half=np.where(messy_sleep.Days < 5, "a", "b")).to_parquet(tmp_path / "hive", partition_cols=["half"])
    hive = mlv.Model(formula, str(tmp_path / "hive"), weights="w")
    assert isinstance(hive.design._source, sources.DaskSource)
    assert_same_cross_products(whole.cross_products, hive.cross_products)


def test_empty_partitions_and_partitions_without_complete_rows(messy_sleep):
    formula = "Reaction ~ Days + (Days | Subject)"
    empty = messy_sleep.iloc[:0]
    incomplete = messy_sleep.iloc[:5].assign(Reaction=np.nan)
    parts = [dd.from_pandas(frame, npartitions=1) for frame in (empty, messy_sleep, incomplete)]
    model = mlv.Model(formula, dd.concat(parts))
    whole = mlv.Model(formula, pd.concat([messy_sleep, incomplete]))
    assert model.design.n_dropped == whole.design.n_dropped
    assert_same_cross_products(whole.cross_products, model.cross_products)


def test_string_levels_unseen_in_some_partitions_get_global_codes(sleep):
    """Partitions holding a few groups each (sorted by group) still code every row by the global levels."""
    data = sleep.assign(Subject=sleep.Subject.astype(str), phase=np.where(sleep.Days < 5, "early", "late"))
    formula = "Reaction ~ Days * phase + (1 | Subject)"
    model = mlv.Model(formula, dd.from_pandas(data, npartitions=6, sort=False))
    whole = mlv.Model(formula, data)
    assert model.fixed_names == whole.fixed_names
    assert_same_cross_products(whole.cross_products, model.cross_products)


def test_fitted_and_residuals_are_a_lazy_second_pass(messy_sleep):
    formula = "Reaction ~ Days + (Days | Subject)"
    whole = mlv.Model(formula, messy_sleep, offset="off").design
    fit = mlv.Model(formula, dd.from_pandas(messy_sleep, npartitions=3), offset="off").fit()
    fitted, residuals = fit.fitted(), fit.residuals()
    assert isinstance(fitted, dd.Series)
    expected = held_predictor(whole, fit.engine.held, fit.held_beta, fit.held_b)  # formed of the held columns
    np.testing.assert_allclose(expected, linear_predictor(whole, fit.beta, fit.random_effects), rtol=1e-13)
    np.testing.assert_array_equal(fitted.compute(scheduler="synchronous").to_numpy(), expected)
    np.testing.assert_array_equal(residuals.compute(scheduler="synchronous").to_numpy(), whole.y - expected)
    fixed_only = fit.predict(include_groups=False).compute(scheduler="synchronous").to_numpy()
    np.testing.assert_array_equal(fixed_only, held_predictor(whole, fit.engine.held, fit.held_beta, None))
    new = messy_sleep.dropna().iloc[:10]
    np.testing.assert_array_equal(fit.predict(new, offset="off"), expected[:10])


def test_reading_rows_is_refused_naming_the_alternatives(sleep):
    fit = mlv.Model("Reaction ~ Days + (Days | Subject)", dd.from_pandas(sleep, npartitions=2)).fit()
    with pytest.raises(MultilevelError, match="not held in memory.*K-fold.*fitted"):
        fit.simulate(2)
    with pytest.raises(MultilevelError, match="not held in memory"):
        fit.model.design.X


@pytest.mark.parametrize(
    "formula, match",
    [
        ("Reaction ~ center(Days) + (1 | Subject)", "center\\(Days\\).*learns its values from all rows"),
        ("Reaction ~ C(Days) + (1 | Subject)", "numeric column.*\\['Days'\\] as a factor"),
    ],
)
def test_what_one_pass_cannot_learn_is_refused(sleep, formula, match):
    with pytest.raises(MultilevelError, match=match):
        mlv.Model(formula, dd.from_pandas(sleep, npartitions=2))


def test_arrays_for_weights_are_refused(sleep):
    with pytest.raises(MultilevelError, match="weights as a column name"):
        mlv.Model("Reaction ~ Days + (1 | Subject)", dd.from_pandas(sleep, npartitions=2), weights=np.ones(len(sleep)))


def test_a_missing_parquet_folder_is_refused(tmp_path):
    with pytest.raises(MultilevelError, match="cannot read Parquet"):
        mlv.Model("y ~ 1 + (1 | g)", str(tmp_path / "nothing"))


# ---------------------------------------------------------------------------- Bayesian fits from the sums
def test_sampler_inputs_are_the_centred_cross_products(messy_sleep):
    """The samplers' centred design comes from the linear map of the cross-products: the same as from the rows."""
    formula = "Reaction ~ Days + w + (Days | Subject)"
    whole = mlv.Model(formula, messy_sleep, weights="w")
    model = mlv.Model(formula, dd.from_pandas(messy_sleep, npartitions=3), weights="w")
    d0, cp0, columns0, _ = sampler_inputs(whole)
    d1, cp1, columns1, _ = sampler_inputs(model)
    assert d1.fixed_names == d0.fixed_names == ["Days", "w", "(Intercept)"]
    np.testing.assert_allclose(columns1.centre, columns0.centre, rtol=1e-12)
    assert_same_cross_products(cp0, cp1)
    assert default_priors(model) == default_priors(whole)  # few rows: the sketch holds them all


def test_nuts_from_partitions_agrees_with_memory(sleep):
    """NUTS reads only the cross-products; trajectories part at rounding level, so means agree within Monte
    Carlo error (0.5 posterior SD is over 7 of its standard errors here)."""
    formula = "Reaction ~ Days + (Days | Subject)"
    kwargs = dict(chains=2, draws=300, warmup=300, seed=2, progress=False)
    a = mlv.Model(formula, sleep).sample(**kwargs).summary()
    b = mlv.Model(formula, dd.from_pandas(sleep, npartitions=3)).sample(**kwargs).summary()
    assert ((b["mean"] - a["mean"]).abs() < 0.5 * a["sd"]).all()


def test_residual_sum_of_squares_as_a_quadratic_form():
    pen = mlv.datasets.load("Penicillin").assign(w=np.linspace(0.5, 2.0, 144), x=np.cos(np.arange(144)))
    model = mlv.Model("diameter ~ x + (1 + x | plate) + (1 | sample)", pen, weights="w")
    fit = model.fit()
    e = model.design.y - fit.fitted()
    expected = float((model.design.weights * e) @ e)
    assert residual_sum_of_squares(model.cross_products, fit.beta, fit.random_effects) == pytest.approx(expected, rel=1e-9)


def test_response_sketch_keeps_quantiles_within_its_rank_bound():
    """200k values in 17 partitions merged in a tree: median and MAD within 2 / SKETCH_SIZE in rank."""
    y = np.random.default_rng(5).lognormal(size=200_000)
    parts = [Sketch.of(chunk, None) for chunk in np.array_split(y, 17)]
    # unit weights given, or implied: the same quantiles (positions agree to n eps of a rank, so values to that
    # share of the widest gap between neighbours)
    head = y[:20_000]
    bound = len(head) * np.finfo(float).eps * np.max(np.diff(np.sort(head)))
    np.testing.assert_allclose(Sketch.of(head, None).values, Sketch.of(head, np.ones(len(head))).values, rtol=0, atol=bound)
    sample = Sketch.merge(Sketch.merge(*parts[:8]), Sketch.merge(*parts[8:])).sample()
    med = np.median(sample)
    assert abs(np.mean(y <= med) - 0.5) < 2 / SKETCH_SIZE
    mad = np.median(np.abs(sample - med))
    assert abs(np.mean(np.abs(y - np.median(y)) <= mad) - 0.5) < 3 / SKETCH_SIZE


@pytest.mark.parametrize("groups", [np.array([30, 4, 7, 4, 30, 12]), np.array([0.5, -2.0, 1e-3, 0.5, 3.0, -2.0])])
def test_numeric_grouping_factors_are_coded_by_their_learned_levels(groups):
    """Numeric group columns take the binary-search path: the codes of the labels' path (sorted numeric levels),
    -1 for new rows' unseen or missing levels, and the labels' refusal of model rows with an unseen level."""
    data = pd.DataFrame({"y": np.arange(12.0), "g": np.tile(groups, 2)})
    coding = learn_coding("y ~ 1 + (1 | g)", data)
    levels = np.unique(groups)
    np.testing.assert_array_equal(apply_coding(coding, data.iloc[3:9]).blocks[0].codes, np.searchsorted(levels, data.g[3:9]))
    new = pd.DataFrame({"g": [groups[1], 99.0, np.nan]})
    np.testing.assert_array_equal(apply_coding(coding, new, new=True).blocks[0].codes, [np.searchsorted(levels, groups[1]), -1, -1])
    with pytest.raises(MultilevelError, match="level\\(s\\) \\['99'\\] the coding"):
        apply_coding(coding, pd.DataFrame({"y": [1.0], "g": [99]}))


@pytest.mark.parametrize("ids", [np.array([5, -3, 5, 9, -3, 0, 9, 7]), np.array([2**40, 1, 2**40, 3]), np.array([1.5, 2.5, 1.5])])
def test_levels_pass_keeps_the_first_row_of_each_id(ids):
    """Integer ids found by a table over their range (or, wide or not integers, by hashing): the same rows, in the
    same order, as pandas' drop_duplicates."""
    rows = pd.DataFrame({"y": np.arange(len(ids), dtype=float), "g": ids})
    expected = pd.concat([rows.head(1), rows.drop_duplicates(subset=["g"])])
    pd.testing.assert_frame_equal(seen_in(rows, ["y", "g"], [("g",)], {"y": False}).rows, expected)


@pytest.mark.parametrize("formula, dataset", [MODELS[0], MODELS[3]])
def test_given_levels_skip_the_levels_pass(formula, dataset, tmp_path, monkeypatch):
    """With every grouping factor's levels given (in any order) the levels pass is not run, and the sums and the
    fit are those of the data in memory: from a Dask DataFrame (known categories) and from Parquet files (read
    3 rows at a time, the first rows incomplete, so the coding's sample comes from later rows)."""
    import multilevel.partition_sources as sources
    import multilevel.partitioned as partitioned

    data = mlv.datasets.load(dataset)
    response = formula.split("~")[0].strip()
    data = data.assign(**{response: data[response].astype(float)})
    data.loc[data.index[:4], response] = np.nan
    whole = mlv.Model(formula, data)
    groups = {g: data[g].unique()[::-1] for g in ("Subject", "plate", "sample") if g in data}
    monkeypatch.setattr(partitioned, "_levels_pass", None)
    monkeypatch.setattr(sources, "BATCH_ROWS", 3)
    data.to_parquet(tmp_path / "data.parquet")
    for source in (shuffled(data, 3), str(tmp_path / "data.parquet")):
        model = mlv.Model(formula, source, levels=groups)
        assert (model.nobs, model.design.n_dropped) == (whole.nobs, whole.design.n_dropped)
        assert [list(b.levels) for b in model.design.blocks] == [list(b.levels) for b in whole.design.blocks]
        assert_same_cross_products(whole.cross_products, model.cross_products)
        assert_same_fit(whole.fit(), model.fit())


@pytest.mark.parametrize("with_batch", [False, True])
def test_given_interaction_levels_skip_the_levels_pass(with_batch, tmp_path, monkeypatch):
    """An interaction of grouping factors given as its level combinations ({"batch:cask": [(b, c), ...]}, with or
    without batch's own levels, which the combinations imply): no levels pass, and the levels, sums and fit are
    those of the data in memory, from Parquet files and from a Dask DataFrame (grouping factors as strings)."""
    import multilevel.partitioned as partitioned

    data = mlv.datasets.load("Pastes").astype({"batch": str, "cask": str})
    formula = "strength ~ 1 + (1 | batch/cask)"
    whole = mlv.Model(formula, data)
    pairs = list(dict.fromkeys(zip(data.batch, data.cask)))[::-1]
    levels = {"batch:cask": pairs} | ({"batch": data.batch.unique()} if with_batch else {})
    monkeypatch.setattr(partitioned, "_levels_pass", None)
    data.to_parquet(tmp_path / "pastes.parquet")
    for source in (str(tmp_path / "pastes.parquet"), shuffled(data, 3)):
        model = mlv.Model(formula, source, levels=levels)
        assert [list(b.levels) for b in model.design.blocks] == [list(b.levels) for b in whole.design.blocks]
        assert_same_cross_products(whole.cross_products, model.cross_products)
        assert_same_fit(whole.fit(), model.fit())


@pytest.mark.parametrize("levels, match", [
    ({"batch:cask": [("A", "a", "x")]}, "each a tuple of 2 levels"),
    ({"batch:cask": "Aa"}, "distinct combinations"),
    ({"batch:cask": [("A", "a")], "batch": ["B"]}, "'batch' and the combinations given for 'batch:cask' differ"),
    ({"batch": ["A", "B"]}, r"missing: \['cask', 'batch:cask'\]"),
    ({"batch:cask": [("A", "a"), ("B", "b")]}, "levels= must list every level in the data"),
])
def test_given_interaction_levels_are_checked(tmp_path, levels, match):
    """Combinations must be tuples of one level per factor, agree with the factors' own given levels, and cover the
    data; an interaction without them is named as missing."""
    mlv.datasets.load("Pastes").astype({"batch": str, "cask": str}).to_parquet(tmp_path / "pastes.parquet")
    with pytest.raises(MultilevelError, match=match):
        mlv.Model("strength ~ 1 + (1 | batch/cask)", str(tmp_path / "pastes.parquet"), levels=levels)


@pytest.mark.parametrize("levels, match", [
    ({"Subject": ["a", "b"]}, "not values of its type"),
    ({"Subject": [308, 309]}, "levels= must list every level in the data"),
    ({"Subject": "all"}, "distinct values"),
    ({"Days": [0, 1], "Subject": ["308"]}, "not grouping factors"),
    ({}, "must give every grouping factor's levels"),
    ([1, 2], "must be a dict"),
])
def test_given_levels_are_checked(sleep, tmp_path, levels, match):
    """Given levels must be those of the data: each with rows, every row's level among them, of the column's type."""
    sleep.assign(Subject=sleep.Subject.astype(int)).to_parquet(tmp_path / "sleep.parquet")
    with pytest.raises(MultilevelError, match=match):
        mlv.Model("Reaction ~ Days + (Days | Subject)", str(tmp_path / "sleep.parquet"), levels=levels)


@pytest.mark.parametrize("formula, dataset", [MODELS[0], MODELS[3], MODELS[5], ("mAch ~ ses + minrty + sx + (1 | school)", "Hsb82")])
def test_known_categories_skip_the_levels_pass(formula, dataset, monkeypatch):
    """A Dask DataFrame's known categories, of grouping factors and of fixed-effect factors, are taken as their
    levels: the levels pass is not run, and the levels, sums and fit are those of the data in memory."""
    import multilevel.partitioned as partitioned

    data = mlv.datasets.load(dataset)
    whole = mlv.Model(formula, data)
    monkeypatch.setattr(partitioned, "_levels_pass", None)
    model = mlv.Model(formula, shuffled(data, 3))
    assert [list(b.levels) for b in model.design.blocks] == [list(b.levels) for b in whole.design.blocks]
    assert model.fixed_names == whole.fixed_names
    assert_same_cross_products(whole.cross_products, model.cross_products)
    assert_same_fit(whole.fit(), model.fit())


def test_known_integer_categories_are_coded_by_number(sleep, monkeypatch):
    """A grouping factor of integer categories (coded by number, not by their labels) with known categories: the
    in-memory levels and sums; a category outside the learned levels in a later partition is refused by its label."""
    import multilevel.partitioned as partitioned

    formula = "Reaction ~ Days + (Days | Subject)"
    data = sleep.assign(Subject=sleep.Subject.astype(int).astype("category"))
    whole = mlv.Model(formula, data)
    monkeypatch.setattr(partitioned, "_levels_pass", None)
    model = mlv.Model(formula, shuffled(data, 3))
    assert [list(b.levels) for b in model.design.blocks] == [list(b.levels) for b in whole.design.blocks]
    assert_same_cross_products(whole.cross_products, model.cross_products)
    rows = data.assign(Subject=data.Subject.cat.add_categories([999]))
    rows.loc[rows.index[-1], "Subject"] = 999
    with pytest.raises(MultilevelError, match=r"has level\(s\) \['999'\] the coding was not learned with"):
        apply_coding(whole.design.coding, rows)


@pytest.mark.parametrize("column, incomplete", [("school", False), ("sector", False), ("school", True)])
def test_known_categories_without_rows_are_refused_and_unknown_ones_learned(column, incomplete):
    """A known category without complete rows (unused, or only in rows with missing values) is refused as a level
    given in levels= is, naming the fix; with the categories made unknown the levels pass drops it, as in memory."""
    formula = "mAch ~ meanses*cses + sector*cses + (1 + cses | school)"
    data = mlv.datasets.load("Hsb82")
    if incomplete:  # the first school's rows all miss the response
        data.loc[data.school == data.school.iloc[0], "mAch"] = np.nan
        empty = str(data.school.iloc[0])
    else:
        data[column] = data[column].cat.add_categories(["unused"])
        empty = "unused"
    with pytest.raises(MultilevelError, match=rf"categories \['{empty}'\] of '{column}' have no complete rows.*as_unknown"):
        mlv.Model(formula, shuffled(data, 3))
    source = shuffled(data, 3)
    source[column] = source[column].cat.as_unknown()
    whole = mlv.Model(formula, data)
    model = mlv.Model(formula, source)
    assert [list(b.levels) for b in model.design.blocks] == [list(b.levels) for b in whole.design.blocks]
    assert_same_cross_products(whole.cross_products, model.cross_products)


def test_given_levels_without_rows_and_in_memory_are_refused(sleep):
    levels = {"Subject": list(sleep.Subject.cat.categories) + ["999"]}
    data = dd.from_pandas(sleep.assign(Subject=sleep.Subject.astype(str)), npartitions=2)
    with pytest.raises(MultilevelError, match=r"\['999'\] of 'Subject' given in levels= have no complete rows"):
        mlv.Model("Reaction ~ Days + (Days | Subject)", data, levels=levels)
    with pytest.raises(MultilevelError, match="levels= is for partitioned data"):
        mlv.Model("Reaction ~ Days + (Days | Subject)", sleep, levels=levels)


@pytest.mark.parametrize("formula, dataset, group", [
    (MODELS[0][0], "sleepstudy", "Subject"),
    (MODELS[3][0], "Penicillin", "plate"),
    (MODELS[3][0], "Penicillin", "sample"),  # the second term sparse: the columns of Z_1'Z_2 remapped
    (MODELS[6][0], "radon", "county"),
    (INSTEVAL, "InstEval", "s"),
])
def test_sorted_partitions_hold_sparse_partials_with_the_dense_sums(formula, dataset, group):
    """Rows sorted by a grouping factor, so each of 17 partitions sees a narrow slice of its levels: those
    partitions' sums are held over only the levels they see (no full-length arrays), and their tree-sum equals the
    in-memory cross-products to 1e-12 (other terms dense, the off-diagonal blocks of crossed terms remapped)."""
    data = mlv.datasets.load(dataset)
    whole = mlv.Model(formula, data)
    rows = data.sort_values(group, kind="stable")
    coding = whole.design.coding
    term = next(i for i, t in enumerate(coding.terms) if t.term.group == group)
    part = partial_sums(rows.iloc[: len(rows) // 17], coding, whole.cross_products.scaling, {})
    m = len(coding.terms[term].levels)
    assert part.seen[term] is not None and len(part.seen[term]) <= m / 4
    assert part.cp.diag[term].shape[0] == len(part.seen[term]) == len(part.level_rows[term])
    model = mlv.Model(formula, dd.from_pandas(rows, npartitions=17, sort=False))
    assert_same_cross_products(whole.cross_products, model.cross_products)


def test_partials_are_sparse_over_a_narrow_range_or_few_rows():
    """A term's partial is held over a range of codes within a quarter of its levels (no sort), over the distinct
    codes of rows fewer than a quarter of the levels, else over every level; codes become positions in it."""
    data = pd.DataFrame({"y": np.arange(6.0), "g": [10, 12, 11, 12, 10, 10]})
    coding = learn_coding("y ~ 1 + (1 | g)", pd.DataFrame({"y": np.zeros(100), "g": np.arange(100)}))
    local, seen = localised(apply_coding(coding, data))
    np.testing.assert_array_equal(seen[0], [10, 11, 12])
    np.testing.assert_array_equal(local.blocks[0].codes, [0, 2, 1, 2, 0, 0])
    assert list(local.blocks[0].levels) == ["10", "11", "12"]
    local, seen = localised(apply_coding(coding, data.assign(g=[5, 90, 5, 17, 90, 5])))
    np.testing.assert_array_equal(seen[0], [5, 17, 90])
    np.testing.assert_array_equal(local.blocks[0].codes, [0, 2, 0, 1, 2, 0])
    wide = pd.DataFrame({"y": np.zeros(30), "g": np.arange(0, 90, 3)})
    assert localised(apply_coding(coding, wide))[1] == [None]


# ---------------------------------------------------------------------------- inference from 1, 3 and 17 partitions
INFERENCE = [  # sleepstudy's correlated slopes and Penicillin's crossed intercepts, with a point of the samplers' space
    (MODELS[0], [3.2, 1.8, 0.3, 3.3, 251.0]),
    (MODELS[3], [-0.2, 0.7, -0.6, 23.0]),
]


@pytest.mark.parametrize("partitions", [1, 3, 17])
@pytest.mark.parametrize("spec", INFERENCE, ids=["sleepstudy", "Penicillin"])
def test_satterthwaite_profiles_and_predictions_are_those_in_memory(spec, partitions):
    """Each path optimised on its own (theta within the optimiser's 1e-5): Satterthwaite df and p-values (derivatives
    of the criterion there) and predictions for new rows, an unseen level among them, to 1e-6; profile intervals
    (each bound a root of the re-optimised profile) to 1e-6 (measured: 3e-7 on sleepstudy, 1e-10 on Penicillin)."""
    (formula, dataset), _ = spec
    whole, fit = in_memory(formula, dataset).fit(), from_partitions(formula, dataset, partitions).fit()
    for column in ("estimate", "std_error", "df", "p_value"):
        np.testing.assert_allclose(fit.fixed_effects[column], whole.fixed_effects[column], rtol=1e-6)
    np.testing.assert_allclose(fit.confint(method="profile"), whole.confint(method="profile"), rtol=1e-6)
    data = mlv.datasets.load(dataset)
    new = data.iloc[::5].copy()
    group = next(iter(fit.model.n_levels))
    new[group] = new[group].astype(str).where(np.arange(len(new)) % 4 > 0, "unseen")
    np.testing.assert_allclose(fit.predict(new), whole.predict(new), rtol=1e-6)


@pytest.mark.parametrize("partitions", [1, 3, 17])
@pytest.mark.parametrize("spec", INFERENCE, ids=["sleepstudy", "Penicillin"])
def test_samplers_read_the_in_memory_posterior_from_partitions(spec, partitions):
    """The collapsed density NUTS samples and its gradient, at a point, equal those in memory (1e-10: sums of
    cross-products); the Gibbs sampler's seeded draws are the same draws (1e-9 of a posterior SD)."""
    from multilevel.nuts import setup_jax

    setup_jax()
    import jax
    import jax.numpy as jnp

    from multilevel.collapsed import jax_data, log_density, make_layout
    from multilevel.engine import Engine
    from multilevel.priors import resolve_priors

    (formula, dataset), x = spec
    whole, model = in_memory(formula, dataset), from_partitions(formula, dataset, partitions)
    values = []
    for m in (whole, model):
        design, cp, _, intercept = sampler_inputs(m)
        layout = make_layout(m, resolve_priors(m, None), design.p - int(intercept), intercept)
        data = {k: jnp.asarray(v) for k, v in jax_data(Engine(cp, [b.k for b in design.blocks], [b.m for b in design.blocks]), layout).items()}
        value, grad = jax.value_and_grad(lambda z: log_density(layout, data, z))(jnp.asarray(x, dtype=float))
        values.append((float(value), np.asarray(grad)))
    assert values[1][0] == pytest.approx(values[0][0], rel=1e-10)
    np.testing.assert_allclose(values[1][1], values[0][1], rtol=1e-8, atol=1e-10 * np.abs(values[0][1]).max())
    kwargs = dict(chains=1, draws=100, warmup=100, seed=4, sampler="gibbs", progress=False)
    a, b = whole.sample(**kwargs).summary(), model.sample(**kwargs).summary()
    np.testing.assert_allclose(b["mean"], a["mean"], rtol=0, atol=1e-9 * a["sd"].min())


# ---------------------------------------------------------------------------- statistics of a fit from the sums
def at_in_memory_optimum(formula: str, dataset: str, partitions: int, method: str = "REML"):
    """The in-memory fit and the partitioned model's fit at its theta (the same parameters, to the sums' rounding)."""
    whole = in_memory(formula, dataset).fit(method=method)
    info = OptimumInfo(whole.theta, 0.0, 0, "")
    return whole, fit_at(from_partitions(formula, dataset, partitions), method, None, info, warn=False)


@pytest.mark.parametrize("formula, dataset", MODELS)
@pytest.mark.parametrize("partitions", [1, 3, 17])
def test_icc_r2_and_log_likelihood_are_those_in_memory(formula, dataset, partitions):
    """ICC (adjusted and conditional), R² and the variance decomposition from the sums equal those of the rows to
    1e-8; the pointwise log-likelihood, a lazy Dask series, equals the in-memory one to 1e-10."""
    whole, fit = at_in_memory_optimum(formula, dataset, partitions)
    for table in ("icc", "r2", "variance_decomposition"):
        np.testing.assert_allclose(getattr(fit, table)().to_numpy(float), getattr(whole, table)().to_numpy(float),
                                   rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(fit.icc(conditional=True)["estimate"], whole.icc(conditional=True)["estimate"], rtol=1e-8)
    lazy = fit.log_likelihood()
    assert isinstance(lazy, dd.Series)
    np.testing.assert_allclose(lazy.compute(scheduler="synchronous").sort_index().to_numpy(), whole.log_likelihood(),
                               rtol=1e-10)


def test_icc_from_the_sums_matches_lme4():
    """Hsb82's null model in 17 shuffled partitions: the ICC of lme4's reference (0.180351792300722)."""
    fit = from_partitions("mAch ~ 1 + (1 | school)", "Hsb82", 17).fit()
    assert fit.icc()["estimate"]["school"] == pytest.approx(reference("hsb82_null_reml")["ICC"]["value"], rel=1e-6)


def test_row_moments_of_shifted_slopes_and_products_are_those_of_the_rows(sleep):
    """A random slope far from zero (held centred in its term) and a product of far columns: the mean z z' of each
    term and var(X beta) from the sums equal those of the rows (1e-12)."""
    from multilevel.variance import _term_moments

    data = sleep.assign(Days=sleep.Days + 1000.0, x=np.sin(np.arange(len(sleep))) + 50.0)
    formula = "Reaction ~ Days * x + (Days | Subject)"
    whole, model = mlv.Model(formula, data), mlv.Model(formula, shuffled(data, 17))
    assert model.cross_products.held.terms[0] is not None and model.cross_products.held.products
    for ours, theirs in zip(model.design.moments.terms, _term_moments(whole.design.blocks, whole.design.nobs), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    beta = np.random.default_rng(1).normal(size=(5, whole.design.p))
    np.testing.assert_allclose(model.design.moments.fixed_variance(beta), (beta @ whole.design.X.T).var(axis=-1, ddof=1),
                               rtol=1e-10)


@pytest.mark.parametrize("partitions", [1, 3, 17])
def test_weighted_icc_r2_and_log_likelihood_are_those_in_memory(messy_sleep, partitions):
    """With weights (and missing values, an offset, an aliased column) the sums are weighted: ICC and R² average
    over the rows unweighted, as in memory, from the unweighted moments the pass adds (1e-8); the log-likelihood
    (sigma / sqrt(w) per row) is the in-memory one (1e-10)."""
    formula = "Reaction ~ Days + Days2 + (Days | Subject)"
    with pytest.warns(MultilevelWarning, match="Days2"):
        whole = mlv.Model(formula, messy_sleep, weights="w", offset="off").fit()
    with pytest.warns(MultilevelWarning, match="Days2"):
        model = mlv.Model(formula, shuffled(messy_sleep, partitions), weights="w", offset="off")
    fit = fit_at(model, "REML", None, OptimumInfo(whole.theta, 0.0, 0, ""), warn=False)
    for table in ("icc", "r2", "variance_decomposition"):
        np.testing.assert_allclose(getattr(fit, table)().to_numpy(float), getattr(whole, table)().to_numpy(float),
                                   rtol=1e-8)
    np.testing.assert_allclose(fit.log_likelihood().compute(scheduler="synchronous").sort_index().to_numpy(),
                               whole.log_likelihood(), rtol=1e-10)


@pytest.mark.parametrize("partitions", [1, 3, 17])
def test_likelihood_ratio_tests_are_those_in_memory(partitions):
    """anova / compare of two partitioned fits (ML refits from the sums) is the in-memory table (1e-6: each fit's
    theta within the optimiser's precision)."""
    small, big = MODELS[8], MODELS[0]
    whole = mlv.anova(in_memory(*small).fit(), in_memory(*big).fit())
    ours = mlv.compare({"model1": from_partitions(*small, partitions).fit(), "model2": from_partitions(*big, partitions).fit()})
    np.testing.assert_allclose(ours.to_numpy(float), whole.to_numpy(float), rtol=1e-6)


def test_fits_of_different_partitioned_data_are_not_compared(sleep):
    a = mlv.Model(MODELS[0][0], shuffled(sleep, 3)).fit(method="ML")
    b = mlv.Model(MODELS[0][0], shuffled(sleep.iloc[1:], 3)).fit(method="ML")
    with pytest.raises(MultilevelError, match="different data"):
        mlv.anova(a, b)


def test_tables_of_a_partitioned_fit_are_those_in_memory():
    """summary, confint, variance components, group effects and the notebook view run from the sums (values: the
    in-memory fit's, 1e-6 as the fits' theta)."""
    whole, fit = in_memory(*MODELS[0]).fit(), from_partitions(*MODELS[0], 3).fit()
    assert fit.summary().splitlines()[3:] and "Subject" in fit._repr_html_()
    np.testing.assert_allclose(fit.confint().to_numpy(float), whole.confint().to_numpy(float), rtol=1e-6)
    np.testing.assert_allclose(fit.variance_components["variance"], whole.variance_components["variance"], rtol=1e-6)
    np.testing.assert_allclose(fit.group_effects["estimate"], whole.group_effects["estimate"], rtol=1e-6, atol=1e-6)


ROWS_PER_DRAW = {
    "loo": lambda fit, post: post.loo(),
    "waic": lambda fit, post: post.waic(),
    "dic": lambda fit, post: post.dic(),
    "posterior ppc": lambda fit, post: post.ppc(),
    "compare posteriors": lambda fit, post: mlv.compare({"a": post, "b": post}),
    "ppc": lambda fit, post: fit.ppc(n=2),
    "bootstrap": lambda fit, post: fit.bootstrap(n=2),
    "bootstrap icc": lambda fit, post: fit.icc(bootstrap=2),
    "simulate": lambda fit, post: fit.simulate(2),
    "pooling of levels that cannot identify their coefficients": lambda fit, post: from_partitions(*MODELS[6], 3).fit().pooling(),
    "methods": lambda fit, post: mlv.methods(fit.model),
    "posterior log-likelihood": lambda fit, post: post.log_likelihood(),
    "posterior predictive": lambda fit, post: post.posterior_predictive(),
    "to_arviz": lambda fit, post: post.to_arviz(),
    "posterior predictions of the rows": lambda fit, post: post.predict(),
}


@pytest.fixture(scope="module")
def partitioned_results():
    model = from_partitions(*MODELS[0], 3)
    return model.fit(), model.sample(chains=1, draws=600, warmup=100, seed=2, sampler="gibbs", progress=False)


@pytest.mark.parametrize("what", ROWS_PER_DRAW)
def test_what_needs_rows_per_draw_is_refused_naming_the_alternatives(partitioned_results, what):
    with pytest.raises(MultilevelError, match="not held in memory.*subsample in memory.*group-level K-fold"):
        ROWS_PER_DRAW[what](*partitioned_results)


def test_report_from_the_sums_save_refused_and_posterior_shares_work(partitioned_results, tmp_path):
    """The HTML report of partitioned results: group sizes from the per-level row counts of the pass (sleepstudy:
    18 subjects of 10 rows), the figures reading every row left out and said so."""
    fit, post = partitioned_results
    page = mlv.report([fit, post], tmp_path / "report.html").read_text()
    whole = mlv.report([in_memory(*MODELS[0]).fit()], tmp_path / "memory.html").read_text()
    start = whole.index("Rows used")
    groups = whole[start : whole.index("</table>", start)]  # rows used, group sizes: those of the rows
    assert groups in page and "Rows used: 180" in groups and 'data-value="18"' in groups
    assert "figures that read every row" in page and "Posterior predictive check" not in page
    with pytest.raises(MultilevelError, match="cannot be saved"):
        fit.save(tmp_path / "fit.json")
    whole = in_memory(*MODELS[0]).sample(chains=1, draws=600, warmup=100, seed=2, sampler="gibbs", progress=False)
    for table in ("icc", "r2"):
        np.testing.assert_allclose(getattr(post, table)().to_numpy(float), getattr(whole, table)().to_numpy(float),
                                   rtol=1e-8)


@pytest.mark.parametrize("formula, dataset, group", [
    (MODELS[0][0], "sleepstudy", None), (MODELS[3][0], "Penicillin", "sample"), (MODELS[10][0], "radon", None),
    ("mAch ~ ses + minrty + (1 | school)", "Hsb82", None),
])
@pytest.mark.parametrize("partitions", [1, 3, 17])
def test_pooling_tables_from_the_sums_are_those_in_memory(formula, dataset, group, partitions):
    """Group sizes, no- and complete-pooling estimates from the sums (each level's block eliminated in the normal
    equations) equal the in-memory least squares to 1e-8; partial pooling is the fit's."""
    whole = in_memory(formula, dataset).fit().pooling(group)
    fit = from_partitions(formula, dataset, partitions).fit()
    ours = fit.pooling(group)
    for column in ("n", "no_pooling", "complete_pooling"):
        np.testing.assert_allclose(ours[column], whole[column], rtol=1e-8)
    np.testing.assert_allclose(ours["partial_pooling"], whole["partial_pooling"], rtol=1e-6)


def test_unidentified_pooling_is_refused_as_in_memory():
    formula = "mAch ~ meanses*cses + sector*cses + (1 + cses | school)"
    for model in (in_memory(formula, "Hsb82"), from_partitions(formula, "Hsb82", 3)):
        with pytest.raises(MultilevelError, match="not identified.*group-level predictor"):
            model.fit().pooling()
