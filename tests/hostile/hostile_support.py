"""Shared pieces of the hostile corpus (imported by its test modules: a second conftest would shadow tests/conftest.py): small fits made once, and the outcome checks every case uses."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest

import multilevel as mlv
from multilevel.errors import MultilevelError, MultilevelWarning


@pytest.fixture(scope="session")
def sleep_fit():
    """REML fit of sleepstudy's random slopes (lme4's reference model)."""
    return mlv.Model("Reaction ~ Days + (Days | Subject)", mlv.datasets.load("sleepstudy")).fit(warn=False)


@pytest.fixture(scope="session")
def sleep_post():
    """A short Gibbs posterior of sleepstudy's random intercepts (cheap: no compilation)."""
    model = mlv.Model("Reaction ~ Days + (1 | Subject)", mlv.datasets.load("sleepstudy"))
    return model.sample(sampler="gibbs", chains=1, draws=50, warmup=50, seed=1, progress=False)


def grouped(n_groups: int = 12, per: int = 5, seed: int = 1) -> pd.DataFrame:
    """Noisy grouped data with a real group effect: y = 1 + 2x + a_g + e."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per)
    x = np.tile(np.arange(per, dtype=float), n_groups)
    a = rng.normal(0, 1.5, n_groups)
    return pd.DataFrame({"y": 1 + 2 * x + a[g] + rng.normal(0, 1, g.size), "x": x, "g": g})


def refused(call, *words: str) -> MultilevelError:
    """`call()` raises our error, whose message names every word (case-insensitive)."""
    with pytest.raises(MultilevelError) as info:
        call()
    message = str(info.value).lower()
    for word in words:
        assert word.lower() in message, f"{word!r} not in {message!r}"
    return info.value


def warned(call, pattern: str):
    """`call()` succeeds and raises a MultilevelWarning matching the pattern; returns the result."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    ours = [str(w.message) for w in caught if issubclass(w.category, MultilevelWarning)]
    assert any(re.search(pattern, m, re.IGNORECASE) for m in ours), ours
    return result
