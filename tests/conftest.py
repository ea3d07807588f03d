"""Shared test helpers: where the reference results are, and how to read them."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "reference"


def reference(name: str) -> dict:
    """One reference JSON (lme4, blme, brms ...) from ../shared/reference."""
    return json.loads((REFERENCE / f"{name}.json").read_text())


# GLMM reference models as (formula, shipped data set, family), shared by the Bayesian GLMM tests
CBPP = ("incidence | trials(size) ~ period + (1 | herd)", "cbpp", "binomial")
SALAMANDERS = ("count ~ spp + mined + (1 | site)", "Salamanders", "negbinomial")
VERBAGG = ("r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", "VerbAgg", "bernoulli")


def model_of(spec):
    """The `Model` of a (formula, data set, family) triple."""
    import multilevel as mlv

    formula, data, family = spec
    return mlv.Model(formula, mlv.datasets.load(data), family=family)


def reference_files(*kinds: str) -> list[str]:
    """Names of the reference fits of the given kinds (e.g. 'lme4::lmer')."""
    out = []
    for path in sorted(REFERENCE.glob("*.json")):
        if json.loads(path.read_text()).get("kind") in kinds:
            out.append(path.stem)
    return out


def occupancy_site_loglik(params, arrays, shift_psi=0.0, shift_p=0.0):
    """An occupancy model's log P(y_i) per site straight from its definition, log(psi prod_j p^y (1 - p)^(1 - y)
    + (1 - psi) [never detected]), in probabilities (scipy's expit): the package's log-scale algebra checked
    against it. `shift_psi`, `shift_p`: per-site shifts of the logits."""
    from scipy.special import expit

    a = arrays.X.shape[1]
    psi = expit(arrays.X @ params[:a] + shift_psi)
    p = expit(arrays.V @ params[a:] + np.reshape(shift_p, (-1, 1) if np.ndim(shift_p) else ()))
    given_occupied = np.prod(np.where(arrays.mask > 0, p**arrays.Y * (1 - p) ** (1 - arrays.Y), 1.0), axis=1)
    return np.log(psi * given_occupied + (1 - psi) * ((arrays.Y * arrays.mask).max(axis=1) == 0))


def assert_same_optimum(fit, free):
    """A gradient fit reaches the derivative-free (BOBYQA) fit's optimum: -2 log L never above it (1e-9) and within
    1e-6, fixed effects within 1e-3 SE, SDs within 1e-3."""
    assert fit.deviance <= free.deviance * (1 + 1e-9)
    assert fit.deviance == pytest.approx(free.deviance, rel=1e-6)
    se = fit.fixed_effects["std_error"].to_numpy()
    np.testing.assert_allclose(fit.beta, free.beta, atol=1e-3 * se.min())
    np.testing.assert_allclose(fit.variance_components["sd"], free.variance_components["sd"], atol=1e-3)


@pytest.fixture(scope="session")
def sleep():
    """The sleepstudy data, read once (tests must not modify it)."""
    import multilevel as mlv

    return mlv.datasets.load("sleepstudy")


@pytest.fixture(scope="session")
def cbpp():
    """The cbpp data (binomial, 15 herds), read once (tests must not modify it)."""
    import multilevel as mlv

    return mlv.datasets.load("cbpp")


@pytest.fixture(autouse=True)
def _quiet_warnings():
    """Our own warnings are asserted where they matter; elsewhere they are noise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def pytest_configure(config):
    """XLA reads its flags once: make every test process single-threaded before anything imports JAX."""
    import os

    from multilevel.nuts import XLA_SINGLE_THREAD

    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *XLA_SINGLE_THREAD]).strip()
