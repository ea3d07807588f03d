"""Files and faults: a full disk or Ctrl-C while writing a report or a result leaves nothing behind (the old
file, if any, stays whole), and anything but a result is refused before writing."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hostile_support import refused, sleep_fit  # noqa: F401 (fixtures)

import multilevel as mlv
from multilevel.cli import main

REAL_WRITE_TEXT = Path.write_text


def half_then(error):
    """A Path.write_text that writes half the text, then fails as a full disk (or an interrupt) would."""

    def write_text(self, data, *args, **kwargs):
        REAL_WRITE_TEXT(self, data[: len(data) // 2], *args, **kwargs)
        raise error

    return write_text


FAULTS = [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("fault", FAULTS, ids=["disk-full", "ctrl-c"])
def test_report_interrupted_leaves_no_file(sleep_fit, tmp_path, monkeypatch, fault):
    monkeypatch.setattr(Path, "write_text", half_then(fault))
    with pytest.raises(type(fault)):
        mlv.report(sleep_fit, tmp_path / "r.html")
    assert _leftovers(tmp_path) == []
    monkeypatch.undo()
    mlv.report(sleep_fit, tmp_path / "r.html")  # the rerun is not refused: nothing half-written is in the way
    assert (tmp_path / "r.html").read_text().endswith("</html>")


@pytest.mark.parametrize("fault", FAULTS, ids=["disk-full", "ctrl-c"])
def test_save_interrupted_keeps_the_old_file(sleep_fit, tmp_path, monkeypatch, fault):
    target = tmp_path / "fit.json"
    mlv.save(sleep_fit, target)
    before = target.read_bytes()
    monkeypatch.setattr(Path, "write_text", half_then(fault))
    with pytest.raises(type(fault)):
        mlv.save(sleep_fit, target, force=True)
    assert target.read_bytes() == before and _leftovers(tmp_path) == ["fit.json"]


def test_overwritten_report_is_whole_or_old(sleep_fit, tmp_path, monkeypatch):
    target = tmp_path / "r.html"
    mlv.report(sleep_fit, target)
    before = target.read_text()
    monkeypatch.setattr(Path, "write_text", half_then(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError):
        mlv.report(sleep_fit, target, force=True)
    assert target.read_text() == before and _leftovers(tmp_path) == ["r.html"]


def test_cli_report_on_a_full_disk_is_one_line_and_no_file(sleep_fit, tmp_path, monkeypatch):
    mlv.save(sleep_fit, tmp_path / "fit.json")
    monkeypatch.setattr(Path, "write_text", half_then(OSError(errno.ENOSPC, "No space left on device")))
    out = CliRunner().invoke(main, ["report", str(tmp_path / "fit.json"), "-o", str(tmp_path / "r.html")])
    assert out.exit_code == 2 and "No space left on device" in out.stderr
    assert _leftovers(tmp_path) == ["fit.json"]


NOT_RESULTS = ["not a result", 3.5, None, {"a": "b"}, [1, 2], mlv.Model]


@pytest.mark.parametrize("value", NOT_RESULTS, ids=["str", "float", "none", "dict-of-str", "list-of-int", "class"])
def test_report_refuses_what_is_not_a_result(value, tmp_path):
    refused(lambda: mlv.report(value, tmp_path / "r.html"), "results", "model.fit()")
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("value", ["not a result", 3.5, None, mlv.datasets.load("sleepstudy")], ids=["str", "float", "none", "frame"])
def test_save_refuses_what_is_not_a_result(value, tmp_path):
    refused(lambda: mlv.save(value, tmp_path / "r.json"), "result", "model.fit()")
    assert _leftovers(tmp_path) == []


def test_report_names_the_bad_entry_of_a_dict(sleep_fit, tmp_path):
    refused(lambda: mlv.report({"good": sleep_fit, "bad": "text"}, tmp_path / "r.html"), "'bad'", "str")


@pytest.mark.parametrize("given", ["column", "values"])
@pytest.mark.parametrize("what", ["offset", "weights"])
def test_a_fit_with_weights_or_an_offset_named_by_column_reopens_with_them(tmp_path, what, given):
    """offset='o' (a column name) was dropped on reload: the GLMM's modes were recomputed without it and its
    predictions moved by up to 5.6 on the log scale, silently. Saved by name now (values as before)."""
    ticks = mlv.datasets.load("grouseticks")
    values = np.log(ticks.HEIGHT).to_numpy() if what == "offset" else 1.0 + (np.arange(len(ticks)) % 3)
    frame = ticks.assign(c=values)
    f = mlv.Model("TICKS ~ YEAR + (1 | BROOD)", frame, family="poisson",
                  **{what: "c" if given == "column" else values}).fit(warn=False)
    f.save(tmp_path / "fit.json")
    back = mlv.load(tmp_path / "fit.json")
    assert getattr(back.model.design, what) is not None
    np.testing.assert_allclose(back.predict(), f.predict(), rtol=1e-10)
    np.testing.assert_array_equal(back.beta, f.beta)


def test_a_posterior_with_weights_named_by_column_reopens_with_them(tmp_path):
    sleep = mlv.datasets.load("sleepstudy").assign(w=lambda d: 1.0 + (d.index % 3))
    post = mlv.Model("Reaction ~ Days + (1 | Subject)", sleep, weights="w").sample(
        sampler="gibbs", chains=1, draws=50, warmup=50, progress=False)
    post.save(tmp_path / "post.nc")
    back = mlv.load(tmp_path / "post.nc")
    np.testing.assert_array_equal(back.model.design.weights, post.model.design.weights)
    np.testing.assert_array_equal(back.log_likelihood(), post.log_likelihood())


def test_loo_of_too_few_draws_is_refused_by_name():
    """20 draws: ArviZ's 'n_draws_tail must be at least 5' leaked as a ValueError traceback."""
    short = mlv.Model("Reaction ~ Days + (1 | Subject)", mlv.datasets.load("sleepstudy")).sample(
        sampler="gibbs", chains=1, draws=20, warmup=50, seed=1, progress=False)
    refused(lambda: short.loo(), "psis-loo", "sample more draws")


def test_python_dash_m_with_arguments_is_the_command():
    """`python -m multilevel --help` ran the sleepstudy demo, ignoring the arguments."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "multilevel", "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "Commands:" in run.stdout and "REML criterion" not in run.stdout


# ---------------------------------------------------------------- a posterior's held coefficients, tampered with
@pytest.fixture(scope="module")
def held_posterior(tmp_path_factory):
    """A Gibbs posterior whose predictor lies far from zero (held centred), saved: its file keeps the held coefficients."""
    sleep = mlv.datasets.load("sleepstudy")
    post = mlv.Model("Reaction ~ Days + (1 | Subject)", sleep.assign(Days=sleep.Days + 1e9)).sample(
        sampler="gibbs", chains=1, draws=20, warmup=50, seed=1, progress=False)
    path = tmp_path_factory.mktemp("held") / "post.nc"
    mlv.save(post, path)
    return post, path.read_bytes()


SCALINGS = {
    "not-json": "{not json",
    "a-list": "[1, 2, 3]",
    "short-centre": '{"centre": [0.0], "scale": [1.0, 1.0, 1.0], "unit": [1.0, 0.0], "products": []}',
    "negative-scale": '{"centre": [0.0, 1e9, 0.0], "scale": [1.0, -1.0, 1.0], "unit": [1.0, 0.0], "products": []}',
    "index-out-of-range": '{"centre": [0.0, 1e9, 0.0], "scale": [1.0, 1.0, 1.0], "unit": [1.0, 0.0], "products": [[7, [1], []]]}',
    "code-as-index": '{"centre": [0.0, 1e9, 0.0], "scale": [1.0, 1.0, 1.0], "unit": [1.0, 0.0], '
                     '"products": [["__import__(\'os\').system(\'touch pwned\')", [1], []]]}',
    "nan-centre": '{"centre": [0.0, NaN, 0.0], "scale": [1.0, 1.0, 1.0], "unit": [1.0, 0.0], "products": []}',
}


@pytest.mark.parametrize("scaling", SCALINGS.values(), ids=SCALINGS.keys())
def test_a_tampered_held_scaling_is_refused_as_damaged(held_posterior, tmp_path, scaling, monkeypatch):
    """The held coefficients' scaling is data, checked on load (lengths, finite centres, positive scales, column indices
    in range; an index is never evaluated): anything else is our error naming the file as damaged."""
    import h5py

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "post.nc"
    path.write_bytes(held_posterior[1])
    with h5py.File(path, "r+") as f:
        f["held_coefficients"].attrs["scaling"] = scaling
    error = refused(lambda: mlv.load(path), "damaged")
    assert "post.nc" in str(error) or "scaling" in str(error)
    assert not (tmp_path / "pwned").exists()


def test_a_posterior_file_without_held_coefficients_still_loads(held_posterior, tmp_path):
    """Files written before the held coefficients were kept reopen with the user's coefficients (predictions formed of
    the user's columns, as they were then)."""
    import h5py

    post, whole = held_posterior
    path = tmp_path / "old.nc"
    path.write_bytes(whole)
    with h5py.File(path, "r+") as f:
        del f["held_coefficients"]
    back = mlv.load(path)
    assert back.held is None
    np.testing.assert_array_equal(back.beta, post.beta)
    np.testing.assert_allclose(back.predict()["estimate"], post.predict()["estimate"], rtol=1e-6)


@pytest.mark.parametrize("kind", ["posterior", "occupancy"])
def test_held_draws_that_are_not_finite_are_refused(held_posterior, tmp_path, kind):
    """Held coefficients overwritten with NaN: before, the file loaded and every prediction was NaN."""
    import h5py

    path = tmp_path / "post.nc"
    if kind == "posterior":
        path.write_bytes(held_posterior[1])
        variable = "held_coefficients/beta"
    else:
        oven = mlv.datasets.load("oven_occupancy")
        far = oven.assign(Elevation_scaled=oven.Elevation_scaled + 1e6)
        mlv.save(mlv.Occupancy("~ Elevation_scaled", "~ day_scaled", far).sample(chains=1, draws=20, warmup=50, seed=1,
                                                                                 sampler="gibbs"), path)
        variable = "held_coefficients/draws"
    with h5py.File(path, "r+") as f:
        f[variable][...] = np.nan
    refused(lambda: mlv.load(path), "held coefficients", "damaged")


def test_a_folder_as_the_target_is_refused_even_with_force(sleep_fit, tmp_path):
    """Before: with force=True the atomic rename failed with '[Errno 21] Is a directory' naming the hidden partial file
    (which was removed; the folder was kept). Now refused before anything is written, in the API and the CLI."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep").write_text("x")
    refused(lambda: mlv.report(sleep_fit, folder, force=True), "is a folder", "file name")
    (tmp_path / "fit.json").mkdir()
    refused(lambda: mlv.save(sleep_fit, tmp_path / "fit.json", force=True), "is a folder")
    data = tmp_path / "s.csv"
    mlv.datasets.load("sleepstudy").to_csv(data, index=False)
    out = CliRunner().invoke(main, ["fit", str(data), "Reaction ~ Days + (1 | Subject)", "--report", str(folder), "--force"])
    assert out.exit_code == 2 and "is a folder" in out.stderr and "Traceback" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.json", "out", "s.csv"] and (folder / "keep").read_text() == "x"


def test_written_files_get_ordinary_permissions(sleep_fit, tmp_path):
    """The atomic write's hidden file is private (mkstemp: 0600); renamed as it was, every report and result could be
    read by its owner only. A new file now gets the umask's permissions, an overwritten one keeps its own."""
    import os
    import stat

    umask = os.umask(0o022)
    try:
        mlv.report(sleep_fit, tmp_path / "r.html")
        assert stat.S_IMODE((tmp_path / "r.html").stat().st_mode) == 0o644
        mlv.save(sleep_fit, tmp_path / "fit.json")
        assert stat.S_IMODE((tmp_path / "fit.json").stat().st_mode) == 0o644
        (tmp_path / "fit.json").chmod(0o640)
        mlv.save(sleep_fit, tmp_path / "fit.json", force=True)
        assert stat.S_IMODE((tmp_path / "fit.json").stat().st_mode) == 0o640
    finally:
        os.umask(umask)
