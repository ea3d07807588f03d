"""sampler="laplace": the Laplace-marginal density against lme4, its exact gradient, the approximate posterior
against the long brms run with its importance-sampling check, the APPROXIMATE label everywhere, crossed terms."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import reference

import multilevel as mlv
from multilevel import glmm_bayes, glmm_density, glmm_laplace, laplace_density
from multilevel.errors import MultilevelError
from multilevel.priors import resolve_priors

CBPP = ("incidence | trials(size) ~ period + (1 | herd)", "cbpp", "binomial")
GROUSE = ("TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", "grouseticks", "poisson")


def model_of(spec, data=None) -> mlv.Model:
    formula, name, family = spec
    return mlv.Model(formula, mlv.datasets.load(name) if data is None else data, family=family)


def density_inputs(model):
    from multilevel.nuts import setup_jax

    setup_jax()
    glmm, data, centred, columns = glmm_bayes.target_inputs(model, resolve_priors(model, None), 0)
    return *laplace_density.laplace_inputs(glmm, data, model.design), columns


def point_of(layout, columns, sds, beta):
    """The sampler's unconstrained point of lme4's SDs and coefficients (intercept first): the held (centred)
    columns' coefficients, whose intercept alpha = beta_0 + centres . slopes."""
    held = columns.held_coefficients(np.asarray(beta, float))
    return np.concatenate([np.log(sds), [held[0]], held[1:]])


@pytest.mark.parametrize("spec, name", [(CBPP, "cbpp_binomial_laplace"), (GROUSE, "grouseticks_poisson")],
                         ids=["cbpp", "grouseticks"])
def test_laplace_likelihood_is_the_exact_laplace_value(spec, name):
    """At the reference's check points the density less its log prior is the exact Laplace log-likelihood
    (three terms for grouseticks: the blocked Schur complement), and its gradient is the central difference's."""
    import jax

    ref = reference(name)
    model = model_of(spec)
    layout, data, columns = density_inputs(model)
    order = [ref["theta"]["names"].index(f"{b.group}.(Intercept)") for b in model.design.blocks]
    f = jax.jit(lambda v: laplace_density.log_density(layout, data, v))
    for point in ref["objective_checks"]["points"]:
        x = point_of(layout, columns, np.array(point["theta"])[order], point["beta"])  # scalar terms: theta = SD
        log_prior = float(glmm_density._parameters(layout, data, x)[3])
        assert float(f(x)) - log_prior == pytest.approx(-point["objective_exact_laplace"] / 2, rel=1e-9)
    if layout.pairs:  # the Schur complement by row pairs is the dense product's
        from dataclasses import replace

        dense = replace(layout, pairs=False)
        assert float(laplace_density.log_density(dense, data, x)) == pytest.approx(float(f(x)), rel=1e-12)
    grad = np.asarray(jax.grad(f)(x))
    h = 1e-5
    numeric = np.array([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(len(x))])
    assert np.allclose(grad, numeric, rtol=1e-6, atol=1e-6 * np.abs(grad).max())


@pytest.mark.parametrize("spec, name", [(CBPP, "cbpp_binomial_laplace"), (GROUSE, "grouseticks_poisson")],
                         ids=["cbpp", "grouseticks"])
def test_warm_start_from_the_ml_modes_changes_nothing_but_the_start(spec, name):
    """The Newton steps from the ML fit's modes (the sampler's default) reach the modes from 0's: the same density
    and gradient at the reference's check points."""
    import jax

    ref = reference(name)
    model = model_of(spec)
    layout, data, columns = density_inputs(model)
    warm = {**data, **glmm_laplace.anchor(model)}
    assert "anchor0" in warm
    order = [ref["theta"]["names"].index(f"{b.group}.(Intercept)") for b in model.design.blocks]
    vg = jax.jit(jax.value_and_grad(lambda d, v: laplace_density.log_density(layout, d, v), argnums=1))
    for point in ref["objective_checks"]["points"]:
        x = point_of(layout, columns, np.array(point["theta"])[order], point["beta"])
        (v0, g0), (v1, g1) = vg(data, x), vg(warm, x)
        assert float(v1) == pytest.approx(float(v0), rel=1e-12)
        np.testing.assert_allclose(np.asarray(g1), np.asarray(g0), rtol=1e-7, atol=1e-9 * np.abs(g0).max())


def test_grouseticks_chains_start_where_the_density_is_finite():
    """Regression: cHEIGHT (SD 23) at brms-style starts of +-1 put e^47 ticks in the linear predictor; the modes
    overflowed, the density was -inf with a NaN gradient at every chain's start, no chain moved (600 of 600
    transitions divergent) and the importance check's weights were all NaN. Starts are now near 0 on each column's
    scale, and where the Newton steps cannot reach a mode the density is -inf (a divergence), never NaN."""
    import jax

    model = model_of(GROUSE)
    layout, data, _ = density_inputs(model)
    data = {**data, **glmm_laplace.anchor(model)}
    vg = jax.jit(jax.value_and_grad(lambda v: laplace_density.log_density(layout, data, v)))
    for c in range(4):
        value, grad = vg(glmm_laplace.chain_start(layout, model, data, np.random.default_rng([1, c])))
        assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    old = glmm_bayes.initial_point(layout, model, np.random.default_rng([1, 0]))  # the start that stuck
    assert not np.isnan(float(vg(old)[0]))  # finite, or -inf where the modes are out of the Newton steps' reach


def test_gaussian_draws_have_the_laplace_covariance():
    """`gaussian_draw` (the blocked factor, Schur complement first) draws N(u*, H^-1): compared with the inverse
    of H built densely from its blocks, on grouseticks' three terms."""
    import jax

    ref = reference("grouseticks_poisson")
    layout, data, columns = density_inputs(model_of(GROUSE))
    assert layout.pairs  # one row per INDEX level: the sparse Schur complement
    x = point_of(layout, columns, ref["theta"]["values"], ref["fixef"]["estimate"])
    *_, mode, _, factors = laplace_density._at_mode(layout, data, x)
    L0, M, Ls = (np.asarray(a) for a in factors)
    q0 = layout.q_first
    Mf = M.reshape(q0, -1)
    H = np.block([[np.diag(L0[:, 0, 0] ** 2), L0[:, 0, :1] * Mf], [Mf.T * L0[:, 0, 0], Ls @ Ls.T + Mf.T @ Mf]])
    z = jax.random.normal(jax.random.PRNGKey(0), (4000, laplace_density.noise_size(layout)))
    u = np.asarray(jax.vmap(lambda zz: laplace_density.gaussian_draw(layout, factors, mode, zz))(z)) - np.asarray(mode)
    cov = np.linalg.inv(H)
    se = np.sqrt((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / len(u))
    assert np.all(np.abs(u.T @ u / len(u) - cov) < 5 * se)


@pytest.fixture(scope="module")
def cbpp_laplace():
    return model_of(CBPP).sample(chains=4, draws=2500, warmup=1000, seed=1, progress=False, sampler="laplace")


def test_cbpp_bias_against_the_long_brms_run_agrees_with_the_importance_check(cbpp_laplace):
    """The Laplace posterior's real bias (its mean minus the long brms run's, in brms SDs) is what the
    importance-sampling check estimates: within 4 combined Monte Carlo SEs (ours from bulk ESS, brms's MCSE,
    the check's own), and of the same sign where the check finds a bias beyond 3 of its SEs (the herd SD)."""
    post = cbpp_laplace
    ours, check = post.summary(), post.importance_check
    assert post.stats["diverging"].sum() == 0
    for row in reference("cbpp_binomial_brms_long")["posterior_summary"]:
        name, sd = row["variable"], row["sd"]
        real = (ours.loc[name, "mean"] - row["mean"]) / sd
        se = np.sqrt((ours.loc[name, "sd"] ** 2 / ours.loc[name, "ess_bulk"] + row["mcse_mean"] ** 2) / sd**2
                     + check.loc[name, "mcse"] ** 2)
        est = check.loc[name, "bias"]
        assert abs(real - est) < 4 * se, (name, real, est, se)
        assert abs(real) < 0.1, name  # the approximation itself: every mean within 0.1 posterior SD of the truth
        if abs(est) > 3 * check.loc[name, "mcse"]:
            assert np.sign(real) == np.sign(est), name
    assert check.loc["sd_herd__Intercept", "bias"] < -3 * check.loc["sd_herd__Intercept", "mcse"]  # the SD too low
    assert np.isnan(check.attrs["inner_pareto_k"])  # one scalar term: the inner integral is exact quadrature
    assert check.attrs["pareto_k"] < 0.7


def test_the_approximation_is_labelled_in_every_output(cbpp_laplace, tmp_path):
    post = cbpp_laplace
    label = post.approximation
    assert label.startswith("APPROXIMATE")
    assert label in repr(post) and label in post._repr_html_()
    assert post.summary().attrs["approximation"] == label
    assert post.to_arviz().attrs["approximation"] == label
    assert post.warnings[0].startswith("APPROXIMATE") and "Importance-sampling check" in post.warnings[0]
    page = mlv.report({"laplace": post}, tmp_path / "r.html").read_text()
    assert label in page
    post.save(tmp_path / "p.nc")
    back = mlv.load(tmp_path / "p.nc")
    assert back.sampler == "laplace" and back.approximation == label and back.warnings == post.warnings
    assert back.importance_check.equals(post.importance_check)
    assert back.importance_check.attrs["pareto_k"] == pytest.approx(post.importance_check.attrs["pareto_k"])
    exact = model_of(CBPP).sample(chains=1, draws=100, warmup=100, seed=1, progress=False)
    assert exact.approximation is None and "APPROXIMATE" not in repr(exact)


def verbagg_subset() -> mlv.Model:
    """VerbAgg's first 40 subjects: crossed subjects x 24 items, 960 Bernoulli rows."""
    data = mlv.datasets.load("VerbAgg")
    keep = data["id"].isin(data["id"].unique()[:40])
    return mlv.Model("r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", data[keep], family="bernoulli")


def test_crossed_model_samples_with_its_check():
    post = verbagg_subset().sample(chains=2, draws=150, warmup=150, seed=4, progress=False, sampler="laplace")
    check = post.importance_check
    assert {"sd_id__Intercept", "sd_item__Intercept", "r_id (largest)", "r_item (largest)"} <= set(check.index)
    assert np.isfinite(check["bias"]).all() and 0 < check.attrs["ess"] <= check.attrs["draws"]
    assert np.isfinite(check.attrs["inner_pareto_k"])  # the items' effects are weighted
    assert [b.shape[2:] for b in post.b] == [(40, 1), (24, 1)]
    assert post.warnings[0].startswith("APPROXIMATE")


def test_same_draws_and_check_on_any_number_of_cores():
    model = model_of(CBPP)
    one = model.sample(chains=2, draws=200, warmup=200, seed=4, progress=False, sampler="laplace")
    two = model.sample(chains=2, draws=200, warmup=200, seed=4, progress=False, sampler="laplace", cores=2)
    assert np.array_equal(one.beta, two.beta) and all(np.array_equal(a, b) for a, b in zip(one.b, two.b))
    assert one.importance_check.equals(two.importance_check)


def test_laplace_is_refused_for_gaussian_models():
    model = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff"))
    with pytest.raises(MultilevelError, match="sampler='laplace' is for binomial"):
        model.sample(chains=1, draws=100, warmup=100, seed=1, sampler="laplace")


def test_vector_first_term_is_checked_over_all_its_effects():
    """With a vector first term no effect is integrated by quadrature: the check weighs every effect. Poisson
    counts near 50 make the Laplace approximation nearly exact, so the check must find no bias to speak of."""
    rng = np.random.default_rng(5)
    g, x = np.repeat(np.arange(12), 8), np.tile(np.linspace(-1, 1, 8), 12)
    b = rng.normal(0, [0.3, 0.2], (12, 2))
    y = rng.poisson(np.exp(4 + 0.5 * x + b[g, 0] + b[g, 1] * x))
    data = __import__("pandas").DataFrame({"y": y, "x": x, "g": g.astype(str)})
    post = mlv.Model("y ~ x + (1 + x | g)", data, family="poisson").sample(
        chains=1, draws=200, warmup=200, seed=3, progress=False, sampler="laplace")
    check = post.importance_check
    assert check.attrs["inner_pareto_k"] < 0.7 and check.attrs["pareto_k"] < 0.7
    assert np.all(np.abs(check["bias"]) < 0.1)
    assert "cor_g__Intercept__x" in check.index
