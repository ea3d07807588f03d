"""Collapsed NUTS against brms (Stan) and against the exact posteriors computed by quadrature.

Same models, same priors (brms's defaults). Tolerances are the issue's: against brms, means within 0.1
posterior SD and SDs within 10 %; against the exact posteriors, means within 0.05 SD, SDs within 3 % and
the 2.5 % / 97.5 % quantiles within 0.1 SD. 4 chains x 2500 draws (eight schools 4 x 10000) keep our own
Monte Carlo error small.
"""

from __future__ import annotations

import pytest
from conftest import reference

import multilevel as mlv

MODELS = {
    "sleepstudy_slopes": ("Reaction ~ 1 + Days + (1 + Days | Subject)", "sleepstudy"),
    "radon_intercept": ("log_radon ~ floor + (1 | county)", "radon"),
    "hsb82_null": ("mAch ~ 1 + (1 | school)", "Hsb82"),
    "eight_schools": ("y | se(sigma) ~ 1 + (1 | school)", "eight_schools"),
}
EXACT = ["radon_intercept", "hsb82_null", "eight_schools"]
DRAWS = {"eight_schools": 10000}  # its heavy tails need 40,000 draws to pin the 2.5/97.5 % quantiles to 0.1 SD


def model_of(name: str) -> mlv.Model:
    formula, data = MODELS[name]
    return mlv.Model(formula, mlv.datasets.load(data))


@pytest.fixture(scope="module", params=list(MODELS))
def fitted(request):
    """One NUTS fit per model (4 x 2500 draws, eight schools 4 x 10000), shared by the brms and the exact comparisons."""
    name = request.param
    post = model_of(name).sample(chains=4, draws=DRAWS.get(name, 2500), warmup=1000, seed=1, progress=False)
    return name, post, post.summary(group_effects=True)


def test_same_models_as_reference():
    for name, (formula, data) in MODELS.items():
        ref = reference(f"{name}_brms")
        assert formula == ref["formula"]
        assert ref["data_file"].endswith(f"{data}.csv")
        assert model_of(name).nobs == ref["nobs"]


def test_against_brms(fitted):
    name, post, table = fitted
    for row in reference(f"{name}_brms")["posterior_summary"]:
        ours = table.loc[row["variable"]]
        assert abs(ours["mean"] - row["mean"]) <= 0.1 * row["sd"], row["variable"]
        assert abs(ours["sd"] / row["sd"] - 1) <= 0.10, row["variable"]


def test_against_exact_posterior(fitted):
    name, post, table = fitted
    if name not in EXACT:
        pytest.skip(f"no exact posterior for {name}")
    rows = reference(f"{name}_brms_exact")["posterior_summary"]
    assert any(r["variable"].startswith("r_") for r in rows)  # group effects are compared too
    for row in rows:
        ours, sd = table.loc[row["variable"]], row["sd"]
        assert abs(ours["mean"] - row["mean"]) <= 0.05 * sd, row["variable"]
        assert abs(ours["sd"] / sd - 1) <= 0.03, row["variable"]
        assert abs(ours["q2.5"] - row["q2.5"]) <= 0.1 * sd, row["variable"]
        assert abs(ours["q97.5"] - row["q97.5"]) <= 0.1 * sd, row["variable"]


def test_no_divergences_and_converged(fitted):
    """brms reports no divergences on these models; neither should the collapsed sampler."""
    name, post, table = fitted
    assert int(post.stats["diverging"].sum()) == 0
    assert (table["r_hat"] < 1.01).all()
    assert post.warnings == []


def test_information_criteria_against_exact(fitted):
    """Eight schools: WAIC is a function of the posterior (exact -30.681); PSIS-LOO approximates exact
    LOO (-30.844; brms's PSIS gave -30.796)."""
    name, post, table = fitted
    if name != "eight_schools":
        pytest.skip("exact LOO/WAIC are compared on eight schools (Hsb82's pointwise matrix is 7185 x 10000)")
    exact = reference("eight_schools_brms_exact")
    assert post.waic()["elpd_waic"] == pytest.approx(exact["waic_exact"]["elpd_waic"], abs=0.02)
    assert post.loo().elpd == pytest.approx(exact["loo_exact"]["elpd_loo"], abs=0.1)
