"""The installed `multilevel` command in a subprocess: every subcommand, every user error (exit 2, one
line, no traceback), and save -> load -> report round trips whose numbers equal the original's."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from conftest import reference

import multilevel as mlv
from multilevel.io import load

COMMAND = shutil.which("multilevel")
SLOPES = "Reaction ~ Days + (Days | Subject)"
pytestmark = pytest.mark.skipif(COMMAND is None, reason="the package is not installed: pip install -e .")


def run(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([COMMAND, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    frame = mlv.datasets.load("sleepstudy")
    frame.to_csv(folder / "sleep.csv", index=False)
    frame.to_parquet(folder / "sleep.parquet")
    return folder


def test_fit_csv_prints_the_lme4_fit_and_saves_json(data, tmp_path):
    out = run("fit", data / "sleep.csv", SLOPES, "--save", tmp_path / "fit.json")
    assert out.returncode == 0, out.stderr
    ref = reference("sleepstudy_slopes_reml")
    assert f"REML criterion: {ref['REMLcrit']:.4f}" in out.stdout
    saved = load(tmp_path / "fit.json")
    assert saved.objective == pytest.approx(ref["REMLcrit"], rel=1e-8)
    assert saved.summary() in out.stdout  # the printed summary is the saved one


def test_fit_parquet_by_ml(data):
    out = run("fit", data / "sleep.parquet", SLOPES, "--method", "ml")
    assert out.returncode == 0, out.stderr
    assert f"Deviance: {reference('sleepstudy_slopes_ml')['deviance']:.4f}" in out.stdout


def test_fit_all_then_report_round_trip(data, tmp_path):
    out = run("fit", data / "sleep.csv", SLOPES, "--method", "all", "--chains", 2, "--draws", 100, "--warmup", 100,
              "--seed", 5, "--save", tmp_path / "sleep", "--report", tmp_path / "first.html")
    assert out.returncode == 0, out.stderr
    for name in ("sleep-reml.json", "sleep-ml.json", "sleep-bayes.nc", "first.html"):
        assert (tmp_path / name).is_file(), name
    assert "Traceback" not in out.stderr
    again = run("report", tmp_path / "sleep-reml.json", tmp_path / "sleep-ml.json", tmp_path / "sleep-bayes.nc",
                "-o", tmp_path / "second.html")
    assert again.returncode == 0, again.stderr
    first, second = (tmp_path / "first.html").read_text(), (tmp_path / "second.html").read_text()
    values = re.compile(r'data-value="([^"]+)"')
    # every table number of the original report; the sampler's correlation matrices have a diagonal of 1 up to
    # rounding (L L'), the reloaded ones exactly 1, so posterior-mean variances may differ in the last bit
    assert [float(v) for v in values.findall(second)] == pytest.approx([float(v) for v in values.findall(first)], rel=1e-13)
    reml, post = load(tmp_path / "sleep-reml.json"), load(tmp_path / "sleep-bayes.nc")
    assert reml.objective == pytest.approx(reference("sleepstudy_slopes_reml")["REMLcrit"], rel=1e-8)
    assert f'data-value="{float(post.fixed_effects.loc["Days", "estimate"])!r}"' in second
    assert post.n_chains == 2 and post.n_draws == 100 and post.seed == 5


def test_compare_lrt(data):
    out = run("compare", data / "sleep.csv", "Reaction ~ Days + (1 | Subject)", SLOPES)
    assert out.returncode == 0, out.stderr
    model2 = next(line for line in out.stdout.splitlines() if line.startswith("model2 "))
    assert f"{reference('sleepstudy_slopes_ml')['deviance']:.2f}"[:-1] in model2


def test_compare_lrt_of_binomial_glmms_with_family():
    """compare --family: nested GLMMs by likelihood-ratio test, the full model at the cbpp reference's optimum."""
    formulas = ["cbind(incidence, size - incidence) ~ 1 + (1 | herd)",
                "cbind(incidence, size - incidence) ~ period + (1 | herd)"]
    out = run("compare", "cbpp", *formulas, "--family", "binomial")
    assert out.returncode == 0, out.stderr
    model2 = next(line for line in out.stdout.splitlines() if line.startswith("model2 "))
    assert f"{reference('cbpp_binomial_laplace')['laplace_exact']['optimum']['objective']:.6f}" in model2
    gaussian = run("compare", "cbpp", *formulas)
    assert gaussian.returncode == 2 and "family='binomial'" in gaussian.stderr


def test_datasets_and_demo(tmp_path):
    out = run("datasets")
    assert out.returncode == 0 and re.search(r"^sleepstudy\s+180 rows", out.stdout, re.M)
    demo = run("demo", "--report", tmp_path / "demo.html")
    assert demo.returncode == 0, demo.stderr
    assert f"{reference('sleepstudy_slopes_reml')['REMLcrit']:.4f}" in demo.stdout
    assert (tmp_path / "demo.html").is_file()


def test_shipped_data_set_by_name():
    out = run("fit", "Dyestuff", "Yield ~ 1 + (1 | Batch)")
    assert out.returncode == 0, out.stderr
    assert f"REML criterion: {reference('dyestuff_reml')['REMLcrit']:.4f}" in out.stdout


def user_error(out: subprocess.CompletedProcess, pattern: str) -> None:
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert re.search(pattern, lines[0]), lines[0]


def test_user_errors_one_line_exit_2(data, tmp_path):
    user_error(run("fit", tmp_path / "absent.csv", SLOPES), "no such data file")
    user_error(run("fit", data / "sleep.csv", "Reaction ~ Days + (Days | Subject"), "never closed")
    user_error(run("fit", data / "sleep.csv", "Reaction ~ Days + (Days | Subjec)"), "Subjec.*Did you mean 'Subject'")
    user_error(run("fit", data / "sleep.csv", "Reaction ~ Age + (1 | Subject)"), "Age")
    (tmp_path / "taken.json").write_text("{}")
    user_error(run("fit", data / "sleep.csv", SLOPES, "--save", tmp_path / "taken.json"), "already exists.*--force")
    (tmp_path / "taken.html").write_text("")
    user_error(run("fit", data / "sleep.csv", SLOPES, "--report", tmp_path / "taken.html"), "already exists")
    user_error(run("report", tmp_path / "taken.json", "-o", tmp_path / "new.html"), "not a fit saved by multilevel")
    user_error(run("report", tmp_path / "absent.nc", "-o", tmp_path / "new.html"), "no such file")
    user_error(run("demo", "--report", tmp_path / "taken.html"), "already exists")
    (tmp_path / "data.xlsx").write_text("")
    user_error(run("fit", tmp_path / "data.xlsx", SLOPES), r"\.csv")
    forced = run("fit", data / "sleep.csv", SLOPES, "--save", tmp_path / "taken.json", "--force")
    assert forced.returncode == 0 and load(tmp_path / "taken.json").method == "REML"


def test_module_entry_point_matches_the_command():
    out = subprocess.run([sys.executable, "-m", "multilevel.cli", "datasets"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout == run("datasets").stdout


def test_output_into_a_closed_pipe_is_not_an_error():
    """`multilevel datasets | head -1` stops quietly with exit 0, as Unix tools do."""
    exe = shutil.which("multilevel")
    if exe is None:
        pytest.skip("the multilevel command is not installed (pip install -e .)")
    proc = subprocess.Popen([exe, "datasets"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before anything is read
    assert proc.wait(timeout=120) == 0
    assert b"Broken pipe" not in proc.stderr.read()


def test_fit_binomial_glmm_saves_and_reports_with_its_checks(tmp_path):
    cbpp = mlv.datasets.load("cbpp")
    cbpp.assign(period="p" + cbpp["period"].astype(str)).to_csv(tmp_path / "cbpp.csv", index=False)
    out = run("fit", tmp_path / "cbpp.csv", "cbind(incidence, size - incidence) ~ period + (1 | herd)", "--family",
              "binomial", "--save", tmp_path / "cbpp.json", "--report", tmp_path / "cbpp.html")
    assert out.returncode == 0, out.stderr
    optimum = reference("cbpp_binomial_laplace")["laplace_exact"]["optimum"]["objective"]
    assert load(tmp_path / "cbpp.json").deviance == pytest.approx(optimum, rel=1e-9)
    page = (tmp_path / "cbpp.html").read_text()
    assert "Pearson chi-square / df" in page and "Simulated quantile residuals" in page
    refused = run("fit", tmp_path / "cbpp.csv", "incidence ~ 1 + (1 | herd)", "--family", "poisson", "--method", "reml")
    assert refused.returncode == 2 and "no REML fit" in refused.stderr


def test_fit_binomial_glmm_both_ways_and_by_the_laplace_sampler(tmp_path):
    """--method all on a GLMM: glmer's optimum and a posterior within 0.1 SD of brms's long run, saved side by side;
    --sampler laplace says it is approximate."""
    cbpp = mlv.datasets.load("cbpp")
    cbpp.assign(period="p" + cbpp["period"].astype(str)).to_csv(tmp_path / "cbpp.csv", index=False)
    formula = "incidence | trials(size) ~ period + (1 | herd)"
    out = run("fit", tmp_path / "cbpp.csv", formula, "--family", "binomial", "--method", "all", "--save", tmp_path / "cbpp")
    assert out.returncode == 0, out.stderr
    optimum = reference("cbpp_binomial_laplace")["laplace_exact"]["optimum"]["objective"]
    assert load(tmp_path / "cbpp-ml.json").deviance == pytest.approx(optimum, rel=1e-9)
    ours = load(tmp_path / "cbpp-bayes.nc").summary()
    for row in reference("cbpp_binomial_brms_long")["posterior_summary"]:
        got = ours.loc[row["variable"].replace("b_period", "b_periodp")]  # the CSV's periods are p1..p4
        assert abs(got["mean"] - row["mean"]) < 0.1 * row["sd"], row["variable"]
    approx = run("fit", tmp_path / "cbpp.csv", formula, "--family", "binomial", "--method", "bayes", "--sampler",
                 "laplace", "--chains", "2", "--draws", "300", "--warmup", "300")
    assert approx.returncode == 0, approx.stderr
    assert "APPROXIMATE" in approx.stdout
