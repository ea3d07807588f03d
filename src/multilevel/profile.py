"""Profile-likelihood intervals for every SD, correlation, sigma and fixed effect, as lme4's
``confint(fit, method = "profile")``.

As lme4 (``profile.merMod``), the ML deviance is profiled — a REML fit is refitted by ML first — on the
SD/correlation scale: for each parameter the deviance is minimised over all the others at fixed values of
it, and the interval ends are where the signed root ``zeta = sign(x - x_hat) sqrt(dev(x) - dev_min)``
crosses the normal quantile. A parameter whose profile never crosses inside its range (an SD near 0, a
correlation near +/-1) gets the range's end as its limit. Fixed effects are profiled over theta with
sigma and the other coefficients in closed form.

>>> import multilevel as mlv
>>> fit = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff")).fit(method="ML")
>>> ci = fit.confint(method="profile")
>>> ci.round(2).loc[["sd_(Intercept)|Batch", "sigma"], ["lower", "upper"]]  # doctest: +NORMALIZE_WHITESPACE
                      lower  upper
term
sd_(Intercept)|Batch  12.20  84.06
sigma                 38.23  67.66
"""

from __future__ import annotations

import dataclasses

import nlopt
import numpy as np
import pandas as pd
import scipy.linalg as sla
from scipy import optimize, stats

from .arguments import check_level
from .engine import theta_to_T, tri_index
from .errors import MultilevelError
from .kinds import Generalized
from .names import variance_names
from .optimize import bobyqa
from .scaling import term_scales


def intervals(fit, method: str = "Wald", level: float = 0.95) -> pd.DataFrame:
    """confint: ``"Wald"`` (fixed effects, estimate +/- z SE) or ``"profile"`` (every parameter)."""
    check_level(level)
    method = str(method).lower()
    if method == "profile":
        return profile_intervals(fit, level)
    if method != "wald":
        raise MultilevelError(f"confint method must be 'Wald' or 'profile', not {method!r}")
    z = stats.norm.ppf(0.5 + level / 2)
    est, se = fit.fixed_effects["estimate"], fit.fixed_effects["std_error"]
    return pd.DataFrame({"estimate": est, "lower": est - z * se, "upper": est + z * se})


def profile_intervals(fit, level: float = 0.95) -> pd.DataFrame:
    """Profile intervals (columns estimate, lower, upper): SDs, correlations, sigma and fixed effects of the ML
    (re)fit of an LMM; SDs, correlations and fixed effects of a GLMM on its own deviance (Laplace or AGQ)."""
    check_level(level)
    z = stats.norm.ppf(0.5 + level / 2)
    if isinstance(fit, Generalized):
        if fit.held.random_centred:
            raise MultilevelError(
                "profile intervals are not available here: a random slope's covariate lies more than 10 SDs from zero, "
                "so the intercept's SD and its correlation with the slope (both at the covariate's 0) are correlated "
                "within a hair of +/-1 and their profiles are not resolved (a GLMM's profile of them took minutes and "
                "then failed). Centre that covariate in the data (subtract a value near its mean), or use "
                "method='Wald' or fit.bootstrap()"
            )
        prof = GlmmProfile(fit)
        return _profile_table(prof, z, [w for w, kind in enumerate(prof.kinds) if kind != "size"])
    if fit.prior:
        raise MultilevelError(
            "profile intervals are defined for the plain likelihood, not the penalised zero-avoiding fit: "
            "use confint(method='profile') on model.fit() or model.fit(method='ML')"
        )
    ml = ml_refit(fit)
    prof = VarianceProfile(ml)
    check_resolvable(prof)
    table = _profile_table(prof, z, range(len(prof.names)))
    fixed = FixedProfile(ml)
    se = ml.fixed_effects["std_error"].to_numpy()
    rows = []
    for j, name in enumerate(ml.design.fixed_names):
        est = ml.beta[j]
        rows.append((name, est, interval_end(fixed.zeta, j, -z, est, -np.inf, se[j]),
                     interval_end(fixed.zeta, j, z, est, np.inf, se[j])))
    return pd.concat([table, pd.DataFrame(rows, columns=["term", "estimate", "lower", "upper"]).set_index("term")])


def _profile_table(prof, z: float, ws) -> pd.DataFrame:
    """Interval ends where the profile's zeta crosses -z and z, for the parameters ws of a profile."""
    rows = []
    for w in ws:
        lo, hi = prof.limits(w)
        rows.append((prof.names[w], prof.start[w], interval_end(prof.zeta, w, -z, prof.start[w], lo, prof.scale[w]),
                     interval_end(prof.zeta, w, z, prof.start[w], hi, prof.scale[w])))
    return pd.DataFrame(rows, columns=["term", "estimate", "lower", "upper"]).set_index("term")


def ml_refit(fit):
    """The ML fit of the same model (lme4 profiles the ML deviance even for REML fits)."""
    if not fit.reml:
        return fit
    return fit.model.fit(method="ML", warn=False)  # the user has seen this fit's warnings already


def interval_end(zeta, w: int, target: float, est: float, bound: float, scale: float) -> float:
    """Where zeta(w, x) crosses target, searching from est towards bound; bound if it never does."""
    direction = np.sign(target)
    step = scale / 4 if scale > 0 else 1.0
    inner = est
    for _ in range(60):
        outer = est + direction * step
        if direction * (outer - bound) >= 0:
            outer = bound
        value = zeta(w, outer)
        if direction * (value - target) >= 0:
            try:
                return optimize.brentq(lambda x: zeta(w, x) - target, min(inner, outer), max(inner, outer),
                                       xtol=1e-10 * max(abs(est), scale), rtol=1e-12)
            except ValueError:  # zeta at the bracket's ends changed sign when evaluated again
                raise MultilevelError(
                    f"the profile of parameter {w} is not resolved: minimising over the other parameters gives different "
                    "values at the same point, as when estimates are correlated within a hair of +/-1 (a predictor far "
                    "from zero beside the intercept). Centre that predictor (subtract a value near its mean), or use "
                    "method='Wald' or 'boot'"
                ) from None
        if outer == bound:
            return bound
        inner, step = outer, step * 2
    raise MultilevelError(f"the profile of parameter {w} does not reach the {target:+.2f} quantile: the likelihood is flat")


UNRESOLVED_CORRELATION = 1e-6  # a correlation this close to +/-1 cannot be mapped to a held covariate's term


def check_resolvable(prof) -> None:
    """Refuse to profile the user's SDs and correlations where a random slope's covariate is held centred and a
    correlation lies within UNRESOLVED_CORRELATION of +/-1: mapping them to the held term then loses about
    eps / (1 - |rho|) of the intercept's variance (with the covariate at 1e9, rho is within 1e-17 of -1)."""
    near = prof.kinds == "cor"
    if prof.engine.held.random_centred and np.any(1.0 - np.abs(prof.start[near]) < UNRESOLVED_CORRELATION):
        raise MultilevelError(
            "profile intervals are not available here: a random slope's covariate lies so far from zero that the "
            "intercept's SD and its correlation with the slope (both at the covariate's 0) are not resolved in "
            "floating point (a correlation within 1e-6 of +/-1). Centre that covariate in the data (subtract a value "
            "near its mean), or use method='Wald' or 'boot'"
        )


def held_theta(held, theta: np.ndarray, ks: list[int]) -> np.ndarray:
    """theta of the terms as the fit holds them (`Scaling.random_map`: Sigma_held = M^-1 Sigma M^-T) from the
    user's; the factor of M^-1 T by QR, not a Cholesky of its square (singular at the boundary)."""
    if not held.random_held:
        return theta
    out, pos = [], 0
    for i, k in enumerate(ks):
        size = k * (k + 1) // 2
        G = np.linalg.solve(held.random_map(i, k), theta_to_T(theta[pos : pos + size], k))
        L = np.linalg.qr(G.T, mode="r").T
        L = L * np.where(np.diag(L) < 0, -1.0, 1.0)  # columns signed so that the diagonal is >= 0
        out.extend(L[a, b] for a, b in tri_index(k))
        pos += size
    return np.array(out)


class VarianceProfile:
    """The ML deviance on lme4's SD/correlation scale, profiled over all but one parameter."""

    def __init__(self, ml):
        self.engine, self.ks, self.base = ml.engine, ml.engine.ks, ml.objective
        self.names, self.start, self.kinds = sdcor_parameters(ml)
        self.scale = np.where(self.kinds == "cor", 0.2, np.maximum(self.start, 0.05 * ml.sigma * response_units(ml)))
        self._warm = {}

    def limits(self, w: int) -> tuple[float, float]:
        """The parameter's range: SDs [0, inf), correlations [-1, 1], sigma (0, inf)."""
        return {"sd": (0.0, np.inf), "cor": (-1.0, 1.0), "sigma": (1e-8 * self.start[w], np.inf)}[self.kinds[w]]

    def deviance(self, s: np.ndarray) -> float:
        """-2 log-likelihood at SDs, correlations and sigma s (beta profiled out)."""
        sigma = s[-1]
        f = self.engine.factor(held_theta(self.engine.held, sdcor_to_theta(s, self.ks), self.ks))
        if f is None or sigma <= 0:
            return np.inf
        return -2.0 * self.engine.loglik_fixed_sigma(f, sigma, reml=False)

    def zeta(self, w: int, x: float) -> float:
        """Signed root of the profiled deviance increase with parameter w fixed at x."""
        others = np.delete(np.arange(len(self.start)), w)
        lower = np.array([self.limits(i)[0] for i in others])
        upper = np.array([self.limits(i)[1] for i in others])
        x0 = np.clip(self._warm.get(w, self.start)[others], lower, upper)

        def fun(v):
            s = self.start.copy()
            s[others], s[w] = v, x
            return self.deviance(s)

        v, value = minimise_bounded(fun, x0, lower, upper, self.scale[others])
        full = self.start.copy()
        full[others], full[w] = v, x
        self._warm[w] = full
        return float(np.sign(x - self.start[w]) * np.sqrt(max(value - self.base, 0.0)))


class GlmmProfile:
    """A GLMM's deviance over SDs, correlations, fixed effects (and the log NB size, a nuisance when estimated),
    profiled over all but one: glmer's profile, on the fit's own approximation (Laplace or quadrature). The others are
    minimised over in the columns as PIRLS holds them, whitened: beta_held = beta-hat + C g (C C' their covariance),
    a round problem however far from zero the user's predictors lie (with cbpp's x + 100 the user's intercept and
    slope are correlated within 1e-4 of -1). A fixed effect held at a value is the plane D_j g = value - estimate."""

    def __init__(self, fit):
        self.fit, self.ks, self.base = fit, [b.k for b in fit.design.blocks], fit.objective
        names, start, kinds = sdcor_parameters(fit)
        self.n_var, p = len(names), len(fit.beta)
        self.names = names + list(fit.design.fixed_names)
        self.start = np.concatenate([start, fit.beta])
        self.kinds = np.concatenate([kinds, np.full(p, "beta")])
        var_scale = np.where(kinds == "cor", 0.2, np.maximum(start, 0.05))
        self.scale = np.concatenate([var_scale, fit.fixed_effects["std_error"].to_numpy()])
        self.C = np.linalg.cholesky(fit.held_beta_covariance)
        self.D = fit.held.coefficient_map @ self.C  # the user's beta = estimate + D g
        self.point = np.concatenate([start, np.zeros(p)])  # (SDs and correlations, g, [log size])
        self.inner_scale = np.concatenate([var_scale, np.ones(p)])
        if fit.size_estimated:
            self.names.append("log size")
            self.start, self.point = np.append(self.start, np.log(fit.nb_theta)), np.append(self.point, np.log(fit.nb_theta))
            self.kinds = np.append(self.kinds, "size")
            self.scale, self.inner_scale = np.append(self.scale, 0.1), np.append(self.inner_scale, 0.1)
        self._warm = {}

    def limits(self, w: int) -> tuple[float, float]:
        """SDs [0, inf), correlations [-1, 1], fixed effects and the log size unbounded."""
        return {"sd": (0.0, np.inf), "cor": (-1.0, 1.0)}.get(self.kinds[w], (-np.inf, np.inf))

    def deviance(self, u: np.ndarray) -> float:
        """-2 log-likelihood at the point u = (SDs and correlations, g, [log size])."""
        p = len(self.fit.beta)
        theta = sdcor_to_theta(np.append(u[: self.n_var], 1.0), self.ks)
        beta = self.fit.mode.beta + self.C @ u[self.n_var : self.n_var + p]
        return self.fit.held_deviance_at(theta, beta, np.exp(u[-1]) if self.fit.size_estimated else None)

    def zeta(self, w: int, x: float) -> float:
        """Signed root of the profiled deviance increase with parameter w fixed at x."""
        p, warm = len(self.fit.beta), self._warm.get(w, self.point)
        g = np.arange(self.n_var, self.n_var + p)
        if self.kinds[w] == "beta":  # g on the plane: a point of it plus its orthonormal directions
            d = self.D[w - self.n_var]
            on_plane, directions = d * (x - self.start[w]) / (d @ d), sla.null_space(d[None, :])
            free = np.setdiff1d(np.arange(len(self.point)), g)
            x0 = np.concatenate([warm[free], directions.T @ (warm[g] - on_plane)])
        else:
            on_plane, directions = None, None
            free = np.delete(np.arange(len(self.point)), w)
            x0 = warm[free]
        lower = np.array([self._inner_limits(i)[0] for i in free] + [-np.inf] * (len(x0) - len(free)))
        upper = np.array([self._inner_limits(i)[1] for i in free] + [np.inf] * (len(x0) - len(free)))
        scale = np.append(self.inner_scale[free], np.ones(len(x0) - len(free)))

        def embed(v):
            u = self.point.copy()
            u[free] = v[: len(free)]
            if directions is None:
                u[w] = x
            else:
                u[g] = on_plane + directions @ v[len(free) :]
            return u

        v, value = minimise_bounded(lambda v: self.deviance(embed(v)), np.clip(x0, lower, upper), lower, upper, scale)
        self._warm[w] = embed(v)
        return float(np.sign(x - self.start[w]) * np.sqrt(max(value - self.base, 0.0)))

    def _inner_limits(self, i: int) -> tuple[float, float]:
        """Bounds of the point's entry i (g unbounded)."""
        return self.limits(i) if i < self.n_var else (-np.inf, np.inf)


class FixedProfile:
    """The ML deviance with one fixed effect held at a value, profiled over theta, sigma and the others."""

    def __init__(self, ml):
        self.engine, self.base, self.theta = ml.engine, ml.objective, ml.theta
        self.est = ml.beta

    def deviance(self, theta: np.ndarray, j: int, value: float) -> float:
        f = self.engine.factor(theta)
        if f is None:
            return np.inf
        beta, _ = self.engine.solve(f)
        RX_inv = self.engine.beta_covariance_factor(f)
        v_jj = float(np.sum(RX_inv[:, j] ** 2))  # [(R_X R_X')^{-1}]_jj
        prss = f.r2 + (value - beta[j]) ** 2 / v_jj
        return self.engine.criterion(dataclasses.replace(f, r2=prss), reml=False)

    def zeta(self, j: int, value: float) -> float:
        info = bobyqa(lambda th: self.deviance(th, j, value), self.theta, self.engine.theta_lower())
        return float(np.sign(value - self.est[j]) * np.sqrt(max(info.fun - self.base, 0.0)))


def response_units(fit) -> np.ndarray:
    """Per `sdcor_parameters` entry of an LMM, one unit of the response in that parameter's units: 1 / the scale a
    random slope's covariate is held by (`scaling.random_columns`: a power of two near its SD when that lies beyond
    32 or below 1/32; a slope's SD is in y per unit of x), 1 otherwise and for correlations and sigma. Floored at
    0.05 sigma in y's units, the slope's SD of Days * 1e4 was stepped 2,000 times its size and the profile's inner
    optimiser lost 0.2 % of a bound."""
    scales = term_scales(fit.engine.held.terms, len(fit.design.blocks))
    out = []
    for block, scale in zip(fit.design.blocks, scales):
        out += list(1.0 / np.asarray(scale if scale is not None else np.ones(block.k))) + [1.0] * (block.k * (block.k - 1) // 2)
    return np.array(out + [1.0])


def sdcor_parameters(fit) -> tuple[list[str], np.ndarray, np.ndarray]:
    """lme4's profile parameters: per term the SDs then the correlations, then sigma of an LMM (names as lme4's)."""
    names, values, kinds = [], [], []
    for block, cov in zip(fit.design.blocks, fit.covariances):
        sd = np.sqrt(np.diag(cov))
        sd_names, cor_entries = variance_names(block, style="lme4")
        names += sd_names
        values += list(sd)
        kinds += ["sd"] * len(sd_names)
        for a, c, name in cor_entries:
            names.append(name)
            values.append(cov[a, c] / (sd[a] * sd[c]) if sd[a] > 0 and sd[c] > 0 else 0.0)
            kinds.append("cor")
    if not isinstance(fit, Generalized):
        names.append("sigma")
        values.append(fit.sigma)
        kinds.append("sigma")
    return names, np.array(values, dtype=float), np.array(kinds)


def sdcor_to_theta(s: np.ndarray, ks: list[int]) -> np.ndarray:
    """theta (relative Cholesky factors) from SDs, correlations and sigma (the last element)."""
    sigma, out, pos = s[-1], [], 0
    for k in ks:
        sd = s[pos : pos + k]
        corr = np.eye(k)
        for value, (i, j) in zip(s[pos + k : pos + k * (k + 1) // 2], [(i, j) for i, j in tri_index(k) if i != j]):
            corr[i, j] = corr[j, i] = value
        T = sd[:, None] * semidefinite_cholesky(corr) / sigma
        out.extend(T[i, j] for i, j in tri_index(k))
        pos += k * (k + 1) // 2
    return np.array(out)


def semidefinite_cholesky(C: np.ndarray) -> np.ndarray:
    """Lower factor L with L L' = C for a positive semidefinite C (correlations at +/-1 allowed)."""
    k = len(C)
    L = np.zeros((k, k))
    for j in range(k):
        pivot = C[j, j] - L[j, :j] @ L[j, :j]
        L[j, j] = np.sqrt(max(pivot, 0.0))
        for i in range(j + 1, k):
            L[i, j] = (C[i, j] - L[i, :j] @ L[j, :j]) / L[j, j] if L[j, j] > 0 else 0.0
    return L


def minimise_bounded(fun, x0: np.ndarray, lower: np.ndarray, upper: np.ndarray, scale: np.ndarray):
    """BOBYQA (NLopt) within box bounds; returns the best point and value."""
    if x0.size == 0:
        return x0, fun(x0)
    best = {"x": x0.copy(), "f": fun(x0)}

    def wrapped(x, _grad):
        value = fun(x)
        if value < best["f"]:
            best["x"], best["f"] = np.array(x), value
        return value if np.isfinite(value) else 1e300

    opt = nlopt.opt(nlopt.LN_BOBYQA, x0.size)
    opt.set_min_objective(wrapped)
    opt.set_lower_bounds(lower)
    opt.set_upper_bounds(upper)
    room = np.minimum(upper - lower, np.inf) / 2
    opt.set_initial_step(np.minimum(0.1 * scale, np.where(np.isfinite(room), room, np.inf)))
    opt.set_ftol_abs(1e-11)
    opt.set_xtol_rel(1e-10)
    opt.set_maxeval(5000)
    try:
        opt.optimize(x0)
    except (nlopt.RoundoffLimited, RuntimeError, ValueError):
        pass  # the best point seen is kept
    return best["x"], best["f"]
