"""GLMM results (predict, simulate, summary, tables), response syntax and bad input."""

import re

import numpy as np
import pandas as pd
import pytest

import multilevel as mlv
from conftest import assert_same_optimum, reference
from multilevel.errors import MultilevelError

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
OWLS = "SiblingNegotiation ~ FoodTreatment*SexParent + offset(log(BroodSize)) + (1 | Nest)"


@pytest.fixture(scope="module")
def cbpp_fit(cbpp):
    return mlv.Model(CBPP, cbpp, family="binomial").fit()


def test_trials_syntax_and_proportion_with_weights_equal_cbind(cbpp, cbpp_fit):
    brms = mlv.Model("incidence | trials(size) ~ period + (1 | herd)", cbpp, family="binomial").fit()
    props = cbpp.assign(p=cbpp["incidence"] / cbpp["size"])
    weighted = mlv.Model("p ~ period + (1 | herd)", props, weights="size", family="binomial").fit()
    for fit in (brms, weighted):
        assert fit.deviance == pytest.approx(cbpp_fit.deviance, rel=1e-10)
        np.testing.assert_allclose(fit.beta, cbpp_fit.beta, rtol=1e-6)


def test_tables_have_the_lmm_vocabulary(cbpp_fit):
    assert list(cbpp_fit.fixed_effects.columns[:4]) == ["estimate", "std_error", "z_value", "p_value"]
    vc = cbpp_fit.variance_components
    assert list(vc.columns) == ["group", "term", "term2", "variance", "sd", "corr"]
    assert "Residual" not in set(vc["group"])
    ge = cbpp_fit.group_effects
    assert len(ge) == 15 and {"estimate", "std_error"} <= set(ge.columns)
    assert cbpp_fit.bic == pytest.approx(cbpp_fit.deviance + np.log(56) * 5)
    text = cbpp_fit.summary()
    assert "binomial (logit)" in text and "Laplace" in text and "period4" in text


def test_predict_link_response_and_new_groups(cbpp, cbpp_fit):
    np.testing.assert_allclose(cbpp_fit.predict(type="response"), 1 / (1 + np.exp(-cbpp_fit.predict())), rtol=1e-12)
    np.testing.assert_allclose(cbpp_fit.predict(cbpp), cbpp_fit.predict(), rtol=1e-10)
    new = pd.DataFrame({"herd": ["1", "no such herd"], "period": ["2", "2"]})
    eta = cbpp_fit.predict(new)
    b1 = cbpp_fit.group_effects.query("level == '1'")["estimate"].iloc[0]
    population = cbpp_fit.beta[0] + cbpp_fit.beta[1]
    np.testing.assert_allclose(eta, [population + b1, population], rtol=1e-10)
    with pytest.raises(MultilevelError, match="type"):
        cbpp_fit.predict(type="probability")


def test_predict_evaluates_formula_offsets_on_new_data():
    owls = mlv.datasets.load("Owls")
    fit = mlv.Model(OWLS, owls, family="poisson").fit()
    np.testing.assert_allclose(fit.predict(owls.iloc[:5], type="response"), fit.fitted()[:5], rtol=1e-10)


def test_simulate_counts_successes_with_the_fitted_mean(cbpp, cbpp_fit):
    sims = cbpp_fit.simulate(400, seed=1)
    assert sims.shape == (400, 56)
    assert np.all(sims >= 0) and np.all(sims <= cbpp["size"].to_numpy()) and np.all(sims == np.round(sims))
    assert sims.mean() == pytest.approx(cbpp["incidence"].mean(), rel=0.15)
    np.testing.assert_array_equal(sims, cbpp_fit.simulate(400, seed=1))


def test_factor_response_is_coded_as_r_does():
    toenail = mlv.datasets.load("toenail")
    model = mlv.Model("outcome ~ visit + (1 | patientID)", toenail, family="binomial")
    np.testing.assert_array_equal(model.design.y, (toenail["outcome"] == "moderate or severe").to_numpy(float))


def test_nagq0_is_the_fast_start(cbpp, cbpp_fit):
    fit0 = mlv.Model(CBPP, cbpp, family="binomial").fit(nAGQ=0)
    assert fit0.deviance >= cbpp_fit.deviance - 1e-9
    np.testing.assert_allclose(fit0.beta, cbpp_fit.beta, atol=0.05)
    assert np.all(np.isfinite(fit0.fixed_effects["std_error"]))


@pytest.mark.parametrize(
    "formula, data, family, match",
    [
        ("y ~ 1 + (1 | g)", {"y": [1, -1, 2, 3], "g": list("aabb")}, "poisson", "negative"),
        ("y ~ 1 + (1 | g)", {"y": [1, 1.5, 2, 3], "g": list("aabb")}, "negbinomial", "count"),
        ("y ~ 1 + (1 | g)", {"y": [0, 1.2, 0.5, 1], "g": list("aabb")}, "binomial", r"\[0, 1\]"),
        ("cbind(s, f) ~ 1 + (1 | g)", {"s": [1, 2, 3, 1], "f": [1, -1, 0, 2], "g": list("aabb")}, "binomial",
         "more successes than"),
        ("s | trials(n) ~ 1 + (1 | g)", {"s": [1, 5, 3, 1], "n": [2, 4, 3, 2], "g": list("aabb")}, "binomial",
         "more successes than trials"),
        ("s | trials(n) ~ 1 + (1 | g)", {"s": [1, 1.5, 3, 1], "n": [2, 4, 3, 2], "g": list("aabb")}, "binomial",
         "whole numbers"),
        ("cbind(s, f) ~ 1 + (1 | g)", {"s": [1, 2, 3, 1], "f": [1, 1, 0, 2], "g": list("aabb")}, None, "family='binomial'"),
        ("y ~ 1 + (1 | g)", {"y": [1, 2, 3, 4], "g": list("aabb")}, "poison", "unknown family"),
    ],
)
def test_bad_input_is_refused_clearly(formula, data, family, match):
    with pytest.raises(MultilevelError, match=match):
        mlv.Model(formula, pd.DataFrame(data), family=family)


def test_options_that_do_not_apply_are_refused(cbpp):
    model = mlv.Model(CBPP, cbpp, family="binomial")
    with pytest.raises(MultilevelError, match="maximum likelihood"):
        model.fit(method="REML")
    with pytest.raises(MultilevelError, match="single scalar"):
        mlv.Model("TICKS ~ 1 + (1 | BROOD) + (1 | LOCATION)", mlv.datasets.load("grouseticks"),
                  family="poisson").fit(nAGQ=5)
    with pytest.raises(MultilevelError, match="information"):
        model.fit(information="fisher")


def test_glmm_fit_is_a_frequentist_result(cbpp_fit):
    from multilevel.kinds import Bayesian, Frequentist

    assert isinstance(cbpp_fit, Frequentist) and not isinstance(cbpp_fit, Bayesian)


def test_singular_fit_warns_once_or_keeps_the_warning_with_warn_false():
    """Poisson counts with no group variation: theta = 0, and then beta-hat's information is sum(y) (mu = ybar)."""
    rng = np.random.default_rng(1)
    data = pd.DataFrame({"y": rng.poisson(3.0, 60), "g": np.repeat(list("abcdefghij"), 6)})
    model = mlv.Model("y ~ 1 + (1 | g)", data, family="poisson")
    with pytest.warns(mlv.MultilevelWarning, match="boundary") as caught:
        fit = model.fit()
    assert len(caught) == 1 and fit.is_singular
    np.testing.assert_allclose(fit.vcov_rx.to_numpy(), [[1 / data["y"].sum()]], rtol=1e-9)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = model.fit(warn=False)
    assert quiet.warnings == fit.warnings and any("boundary" in w for w in quiet.warnings)


def test_vector_term_fit_checks_convergence_where_it_stopped():
    """A correlated random slope (BOBYQA and a final Newton step): the check reads the gradient at the point
    reported, so a converged fit says nothing; the point is the optimum (Nelder-Mead from it gains < 1e-6 deviance).
    The check used to read the gradient before the Newton step and warn 'may not have converged' (0.0026)."""
    import warnings

    from scipy.optimize import minimize

    rng = np.random.default_rng(1)
    g, x = np.repeat(np.arange(50), 20), rng.normal(size=1000)
    intercepts, slopes = rng.normal(0, 0.5, 50), rng.normal(0, 0.3, 50)
    y = rng.poisson(np.exp(0.5 + 0.3 * x + intercepts[g] + slopes[g] * x))
    data = pd.DataFrame({"y": y, "x": x, "g": g.astype(str)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = mlv.Model("y ~ x + (1 + x | g)", data, family="poisson").fit()
    assert fit.warnings == []
    start = np.concatenate([fit.theta, fit.beta])
    refined = minimize(lambda z: fit.deviance_at(z[:3], z[3:]), start, method="Nelder-Mead",
                       options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 5000})
    assert fit.deviance_at(fit.theta, fit.beta) - refined.fun < 1e-6


@pytest.mark.parametrize("family", ["poisson", "negbinomial"])
def test_vector_term_fit_with_gradient_is_the_derivative_free_optimum(family, monkeypatch):
    """A correlated random slope fitted with the exact gradient (L-BFGS-B, tens of evaluations) reaches the optimum
    BOBYQA without a gradient finds (the objective as before): -2 log L no higher than BOBYQA's (beyond 1e-9
    relative) and within issue 12's tolerances of it (1e-6 relative; beta 1e-3 SE; SDs 1e-3)."""
    from multilevel.vector_pirls import VectorTermGradient

    rng = np.random.default_rng(2)
    g, x = np.repeat(np.arange(40), 15), rng.normal(size=600)
    mu = np.exp(0.5 + 0.3 * x + rng.normal(0, 0.5, 40)[g] + rng.normal(0, 0.3, 40)[g] * x)
    y = rng.poisson(mu) if family == "poisson" else rng.negative_binomial(3.0, 3.0 / (3.0 + mu))  # NB: size 3
    model = mlv.Model("y ~ x + (1 + x | g)", pd.DataFrame({"y": y, "x": x, "g": g.astype(str)}), family=family)
    fit = model.fit()
    assert fit.converged and fit.warnings == []
    monkeypatch.setattr(VectorTermGradient, "applies", staticmethod(lambda design: False))
    free = model.fit()
    assert_same_optimum(fit, free)


def test_counts_too_large_for_pirls_are_named():
    """Poisson counts near 1e6 give weights whose rounding noise stalls PIRLS's Newton steps (~1e-8) above its stop:
    the error says so and names the largest count, rather than blaming separation or all-zero groups alone."""
    rng = np.random.default_rng(4)
    g, x = np.repeat(np.arange(20), 10), rng.normal(size=200)
    y = rng.poisson(1e6 * np.exp(0.5 + 0.3 * x + rng.normal(0, 0.5, 20)[g]))
    with pytest.raises(MultilevelError, match=re.escape(f"counts reach {y.max():.3g}") + ".*Gaussian model of log counts"):
        mlv.Model("y ~ x + (1 | g)", pd.DataFrame({"y": y, "x": x, "g": g.astype(str)}), family="poisson").fit()


def test_convergence_check_flags_an_unidentifiable_model(cbpp):
    """Two random terms on the same grouping: only theta_1^2 + theta_2^2 is identified, so the Hessian of -2 log L
    is singular at the optimum (lme4: 'nearly unidentifiable'); the check says so, and the likelihood is the one
    term's exact Laplace optimum (the cbpp reference)."""
    data = cbpp.assign(herd2="h" + cbpp["herd"].astype(str))
    model = mlv.Model("cbind(incidence, size - incidence) ~ period + (1 | herd) + (1 | herd2)", data, family="binomial")
    with pytest.warns(mlv.MultilevelWarning, match="not positive definite|may not have converged"):
        fit = model.fit()
    assert not fit.converged
    assert fit.deviance == pytest.approx(reference("cbpp_binomial_laplace")["laplace_exact"]["optimum"]["objective"],
                                         rel=1e-6)


def test_what_a_glmm_does_not_do_is_refused():
    sleep = mlv.datasets.load("sleepstudy")
    with pytest.raises(MultilevelError, match="identity link"):
        mlv.Model("Reaction ~ Days + (1 | Subject)", sleep, family=mlv.families.Gaussian(link="log"))
    with pytest.raises(MultilevelError, match="nAGQ"):
        mlv.Model("Reaction ~ Days + (1 | Subject)", sleep).fit(nAGQ=5)


def test_notebook_block_shows_the_summary_numbers():
    """A GLMM fit's _repr_html_ holds its fixed effects and variance components to the summary's precision."""
    fit = mlv.Model("cbind(incidence, size - incidence) ~ period + (1 | herd)", mlv.datasets.load("cbpp"),
                    family="binomial").fit()
    html = fit._repr_html_()
    assert "binomial" in html and "Fixed effects" in html
    for value in list(fit.fixed_effects["estimate"]) + [fit.variance_components["sd"].iloc[0]]:
        assert f"{value:.4g}"[:5] in html


def separated(seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(20), 10)
    x, t = rng.normal(size=200), rng.integers(0, 2, 200)
    return pd.DataFrame({"g": g, "x": x, "t": t, "y": (x > 0).astype(float),
                         "y2": np.where(t == 1, 1.0, rng.binomial(1, 0.4, 200))})


def test_complete_separation_names_the_column():
    with pytest.raises(MultilevelError, match="complete separation: 'x' separates the outcome"):
        mlv.Model("y ~ x + (1 | g)", separated(), family="binomial").fit()
    with pytest.raises(MultilevelError, match="every row where 't' is 1 has response 1"):
        mlv.Model("y2 ~ t + (1 | g)", separated(), family="binomial").fit()


def test_failure_names_the_groups_with_only_zero_responses():
    data = separated()
    data = data.assign(x=np.where(data["g"] < 3, -np.abs(data["x"]), data["x"]), y=lambda d: (d["x"] > 0).astype(float))
    with pytest.raises(MultilevelError, match=r"(?s)'x' separates.*3 of 20 'g' groups have only responses 0 \(0, 1, 2\)"):
        mlv.Model("y ~ x + (1 | g)", data, family="binomial").fit()


def test_a_size_with_negative_hessian_variance_gets_no_se_and_a_warning_not_a_numpy_warning():
    """NB with an observation-level effect at the Poisson limit: the Hessian is not positive definite in log size;
    its SE is NaN and the user is told, without numpy's 'invalid value in sqrt'."""
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(20), 10)
    x = rng.normal(size=200)
    y = rng.poisson(np.exp(0.5 + 0.3 * x + rng.normal(0, 0.5, 20)[g]))
    data = pd.DataFrame({"y": y, "x": x, "g": g, "obs": np.arange(200)})
    with pytest.warns(mlv.MultilevelWarning, match="not positive definite"):
        with np.errstate(invalid="raise"):
            fit = mlv.Model("y ~ x + (1 | g) + (1 | obs)", data, family="negbinomial").fit()
    assert np.isnan(fit.log_size_se) and np.isnan(fit.dispersion["std_error_log"]).all()
    assert np.all(np.isfinite(fit.fixed_effects["std_error"]))


def test_an_indefinite_hessian_falls_back_to_the_pirls_covariance_as_lme4_does(cbpp, cbpp_fit):
    """lme4's vcov: where the Hessian-based covariance is not positive definite, the RX-based one, with a warning."""
    from multilevel.glmm import _fit_at

    n = cbpp_fit.parameter_covariance.shape[0]
    refit = _fit_at(cbpp_fit.model, cbpp_fit._deviance_function, cbpp_fit.info, cbpp_fit.mode, -np.eye(n),
                    cbpp_fit.deviance, warn=False)
    assert any("PIRLS-based" in w for w in refit.warnings)
    np.testing.assert_array_equal(refit.vcov.to_numpy(), cbpp_fit.vcov_rx.to_numpy())
    assert not any("PIRLS-based" in w for w in cbpp_fit.warnings)
