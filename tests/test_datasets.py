"""Shipped data sets: the same bytes as ../shared/data, loaded with R's factor levels."""

from __future__ import annotations

import hashlib
import json
import math
from importlib import resources

import pandas as pd
import pytest
from conftest import SHARED

import multilevel as mlv
from multilevel.errors import MultilevelError

DATA = SHARED / "data"
SHIPPED = resources.files("multilevel.datasets") / "data"
REQUIRED = ["sleepstudy", "Dyestuff", "Dyestuff2", "Penicillin", "Pastes", "Hsb82", "radon", "InstEval", "eight_schools"]
needs_shared = pytest.mark.skipif(not DATA.exists(), reason="../shared/data is not next to this checkout")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_list_names_every_shipped_csv():
    names = mlv.datasets.list()
    assert set(REQUIRED) <= set(names)
    assert names == sorted(p.name[:-4] for p in SHIPPED.iterdir() if p.name.endswith(".csv"))


@needs_shared
def test_every_shared_csv_is_shipped_bit_identical():
    shared = sorted(p.name for p in DATA.glob("*.csv"))
    assert [f"{n}.csv" for n in mlv.datasets.list()] == shared
    for name in shared + ["factor_levels.json"]:
        assert sha256(SHIPPED / name) == sha256(DATA / name), name


@needs_shared
def test_checksums_match_the_data_readme():
    table = {}
    for line in (DATA / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].endswith(".csv") and len(cells[1]) == 16:
            table[cells[0]] = cells[1]
    assert len(table) == len(mlv.datasets.list())
    for name, prefix in table.items():
        assert sha256(SHIPPED / name).startswith(prefix), name


@pytest.mark.parametrize("name", mlv.datasets.list())
def test_factor_levels_follow_r(name):
    levels = json.loads((SHIPPED / "factor_levels.json").read_text()).get(name, {})
    frame = mlv.datasets.load(name)
    for column, info in levels.items():
        col = frame[column]
        assert isinstance(col.dtype, pd.CategoricalDtype), column
        assert len(col.cat.categories) == info["nlevels"], column
        assert col.dtype.ordered == bool(info["ordered"]), column
        if info["levels"]:
            assert list(col.cat.categories) == info["levels"], column
    for column in set(frame.columns) - set(levels):  # numbers, or text typed in: sorted categories
        col = frame[column]
        if isinstance(col.dtype, pd.CategoricalDtype):
            assert list(col.cat.categories) == sorted(col.astype(str).unique()), (name, column)
        else:
            assert pd.api.types.is_numeric_dtype(col), (name, column)


def test_known_r_level_orders():
    assert list(mlv.datasets.load("Hsb82").sector.cat.categories) == ["Public", "Catholic"]
    cake = mlv.datasets.load("cake").temperature
    assert cake.dtype.ordered and list(cake.cat.categories) == ["175", "185", "195", "205", "215", "225"]
    assert list(mlv.datasets.load("InstEval").dept.cat.categories)[:3] == ["15", "5", "10"]
    # long factors (levels not listed) are numeric labels in numeric order, as R's factor() of numbers
    assert list(mlv.datasets.load("sleepstudy").Subject.cat.categories)[:2] == ["308", "309"]


@needs_shared
@pytest.mark.parametrize("name", ["Hsb82", "sleepstudy", "radon"])
def test_doubles_are_read_exactly(name):
    """Every double equals Python's correctly rounded float() of the CSV text."""
    frame = mlv.datasets.load(name)
    raw = pd.read_csv(DATA / f"{name}.csv", dtype=str)
    for column in frame.columns:
        if pd.api.types.is_float_dtype(frame[column]):
            exact = [float(v) for v in raw[column]]
            assert all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(frame[column], exact)), column


@needs_shared
def test_row_counts_match_the_data_readme():
    expected = {"sleepstudy": (180, 3), "Dyestuff": (30, 2), "Penicillin": (144, 3), "Pastes": (60, 4),
                "InstEval": (73421, 7), "Hsb82": (7185, 8), "radon": (919, 4), "eight_schools": (8, 3)}
    for name, shape in expected.items():
        assert mlv.datasets.load(name).shape == shape, name


def test_names_are_case_insensitive_and_unknown_names_are_refused():
    assert mlv.datasets.load("SLEEPSTUDY").shape == (180, 3)
    with pytest.raises(MultilevelError, match="no data set named 'sleepstudie'; available: .*sleepstudy"):
        mlv.datasets.load("sleepstudie")


def test_each_load_is_a_fresh_copy():
    first = mlv.datasets.load("Dyestuff")
    first["Yield"] = 0.0
    assert (mlv.datasets.load("Dyestuff").Yield != 0).all()
