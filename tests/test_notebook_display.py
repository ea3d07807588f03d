"""Every result type shows itself in a notebook (`_repr_html_`) with the numbers its summary holds."""

from __future__ import annotations

import html
import json
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

import multilevel as mlv
from multilevel.io import load
from multilevel.saved_fit import SavedFit
from multilevel.saving import save


class Cells(HTMLParser):
    """The full values (data-value) and texts of an HTML block's table cells, and its warning boxes' text."""

    def __init__(self, page: str):
        super().__init__()
        self.values, self.texts, self.warnings, self._in, self._warning = [], [], [], None, False
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "td":
            self._in = "td"
            if "data-value" in attrs:
                self.values.append(float(attrs["data-value"]))
        if attrs.get("class") == "warning":
            self._warning = True

    def handle_endtag(self, tag):
        if tag == "td":
            self._in = None
        if tag == "div":
            self._warning = False

    def handle_data(self, data):
        if self._in:
            self.texts.append(data)
        if self._warning:
            self.warnings.append(data)


def holds(page: str, frame: pd.DataFrame) -> None:
    """Every finite number of `frame` is a cell of `page`, to the last digit."""
    cells = Cells(page).values
    numbers = frame.select_dtypes("number").to_numpy(dtype=float).ravel()
    numbers = numbers[np.isfinite(numbers)]
    assert len(numbers) > 0
    missing = [x for x in numbers if not np.any(np.isclose(cells, x, rtol=1e-15, atol=0))]
    assert not missing, missing


@pytest.fixture(scope="module")
def boundary_fit():
    return mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff2")).fit()


def test_fit_shows_its_summary_tables_lines_and_warnings(sleep, boundary_fit):
    fit = mlv.Model("Reaction ~ Days + (Days | Subject)", sleep).fit()
    page = fit._repr_html_()
    holds(page, fit.fixed_effects)
    holds(page, fit.variance_components)
    for line in fit.summary().splitlines()[:4:3]:  # the title and the criterion line, as summary() prints them
        assert line in page
    assert Cells(page).warnings == []
    boundary = Cells(boundary_fit._repr_html_()).warnings
    assert boundary and boundary[-1].strip().startswith("boundary (singular) fit")


def test_approximate_fit_shows_its_label_error_and_tables():
    fit = mlv.Model("diameter ~ 1 + (1 | plate) + (1 | sample)", mlv.datasets.load("Penicillin")).fit(solver="iterative")
    page = fit._repr_html_()
    holds(page, fit.fixed_effects)
    holds(page, fit.variance_components)
    for line in fit.summary().splitlines()[:5]:  # the title, the APPROXIMATE label, the criterion and its error
        assert html.escape(line.strip()) in page
    assert "APPROXIMATE" in fit.summary().splitlines()[0]


def test_fit_from_an_old_file_shows_the_same_block(tmp_path, boundary_fit):
    path = tmp_path / "fit.json"
    save(boundary_fit, path)
    record = json.loads(path.read_text())
    del record["data"]  # as files of format version 1 were written: tables only
    path.write_text(json.dumps(record))
    loaded = load(path)
    assert isinstance(loaded, SavedFit)
    assert loaded._repr_html_() == boundary_fit._repr_html_()


def test_posterior_shows_its_summary_table(sleep):
    post = mlv.Model("Reaction ~ Days + (1 | Subject)", sleep).sample(chains=2, draws=150, warmup=150, seed=1, progress=False)
    page = post._repr_html_()
    holds(page, post.summary())
    assert repr(post).splitlines()[1] in page  # the formula line
    cells = Cells(page).texts
    assert {"b_Intercept", "b_Days", "sd_Subject__Intercept", "sigma"} <= set(cells)


def test_methods_study_bootstrap_and_ppc_show_their_tables(boundary_fit):
    model = boundary_fit.model
    comparison = mlv.methods(model, include=["ML", "REML", "zero-avoiding"])
    page = comparison._repr_html_()
    holds(page, comparison.wide())
    assert "on the boundary" in page  # the account, as notes

    boot = boundary_fit.bootstrap(n=20, seed=1)
    holds(boot._repr_html_(), boot.interval())

    check = boundary_fit.ppc(["mean", "sd"], n=50, seed=1)
    holds(check._repr_html_(), check.table)

    result = mlv.study(model, truth={"b_Intercept": 5.0, "sd_Batch__Intercept": 1.0, "sigma": 3.0},
                       methods=["REML"], replicates=4, seed=2, progress=False)
    head, table = result._overview()
    page = result._repr_html_()
    assert head in page
    holds(page, table)


def test_docstring_example():
    import doctest

    from multilevel import html_tables

    assert doctest.testmod(html_tables).failed == 0
