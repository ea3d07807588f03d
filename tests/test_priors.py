"""Priors: brms's defaults exactly as brms printed them, the override API, densities and draws."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import reference
from scipy import integrate, stats

import multilevel as mlv
from multilevel.errors import MultilevelError
from multilevel.priors import brms_scale

MODELS = {
    "sleepstudy_slopes": ("Reaction ~ 1 + Days + (1 + Days | Subject)", "sleepstudy"),
    "radon_intercept": ("log_radon ~ floor + (1 | county)", "radon"),
    "hsb82_null": ("mAch ~ 1 + (1 | school)", "Hsb82"),
    "eight_schools": ("y | se(sigma) ~ 1 + (1 | school)", "eight_schools"),
    "cbpp_binomial": ("incidence | trials(size) ~ period + (1 | herd)", "cbpp", "binomial"),
    "salamanders_nb": ("count ~ spp + mined + (1 | site)", "Salamanders", "negbinomial"),
    "grouseticks_poisson": ("TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", "grouseticks", "poisson"),
    "verbagg_bernoulli": ("r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", "VerbAgg", "bernoulli"),
}


def model_of(name: str) -> mlv.Model:
    formula, data, *family = MODELS[name]
    return mlv.Model(formula, mlv.datasets.load(data), family=family[0] if family else None)


def brms_effective(rows: list[dict]) -> dict[str, str]:
    """Parameter -> prior from brms's prior_summary rows: vectorised rows inherit the most specific non-empty prior."""
    out = {}
    for row in rows:
        cls, coef, group = row["class"], row["coef"], row["group"]
        if cls == "b" and coef:
            key = f"b_{coef}"
        elif cls == "Intercept":
            key = "Intercept"
        elif cls == "sd" and coef:
            key = f"sd_{group}__{coef}"
        elif cls == "L" and group:
            key = f"cor_{group}"
        elif cls in ("sigma", "shape"):
            key = cls
        else:
            continue
        candidates = [
            r for r in rows
            if r["class"] == cls and r["prior"] and r["group"] in ("", group) and r["coef"] in ("", coef)
        ]
        if not candidates:  # brms prints an empty prior as "(flat)"
            out[key] = "(flat)"
            continue
        best = max(candidates, key=lambda r: (bool(r["coef"]), bool(r["group"])))
        out[key] = best["prior"]
    return out


@pytest.mark.parametrize("name", list(MODELS))
def test_default_priors_are_brms_printed_priors(name):
    expected = brms_effective(reference(f"{name}_brms")["prior_summary"]["rows"])
    table = mlv.priors(model_of(name))
    assert {n.replace("-", "M"): p for n, p in table["brms"].items()} == expected  # brms writes '-' in names as 'M'


@pytest.mark.parametrize("name", ["radon_intercept", "hsb82_null", "eight_schools"])
def test_default_scale_as_exact_files(name):
    model = model_of(name)
    priors = reference(f"{name}_brms_exact")["priors"]
    loc, scale = brms_scale(model.design.y)
    assert priors["Intercept"] == f"student_t(3, {loc:g}, {scale:g})"
    assert priors["sd"].startswith(f"student_t(3, 0, {scale:g})")


def test_overrides_by_class_group_and_coefficient():
    model = model_of("sleepstudy_slopes")
    table = mlv.priors(
        model,
        b_Days=mlv.prior.normal(0, 20),
        sd=mlv.prior.half_normal(50),
        sd_Subject__Days=mlv.prior.exponential(0.1),
        cor=mlv.prior.lkj(2),
        sigma=mlv.prior.gamma(2, 0.1),
        Intercept=mlv.prior.normal(250, 100),
    )
    assert table.loc["b_Days", "prior"] == "normal(0, 20)"
    assert table.loc["sd_Subject__Intercept", "prior"] == "half_normal(50)"
    assert table.loc["sd_Subject__Intercept", "brms"] == "normal(0, 50)"
    assert table.loc["sd_Subject__Days", "prior"] == "exponential(0.1)"
    assert table.loc["cor_Subject", "brms"] == "lkj_corr_cholesky(2)"
    assert table.loc["sigma", "prior"] == "gamma(2, 0.1)"
    assert table.loc["Intercept", "prior"] == "normal(250, 100)"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"b_Nights": mlv.prior.normal(0, 1)}, "no coefficient 'Nights'"),
        ({"sd_Person": mlv.prior.half_normal(1)}, "no random-effect SD matches"),
        ({"sigma": mlv.prior.normal(0, 1)}, "not available for 'sigma'"),
        ({"b": mlv.prior.half_normal(1)}, "not available for 'b'"),
        ({"cor": mlv.prior.normal(0, 1)}, "not available for 'cor'"),
        ({"tau": mlv.prior.normal(0, 1)}, "unknown prior key 'tau'"),
        ({"sd": 3.0}, "must be built with mlv.prior"),
    ],
)
def test_bad_overrides_are_refused(kwargs, message):
    with pytest.raises(MultilevelError, match=message):
        mlv.priors(model_of("sleepstudy_slopes"), **kwargs)


def test_no_sigma_prior_with_known_standard_errors():
    with pytest.raises(MultilevelError, match="no residual SD"):
        mlv.priors(model_of("eight_schools"), sigma=mlv.prior.half_normal(1))


@pytest.mark.parametrize("bad", [lambda: mlv.prior.normal(0, -1), lambda: mlv.prior.half_student_t(0, 1), lambda: mlv.prior.gamma(1, np.inf)])
def test_invalid_parameters_are_refused(bad):
    with pytest.raises(MultilevelError, match="must be positive"):
        bad()


DENSITIES = [
    (mlv.prior.normal(1.5, 2.0), stats.norm(1.5, 2.0)),
    (mlv.prior.student_t(3, 7.5, 11.1), stats.t(3, 7.5, 11.1)),
    (mlv.prior.half_student_t(3, 2.5), None),  # scipy has no half-t: checked against 2 x t below
    (mlv.prior.half_normal(1.7), stats.halfnorm(scale=1.7)),
    (mlv.prior.exponential(0.5), stats.expon(scale=2.0)),
    (mlv.prior.gamma(2.5, 0.7), stats.gamma(2.5, scale=1 / 0.7)),
    (mlv.prior.inv_gamma(3.0, 2.0), stats.invgamma(3.0, scale=2.0)),
]


@pytest.mark.parametrize("prior, dist", DENSITIES, ids=lambda x: str(x))
def test_densities_are_normalised_and_match_scipy(prior, dist):
    lower = 0.0 if prior.family in ("half_normal", "half_student_t", "exponential", "gamma", "inv_gamma") else -np.inf
    total, _ = integrate.quad(lambda x: np.exp(prior.logpdf(x)), lower, np.inf)
    assert total == pytest.approx(1.0, abs=1e-7)
    x = np.array([0.3, 1.0, 4.0])
    if dist is None:  # half-t: twice the t density on the positive axis
        dist_logpdf = stats.t(prior.params[0], 0, prior.params[1]).logpdf(x) + np.log(2)
    else:
        dist_logpdf = dist.logpdf(x)
    np.testing.assert_allclose(prior.logpdf(x), dist_logpdf, rtol=1e-12)


@pytest.mark.parametrize("prior, dist", [d for d in DENSITIES if d[1] is not None], ids=lambda x: str(x))
def test_prior_draws_follow_the_density(prior, dist):
    x = prior.sample(np.random.default_rng(1), 4000)
    assert stats.kstest(x, dist.cdf).pvalue > 1e-3


def test_half_t_draws_follow_the_density():
    prior = mlv.prior.half_student_t(3, 2.5)
    x = prior.sample(np.random.default_rng(2), 4000)
    cdf = lambda v: 2 * stats.t(3, 0, 2.5).cdf(v) - 1  # noqa: E731
    assert stats.kstest(x, cdf).pvalue > 1e-3


def test_improper_priors_cannot_be_drawn():
    with pytest.raises(MultilevelError, match="cannot draw"):
        mlv.prior.flat().sample(np.random.default_rng(0))


def test_tight_normal_coefficient_prior_same_posterior_mean_in_both_samplers():
    """b_Days ~ N(9, 0.5^2) against the data's 10.47 (SE 0.80): given the variances the posterior mean is the
    precision-weighted average of estimate and prior mean; both samplers must land there, far from 10.47."""
    model = mlv.Model("Reaction ~ 1 + Days + (1 | Subject)", mlv.datasets.load("sleepstudy"))
    fixed = model.fit().fixed_effects.loc["Days"]
    w_data, w_prior = 1 / fixed["std_error"] ** 2, 1 / 0.5**2
    exact = (w_data * fixed["estimate"] + w_prior * 9.0) / (w_data + w_prior)
    kw = dict(chains=2, draws=1000, warmup=500, seed=1, prior={"b_Days": mlv.prior.normal(9.0, 0.5)}, progress=False)
    means = {s: model.sample(sampler=s, **kw).fixed_effects.loc["Days", "estimate"] for s in ("nuts", "gibbs")}
    assert means["nuts"] == pytest.approx(exact, abs=0.05)
    assert means["gibbs"] == pytest.approx(exact, abs=0.05)
    assert means["nuts"] == pytest.approx(means["gibbs"], abs=0.05)


def test_negative_binomial_shape_prior_can_be_changed_and_only_there():
    table = mlv.priors(model_of("salamanders_nb"), shape=mlv.prior.exponential(1))
    assert table.loc["shape", "brms"] == "exponential(1)"
    with pytest.raises(MultilevelError, match="negative-binomial"):
        mlv.priors(model_of("cbpp_binomial"), shape=mlv.prior.exponential(1))
    with pytest.raises(MultilevelError, match="not available for 'shape'"):
        mlv.priors(model_of("salamanders_nb"), shape=mlv.prior.normal(0, 1))
