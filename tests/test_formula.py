"""The formula layer: every syntax of lme4/brms formulas that the package accepts, parsed to terms."""

from __future__ import annotations

import pytest

import multilevel as mlv
from multilevel.errors import FormulaError
from multilevel.formula import RandomTerm, parse


def test_response_fixed_and_one_random_term():
    f = parse("Reaction ~ 1 + Days + (1 + Days | Subject)")
    assert f.response == "Reaction"
    assert f.fixed == "1 + Days"
    assert f.random == (RandomTerm("1 + Days", "Subject", True),)
    assert f.groups == ("Subject",)


@pytest.mark.parametrize(
    "text, fixed",
    [
        ("y ~ 0 + x + (1|g)", "0 + x"),
        ("y ~ x - 1 + (1|g)", "x - 1"),
        ("y ~ -1 + x + (1|g)", "1 - 1 + x"),
        ("y ~ (1|g)", "1"),
        ("y ~ a:b + (1|g)", "a:b"),
        ("y ~ a*b + (1|g)", "a*b"),
        ("y ~ I(x^2) + (1|g)", "I(x^2)"),
        ("y ~ I(x**2) + (1|g)", "I(x**2)"),
        ("y ~ C(x) + (1|g)", "C(x)"),
        ("y ~ x + I(x * 1e-3) + (1|g)", "x + I(x * 1e-3)"),
    ],
)
def test_fixed_part_syntax_is_kept_for_the_formula_library(text, fixed):
    f = parse(text)
    assert f.fixed == fixed
    assert f.random == (RandomTerm("1", "g"),)


def test_uncorrelated_terms_expand_as_lme4():
    # lme4: (1 + Days || Subject) is (1 | Subject) + (0 + Days | Subject)
    f = parse("Reaction ~ Days + (1 + Days || Subject)")
    assert f.random == (RandomTerm("1", "Subject", False), RandomTerm("0 + Days", "Subject", False))
    # the intercept is implied, as in R
    assert parse("y ~ x + (x || g)").random == parse("y ~ x + (1 + x || g)").random
    # without intercept, only the slopes
    assert parse("y ~ x + (0 + x + z || g)").random == (
        RandomTerm("0 + x", "g", False),
        RandomTerm("0 + z", "g", False),
    )


def test_nesting_expands_to_the_outer_factor_and_the_interaction():
    assert parse("y ~ 1 + (1 | batch/cask)").random == (RandomTerm("1", "batch"), RandomTerm("1", "batch:cask"))
    assert [t.group for t in parse("y ~ (1 | a/b/c)").random] == ["a", "a:b", "a:b:c"]
    assert parse("y ~ (x | a/b)").random == (RandomTerm("x", "a"), RandomTerm("x", "a:b"))


def test_interaction_grouping_factor():
    f = parse("y ~ service + (1 | dept:service)")
    assert f.random == (RandomTerm("1", "dept:service"),)
    assert f.random[0].group_factors == ("dept", "service")
    assert parse("y ~ (1 | dept : service)").random[0].group == "dept:service"


def test_crossed_and_several_terms_on_one_factor():
    crossed = parse("diameter ~ 1 + (1 | plate) + (1 | sample)")
    assert crossed.groups == ("plate", "sample")
    several = parse("y ~ x + (1 | g) + (0 + x | g) + (1 | h)")
    assert [str(t) for t in several.random] == ["(1 | g)", "(0 + x | g)", "(1 | h)"]
    assert several.groups == ("g", "h")


def test_brms_response_additions():
    f = parse("y | se(sigma) ~ 1 + (1 | school)")
    assert (f.response, f.se, f.weights) == ("y", "sigma", None)
    f = parse("y | weights(w) ~ x + (1 | g)")
    assert (f.response, f.se, f.weights) == ("y", None, "w")
    f = parse("y | se(s, sigma = TRUE) + weights(w) ~ x + (1 | g)")
    assert (f.se, f.weights) == ("s", "w")


def test_whitespace_does_not_matter():
    tight, loose = parse("y~x+(1+x|g)"), parse("  y ~ x + ( 1 + x | g )  ")
    assert (tight.response, tight.fixed, tight.groups) == (loose.response, loose.fixed, loose.groups)
    assert [t.expr.replace(" ", "") for t in tight.random] == [t.expr.replace(" ", "") for t in loose.random]


def test_transformed_response():
    assert parse("np.log(y) ~ x + (1|g)").response == "np.log(y)"


def test_str_gives_a_formula_that_parses_to_the_same_object():
    for text in [
        "Reaction ~ 1 + Days + (1 + Days || Subject)",
        "strength ~ 1 + (1 | batch/cask)",
        "y | se(sigma) ~ 1 + (1 | school)",
        "y ~ 0 + a*b + I(x^2) + (x | g) + (1 | g:h)",
    ]:
        f = parse(text)
        assert parse(str(f)) == f


def test_unicode_column_names():
    f = parse("Größe ~ Alter + (1 | Schüler)")
    assert (f.response, f.fixed, f.groups) == ("Größe", "Alter", ("Schüler",))


def test_parse_is_exported():
    assert mlv.parse is parse
    assert isinstance(mlv.parse("y ~ (1|g)"), mlv.Formula)


@pytest.mark.parametrize(
    "text, words",
    [
        ("y ~ x + (1 | g", "never closed"),
        ("y ~ x + 1 | g)", "unmatched ')'"),
        ("y ~ x + + z", "missing at position"),
        ("x + (1|g)", "no '~'"),
        ("~ x", "no response"),
        ("y ~ x ~ z", "more than one '~'"),
        ("y ~ x + (| g)", "nothing before '|'"),
        ("y ~ x + (1 |)", "grouping factor"),
        ("y ~ x + (1 | g + h)", "grouping factor"),
        ("y ~ x + (1 | g | h)", "more than one '|'"),
        ("y ~ x + 1 | g", "in brackets"),
        ("y ~ x - (1 | g)", "cannot be subtracted"),
        ("y ~ x $ z", "Unknown operator"),
        ("y | foo(s) ~ x", "se(column) or weights(column)"),
        ("y ~ x + (1 | g) + (1 | g)", "appears twice"),
        ("y ~ (1 | a/b) + (1 | a)", "appears twice"),
        ("y ~ x + x + (1 | g)", "appears twice"),
    ],
)
def test_syntax_errors_name_the_problem(text, words):
    with pytest.raises(FormulaError, match=words.replace("(", r"\(").replace(")", r"\)").replace("|", r"\|")):
        parse(text)


def test_syntax_error_points_at_the_position():
    with pytest.raises(FormulaError) as info:
        parse("y ~ x + + z")
    message = str(info.value)
    assert "position 7" in message
    text_line, caret_line = message.splitlines()[-2:]
    assert text_line.strip() == "y ~ x + + z"
    assert caret_line.index("^") - text_line.index("y") == 7


def test_implied_repeats_are_not_duplicates():
    # 'meanses*cses + sector*cses' implies cses twice; R accepts it, and so do we
    assert parse("mAch ~ meanses*cses + sector*cses + (1 + cses|school)").fixed == "meanses*cses + sector*cses"


def test_formula_must_be_text():
    with pytest.raises(FormulaError, match="must be a string"):
        parse(None)
