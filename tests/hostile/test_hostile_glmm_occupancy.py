"""Hostile input to the GLMM and occupancy entry points: a wrong column, NaN/inf, one-level factors, an empty
table, rank-deficient designs, counts that are not counts, proportions outside [0, 1], negative trials. Each
gets our error naming the problem, a warning, or a right answer (checked against the likelihood itself)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import optimize

import multilevel as mlv
from multilevel.occupancy_likelihood import gradient_hessian

from hostile_support import refused, warned

BINOMIAL = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
POISSON = "TICKS ~ YEAR + (1 | BROOD)"
DETECTION = "~ day_scaled + tod_scaled"


def cbpp():
    return mlv.datasets.load("cbpp")


def ticks():
    return mlv.datasets.load("grouseticks")


def oven():
    return mlv.datasets.load("oven_occupancy")


def at_row(frame, column, value, row=3):
    """The frame with one cell changed."""
    out = frame.copy()
    out[column] = out[column].astype(type(value) if isinstance(value, float) else out[column].dtype)
    out.loc[row, column] = value
    return out


def glmm(formula, data, family):
    return mlv.Model(formula, data, family=family).fit()


@pytest.mark.parametrize("formula,data,family,words", [
    ("cbind(incidence, size - incidence) ~ nope + (1 | herd)", cbpp, "binomial", ["'nope'", "not in the data"]),
    ("TICKS ~ YEAR + (1 | nope)", ticks, "poisson", ["'nope'", "not in the data"]),
    (BINOMIAL, lambda: at_row(cbpp(), "incidence", np.inf), "binomial", ["incidence", "infinite"]),
    (POISSON, lambda: at_row(ticks(), "TICKS", np.inf), "poisson", ["ticks", "infinite"]),
    ("TICKS ~ HEIGHT + (1 | BROOD)", lambda: at_row(ticks(), "HEIGHT", -np.inf), "poisson", ["height", "infinite"]),
    (BINOMIAL, lambda: at_row(cbpp(), "size", -2), "binomial", ["negative", "rows [3]"]),
    (BINOMIAL, lambda: at_row(cbpp(), "incidence", 99), "binomial", ["more successes than trials"]),
    (BINOMIAL, lambda: cbpp().assign(incidence=cbpp().incidence + 0.5), "binomial", ["whole numbers"]),
    ("y ~ period + (1 | herd)", lambda: cbpp().assign(y=np.where(cbpp().index == 3, 2.0, 0.5)), "binomial",
     ["proportion in [0, 1]", "row 4: 2"]),
    ("y ~ period + (1 | herd)", lambda: cbpp().assign(y=np.where(cbpp().index == 3, -0.5, 0.0)), "binomial",
     ["proportion in [0, 1]", "-0.5"]),
    ("y ~ period + (1 | herd)", lambda: cbpp().assign(y="yes"), "binomial", ["takes 1 value", "'yes'"]),
    ("y ~ period + (1 | herd)", lambda: cbpp().assign(y=np.where(cbpp().index % 3, "a", np.where(cbpp().index % 2, "b", "c"))),
     "binomial", ["3 levels", "recode it as 0/1"]),
    (POISSON, lambda: ticks().assign(TICKS=ticks().TICKS + 0.5), "poisson", ["count", "non-integer"]),
    (POISSON, lambda: at_row(ticks(), "TICKS", -1), "poisson", ["count", "negative", "row 4: -1"]),
    (POISSON, lambda: ticks().assign(TICKS=ticks().TICKS + 0.5), "negbinomial", ["count", "non-integer"]),
    (POISSON, lambda: ticks().assign(TICKS="many"), "poisson", ["not numeric", "a mixed model needs"]),
    (POISSON, lambda: ticks().assign(BROOD="one"), "poisson", ["only 1 level", "(1 | brood)"]),
    (POISSON, lambda: ticks().iloc[:0], "poisson", ["empty"]),
    (POISSON, lambda: ticks().assign(TICKS=0), "poisson", ["separation"]),
])
def test_glmm_bad_input_is_refused_by_name(formula, data, family, words):
    frame = data() if callable(data) else data
    error = refused(lambda: glmm(formula, frame, family), *words)
    assert "linear mixed model" not in str(error)


def test_glmm_rank_deficient_design_warns_and_fits_the_identified_columns():
    """A column twice another is dropped with a warning; the fit is that of the model without it."""
    frame = ticks().assign(h2=2 * ticks().HEIGHT)
    f = warned(lambda: glmm("TICKS ~ HEIGHT + h2 + (1 | BROOD)", frame, "poisson"), r"rank deficient.*'h2'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f0 = glmm("TICKS ~ HEIGHT + (1 | BROOD)", frame, "poisson")
    assert f.model.design.fixed_names == ["(Intercept)", "HEIGHT"]
    np.testing.assert_allclose(f.beta, f0.beta, rtol=1e-10)


def test_glmm_missing_response_rows_are_dropped_as_lme4_does():
    """NaN in the response: the row is left out (lme4's na.omit), and the fit is that of the other rows."""
    frame = at_row(ticks(), "TICKS", np.nan)
    f = glmm(POISSON, frame, "poisson")
    f0 = glmm(POISSON, frame.drop(index=3).reset_index(drop=True), "poisson")
    assert f.model.design.n_dropped == 1
    np.testing.assert_allclose(f.beta, f0.beta, rtol=1e-8)


def occupancy(frame, occ="~ Elevation_scaled", det=DETECTION):
    return mlv.Occupancy(occupancy=occ, detection=det, data=frame)


@pytest.mark.parametrize("change,occ,det,words", [
    (lambda d: d, "~ nope", DETECTION, ["'nope'", "not in the data"]),
    (lambda d: d, "~ 1", "~ nope", ["'nope'", "not in the data"]),
    (lambda d: d.assign(y=d.y.astype(float).where(d.index != 3, np.inf)), "~ 1", "~ 1", ["0 or 1", "has inf"]),
    (lambda d: at_row(d, "y", 2), "~ 1", "~ 1", ["0 or 1", "site 2 has 2"]),
    (lambda d: d.assign(y=d.y.astype(float).where(d.index != 3, 0.5)), "~ 1", "~ 1", ["0 or 1", "0.5"]),
    (lambda d: d.assign(y="seen"), "~ 1", "~ 1", ["0 or 1", "'seen'"]),
    (lambda d: d.assign(day_scaled=d.day_scaled.where(d.index != 3, np.inf)), "~ 1", DETECTION, ["day_scaled", "infinite"]),
    (lambda d: d.assign(day_scaled=d.day_scaled.where(d.index != 3)), "~ 1", DETECTION, ["day_scaled", "missing"]),
    (lambda d: d.assign(Elevation_scaled=d.Elevation_scaled.where(d.index != 3)), "~ Elevation_scaled", "~ 1",
     ["elevation_scaled", "missing at site"]),
    (lambda d: d.iloc[:0], "~ 1", "~ 1", ["empty"]),
    (lambda d: d.assign(g="one"), "~ 1", "~ 1 + (1 | g)", ["only 1 level"]),
    (lambda d: d, "y ~ Elevation_scaled", "~ 1", ["left-hand side", "'~ elevation_scaled'", "response="]),
    (lambda d: d, "~ 1", "y ~ day_scaled", ["detection formula", "left-hand side"]),
])
def test_occupancy_bad_input_is_refused_by_name(change, occ, det, words):
    frame = change(oven())
    error = refused(lambda: occupancy(frame, occ, det).fit(), *words)
    assert "np.float64" not in str(error) and "linear mixed model" not in str(error)


def test_occupancy_rank_deficient_design_warns():
    frame = oven().assign(e2=2 * oven().Elevation_scaled)
    warned(lambda: occupancy(frame, "~ Elevation_scaled + e2").fit(), r"rank deficient.*'e2'")


def test_occupancy_true_false_detections_are_zero_one():
    """Detections given as booleans are read as 1/0 (they were refused as 'not numeric')."""
    d = oven()
    f = occupancy(d.assign(y=d.y == 1)).fit()
    f0 = occupancy(d).fit()
    np.testing.assert_array_equal(f.params, f0.params)


def test_occupancy_intercepts_only_reaches_its_maximum():
    """oven's ~ 1 / ~ 1 was reported as 'no proper maximum' with NaN SEs: trust-exact stopped at a score of
    1.4e-6 ('a bad approximation'). The maximum is checked against an independent optimiser on the
    log-likelihood, and the SEs against a finite-difference Hessian of it."""
    model = occupancy(oven(), "~ 1", "~ 1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = model.fit()
    assert fit.converged and not fit.warnings
    assert np.max(np.abs(gradient_hessian(fit.params, model.arrays)[0])) < 1e-8
    other = optimize.minimize(lambda x: -model.loglik(x), np.zeros(2), method="Nelder-Mead",
                              options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000})
    assert fit.loglik >= -other.fun - 1e-9
    np.testing.assert_allclose(fit.params, other.x, atol=1e-5)
    h = 1e-4
    H = np.array([[(model.loglik(fit.params + h * (ei + ej)) - model.loglik(fit.params + h * (ei - ej))
                    - model.loglik(fit.params - h * (ei - ej)) + model.loglik(fit.params - h * (ei + ej))) / (4 * h * h)
                   for ej in np.eye(2)] for ei in np.eye(2)])
    np.testing.assert_allclose(np.sqrt(np.diag(fit.vcov)), np.sqrt(np.diag(np.linalg.inv(-H))), rtol=1e-4)


@pytest.mark.parametrize("nagq", [float("nan"), float("inf"), 101, 1000, "3", 2.5, -1])
def test_glmm_nagq_outside_lme4s_range_is_refused(nagq):
    """nAGQ = NaN leaked a ValueError; nAGQ = 1000 returned a fit with an infinite deviance (the quadrature weights
    underflow): whole numbers from 0 to 100 only, as lme4's GHrule."""
    refused(lambda: mlv.Model(BINOMIAL, cbpp(), family="binomial").fit(nAGQ=nagq), "nagq must be a whole number",
            "at most 100")


def test_glmm_deviance_at_of_the_wrong_length_is_refused():
    """deviance_at with a beta of another model leaked a numpy matmul error."""
    f = glmm(BINOMIAL, cbpp(), "binomial")
    refused(lambda: f.deviance_at([0.5], [1.0, 2.0]), "theta of 1 and beta of 4", "not 1 and 2")


@pytest.mark.parametrize("n_agq", [1000, 101, True, 0])
def test_occupancy_quadrature_nodes_outside_1_to_100_are_refused(n_agq):
    """n_agq = 1000 on a random intercept returned a fit with a log-likelihood of -inf (the weights underflow)."""
    frame = oven().assign(region=(oven().site.astype("category").cat.codes // 10).astype(str))
    refused(lambda: occupancy(frame, "~ 1 + (1 | region)", "~ 1").fit(n_agq=n_agq), "n_agq must be an integer",
            "at most 100")


@pytest.mark.parametrize("family", ["poisson", "negbinomial"])
def test_glmm_cbind_with_a_count_family_is_refused_by_name(family):
    """cbind(incidence, size - incidence) with family='poisson' was read as proportions and refused as 'not a count'
    (row 1: 0.142857): now the message says cbind() is binomial data."""
    refused(lambda: glmm(BINOMIAL, cbpp(), family), "cbind(successes, failures)", "binomial data", "family='binomial'")


@pytest.mark.parametrize("kwargs,words", [
    ({"site": ["site"]}, ["site must be the name of one column", "site='site'"]),
    ({"site": None}, ["site must be the name of one column", "nonetype"]),
    ({"site": 2.5}, ["site must be the name of one column", "float"]),
    ({"response": ["y"]}, ["response must be the name of one column", "response='y'"]),
    ({"response": None}, ["response must be the name of one column"]),
    ({"occupancy": ["~ 1"]}, ["occupancy formula must be a string", "list"]),
    ({"occupancy": None}, ["occupancy formula must be a string"]),
    ({"detection": 3}, ["detection formula must be a string", "int"]),
])
def test_occupancy_arguments_of_the_wrong_kind_are_refused_by_name(kwargs, words):
    """A list, None or a number where Occupancy expects a column name or a formula (a TypeError or AttributeError
    traceback before)."""
    args = {"occupancy": "~ 1", "detection": "~ 1", "data": oven()} | kwargs
    refused(lambda: mlv.Occupancy(**args), *words)


@pytest.mark.parametrize("argument", ["weights", "offset"])
def test_model_weights_or_offset_as_a_list_of_names_is_refused_by_name(argument):
    """weights=['w'] (a list where a column name is expected) leaked numpy's 'could not convert string to float'."""
    sleep = mlv.datasets.load("sleepstudy")
    refused(lambda: mlv.Model("Reaction ~ Days + (1 | Subject)", sleep, **{argument: ["Days"]}),
            f"{argument} must name a column", f"{argument}='w'")


def test_model_data_as_a_csv_path_says_to_read_it_first(tmp_path):
    """A CSV path given as data was read as Parquet and failed with pyarrow's 'magic bytes not found'."""
    mlv.datasets.load("sleepstudy").to_csv(tmp_path / "sleep.csv", index=False)
    refused(lambda: mlv.Model("Reaction ~ Days + (1 | Subject)", str(tmp_path / "sleep.csv")),
            "read as parquet", "pandas.read_csv")


@pytest.fixture(scope="module")
def pcru_model():
    return mlv.Occupancy("~ 1", "~ 1", mlv.datasets.load("pcru_occupancy"))


@pytest.mark.parametrize("kwargs,words", [
    ({"prior_variance": [1.0]}, ["prior_variance must be a positive number"]),
    ({"prior_variance": "big"}, ["prior_variance must be a positive number"]),
    ({"sd_prior": None}, ["sd_prior two positive numbers"]),
    ({"sd_prior": "ab"}, ["sd_prior two positive numbers"]),
    ({"seed": "a"}, ["seed must be a whole number"]),
    ({"seed": None}, ["seed must be a whole number", "not none"]),
])
def test_occupancy_sample_arguments_of_the_wrong_kind_are_refused_by_name(pcru_model, kwargs, words):
    """TypeError ('>' not supported, no len()) or numpy's 'unrecognized seed string' before."""
    refused(lambda: pcru_model.sample(chains=1, draws=10, warmup=50, **kwargs), *words)


def test_occupancy_checks_of_a_fit_refuse_bad_counts_levels_and_seeds(pcru_model):
    """goodness_of_fit(n_sim=-1) leaked numpy's 'negative dimensions', a string seed SeedSequence's TypeError,
    predict(prob=95) returned an interval of NaN, with_response(['a']) a ValueError."""
    fit = pcru_model.fit()
    refused(lambda: fit.goodness_of_fit(n_sim=-1), "n_sim must be a whole number")
    refused(lambda: fit.goodness_of_fit(n_sim=2, seed="x"), "seed must be a whole number")
    refused(lambda: fit.predict(mlv.datasets.load("pcru_occupancy").head(), prob=95), "prob must be a probability",
            "write 0.95")
    refused(lambda: pcru_model.with_response(["a"]), "each 0 or 1")


@pytest.mark.parametrize("c", [5.0, 50.0, -50.0])
def test_glmm_a_shifted_offset_moves_only_the_intercept(c):
    """A constant added to a binomial offset is absorbed by the intercept (the same model): PIRLS now starts where
    glm does (least squares of link(mustart) - offset), so the fit is the unshifted one's with the intercept less c
    (before: 'step halving could not reduce the penalised deviance' from an offset of +5)."""
    cbpp = mlv.datasets.load("cbpp").assign(o=0.0)
    formula = "cbind(incidence, size - incidence) ~ period + (1 | herd) + offset(o)"
    f0 = glmm(formula, cbpp, "binomial")
    f = glmm(formula, cbpp.assign(o=c), "binomial")
    np.testing.assert_allclose(f.beta[0] + c, f0.beta[0], rtol=1e-6)
    np.testing.assert_allclose(f.beta[1:], f0.beta[1:], rtol=1e-6)
    np.testing.assert_allclose(f.theta, f0.theta, rtol=1e-6)
    assert f.objective == pytest.approx(f0.objective, rel=1e-9)


@pytest.mark.parametrize("c", [30.0, -100.0])
def test_glmm_a_poisson_offset_far_from_zero_fits(c):
    """log exposure in small units: grouseticks with log(HEIGHT) + c as offset (before: refused, blaming the broods
    with only zero counts). The fit is the unshifted one's, the intercept less c, to the flat criterion's 1e-4."""
    frame = ticks().assign(o=np.log(ticks().HEIGHT))
    formula = "TICKS ~ YEAR + (1 | BROOD) + offset(o)"
    f0 = glmm(formula, frame, "poisson")
    f = glmm(formula, frame.assign(o=frame.o + c), "poisson")
    np.testing.assert_allclose(f.beta + np.r_[c, np.zeros(len(f.beta) - 1)], f0.beta, rtol=1e-4)
    assert f.objective == pytest.approx(f0.objective, rel=1e-9)


def test_glmm_deviance_at_non_finite_parameters_is_refused():
    """deviance_at(NaN) returned NaN without a word."""
    f = glmm(POISSON, ticks(), "poisson")
    refused(lambda: f.deviance_at(np.array([np.nan]), f.beta), "finite parameters")
    refused(lambda: f.deviance_at(f.theta, np.full_like(f.beta, np.inf)), "finite parameters")
