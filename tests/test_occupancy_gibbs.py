"""Pólya-Gamma Gibbs sampling of occupancy models: against JAGS on spOccupancy's OVEN vignette model
(shared/reference/oven_occupancy_jags.json) with Monte Carlo error tolerances, its Gaussian step against the
closed-form conditional, a random intercept against the independent NUTS sampler, and reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import multilevel as mlv
from multilevel.occupancy_gibbs import gaussian_draw

REF = json.loads((Path(__file__).resolve().parents[2] / "shared/reference/oven_occupancy_jags.json").read_text())
Z = 4.0  # Monte Carlo errors: a difference within 4 combined MCSEs (a 1-in-15,000 miss per check if correct)


@pytest.fixture(scope="module")
def post():
    df = mlv.datasets.load("oven_occupancy")
    model = mlv.Occupancy("~ Elevation_scaled + I(Elevation_scaled**2)", "~ day_scaled + tod_scaled + I(day_scaled**2)",
                          df, site="site", response="y")
    return model.sample(chains=2, draws=2000, warmup=300, seed=3, sampler="gibbs")


def _mcse_mean(row) -> float:
    return row["sd"] / np.sqrt(row["ess_bulk"])


def test_gibbs_matches_jags(post):
    table = post.summary()
    for name, ref in zip(post.model.parameter_names, REF["posterior_summary"]):
        row = table.loc[name]
        assert abs(row["mean"] - ref["mean"]) < Z * np.hypot(_mcse_mean(row), ref["mcse_mean"]), name
        # the SD's MCSE is about sd / sqrt(2 ESS) for near-normal draws
        assert abs(row["sd"] - ref["sd"]) < Z * np.hypot(row["sd"] / np.sqrt(2 * row["ess_bulk"]), ref["mcse_sd"]), name
    n_occ, row = REF["n_occ"][0], table.loc["n_occ"]
    assert abs(row["mean"] - n_occ["mean"]) < Z * np.hypot(_mcse_mean(row), n_occ["mcse_mean"])
    assert row["sd"] == pytest.approx(n_occ["sd"], rel=0.10)
    assert table["r_hat"].max() < 1.02 and post.sampler == "gibbs"


def test_latent_occupancy_is_one_where_seen(post):
    seen = post.model.arrays.detected
    assert np.all(post.z[..., seen] == 1) and np.all(post.w[..., seen] == 1)
    unseen = post.z[..., ~seen]
    assert abs(unseen.mean() - post.w[..., ~seen].mean()) < 4 * np.sqrt(0.25 / unseen.size)
    np.testing.assert_allclose(post.site_loglik.sum(axis=-1)[0, :5], [post.model.loglik(x) for x in post.draws[0, :5]],
                               rtol=1e-10)


def test_gaussian_step_is_the_conditional_normal():
    """Draws of gaussian_draw have mean Q^-1 M'kappa and covariance Q^-1, Q = M' diag(omega) M + diag(prior)."""
    rng = np.random.default_rng(7)
    M, kappa, omega, prior = rng.normal(size=(30, 3)), rng.random(30) - 0.5, rng.random(30) + 0.1, np.array([0.5, 1, 2.0])
    Q = (M * omega[:, None]).T @ M + np.diag(prior)
    cov, n = np.linalg.inv(Q), 40_000
    draws = np.array([gaussian_draw(rng, M, kappa, omega, prior) for _ in range(n)])
    se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(draws.mean(axis=0) - cov @ M.T @ kappa) < 4 * se)
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=4 * np.sqrt(2 / n) * np.max(np.diag(cov)))


def test_random_intercept_agrees_with_nuts():
    """A random intercept on p (pcru by route): the Gibbs and NUTS posteriors, two independent samplers, agree
    within their Monte Carlo errors."""
    df = mlv.datasets.load("pcru_occupancy")
    model = mlv.Occupancy("~ 1", "~ MinAfterSunset_scaled + Temperature_scaled + (1 | route)",
                          df.assign(route=df["route"].astype(str)))
    gibbs = model.sample(chains=2, draws=2000, warmup=300, seed=5, sampler="gibbs").summary()
    nuts = model.sample(chains=2, draws=1000, warmup=500, seed=5).summary()
    for name in [*model.parameter_names, "p(sd_route)", "n_occ"]:
        g, n = gibbs.loc[name], nuts.loc[name]
        assert abs(g["mean"] - n["mean"]) < Z * np.hypot(_mcse_mean(g), _mcse_mean(n)), name


def test_same_draws_whatever_the_cores():
    df = mlv.datasets.load("pcru_occupancy")
    model = mlv.Occupancy("~ 1", "~ Temperature_scaled", df)
    kwargs = {"chains": 2, "draws": 50, "warmup": 50, "seed": 9, "sampler": "gibbs"}
    with pytest.warns(mlv.MultilevelWarning):  # 50 draws: ESS warnings
        one = model.sample(cores=1, **kwargs)
    with pytest.warns(mlv.MultilevelWarning):
        two = model.sample(cores=2, **kwargs)
    assert np.array_equal(one.draws, two.draws) and np.array_equal(one.z, two.z)
    with pytest.raises(mlv.MultilevelError, match="sampler must be 'nuts' or 'gibbs'"):
        model.sample(sampler="slice")
