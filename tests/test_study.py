"""Repeated-sampling studies: known answers from mathematics, reproducibility across cores, bookkeeping.

Balanced one-way design (m groups of n, truth tau^2, sigma^2): with the estimates off the boundary, REML's
between-group variance is the ANOVA estimator (MSB - MSW) / n, unbiased; ML's is ((1 - 1/m) MSB - MSW) / n,
whose mean is tau^2 (m - 1) / m - sigma^2 / (m n); both give sigma^2 = MSW, unbiased. With m = 10, n = 5,
tau = 2, sigma = 1, MSB / MSW ~ 21 F(9, 40), so the boundary (F < 1/21) has probability ~1e-6 and the
formulas hold replicate by replicate.
"""

from __future__ import annotations

import doctest
import importlib
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import multilevel as mlv
from multilevel import study_scenarios
from multilevel.errors import MultilevelError, MultilevelWarning
from multilevel.io import load
from multilevel.study_result import StudyResult

GROUPS, SIZE, TAU, SIGMA = 10, 5, 2.0, 1.0
study_module = importlib.import_module("multilevel.study")  # mlv.study is the function
ONE_WAY = "y ~ 1 + (1 | g)"
ONE_WAY_TRUTH = {"b_Intercept": 1.0, "sd_g__Intercept": TAU, "sigma": SIGMA}


def one_way_model(groups=GROUPS, size=SIZE):
    return mlv.Model(ONE_WAY, mlv.study_data(ONE_WAY, groups, size))


def within_3_mcse(values: pd.Series, expected: float) -> tuple[bool, float, float]:
    mean, mcse = values.mean(), values.std(ddof=1) / np.sqrt(len(values))
    return abs(mean - expected) < 3 * mcse, mean, mcse


@pytest.fixture(scope="module")
def one_way():
    return mlv.study(one_way_model(), ONE_WAY_TRUTH, ["ML", "REML"], replicates=300, seed=11)


def variances(result, method, parameter):
    e = result.estimates
    return e[(e["method"] == method) & (e["parameter"] == parameter)]["estimate"] ** 2


def test_reml_between_group_variance_is_unbiased(one_way):
    ok, mean, mcse = within_3_mcse(variances(one_way, "REML", "sd_g__Intercept"), TAU**2)
    assert ok, (mean, mcse)


def test_ml_between_group_variance_has_its_known_bias(one_way):
    expected = TAU**2 * (GROUPS - 1) / GROUPS - SIGMA**2 / (GROUPS * SIZE)
    ok, mean, mcse = within_3_mcse(variances(one_way, "ML", "sd_g__Intercept"), expected)
    assert ok, (mean, mcse, expected)
    assert abs(mean - TAU**2) > 3 * mcse  # the study resolves ML's bias (-0.42) from zero


@pytest.mark.parametrize("method", ["ML", "REML"])
def test_residual_variance_is_unbiased(one_way, method):
    ok, mean, mcse = within_3_mcse(variances(one_way, method, "sigma"), SIGMA**2)
    assert ok, (mean, mcse)


def test_table_scores_are_the_replicates_summarised(one_way):
    e = one_way.estimates
    reml = e[(e["method"] == "REML") & (e["parameter"] == "b_Intercept")]
    row = one_way.table.set_index(["method", "parameter"]).loc[("REML", "b_Intercept")]
    error = reml["estimate"] - 1.0
    assert row["bias"] == pytest.approx(error.mean())
    assert row["bias_mcse"] == pytest.approx(error.std(ddof=1) / np.sqrt(300))
    assert row["rmse"] == pytest.approx(np.sqrt((error**2).mean()))
    assert row["n"] == 300 and row["failures"] == 0
    assert list(one_way.table.columns[:4]) == ["method", "kind", "parameter", "truth"]


def test_prediction_rows_have_the_noise_floor_as_truth(one_way):
    t = one_way.table.set_index(["method", "parameter"])
    assert t.loc[("REML", "predict_known_groups"), "truth"] == pytest.approx(SIGMA)
    assert t.loc[("REML", "predict_new_groups"), "truth"] == pytest.approx(np.hypot(TAU, SIGMA))
    assert (one_way.estimates.query("kind == 'prediction'")["error"] > 0).all()  # no method beats the truth


def test_wald_intervals_cover_near_95_percent_in_a_large_balanced_design():
    """50 groups of 10: the slope's Wald interval (z) covers 95 %, the intercept's P(|t_49| < 1.96) = 94.4 %."""
    formula = "y ~ 1 + x + (1 | g)"
    model = mlv.Model(formula, mlv.study_data(formula, 50, 10, seed=3))
    truth = {"b_Intercept": 0.0, "b_x": 1.0, "sd_g__Intercept": 1.0, "sigma": 1.0}
    replicates = 300
    table = mlv.study(model, truth, ["REML"], replicates=replicates, seed=5).table.set_index("parameter")
    for parameter, nominal in (("b_x", 0.95), ("b_Intercept", 0.9442)):
        mcse = np.sqrt(nominal * (1 - nominal) / replicates)
        assert abs(table.loc[parameter, "coverage"] - nominal) < 3 * mcse, (parameter, table.loc[parameter, "coverage"])


SBC_PRIORS = {
    "Intercept": mlv.prior.normal(0, 1),
    "b": mlv.prior.normal(0, 1),
    "sd": mlv.prior.half_normal(1),
    "sigma": mlv.prior.half_normal(1),
}


def test_bayesian_intervals_cover_at_the_nominal_rate_when_the_truth_is_drawn_from_the_prior():
    """Simulation-based calibration through the study: each 95 % credible interval covers its parameter in 95 %
    of replicates (the pooled group effects too); 3 binomial MC SEs of slack for each."""
    formula = "y ~ 1 + x + (1 | g)"
    model = mlv.Model(formula, mlv.study_data(formula, 8, 5, seed=2))
    replicates = 80
    bayes = {"prior": SBC_PRIORS, "sampler": "gibbs", "chains": 1, "draws": 400, "warmup": 200}
    result = mlv.study(model, "prior", ["Bayes", "Bayes median"], replicates=replicates, seed=7, bayes=bayes)
    table = result.table.set_index(["method", "parameter"])
    mcse = np.sqrt(0.95 * 0.05 / replicates)
    for parameter in ["b_Intercept", "b_x", "sd_g__Intercept", "sigma", "r_g[,Intercept]"]:
        coverage = table.loc[("Bayes", parameter), "coverage"]
        assert abs(coverage - 0.95) < 3 * mcse, (parameter, coverage)
    truths = result.estimates.query("parameter == 'sigma' and method == 'Bayes'")["truth"]
    assert truths.nunique() == replicates  # a new truth for every replicate
    means = result.estimates.query("method == 'Bayes'")["estimate"].to_numpy()
    medians = result.estimates.query("method == 'Bayes median'")["estimate"].to_numpy()
    assert len(means) == len(medians) and not np.allclose(means, medians)


def test_same_table_whatever_the_number_of_cores():
    model = one_way_model(6, 4)
    methods = list(study_module.STUDY_METHODS)  # the seeded ones too: Bayes, elastic net's CV folds
    options = dict(replicates=5, seed=3, bayes={"sampler": "gibbs", "chains": 1, "draws": 100, "warmup": 50})
    one = mlv.study(model, ONE_WAY_TRUTH, methods, cores=1, **options)
    two = mlv.study(model, ONE_WAY_TRUTH, methods, cores=2, **options)
    columns = [c for c in one.table.columns if c != "seconds"]
    pd.testing.assert_frame_equal(one.table[columns], two.table[columns])
    pd.testing.assert_frame_equal(one.estimates, two.estimates)
    pd.testing.assert_frame_equal(one.runs.drop(columns="seconds"), two.runs.drop(columns="seconds"))


def test_truth_from_a_fit_and_by_lme4_names_agree_with_brms_names():
    model = one_way_model(6, 4)
    fit = mlv.Model(ONE_WAY, mlv.study_data(ONE_WAY, 6, 4).assign(y=np.arange(24.0) % 7)).fit()
    by_fit = mlv.study(model, fit, ["REML"], replicates=3, seed=1)
    named = {"b_Intercept": fit.beta[0], "sd_g__Intercept": np.sqrt(fit.covariances[0][0, 0]), "sigma": fit.sigma}
    lme4 = {"(Intercept)": named["b_Intercept"], "sd_(Intercept)|g": named["sd_g__Intercept"], "sigma": fit.sigma}
    for truth in (named, lme4):
        other = mlv.study(model, truth, ["REML"], replicates=3, seed=1)
        pd.testing.assert_frame_equal(by_fit.estimates, other.estimates)


def test_correlations_default_to_zero_and_the_truth_is_recorded():
    formula = "y ~ 1 + x + (1 + x | g)"
    model = mlv.Model(formula, mlv.study_data(formula, 8, 6))
    truth = {"b_Intercept": 0, "b_x": 1, "sd_g__Intercept": 1, "sd_g__x": 0.5, "sigma": 1}
    result = mlv.study(model, truth, ["REML"], replicates=2, seed=1)
    assert result.settings["truth"]["cor_g__Intercept__x"] == 0.0
    assert "cor_g__Intercept__x" in set(result.table["parameter"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"truth": {"b_Intercept": 0, "sigma": 1}}, "no value for"),
        ({"truth": {**ONE_WAY_TRUTH, "sd_x__Intercept": 1}}, "unknown parameter name"),
        ({"truth": {**ONE_WAY_TRUTH, "sigma": 0}}, "sigma > 0"),
        ({"truth": 3}, "truth must be"),
        ({"truth": "prior"}, "do not depend on the data"),
        ({"methods": ["REML", "OLS"]}, "unknown method"),
        ({"replicates": 0}, "replicates must be"),
        ({"cores": 1.5}, "cores must be"),
        ({"seed": -1}, "seed must be"),
    ],
)
def test_bad_arguments_are_refused_clearly(kwargs, message):
    options = {"truth": ONE_WAY_TRUTH, "methods": ["REML"], "replicates": 2} | kwargs
    with pytest.raises(MultilevelError, match=message):
        mlv.study(one_way_model(4, 3), **options)


def test_flat_priors_cannot_give_a_truth():
    formula = "y ~ 1 + x + (1 | g)"
    model = mlv.Model(formula, mlv.study_data(formula, 4, 3))
    priors = {k: v for k, v in SBC_PRIORS.items() if k != "b"}
    with pytest.raises(MultilevelError, match="must be proper"):
        mlv.study(model, "prior", ["REML"], replicates=2, bayes={"prior": priors})


def test_ctrl_c_returns_the_finished_replicates_marked_partial(monkeypatch):
    real = study_module._replicate

    def interrupted(plan, index, seed):
        if index == 3:
            raise KeyboardInterrupt
        return real(plan, index, seed)

    monkeypatch.setattr(study_module, "_replicate", interrupted)
    with pytest.warns(MultilevelWarning, match="3 of 10 replicates"):
        result = mlv.study(one_way_model(4, 3), ONE_WAY_TRUTH, ["REML"], replicates=10, seed=1)
    assert result.partial and sorted(result.runs["replicate"]) == [0, 1, 2]
    assert "PARTIAL" in repr(result)


def _process_group(pgid: int) -> list[int]:
    """Live processes of a process group (Linux: read from /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and not open(f"/proc/{entry}/stat").read().split(") ")[1].startswith("Z"):
                    pids.append(int(entry))
            except (ProcessLookupError, FileNotFoundError):
                pass
    return pids


@pytest.mark.skipif(sys.platform != "linux", reason="finds the worker processes in /proc")
def test_a_real_ctrl_c_with_two_cores_stops_every_process_and_saves_the_finished_replicates(tmp_path):
    """SIGINT to the command's whole process group, as a terminal sends Ctrl-C: the command ends, no worker
    process is left, and the replicates finished before it are saved, marked partial."""
    saved, out, err = tmp_path / "study.json", tmp_path / "out.txt", tmp_path / "err.txt"
    command = [sys.executable, "-c", "from multilevel.cli import main; main()", "study", "sleepstudy", "Reaction ~ Days + (1 | Subject)",
               "--methods", "REML", "--replicates", "100000", "--cores", "2", "--progress", "--save", str(saved)]
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, start_new_session=True,  # as a terminal's
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # Ctrl-C acts
    try:
        done_before = 0
        for _ in range(1200):  # the progress bar on stderr: wait for 20 finished replicates (2 min at most)
            counts = re.findall(r"(\d+)/100000", err.read_text())
            done_before = int(counts[-1]) if counts else 0
            if done_before >= 20 or process.poll() is not None:
                break
            time.sleep(0.1)
        workers = [pid for pid in _process_group(process.pid) if pid != process.pid]
        assert done_before >= 20 and len(workers) >= 2, (done_before, workers, err.read_text()[-2000:])
        os.killpg(process.pid, signal.SIGINT)
        start = time.perf_counter()
        returncode = process.wait(timeout=60)
        print(f"ended {time.perf_counter() - start:.2f} s after Ctrl-C")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert returncode == 0, err.read_text()[-2000:]
    left = _process_group(process.pid)
    for _ in range(50):  # the multiprocessing helpers end as their pipes close
        if not left:
            break
        time.sleep(0.1)
        left = _process_group(process.pid)
    assert not left
    result = load(saved)
    assert result.partial and done_before <= result.settings["finished"] < 100000
    assert result.runs["replicate"].nunique() == result.settings["finished"] == len(result.runs)
    assert "PARTIAL" in out.read_text() and "study interrupted" in err.read_text()
    assert "Traceback" not in err.read_text()


def test_failures_are_counted_and_left_out_of_the_scores(monkeypatch):
    real = study_module.run_method

    def failing(model, name, *args):
        if name == "ML" and model.design.y[0] > 0:
            raise MultilevelError("refused")
        return real(model, name, *args)

    monkeypatch.setattr(study_module, "run_method", failing)
    result = mlv.study(one_way_model(4, 3), ONE_WAY_TRUTH, ["ML", "REML"], replicates=12, seed=2)
    runs = result.runs
    failed = runs[runs["failed"]]
    assert set(failed["method"]) == {"ML"} and failed["message"].str.contains("refused").all()
    row = result.table.set_index(["method", "parameter"]).loc[("ML", "sigma")]
    assert row["failures"] == len(failed) and row["n"] == 12 - len(failed)


def test_save_and_load_round_trip(tmp_path, one_way):
    path = tmp_path / "study.json"
    one_way.save(path)
    loaded = load(path)
    assert isinstance(loaded, StudyResult) and loaded.settings == one_way.settings
    pd.testing.assert_frame_equal(loaded.table, one_way.table)
    with pytest.raises(MultilevelError, match="already exists"):
        one_way.save(path)


def test_study_data_balanced_unbalanced_and_refusals():
    data = mlv.study_data("y ~ x + z + (1 + x | school)", groups=12, size=3, seed=1)
    assert list(data.columns) == ["y", "school", "x", "z"] and len(data) == 36
    assert data["school"].iloc[0] == "school01"
    with pytest.raises(MultilevelError, match="one grouping factor"):
        mlv.study_data("y ~ 1 + (1 | a) + (1 | b)", 4, 2)
    with pytest.raises(MultilevelError, match="size must be"):
        mlv.study_data(ONE_WAY, 3, [1, 2])


def test_scenarios_build_and_run():
    scenario = mlv.SCENARIOS["unbalanced groups"]
    sizes = scenario.model().design.blocks[0].codes
    assert np.bincount(sizes).min() == 1 and np.bincount(sizes).max() == 40
    result = scenario.run(methods=["REML"], replicates=2, seed=1)
    assert set(result.table["parameter"]) >= set(scenario.truth)


def test_docstring_examples():
    for module in (study_module, study_scenarios):
        assert doctest.testmod(module).failed == 0


def test_plots_report_and_command_line(tmp_path, one_way):
    from click.testing import CliRunner

    from multilevel import plots
    from multilevel.cli import main

    assert len(plots.study_coverage(one_way).axes) == 2  # b_Intercept and the pooled group effects
    assert len(plots.study_errors(one_way).axes) == 7
    few = {g: mlv.study(one_way_model(g, 3), ONE_WAY_TRUTH, ["REML"], replicates=3, seed=1) for g in (3, 6)}
    ax = plots.study_boundary(few, "sd_g__Intercept").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["3", "6"]
    page = mlv.report({"one-way": one_way}, tmp_path / "r.html").read_text()
    assert "Repeated-sampling study: one-way" in page and page.count("<img") == 2
    result = CliRunner().invoke(main, ["study", "Dyestuff", "Yield ~ 1 + (1 | Batch)", "--methods", "REML",
                                       "--replicates", "3", "--truth", "b_Intercept=1500", "--truth", "sd_Batch__Intercept=40",
                                       "--truth", "sigma=50", "--save", str(tmp_path / "s.json"), "--csv", str(tmp_path / "s.csv")])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(tmp_path / "s.csv")["truth"].iloc[0] == 1500
    assert load(tmp_path / "s.json").settings["replicates"] == 3
    bad = CliRunner().invoke(main, ["study", "Dyestuff", "Yield ~ 1 + (1 | Batch)", "--truth", "sigma"])
    assert bad.exit_code == 2 and "NAME=VALUE" in bad.output
