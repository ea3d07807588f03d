"""The collapsed log density against a dense marginal likelihood written from the model's definition."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import multilevel as mlv
from multilevel.collapsed import constrain, jax_data, log_density, make_layout
from multilevel.crossprod import z_matrix
from multilevel.engine import Engine
from multilevel.partitioned import sampler_inputs
from multilevel.priors import resolve_priors


def setup(formula, data, prior=None):
    from multilevel.nuts import setup_jax

    setup_jax()
    import jax.numpy as jnp

    model = mlv.Model(formula, mlv.datasets.load(data))
    design, cp, means, intercept = sampler_inputs(model)  # the samplers' centred design, held in the user's units
    engine = Engine(cp, [b.k for b in design.blocks], [b.m for b in design.blocks])
    layout = make_layout(model, resolve_priors(model, prior), design.p - int(intercept), intercept)
    return model, design, layout, {k: jnp.asarray(v) for k, v in jax_data(engine, layout).items()}


def dense_log_marginal(design, layout, x):
    """log p(y | sds, correlations, sigma, alpha) with the centred coefficients integrated (flat prior)."""
    sds, chols, sigma, alpha, lp = constrain(layout, np.asarray(x, float), np)
    Z = np.hstack([z_matrix(b).toarray() for b in design.blocks])
    cov = [np.kron(np.eye(b.m), (s[:, None] * L) @ (s[:, None] * L).T) for b, s, L in zip(design.blocks, sds, chols)]
    D = np.zeros((Z.shape[1], Z.shape[1]))
    start = 0
    for c in cov:
        D[start : start + len(c), start : start + len(c)] = c
        start += len(c)
    V = sigma**2 * np.eye(design.nobs) + Z @ D @ Z.T
    Xc = design.X[:, : layout.p_c]
    r = design.y - alpha
    Vi = np.linalg.inv(V)
    XVX = Xc.T @ Vi @ Xc
    e = r - Xc @ np.linalg.solve(XVX, Xc.T @ Vi @ r)
    n, p = design.nobs, layout.p_c
    ll = -0.5 * ((n - p) * np.log(2 * np.pi) + np.linalg.slogdet(V)[1] + np.linalg.slogdet(XVX)[1] + e @ Vi @ e)
    return float(lp + ll)


@pytest.mark.parametrize(
    "formula, data, x",
    [
        ("Reaction ~ 1 + Days + (1 + Days | Subject)", "sleepstudy", [3.2, 1.8, 0.3, 3.3, 251.0]),
        ("Reaction ~ 1 + Days + (1 | Subject) + (0 + Days | Subject)", "sleepstudy", [3.0, 1.5, 3.2, 250.0]),
        ("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin", [-0.2, 0.7, -0.6, 23.0]),
    ],
)
def test_density_equals_dense_marginal_likelihood(formula, data, x):
    model, design, layout, jdata = setup(formula, data)
    ours = float(log_density(layout, jdata, np.asarray(x, float)))
    assert ours == pytest.approx(dense_log_marginal(design, layout, x), rel=1e-9)


def test_density_with_normal_coefficient_priors_equals_dense_marginal_likelihood():
    """beta_c ~ N(mean, s^2) integrated out: y - alpha ~ N(X_c mean, V + s^2 X_c X_c')."""
    prior = {"b": mlv.prior.normal(8.0, 2.0)}
    model, design, layout, jdata = setup("Reaction ~ 1 + Days + (1 + Days | Subject)", "sleepstudy", prior)
    x = np.array([3.2, 1.8, 0.3, 3.3, 251.0])
    sds, chols, sigma, alpha, lp = constrain(layout, x, np)
    Z = z_matrix(design.blocks[0]).toarray()
    cov = (sds[0][:, None] * chols[0]) @ (sds[0][:, None] * chols[0]).T
    Xc = design.X[:, : layout.p_c]
    V = sigma**2 * np.eye(design.nobs) + Z @ np.kron(np.eye(design.blocks[0].m), cov) @ Z.T + 2.0**2 * Xc @ Xc.T
    dense = lp + stats.multivariate_normal(Xc @ np.full(layout.p_c, 8.0) + alpha, V).logpdf(design.y)
    assert float(log_density(layout, jdata, x)) == pytest.approx(dense, rel=1e-9)


def test_degenerate_corners_have_no_mass_and_no_nan():
    _, _, layout, jdata = setup("Reaction ~ 1 + Days + (1 + Days | Subject)", "sleepstudy")
    for x in ([3, 2, 30, 3, 250], [20, 20, 0, -10, 250]):
        assert float(log_density(layout, jdata, np.asarray(x, float))) == -np.inf


def test_models_too_large_for_nuts_are_sent_to_gibbs_with_a_clear_error():
    model = mlv.Model("y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)", mlv.datasets.load("InstEval"))
    with pytest.raises(mlv.MultilevelError, match="sampler='gibbs'"):
        model.sample(chains=1, draws=10, warmup=50, seed=1, progress=False)
