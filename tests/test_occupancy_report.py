"""Occupancy results in the HTML report (their own section: formulas, coefficients, diagnostics, psi and p
curves) and the `multilevel occupancy` command (run in a subprocess), checked against unmarked's pcru fit."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import multilevel as mlv
from multilevel.html_report import report
from multilevel.io import load

REF = json.loads((Path(__file__).resolve().parents[2] / "shared/reference/pcru_occupancy_ml.json").read_text())
DETECTION = "~ MinAfterSunset_scaled + Temperature_scaled"
COMMAND = shutil.which("multilevel")


@pytest.fixture(scope="module")
def results():
    df = mlv.datasets.load("pcru_occupancy")
    model = mlv.Occupancy("~ 1", DETECTION + " + (1 | route)", df.assign(route=df["route"].astype(str)))
    with pytest.warns(mlv.MultilevelWarning):  # few draws: ESS warnings, which the report must show
        post = model.sample(chains=2, draws=60, warmup=60, seed=2)
    return model.fit(), post


def _cells(page: str, table_id: str) -> dict[str, list[float]]:
    """Row key -> the full numbers (data-value) of one report table."""
    body = re.search(rf'<table id="{table_id}">.*?</table>', page).group(0)
    return {key: [float(v) for v in re.findall(r'data-value="([^"]+)"', row)]
            for key, row in re.findall(r'<tr data-key="([^"]*)">(.*?)</tr>', body)}


def test_report_has_an_occupancy_section_with_the_numbers(results, tmp_path):
    fit, post = results
    page = report([fit, post], tmp_path / "occ.html").read_text()
    assert "<h2>Occupancy model: occupancy ML</h2>" in page and "<h2>Occupancy model: occupancy Bayes (nuts)</h2>" in page
    assert "<code>~ MinAfterSunset_scaled + Temperature_scaled + (1 | route)</code>" in page
    table = _cells(page, "occupancy-occupancy-ml")
    for name, row in fit.fixed_effects.iterrows():
        assert table[name] == row.tolist()
    assert _cells(page, "occupancy-varcomp-occupancy-ml")["0"] == [fit.sigma**2, fit.sigma, fit.sigma_se]
    draws = _cells(page, "occupancy-occupancy-bayes-nuts")
    assert draws["n_occ"][0] == post.n_occupied()["mean"] and draws["p(sd_route)"][0] == post.summary().loc["p(sd_route)", "mean"]
    diagnostics = _cells(page, "occupancy-diagnostics-occupancy-ml")
    assert [diagnostics[k] for k in "123"] == [[fit.objective], [fit.loglik], [fit.aic]]  # after 'converged'
    assert "posterior predictive p (Freeman-Tukey by site)" in page and "Laplace" in page
    for warning in post.warnings:
        assert warning.replace("'", "&#x27;") in page
    # psi has no covariate; p two, for each result, and trace and rank plots of the draws
    assert page.count("<img") == 2 + 2 + 2
    assert "Detection p against Temperature_scaled" in page


def test_report_puts_ml_and_bayes_side_by_side(results, tmp_path):
    """The side-by-side table holds each result's own numbers: ML estimates and SEs, the random intercept's SD and
    its SE, the occupied sites; posterior means and SDs of the same rows."""
    fit, post = results
    page = report([fit, post], tmp_path / "both.html").read_text()
    assert "<h2>Occupancy models side by side</h2>" in page
    table = _cells(page, "compare-occupancy")
    summary, n = post.summary(), fit.n_occupied()
    for name, row in fit.fixed_effects.iterrows():
        assert table[name] == [row["estimate"], row["std_error"], summary.loc[name, "mean"], summary.loc[name, "sd"]]
    assert table["p(sd_route)"] == [fit.sigma, fit.sigma_se, summary.loc["p(sd_route)", "mean"], summary.loc["p(sd_route)", "sd"]]
    assert table["n_occ"] == [n["estimate"], n["sd"], summary.loc["n_occ", "mean"], summary.loc["n_occ", "sd"]]
    assert "side by side" not in report(fit, tmp_path / "one.html").read_text()


def test_report_of_mixed_results_keeps_both_kinds(results, tmp_path):
    dyestuff = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff")).fit()
    page = report({"dyes": dyestuff, "frogs": results[0]}, tmp_path / "mixed.html").read_text()
    assert 'id="fixed-dyes"' in page and 'id="occupancy-frogs"' in page


needs_command = pytest.mark.skipif(COMMAND is None, reason="the package is not installed: pip install -e .")


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([COMMAND, *map(str, args)], capture_output=True, text=True, timeout=600)


@needs_command
def test_command_fits_saves_and_reports_the_reference_model(tmp_path):
    out = run("occupancy", "pcru_occupancy", "--detection", DETECTION, "--save", tmp_path / "pcru.json",
              "--report", tmp_path / "pcru.html")
    assert out.returncode == 0, out.stderr
    assert "psi((Intercept))" in out.stdout and "saved" in out.stdout and "report" in out.stdout
    fit = load(tmp_path / "pcru.json")
    assert list(fit.fixed_effects.index) == REF["parameters"]
    np.testing.assert_allclose(fit.fixed_effects["estimate"], REF["estimate"], rtol=1e-4)
    np.testing.assert_allclose(fit.fixed_effects["std_error"], REF["std_error"], rtol=1e-4)
    assert fit.objective == pytest.approx(REF["minus2loglik"], abs=1e-6)
    assert "Occupancy model: occupancy ML" in (tmp_path / "pcru.html").read_text()


@needs_command
def test_command_all_saves_both_results(tmp_path):
    out = run("occupancy", "pcru_occupancy", "--detection", DETECTION, "--method", "all", "--chains", 1, "--draws", 50,
              "--warmup", 50, "--save", tmp_path / "pcru")
    assert out.returncode == 0, out.stderr
    assert "== occupancy ML ==" in out.stdout and "== occupancy Bayes (nuts) ==" in out.stdout
    together = out.stdout.split("== side by side: estimate and standard error (posterior mean and SD) ==")[1].splitlines()
    assert together[1].split() == ["occupancy", "ML", "estimate", "occupancy", "ML", "std_error", "occupancy", "Bayes",
                                   "(nuts)", "estimate", "occupancy", "Bayes", "(nuts)", "std_error"]
    assert [line.split()[0] for line in together[3:8]] == REF["parameters"] + ["n_occ"]
    post = load(tmp_path / "pcru-bayes.nc")
    assert post.draws.shape == (1, 50, 4) and load(tmp_path / "pcru-ml.json").nobs == post.model.arrays.mask.sum()
    gibbs = run("occupancy", "pcru_occupancy", "--method", "bayes", "--sampler", "gibbs", "--draws", 60, "--warmup", 50,
                "--save", tmp_path / "gibbs.nc")
    assert gibbs.returncode == 0 and "Pólya-Gamma Gibbs, 4 chains x 60 draws" in gibbs.stdout, gibbs.stderr
    assert load(tmp_path / "gibbs.nc").sampler == "gibbs"
    reopened = run("report", tmp_path / "pcru-ml.json", tmp_path / "gibbs.nc", "-o", tmp_path / "saved.html")
    assert reopened.returncode == 0, reopened.stderr
    page = (tmp_path / "saved.html").read_text()
    assert "Occupancy model: occupancy ML" in page and "Occupancy model: occupancy Bayes (gibbs)" in page
    assert "divergent transitions" not in page  # a NUTS statistic: Gibbs has none to show


@needs_command
def test_command_user_errors_are_one_line(tmp_path):
    for args, pattern in [(("--response", "detected"), "response column 'detected' is not in the data"),
                          (("--detection", "~ Temprature"), "Temprature"),
                          (("--occupancy", "~ Temperature"), "varies within site")]:
        out = run("occupancy", "pcru_occupancy", *args)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and re.search(pattern, lines[0]), out.stderr
