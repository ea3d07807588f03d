"""compare(): frequentist rows as lme4's anova, Bayesian rows from ArviZ's LOO comparison plus WAIC and DIC."""

import pytest
from conftest import reference

import multilevel as mlv
from multilevel.compare import compare
from multilevel.errors import MultilevelError

INTERCEPTS = "Reaction ~ Days + (1 | Subject)"
SLOPES = "Reaction ~ Days + (Days | Subject)"



def test_frequentist_table_refits_by_ml_and_tests_the_bigger_model(sleep):
    table = compare({"intercepts": mlv.Model(INTERCEPTS, sleep).fit(), "slopes": mlv.Model(SLOPES, sleep).fit()})
    ref = reference("sleepstudy_slopes_ml")
    assert table.loc["slopes", "AIC"] == pytest.approx(ref["AIC"], abs=1e-5)
    assert table.loc["slopes", "BIC"] == pytest.approx(ref["BIC"], abs=1e-5)
    assert table.loc["slopes", "Df"] == 2
    assert table.loc["slopes", "Chisq"] == pytest.approx(table.loc["intercepts", "deviance"] - ref["deviance"], abs=1e-5)


def test_bayesian_table_prefers_random_slopes(sleep):
    kw = dict(chains=2, draws=250, warmup=250, seed=2, progress=False)
    posts = {"intercepts": mlv.Model(INTERCEPTS, sleep).sample(**kw), "slopes": mlv.Model(SLOPES, sleep).sample(**kw)}
    table = compare(posts)
    assert table.index[0] == "slopes"
    assert table.loc["intercepts", "elpd_diff"] > 2 * table.loc["intercepts", "dse"]
    for column in ("elpd", "p", "weight", "elpd_waic", "p_waic", "dic", "p_d", "p_v"):
        assert column in table.columns
    marginal = compare(posts, kind="marginal")
    assert "dic" not in marginal.columns and marginal.index[0] == "slopes"


def test_bad_input(sleep):
    fit = mlv.Model(INTERCEPTS, sleep).fit()
    with pytest.raises(MultilevelError, match="two or more"):
        compare({"one": fit})
    post = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff")).sample(
        chains=1, draws=100, warmup=100, seed=1, progress=False
    )
    with pytest.raises(MultilevelError, match="both Bayesian and frequentist"):
        compare({"a": fit, "b": post})
