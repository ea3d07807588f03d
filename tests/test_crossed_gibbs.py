"""The collapsed crossed Gibbs sampler (`sampler="crossed-gibbs"`): against the exact posterior (quadrature), against
the collapsed NUTS and the blocked Gibbs sampler on crossed models, by simulation-based calibration on a crossed
design, its residual sum of squares against the rows, and when `sampler="gibbs"` takes it.

Agreement is judged in Monte Carlo standard errors (ArviZ's, of each chain set's mean, SD and quantiles): two
samplers' estimates of one posterior differ by more than 4 combined MCSEs with probability about 6e-5 each.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from arviz_stats.base import array_stats
from conftest import reference
from sbc_ranks import KEPT, ranks_of_truth, uniformity_pvalues

import multilevel as mlv
from multilevel import crossed_gibbs
from multilevel.crossed_gibbs import CrossedChain
from multilevel.errors import MultilevelError
from multilevel.partitioned import sampler_inputs
from multilevel.predict import linear_predictor
from multilevel.priors import for_centred_response, resolve_priors

MCSES = 4.0


def mcse(draws: np.ndarray, method: str, prob: float | None = None) -> float:
    """ArviZ's Monte Carlo SE of a (chains, draws) array's mean, SD or quantile."""
    return float(array_stats.mcse(draws, chain_axis=0, draw_axis=1, method=method, prob=prob))


def draws_of(post) -> dict[str, np.ndarray]:
    return post.parameters() | post.group_effect_draws()


def sample(model, sampler: str, draws: int, seed: int = 3, **kw):
    return model.sample(sampler=sampler, chains=4, draws=draws, warmup=500, seed=seed, progress=False, **kw)


def assert_agree(ours: dict, theirs: dict, names: list[str]) -> None:
    """Means within MCSES combined MCSEs of the two runs, SDs likewise (ArviZ's MCSE of the SD)."""
    for name in names:
        a, b = ours[name], theirs[name]
        for method, stat in (("mean", np.mean), ("sd", np.std)):
            gap = abs(stat(a) - stat(b))
            assert gap <= MCSES * np.hypot(mcse(a, method), mcse(b, method)), (name, method, stat(a), stat(b))


@pytest.mark.parametrize("name, formula, data", [
    ("radon_intercept", "log_radon ~ floor + (1 | county)", "radon"),
    ("hsb82_null", "mAch ~ 1 + (1 | school)", "Hsb82"),
])
def test_matches_exact_posterior(name, formula, data):
    """One scalar term (each sweep then draws beta and the effects jointly): brms's default priors, every row of
    the exact posterior (quadrature) within MCSES of its MCSEs: mean, SD, 2.5 % and 97.5 % quantiles."""
    post = sample(mlv.Model(formula, mlv.datasets.load(data)), "crossed-gibbs", 2500)
    assert post.sampler == "crossed-gibbs" and post.warnings == []
    ours = draws_of(post)
    rows = reference(f"{name}_brms_exact")["posterior_summary"]
    assert any(r["variable"].startswith("r_") for r in rows)
    for row in rows:
        x = ours[row["variable"]]
        assert abs(x.mean() - row["mean"]) <= MCSES * mcse(x, "mean"), row["variable"]
        assert abs(x.std() - row["sd"]) <= MCSES * mcse(x, "sd"), row["variable"]
        for q in (2.5, 97.5):
            assert abs(np.quantile(x, q / 100) - row[f"q{q:g}"]) <= MCSES * mcse(x, "quantile", q / 100), (row["variable"], q)


def test_penicillin_agrees_with_nuts_and_blocked_gibbs():
    """Penicillin's crossed plate x sample design: the same posterior as the collapsed NUTS and the blocked Gibbs
    sampler (every parameter and group effect)."""
    model = mlv.Model("diameter ~ 1 + (1 | plate) + (1 | sample)", mlv.datasets.load("Penicillin"))
    crossed = draws_of(sample(model, "crossed-gibbs", 3000))
    for other in ("nuts", "gibbs"):
        assert_agree(crossed, draws_of(sample(model, other, 3000, seed=4)), list(crossed))


def simulated_crossed(users: int = 60, items: int = 25, rows: int = 900, seed: int = 5) -> pd.DataFrame:
    """An unbalanced crossed design with a covariate that varies within users and a user-level one."""
    rng = np.random.default_rng(seed)
    u, i = rng.integers(0, users, rows), rng.integers(0, items, rows)
    x, w = rng.normal(2.0, 1.0, rows), rng.normal(size=users)[u]
    y = 3 + 0.5 * x - 0.4 * w + rng.normal(0, 0.8, users)[u] + rng.normal(0, 0.5, items)[i] + rng.normal(0, 1, rows)
    return pd.DataFrame({"y": y, "x": x, "w": w, "user": [f"u{k}" for k in u], "item": [f"i{k}" for k in i]})


def test_simulated_crossed_agrees_with_blocked_gibbs():
    """A crossed design with a user-level covariate (which the user effects confound) and a within-user one:
    the same posterior as the blocked Gibbs sampler for every parameter and the first users' and items' effects."""
    model = mlv.Model("y ~ x + w + (1 | user) + (1 | item)", simulated_crossed())
    crossed, blocked = (draws_of(sample(model, s, 2000)) for s in ("crossed-gibbs", "gibbs"))
    names = [n for n in crossed if not n.startswith("r_")]
    names += ["r_user[u0,Intercept]", "r_user[u1,Intercept]", "r_item[i0,Intercept]", "r_item[i1,Intercept]"]
    assert_agree(crossed, blocked, names)


def test_residual_sum_of_squares_from_the_sums_equals_the_rows():
    """The sweep's residual sum of squares (a quadratic form in the cross-products and the pairs' products formed in
    the sweep) equals the one over the rows, with weights."""
    data = simulated_crossed(rows=300)
    data["wt"] = np.random.default_rng(1).uniform(0.5, 2.0, len(data))
    model = mlv.Model("y | weights(wt) ~ x + (1 | user) + (1 | item)", data)
    ps = resolve_priors(model, None)
    y0, held = for_centred_response(model.design, ps)
    design, cp, _, _ = sampler_inputs(model, y0, ps.informative)
    chain = CrossedChain(design, held, np.random.default_rng(0), cp)
    seen = []
    chain.draw_variances = lambda rss: seen.append(rss()) or 1.0
    chain.sweep()
    e = design.y - linear_predictor(design, chain.beta, chain.b)
    assert seen[0] == pytest.approx(float(design.weights @ e**2), rel=1e-10)


def test_gibbs_takes_the_crossed_sampler_beyond_the_dense_size(monkeypatch):
    """sampler='gibbs' runs the crossed sampler when every term is scalar, there are two or more and the dense
    system is larger than DENSE_SIDE; not with one term or a vector term."""
    data = simulated_crossed(rows=300)
    kw = dict(sampler="gibbs", chains=1, draws=20, warmup=50, seed=1, progress=False)
    monkeypatch.setattr(crossed_gibbs, "DENSE_SIDE", 10)
    assert mlv.Model("y ~ x + (1 | user) + (1 | item)", data).sample(**kw).sampler == "crossed-gibbs"
    assert mlv.Model("y ~ x + (1 | user)", data).sample(**kw).sampler == "gibbs"
    assert mlv.Model("y ~ x + (1 + x | user) + (1 | item)", data).sample(**kw).sampler == "gibbs"
    monkeypatch.setattr(crossed_gibbs, "DENSE_SIDE", 100_000)
    assert mlv.Model("y ~ x + (1 | user) + (1 | item)", data).sample(**kw).sampler == "gibbs"


def test_refuses_vector_terms_and_other_families():
    data = simulated_crossed(rows=300)
    kw = dict(sampler="crossed-gibbs", chains=1, draws=20, warmup=50, seed=1, progress=False)
    with pytest.raises(MultilevelError, match="scalar random terms.*'\\|\\|'"):
        mlv.Model("y ~ x + (1 + x | user) + (1 | item)", data).sample(**kw)
    data["hit"] = (data["y"] > 3).astype(int)
    with pytest.raises(MultilevelError, match="for Gaussian models"):
        mlv.Model("hit ~ x + (1 | user) + (1 | item)", data, family="binomial").sample(**kw)


def test_refuses_draws_that_cannot_fit_in_memory(monkeypatch):
    monkeypatch.setattr(crossed_gibbs, "available_bytes", lambda: 10**6)
    model = mlv.Model("y ~ x + (1 | user) + (1 | item)", simulated_crossed(rows=300))
    with pytest.raises(MultilevelError, match="group effects takes .* GiB.*fewer draws"):
        model.sample(sampler="crossed-gibbs", chains=4, draws=1000, warmup=50, seed=1, progress=False)


def test_same_draws_whatever_the_number_of_cores():
    model = mlv.Model("y ~ x + (1 | user) + (1 | item)", simulated_crossed(rows=300))
    kw = dict(sampler="crossed-gibbs", chains=2, draws=50, warmup=50, seed=11, progress=False)
    one, two = model.sample(cores=1, **kw), model.sample(cores=2, **kw)
    np.testing.assert_array_equal(one.beta, two.beta)
    np.testing.assert_array_equal(one.sd[1], two.sd[1])
    np.testing.assert_array_equal(one.b[0], two.b[0])
    assert not np.array_equal(one.beta, model.sample(cores=1, **(kw | {"seed": 12})).beta)


SBC_PRIORS = {"Intercept": mlv.prior.normal(0, 1), "b": mlv.prior.normal(0, 1), "sd": mlv.prior.half_normal(1),
              "sigma": mlv.prior.half_normal(1)}
SBC_PARAMETERS = ["b_Intercept", "b_x", "sd_user__Intercept", "sd_item__Intercept", "sigma", "r_user[u0,Intercept]"]


def sbc_replicate(replicate: int) -> tuple[pd.DataFrame, dict[str, float]]:
    """A 6 x 5 crossed design, two rows a cell, parameters drawn from the priors (the intercept of centred x)."""
    rng = np.random.default_rng([2020, replicate])
    alpha, slope, tau_u, tau_i, sigma = (SBC_PRIORS[k].sample(rng) for k in ("Intercept", "b", "sd", "sd", "sigma"))
    u, i = np.repeat(np.arange(6), 10), np.tile(np.repeat(np.arange(5), 2), 6)
    x = np.random.default_rng(2021).normal(0.5, 1.0, len(u))
    a, b = rng.normal(0, tau_u, 6), rng.normal(0, tau_i, 5)
    y = alpha + slope * (x - x.mean()) + a[u] + b[i] + rng.normal(0, sigma, len(u))
    data = pd.DataFrame({"y": y, "x": x, "user": [f"u{k}" for k in u], "item": [f"i{k}" for k in i]})
    truth = {"b_Intercept": alpha - slope * x.mean(), "b_x": slope, "sd_user__Intercept": tau_u, "sd_item__Intercept": tau_i,
             "sigma": sigma, "r_user[u0,Intercept]": a[0]}
    return data, truth


def test_sbc_crossed():
    """Simulation-based calibration (Talts et al. 2018) on a crossed design: 40 replicates, five bins."""
    ranks = []
    for r in range(40):
        data, truth = sbc_replicate(r)
        post = mlv.Model("y ~ x + (1 | user) + (1 | item)", data).sample(
            sampler="crossed-gibbs", chains=1, draws=10 * KEPT, warmup=200, seed=r, prior=SBC_PRIORS, progress=False)
        ranks.append(ranks_of_truth(draws_of(post), truth, SBC_PARAMETERS))
    p = uniformity_pvalues(np.array(ranks), SBC_PARAMETERS, bins=5)
    assert min(p.values()) > 0.001, p


def test_partitioned_data_give_the_draws_in_memory():
    """The sampler reads only the cross-products: from 3 shuffled Dask partitions the same seeded draws (the sums
    differ by rounding only)."""
    import dask.dataframe as dd

    pen = mlv.datasets.load("Penicillin").assign(x=np.cos(np.arange(144)))
    formula = "diameter ~ x + (1 | plate) + (1 | sample)"
    kw = dict(sampler="crossed-gibbs", chains=1, draws=100, warmup=100, seed=4, progress=False)
    a = mlv.Model(formula, pen).sample(**kw).summary()
    parts = dd.from_pandas(pen.sample(frac=1.0, random_state=1), npartitions=3)
    b = mlv.Model(formula, parts).sample(**kw).summary()
    np.testing.assert_allclose(b["mean"], a["mean"], rtol=0, atol=1e-9 * a["sd"].min())


def test_module_example_runs():
    import doctest

    assert doctest.testmod(crossed_gibbs).failed == 0
