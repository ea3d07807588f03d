"""Shifts and scalings of the response and of predictors change no estimate beyond 1e-6 relative (issue 16).

A shifted fit of y + c is compared with the fit of (y + c) - c: the same numbers, which the subtraction recovers
exactly (both are near c). Storing y + c already rounds each value to the spacing of doubles at c; that loss is
the data's, and it is what the lost-digits warning reports. Intercepts that absorb a shift are compared to within
that spacing too (a double near 1e12 holds 4 decimals).
"""

from __future__ import annotations

import json
import warnings
from functools import lru_cache

import dask.dataframe as dd
import numpy as np
import pytest
from scipy import optimize, stats

import multilevel as mlv
from multilevel import scaling
from multilevel.engine import tri_index
from multilevel.errors import MultilevelError, MultilevelWarning
from multilevel.glmm import restore_glmm
from multilevel.lmm import fit_at, precision_message
from multilevel.optimize import OptimumInfo
from conftest import reference  # noqa: I001 (tests/ is on the path)

TOL = 1e-6
MODELS = {
    "sleepstudy slopes REML": ("Reaction ~ 1 + Days + (1 + Days | Subject)", "sleepstudy", "REML"),
    "sleepstudy slopes ML": ("Reaction ~ 1 + Days + (1 + Days | Subject)", "sleepstudy", "ML"),
    "Dyestuff": ("Yield ~ 1 + (1 | Batch)", "Dyestuff", "REML"),
    "Penicillin": ("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin", "REML"),
    "radon slopes": ("log_radon ~ floor + (1 + floor | county)", "radon", "REML"),
    "Hsb82 null": ("mAch ~ 1 + (1 | school)", "Hsb82", "REML"),
}
PREDICTORS = {  # predictors that enter the fixed part only (a random slope's covariate is another matter: below)
    "sleepstudy intercepts": ("Reaction ~ 1 + Days + (1 | Subject)", "sleepstudy", "REML", "Days"),
    "Hsb82 context": ("mAch ~ meanses + cses + (1 + cses | school)", "Hsb82", "REML", "meanses"),
}


SLOPES = "Reaction ~ Days + (Days | Subject)"


@lru_cache(maxsize=None)
def data(name: str):
    return mlv.datasets.load(name)


def fit(formula: str, frame, method: str = "REML"):
    return mlv.Model(formula, frame).fit(method=method, warn=False)


@lru_cache(maxsize=None)
def base_fit(formula: str, dataset: str, method: str):
    return fit(formula, product_data(dataset), method)


def close(actual, expected, rel=TOL, floor=0.0):
    """Each entry within rel of its expected value (plus an absolute floor)."""
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    assert np.all(np.abs(actual - expected) <= rel * np.abs(expected) + floor), (actual, expected)


def close_vector(actual, expected, rel=TOL):
    """The vector within rel of its largest entry (theta: a near-zero correlation parameter has no relative digits)."""
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    assert np.max(np.abs(actual - expected)) <= rel * np.max(np.abs(expected)), (actual, expected)


def assert_same_fit(f, f0, *, y_scale=1.0, shift=None, x_scale=None, criterion_shift=0.0, intercept_se=True):
    """f on transformed data against f0: theta, sigma, criterion, beta (the transformation undone), SEs and variance
    components. `shift`: {coefficient: amount it absorbs}; `x_scale`: (column, factor it was multiplied by);
    `intercept_se=False` when a predictor was shifted (the intercept then is the mean response at another x)."""
    close_vector(f.theta, f0.theta)
    close(f.sigma / y_scale, f0.sigma)
    close(f.objective - criterion_shift, f0.objective)
    beta, se = f.beta.copy() / y_scale, f.fixed_effects["std_error"].to_numpy() / y_scale
    floor = np.zeros_like(beta)
    for name, amount in (shift or {}).items():
        j = f.model.fixed_names.index(name)
        floor[j] = 4 * np.spacing(abs(f.beta[j]) + abs(amount)) / y_scale
        beta[j] -= amount / y_scale
    if x_scale:
        j = f.model.fixed_names.index(x_scale[0])
        beta[j], se[j] = beta[j] * x_scale[1], se[j] * x_scale[1]
    close(beta, f0.beta, floor=floor)
    keep = [intercept_se or n != "(Intercept)" for n in f.model.fixed_names]
    close(se[keep], f0.fixed_effects["std_error"].to_numpy()[keep])
    vc, vc0 = f.variance_components, f0.variance_components
    close(vc["sd"].dropna().to_numpy() / y_scale, vc0["sd"].dropna().to_numpy())  # covariance rows have no sd
    close(vc["corr"].fillna(0).to_numpy(), vc0["corr"].fillna(0).to_numpy(), rel=0, floor=TOL)


def nu(f) -> int:
    """The criterion's degrees of freedom: n for ML, n - p for REML."""
    return f.model.nobs - (f.model.design.p if f.method == "REML" else 0)


@pytest.mark.parametrize("c", [1e3, 1e6, 1e9, 1e12])
@pytest.mark.parametrize("key", list(MODELS))
def test_response_shift(key, c):
    formula, dataset, method = MODELS[key]
    response = formula.split("~")[0].strip()
    shifted = data(dataset).assign(**{response: data(dataset)[response] + c})
    same = shifted.assign(**{response: shifted[response] - c})
    f, f0 = fit(formula, shifted, method), fit(formula, same, method)
    assert_same_fit(f, f0, shift={"(Intercept)": c})
    y = shifted[response].to_numpy()
    lost = np.finfo(float).eps * abs(y.mean()) > 1e-4 * y.std()  # stored to less than 1e-4 of the spread: radon, Penicillin at 1e12
    assert [w for w in f.warnings if w not in f0.warnings] == ([precision_message("the response")] if lost else [])
    theta = base_fit(formula, dataset, method).theta  # and at one theta the criterion agrees to rounding
    reml = method == "REML"
    assert f.model.engine.objective(theta, reml) == pytest.approx(f0.model.engine.objective(theta, reml), rel=1e-12)


@pytest.mark.parametrize("s", [1e-8, 1e8])
@pytest.mark.parametrize("key", list(MODELS))
def test_response_scale(key, s):
    formula, dataset, method = MODELS[key]
    response = formula.split("~")[0].strip()
    f0 = base_fit(formula, dataset, method)
    f = fit(formula, data(dataset).assign(**{response: data(dataset)[response] * s}), method)
    assert_same_fit(f, f0, y_scale=s, criterion_shift=nu(f0) * np.log(s**2))


@pytest.mark.parametrize("c", [1e3, 1e6, 1e9, 1e12])
@pytest.mark.parametrize("key", list(PREDICTORS))
def test_predictor_shift(key, c):
    formula, dataset, method, x = PREDICTORS[key]
    shifted = data(dataset).assign(**{x: data(dataset)[x] + c})
    same = shifted.assign(**{x: shifted[x] - c})
    f, f0 = fit(formula, shifted, method), fit(formula, same, method)
    slope = f.beta[f.model.fixed_names.index(x)]
    assert_same_fit(f, f0, shift={"(Intercept)": -slope * c}, intercept_se=False)  # y = b0 + b x = (b0 - b c) + b (x + c)


@pytest.mark.parametrize("s", [1e-8, 1e8])
@pytest.mark.parametrize("key", list(PREDICTORS))
def test_predictor_scale(key, s):
    formula, dataset, method, x = PREDICTORS[key]
    f0 = base_fit(formula, dataset, method)
    f = fit(formula, data(dataset).assign(**{x: data(dataset)[x] * s}), method)
    assert_same_fit(f, f0, x_scale=(x, s), criterion_shift=2 * np.log(s) if method == "REML" else 0.0)  # log|R_X|^2


def test_partitioned_data_shifted():
    """The Dask path centres with centres from the levels pass's rows: the same fit as in memory, shifted or not."""
    formula, dataset, method = MODELS["sleepstudy slopes REML"]
    c = 1e9
    shifted = data(dataset).assign(Reaction=data(dataset).Reaction + c)
    parts = dd.from_pandas(shifted.sample(frac=1, random_state=3), npartitions=3, sort=False)
    f = mlv.Model(formula, parts).fit(warn=False)
    f0 = fit(formula, shifted.assign(Reaction=shifted.Reaction - c))
    assert_same_fit(f, f0, shift={"(Intercept)": c})


def test_cell_means_absorb_a_response_shift():
    """Without an intercept, a full set of dummies (X u = 1) absorbs a shift of y in every coefficient."""
    sleep = data("sleepstudy").assign(half=lambda d: np.where(d.Days >= 5, "late", "early"))
    formula, c = "Reaction ~ 0 + half + Days + (1 | Subject)", 1e9
    shifted = sleep.assign(Reaction=sleep.Reaction + c)
    f, f0 = fit(formula, shifted), fit(formula, shifted.assign(Reaction=shifted.Reaction - c))
    assert f.model.cross_products.scaling.centre[-1] != 0  # the response was centred
    assert_same_fit(f, f0, shift={"halfearly": c, "halflate": c})


def test_without_a_constant_column_only_scaling():
    """`0 + x` cannot absorb a shift: nothing is centred (that would change the model), and scaling is exact."""
    formula, s = "Reaction ~ 0 + Days + (1 | Subject)", 1e8
    sleep = data("sleepstudy")
    f0 = fit(formula, sleep)
    assert not np.any(f0.model.cross_products.scaling.centre)
    f = fit(formula, sleep.assign(Reaction=sleep.Reaction * s))
    assert_same_fit(f, f0, y_scale=s, criterion_shift=nu(f0) * np.log(s**2))


def test_hopeless_shift_warns():
    """y + 1e17: the stored values are rounded to 16, a third of the spread: the data lost the digits; say so."""
    sleep = data("sleepstudy")
    model = mlv.Model("Reaction ~ 1 + Days + (1 + Days | Subject)", sleep.assign(Reaction=sleep.Reaction + 1e17))
    with pytest.warns(MultilevelWarning, match="the response lies so far from zero .* lost digits"):
        model.fit()


def test_random_slope_far_from_zero_warns():
    """A random slope's covariate far from zero: the intercept's variance refers to a point outside the data."""
    sleep = data("sleepstudy")
    model = mlv.Model("Reaction ~ 1 + Days + (1 + Days | Subject)", sleep.assign(Days=sleep.Days + 1e5))
    fit_ = model.fit(warn=False)
    assert any("Centre 'Days'" in w for w in fit_.warnings)
    assert not any("Centre" in w for w in base_fit("Reaction ~ 1 + Days + (1 + Days | Subject)", "sleepstudy", "REML").warnings)


@lru_cache(maxsize=None)
def lme4_slopes():
    """lme4's sleepstudy random-slopes REML fit (its tight-tolerance refit for theta and sigma)."""
    ref = reference("sleepstudy_slopes_reml")
    (tight,) = [e for e in ref["optimizer_crosscheck"] if e["optimizer"] == "nloptwrap_tight"]
    return ref, tight


@pytest.mark.parametrize("c", [1e6, 1e9, 1e12])
def test_random_slope_covariate_shift_against_lme4(c):
    """Days + c in Reaction ~ Days + (Days | Subject): with b_c = (b0 - c b1, b1) the model is the same, so the
    criterion, sigma, the slope, its SE, the slope's SD and its group effects are lme4's for the unshifted data,
    and the intercept's covariance is M Sigma M' with M = [[1, -c], [0, 1]] (its group effects b0 - c b1).
    Before the covariate was held centred, c = 100 already moved sigma by 3 % and the slope SD by 23 %."""
    ref, tight = lme4_slopes()
    sleep = data("sleepstudy")
    with np.errstate(all="raise"):
        f = fit(SLOPES, sleep.assign(Days=sleep.Days + c))
    assert f.converged and f.engine.held.random_centred
    assert f.objective == pytest.approx(tight["objective"], rel=1e-6)
    assert f.sigma == pytest.approx(tight["sigma"], rel=1e-4)
    fe = f.fixed_effects.loc["Days"]
    assert fe["estimate"] == pytest.approx(ref["fixef"]["estimate"][1], rel=1e-4)
    assert fe["std_error"] == pytest.approx(ref["fixef"]["std_error"][1], rel=1e-4)
    theta = np.asarray(tight["theta"])
    T = np.array([[theta[0], 0.0], [theta[1], theta[2]]])
    M = np.array([[1.0, -c], [0.0, 1.0]])
    expected = tight["sigma"] ** 2 * (M @ T) @ (M @ T).T
    np.testing.assert_allclose(f.covariances[0], expected, rtol=1e-4)
    vc = f.variance_components.set_index(["term", "term2"])["sd"]
    assert vc[("Days", "")] == pytest.approx(np.sqrt(expected[1, 1]), rel=1e-4)
    assert vc[("(Intercept)", "")] == pytest.approx(np.sqrt(expected[0, 0]), rel=1e-4)
    modes = np.asarray(ref["ranef"]["condval"], float).reshape(2, -1).T  # lme4's order: intercepts, then slopes
    levels = [str(v) for v in ref["ranef"]["level"][:18]]
    b = f.group_effects.pivot(index="level", columns="term", values="estimate").loc[levels]
    np.testing.assert_allclose(b["Days"].to_numpy(), modes[:, 1], rtol=1e-3)
    np.testing.assert_allclose(b["(Intercept)"].to_numpy(), modes[:, 0] - c * modes[:, 1], rtol=1e-3)


@pytest.mark.parametrize("c", [1e6, 1e9, 1e12])
def test_random_slope_covariate_shift_against_the_unshifted_fit(c):
    """The same against our own fit of (Days + c) - c, to 1e-6 (theta is held: compared through Sigma); fitted
    values as well."""
    sleep = data("sleepstudy")
    shifted = sleep.assign(Days=sleep.Days + c)
    f, f0 = fit(SLOPES, shifted), fit(SLOPES, shifted.assign(Days=shifted.Days - c))
    close(f.sigma, f0.sigma)
    close(f.objective, f0.objective)
    close(f.beta[1], f0.beta[1])
    close(f.fixed_effects["std_error"].iloc[1], f0.fixed_effects["std_error"].iloc[1])
    M = np.array([[1.0, -c], [0.0, 1.0]])
    close(f.covariances[0], M @ f0.covariances[0] @ M.T)
    close(f.conditional_covariances[0][:, 1, 1], f0.conditional_covariances[0][:, 1, 1])
    close(f.predict(), f0.predict())  # formed of the held columns (before: to the rounding of c x slope)


def test_profile_intervals_refused_where_a_random_slope_covariate_was_centred():
    sleep = data("sleepstudy")
    f = fit(SLOPES, sleep.assign(Days=sleep.Days + 1e6))
    with pytest.raises(mlv.MultilevelError, match="profile intervals are not available"):
        f.confint(method="profile")


SAMPLED = ["b_Days", "sigma", "sd_Subject__Intercept", "sd_Subject__Days", "cor_Subject__Intercept__Days"]


@lru_cache(maxsize=None)
def base_posterior(sampler: str):
    return mlv.Model(SLOPES, data("sleepstudy")).sample(chains=2, draws=1000, warmup=500, seed=1, sampler=sampler,
                                                         progress=False)


def within_mc_error(t, t0, names, shift=0.0):
    """Posterior means within 4 Monte Carlo SEs (sd / sqrt(bulk ESS), both runs') of each other."""
    mcse = np.hypot(t.loc[names, "sd"] / np.sqrt(t.loc[names, "ess_bulk"]), t0.loc[names, "sd"] / np.sqrt(t0.loc[names, "ess_bulk"]))
    gap = np.abs(t.loc[names, "mean"] - shift - t0.loc[names, "mean"])
    assert np.all(gap <= 4 * mcse), gap.to_frame("gap").assign(mcse=mcse)


@pytest.mark.parametrize("sampler", ["nuts", "gibbs"])
def test_sampler_response_shift(sampler):
    """y + 1e9 under brms's default priors (the intercept's located at median(y), the scales from mad(y)): the same
    posterior, the intercept moved by 1e9. Before the samplers centred y, NUTS drew a slope SD 8x too large and
    Gibbs stopped with a 'not positive definite' error."""
    c = 1e9
    sleep = data("sleepstudy")
    with np.errstate(all="raise"):
        post = mlv.Model(SLOPES, sleep.assign(Reaction=sleep.Reaction + c)).sample(
            chains=2, draws=1000, warmup=500, seed=1, sampler=sampler, progress=False)
    post0 = base_posterior(sampler)
    t, t0 = post.summary(), post0.summary()
    within_mc_error(t, t0, SAMPLED)
    within_mc_error(t, t0, ["b_Intercept"], shift=c)
    if sampler == "gibbs":  # no accept/reject on the continuous scale: the same seed gives the same draws
        np.testing.assert_allclose(post.beta[..., 1], post0.beta[..., 1], rtol=TOL)
        np.testing.assert_allclose(post.sigma, post0.sigma, rtol=TOL)
        np.testing.assert_allclose(post.sd[0], post0.sd[0], rtol=TOL)


def test_a_set_intercept_prior_moves_with_the_data():
    """A prior given in the user's units is kept in them: y + c with normal(250 + c, 5) on the intercept is
    y with normal(250, 5), shifted (same Gibbs draws to rounding)."""
    c, sleep = 1e9, data("sleepstudy")
    kw = dict(chains=1, draws=300, warmup=200, seed=4, sampler="gibbs", progress=False)
    post = mlv.Model(SLOPES, sleep.assign(Reaction=sleep.Reaction + c)).sample(
        prior={"Intercept": mlv.prior.normal(250 + c, 5)}, **kw)
    post0 = mlv.Model(SLOPES, sleep).sample(prior={"Intercept": mlv.prior.normal(250, 5)}, **kw)
    np.testing.assert_allclose(post.beta[..., 0] - c, post0.beta[..., 0], rtol=TOL)
    np.testing.assert_allclose(post.beta[..., 1], post0.beta[..., 1], rtol=TOL)
    np.testing.assert_allclose(post.sigma, post0.sigma, rtol=TOL)


def test_a_fit_with_a_centred_random_slope_covariate_reopens_exactly(tmp_path):
    """A saved fit keeps the held theta; reloaded, the model centres the covariate again and gives the same fit."""
    sleep = data("sleepstudy")
    f = fit(SLOPES, sleep.assign(Days=sleep.Days + 1e9))
    f.save(tmp_path / "fit.json")
    back = mlv.load(tmp_path / "fit.json")
    np.testing.assert_array_equal(back.covariances[0], f.covariances[0])
    np.testing.assert_array_equal(back.beta, f.beta)
    assert back.warnings == f.warnings


# ---------------------------------------------------------------- product terms
CONTEXT = "mAch ~ meanses*cses + sector*cses + (1 + cses | school)"
PRODUCTS = {  # (formula, dataset, shifted column); sleepstudy gets a made-up per-subject covariate w
    "hsb82 context, meanses": (CONTEXT, "Hsb82", "meanses"),  # in products, fixed part only
    "hsb82 context, cses": (CONTEXT, "Hsb82", "cses"),  # in products and a random slope's covariate
    "sleepstudy Days*w, Days": ("Reaction ~ Days*w + (Days | Subject)", "sleep_w", "Days"),
    "sleepstudy Days*w, w": ("Reaction ~ Days*w + (1 | Subject)", "sleep_w", "w"),
    "sleepstudy (Days*w | Subject), Days": ("Reaction ~ Days*w + (Days*w | Subject)", "sleep_w", "Days"),  # a product in Z
    "sleepstudy Days*w*z, Days": ("Reaction ~ Days*w*z + (1 | Subject)", "sleep_w", "Days"),  # a three-way product
    "sleepstudy Days*half, Days": ("Reaction ~ Days*half + (1 | Subject)", "sleep_w", "Days"),  # a factor's dummy
}


@lru_cache(maxsize=None)
def product_data(name: str):
    """The dataset; 'sleep_w': sleepstudy with made-up covariates w (a subject's level plus noise) and z (noise),
    seeded, and a factor half (Days before 5 or after)."""
    if name != "sleep_w":
        return data(name)
    sleep = data("sleepstudy")
    rng = np.random.default_rng(16)
    level = dict(zip(sleep.Subject.unique(), rng.normal(size=sleep.Subject.nunique())))
    return sleep.assign(w=sleep.Subject.map(level).astype(float) + 0.3 * rng.normal(size=len(sleep)),
                        z=rng.normal(size=len(sleep)), half=np.where(sleep.Days >= 5, "late", "early"))


def shift_map(names: list[str], x: str, c: float) -> np.ndarray:
    """T with X(x + c) = X(x) T: a column whose factors include x gains c times the column of its other factors
    ((x + c) w = x w + c w; x + c = x + c 1). Coefficients map as beta_c = T^-1 beta, their covariance T^-1 V T^-T."""
    column = {frozenset(n.split(":")): j for j, n in enumerate(names)}
    column[frozenset()] = names.index("(Intercept)")
    T = np.eye(len(names))
    for k, name in enumerate(names):
        factors = frozenset(name.split(":"))
        if x in factors:
            T[column[factors - {x}], k] += c
    return T


def mapped_close(actual, T, expected):
    """actual = T^-1 expected to 1e-6 relative, plus the rounding of that product's largest term (8 spacings)."""
    Tinv = np.linalg.inv(T)  # exact here: unit triangular with one c per column
    close(actual, Tinv @ expected, floor=8 * np.spacing(np.abs(Tinv) @ np.abs(expected)))


def at_parameters_of(f, model, maps: list[np.ndarray]):
    """The fit of `model` at f's covariances mapped by `maps` (per term) and f's sigma: the same point of another
    parametrisation, so that what is compared is the arithmetic, not where the optimiser happened to stop. Mapped
    from the relative factors as f holds them (M: a far covariate centred), since Tz M has only small entries."""
    theta = []
    for i, (Tz, T) in enumerate(zip(maps, f.factor.T)):
        G = Tz @ f.engine.held.random_map(i, len(T)) @ T
        L = np.linalg.cholesky(G @ G.T)
        theta += [L[a, b] for a, b in tri_index(len(L))]
    return fit_at(model, f.method, None, OptimumInfo(np.array(theta), np.nan, 0, "mapped"), warn=False)


@pytest.mark.parametrize("c", [1e6, 1e9, 1e12])
@pytest.mark.parametrize("key", list(PRODUCTS))
def test_product_term_shift(key, c):
    """x + c inside products: no column is dropped as aliased (before, Days:w was at 1e9 with only the rank
    warning); the optimum's criterion is that of (x + c) - c; and at the same point the fit is the fit of (x + c) - c
    mapped by T: sigma unchanged, beta = T^-1 beta_0, vcov = T^-1 V_0 T^-T, each random term's covariance mapped by
    its own T, Satterthwaite df unchanged where T^-1 leaves a coefficient alone (1e-5: the df are finite
    differences, exact to about 1e-6), fitted values to 1e-6. (Where the
    optimiser stops differs by up to 2e-6 in beta on sleepstudy's flat criterion, shifted or not.)"""
    formula, dataset, x = PRODUCTS[key]
    shifted = product_data(dataset).assign(**{x: product_data(dataset)[x] + c})
    unshifted = mlv.Model(formula, shifted.assign(**{x: shifted[x] - c}))
    f = fit(formula, shifted)
    close(f.objective, unshifted.fit(warn=False).objective)
    names = f.model.fixed_names
    assert names == unshifted.fixed_names and not f.model.design.aliased
    maps = [shift_map(b.coef_names, x, c) if x in b.coef_names else np.eye(b.k) for b in f.model.design.blocks]
    f0 = at_parameters_of(f, unshifted, maps)
    close(f.sigma, f0.sigma)
    close(f.objective, f0.objective)
    T = shift_map(names, x, c)
    mapped_close(f.beta, T, f0.beta)
    Tinv = np.linalg.inv(T)
    close(np.diag(f.vcov.to_numpy()), np.diag(Tinv @ f0.vcov.to_numpy() @ Tinv.T))
    alone = np.all((Tinv != 0) == np.eye(len(names), dtype=bool), axis=1)
    close(f.fixed_effects["df"].to_numpy()[alone], f0.fixed_effects["df"].to_numpy()[alone], rel=1e-5)
    for cov, cov0, Tz in zip(f.covariances, f0.covariances, maps):
        Tz_inv = np.linalg.inv(Tz)
        close(cov, Tz_inv @ cov0 @ Tz_inv.T, floor=TOL * np.sqrt(np.outer(np.diag(cov), np.diag(cov))))
    close(f.predict(), f0.predict())  # formed of the held columns (before: to the rounding of c times a slope)


@pytest.mark.parametrize("c", [1e6, 1e9, 1e12])
def test_product_term_shift_against_lme4(c):
    """meanses + c in lme4's Hsb82 contextual model (meanses*cses + sector*cses): the estimates are lme4's mapped by
    T, to lme4's own agreement with us on the unshifted data (1e-4; lmerTest's df to 1 %)."""
    ref = reference("hsb82_ctx_slopes_reml")
    frame = data("Hsb82")
    f = fit(CONTEXT, frame.assign(meanses=frame.meanses + c))
    names = f.model.fixed_names
    assert names == ref["fixef"]["names"]
    T = shift_map(names, "meanses", c)
    Tinv = np.linalg.inv(T)
    expected, V = np.asarray(ref["fixef"]["estimate"]), np.asarray(ref["vcov_fixef"]["rows"])
    close(f.beta, Tinv @ expected, rel=1e-4, floor=8 * np.spacing(np.abs(Tinv) @ np.abs(expected)))
    close(f.fixed_effects["std_error"], np.sqrt(np.diag(Tinv @ V @ Tinv.T)), rel=1e-4)
    alone = np.all((Tinv != 0) == np.eye(len(names), dtype=bool), axis=1)
    close(f.fixed_effects["df"].to_numpy()[alone], np.asarray(ref["satterthwaite"]["df"])[alone], rel=0.01)
    assert f.objective == pytest.approx(ref["REMLcrit"], rel=1e-6)
    assert f.sigma == pytest.approx(ref["sigma"], rel=1e-4)


@pytest.mark.parametrize("s", [1e-8, 1e8])
def test_product_term_scale(s):
    """w x s in Days*w: beta_w and beta_Days:w scale by 1/s, their SEs too, the rest is unchanged."""
    formula = "Reaction ~ Days*w + (Days | Subject)"
    frame = product_data("sleep_w")
    f, f0 = fit(formula, frame.assign(w=frame.w * s)), fit(formula, frame)
    scale = np.array([1.0, 1.0, s, s])  # (Intercept), Days, w, Days:w
    close(f.beta * scale, f0.beta)
    close(f.fixed_effects["std_error"] * scale, f0.fixed_effects["std_error"])
    close(f.sigma, f0.sigma)
    close(f.covariances[0], f0.covariances[0])


@pytest.mark.parametrize("sampler", ["nuts", "gibbs"])
def test_sampler_product_term_shift(sampler):
    """w + 1e9 in Days*w under brms's default (flat) priors on the coefficients: the same posterior for the
    coefficients T leaves alone (b_w, b_Days:w) and the variances, within Monte Carlo error. Before the samplers
    formed the product of centred factors, Gibbs stopped ('not positive definite') and NUTS gave NaN."""
    formula, c = "Reaction ~ Days*w + (1 | Subject)", 1e9
    frame = product_data("sleep_w")
    kw = dict(chains=2, draws=1000, warmup=500, seed=1, sampler=sampler, progress=False)
    with np.errstate(all="raise"):
        post = mlv.Model(formula, frame.assign(w=frame.w + c)).sample(**kw)
    post0 = mlv.Model(formula, frame).sample(**kw)
    within_mc_error(post.summary(), post0.summary(), ["b_w", "b_Days:w", "sigma", "sd_Subject__Intercept"])


def test_an_informative_prior_keeps_a_factor_unmixed():
    """A normal prior on b_w (a factor of Days:w) is a prior on the user's b_w: the samplers then keep the columns
    as given (centred alone), so the prior means what it says; the posterior of b_w sits near its tight prior."""
    frame = product_data("sleep_w")
    model = mlv.Model("Reaction ~ Days*w + (1 | Subject)", frame.assign(w=frame.w + 1e3))
    post = model.sample(prior={"b_w": mlv.prior.normal(7.0, 0.01)}, chains=1, draws=300, warmup=200, seed=2,
                        sampler="gibbs", progress=False)
    assert post.summary().loc["b_w", "mean"] == pytest.approx(7.0, abs=0.05)


def test_profile_intervals_of_a_shifted_product_term():
    """Profile intervals where w + 1e9 enters Days*w: those of the SD, sigma, w and Days:w (which T leaves alone)
    are the unshifted fit's."""
    formula, frame = "Reaction ~ Days*w + (1 | Subject)", product_data("sleep_w")
    ci = fit(formula, frame.assign(w=frame.w + 1e9)).confint(method="profile")
    ci0 = base_fit(formula, "sleep_w", "REML").confint(method="profile")
    rows = ["sd_(Intercept)|Subject", "sigma", "w", "Days:w"]
    close(ci.loc[rows].to_numpy(), ci0.loc[rows].to_numpy())


def test_partitioned_product_term_shifted():
    """The Dask path forms the product of centred factors in every partition: Days*w with w + 1e9 is the fit in
    memory, which test_product_term_shift compares with the unshifted one."""
    formula, frame = "Reaction ~ Days*w + (1 | Subject)", product_data("sleep_w")
    shifted = frame.assign(w=frame.w + 1e9)
    f = mlv.Model(formula, dd.from_pandas(shifted.sample(frac=1, random_state=3), npartitions=3, sort=False)).fit(warn=False)
    f0 = fit(formula, shifted)
    close(f.objective, f0.objective)
    close(f.sigma, f0.sigma)
    close(f.beta, f0.beta)
    close(f.fixed_effects["std_error"], f0.fixed_effects["std_error"])


def test_profile_intervals_where_a_random_slope_covariate_is_held_centred(monkeypatch):
    """Days + 20 held centred in its term (the threshold lowered to force it) or as given: the same data, two
    internal coordinates, the same profile intervals for every SD, correlation, sigma and fixed effect."""
    sleep = data("sleepstudy")
    shifted = sleep.assign(Days=sleep.Days + 20)
    ci0 = fit(SLOPES, shifted).confint(method="profile")
    monkeypatch.setattr(scaling, "FAR_COVARIATE", 1.0)
    f = fit(SLOPES, shifted)
    assert f.engine.held.random_centred
    ci = f.confint(method="profile")
    close(ci.to_numpy(), ci0.to_numpy())


def test_partitioned_random_slope_covariate_shifted():
    """The Dask path holds a far random-slope covariate centred too (centres from the levels pass's rows): Days + 1e9
    gives the fit in memory (which test_random_slope_covariate_shift_against_lme4 checks against lme4)."""
    sleep = data("sleepstudy")
    shifted = sleep.assign(Days=sleep.Days + 1e9)
    f = mlv.Model(SLOPES, dd.from_pandas(shifted.sample(frac=1, random_state=3), npartitions=3, sort=False)).fit(warn=False)
    f0 = fit(SLOPES, shifted)
    assert f.engine.held.random_centred
    close(f.objective, f0.objective)
    close(f.sigma, f0.sigma)
    close(f.beta[1], f0.beta[1])
    close(f.fixed_effects["std_error"].iloc[1], f0.fixed_effects["std_error"].iloc[1])
    close(f.covariances[0], f0.covariances[0])


CBPP_X = "cbind(incidence, size - incidence) ~ period + x + (1 | herd)"
GLMMS = {  # formula, data, family, the covariate of the fixed part shifted or scaled, fit options
    "cbpp binomial": (CBPP_X, "cbpp_x", "binomial", "x", ()),
    "cbpp binomial AGQ": (CBPP_X, "cbpp_x", "binomial", "x", (("nAGQ", 25),)),
    "cbpp binomial nAGQ=0": (CBPP_X, "cbpp_x", "binomial", "x", (("nAGQ", 0),)),
    "grouseticks poisson": ("TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", "grouseticks",
                            "poisson", "HEIGHT", ()),
    "grouseticks negative binomial": ("TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | LOCATION)", "grouseticks",
                                      "negbinomial", "HEIGHT", ()),
}
CBPP_SLOPES = "cbind(incidence, size - incidence) ~ period + x + (1 + x | herd)"


@lru_cache(maxsize=None)
def glmm_data(name: str):
    """The dataset; 'cbpp_x': cbpp with a made-up covariate x (seeded normal noise)."""
    if name != "cbpp_x":
        return data(name)
    cbpp = data("cbpp")
    return cbpp.assign(x=np.random.default_rng(16).normal(size=len(cbpp)))


def glmm_fit(formula: str, frame, family: str, options=()):
    return mlv.Model(formula, frame, family=family).fit(warn=False, **dict(options))


def assert_same_glmm(f, f0, T):
    """f against f0 with the coefficients mapped by beta = T^-1 beta_0: deviance, beta, SEs from both covariances,
    the SDs (and a negative binomial's size), the group effects, and the fitted probabilities or rates."""
    Tinv = np.linalg.inv(T)
    assert f.converged
    close(f.deviance, f0.deviance)
    mapped_close(f.beta, T, f0.beta)
    for V, V0 in [(f.vcov, f0.vcov), (f.vcov_rx, f0.vcov_rx)]:
        close(np.sqrt(np.diag(V.to_numpy())), np.sqrt(np.diag(Tinv @ V0.to_numpy() @ Tinv.T)))
    close(f.variance_components["sd"].to_numpy(), f0.variance_components["sd"].to_numpy())
    if f.nb_theta is not None:
        close(f.nb_theta, f0.nb_theta)
    b, b0 = np.concatenate([e.ravel() for e in f.random_effects]), np.concatenate([e.ravel() for e in f0.random_effects])
    close_vector(b, b0)
    close(f.fitted(), f0.fitted())


@pytest.mark.parametrize("c", [1e4, 1e8, 1e12])
@pytest.mark.parametrize("key", list(GLMMS))
def test_glmm_predictor_shift(key, c):
    """x + c in a GLMM (before, cbpp failed at x + 1e4: 'penalised IRLS did not converge'): the fit of (x + c) - c
    with beta = T^-1 beta_0 (the intercept absorbs -c beta_x), the same SEs mapped, SDs, modes and fitted values."""
    formula, dataset, family, x, options = GLMMS[key]
    shifted = glmm_data(dataset).assign(**{x: glmm_data(dataset)[x] + c})
    f = glmm_fit(formula, shifted, family, options)
    f0 = glmm_fit(formula, shifted.assign(**{x: shifted[x] - c}), family, options)
    assert_same_glmm(f, f0, shift_map(f.model.fixed_names, x, c))


@pytest.mark.parametrize("s", [1e-8, 1e8])
@pytest.mark.parametrize("key", list(GLMMS))
def test_glmm_predictor_scale(key, s):
    """x s in a GLMM: the fit of x with x's coefficient divided by s."""
    formula, dataset, family, x, options = GLMMS[key]
    frame = glmm_data(dataset)
    f = glmm_fit(formula, frame.assign(**{x: frame[x] * s}), family, options)
    f0 = glmm_fit(formula, frame, family, options)
    T = np.eye(len(f.model.fixed_names))
    j = f.model.fixed_names.index(x)
    T[j, j] = s
    assert_same_glmm(f, f0, T)


def test_glmm_random_slope_covariate_shift():
    """x + c in cbpp with (1 + x | herd): the covariate is held centred in its term, with the warning that the
    intercept's variance refers to x = 0. The optimum's deviance is that of (x + c) - c; at the same point (BOBYQA
    stops 1e-6 apart, shifted or not) beta = T^-1 beta_0, the RX SEs mapped, the term's covariance M Sigma_0 M'
    (M = [[1, -c], [0, 1]]) and the group effects b = M b_0 per level."""
    c, frame = 1e6, glmm_data("cbpp_x")
    shifted = frame.assign(x=frame.x + c)
    f = glmm_fit(CBPP_SLOPES, shifted, "binomial")
    unshifted = mlv.Model(CBPP_SLOPES, shifted.assign(x=shifted.x - c), family="binomial")
    assert f.held.random_centred and any("Centre 'x'" in w for w in f.warnings)
    close(f.deviance, unshifted.fit(warn=False).deviance)
    T, M = shift_map(f.model.fixed_names, "x", c), np.array([[1.0, -c], [0.0, 1.0]])
    N = np.linalg.solve(M, f.held.random_map(0, 2))  # the held term's covariates in the unshifted ones: [[1, -mean], [0, 1]]
    L = np.linalg.cholesky((N @ f.factor.T[0]) @ (N @ f.factor.T[0]).T)
    f0 = restore_glmm(unshifted, 1, "observed", np.array([L[a, b] for a, b in tri_index(2)]), T @ f.beta, None, f.info, np.nan,
                      f.vcov.to_numpy(), None, np.nan)
    assert not f0.held.random_centred  # theta is then the user's
    close(f.deviance, f0.deviance_at(f0.theta, f0.beta))
    mapped_close(f.beta, T, f0.beta)
    Tinv = np.linalg.inv(T)
    close(np.sqrt(np.diag(f.vcov_rx.to_numpy())), np.sqrt(np.diag(Tinv @ f0.vcov_rx.to_numpy() @ Tinv.T)))
    expected = M @ f0.covariances[0] @ M.T
    close(f.covariances[0], expected, floor=TOL * np.sqrt(np.outer(np.diag(expected), np.diag(expected))))
    b, b0 = f.random_effects[0], f0.random_effects[0] @ M.T
    close_vector(b[:, 1], b0[:, 1])
    close(b[:, 0], b0[:, 0], floor=TOL * np.abs(b0[:, 0]).max())


def test_glmm_columns_near_zero_are_held_as_given():
    """cbpp as it comes needs no centring: PIRLS sees the user's columns (nothing to undo, nothing spent)."""
    f = glmm_fit(CBPP_X, glmm_data("cbpp_x"), "binomial")
    assert not np.any(f.held.centre) and np.all(f.held.scale == 1.0) and not f.held.random_centred


def test_a_glmm_fit_with_centred_columns_reopens_exactly(tmp_path):
    """Saved and loaded, a GLMM fit held centred (x + 1e8) gives the same beta, deviance, group effects and
    predictions; its RX covariance to 1e-6: the file holds the user's beta, whose intercept (-2e7) keeps ~4e-9 of
    the held intercept, and the modes are found again from there."""
    formula, dataset, family, x, _ = GLMMS["cbpp binomial"]
    frame = glmm_data(dataset)
    f = glmm_fit(formula, frame.assign(x=frame[x] + 1e8), family)
    assert np.any(f.held.centre)
    f.save(tmp_path / "fit.json")
    g = mlv.load(tmp_path / "fit.json")
    close(g.beta, f.beta, rel=1e-12)
    close(g.vcov_rx.to_numpy(), f.vcov_rx.to_numpy())
    close(g.deviance, f.deviance, rel=1e-12)
    close_vector(g.random_effects[0], f.random_effects[0])
    close(g.predict(), f.predict())


@pytest.mark.parametrize("c", [1e4, 1e8, 1e12])
def test_glmm_profile_intervals_of_a_shifted_predictor(c):
    """cbpp with x + c (before: an error, the user's intercept and slope correlated within a hair of -1): profiled in
    the held, whitened coordinates, the SD's and every slope's intervals are those of (x + c) - c to 1e-6."""
    formula, dataset, family, x, _ = GLMMS["cbpp binomial"]
    shifted = glmm_data(dataset).assign(**{x: glmm_data(dataset)[x] + c})
    ci = glmm_fit(formula, shifted, family).confint(method="profile")
    ci0 = glmm_fit(formula, shifted.assign(**{x: shifted[x] - c}), family).confint(method="profile")
    rows = [r for r in ci0.index if r != "(Intercept)"]
    close(ci.loc[rows].to_numpy(), ci0.loc[rows].to_numpy())


def test_glmm_profile_of_a_shifted_intercept_is_where_the_deviance_rises_by_z2():
    """The intercept of x + 100 (the mean log-odds at x = -100) profiled: at each end, the deviance minimised over the
    SD and the other coefficients with that intercept fixed (the unshifted fit's deviance at intercept_0 = end + 100
    beta_x, by Powell's method: another optimiser in other coordinates) is the minimum plus z^2."""
    formula, dataset, family, x, _ = GLMMS["cbpp binomial"]
    c, frame = 100.0, glmm_data(dataset)
    ci = glmm_fit(formula, frame.assign(**{x: frame[x] + c}), family).confint(method="profile")
    f0 = glmm_fit(formula, frame, family)
    j = f0.model.fixed_names.index(x)
    for end in ("lower", "upper"):
        value = ci.loc["(Intercept)", end]

        def deviance(v):  # v: the SD, then beta without the intercept
            return f0.deviance_at(v[:1], np.concatenate([[value + c * v[j]], v[1:]]))

        start = np.concatenate([[f0.variance_components["sd"].iloc[0]], f0.beta[1:]])
        start[j] = (f0.beta[0] - value) / c  # on the constraint, with the unshifted intercept at its estimate
        best = optimize.minimize(deviance, start, method="Powell", options={"xtol": 1e-10, "ftol": 1e-12})
        assert best.fun - f0.deviance == pytest.approx(stats.norm.ppf(0.975) ** 2, abs=1e-4)


POWERS = {
    "quadratic": ("Reaction ~ Days + I(Days^2) + (1 | Subject)", "I(Days^2)"),
    "cubic": ("Reaction ~ Days + I(Days^2) + I(Days^3) + (1 | Subject)", "I(Days^3)"),
    "raw poly": ("Reaction ~ poly(Days, 2, raw=True) + (1 | Subject)", "poly(Days, 2, raw=True)1"),
}


@pytest.mark.parametrize("c", [1e3, 1e6, 1e9, 1e12])
@pytest.mark.parametrize("key", list(POWERS))
def test_power_term_shift(key, c):
    """Days + c in a full polynomial: the powers are formed again of the centred column (as products are), so the fit
    is the unshifted one: theta, sigma, criterion, the highest power's coefficient and SE. Before,
    x^2 of Days + 1e6 was formed by the formula library: sigma moved 1e-5 (raw poly), more with I()."""
    formula, top = POWERS[key]
    sleep = data("sleepstudy")
    f, f0 = fit(formula, sleep.assign(Days=sleep.Days + c)), fit(formula, sleep)
    close_vector(f.theta, f0.theta)
    close([f.sigma, f.objective], [f0.sigma, f0.objective])
    close(f.fixed_effects.loc[top].to_numpy()[:2], f0.fixed_effects.loc[top].to_numpy()[:2])
    assert not any("computed from" in w for w in f.warnings)


def test_glmm_power_term_shift():
    """x + 1e8 in cbpp's x + I(x^2): PIRLS holds the square formed of the centred x; the deviance, the square's
    coefficient and SE and the SD are those of the unshifted fit."""
    formula = "cbind(incidence, size - incidence) ~ period + x + I(x^2) + (1 | herd)"
    frame = glmm_data("cbpp_x")
    f = glmm_fit(formula, frame.assign(x=frame.x + 1e8), "binomial")
    f0 = glmm_fit(formula, frame, "binomial")
    close(f.deviance, f0.deviance)
    close(f.fixed_effects.loc["I(x^2)"].to_numpy()[:2], f0.fixed_effects.loc["I(x^2)"].to_numpy()[:2])
    close(f.variance_components["sd"].to_numpy(), f0.variance_components["sd"].to_numpy())


@pytest.mark.parametrize("formula, warns", [
    ("Reaction ~ I(Days^2) + (1 | Subject)", True),  # no Days column: the square is the formula library's
    ("Reaction ~ Days + I(Days^3) + (1 | Subject)", True),  # no square: the cube cannot be formed again
    ("Reaction ~ np.log(Days + 1) + (1 | Subject)", True),
    ("Reaction ~ Days + I(Days^2) + (1 | Subject)", False),
    ("Reaction ~ poly(Days, 2) + (1 | Subject)", False),  # orthogonal polynomials of x - mean: exact
    ("Reaction ~ center(Days) + (1 | Subject)", False),
    ("Reaction ~ I(Days - 1e6) + (1 | Subject)", False),  # affine: held centred as a column
    ("Reaction ~ C(Days) + (1 | Subject)", False),
])
def test_a_transform_of_a_far_column_warns(formula, warns):
    """Days + 1e6 inside a transform the fit cannot form again of the centred column: a warning naming the column and
    the fix (centre it first); nothing for what is formed exactly."""
    sleep = data("sleepstudy")
    shifted = sleep.assign(Days=sleep.Days + 1e6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mlv.Model(formula, shifted)
    messages = [str(w.message) for w in caught if "computed from 'Days'" in str(w.message)]
    assert len(messages) == int(warns)
    assert all("Centre 'Days' in the data first" in m and issubclass(w.category, MultilevelWarning)
               for m, w in zip(messages, caught))
    with warnings.catch_warnings(record=True) as caught:  # near zero: nothing to say
        warnings.simplefilter("always")
        mlv.Model(formula, sleep.assign(Days=sleep.Days + 1))
    assert not [w for w in caught if "computed from" in str(w.message)]


@pytest.mark.parametrize("sampler", ["nuts", "gibbs"])
def test_partitioned_sampler_product_term_shift(sampler):
    """Dask data, w + 1e9 in Days*w: the samplers' product is formed of the centred factors from the sums (its centre
    from the columns' means), as in memory; the posterior is the unshifted one within Monte Carlo error. Before, the
    product was centred as a column: Gibbs stopped with 'not positive definite'."""
    formula, frame = "Reaction ~ Days*w + (1 | Subject)", product_data("sleep_w")
    shifted = frame.assign(w=frame.w + 1e9)
    kw = dict(chains=2, draws=1000, warmup=500, seed=1, sampler=sampler, progress=False)
    post = mlv.Model(formula, dd.from_pandas(shifted.sample(frac=1, random_state=3), npartitions=3, sort=False)).sample(**kw)
    post0 = mlv.Model(formula, frame).sample(**kw)
    within_mc_error(post.summary(), post0.summary(), ["b_w", "b_Days:w", "sigma", "sd_Subject__Intercept"])


@pytest.mark.parametrize("partitioned", [False, True])
def test_an_informative_prior_on_a_far_factor_says_the_product_is_kept_as_given(partitioned):
    """A normal prior on b_w with w + 1e4 in Days*w: the product stays formed of the uncentred w (so the prior means
    what it says: b_w's posterior sits at its tight prior), and a warning names the prior, the product, the column
    and the fix; w + 1 (near zero) is quiet. Partitioned data the same (before: the product kept, nothing said)."""
    frame = product_data("sleep_w")
    kw = dict(prior={"b_w": mlv.prior.normal(7.0, 0.01)}, chains=1, draws=50, warmup=50, seed=2, sampler="gibbs",
              progress=False)
    for c, expected in [(1e4, 1), (1.0, 0)]:
        data_ = frame.assign(w=frame.w + c)
        data_ = dd.from_pandas(data_, npartitions=3) if partitioned else data_
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            post = mlv.Model("Reaction ~ Days*w + (1 | Subject)", data_).sample(**kw)
        said = [str(w.message) for w in caught if "informative prior on b_w keeps the product 'Days:w'" in str(w.message)]
        assert len(said) == expected and all("Centre 'w' in the data" in m for m in said)
        assert post.summary().loc["b_w", "mean"] == pytest.approx(7.0, abs=0.05)


OCCUPANCY = {"fixed": "~ Elevation_scaled", "random intercept": "~ Elevation_scaled + (1 | region)"}


@pytest.mark.parametrize("c", [1e4, 1e9, 1e12])
@pytest.mark.parametrize("key", list(OCCUPANCY))
def test_occupancy_covariate_shift(key, c):
    """Site and survey covariates + c in an occupancy model (before: at 1e9 the slope was off by 100 %, silently):
    fitted in the held columns, the coefficients mapped by T (intercepts absorb -c slope), their SEs, the
    log-likelihood and the SD are those of the fit of (x + c) - c to 1e-6 (a random intercept's SEs, from finite
    differences in other coordinates, to 1e-5); stored values that lost digits warn."""
    if key != "fixed" and c != 1e9:
        pytest.skip("the random intercept's BOBYQA fit: one shift")
    oven = data("oven_occupancy")
    oven = oven.assign(region=(oven.site.astype("category").cat.codes // 10).astype(str))
    shifted = oven.assign(Elevation_scaled=oven.Elevation_scaled + c, day_scaled=oven.day_scaled + c)
    same = shifted.assign(Elevation_scaled=shifted.Elevation_scaled - c, day_scaled=shifted.day_scaled - c)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f = mlv.Occupancy(OCCUPANCY[key], "~ day_scaled", shifted).fit()
    f0 = mlv.Occupancy(OCCUPANCY[key], "~ day_scaled", same).fit()
    T = np.array([[1, c, 0, 0], [0, 1, 0, 0], [0, 0, 1, c], [0, 0, 0, 1]], float)
    mapped_close(f.params, T, f0.params)
    Tinv = np.linalg.inv(T)
    fd = f.sigma is not None  # SEs from a finite-difference Hessian, taken in other coordinates: ~1e-6 apart
    close(np.sqrt(np.diag(f.vcov))[[1, 3]], np.sqrt(np.diag(Tinv @ f0.vcov @ Tinv.T))[[1, 3]], rel=1e-5 if fd else TOL)
    close(f.loglik, f0.loglik)
    if f.sigma is not None:
        close(f.sigma, f0.sigma)
    lost = any("lost digits" in str(w.message) or "rounding errors" in str(w.message) for w in caught)
    assert lost == (c >= 1e12)


@lru_cache(maxsize=None)
def occupancy_posterior(c: float, sampler: str):
    """OVEN's occupancy with Elevation and day + c (c = 0: as given), sampled with one seed."""
    oven = data("oven_occupancy")
    shifted = oven.assign(Elevation_scaled=oven.Elevation_scaled + c, day_scaled=oven.day_scaled + c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MultilevelWarning)  # c = 1e12: the stored values' lost digits
        return mlv.Occupancy("~ Elevation_scaled", "~ day_scaled", shifted).sample(chains=2, draws=500, warmup=300,
                                                                                  seed=5, sampler=sampler)


@pytest.mark.parametrize("c", [1e4, 1e9, 1e12])
@pytest.mark.parametrize("sampler", ["nuts", "gibbs"])
def test_occupancy_sampler_covariate_shift(sampler, c):
    """sample() centres far covariates as fit() does: with Elevation and day + c the posterior means of the slopes
    and of the intercepts at x = 0 (each draw's intercept + c slope) are the unshifted posterior's within 4 Monte
    Carlo SEs of the difference, the same seed (before, the intercept's prior sat 1e9 from the data and the
    sampler's steps were the intercept's: nothing was learned)."""
    post, post0 = occupancy_posterior(c, sampler), occupancy_posterior(0.0, sampler)
    T = np.array([[1, c, 0, 0], [0, 1, 0, 0], [0, 0, 1, c], [0, 0, 0, 1]], float)
    draws, draws0 = post.draws @ T.T, post0.draws  # intercepts at x = 0, slopes as they are
    mcse = [np.std(d.reshape(-1, 4), axis=0) / np.sqrt(p.summary()["ess_bulk"].to_numpy()[:4]) for d, p in
            ((draws, post), (draws0, post0))]
    gap = np.abs(draws.reshape(-1, 4).mean(axis=0) - draws0.reshape(-1, 4).mean(axis=0))
    assert np.all(gap <= 4 * np.hypot(*mcse)), (gap, mcse)
    close(post.conditional_occupancy.mean(), post0.conditional_occupancy.mean(), rel=0.01)


# ---------------------------------------------------------------- fitted values and predictions
QUADRATIC = "Reaction ~ Days + I(Days^2) + (Days | Subject)"


@lru_cache(maxsize=None)
def quadratic_rows():
    """Rows to predict: three of sleepstudy's (known subjects) and the same rows for a subject never seen."""
    rows = data("sleepstudy").iloc[[0, 15, 31, 100]]
    return rows, rows.assign(Subject="unseen")


@pytest.mark.parametrize("c", [1e3, 1e6, 1e9, 1e12])
def test_fitted_values_and_predictions_of_a_shifted_quadratic(c):
    """Days + c in a quadratic with a random slope: fitted values, residuals and predictions (known and unseen
    subjects, with and without group effects) are the unshifted fit's to 1e-6, since they are formed of the held
    (centred) columns and coefficients. Before, X beta of the user's columns summed terms near c^2 times a slope:
    at c = 1e9 fitted values were off by 49 %, at 1e12 by a factor 1e6 (residuals' error is the fitted values')."""
    sleep = data("sleepstudy")
    f0, f = fit(QUADRATIC, sleep), fit(QUADRATIC, sleep.assign(Days=sleep.Days + c))
    known, unseen = quadratic_rows()
    close(f.fitted(), f0.fitted())
    close(f.residuals(), f0.residuals(), rel=0, floor=TOL * np.abs(f0.fitted()))
    close(f.predict(include_groups=False), f0.predict(include_groups=False))
    for rows in (known, unseen):
        close(f.predict(rows.assign(Days=rows.Days + c)), f0.predict(rows))
        close(f.predict(rows.assign(Days=rows.Days + c), include_groups=False), f0.predict(rows, include_groups=False))



@pytest.mark.parametrize("c", [1e6, 1e12])
def test_simulations_of_a_shifted_quadratic(c):
    """simulate() draws the group effects as held: each row's simulated mean and variance are the unshifted model's,
    X beta and z' Sigma z + sigma^2, within 5 Monte Carlo SEs (before, draws of the user's covariance, whose entries
    reach c^2 times the slope's variance, were meaningless at c = 1e12)."""
    sleep, n = data("sleepstudy"), 4000
    f0, f = fit(QUADRATIC, sleep), fit(QUADRATIC, sleep.assign(Days=sleep.Days + c))
    sims = f.simulate(n, seed=3)
    Z = np.column_stack([np.ones(len(sleep)), sleep.Days])
    var = np.einsum("nk,kl,nl->n", Z, f0.covariances[0], Z) + f0.sigma**2
    close(sims.mean(axis=0), f0.predict(include_groups=False), rel=0, floor=5 * np.sqrt(var / n))
    close(sims.var(axis=0), var, rel=5 * np.sqrt(2 / n))


def test_a_saved_shifted_fit_reopens_with_the_same_fitted_values(tmp_path):
    """The LMM's held coefficients are recomputed from the saved theta, bit for bit."""
    sleep = data("sleepstudy")
    f = fit(QUADRATIC, sleep.assign(Days=sleep.Days + 1e9))
    f.save(tmp_path / "fit.json")
    back = mlv.load(tmp_path / "fit.json")
    np.testing.assert_array_equal(back.held_beta, f.held_beta)
    np.testing.assert_array_equal(back.fitted(), f.fitted())


GLMM_QUADRATIC = "cbind(incidence, size - incidence) ~ p + I(p^2) + (1 | herd)"


@lru_cache(maxsize=None)
def cbpp_numeric():
    cbpp = data("cbpp")
    return cbpp.assign(p=cbpp.period.astype(float))


@pytest.mark.parametrize("c", [1e3, 1e6, 1e9, 1e12])
def test_glmm_predictions_of_a_shifted_quadratic(c, tmp_path):
    """cbpp's period as a number, p + c in a quadratic: predictions without group effects and for new rows are the
    unshifted fit's to 1e-6 (PIRLS's held columns and coefficients; before, X beta of the user's columns: 4 % off at
    c = 1e6, meaningless beyond), and a saved fit reopens with the same modes (the held beta is saved: mapped back
    from the user's beta, the reload failed in PIRLS at c = 1e9)."""
    frame = cbpp_numeric()
    shifted = frame.assign(p=frame.p + c)
    f0 = mlv.Model(GLMM_QUADRATIC, frame, family="binomial").fit(warn=False)
    f = mlv.Model(GLMM_QUADRATIC, shifted, family="binomial").fit(warn=False)
    close(f.fitted(), f0.fitted())
    close(f.predict(include_groups=False), f0.predict(include_groups=False))
    rows = frame.iloc[[0, 20, 40]]
    for new in (rows, rows.assign(herd="unseen")):
        close(f.predict(new.assign(p=new.p + c), type="response"), f0.predict(new, type="response"))
    f.save(tmp_path / "glmm.json")
    back = mlv.load(tmp_path / "glmm.json")
    np.testing.assert_array_equal(back.mode.beta, f.mode.beta)
    np.testing.assert_allclose(back.fitted(), f.fitted(), rtol=1e-12)  # PIRLS's modes again, from another start


OCCUPANCY_QUADRATIC = ("~ Elevation_scaled + I(Elevation_scaled**2)", "~ day_scaled + I(day_scaled**2)")


@pytest.mark.parametrize("c", [1e3, 1e6, 1e9])
def test_occupancy_probabilities_of_a_shifted_quadratic(c, tmp_path):
    """OVEN's quadratics in elevation and day, both + c: psi, p, P(z = 1 | y) and predictions for new rows (with
    their SEs) are formed of the held columns and equal the unshifted fit's to 1e-6 (the stored x + 1e9 itself
    rounds at 1e-7 of its spread); a saved fit reopens with the same numbers. Before, the user's X beta summed
    terms near c^2 times a coefficient."""
    oven = data("oven_occupancy")
    shift = dict(Elevation_scaled=oven.Elevation_scaled + c, day_scaled=oven.day_scaled + c)
    f0, f = mlv.Occupancy(*OCCUPANCY_QUADRATIC, oven).fit(), mlv.Occupancy(*OCCUPANCY_QUADRATIC, oven.assign(**shift)).fit()
    close(f.psi, f0.psi)
    close(f.p["p"], f0.p["p"])
    close(f.conditional_occupancy, f0.conditional_occupancy)
    rows = oven.iloc[[0, 10, 20]]
    moved = rows.assign(Elevation_scaled=rows.Elevation_scaled + c, day_scaled=rows.day_scaled + c)
    for part in ("psi", "p"):
        close(f.predict(moved, part=part).to_numpy(), f0.predict(rows, part=part).to_numpy(), rel=1e-6)
    f.save(tmp_path / "occ.json")
    back = mlv.load(tmp_path / "occ.json")
    np.testing.assert_array_equal(back.psi, f.psi)
    np.testing.assert_array_equal(back.predict(moved).to_numpy(), f.predict(moved).to_numpy())


# ---------------------------------------------------------------- predictions of the approximate fit and posteriors
CROSSED_QUADRATIC = "Reaction ~ Days + I(Days^2) + (1 | Subject) + (1 | day)"


@lru_cache(maxsize=None)
def sleep_crossed():
    sleep = data("sleepstudy")
    return sleep.assign(day=sleep.Days.astype(str))


@pytest.mark.parametrize("c", [1e6, 1e9, 1e12])
def test_approximate_fit_predictions_of_a_shifted_quadratic(c):
    """The APPROXIMATE (iterative) fit forms fitted values and predictions of the held columns as `LmmFit` does: with
    Days + c in a quadratic they equal the unshifted fit's to 1e-6 (before, X beta of the user's columns: 57 % off at
    c = 1e9, a factor 1e6 at 1e12)."""
    frame = sleep_crossed()
    f0 = mlv.Model(CROSSED_QUADRATIC, frame).fit(solver="iterative", warn=False)
    f = mlv.Model(CROSSED_QUADRATIC, frame.assign(Days=frame.Days + c)).fit(solver="iterative", warn=False)
    rows = frame.iloc[[0, 15, 31, 100]]
    close(f.fitted(), f0.fitted())
    close(f.predict(include_groups=False), f0.predict(include_groups=False))
    for new in (rows, rows.assign(Subject="unseen")):
        close(f.predict(new.assign(Days=new.Days + c)), f0.predict(new))


INTERCEPT_QUADRATIC = "Reaction ~ Days + I(Days^2) + (1 | Subject)"


@pytest.mark.parametrize("c", [1e6, 1e9, 1e12])
@pytest.mark.parametrize("sampler", ["gibbs", "nuts"])
def test_posterior_predictions_of_a_shifted_quadratic(sampler, c, tmp_path):
    """Posterior predictions (fitted rows, new rows of known and unseen subjects) and the pointwise log-likelihood are
    formed of the coefficients of the columns the sampler held (centred): with Days + c they equal the unshifted
    posterior's, same seed, to 1e-6 (the centred columns are the same, so are the draws); a saved posterior reopens
    with them. Before, X beta of the user's columns: 7 % off at c = 1e9, a factor 1e5 at 1e12."""
    sleep = data("sleepstudy")
    kw = dict(chains=1, draws=100, warmup=100, seed=3, sampler=sampler, progress=False)
    post0 = mlv.Model(INTERCEPT_QUADRATIC, sleep).sample(**kw)
    post = mlv.Model(INTERCEPT_QUADRATIC, sleep.assign(Days=sleep.Days + c)).sample(**kw)
    rows = sleep.iloc[[0, 15, 31, 100]]
    close(post.predict()["estimate"], post0.predict()["estimate"])
    close(post.log_likelihood(), post0.log_likelihood())
    for new in (rows, rows.assign(Subject="unseen")):
        close(post.predict(new.assign(Days=new.Days + c))["estimate"], post0.predict(new)["estimate"])
    post.save(tmp_path / "post.nc")
    back = mlv.load(tmp_path / "post.nc")
    np.testing.assert_array_equal(back.held_beta, post.held_beta)
    np.testing.assert_array_equal(back.predict(rows.assign(Days=rows.Days + c)), post.predict(rows.assign(Days=rows.Days + c)))


@pytest.mark.parametrize("c", [1e6, 1e12])
def test_glmm_posterior_predictions_of_a_shifted_quadratic(c, tmp_path):
    """A binomial GLMM's posterior (cbpp, period as a number p + c in a quadratic; the default sampler) predicts on the
    link scale from its held coefficients: the unshifted posterior's predictions, same seed, to 1e-6; saved, it
    reopens with them (and its latent-scale R^2, formed of them too)."""
    frame = cbpp_numeric()
    kw = dict(chains=1, draws=200, warmup=200, seed=2, progress=False)
    post0 = mlv.Model(GLMM_QUADRATIC, frame, family="binomial").sample(**kw)
    post = mlv.Model(GLMM_QUADRATIC, frame.assign(p=frame.p + c), family="binomial").sample(**kw)
    rows = frame.iloc[[0, 20, 40]]
    close(post.predict()["estimate"], post0.predict()["estimate"])
    close(post.predict(rows.assign(p=rows.p + c), include_groups=False)["estimate"],
          post0.predict(rows, include_groups=False)["estimate"])
    close(post.r2()["estimate"], post0.r2()["estimate"])
    post.save(tmp_path / "glmm.nc")
    back = mlv.load(tmp_path / "glmm.nc")
    np.testing.assert_array_equal(back.predict()["estimate"], post.predict()["estimate"])


@pytest.mark.parametrize("c", [1e6, 1e9])
def test_occupancy_posterior_predictions_of_a_shifted_quadratic(c, tmp_path):
    """An occupancy posterior predicts psi and p of new rows from the draws of the held (centred) columns'
    coefficients, as the ML fit does: OVEN's quadratics in elevation and day + c give the unshifted posterior's
    predictions (same seed, Gibbs: the same draws) to 1e-6, and a saved posterior reopens with them. Before, the
    user's X beta summed terms near c^2 times a coefficient."""
    oven = data("oven_occupancy")
    shift = dict(Elevation_scaled=oven.Elevation_scaled + c, day_scaled=oven.day_scaled + c)
    kw = dict(chains=1, draws=100, warmup=100, seed=4, sampler="gibbs")
    post0 = mlv.Occupancy(*OCCUPANCY_QUADRATIC, oven).sample(**kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MultilevelWarning)
        post = mlv.Occupancy(*OCCUPANCY_QUADRATIC, oven.assign(**shift)).sample(**kw)
    rows = oven.iloc[[0, 10, 20]]
    moved = rows.assign(Elevation_scaled=rows.Elevation_scaled + c, day_scaled=rows.day_scaled + c)
    for part in ("psi", "p"):
        close(post.predict(moved, part=part)["estimate"], post0.predict(rows, part=part)["estimate"])
    close(post.posterior_predictive_check()["mean_replicated"], post0.posterior_predictive_check()["mean_replicated"])
    post.save(tmp_path / "occ.nc")
    back = mlv.load(tmp_path / "occ.nc")
    np.testing.assert_array_equal(back.predict(moved).to_numpy(), post.predict(moved).to_numpy())


@pytest.mark.parametrize("c", [1e6, 1e9, 1e12])
def test_partitioned_sampler_quadratic_shift(c):
    """Dask data with Days + c in a quadratic: the samplers' product column is centred at the mean read from the held
    cross-products and its map from them is exact (`Scaling.map_to`), so the same seed gives the in-memory unshifted
    Gibbs draws to 1e-6. Before, the product's centre was a difference of numbers near c^2 (off by ~100 at 1e9) and
    the map cancelled entries near c^2: sigma's draws were 1e-3 off from the first, predictions 1 % off."""
    frame = data("sleepstudy")
    kw = dict(sampler="gibbs", chains=1, draws=100, warmup=100, seed=3, progress=False)
    post0 = mlv.Model(INTERCEPT_QUADRATIC, frame).sample(**kw)
    shifted = frame.assign(Days=frame.Days + c)
    post = mlv.Model(INTERCEPT_QUADRATIC, dd.from_pandas(shifted, npartitions=3)).sample(**kw)
    close(post.sigma, post0.sigma)
    close(post.sd[0], post0.sd[0])
    rows = frame.iloc[[0, 15, 31]]
    close(post.predict(rows.assign(Days=rows.Days + c))["estimate"], post0.predict(rows)["estimate"])


RANDOM_SLOPES = {  # a random slope's covariate, also in the fixed part
    "sleepstudy REML": ("Reaction ~ Days + (Days | Subject)", "sleepstudy", "REML", "Days"),
    "sleepstudy ML": ("Reaction ~ Days + (Days | Subject)", "sleepstudy", "ML", "Days"),
    "Hsb82 cses": ("mAch ~ meanses + cses + (1 + cses | school)", "Hsb82", "REML", "cses"),
    "sleepstudy uncorrelated": ("Reaction ~ Days + (Days || Subject)", "sleepstudy", "REML", "Days"),
}


@pytest.mark.parametrize("s", [1e-8, 1e-4, 1e2, 1e4, 1e8])
@pytest.mark.parametrize("key", list(RANDOM_SLOPES))
def test_random_slope_covariate_scale(key, s):
    """A random slope's covariate times s: sigma, the criterion (REML: + 2 log s, from log|R_X|^2), the fixed effects
    and SEs, the SDs and correlations (the slope's SD / s) and the Satterthwaite df equal the unscaled fit's to 1e-6
    (df to 1e-5). Held in its term scaled by a power of two (`scaling.random_columns`). Before, the optimiser worked on
    the user's scale: Days * 1e-8 gave a sigma 21 % off and intercept df 0.10, * 1e4 sigma 1.4 % off, * 1e8 an
    AttributeError."""
    formula, dataset, method, x = RANDOM_SLOPES[key]
    f0 = base_fit(formula, dataset, method)
    f = fit(formula, data(dataset).assign(**{x: data(dataset)[x] * s}), method)
    close(f.sigma, f0.sigma)
    close(f.objective - (2 * np.log(s) if method == "REML" else 0.0), f0.objective)
    j = f.model.fixed_names.index(x)
    unscale = np.where(np.arange(len(f.beta)) == j, s, 1.0)
    close(f.beta * unscale, f0.beta)
    close(f.fixed_effects["std_error"].to_numpy() * unscale, f0.fixed_effects["std_error"].to_numpy())
    vc, vc0 = f.variance_components, f0.variance_components
    sds = (vc["term2"] == "").to_numpy()
    sd = vc["sd"].to_numpy() * np.where((vc["term"] == x).to_numpy() & sds, s, 1.0)
    close(sd[sds], vc0["sd"].to_numpy()[sds])
    close(vc["corr"].fillna(0).to_numpy(), vc0["corr"].fillna(0).to_numpy(), rel=0, floor=TOL)
    close(f.fixed_effects["df"].to_numpy(), f0.fixed_effects["df"].to_numpy(), rel=0, floor=1e-5)


@pytest.mark.parametrize("s", [1e-8, 1e8])
def test_a_fit_with_a_scaled_random_slope_covariate_reopens_exactly(s, tmp_path):
    """The saved theta is of the term as held (scaled); the file records the scales, so the reload is bit for bit, and
    a file without them (an older version's, whose theta was of the covariate as given) is refused, not misread."""
    sleep = data("sleepstudy")
    f = fit(SLOPES, sleep.assign(Days=sleep.Days * s))
    f.save(tmp_path / "fit.json")
    back = mlv.load(tmp_path / "fit.json")
    assert back.sigma == f.sigma and np.array_equal(back.theta, f.theta)
    record = json.loads((tmp_path / "fit.json").read_text())
    del record["term_scales"]
    (tmp_path / "old.json").write_text(json.dumps(record))
    with pytest.raises(MultilevelError, match="older multilevel"):
        mlv.load(tmp_path / "old.json")


@pytest.mark.parametrize("s", [1e-6, 1e6])
def test_glmm_random_slope_covariate_scale(s):
    """cbpp's period as a number, with a random slope, times s: the deviance, fixed effects (slope * s) and SDs (the
    slope's * s) equal the unscaled fit's to 1e-6 (PIRLS holds the term as the LMM does)."""
    frame = cbpp_numeric()
    formula = "cbind(incidence, size - incidence) ~ p + (p | herd)"
    f0 = mlv.Model(formula, frame, family="binomial").fit(warn=False)
    f = mlv.Model(formula, frame.assign(p=frame.p * s), family="binomial").fit(warn=False)
    close(f.deviance, f0.deviance)
    close(f.beta * [1.0, s], f0.beta)
    vc, vc0 = f.variance_components, f0.variance_components
    sds = (vc["term2"] == "").to_numpy()
    close((vc["sd"].to_numpy() * np.where((vc["term"] == "p").to_numpy() & sds, s, 1.0))[sds], vc0["sd"].to_numpy()[sds])


@pytest.mark.parametrize("s", [1e-8, 1e4])
def test_profile_intervals_of_a_scaled_random_slope_covariate(s):
    """Profile intervals with Days * s: every bound equals the unscaled fit's (the slope's SD and fixed effect times
    1 / s) to 1e-6. The profile maps the user's SDs to the held (scaled) term, and its inner optimiser's step for an
    SD is floored at 0.05 sigma in that SD's own units (`profile.response_units`): floored in y's units, the slope's
    SD at * 1e4 was stepped 2,000 times its size and the intercept SD's lower bound came out 0.23 % off."""
    sleep = data("sleepstudy")
    c0 = fit(SLOPES, sleep, "ML").confint("profile")
    c = fit(SLOPES, sleep.assign(Days=sleep.Days * s), "ML").confint("profile")
    undo = np.where(np.isin(c0.index, ["sd_Days|Subject", "Days"]), s, 1.0)[:, None]
    close((c[["lower", "upper"]].to_numpy() * undo), c0[["lower", "upper"]].to_numpy())
