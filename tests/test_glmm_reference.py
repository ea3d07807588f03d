"""GLMM parity with the reference fits (glmer, glmer.nb, glmmTMB): the exact optima the files record.

Tolerances are issue 12's: -2 log-likelihood 1e-6 relative, fixed effects 1e-4 relative (or 1e-3 SE), SEs 1e-3
relative, SDs 1e-3. The target is `laplace_exact.optimum` (the true Laplace optimum; lme4's default stops short)
or `marginal_exact.optimum` for quadrature.
"""

import numpy as np
import pytest
from conftest import assert_same_optimum, reference

import multilevel as mlv
from multilevel.pirls import Pirls

LAPLACE = {
    "cbpp_binomial_laplace": ("cbind(incidence, size - incidence) ~ period + (1 | herd)", "cbpp", "binomial"),
    "owls_poisson_offset": (
        "SiblingNegotiation ~ FoodTreatment*SexParent + offset(log(BroodSize)) + (1 | Nest)", "Owls", "poisson"),
    "grouseticks_poisson": ("TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", "grouseticks", "poisson"),
    "grouseticks_rawheight_poisson": (
        "TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", "grouseticks", "poisson"),
    "toenail_binomial_laplace": ("outcome ~ treatment*visit + (1 | patientID)", "toenail", "binomial"),
}


def model_of(name: str, table=LAPLACE) -> mlv.Model:
    formula, data, family = table[name]
    return mlv.Model(formula, mlv.datasets.load(data), family=family)


def lme4_sds(fit, ref_varcomp) -> tuple[np.ndarray, np.ndarray]:
    """Our SDs in the reference's term order, and the reference's."""
    vc = fit.variance_components.set_index("group")
    ours = np.array([vc.loc[v["group"], "sd"] for v in ref_varcomp])
    return ours, np.array([v["sd"][0] for v in ref_varcomp])


def check_optimum(fit, opt: dict, se_key: str = "beta_se") -> None:
    """Objective, fixed effects and their SEs against an optimum block of a reference file; the convergence
    checks (scaled gradient, positive-definite Hessian) pass."""
    assert fit.converged, fit.info.warnings
    assert fit.design.fixed_names == opt["beta_names"]
    assert fit.deviance == pytest.approx(opt["objective"], rel=1e-6)
    fe = fit.fixed_effects
    beta, se = np.array(opt["beta"]), np.array(opt[se_key])
    close = np.abs(fe["estimate"] - beta) <= np.maximum(1e-4 * np.abs(beta), 1e-3 * se)
    assert close.all(), (fe["estimate"].to_numpy(), beta)
    np.testing.assert_allclose(fe["std_error"], se, rtol=1e-3)


@pytest.fixture(scope="module", params=list(LAPLACE))
def laplace_case(request):
    name = request.param
    model = model_of(name)
    return name, model, model.fit()


def test_laplace_fit_is_the_exact_laplace_optimum(laplace_case):
    name, _, fit = laplace_case
    ref = reference(name)
    ours, _ = lme4_sds(fit, ref["varcomp"])
    opt = ref["laplace_exact"]["optimum"]
    order = [v["group"] for v in ref["varcomp"]]
    names = ref["theta"]["names"]
    expected = np.array([opt["theta"][names.index(f"{g}.(Intercept)")] for g in order])
    check_optimum(fit, opt)
    np.testing.assert_allclose(ours, expected, rtol=1e-3)
    assert fit.loglik == pytest.approx(-opt["objective"] / 2, rel=1e-6)
    assert fit.aic == pytest.approx(fit.deviance + 2 * ref["logLik_df"], rel=1e-12)
    assert not fit.is_singular and fit.converged


def test_laplace_objective_at_the_check_points(laplace_case):
    """No optimiser involved: the exact Laplace value at lme4's check points, to ~1e-8 relative."""
    name, model, _ = laplace_case
    pirls = Pirls(model.design, model.family)
    names = reference(name)["theta"]["names"]
    groups = [b.group for b in model.design.blocks]
    for point in reference(name)["objective_checks"]["points"]:
        theta = np.array([point["theta"][names.index(f"{g}.(Intercept)")] for g in groups])
        value = pirls.mode(theta, np.array(point["beta"])).laplace
        assert value == pytest.approx(point["objective_exact_laplace"], rel=1e-9)


def test_conditional_modes_and_sds_at_lme4_estimates():
    ref = reference("cbpp_binomial_laplace")
    model = model_of("cbpp_binomial_laplace")
    mode = Pirls(model.design, model.family).mode(np.array(ref["theta"]["values"]), np.array(ref["fixef"]["estimate"]))
    np.testing.assert_allclose(mode.b[0][:, 0], ref["ranef"]["condval"], atol=1e-7)
    sd = np.sqrt(mode.engine.conditional_covariances(mode.factor)[0][:, 0, 0])
    np.testing.assert_allclose(sd, ref["ranef"]["condsd"], rtol=1e-4)


def test_rx_standard_errors_are_lme4s_use_hessian_false():
    """vcov_rx is the PIRLS information at the estimates; lme4's value is at its own (slightly different) optimum."""
    ref = reference("cbpp_binomial_laplace")
    fit = model_of("cbpp_binomial_laplace").fit()
    np.testing.assert_allclose(np.sqrt(np.diag(fit.vcov_rx)), ref["fixef"]["std_error_rx"], rtol=2e-3)


AGQ = {
    "cbpp_binomial_agq25": LAPLACE["cbpp_binomial_laplace"],
    "toenail_binomial_agq20": LAPLACE["toenail_binomial_laplace"],
}


def test_agq25_cbpp_is_the_exact_ml_optimum_on_the_absolute_scale():
    """lme4 reports nAGQ > 1 without the saturated log-likelihood; we report the absolute scale."""
    ref = reference("cbpp_binomial_agq25")
    fit = model_of("cbpp_binomial_agq25", AGQ).fit(nAGQ=25)
    opt = ref["marginal_exact"]["optimum"]
    check_optimum(fit, opt)
    np.testing.assert_allclose(fit.theta, opt["theta"], rtol=1e-3)
    scale = ref["loglik_scale"]
    assert fit.deviance + 2 * scale["saturated_loglik"] == pytest.approx(ref["deviance"], rel=1e-6)


def test_agq20_toenail_matches_glmer_and_100_nodes_the_exact_integral():
    """20 nodes are 0.015 short of the integral (glmer's own 20-node answer); 100 nodes reach the exact optimum."""
    ref = reference("toenail_binomial_agq20")
    model = model_of("toenail_binomial_agq20", AGQ)
    fit20 = model.fit(nAGQ=20)
    assert fit20.deviance == pytest.approx(ref["deviance"], rel=1e-6)
    se = np.array(ref["fixef"]["std_error"])
    assert np.all(np.abs(fit20.beta - ref["fixef"]["estimate"]) <= 1e-3 * se + 1e-4 * np.abs(fit20.beta))
    np.testing.assert_allclose(fit20.fixed_effects["std_error"], se, rtol=1e-3)
    np.testing.assert_allclose(fit20.theta, ref["theta"]["values"], rtol=1e-3)
    fit100 = model.fit(nAGQ=100)
    opt = ref["marginal_exact"]["optimum"]
    check_optimum(fit100, opt)
    np.testing.assert_allclose(fit100.theta, opt["theta"], rtol=1e-3)


def test_agq_with_one_node_is_laplace():
    from multilevel.scalar_pirls import ScalarPirls

    model = model_of("cbpp_binomial_laplace")
    scalar = ScalarPirls(Pirls(model.design, model.family))
    mode = scalar.mode(0.7, np.array([-1.4, -1.0, -1.1, -1.6]), model.family)
    assert scalar.agq(mode, model.family, 1) == pytest.approx(mode.laplace, rel=1e-13)


SALAMANDERS = ("count ~ spp + mined + (1 | site)", "Salamanders", "nbinom2")


@pytest.mark.parametrize("formula, data, family, information", [
    (*LAPLACE["cbpp_binomial_laplace"], "observed"),
    (*LAPLACE["owls_poisson_offset"], "observed"),
    (LAPLACE["toenail_binomial_laplace"][0], "toenail", "binomial(probit)", "observed"),
    (*SALAMANDERS, "observed"),
    (*SALAMANDERS, "expected"),
])
def test_scalar_pirls_is_pirls_and_its_gradient_is_the_derivative(formula, data, family, information):
    """The one-scalar-term PIRLS gives the engine PIRLS's Laplace value; its gradient matches central differences."""
    from multilevel.scalar_pirls import ScalarPirls

    model = mlv.Model(formula, mlv.datasets.load(data), family=family)
    family = model.family.with_dispersion(1.5) if model.family.has_dispersion else model.family
    general = Pirls(model.design, model.family, information)
    scalar = ScalarPirls(Pirls(model.design, model.family, information))
    beta = np.linspace(-0.5, 0.3, model.design.p)
    for theta in (0.3, 1.2):
        expected = general.mode(np.array([theta]), beta, family).laplace
        assert scalar.mode(theta, beta, family).laplace == pytest.approx(expected, rel=1e-12)
    for nodes in (1, 9):
        def objective(theta, b):
            mode = scalar.mode(theta, b, family)
            return mode.laplace if nodes == 1 else scalar.agq(mode, family, nodes)

        value, d_theta, d_beta, d_size = scalar.gradient(1.2, beta, family, nodes, family.has_dispersion)
        assert value == pytest.approx(objective(1.2, beta), rel=1e-12)
        h = 1e-5
        numeric = [(objective(1.2 + h, beta) - objective(1.2 - h, beta)) / (2 * h)]
        numeric += [(objective(1.2, beta + h * e) - objective(1.2, beta - h * e)) / (2 * h) for e in np.eye(len(beta))]
        np.testing.assert_allclose(np.r_[d_theta, d_beta], numeric, rtol=1e-5, atol=1e-5)
        if family.has_dispersion:  # d / d log(size)
            sized = [family.with_dispersion(1.5 * np.exp(s)) for s in (h, -h)]
            ends = [scalar.mode(1.2, beta, f) for f in sized]
            ends = [m.laplace if nodes == 1 else scalar.agq(m, f, nodes) for m, f in zip(ends, sized)]
            assert d_size == pytest.approx((ends[0] - ends[1]) / (2 * h), rel=1e-5, abs=1e-5)


NB_FORMULA = ("TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | LOCATION)", "grouseticks", "negbinomial")


@pytest.mark.parametrize("information, block", [("expected", "laplace_exact"), ("observed", "laplace_observed_information")])
def test_grouseticks_nb_both_laplace_definitions(information, block):
    """lme4's glmer.nb optimises the expected-information Laplace, TMB the observed one: both optima are matched."""
    ref = reference("grouseticks_nb")
    opt = ref[block]["optimum"]
    fit = model_of("grouseticks_nb", {"grouseticks_nb": NB_FORMULA}).fit(information=information)
    check_optimum(fit, opt)
    ours, _ = lme4_sds(fit, ref["varcomp"])
    np.testing.assert_allclose(ours, opt["theta"], rtol=1e-3)
    assert fit.nb_theta == pytest.approx(opt["nb_theta"], rel=1e-3)
    assert fit.dispersion.loc["log theta", "std_error_log"] == pytest.approx(opt["log_nb_theta_se"], rel=1e-3)
    assert fit.n_params == ref["logLik_df"]


def test_salamanders_nb2_is_glmmtmb():
    ref = reference("salamanders_nb2")
    fit = mlv.Model("count ~ spp + mined + (1 | site)", mlv.datasets.load("Salamanders"), family="nbinom2").fit()
    opt = ref["laplace_exact"]["optimum"]
    check_optimum(fit, opt)
    np.testing.assert_allclose(fit.theta, opt["theta"], rtol=1e-3)
    np.testing.assert_allclose(np.sqrt(np.diag(fit.vcov)), ref["fixef"]["std_error"], rtol=1e-3)
    assert fit.nb_theta == pytest.approx(ref["dispersion"]["value"], rel=1e-3)
    assert fit.dispersion.loc["log theta", "std_error_log"] == pytest.approx(ref["dispersion"]["log_value_se"], rel=1e-3)
    assert fit.aic == pytest.approx(ref["AIC"], rel=1e-6)


@pytest.mark.parametrize("data, formula, family, information, dense", [
    ("grouseticks", LAPLACE["grouseticks_poisson"][0], "poisson", "observed", False),
    ("grouseticks", "TICKS ~ cHEIGHT + (1 | LOCATION) + (1 | YEAR)", "poisson", "observed", True),  # crossed
    ("grouseticks", NB_FORMULA[0], "negbinomial", "expected", False),
    ("grouseticks", NB_FORMULA[0], "negbinomial", "observed", False),
    ("VerbAgg", "r2 ~ Anger + (1 | id) + (1 | item) + (1 | btype)", "binomial", "observed", True),  # every id meets every item
    ("VerbAgg", "r2 ~ Anger + (1 | id) + (1 | item)", "binomial(probit)", "expected", True),
])
def test_laplace_gradient_of_several_scalar_terms_is_the_derivative(data, formula, family, information, dense):
    """The value of the fixed-pattern PIRLS is the engine PIRLS's; its gradient (leverages, implicit derivative of the
    modes) matches central differences of the engine PIRLS, with the coupling B held as pairs of levels or dense."""
    from multilevel.laplace_gradient import ScalarTermsGradient

    model = mlv.Model(formula, mlv.datasets.load(data), family=family)
    family = model.family.with_dispersion(2.0) if model.family.has_dispersion else model.family
    pirls = Pirls(model.design, model.family, information)
    theta, beta = np.linspace(0.5, 1.1, len(model.design.blocks)), np.linspace(-0.3, 0.4, model.design.p)
    terms = ScalarTermsGradient(Pirls(model.design, model.family, information))
    assert terms._dense_b == dense
    joint, expected = terms.mode(theta, None, family), pirls.mode(theta, None, family)  # beta found with the modes
    assert joint.laplace == pytest.approx(expected.laplace, rel=1e-12)
    np.testing.assert_allclose(joint.beta, expected.beta, rtol=1e-8, atol=1e-10)
    value, d_theta, d_beta, d_size = terms.gradient(theta, beta, family, family.has_dispersion)
    assert value == pytest.approx(pirls.mode(theta, beta, family).laplace, rel=1e-12)
    h = 1e-5
    numeric = [(pirls.mode(theta + h * e, beta, family).laplace - pirls.mode(theta - h * e, beta, family).laplace) / (2 * h)
               for e in np.eye(len(theta))]
    numeric += [(pirls.mode(theta, beta + h * e, family).laplace - pirls.mode(theta, beta - h * e, family).laplace) / (2 * h)
                for e in np.eye(len(beta))]
    np.testing.assert_allclose(np.r_[d_theta, d_beta], numeric, rtol=1e-6, atol=5e-3)  # atol: differences of a ~1e4 objective
    if family.has_dispersion:  # d / d log(size)
        ends = [pirls.mode(theta, beta, family.with_dispersion(2.0 * np.exp(s))).laplace for s in (h, -h)]
        assert d_size == pytest.approx((ends[0] - ends[1]) / (2 * h), rel=1e-6, abs=5e-3)


def slopes_data() -> "pd.DataFrame":
    """Counts and 0/1 outcomes with a correlated random intercept and slopes in x and x2 over 40 groups."""
    import pandas as pd

    rng = np.random.default_rng(3)
    g, x, x2 = np.repeat(np.arange(40), 15), rng.normal(size=600), rng.normal(size=600)
    effects = rng.multivariate_normal([0, 0], [[0.25, 0.05], [0.05, 0.09]], 40)
    y = rng.poisson(np.exp(0.5 + 0.3 * x + 0.1 * x2 + effects[g, 0] + effects[g, 1] * x))
    h = rng.integers(0, 12, 600)  # a crossed factor (drawn last: the draws above do not move)
    return pd.DataFrame({"y": y, "yb": (y > 2).astype(int), "x": x, "x2": x2, "g": g.astype(str), "h": h.astype(str)})


@pytest.mark.parametrize("formula, family, information", [
    ("y ~ x + x2 + (1 + x | g)", "poisson", "observed"),
    ("y ~ x + x2 + (1 + x + x2 | g)", "poisson", "observed"),  # k = 3
    ("yb ~ x + (1 + x | g)", "binomial", "observed"),
    ("yb ~ x + (1 + x | g)", "binomial(probit)", "observed"),
    ("yb ~ x + (1 + x | g)", "binomial(probit)", "expected"),
    ("y ~ x + (1 + x | g)", "negbinomial", "observed"),
    ("y ~ x + (1 + x | g)", "negbinomial", "expected"),
    ("y ~ x + (1 + x | g) + (1 | h)", "poisson", "observed"),  # scalar terms beside: the Schur complement
    ("yb ~ x + (1 | h) + (1 + x | g) + (1 | x2g)", "binomial", "observed"),
    ("yb ~ x + (1 + x | g) + (1 | h)", "binomial(probit)", "expected"),
    ("y ~ x + (1 + x | g) + (1 | h)", "negbinomial", "observed"),
    # two or more vector terms: the others' k_t entries per row in the Schur complement
    ("y ~ x + (1 + x | g) + (1 + x | h)", "poisson", "observed"),  # crossed
    ("yb ~ x + (1 + x | gg/g)", "binomial", "observed"),  # nested: g within gg
    ("y ~ x + x2 + (1 + x | g) + (1 + x2 | h) + (1 | x2g)", "poisson", "observed"),  # two vectors and a scalar
    ("y ~ x + x2 + (1 + x | g) + (1 + x + x2 | h)", "poisson", "observed"),  # k = 3 among the others
    ("y ~ x + (1 | g) + (1 + x | h)", "poisson", "observed"),  # the scalar term has most levels: eliminated first
    ("y ~ x + (1 + x | g) + (1 | obs)", "poisson", "observed"),  # an observation-level effect: 1 x 1 blocks
    ("yb ~ x + (1 + x | g) + (1 + x | h)", "binomial(probit)", "expected"),
    ("y ~ x + (1 + x | g) + (1 + x | h)", "negbinomial", "observed"),
    ("y ~ x + (1 + x | g) + (1 + x | h)", "negbinomial", "expected"),
])
def test_vector_term_gradient_is_the_derivative(formula, family, information):
    """Terms with a vector among them (one or more, with scalar terms beside them or not): the per-group PIRLS gives
    the engine PIRLS's Laplace value and joint beta; its gradient in theta (each term's T's lower triangle, lme4's
    order), beta and log size matches central differences of the engine PIRLS."""
    from multilevel.vector_pirls import VectorTermGradient

    data = slopes_data()
    data["x2g"] = (data["x2"] > 0).astype(str) + data["h"]  # a second crossed factor, 24 levels
    data["gg"] = (data["g"].astype(int) // 4).astype(str)  # 10 groups of 4 g's
    data["obs"] = np.arange(len(data)).astype(str)
    model = mlv.Model(formula, data, family=family)
    assert VectorTermGradient.applies(model.design)
    family = model.family.with_dispersion(2.0) if model.family.has_dispersion else model.family
    pirls = Pirls(model.design, model.family, information)
    vector = {1: [0.5], 2: [0.7, 0.15, 0.4], 3: [0.7, 0.15, -0.1, 0.4, 0.05, 0.3]}  # each term's a different size
    theta = np.concatenate([np.array(vector[b.k]) * (1 - 0.2 * t) for t, b in enumerate(model.design.blocks)])
    beta = np.linspace(-0.3, 0.4, model.design.p)
    vector = VectorTermGradient(Pirls(model.design, model.family, information))
    joint, expected = vector.mode(theta, None, family), pirls.mode(theta, None, family)  # beta found with the modes
    assert joint.laplace == pytest.approx(expected.laplace, rel=1e-12)
    np.testing.assert_allclose(joint.beta, expected.beta, rtol=1e-8, atol=1e-10)
    value, d_theta, d_beta, d_size = vector.gradient(theta, beta, family, family.has_dispersion)
    assert value == pytest.approx(pirls.mode(theta, beta, family).laplace, rel=1e-12)
    h = 1e-5

    def central(step, fam=family):
        return (pirls.mode(theta + step[: len(theta)], beta + step[len(theta):], fam).laplace
                - pirls.mode(theta - step[: len(theta)], beta - step[len(theta):], fam).laplace) / (2 * h)

    numeric = [central(h * e) for e in np.eye(len(theta) + len(beta))]
    # atol: rounding in central differences (h = 1e-5) of a ~1e3 objective
    np.testing.assert_allclose(np.r_[d_theta, d_beta], numeric, rtol=1e-6, atol=1e-5)
    if family.has_dispersion:  # d / d log(size)
        ends = [pirls.mode(theta, beta, family.with_dispersion(2.0 * np.exp(s))).laplace for s in (h, -h)]
        assert d_size == pytest.approx((ends[0] - ends[1]) / (2 * h), rel=1e-6, abs=1e-5)


@pytest.mark.parametrize("family", ["poisson", "binomial"])
def test_vector_and_scalar_terms_fit_with_gradient_is_the_derivative_free_optimum(family, monkeypatch):
    """(1 + x | g) + (1 | h): the fit with the exact gradient (L-BFGS-B) reaches the optimum BOBYQA without a gradient
    finds: -2 log L no higher than BOBYQA's (beyond 1e-9 relative) and within issue 12's tolerances of it (1e-6
    relative; beta 1e-3 SE; SDs 1e-3)."""
    import pandas as pd

    from multilevel.vector_pirls import VectorTermGradient

    rng = np.random.default_rng(1)
    g, h, x = np.repeat(np.arange(60), 10), rng.integers(0, 25, 600), rng.normal(size=600)
    eta = 0.3 + 0.5 * x + rng.normal(0, 0.6, 60)[g] + rng.normal(0, 0.4, 60)[g] * x + rng.normal(0, 0.5, 25)[h]
    y = rng.poisson(np.exp(eta)) if family == "poisson" else rng.binomial(1, 1 / (1 + np.exp(-eta)))
    data = pd.DataFrame({"y": y, "x": x, "g": g.astype(str), "h": h.astype(str)})
    model = mlv.Model("y ~ x + (1 + x | g) + (1 | h)", data, family=family)
    assert VectorTermGradient.applies(model.design)
    fit = model.fit()
    assert fit.converged and fit.warnings == []
    monkeypatch.setattr(VectorTermGradient, "applies", staticmethod(lambda design: False))
    free = model.fit()
    assert_same_optimum(fit, free)


def two_vector_terms_data(family: str):
    """Counts, or successes of 6 trials (and the failures), with correlated random intercepts and slopes in x over 30
    subjects crossed with 20 items and over 40 classes nested in 10 schools (800 rows), and a 6-level factor h."""
    import pandas as pd

    rng = np.random.default_rng(7)
    n = 800
    s, i, c, x = rng.integers(0, 30, n), rng.integers(0, 20, n), rng.integers(0, 40, n), rng.normal(size=n)
    subject, item = (rng.multivariate_normal([0, 0], [[0.3, 0.05], [0.05, 0.1]], m) for m in (30, 20))
    school, cls = (rng.multivariate_normal([0, 0], [[v, 0.0], [0.0, v]], m) for v, m in ((0.3, 10), (0.2, 40)))
    h = rng.integers(0, 6, n)
    eta = (0.2 + 0.4 * x + subject[s, 0] + subject[s, 1] * x + item[i, 0] + item[i, 1] * x + school[c // 4, 0]
           + school[c // 4, 1] * x + cls[c, 0] + cls[c, 1] * x + rng.normal(0, 0.4, 6)[h]) / 1.5
    y = rng.poisson(np.exp(eta)) if family == "poisson" else rng.binomial(6, 1 / (1 + np.exp(-eta)))
    return pd.DataFrame({"y": y, "fails": 6 - y, "x": x, "subject": s.astype(str), "item": i.astype(str),
                         "h": h.astype(str), "school": (c // 4).astype(str), "cls": c.astype(str)})


@pytest.mark.parametrize("formula, family", [
    ("y ~ x + (1 + x | subject) + (1 + x | item)", "poisson"),  # crossed
    ("cbind(y, fails) ~ x + (1 + x | subject) + (1 + x | item)", "binomial"),
    ("cbind(y, fails) ~ x + (1 + x | school/cls)", "binomial"),  # nested
    ("y ~ x + (1 + x | subject) + (1 + x | item) + (1 | h)", "poisson"),
])
def test_two_vector_terms_fit_with_gradient_is_the_derivative_free_optimum(formula, family, monkeypatch):
    """Two vector terms, crossed or nested (and a scalar term beside them): the fit with the exact gradient reaches the
    optimum BOBYQA without a gradient finds: -2 log L no higher (beyond 1e-9 relative) and within issue 12's
    tolerances of it (1e-6 relative; beta 1e-3 SE; SDs 1e-3)."""
    from multilevel.vector_pirls import VectorTermGradient

    model = mlv.Model(formula, two_vector_terms_data(family), family=family)
    assert VectorTermGradient.applies(model.design)
    fit = model.fit()
    assert fit.converged and fit.warnings == []
    monkeypatch.setattr(VectorTermGradient, "applies", staticmethod(lambda design: False))
    free = model.fit(warn=False)
    assert_same_optimum(fit, free)


@pytest.mark.parametrize("formula", ["cnt ~ Days + (1 + Days | Subject)",
                                     "cnt ~ Days + (1 + Days | Subject) + (1 | night)"])
def test_gradient_fit_leaves_a_diagonal_bound_by_the_columns_sign(formula, sleep, monkeypatch):
    """Underdispersed counts from sleepstudy: L-BFGS-B stops at T = [[0, 0], [-0.011, 0.012]], -2 log L 1.22 above the
    optimum (the bound T_11 >= 0 holds it; T_21 of the other sign is the same covariance and descends). With the
    column's sign flipped and the search resumed, the fit reaches BOBYQA's optimum (no higher beyond 1e-9 relative)."""
    from multilevel.vector_pirls import VectorTermGradient

    data = sleep.assign(cnt=np.round(sleep["Reaction"] / 25).astype(int),
                        night=np.random.default_rng(5).integers(0, 6, len(sleep)).astype(str))
    model = mlv.Model(formula, data, family="poisson")
    fit = model.fit(warn=False)
    monkeypatch.setattr(VectorTermGradient, "applies", staticmethod(lambda design: False))
    free = model.fit(warn=False)
    assert fit.deviance <= free.deviance * (1 + 1e-9)
    assert fit.deviance == pytest.approx(free.deviance, rel=1e-6)
