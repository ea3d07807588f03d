"""Property tests of the parser: generated valid formulas parse and round-trip through str() to the
same terms; generated garbage raises our exception type and nothing else."""

from __future__ import annotations

import formulaic
import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multilevel.design import build_design
from multilevel.errors import FormulaError, MultilevelError
from multilevel.formula import parse

NAMES = ["x", "z", "Days", "a1", "b.c", "w_2"]
GROUPS = ["g", "h", "Subject", "k.1"]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fixed_term():
    name = st.sampled_from(NAMES)
    return st.one_of(
        name,
        st.tuples(name, name).filter(lambda p: p[0] != p[1]).map(lambda p: f"{p[0]}:{p[1]}"),
        st.tuples(name, name).filter(lambda p: p[0] != p[1]).map(lambda p: f"{p[0]}*{p[1]}"),
        name.map(lambda n: f"I({n}^2)"),
        name.map(lambda n: f"I({n}**3)"),
        name.map(lambda n: f"C({n})"),
    )


@st.composite
def random_term(draw):
    expr = draw(st.sampled_from(["1", "x", "1 + x", "0 + x", "1 + x + z", "Days"]))
    bar = draw(st.sampled_from(["|", "||"]))
    first, second = draw(st.lists(st.sampled_from(GROUPS), min_size=2, max_size=2, unique=True))
    group = draw(st.sampled_from([first, f"{first}:{second}", f"{first}/{second}"]))
    return expr, bar, group


@st.composite
def valid_formula(draw):
    fixed = draw(st.lists(fixed_term(), max_size=4, unique=True))
    intercept = draw(st.sampled_from(["", "0 + ", "1 + "]))
    minus_one = draw(st.booleans()) and intercept == ""
    randoms = draw(st.lists(random_term(), max_size=3, unique_by=lambda t: t[2].replace("/", ":").split(":")[0]))
    lhs = draw(st.sampled_from(["y", "y | se(s)", "y | weights(w)", "np.log(y)"]))
    body = intercept + " + ".join(fixed) if fixed else intercept.strip(" +") or "1"
    rhs = [body] if fixed or intercept or not randoms else []
    if minus_one and rhs:
        rhs[0] += " - 1"
    rhs += [f"({e} {bar} {g})" for e, bar, g in randoms]
    return f"{lhs} ~ {' + '.join(rhs)}", randoms


def terms(expr: str) -> set[str]:
    """The formula library's terms of an expression (order and spelling independent)."""
    return {str(t) for t in formulaic.Formula(expr.replace("^", "**"))}


def random_terms(f):
    return [(frozenset(terms(t.expr)), t.group, t.correlated) for t in f.random]


@FAST
@given(valid_formula())
def test_valid_formulas_round_trip_to_the_same_terms(case):
    text, written = case
    f = parse(text)
    again = parse(str(f))
    assert (again.response, again.se, again.weights) == (f.response, f.se, f.weights)
    assert terms(again.fixed) == terms(f.fixed)
    assert random_terms(again) == random_terms(f)
    # each written term expands as lme4 does: one per nesting level, one per model term under '||'
    expected = 0
    for expr, bar, group in written:
        levels = group.count("/") + 1
        expected += levels * (len(terms(expr)) if bar == "||" else 1)
    assert len(f.random) == expected


FORMULA_CHARS = "yxg~+-*:/|()^ 01I.,se" + "\t$[]'\"\\"


@FAST
@given(st.text(alphabet=FORMULA_CHARS, max_size=30))
def test_garbage_raises_only_formula_errors(text):
    try:
        parse(text)
    except FormulaError:
        pass


@FAST
@given(st.text(max_size=25))
def test_arbitrary_text_raises_only_formula_errors(text):
    try:
        parse(text)
    except FormulaError:
        pass


DATA = pd.DataFrame(
    {
        "y": np.linspace(1.0, 3.0, 12),
        "x": np.arange(12.0) % 5,
        "g": list("aabbccddeeff"),
        "s": np.full(12, 0.5),
    }
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=FORMULA_CHARS, min_size=3, max_size=24))
def test_garbage_on_data_raises_only_multilevel_errors(text):
    """Whatever reaches the formula library and numpy comes back in our words."""
    try:
        build_design(text, DATA)
    except MultilevelError:
        pass
