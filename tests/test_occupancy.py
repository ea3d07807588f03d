"""Occupancy models by maximum likelihood against the independent base-R fit of unmarked's pcru model
(shared/reference/pcru_occupancy_ml.json), and the refusals of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import multilevel as mlv
from multilevel.occupancy_likelihood import gradient_hessian

from conftest import occupancy_site_loglik

REF = json.loads((Path(__file__).resolve().parents[2] / "shared/reference/pcru_occupancy_ml.json").read_text())
DETECTION = "~ MinAfterSunset_scaled + Temperature_scaled"


@pytest.fixture(scope="module")
def pcru():
    return mlv.datasets.load("pcru_occupancy")


@pytest.fixture(scope="module")
def model(pcru):
    return mlv.Occupancy(occupancy="~ 1", detection=DETECTION, data=pcru, site="site", response="y")


@pytest.fixture(scope="module")
def fit(model):
    return model.fit()


def test_objective_and_gradient_match_the_reference_at_fixed_points(model):
    for point in REF["objective_checks"]["points"]:
        par = np.array(point["par"])
        assert -2 * model.loglik(par) == pytest.approx(point["minus2loglik"], abs=1e-9)
        grad = -2 * gradient_hessian(par, model.arrays)[0]
        np.testing.assert_allclose(grad, point["gradient_of_minus2loglik"], rtol=1e-7, atol=1e-9)


def test_hessian_is_the_derivative_of_the_gradient(model):
    par = np.array(REF["objective_checks"]["points"][2]["par"])
    _, H = gradient_hessian(par, model.arrays)
    h = 1e-6
    numeric = np.column_stack([(gradient_hessian(par + h * e, model.arrays)[0] - gradient_hessian(par - h * e, model.arrays)[0]) / (2 * h)
                               for e in np.eye(len(par))])
    np.testing.assert_allclose(H, numeric, rtol=1e-6, atol=1e-6)


def test_estimates_ses_and_loglik_match_the_reference(fit):
    fe = fit.fixed_effects
    assert list(fe.index) == REF["parameters"]
    np.testing.assert_allclose(fe["estimate"], REF["estimate"], rtol=1e-4)
    np.testing.assert_allclose(fe["std_error"], REF["std_error"], rtol=1e-4)
    np.testing.assert_allclose(fit.vcov, REF["vcov"]["rows"], rtol=1e-4, atol=1e-8)
    assert fit.objective == pytest.approx(REF["minus2loglik"], abs=1e-6)
    assert fit.loglik == pytest.approx(REF["loglik"], abs=1e-6)
    assert fit.aic == pytest.approx(REF["AIC"], abs=1e-6)
    assert fit.converged and not fit.warnings


def test_criteria_are_the_other_fits(fit):
    """AIC, BIC and convergence through kinds.Criteria, as LMM and GLMM fits: BIC counts the 130 sites (the
    likelihood's independent units), from the reference's -2 log-likelihood and parameter count."""
    from multilevel.kinds import Criteria

    assert isinstance(fit, Criteria) and fit.info.converged and fit.converged
    assert fit.n_independent == REF["n_sites"]
    assert fit.bic == pytest.approx(REF["minus2loglik"] + np.log(REF["n_sites"]) * REF["n_parameters"], abs=1e-6)
    assert f"BIC {fit.bic:.4f}" in fit.summary()


def test_psi_p_and_occupied_sites_match_the_reference(fit, pcru):
    back = REF["back_transformed"]
    assert fit.psi.shape == (130,)
    np.testing.assert_allclose(fit.psi, back["psi"]["estimate"], rtol=1e-4)
    assert fit.p["p"].mean() == pytest.approx(back["mean_fitted_p"], rel=1e-4)
    assert len(fit.p) == REF["n_surveys"]
    assert fit.n_occupied()["estimate"] == pytest.approx(back["expected_occupied_sites"], rel=1e-4)
    assert fit.n_occupied()["observed"] == REF["n_sites_with_detection"]
    new = fit.predict(pd.DataFrame({"anything": [0.0]}), part="psi")
    assert new["estimate"].iloc[0] == pytest.approx(back["psi"]["estimate"], rel=1e-4)
    assert new["std_error"].iloc[0] == pytest.approx(back["psi"]["se_delta"], rel=1e-4)
    at_means = fit.predict(pd.DataFrame({"MinAfterSunset_scaled": [0.0], "Temperature_scaled": [0.0]}), part="p")
    assert at_means["estimate"].iloc[0] == pytest.approx(back["p_at_covariates_0"]["estimate"], rel=1e-4)
    assert at_means["std_error"].iloc[0] == pytest.approx(back["p_at_covariates_0"]["se_delta"], rel=1e-4)


def test_conditional_occupancy_is_one_where_seen_and_bayes_rule_where_not(fit, model):
    w = fit.conditional_occupancy.to_numpy()
    seen = model.arrays.detected
    assert np.all(w[seen] == 1)
    # a never-detected site: psi q / (psi q + 1 - psi), q = P(all missed | occupied)
    psi = fit.psi.to_numpy()
    p = fit.p.assign(code=pd.factorize(fit.p["site"], sort=False)[0])
    q = np.exp(np.log1p(-p["p"]).groupby(p["code"]).sum()).to_numpy()
    np.testing.assert_allclose(w[~seen], (psi * q / (psi * q + 1 - psi))[~seen], rtol=1e-12)


def test_a_visit_not_made_drops_out(pcru, fit):
    padded = pd.concat([pcru, pcru.iloc[[0]].assign(y=np.nan, MinAfterSunset_scaled=np.nan, visit=4)], ignore_index=True)
    again = mlv.Occupancy("~ 1", DETECTION, padded).fit()
    assert again.loglik == pytest.approx(fit.loglik, abs=1e-9)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.assign(y=d["y"].where(d.index != 5, 2)), "must be 0 or 1"),
        (lambda d: d.assign(Temperature_scaled=d["Temperature_scaled"].where(d.index != 7, np.nan)), "missing on a visit made"),
        (lambda d: d.assign(y=d["y"].where(d["site"] != d["site"].iloc[0], np.nan)), "has no visits"),
        (lambda d: d.assign(site=d["site"].astype(str).where(d.index != 3, None)), "site column 'site' is missing on row 3"),
    ],
)
def test_bad_input_is_refused(pcru, change, message):
    with pytest.raises(mlv.MultilevelError, match=message):
        mlv.Occupancy("~ 1", DETECTION, change(pcru.copy()))


def test_every_visit_detected_is_reported_as_a_boundary_fit(pcru):
    """Every site detected on every visit: the maximum is psi = p = 1 (infinite logits), said as a boundary fit that
    names both, what to report and what to do (before: 'no proper maximum', as for a failure)."""
    with pytest.warns(mlv.MultilevelWarning, match=r"boundary fit: every site had a detection.*psi and every visit "
                      r"detected the species.*p are estimated at 1.*report psi = 1, p = 1.*sample\(\)"):
        fit = mlv.Occupancy("~ 1", "~ 1", pcru.assign(y=1.0)).fit()
    assert not fit.converged and "Warnings:\n * boundary fit" in fit.summary()
    assert fit.psi.min() > 1 - 1e-6 and fit.p["p"].min() > 1 - 1e-6


def test_every_site_with_a_detection_is_a_boundary_fit_of_psi_alone(pcru):
    """One detection at each site's first visit, none after: psi at 1 (said), p inside (0, 1)."""
    first = pcru.dropna(subset=["y"]).groupby("site").head(1).index
    data = pcru.assign(y=pcru.y.where(pcru.y.isna(), 0.0))
    data.loc[first, "y"] = 1.0
    with pytest.warns(mlv.MultilevelWarning, match=r"boundary fit: every site had a detection, so the occupancy "
                      r"probability psi is estimated at 1"):
        fit = mlv.Occupancy("~ 1", "~ 1", data).fit()
    visits = data.dropna(subset=["y"]).groupby("site").size()
    assert fit.p["p"].iloc[0] == pytest.approx(len(visits) / visits.sum(), rel=1e-4)  # psi = 1: p is the detection rate
    se = fit.fixed_effects["std_error"]
    assert np.isnan(se.iloc[0]) and np.isfinite(se.iloc[1])  # psi's has none; p's given psi = 1


def test_no_detection_at_all_is_refused_saying_why(pcru):
    """No visit detected the species: psi and p are not identifiable (refused; before, a 'no proper maximum'
    warning and numbers)."""
    with pytest.raises(mlv.MultilevelError, match=r"no visit detected the species.*cannot be told apart.*'absent' and "
                       r"'present but missed'.*Check that 'y' holds the detections"):
        mlv.Occupancy("~ 1", "~ 1", pcru.assign(y=0.0))


def test_site_covariates_varying_within_a_site_are_refused_by_name(pcru):
    with pytest.raises(mlv.MultilevelError, match=r"'Temperature' varies within site 210302.01"):
        mlv.Occupancy("~ Temperature", DETECTION, pcru)


# ---- one random intercept, integrated out by Laplace / adaptive Gauss-Hermite quadrature


@pytest.fixture(scope="module")
def pcru_routes(pcru):
    return pcru.assign(route=pcru["route"].astype(str))


def _quad_loglik(model, params, sigma):
    """The marginal log-likelihood by adaptive scipy quadrature of each group's integral (an independent route)."""
    from scipy import integrate

    term, a = model.random[1], model.arrays
    total = 0.0
    for g in range(term.m):
        sites = term.codes == g

        def integrand(b, sites=sites):
            shift = np.where(sites, b, 0.0)
            kw = {"shift_psi": shift} if term.part == "psi" else {"shift_p": shift}
            ll = occupancy_site_loglik(params, a, **kw)[sites].sum()
            return np.exp(ll - b**2 / (2 * sigma**2)) / np.sqrt(2 * np.pi * sigma**2)

        total += np.log(integrate.quad(integrand, -12 * sigma, 12 * sigma, epsabs=0, epsrel=1e-12, limit=200)[0])
    return total


@pytest.mark.parametrize(("occupancy", "detection"), [("~ 1 + (1 | route)", DETECTION), ("~ 1", DETECTION + " + (1 | route)")])
def test_adaptive_quadrature_converges_to_the_integral(pcru_routes, occupancy, detection):
    model = mlv.Occupancy(occupancy, detection, pcru_routes)
    params, sigma = np.array([1.8, 0.1, -0.2, -1.9]), 1.5
    exact = _quad_loglik(model, params, sigma)
    errors = [abs(model.marginal_loglik(params, sigma, n_agq=n) - exact) for n in (1, 9, 25, 100)]
    assert errors[-1] < 1e-9 and errors == sorted(errors, reverse=True)  # more nodes, closer; Laplace the farthest
    assert model.marginal_loglik(params, 1e-7, n_agq=1) == pytest.approx(model.loglik(params), abs=1e-8)


def test_random_intercept_fit_is_a_maximum_and_tables_line_up(pcru_routes):
    model = mlv.Occupancy("~ 1", DETECTION + " + (1 | route)", pcru_routes)
    fit = model.fit(n_agq=9)
    assert fit.converged and not fit.warnings
    x = np.r_[fit.params, fit.sigma]
    for i in range(len(x)):  # no coordinate step raises the likelihood
        for h in (-1e-3, 1e-3):
            y = x.copy()
            y[i] += h
            assert model.marginal_loglik(y[:-1], y[-1], 9) <= fit.loglik + 1e-9
    assert fit.n_params == 5 and fit.aic == pytest.approx(-2 * fit.loglik + 10)
    vc = fit.variance_components
    assert vc[["part", "group"]].values.tolist() == [["p", "route"]] and vc["sd"].iloc[0] == fit.sigma
    assert len(fit.group_effects) == pcru_routes["route"].nunique()
    assert fit.loglik > model.fit().loglik - 1e-9  # sigma = 0 is inside the model


def test_unsupported_random_effects_are_refused(pcru_routes):
    with pytest.raises(mlv.MultilevelError, match="n_agq must be an integer >= 1"):
        mlv.Occupancy("~ 1 + (1 | route)", DETECTION, pcru_routes).fit(n_agq=0)
    with pytest.raises(mlv.MultilevelError, match="one random intercept"):
        mlv.Occupancy("~ 1 + (1 | route)", DETECTION + " + (1 | route)", pcru_routes)
    with pytest.raises(mlv.MultilevelError, match="varies within a site"):
        mlv.Occupancy("~ 1", DETECTION + " + (1 | Wind)", pcru_routes.assign(Wind=pcru_routes["Wind"].astype(str)))


# ---- MacKenzie-Bailey goodness of fit


def test_history_table_counts_and_expectations(fit, pcru):
    from multilevel.occupancy_gof import chi_square, history_table

    t = history_table(fit)
    per_cohort = t.groupby("cohort")[["observed", "expected"]].sum()
    assert per_cohort.loc[["x..", "xx.", "xxx"], "observed"].tolist() == [20, 13, 97]
    np.testing.assert_allclose(per_cohort["expected"], per_cohort["observed"], rtol=1e-12)  # probabilities sum to 1
    # one cell by hand: single-visit sites detected on their visit, expected sum of psi * p
    p = fit.p
    single = p.groupby("site", observed=True)["p"].transform("size") == 1
    cell = t[(t["cohort"] == "x..") & (t["history"] == "1")].iloc[0]
    assert cell["observed"] == int(p.loc[single, "y"].sum())
    assert cell["expected"] == pytest.approx(float((fit.psi.iloc[0] * p.loc[single, "p"]).sum()), rel=1e-12)
    assert chi_square(fit) == pytest.approx(float(((t.observed - t.expected) ** 2 / t.expected).sum()), rel=1e-12)


def test_goodness_of_fit_bootstrap(fit, model):
    same = model.with_response(fit.p["y"].to_numpy()).fit()
    np.testing.assert_array_equal(same.params, fit.params)
    gof = fit.goodness_of_fit(n_sim=20, seed=2)
    assert gof.equals(fit.goodness_of_fit(n_sim=20, seed=2))
    assert 0 <= gof["p_value"] <= 1 and gof["n_sim"] == 20 and gof["c_hat"] > 0
    with pytest.raises(mlv.MultilevelError, match="0 or 1"):
        model.with_response(np.full(len(fit.p), 2.0))


def test_probability_curve_draws_predict(fit):
    from multilevel.occupancy_plots import probability_curve

    fig = probability_curve(fit, "Temperature_scaled", part="p", n=30)
    x, y = fig.axes[0].lines[0].get_data()
    assert len(x) == 30 and x.min() == fit.model.survey_frame["Temperature_scaled"].min()
    at = pd.DataFrame({"Temperature_scaled": x[[0, -1]], "MinAfterSunset_scaled": fit.model.survey_frame["MinAfterSunset_scaled"].mean()})
    np.testing.assert_allclose(y[[0, -1]], fit.predict(at, part="p")["estimate"], rtol=1e-12)
    assert y[0] > y[-1]  # detection falls with temperature (coefficient -1.89)
    with pytest.raises(mlv.MultilevelError, match="not a numeric covariate of the psi formula"):
        probability_curve(fit, "Temperature_scaled", part="psi")


def test_notebook_block_shows_the_fit():
    """The fit's _repr_html_ holds its coefficient table, log-likelihood and occupied sites, as summary() prints."""
    fit = mlv.Occupancy(occupancy="~ 1", detection="~ MinAfterSunset_scaled + Temperature_scaled",
                        data=mlv.datasets.load("pcru_occupancy"), site="site", response="y").fit()
    html = fit._repr_html_()
    assert "psi((Intercept))" in html and "p(Temperature_scaled)" in html
    assert f"log-likelihood {fit.loglik:.4f}" in html and "occupied sites (estimated)" in html
    for value in fit.fixed_effects["estimate"]:
        assert repr(float(value))[:6] in html
    assert repr(fit).startswith("Single-season occupancy model")
