"""Occupancy models by NUTS (occupancy summed out) against JAGS on spOccupancy's OVEN vignette model and priors
(shared/reference/oven_occupancy_jags.json, 4 x 12,500 draws)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import multilevel as mlv

from conftest import occupancy_site_loglik

REF = json.loads((Path(__file__).resolve().parents[2] / "shared/reference/oven_occupancy_jags.json").read_text())


@pytest.fixture(scope="module")
def post():
    df = mlv.datasets.load("oven_occupancy")
    model = mlv.Occupancy("~ Elevation_scaled + I(Elevation_scaled**2)", "~ day_scaled + tod_scaled + I(day_scaled**2)",
                          df, site="site", response="y")
    return model.sample(chains=2, draws=1000, warmup=500, seed=3)


def test_posterior_matches_jags(post):
    table = post.summary()
    names = post.model.parameter_names
    assert names == ["psi((Intercept))", "psi(Elevation_scaled)", "psi(I(Elevation_scaled^2))", "p((Intercept))",
                     "p(day_scaled)", "p(tod_scaled)", "p(I(day_scaled^2))"]
    for name, ref in zip(names, REF["posterior_summary"]):
        assert abs(table.loc[name, "mean"] - ref["mean"]) < 0.1 * ref["sd"], name
        assert table.loc[name, "sd"] == pytest.approx(ref["sd"], rel=0.10), name
    n_occ = REF["n_occ"][0]
    assert abs(post.n_occupied()["mean"] - n_occ["mean"]) < 0.1 * n_occ["sd"]
    assert post.n_occupied()["sd"] == pytest.approx(n_occ["sd"], rel=0.10)
    assert not post.warnings and table["r_hat"].max() < 1.01


def test_latent_occupancy_is_one_where_seen(post):
    seen = post.model.arrays.detected
    assert seen.sum() == 274
    assert np.all(post.z[..., seen] == 1) and np.all(post.w[..., seen] == 1)
    unseen = post.z[..., ~seen]
    assert 0 < unseen.mean() < 1
    # z is drawn from w: their averages agree within Monte Carlo error
    assert abs(unseen.mean() - post.w[..., ~seen].mean()) < 4 * np.sqrt(0.25 / unseen.size)


def test_arviz_and_loo_over_sites(post):
    tree = post.to_arviz()
    assert tree.posterior["z"].shape == (2, 1000, 373)
    assert tree.log_likelihood["y"].shape == (2, 1000, 373)
    assert post.fixed_effects.loc["psi((Intercept))", "estimate"] == post.summary().loc["psi((Intercept))", "mean"]
    np.testing.assert_allclose(post.site_loglik.sum(axis=-1)[0, :5],
                               [post.model.loglik(x) for x in post.draws[0, :5]], rtol=1e-10)
    assert np.isfinite(float(post.loo().elpd))


# ---- simulation-based calibration (Talts et al. 2018) on a small simulated occupancy model

SITES, VISITS, KEPT = 40, 3, 99
SBC_RNG = np.random.default_rng(2017)
SITE_X, VISIT_W = SBC_RNG.normal(size=SITES), SBC_RNG.normal(size=(SITES, VISITS))


def _simulate(replicate: int):
    """Coefficients from the normal(0, 1) prior, then occupancy and detections from them."""
    import pandas as pd

    rng = np.random.default_rng([2017, replicate])
    beta, alpha = rng.normal(size=2), rng.normal(size=2)
    z = rng.random(SITES) < 1 / (1 + np.exp(-(beta[0] + beta[1] * SITE_X)))
    p = 1 / (1 + np.exp(-(alpha[0] + alpha[1] * VISIT_W)))
    y = (rng.random((SITES, VISITS)) < p) & z[:, None]
    frame = pd.DataFrame({"site": np.repeat(np.arange(SITES), VISITS).astype(str), "x": np.repeat(SITE_X, VISITS),
                          "w": VISIT_W.ravel(), "y": y.ravel().astype(float)})
    return frame, np.r_[beta, alpha]


@pytest.mark.parametrize(("sampler", "thin"), [("nuts", 2), ("gibbs", 5)])  # Gibbs draws are more autocorrelated
def test_sbc_quick(sampler, thin):
    """30 replicates, ranks of the true coefficients among 99 thinned draws in five bins: uniform if calibrated."""
    from scipy import stats

    ranks = []
    for r in range(30):
        frame, truth = _simulate(r)
        post = mlv.Occupancy("~ x", "~ w", frame).sample(chains=1, draws=thin * KEPT, warmup=300, seed=r, prior_variance=1.0,
                                                         sampler=sampler)
        ranks.append(np.sum(post.draws[0, thin - 1::thin][:KEPT] < truth, axis=0))
    ranks = np.array(ranks)
    pvalues = [stats.chisquare(np.bincount(ranks[:, j] // 20, minlength=5)).pvalue for j in range(4)]
    assert min(pvalues) > 0.001, pvalues


# ---- a random intercept, sampled non-centred


@pytest.fixture(scope="module")
def routes():
    df = mlv.datasets.load("pcru_occupancy")
    return mlv.Occupancy("~ 1", "~ MinAfterSunset_scaled + Temperature_scaled + (1 | route)", df.assign(route=df["route"].astype(str)))


def _route_density(routes):
    """The sampled density of `routes` (layout and data, sd prior inverse-gamma(0.7, 0.3)) and the same log
    posterior by hand: the log-likelihood with the shifts, normal priors, the inverse-gamma on sigma^2 and the
    Jacobian of log sigma (scipy's densities)."""
    from scipy import stats

    from multilevel import nuts
    from multilevel.occupancy_likelihood import OccupancyLayout

    nuts.setup_jax()
    a, term = routes.arrays, routes.random[1]
    layout = OccupancyLayout(a.X.shape[0], 1, 3, "p", term.m)
    data = {"X": a.X, "V": a.V, "Y": a.Y, "mask": a.mask, "prior_var": np.full(4, 2.72), "codes": term.codes,
            "sd_prior": np.array([0.7, 0.3])}

    def by_hand(x):
        sigma, u = np.exp(x[4]), x[5:]
        ll = occupancy_site_loglik(x[:4], a, shift_p=(sigma * u)[term.codes]).sum()
        return (ll + stats.norm.logpdf(x[:4], scale=np.sqrt(2.72)).sum() + stats.norm.logpdf(u).sum()
                + stats.invgamma.logpdf(sigma**2, 0.7, scale=0.3) + np.log(2 * sigma**2))

    return layout, data, by_hand


def test_random_intercept_density_is_likelihood_plus_priors(routes):
    """Differences of the sampled log density between two points equal those of the log posterior by hand."""
    layout, data, by_hand = _route_density(routes)
    rng = np.random.default_rng(5)
    x1, x2 = rng.normal(size=(2, 5 + routes.random[1].m))
    got = float(layout.log_density(data, x1) - layout.log_density(data, x2))
    assert got == pytest.approx(by_hand(x1) - by_hand(x2), abs=1e-9)


def test_density_gradient_is_the_derivative_of_the_density(routes):
    """The sampled density's gradient (the likelihood's analytic derivative in the logits, through the shifts'
    chain rule) equals central differences of the log posterior by hand."""
    import jax

    layout, data, by_hand = _route_density(routes)
    x = np.random.default_rng(6).normal(size=5 + routes.random[1].m)
    h = 1e-5
    numeric = [(by_hand(x + h * e) - by_hand(x - h * e)) / (2 * h) for e in np.eye(len(x))]
    got = np.asarray(jax.grad(lambda v: layout.log_density(data, v))(x))
    np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-6)


def test_random_intercept_posterior_tables(routes):
    post = routes.sample(chains=2, draws=300, warmup=300, seed=4)
    assert post.sd_name == "p(sd_route)" and post.sd.shape == (2, 300) and np.all(post.sd > 0)
    assert list(post.summary().index) == routes.parameter_names + ["p(sd_route)", "n_occ"]
    effects = post.group_effects
    assert len(effects) == 13 and set(effects["level"]) == set(routes.random_levels)
    assert post.to_arviz().posterior["r_route"].shape == (2, 300, 13)


def test_posterior_predictive_check_statistic_by_hand(post):
    """The data's Freeman-Tukey statistic per draw, recomputed survey by survey from the model's rows."""
    from scipy.special import expit

    m, k = post.model, post.model.arrays.a
    sites, y = m.survey_sites, m.surveys["y"].to_numpy(float)
    detections = np.bincount(sites, weights=y)
    fts = []
    for c in range(post.n_chains):
        for d in range(post.n_draws):
            expected = post.z[c, d] * np.bincount(sites, weights=expit(m.detection_matrix @ post.draws[c, d, k:]))
            fts.append(np.sum((np.sqrt(detections) - np.sqrt(expected)) ** 2))
    full = post.posterior_predictive_check(seed=7)
    assert full["mean_observed"] == pytest.approx(np.mean(fts), rel=1e-10)
    assert full.equals(post.posterior_predictive_check(seed=7)) and 0 < full["p_value"] < 1
    with pytest.raises(mlv.MultilevelError, match="freeman-tukey"):
        post.posterior_predictive_check("deviance")


def test_predict_new_sites_from_the_draws(post):
    import pandas as pd
    from scipy.special import expit

    new = pd.DataFrame({"Elevation_scaled": [-1.0, 0.0, 1.5]})
    table = post.predict(new, part="psi")
    beta = post.draws[..., :3].reshape(-1, 3)
    by_hand = expit(beta[:, 0] + beta[:, 1] * 1.5 + beta[:, 2] * 1.5**2)
    assert table["estimate"].iloc[2] == pytest.approx(by_hand.mean(), rel=1e-12)
    assert table["std_error"].iloc[2] == pytest.approx(by_hand.std(ddof=1), rel=1e-12)
    assert np.all(table["lower"] < table["estimate"]) and np.all(table["estimate"] < table["upper"])
    with pytest.raises(mlv.MultilevelError, match="'psi' or 'p'"):
        post.predict(new, part="z")
