"""The pipeline's structure: refits through the model, results that reopen as real results, dispatch by type,
and the import-layers contract (a circle or an upward import fails here)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import multilevel as mlv
from multilevel.io import load, save
from multilevel.kinds import Bayesian, Frequentist

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sleep():
    return mlv.datasets.load("sleepstudy")


@pytest.fixture(scope="module")
def dyestuff_fit():
    return mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff")).fit()


def test_bootstrap_statistic_gets_a_full_fit(dyestuff_fit):
    """Bug 1: a statistic calling confint(method='profile') or summary() on a refit used to hit a stand-in."""
    upper = mlv.bootstrap(dyestuff_fit, n=3, seed=2, statistic=lambda f: f.confint(method="profile")["upper"])
    assert upper.replicates.shape == (3, 3) and np.isfinite(upper.replicates.to_numpy()).all()
    texts = mlv.bootstrap(dyestuff_fit, n=2, seed=2, statistic=lambda f: float("Yield" in f.summary()))
    assert (texts.replicates["statistic"] == 1.0).all()


def test_bootstrap_lambda_statistic_in_worker_processes(dyestuff_fit):
    one = mlv.bootstrap(dyestuff_fit, n=4, seed=5, cores=1, statistic=lambda f: f.sigma)
    two = mlv.bootstrap(dyestuff_fit, n=4, seed=5, cores=2, statistic=lambda f: f.sigma)
    np.testing.assert_array_equal(one.replicates.to_numpy(), two.replicates.to_numpy())


def test_with_response_equals_a_model_built_from_scratch(sleep):
    model = mlv.Model("Reaction ~ Days + (Days | Subject)", sleep)
    y = model.fit().simulate(1, seed=4)[0]
    for response in (y, 1e4 * y):  # the fitted model's engine is refreshed, also for a response held at another scale
        quick = model.with_response(response)
        full = mlv.Model("Reaction ~ Days + (Days | Subject)", sleep.assign(Reaction=response))
        assert quick.design.X is model.design.X  # the design is shared, not rebuilt
        np.testing.assert_array_equal(quick.cross_products.xy, full.cross_products.xy)
        assert quick.fit().objective == pytest.approx(full.fit().objective, abs=1e-10)
    with pytest.raises(mlv.MultilevelError, match="180 rows"):
        model.with_response(y[:10])


def test_refits_raise_no_warnings_but_keep_them():
    """Internal refits (anova's ML refit, profiles, bootstrap) keep warnings in the fit instead of raising them."""
    model = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff2"))
    with pytest.warns(mlv.MultilevelWarning, match="boundary"):
        model.fit()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = model.fit(warn=False)
    assert any("boundary" in w for w in quiet.warnings)


def test_compare_and_anova_on_fits_loaded_from_json(sleep, tmp_path):
    """Bug 2: compare() sniffed the kind of a loaded fit and failed; anova worked."""
    small = mlv.Model("Reaction ~ Days + (1 | Subject)", sleep).fit(method="ML")
    big = mlv.Model("Reaction ~ Days + (Days | Subject)", sleep).fit(method="ML")
    save(small, tmp_path / "small.json")
    save(big, tmp_path / "big.json")
    loaded = {"intercepts": load(tmp_path / "small.json"), "slopes": load(tmp_path / "big.json")}
    original = mlv.compare({"intercepts": small, "slopes": big})
    pd.testing.assert_frame_equal(mlv.compare(loaded), original)
    pd.testing.assert_frame_equal(mlv.anova(*loaded.values(), names=list(loaded)), original)


def test_checks_work_on_a_loaded_fit(tmp_path):
    """Bug 3: icc() on a loaded fit raised AttributeError; every check now gets a real fit."""
    fit = mlv.Model("mAch ~ 1 + (1 | school)", mlv.datasets.load("Hsb82")).fit()
    save(fit, tmp_path / "hsb.json")
    back = load(tmp_path / "hsb.json")
    assert isinstance(back, Frequentist)
    pd.testing.assert_frame_equal(back.icc(), fit.icc())
    assert back.icc()["estimate"]["school"] == pytest.approx(0.18035, abs=5e-6)  # lme4's ICC (reference README)
    pd.testing.assert_frame_equal(back.pooling(), fit.pooling())
    np.testing.assert_array_equal(back.predict(), fit.predict())
    pd.testing.assert_frame_equal(back.confint(), fit.confint())


def test_a_version_1_file_loads_and_says_what_it_lacks(dyestuff_fit, tmp_path):
    """Files of format 1 hold tables but no data: they load, and data-hungry checks say why they cannot run."""
    import json

    from multilevel.saving import fit_record

    record = fit_record(dyestuff_fit)
    for key in ("data", "theta", "optimizer"):
        record.pop(key)
    record["version"] = 1
    (tmp_path / "old.json").write_text(json.dumps(record))
    old = load(tmp_path / "old.json")
    assert isinstance(old, Frequentist) and old.sigma == dyestuff_fit.sigma
    assert old.summary() == dyestuff_fit.summary()
    from multilevel.variance import icc

    with pytest.raises(mlv.MultilevelError, match="format 1"):
        icc(old)


def test_result_kinds_are_types(dyestuff_fit):
    post = dyestuff_fit.model.sample(sampler="gibbs", chains=1, draws=50, warmup=50, seed=1, progress=False)
    assert isinstance(dyestuff_fit, Frequentist) and not isinstance(dyestuff_fit, Bayesian)
    assert isinstance(post, Bayesian) and not isinstance(post, Frequentist)


def test_import_layers_contract():
    """import-linter's layers contract in pyproject.toml: no circle, no import up the pipeline."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is a test dependency: pip install -e '.[test]'"
    run = subprocess.run([exe, str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_to_frame_stacks_fixed_effects_and_variance_components(dyestuff_fit):
    """LmmFit and GlmmFit give one long table: the fixed-effect rows, then the variance-component rows."""
    glmm = mlv.Model("cbind(incidence, size - incidence) ~ period + (1 | herd)", mlv.datasets.load("cbpp"),
                     family="binomial").fit()
    for fit in (dyestuff_fit, glmm):
        table = fit.to_frame()
        p, v = len(fit.fixed_effects), len(fit.variance_components)
        assert list(table["kind"]) == ["fixed"] * p + ["variance"] * v
        np.testing.assert_array_equal(table["estimate"][:p], fit.fixed_effects["estimate"])
        np.testing.assert_array_equal(table["variance"][p:], fit.variance_components["variance"])
        assert list(table["term"][:p]) == list(fit.fixed_effects.index)
