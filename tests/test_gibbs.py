"""The blocked Gibbs sampler: its Gaussian block against dense linear algebra, its posteriors against the
exact ones (quadrature) and brms, reproducibility whatever the number of cores, and its refusals."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import reference

import multilevel as mlv
from multilevel.coefficient_prior import CoefficientPrior
from multilevel.crossprod import z_matrix
from multilevel.errors import MultilevelError
from multilevel.gibbs import GaussianBlock, inv_wishart


def dense_conditional(design, covs, sigma, prec, mean):
    """Mean and covariance of (beta, b) given the variances, from the dense normal equations."""
    X = design.X
    Z = np.hstack([z_matrix(b).toarray() for b in design.blocks])
    W = np.hstack([X, Z])
    prior_prec = np.zeros(W.shape[1])
    prior_prec[: X.shape[1]] = prec
    Q = W.T @ W / sigma**2
    Q[: X.shape[1], : X.shape[1]] += np.diag(prec)
    start = X.shape[1]
    for block, cov in zip(design.blocks, covs):
        size = block.m * block.k
        Q[start : start + size, start : start + size] += np.kron(np.eye(block.m), np.linalg.inv(cov))
        start += size
    rhs = W.T @ design.y / sigma**2
    rhs[: X.shape[1]] += prec * mean
    V = np.linalg.inv(Q)
    return V @ rhs, V


@pytest.mark.parametrize(
    "formula, data",
    [
        ("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin"),
        ("Reaction ~ 1 + Days + (1 + Days | Subject)", "sleepstudy"),
    ],
)
def test_joint_gaussian_draw_matches_dense_algebra(formula, data):
    design = mlv.Model(formula, mlv.datasets.load(data)).design
    rng = np.random.default_rng(3)
    covs = [np.diag(rng.uniform(0.5, 2.0, b.k)) * np.var(design.y) / 4 for b in design.blocks]
    if design.blocks[0].k == 2:
        covs[0][0, 1] = covs[0][1, 0] = 0.3 * np.sqrt(covs[0][0, 0] * covs[0][1, 1])
    sigma = float(np.std(design.y)) / 3
    prec = np.r_[1 / 10.0**2, np.zeros(design.p - 1)]  # a normal prior on the first coefficient
    mean = np.r_[np.mean(design.y) + 5, np.zeros(design.p - 1)]
    mu, V = dense_conditional(design, covs, sigma, prec, mean)
    block = GaussianBlock(design)
    T = [np.linalg.cholesky(c) / sigma for c in covs]
    n = 20000
    draws = np.empty((n, len(mu)))
    for i in range(n):
        beta, b = block.draw(T, sigma, CoefficientPrior(prec, mean), rng)
        draws[i] = np.concatenate([beta] + [x.ravel() for x in b])
    se = np.sqrt(np.diag(V) / n)
    assert np.all(np.abs(draws.mean(0) - mu) < 4.5 * se)
    # sample covariance: entries within 5 Monte Carlo SDs (sd of a covariance estimate ~ sqrt((V_ii V_jj + V_ij^2) / n))
    S = np.cov(draws, rowvar=False)
    d = np.diag(V)
    tol = 5 * np.sqrt((np.outer(d, d) + V**2) / n)
    assert np.all(np.abs(S - V) < tol)


def test_inverse_wishart_moments():
    rng = np.random.default_rng(4)
    S = np.array([[2.0, 0.5], [0.5, 1.0]])
    draws = np.array([inv_wishart(rng, 9, S) for _ in range(40000)])
    np.testing.assert_allclose(draws.mean(0), S / (9 - 2 - 1), rtol=0.02)


MODELS = {
    "radon_intercept": ("log_radon ~ floor + (1 | county)", "radon"),
    "hsb82_null": ("mAch ~ 1 + (1 | school)", "Hsb82"),
    "eight_schools": ("y | se(sigma) ~ 1 + (1 | school)", "eight_schools"),
    "sleepstudy_slopes": ("Reaction ~ 1 + Days + (1 + Days | Subject)", "sleepstudy"),
}


def gibbs_summary(name: str, draws: int):
    formula, data = MODELS[name]
    post = mlv.Model(formula, mlv.datasets.load(data)).sample(
        sampler="gibbs", chains=4, draws=draws, warmup=500, seed=7, progress=False
    )
    return post.summary(group_effects=True)


def assert_matches_exact(table, name):
    for row in reference(f"{name}_brms_exact")["posterior_summary"]:
        ours, sd = table.loc[row["variable"]], row["sd"]
        assert abs(ours["mean"] - row["mean"]) <= 0.05 * sd, row["variable"]
        assert abs(ours["sd"] / sd - 1) <= 0.03, row["variable"]
        assert abs(ours["q2.5"] - row["q2.5"]) <= 0.1 * sd, row["variable"]
        assert abs(ours["q97.5"] - row["q97.5"]) <= 0.1 * sd, row["variable"]


def test_radon_matches_exact_posterior():
    assert_matches_exact(gibbs_summary("radon_intercept", 2500), "radon_intercept")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hsb82_null", "eight_schools"])
def test_matches_exact_posterior(name):
    """Eight schools mixes slowly under Gibbs (group effects and their SD move together): more draws."""
    assert_matches_exact(gibbs_summary(name, 2500 if name == "hsb82_null" else 10000), name)


@pytest.mark.slow
def test_sleepstudy_matches_brms():
    """Correlated slopes: the covariance matrix keeps brms's half-t + LKJ(1) prior through the Metropolis step."""
    table = gibbs_summary("sleepstudy_slopes", 2500)
    for row in reference("sleepstudy_slopes_brms")["posterior_summary"]:
        ours = table.loc[row["variable"]]
        assert abs(ours["mean"] - row["mean"]) <= 0.1 * row["sd"], row["variable"]
        assert abs(ours["sd"] / row["sd"] - 1) <= 0.10, row["variable"]


def test_same_draws_whatever_the_number_of_cores():
    model = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff"))
    kw = dict(sampler="gibbs", chains=2, draws=100, warmup=50, seed=11, progress=False)
    one, two = model.sample(cores=1, **kw), model.sample(cores=2, **kw)
    np.testing.assert_array_equal(one.beta, two.beta)
    np.testing.assert_array_equal(one.sd[0], two.sd[0])
    np.testing.assert_array_equal(one.b[0], two.b[0])
    other = model.sample(cores=1, **(kw | {"seed": 12}))
    assert not np.array_equal(one.beta, other.beta)


def test_too_few_levels_for_a_covariance_matrix():
    data = mlv.datasets.load("sleepstudy")
    data = data[data["Subject"].isin(data["Subject"].unique()[:2])]
    model = mlv.Model("Reaction ~ Days + (Days | Subject)", data)
    with pytest.raises(MultilevelError, match="more levels than coefficients"):
        model.sample(sampler="gibbs", chains=1, draws=10, warmup=50, seed=1, progress=False)
