"""Fuzz: the formula parser, model building and the loaders meet random text, crafted formulas, random bytes and
truncated files; every outcome is a result or our own error, never a library's exception."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import multilevel as mlv
from multilevel.errors import MultilevelError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FRAME = pd.DataFrame({"y": [1.0, 2.5, 0.3, 4.1, 2.2, 3.3, 1.9, 0.7], "x": [0.0, 1, 2, 3, 0, 1, 2, 3],
                      "g": ["a", "a", "b", "b", "c", "c", "d", "d"], "h": [1, 2, 1, 2, 1, 2, 1, 2]})
TOKENS = ["y", "x", "g", "h", "z", "1", "0", "-1", "+", "-", "*", ":", "/", "|", "||", "(", ")", "~", "I(", "x^2",
          "log(", "offset(", "weights(", "se(", ".", "C(", "poly(", "np.", "__import__(", "'os'", ",", " ", "1e400", "\x00"]


def outcome(call):
    """Run call(); a MultilevelError (FormulaError included) or a value are the only acceptable outcomes."""
    try:
        return call()
    except MultilevelError as exc:
        assert str(exc).strip()
        return exc


@FUZZ
@given(st.text(max_size=60))
def test_parser_on_random_text(text):
    outcome(lambda: mlv.parse(text))


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=14))
def test_parser_on_crafted_formulas(tokens):
    outcome(lambda: mlv.parse(" ".join(tokens)))


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=10))
def test_models_on_crafted_formulas(tokens):
    outcome(lambda: mlv.Model("y ~ " + " ".join(tokens), FRAME))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A fit (.json) and a posterior (.nc) as bytes."""
    folder = tmp_path_factory.mktemp("saved")
    model = mlv.Model("Reaction ~ Days + (1 | Subject)", mlv.datasets.load("sleepstudy"))
    model.fit(warn=False).save(folder / "fit.json")
    mlv.save(model.sample(sampler="gibbs", chains=1, draws=20, warmup=50, seed=1, progress=False), folder / "post.nc")
    return {".json": (folder / "fit.json").read_bytes(), ".nc": (folder / "post.nc").read_bytes()}


@FUZZ
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".json", ".nc"]))
def test_loader_on_random_bytes(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("bytes") / f"f{suffix}"
    path.write_bytes(data)
    assert isinstance(outcome(lambda: mlv.load(path)), MultilevelError)


@FUZZ
@given(fraction=st.floats(0.0, 0.999), suffix=st.sampled_from([".json", ".nc"]))
def test_loader_on_truncated_files(tmp_path_factory, saved, fraction, suffix):
    path = tmp_path_factory.mktemp("cut") / f"f{suffix}"
    whole = saved[suffix]
    path.write_bytes(whole[: int(fraction * len(whole))])
    error = outcome(lambda: mlv.load(path))
    assert isinstance(error, MultilevelError) and str(path) in str(error)


@FUZZ
@given(position=st.integers(0, 10**9), value=st.integers(0, 255))
def test_loader_on_a_flipped_byte_of_a_fit(tmp_path_factory, saved, position, value):
    whole = bytearray(saved[".json"])
    whole[position % len(whole)] = value
    path = tmp_path_factory.mktemp("flip") / "f.json"
    path.write_bytes(bytes(whole))
    outcome(lambda: mlv.load(path))
