"""methods(): every fit in one table; boundary flags on Dyestuff2; the penalised fits solve their own equations."""

import numpy as np
import pytest
from conftest import reference

import multilevel as mlv
from multilevel.errors import MultilevelError
from multilevel.methods import ALL_METHODS, methods

BAYES = dict(chains=2, draws=200, warmup=200)


def sd_rows(result, method):
    t = result.table
    return t[(t["method"] == method) & (t["kind"] == "sd")]


def test_dyestuff2_boundary_is_flagged_for_ml_and_reml_only():
    result = methods(mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff2")), bayes=BAYES)
    for method in ("ML", "REML"):
        assert sd_rows(result, method)["on_boundary"].all()
        assert bool(result.runs.loc[method, "on_boundary"])
    for method in ("zero-avoiding", "Bayes"):
        rows = sd_rows(result, method)
        assert not rows["on_boundary"].any() and (rows["estimate"] > 0.1).all()
    assert "boundary" in result.account()
    ref = reference("dyestuff2_blme_reml")
    assert sd_rows(result, "zero-avoiding")["estimate"].iloc[0] == pytest.approx(ref["varcomp"][0]["sd"][0], rel=1e-4)


@pytest.mark.parametrize(
    "formula,data,ref",
    [("Reaction ~ Days + (Days | Subject)", "sleepstudy", "sleepstudy_slopes_reml"), ("log_radon ~ floor + (1 | county)", "radon", "radon_intercept_reml")],
)
def test_every_method_runs_and_lines_up(formula, data, ref):
    model = mlv.Model(formula, mlv.datasets.load(data))
    include = [m for m in ALL_METHODS if m != "Bayes"]
    result = methods(model, include=include)
    assert list(result.runs.index) == include
    wide = result.wide(("fixed",))
    np.testing.assert_allclose(wide["REML"], reference(ref)["fixef"]["estimate"], rtol=1e-5)
    n_group = sum(b.m * b.k for b in model.design.blocks)
    assert (result.table.groupby("method")["kind"].apply(lambda k: (k == "group").sum()) == n_group).all()
    assert (result.runs["seconds"] > 0).all()
    assert "ridge toward group mean" in str(result)


@pytest.mark.slow
@pytest.mark.parametrize("formula,data", [("Reaction ~ Days + (Days | Subject)", "sleepstudy"), ("log_radon ~ floor + (1 | county)", "radon")])
def test_every_method_with_bayes(formula, data):
    result = methods(mlv.Model(formula, mlv.datasets.load(data)), bayes=BAYES)
    assert list(result.runs.index) == list(ALL_METHODS)
    assert not result.runs["on_boundary"].any()
    assert "Bayesian intervals" in result.account()


def test_ridge_toward_group_mean_solves_its_penalised_normal_equations():
    """X'(y - X beta - Z b) = 0 (fixed part unpenalised) and Z'(y - X beta - Z b) = lambda b."""
    model = mlv.Model("log_radon ~ floor + log_uranium + (1 | county)", mlv.datasets.load("radon"))
    result = methods(model, include=["ridge toward group mean"])
    est = result.fits["ridge toward group mean"]
    t = result.table
    beta = t[t["kind"] == "fixed"]["estimate"].to_numpy()
    b = t[t["kind"] == "group"]["estimate"].to_numpy()
    d = model.design
    Z = (d.blocks[0].codes[:, None] == np.arange(d.blocks[0].m)).astype(float)
    r = d.y - d.X @ beta - Z @ b
    np.testing.assert_allclose(d.X.T @ r, 0, atol=1e-8)
    np.testing.assert_allclose(Z.T @ r, est.alpha_ * b, atol=1e-8)


def test_unknown_method_is_named():
    model = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff"))
    with pytest.raises(MultilevelError, match="unknown method"):
        methods(model, include=["lasso"])
