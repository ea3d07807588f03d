"""Inference on GLMM fits: LRTs (anova, compare), profile intervals, parametric bootstrap."""

import numpy as np
import pytest
from conftest import reference
from scipy import optimize, stats

import multilevel as mlv
from multilevel.bootstrap import refit_on

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


@pytest.fixture(scope="module")
def fits(cbpp):
    big = mlv.Model(CBPP, cbpp, family="binomial").fit()
    small = mlv.Model("cbind(incidence, size - incidence) ~ 1 + (1 | herd)", cbpp, family="binomial").fit()
    return small, big


@pytest.fixture(scope="module")
def profile(fits):
    return fits[1].confint(method="profile")


def test_anova_and_compare_test_glmm_deviances_without_refitting(fits):
    small, big = fits
    optimum = reference("cbpp_binomial_laplace")["laplace_exact"]["optimum"]["objective"]
    table = mlv.anova(big, small)
    assert list(table.index) == ["model2", "model1"]
    assert table["deviance"].iloc[1] == pytest.approx(optimum, rel=1e-9)
    chisq = small.deviance - big.deviance
    assert table["Chisq"].iloc[1] == pytest.approx(chisq) and table["Df"].iloc[1] == 3
    assert table["p_value"].iloc[1] == pytest.approx(stats.chi2.sf(chisq, 3))
    assert mlv.compare({"small": small, "big": big})["Chisq"].iloc[1] == pytest.approx(chisq)


def test_profile_end_of_a_fixed_effect_is_where_the_refit_with_it_as_offset_has_deviance_min_plus_z2(cbpp, fits,
                                                                                                     profile):
    z2 = stats.norm.ppf(0.975) ** 2
    data = cbpp.assign(**{f"p{k}": (cbpp["period"].astype(str) == str(k)).astype(float) for k in (2, 3, 4)})
    for end in ("lower", "upper"):
        data = data.assign(off=profile.loc["(Intercept)", end])
        refit = mlv.Model("cbind(incidence, size - incidence) ~ 0 + p2 + p3 + p4 + offset(off) + (1 | herd)",
                          data, family="binomial").fit()
        assert refit.deviance - fits[1].deviance == pytest.approx(z2, abs=1e-5)


def test_profile_end_of_the_sd_minimises_the_deviance_over_the_fixed_effects(fits, profile):
    big = fits[1]
    assert list(profile.index) == ["sd_(Intercept)|herd", "(Intercept)", "period2", "period3", "period4"]
    for end in ("lower", "upper"):
        sd = profile.loc["sd_(Intercept)|herd", end]
        best = optimize.minimize(lambda b: big.deviance_at([sd], b), big.beta, method="Nelder-Mead",
                                 options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})
        assert best.fun - big.deviance == pytest.approx(stats.norm.ppf(0.975) ** 2, abs=1e-4)
    assert profile.loc["sd_(Intercept)|herd", "lower"] < big.variance_components["sd"].iloc[0] < profile.loc[
        "sd_(Intercept)|herd", "upper"]


def test_bootstrap_refits_simulated_success_counts_as_a_new_model_would(cbpp, fits):
    big = fits[1]
    y = big.simulate(1, seed=3)[0]
    direct = mlv.Model(CBPP, cbpp.assign(incidence=y), family="binomial").fit()
    np.testing.assert_allclose(refit_on(big, y).beta, direct.beta, rtol=1e-8)
    boot = big.bootstrap(n=6, seed=2)
    assert list(boot.estimate.index) == ["b_Intercept", "b_period2", "b_period3", "b_period4", "sd_herd__Intercept"]
    assert boot.replicates.shape == (6, 5) and boot.n_failed == 0
    assert boot.replicates.equals(mlv.bootstrap(big, n=6, seed=2, cores=2).replicates)


@pytest.mark.parametrize("formula, family, data", [
    (CBPP, "binomial", "cbpp"),
    ("SiblingNegotiation ~ FoodTreatment + offset(log(BroodSize)) + (1 | Nest)", "negbinomial", "Owls"),
])
def test_saved_glmm_reopens_with_the_same_numbers(tmp_path, formula, family, data):
    fit = mlv.Model(formula, mlv.datasets.load(data), family=family).fit()
    fit.save(tmp_path / "fit.json")
    back = mlv.load(tmp_path / "fit.json")
    assert type(back) is type(fit) and back.family.name == fit.family.name and back.nAGQ == fit.nAGQ
    assert back.deviance == fit.deviance and np.array_equal(back.beta, fit.beta)
    assert back.fixed_effects.equals(fit.fixed_effects) and back.nb_theta == fit.nb_theta
    assert back.variance_components.equals(fit.variance_components)
    np.testing.assert_allclose(back.group_effects["estimate"], fit.group_effects["estimate"], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(back.vcov_rx, fit.vcov_rx, rtol=1e-10)
    assert back.deviance_at(fit.theta, fit.beta) == pytest.approx(fit.deviance, rel=1e-12)
