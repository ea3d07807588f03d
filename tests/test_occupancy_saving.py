"""Occupancy results saved and reopened: an ML fit as JSON, a posterior as netCDF; every number and table of the
reopened result equals the original's, and a file's formulas are data, never code."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

import multilevel as mlv
from multilevel.errors import MultilevelError
from multilevel.io import load

DETECTION = "~ MinAfterSunset_scaled + Temperature_scaled"


@pytest.fixture(scope="module")
def pcru():
    df = mlv.datasets.load("pcru_occupancy")
    return df.assign(route=df["route"].astype(str))


@pytest.fixture(scope="module")
def fit(pcru):
    return mlv.Occupancy("~ 1", DETECTION, pcru).fit()


@pytest.fixture(scope="module")
def random_fit(pcru):
    return mlv.Occupancy("~ 1 + (1 | route)", DETECTION, pcru).fit(n_agq=3)


@pytest.fixture(scope="module")
def post(pcru):
    with pytest.warns(mlv.MultilevelWarning):  # few draws: ESS and R-hat warnings, saved too
        return mlv.Occupancy("~ 1", DETECTION + " + (1 | route)", pcru).sample(chains=2, draws=60, warmup=60, seed=2)


def _same_fit(back, fit):
    assert type(back) is type(fit)
    for name in ("loglik", "aic", "objective", "sigma", "nAGQ", "converged", "message", "warnings", "nobs", "n_params"):
        assert getattr(back, name) == getattr(fit, name), name
    assert np.array_equal(back.params, fit.params) and np.array_equal(back.vcov, fit.vcov, equal_nan=True)
    assert np.array_equal(back.sigma_se, fit.sigma_se, equal_nan=True)
    pd.testing.assert_frame_equal(back.fixed_effects, fit.fixed_effects)
    pd.testing.assert_frame_equal(back.variance_components, fit.variance_components)
    pd.testing.assert_frame_equal(back.group_effects, fit.group_effects)
    pd.testing.assert_series_equal(back.psi, fit.psi)
    pd.testing.assert_frame_equal(back.p, fit.p)
    pd.testing.assert_series_equal(back.conditional_occupancy, fit.conditional_occupancy)
    pd.testing.assert_series_equal(back.n_occupied(), fit.n_occupied())
    new = fit.model.data.head(3)
    pd.testing.assert_frame_equal(back.predict(new), fit.predict(new))
    assert back.summary() == fit.summary()


@pytest.mark.parametrize("which", ["fit", "random_fit"])
def test_fit_round_trip_keeps_every_number(which, request, tmp_path):
    fit = request.getfixturevalue(which)
    path = tmp_path / "occ.json"
    fit.save(path)
    record = json.loads(path.read_text())  # plain JSON
    assert record["kind"] == "occupancy fit" and record["format"] == "multilevel"
    _same_fit(load(path), fit)


def test_a_fit_without_a_maximum_keeps_its_nan_covariance_and_warning(pcru, tmp_path):
    with pytest.warns(mlv.MultilevelWarning, match="boundary fit"):
        fit = mlv.Occupancy("~ 1", DETECTION, pcru.assign(y=pcru["y"].where(pcru["y"].isna(), 1.0))).fit()
    assert np.isnan(fit.vcov).all()
    fit.save(tmp_path / "flat.json")
    _same_fit(load(tmp_path / "flat.json"), fit)


def test_posterior_round_trip_keeps_every_draw(post, tmp_path):
    path = tmp_path / "occ.nc"
    post.save(path)
    assert path.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"  # netCDF-4 (HDF5), not a pickle
    back = load(path)
    assert type(back) is type(post)
    for name in ("draws", "sd", "b", "z", "w", "site_loglik"):
        assert np.array_equal(getattr(back, name), getattr(post, name)), name
    assert back.stats.keys() == post.stats.keys()
    assert all(np.array_equal(back.stats[k], post.stats[k]) for k in post.stats)
    assert post.warnings
    for name in ("seed", "seconds", "prior_variance", "sampler", "warnings"):
        assert getattr(back, name) == getattr(post, name), name
    pd.testing.assert_frame_equal(back.summary(), post.summary())
    pd.testing.assert_frame_equal(back.group_effects, post.group_effects)
    pd.testing.assert_series_equal(back.conditional_occupancy, post.conditional_occupancy)
    new = post.model.data.head(3)
    pd.testing.assert_frame_equal(back.predict(new, part="p"), post.predict(new, part="p"))
    assert float(back.loo().elpd) == float(post.loo().elpd)
    assert back.finished is None and not back.partial


def test_a_partial_posterior_stays_marked_partial(post, tmp_path):
    """The draws of a run stopped by Ctrl-C (`finished`: the draws each chain had) reopen marked partial."""
    stopped = copy.copy(post)
    stopped.finished = [60, 75]
    stopped.save(tmp_path / "stopped.nc")
    back = load(tmp_path / "stopped.nc")
    assert back.partial and back.finished == [60, 75]


def test_planted_formulas_are_refused_and_never_run(fit, post, tmp_path):
    import h5py

    marker = tmp_path / "pwned"
    path = "+".join(f"chr({ord(c)})" for c in str(marker))
    planted = f"~ 1 + I(len(str(open({path}, chr(119)))))"
    fit.save(tmp_path / "fit.json")
    record = json.loads((tmp_path / "fit.json").read_text())
    record["detection"] = planted
    (tmp_path / "evil.json").write_text(json.dumps(record))
    with pytest.raises(MultilevelError, match="never evaluated as code"):
        load(tmp_path / "evil.json")
    post.save(tmp_path / "post.nc")
    with h5py.File(tmp_path / "post.nc", "r+") as f:
        f.attrs["occupancy"] = planted
    with pytest.raises(MultilevelError, match="never evaluated as code"):
        load(tmp_path / "post.nc")
    assert not marker.exists()


def test_files_that_contradict_themselves_are_refused(fit, post, tmp_path):
    import h5py

    fit.save(tmp_path / "fit.json")
    record = json.loads((tmp_path / "fit.json").read_text())
    record["params"] = record["params"][:2]
    (tmp_path / "short.json").write_text(json.dumps(record))
    with pytest.raises(MultilevelError, match="do not match its formulas"):
        load(tmp_path / "short.json")
    del record["vcov"]
    (tmp_path / "cut.json").write_text(json.dumps(record))
    with pytest.raises(MultilevelError, match="damaged or altered occupancy fit file.*vcov"):
        load(tmp_path / "cut.json")
    record = json.loads((tmp_path / "fit.json").read_text()) | {"version": 99}
    (tmp_path / "new.json").write_text(json.dumps(record))
    with pytest.raises(MultilevelError, match="newer multilevel"):
        load(tmp_path / "new.json")
    post.save(tmp_path / "post.nc")
    with h5py.File(tmp_path / "post.nc", "r+") as f:
        f.attrs["detection"] = DETECTION  # the saved draws hold a random intercept this formula lacks
    with pytest.raises(MultilevelError, match="saved draws are of.*damaged or altered"):
        load(tmp_path / "post.nc")
    with pytest.raises(MultilevelError, match="saved as .nc"):
        post.save(tmp_path / "post.json")
