"""ML/REML (and blme zero-avoiding) fits against every lme4::lmer and blme::blmer reference fit.

Tolerances are those of the reference README: the objective within 1e-6 relative; fixed effects and
SEs within 1e-4 relative; theta, sigma and SDs within 1e-4 of lme4's tight-tolerance refit
(`nloptwrap_tight`) and 1e-3 of lme4's default-optimizer values; correlations within 1e-3 absolute;
conditional modes within 1e-3 of their conditional SD; Satterthwaite df within 1 %.
Name mapping: lme4 writes the nested factor `cask:batch` (levels `a:A`), we write `batch:cask`
(levels `A:a`), so groups are matched by their set of factors and level labels part by part.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from conftest import reference, reference_files

import multilevel as mlv
from multilevel.engine import theta_to_T
from multilevel.lmm import fit_at
from multilevel.optimize import OptimumInfo

NAMES = [n for n in reference_files("lme4::lmer", "blme::blmer") if not n.startswith("insteval")]
LMER = [n for n in NAMES if reference(n)["kind"] == "lme4::lmer"]
REML_SATTERTHWAITE = [n for n in LMER if reference(n).get("satterthwaite")]
WITH_RANEF = [n for n in NAMES if reference(n).get("ranef")]
# lme4's default optimizer stops early on this model (reference README: the cses slope SD is 8.5e-4 from
# the optimum); its tight refit agrees with us. Comparisons with its top-level values that depend on
# the cses slope's scale at 1e-3 therefore fail for a better-converged fit, and are expected to.
EARLY_STOP = "hsb82_ctx_slopes_reml"


def early_stop_xfail(names: list[str]) -> list:
    """`names`, with lme4's early-stopped fit marked as a strict expected failure."""
    reason = "lme4's default optimizer stopped early here (reference README); we match its nloptwrap_tight refit"
    return [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=reason)) if n == EARLY_STOP else n for n in names]


@lru_cache(maxsize=None)
def fitted(name: str):
    """Our fit of the model of one reference file (cached: several tests read each fit)."""
    ref = reference(name)
    model = mlv.Model(ref["formula"], mlv.datasets.load(ref["dataset"]))
    prior = "zero-avoiding" if ref["kind"] == "blme::blmer" else None
    return model.fit(method="REML" if ref["REML"] else "ML", prior=prior)


def group_key(group: str) -> frozenset:
    """A grouping factor independent of how the interaction is written (lme4 'cask:batch' = our 'batch:cask')."""
    return frozenset(group.split(":"))


def our_level(ref_group: str, our_group: str, label: str) -> str:
    """lme4's level label of an interaction factor in our factor order ('a:A' -> 'A:a')."""
    parts = dict(zip(ref_group.split(":"), label.split(":")))
    return ":".join(parts[g] for g in our_group.split(":"))


def ref_terms(ref: dict):
    """lme4's random terms in theta order: (group key, coefficient names, slice of theta)."""
    start, out = 0, []
    for vc in ref["varcomp"]:
        k = len(vc["terms"])
        out.append((group_key(vc["group"]), tuple(vc["terms"]), slice(start, start + k * (k + 1) // 2)))
        start += k * (k + 1) // 2
    return out


def our_theta_by_term(fit) -> dict:
    """Our theta, keyed like `ref_terms`."""
    return {
        (group_key(b.group), tuple(b.coef_names)): fit.theta[sl]
        for b, sl in zip(fit.design.blocks, fit.engine.theta_slices)
    }


def tight(ref: dict) -> dict:
    """lme4's tight-tolerance refit (the `optimizer_crosscheck` entry 'nloptwrap_tight')."""
    (entry,) = [e for e in ref["optimizer_crosscheck"] if e["optimizer"] == "nloptwrap_tight"]
    return entry


def ref_sds(ref: dict, theta: list[float], sigma: float) -> dict:
    """(group key, term) -> SD implied by an lme4 theta and sigma."""
    out = {}
    for key, terms, sl in ref_terms(ref):
        T = theta_to_T(np.asarray(theta[sl]), len(terms))
        for name, sd in zip(terms, sigma * np.sqrt(np.diag(T @ T.T))):
            out[(key, name)] = sd
    return out


def our_sds(fit) -> dict:
    vc = fit.variance_components
    rows = vc[(vc["term2"] == "") & (vc["group"] != "Residual")]
    return {(group_key(g), t): sd for g, t, sd in zip(rows["group"], rows["term"], rows["sd"])}


# ---------------------------------------------------------------------------- objective and likelihood
@pytest.mark.parametrize("name", NAMES)
def test_objective(name):
    """REML criterion / deviance within 1e-6 relative of lme4's (blme: the unpenalised criterion)."""
    ref, fit = reference(name), fitted(name)
    expected = ref["REMLcrit"] if ref["REML"] else ref["deviance"]
    assert fit.objective == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", LMER)
def test_objective_at_least_as_good_as_tight_refit(name):
    """Our optimum is no worse than lme4's tight-tolerance refit (lower = a better optimum, allowed)."""
    fit = fitted(name)
    assert fit.objective <= tight(reference(name))["objective"] + 1e-7 * abs(fit.objective)


@pytest.mark.parametrize("name", NAMES)
def test_loglik_aic_bic_nobs(name):
    ref, fit = reference(name), fitted(name)
    assert fit.loglik == pytest.approx(ref["logLik"], rel=1e-6)
    assert fit.n_params == ref["logLik_df"]
    assert fit.aic == pytest.approx(ref["AIC"], rel=1e-6)
    assert fit.bic == pytest.approx(ref["BIC"], rel=1e-6)
    assert fit.nobs == ref["nobs"]
    assert {group_key(g): n for g, n in fit.model.n_levels.items()} == {
        group_key(g): n for g, n in ref["ngrps"].items()
    }


@pytest.mark.parametrize("name", NAMES)
def test_singular_flag(name):
    assert fitted(name).is_singular == reference(name)["isSingular"]


def test_dyestuff2_is_singular_with_a_zero_variance():
    fit = fitted("dyestuff2_reml")
    assert fit.is_singular
    assert fit.variance_components.loc[0, "sd"] == 0.0
    assert any("singular" in w for w in fit.warnings)


# ---------------------------------------------------------------------------- fixed effects
@pytest.mark.parametrize("name", NAMES)
def test_fixed_effects_and_standard_errors(name):
    ref, fit = reference(name), fitted(name)
    fe = fit.fixed_effects
    assert list(fe.index) == ref["fixef"]["names"]
    assert fe["estimate"].to_numpy() == pytest.approx(ref["fixef"]["estimate"], rel=1e-4)
    assert fe["std_error"].to_numpy() == pytest.approx(ref["fixef"]["std_error"], rel=1e-4)
    assert fe["t_value"].to_numpy() == pytest.approx(ref["fixef"]["t_value"], rel=1e-4)


@pytest.mark.parametrize("name", LMER)
def test_fixed_effects_against_tight_refit(name):
    entry, fe = tight(reference(name)), fitted(name).fixed_effects
    assert fe["estimate"].to_numpy() == pytest.approx(entry["fixef"], rel=1e-4)
    assert fe["std_error"].to_numpy() == pytest.approx(entry["fixef_se"], rel=1e-4)


@pytest.mark.parametrize("name", REML_SATTERTHWAITE)
def test_satterthwaite_df(name):
    sat, fe = reference(name)["satterthwaite"], fitted(name).fixed_effects
    assert list(fe.index) == sat["names"]
    assert fe["df"].to_numpy() == pytest.approx(sat["df"], rel=0.01)
    assert fe["p_value"].to_numpy() == pytest.approx(sat["p_value"], rel=0.05, abs=1e-12)


# ---------------------------------------------------------------------------- variance parameters
@pytest.mark.parametrize("name", LMER)
def test_theta_and_sigma_against_tight_refit(name):
    ref, fit = reference(name), fitted(name)
    entry, ours = tight(ref), our_theta_by_term(fit)
    for key, terms, sl in ref_terms(ref):
        assert ours[(key, terms)] == pytest.approx(entry["theta"][sl], rel=1e-4)
    assert fit.sigma == pytest.approx(entry["sigma"], rel=1e-4)


@pytest.mark.parametrize("name", LMER)
def test_sds_against_tight_refit(name):
    ref, fit = reference(name), fitted(name)
    entry = tight(ref)
    expected = ref_sds(ref, entry["theta"], entry["sigma"])
    ours = our_sds(fit)
    assert set(ours) == set(expected)
    for key, sd in expected.items():
        assert ours[key] == pytest.approx(sd, rel=1e-4, abs=1e-10), key


@pytest.mark.parametrize("name", NAMES)
def test_variance_components_against_reported_values(name):
    """lme4's own VarCorr: SDs and sigma within 1e-3 relative (blme: 1e-4), correlations 1e-3 absolute."""
    ref, fit = reference(name), fitted(name)
    rel = 1e-4 if ref["kind"] == "blme::blmer" else 1e-3
    vc = fit.variance_components
    ours = our_sds(fit)
    for entry in ref["varcomp"]:
        key = group_key(entry["group"])
        for term, sd in zip(entry["terms"], entry["sd"]):
            assert ours[(key, term)] == pytest.approx(sd, rel=rel, abs=1e-10)
        if entry["correlation"] is None:
            continue
        corr = np.asarray(entry["correlation"]["rows"])
        terms = entry["terms"]
        for a in range(len(terms)):
            for b in range(a + 1, len(terms)):
                pair = {terms[a], terms[b]}
                row = vc[vc["group"].map(group_key).eq(key) & np.array([{t, t2} == pair for t, t2 in zip(vc["term"], vc["term2"])])]
                assert len(row) == 1
                assert row["corr"].iloc[0] == pytest.approx(corr[a, b], abs=1e-3)
    residual = vc[vc["group"] == "Residual"]
    assert residual["sd"].iloc[0] == pytest.approx(ref["residual"]["sd"], rel=rel)
    assert fit.sigma == pytest.approx(ref["sigma"], rel=rel)


@pytest.mark.parametrize("name", early_stop_xfail(NAMES))
def test_theta_against_reported_values(name):
    """Top-level theta within 1e-3 relative (lme4), 1e-4 of the factor's scale (blme, whose objective is flat)."""
    ref, fit = reference(name), fitted(name)
    ours, theta = our_theta_by_term(fit), np.asarray(ref["theta"]["values"])
    for key, terms, sl in ref_terms(ref):
        if ref["kind"] == "blme::blmer":
            # blme's two good optimisers agree on theta only to ~1e-5 absolute (reference README)
            scale = np.max(np.abs(theta[sl]))
            assert np.max(np.abs(ours[(key, terms)] - theta[sl])) <= 1e-4 * scale
        else:
            assert ours[(key, terms)] == pytest.approx(theta[sl], rel=1e-3)


# ---------------------------------------------------------------------------- blme
@pytest.mark.parametrize("name", reference_files("blme::blmer"))
def test_blme_penalized_objective(name):
    ref, fit = reference(name), fitted(name)
    assert fit.penalized_objective == pytest.approx(ref["penalized_objective"], rel=1e-6)
    assert fit.objective == pytest.approx(ref["REMLcrit_unpenalized"], rel=1e-6)
    assert fit.penalized_objective - fit.objective == pytest.approx(ref["prior_penalty"], rel=1e-4)
    assert fit.is_singular is False


# ---------------------------------------------------------------------------- conditional modes
@pytest.mark.parametrize("name", early_stop_xfail(WITH_RANEF))
def test_conditional_modes(name):
    """At our optimum: every conditional mode within 1e-3 of its conditional SD, conditional SDs within 1e-3."""
    check_conditional_modes(reference(name)["ranef"], fitted(name))


@pytest.mark.parametrize("name", WITH_RANEF)
def test_conditional_modes_at_lme4_theta(name):
    """At lme4's own theta (no optimiser involved) the conditional modes agree to the same tolerance."""
    ref = reference(name)
    fit = fitted(name)
    theta = np.empty_like(fit.theta)
    for (key, terms, sl), block_slice in zip(ref_terms(ref), term_slices(fit, ref)):
        theta[block_slice] = ref["theta"]["values"][sl]
    info = OptimumInfo(theta, np.nan, 0, "lme4's theta")
    at_lme4 = fit_at(fit.model, fit.method, fit.prior, info)
    assert at_lme4.sigma == pytest.approx(ref["sigma"], rel=1e-6)
    check_conditional_modes(ref["ranef"], at_lme4)


def term_slices(fit, ref: dict) -> list[slice]:
    """For each lme4 term (in lme4's order) the slice of our theta that holds it."""
    ours = {(group_key(b.group), tuple(b.coef_names)): sl for b, sl in zip(fit.design.blocks, fit.engine.theta_slices)}
    return [ours[(key, terms)] for key, terms, _ in ref_terms(ref)]


def check_conditional_modes(ranef: dict, fit) -> None:
    ge = fit.group_effects
    groups = {group_key(g): g for g in ge["group"].unique()}
    ours = {
        (group_key(g), t, str(lev)): (est, sd)
        for g, t, lev, est, sd in zip(ge["group"], ge["term"], ge["level"], ge["estimate"], ge["std_error"])
    }
    assert len(ours) == len(ranef["level"])
    for g, term, level, val, sd in zip(ranef["grpvar"], ranef["term"], ranef["level"], ranef["condval"], ranef["condsd"]):
        key = group_key(g)
        est, our_sd = ours[(key, term, our_level(g, groups[key], level))]
        assert abs(est - val) <= 1e-3 * sd, (g, term, level)
        assert our_sd == pytest.approx(sd, rel=1e-3), (g, term, level)


# ---------------------------------------------------------------------------- InstEval (slow)
@pytest.mark.slow
def test_insteval_reml():
    ref = reference("insteval_reml")
    fit = mlv.Model(ref["formula"], mlv.datasets.load(ref["dataset"])).fit()
    entry = tight(ref)
    assert fit.objective == pytest.approx(ref["REMLcrit"], rel=1e-6)
    assert fit.objective <= entry["objective"] + 1e-7 * abs(fit.objective)
    fe = fit.fixed_effects
    assert fe["estimate"].to_numpy() == pytest.approx(ref["fixef"]["estimate"], rel=1e-4)
    assert fe["std_error"].to_numpy() == pytest.approx(ref["fixef"]["std_error"], rel=1e-4)
    ours = our_theta_by_term(fit)
    for key, terms, sl in ref_terms(ref):
        assert ours[(key, terms)] == pytest.approx(entry["theta"][sl], rel=1e-4)
    assert fit.sigma == pytest.approx(entry["sigma"], rel=1e-4)
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-3)
