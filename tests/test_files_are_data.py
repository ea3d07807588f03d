"""A saved result from someone else is data, never code: a formula planted in a JSON or netCDF file is
refused before anything evaluates it (API and CLI), and files that contradict themselves or are truncated
raise our error naming the file."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

import multilevel as mlv
from multilevel.errors import MultilevelError
from multilevel.io import load, save
from multilevel.stored_formula import check_stored_formula

SLOPES = "Reaction ~ Days + (Days | Subject)"
COLUMNS = ["Reaction", "Days", "Subject"]


@pytest.fixture(scope="module")
def model():
    return mlv.Model(SLOPES, mlv.datasets.load("sleepstudy"))


@pytest.fixture(scope="module")
def post(model):
    return model.sample(sampler="gibbs", chains=1, draws=60, warmup=60, seed=1, progress=False)


def payload(marker) -> str:
    """A formula that creates `marker` when evaluated (built without quotes, so the formula parser takes it)."""
    path = "+".join(f"chr({ord(c)})" for c in str(marker))
    return f"Reaction ~ Days + I(Days + len(str(open({path}, chr(119))))) + (Days | Subject)"


def test_the_payload_runs_when_evaluated(tmp_path):
    """The planted formula is live: built as a model it runs (which is why a loaded file must never be)."""
    marker = tmp_path / "ran"
    with pytest.warns(mlv.MultilevelWarning):
        mlv.Model(payload(marker), mlv.datasets.load("sleepstudy"))
    assert marker.exists()


@pytest.mark.parametrize("formula", [
    "Reaction ~ Days + I(Days**2) + (Days || Subject)",
    "Reaction ~ 0 + Days + log(Days + 1) + np.sqrt(Days) + center(Days) + (1 | Subject)",
    "Reaction ~ C(Days, contr.poly) + poly(Days, degree=2) + 1.5e-3 + .5 + (1 | Subject)",
    "`Reaction` ~ Days + (1 | Subject/Days)",
])
def test_formulas_of_the_language_are_accepted(formula):
    check_stored_formula(formula, COLUMNS)


@pytest.mark.parametrize("formula", [
    "Reaction ~ os.system('ls')", "Reaction ~ eval(Days)", "Reaction ~ Days.__class__", "Reaction ~ Days[0]",
    "Reaction ~ open(Days)", "Reaction ~ np.load(Days)", "Reaction ~ lambda: 1", "Reaction ~ Days; 1",
    "Reaction ~ Subject(Days)",  # a column is never called, whatever it is named
    "Reaction ~ `__builtins__`", 'Reaction ~ "text"', "Reaction ~ {Days}", "Reaction ~ Days @ Days",
])
def test_anything_else_is_refused(formula):
    with pytest.raises(MultilevelError, match="never evaluated as code"):
        check_stored_formula(formula, COLUMNS)


def test_json_payload_is_refused_and_never_runs(model, tmp_path):
    marker = tmp_path / "pwned"
    save(model.fit(), tmp_path / "fit.json")
    record = json.loads((tmp_path / "fit.json").read_text())
    record["formula"] = payload(marker)
    (tmp_path / "evil.json").write_text(json.dumps(record))
    with pytest.raises(MultilevelError, match="'len'.*never evaluated as code"):
        load(tmp_path / "evil.json")
    assert not marker.exists()


def test_netcdf_payload_is_refused_and_never_runs(post, tmp_path):
    import h5py

    marker = tmp_path / "pwned"
    save(post, tmp_path / "post.nc")
    with h5py.File(tmp_path / "post.nc", "r+") as f:
        f.attrs["formula"] = payload(marker)
    with pytest.raises(MultilevelError, match="'len'.*never evaluated as code"):
        load(tmp_path / "post.nc")
    assert not marker.exists()


def test_cli_report_refuses_the_payload(model, tmp_path):
    command = shutil.which("multilevel")
    if command is None:
        pytest.skip("the package is not installed: pip install -e .")
    marker = tmp_path / "pwned"
    save(model.fit(), tmp_path / "fit.json")
    record = json.loads((tmp_path / "fit.json").read_text())
    record["formula"] = payload(marker)
    (tmp_path / "evil.json").write_text(json.dumps(record))
    run = subprocess.run([command, "report", str(tmp_path / "evil.json"), "-o", str(tmp_path / "r.html")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "never evaluated as code" in run.stderr and "Traceback" not in run.stderr
    assert not marker.exists() and not (tmp_path / "r.html").exists()


def test_files_that_contradict_themselves_are_refused(model, post, tmp_path):
    import h5py

    save(model.fit(), tmp_path / "fit.json")
    record = json.loads((tmp_path / "fit.json").read_text())
    record["theta"] = record["theta"][:1]
    (tmp_path / "short.json").write_text(json.dumps(record))
    with pytest.raises(MultilevelError, match="theta has 1 values"):
        load(tmp_path / "short.json")
    del record["optimizer"]
    (tmp_path / "cut.json").write_text(json.dumps(record))
    with pytest.raises(MultilevelError, match="damaged or altered fit file.*optimizer"):
        load(tmp_path / "cut.json")
    record = json.loads((tmp_path / "fit.json").read_text())
    record["data"][0]["dtype"] = "object"
    (tmp_path / "objects.json").write_text(json.dumps(record))
    with pytest.raises(MultilevelError, match="never writes"):
        load(tmp_path / "objects.json")
    save(post, tmp_path / "post.nc")
    with h5py.File(tmp_path / "post.nc", "r+") as f:
        f.attrs["formula"] = "Reaction ~ Days + (1 | Subject)"  # the saved group effects are (18, 2) per draw
    with pytest.raises(MultilevelError, match="group effects have shapes"):
        load(tmp_path / "post.nc")


def test_truncated_files_raise_our_error(model, post, tmp_path):
    save(model.fit(), tmp_path / "fit.json")
    text = (tmp_path / "fit.json").read_text()
    (tmp_path / "half.json").write_text(text[: len(text) // 2])
    with pytest.raises(MultilevelError, match="not valid JSON"):
        load(tmp_path / "half.json")
    save(post, tmp_path / "post.nc")
    data = (tmp_path / "post.nc").read_bytes()
    (tmp_path / "half.nc").write_bytes(data[: len(data) // 2])
    with pytest.raises(MultilevelError, match="half.nc"):
        load(tmp_path / "half.nc")
