"""Shared test helpers: where the reference results are, and how to read them."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "reference"


def reference(name: str) -> dict:
    """One reference JSON (lme4, blme, brms ...) from ../shared/reference."""
    return json.loads((REFERENCE / f"{name}.json").read_text())


def reference_files(*kinds: str) -> list[str]:
    """Names of the reference fits of the given kinds (e.g. 'lme4::lmer')."""
    out = []
    for path in sorted(REFERENCE.glob("*.json")):
        if json.loads(path.read_text()).get("kind") in kinds:
            out.append(path.stem)
    return out


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
