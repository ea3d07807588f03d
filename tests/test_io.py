"""Saving and loading: JSON and netCDF round trips give back equal tables and numbers; files are never
overwritten unless asked, and only our own formats are read (no pickle)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import reference

import multilevel as mlv
from multilevel.errors import MultilevelError
from multilevel.io import load, save


@pytest.fixture(scope="module")
def model():
    return mlv.Model("Reaction ~ Days + (Days | Subject)", mlv.datasets.load("sleepstudy"))


@pytest.fixture(scope="module")
def reml(model):
    return model.fit()


@pytest.fixture(scope="module")
def post(model):
    return model.sample(chains=2, draws=100, warmup=100, seed=3, progress=False)


def test_fit_round_trip_keeps_every_number(reml, tmp_path):
    path = tmp_path / "fit.json"
    save(reml, path)
    back = load(path)
    ref = reference("sleepstudy_slopes_reml")
    assert back.objective == reml.objective == pytest.approx(ref["REMLcrit"], rel=1e-8)
    for name in ("sigma", "loglik", "aic", "bic", "nobs", "is_singular", "warnings", "method"):
        assert getattr(back, name) == getattr(reml, name)
    pd.testing.assert_frame_equal(back.fixed_effects, reml.fixed_effects)
    pd.testing.assert_frame_equal(back.variance_components, reml.variance_components)
    pd.testing.assert_frame_equal(back.group_effects, reml.group_effects, check_dtype=False)
    assert np.array_equal(back.fitted(), reml.fitted()) and np.array_equal(back.residuals(), reml.residuals())
    assert back.summary() == reml.summary()
    assert json.loads(path.read_text())["format"] == "multilevel"  # plain JSON, readable by anything


def test_posterior_round_trip_keeps_draws_and_tables(post, tmp_path):
    path = tmp_path / "post.nc"
    save(post, path)
    assert path.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"  # netCDF-4 (HDF5), not a pickle
    back = load(path)
    for name, draws in post.parameters().items():
        assert np.array_equal(back.parameters()[name], draws), name
    for ours, theirs in zip(back.b, post.b):
        assert np.array_equal(ours, theirs)
    pd.testing.assert_frame_equal(back.summary(), post.summary())
    pd.testing.assert_frame_equal(back.fixed_effects, post.fixed_effects)
    pd.testing.assert_frame_equal(back.variance_components, post.variance_components)
    pd.testing.assert_frame_equal(back.group_effects(), post.group_effects())
    assert back.warnings == post.warnings and back.seed == post.seed
    assert np.array_equal(back.stats["diverging"], post.stats["diverging"])
    assert np.allclose(back.log_likelihood(), post.log_likelihood())


def test_saved_posterior_is_an_arviz_datatree(post, tmp_path):
    import xarray as xr

    path = tmp_path / "post.nc"
    save(post, path)
    with xr.open_datatree(path, engine="h5netcdf") as tree:
        assert {"posterior", "sample_stats", "observed_data", "log_likelihood", "constant_data"} <= set(tree.children)
        assert tree.attrs["formula"] == "Reaction ~ Days + (Days | Subject)"
        assert np.array_equal(tree["posterior"]["sigma"].values, post.sigma)


def test_never_overwrites_unless_forced(reml, tmp_path):
    path = tmp_path / "fit.json"
    path.write_text("keep me")
    with pytest.raises(MultilevelError, match="already exists.*force"):
        save(reml, path)
    assert path.read_text() == "keep me"
    save(reml, path, force=True)
    assert load(path).sigma == reml.sigma


def test_wrong_suffix_missing_folder_and_foreign_files(reml, post, tmp_path):
    with pytest.raises(MultilevelError, match=r"\.json"):
        save(reml, tmp_path / "fit.nc")
    with pytest.raises(MultilevelError, match=r"\.nc"):
        save(post, tmp_path / "post.json")
    with pytest.raises(MultilevelError, match="does not exist"):
        save(reml, tmp_path / "no" / "fit.json")
    with pytest.raises(MultilevelError, match="no such file"):
        load(tmp_path / "absent.json")
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(MultilevelError, match="not a fit saved by multilevel"):
        load(tmp_path / "other.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(MultilevelError, match="not valid JSON"):
        load(tmp_path / "broken.json")
    (tmp_path / "x.pkl").write_bytes(b"\x80\x04")
    with pytest.raises(MultilevelError, match="not a saved result"):
        load(tmp_path / "x.pkl")
    (tmp_path / "bad.nc").write_bytes(b"not netcdf")
    with pytest.raises(MultilevelError, match="not a readable netCDF"):
        load(tmp_path / "bad.nc")


def test_categorical_data_survive_the_netcdf_round_trip(tmp_path):
    ref = reference("pastes_nested_reml")
    model = mlv.Model(ref["formula"], mlv.datasets.load("Pastes"))
    post = model.sample(chains=1, draws=60, warmup=60, seed=1, progress=False)
    save(post, tmp_path / "pastes.nc")
    back = load(tmp_path / "pastes.nc")
    assert back.model.n_levels == model.n_levels
    assert sorted(model.n_levels.values()) == sorted(ref["ngrps"].values())
    pd.testing.assert_frame_equal(back.group_effects(), post.group_effects())


def test_glmm_posterior_round_trip_keeps_its_family(tmp_path):
    """A binomial posterior's file holds its family: loading rebuilds the binomial model (it raised before)."""
    model = mlv.Model("incidence | trials(size) ~ period + (1 | herd)", mlv.datasets.load("cbpp"), family="binomial")
    post = model.sample(sampler="gibbs", chains=2, draws=60, warmup=50, seed=4, progress=False)
    post.save(tmp_path / "cbpp.nc")
    loaded = mlv.load(tmp_path / "cbpp.nc")
    assert loaded.model.family.name == "binomial" and loaded.sampler == "gibbs"
    np.testing.assert_array_equal(loaded.beta, post.beta)
    pd.testing.assert_frame_equal(loaded.icc(), post.icc())
