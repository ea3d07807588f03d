"""Priors for the Bayesian fits: brms's defaults, and a small API to change them.

>>> import multilevel as mlv
>>> model = mlv.Model("Reaction ~ Days + (Days | Subject)", mlv.datasets.load("sleepstudy"))
>>> print(mlv.priors(model).loc["Intercept", "prior"])
student_t(3, 288.7, 59.3)
>>> custom = mlv.priors(model, sd=mlv.prior.half_normal(50), b_Days=mlv.prior.normal(0, 20))

Classes (as brms): ``b`` (coefficients; ``b_<name>`` for one), ``Intercept`` (of centred predictors),
``sd`` (``sd_<group>``, ``sd_<group>__<coef>``), ``sigma``, ``cor`` (``cor_<group>``), ``shape`` (negative binomial).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import special

from .coefficient_prior import CoefficientPrior
from .errors import MultilevelError
from .names import brms_coef, sd_name
from .partitioned import response_values

_POSITIVE_ONLY = {"half_normal", "half_student_t", "exponential", "gamma", "inv_gamma"}


PARAM_WIDTH = 3  # the most parameters a prior family has (student_t): the width of a prior's row of runtime data


def log_normaliser(family: str, params) -> float:
    """The part of a prior's log density free of x (numpy, on the host: compiled samplers take it as data)."""
    p = params
    if family in ("flat", "lkj"):  # LKJ's density is used unnormalised
        return 0.0
    if family == "normal":
        return -np.log(p[1]) - 0.5 * np.log(2 * np.pi)
    if family in ("student_t", "half_student_t"):
        nu, s = p[0], p[-1]
        const = special.gammaln((nu + 1) / 2) - special.gammaln(nu / 2) - 0.5 * np.log(nu * np.pi) - np.log(s)
        return const + (np.log(2.0) if family == "half_student_t" else 0.0)
    if family == "half_normal":
        return -np.log(p[0]) + 0.5 * np.log(2 / np.pi)
    if family == "exponential":
        return np.log(p[0])
    if family in ("gamma", "inv_gamma"):
        return p[0] * np.log(p[1]) - special.gammaln(p[0])
    raise MultilevelError(f"prior family {family!r} has no univariate density")


def log_kernel(family: str, params, x, xp=np):
    """The rest of the log density at x: `params` are floats or arrays JAX traces (then one compiled sampler
    serves every value of them); xp is numpy or jax.numpy."""
    p = params
    if family == "flat":
        return 0.0 * x
    if family == "normal":
        return -0.5 * ((x - p[0]) / p[1]) ** 2
    if family in ("student_t", "half_student_t"):
        nu, mu, s = (p[0], p[1], p[2]) if family == "student_t" else (p[0], 0.0, p[1])
        return -(nu + 1) / 2 * xp.log1p(((x - mu) / s) ** 2 / nu)
    if family == "half_normal":
        return -0.5 * (x / p[0]) ** 2
    if family == "exponential":
        return -p[0] * x
    if family == "gamma":
        return (p[0] - 1) * xp.log(x) - p[1] * x
    if family == "inv_gamma":
        return -(p[0] + 1) * xp.log(x) - p[1] / x
    raise MultilevelError(f"prior family {family!r} has no univariate density")


@dataclass(frozen=True)
class Prior:
    """A univariate prior (or LKJ for a correlation matrix), with a log density usable by numpy and JAX."""

    family: str
    params: tuple[float, ...] = ()

    def __str__(self) -> str:
        if self.family == "flat":
            return "(flat)"
        args = ", ".join(_num(p) for p in self.params)
        return f"{self.family}({args})"

    def brms(self) -> str:
        """The prior as brms prints it: half-distributions as their full form (bounded at 0 by the class)."""
        f, p = self.family, self.params
        if f == "half_student_t":
            return f"student_t({_num(p[0])}, 0, {_num(p[1])})"
        if f == "half_normal":
            return f"normal(0, {_num(p[0])})"
        if f == "lkj":
            return f"lkj_corr_cholesky({_num(p[0])})"
        return str(self)

    def logpdf(self, x, xp=np):
        """Log density at x (normalised, half-distributions on x > 0); xp is numpy or jax.numpy."""
        return log_kernel(self.family, self.params, x, xp) + log_normaliser(self.family, self.params)

    def sample(self, rng: np.random.Generator, size=None):
        """Draws from the prior (used by simulation-based calibration)."""
        f, p = self.family, self.params
        if f == "normal":
            return rng.normal(p[0], p[1], size)
        if f == "student_t":
            return p[1] + p[2] * rng.standard_t(p[0], size)
        if f == "half_student_t":
            return np.abs(p[1] * rng.standard_t(p[0], size))
        if f == "half_normal":
            return np.abs(rng.normal(0, p[0], size))
        if f == "exponential":
            return rng.exponential(1 / p[0], size)
        if f == "gamma":
            return rng.gamma(p[0], 1 / p[1], size)
        if f == "inv_gamma":
            return p[1] / rng.gamma(p[0], 1.0, size)
        raise MultilevelError(f"cannot draw from a {self} prior (improper or multivariate)")


def coefficient_prior(priors: list[Prior], mix: np.ndarray | None = None) -> CoefficientPrior:
    """The engine's normal priors on X's columns from per-coefficient priors: flat gives precision 0, normal(mu, s)
    gives (1 / s^2, mu), and student_t(nu, mu, s) the normal of its scale mixture with weight mix_j: (mix_j / s^2, mu)."""
    precision, mean = np.zeros(len(priors)), np.zeros(len(priors))
    for j, p in enumerate(priors):
        if p.family == "normal":
            mean[j], precision[j] = p.params[0], 1 / p.params[1] ** 2
        elif p.family == "student_t" and mix is not None:
            mean[j], precision[j] = p.params[1], mix[j] / p.params[2] ** 2
        elif p.family != "flat":
            raise ValueError(f"a {p} prior on a coefficient is not a normal (or a scale mixture with weights given)")
    return CoefficientPrior(precision, mean)


def _num(x: float) -> str:
    return f"{x:g}"


def _positive(name: str, *values: float) -> None:
    for v in values:
        if not (np.isfinite(v) and v > 0):
            raise MultilevelError(f"{name}: scale/shape/rate parameters must be positive and finite, got {v}")


class prior:  # noqa: N801 - a namespace of constructors, used as mlv.prior.normal(...)
    """Constructors for priors: ``mlv.prior.normal(0, 10)`` etc."""

    @staticmethod
    def normal(mu: float, sigma: float) -> Prior:
        _positive("normal", sigma)
        return Prior("normal", (float(mu), float(sigma)))

    @staticmethod
    def student_t(df: float, mu: float, sigma: float) -> Prior:
        _positive("student_t", df, sigma)
        return Prior("student_t", (float(df), float(mu), float(sigma)))

    @staticmethod
    def half_normal(sigma: float) -> Prior:
        _positive("half_normal", sigma)
        return Prior("half_normal", (float(sigma),))

    @staticmethod
    def half_student_t(df: float, sigma: float) -> Prior:
        _positive("half_student_t", df, sigma)
        return Prior("half_student_t", (float(df), float(sigma)))

    @staticmethod
    def exponential(rate: float) -> Prior:
        _positive("exponential", rate)
        return Prior("exponential", (float(rate),))

    @staticmethod
    def gamma(shape: float, rate: float) -> Prior:
        _positive("gamma", shape, rate)
        return Prior("gamma", (float(shape), float(rate)))

    @staticmethod
    def inv_gamma(shape: float, scale: float) -> Prior:
        _positive("inv_gamma", shape, scale)
        return Prior("inv_gamma", (float(shape), float(scale)))

    @staticmethod
    def lkj(eta: float) -> Prior:
        _positive("lkj", eta)
        return Prior("lkj", (float(eta),))

    @staticmethod
    def flat() -> Prior:
        return Prior("flat")


def brms_scale(y: np.ndarray, link: str = "identity") -> tuple[float, float]:
    """brms's default location and scale on the link scale: round(median, 1) and max(2.5, round(mad, 1)) of
    link(y) (zeros moved to 0.1 for the log link); 0 and 2.5 for links brms does not apply to y (logit, probit, cloglog)."""
    if link not in ("identity", "log"):
        return 0.0, 2.5
    if link == "log":
        y = np.log(np.where(y == 0, 0.1, y))
    med = float(np.median(y))
    mad = 1.4826 * float(np.median(np.abs(y - med)))
    return round(med, 1), max(2.5, round(mad, 1))


@dataclass
class PriorSet:
    """Every prior of a model, keyed by brms-style parameter class names."""

    intercept: Prior | None
    b: dict[str, Prior]
    sd: dict[tuple[int, str], Prior]  # (block index, coefficient) -> prior
    cor: dict[int, Prior]
    sigma: Prior | None
    shape: Prior | None = None  # the negative binomial's size, when sampled

    @property
    def informative(self) -> frozenset[str]:
        """Coefficients whose prior is not flat (the samplers keep their columns unmixed: `centring.sampler_columns`)."""
        return frozenset(name for name, p in self.b.items() if p.family != "flat")

    def table(self, model) -> pd.DataFrame:
        """One row per parameter: class, coefficient, group, our name of the prior and brms's."""
        rows = []
        if self.intercept is not None:
            rows.append(("Intercept", "Intercept", "", "", self.intercept))
        for name, p in self.b.items():
            rows.append((f"b_{name}", "b", name, "", p))
        for (i, coef), p in self.sd.items():
            g = model.design.blocks[i].group
            rows.append((sd_name(g, coef), "sd", brms_coef(coef), g, p))
        for i, p in self.cor.items():
            g = model.design.blocks[i].group
            rows.append((f"cor_{g}", "cor", "", g, p))
        if self.sigma is not None:
            rows.append(("sigma", "sigma", "", "", self.sigma))
        if self.shape is not None:
            rows.append(("shape", "shape", "", "", self.shape))
        rows = [r[:4] + (str(r[4]), r[4].brms()) for r in rows]
        return pd.DataFrame(rows, columns=["parameter", "class", "coef", "group", "prior", "brms"]).set_index("parameter")


def default_priors(model) -> PriorSet:
    """brms's defaults: student-t on the centred intercept (link scale), half-t on SDs and sigma, flat b, LKJ(1),
    gamma(0.01, 0.01) on a negative binomial's shape."""
    d, family = model.design, model.family
    gaussian = family.name == "gaussian"
    loc, scale = brms_scale(response_values(d), family.link.name)
    has_intercept = "(Intercept)" in d.fixed_names
    intercept = Prior("student_t", (3.0, loc, scale)) if has_intercept else None
    b = {n: Prior("flat") for n in d.fixed_names if n != "(Intercept)"}
    if not has_intercept:
        b = {n: Prior("flat") for n in d.fixed_names}
    half_t = Prior("half_student_t", (3.0, scale))
    sd = {(i, c): half_t for i, blk in enumerate(d.blocks) for c in blk.coef_names}
    cor = {i: Prior("lkj", (1.0,)) for i, blk in enumerate(d.blocks) if blk.k > 1}
    sigma = half_t if gaussian and d.se is None else None
    shape = Prior("gamma", (0.01, 0.01)) if family.has_dispersion and not gaussian and family.dispersion is None else None
    return PriorSet(intercept, b, sd, cor, sigma, shape)


def for_centred_response(design, ps: PriorSet) -> tuple[float, PriorSet]:
    """A centre y0 of the response (brms's prior location) and the priors of the same model for y - y0: the
    intercept's prior moved by -y0, the others unchanged (a shift of y moves only the intercept). The samplers
    work on y - y0 so their sums do not lose y's digits (y + 1e9); 0 and `ps` when the model has no intercept or
    its prior has no location to move."""
    p = ps.intercept
    if p is None or p.family not in ("flat", "normal", "student_t"):
        return 0.0, ps
    y0 = brms_scale(response_values(design))[0]
    if p.family == "normal":
        p = Prior("normal", (p.params[0] - y0, p.params[1]))
    elif p.family == "student_t":
        p = Prior("student_t", (p.params[0], p.params[1] - y0, p.params[2]))
    return y0, replace(ps, intercept=p)


def resolve_priors(model, overrides: dict | None) -> PriorSet:
    """Defaults with the user's overrides applied; unknown keys and impossible priors are refused."""
    if overrides is not None and not isinstance(overrides, Mapping):
        raise MultilevelError(
            f"prior must be a dict of parameter -> prior, e.g. {{'b': mlv.prior.normal(0, 10)}}, not {overrides!r}"
        )
    ps = default_priors(model)
    if not overrides:
        return ps
    groups = [blk.group for blk in model.design.blocks]
    for key, value in overrides.items():
        if not isinstance(value, Prior):
            raise MultilevelError(f"the prior for '{key}' must be built with mlv.prior (e.g. mlv.prior.normal(0, 10)), not {value!r}")
        _apply(ps, model, key, value, groups)
    return ps


def _apply(ps: PriorSet, model, key: str, value: Prior, groups: list[str]) -> None:
    d = model.design
    if key == "Intercept":
        if ps.intercept is None:
            raise MultilevelError("the model has no intercept to put a prior on")
        _check_family(key, value, {"normal", "student_t", "flat"})
        ps.intercept = value
    elif key == "b" or key.startswith("b_"):
        _check_family(key, value, {"normal", "flat"})
        names = list(ps.b) if key == "b" else [key[2:]]
        for n in names:
            if n not in ps.b:
                raise MultilevelError(f"no coefficient '{n}' (prior key '{key}'); coefficients: {list(ps.b)}")
            ps.b[n] = value
    elif key == "sigma":
        if ps.sigma is None:
            raise MultilevelError("the model has no residual SD (known se()), so no prior on sigma")
        _check_family(key, value, _POSITIVE_ONLY)
        ps.sigma = value
    elif key == "shape":
        if ps.shape is None:
            raise MultilevelError("only a negative-binomial model with its shape estimated has a 'shape' to put a prior on")
        _check_family(key, value, _POSITIVE_ONLY)
        ps.shape = value
    elif key == "sd" or key.startswith("sd_"):
        _check_family(key, value, _POSITIVE_ONLY)
        group, _, coef = key[3:].partition("__")
        hits = [
            (i, c) for (i, c) in ps.sd
            if (not group or groups[i] == group) and (not coef or brms_coef(c) == coef)
        ]
        if not hits:
            raise MultilevelError(f"no random-effect SD matches '{key}'; groups: {groups}")
        for h in hits:
            ps.sd[h] = value
    elif key == "cor" or key.startswith("cor_"):
        _check_family(key, value, {"lkj"})
        hits = [i for i in ps.cor if key == "cor" or groups[i] == key[4:]]
        if not hits:
            raise MultilevelError(f"no correlation matrix matches '{key}'")
        for i in hits:
            ps.cor[i] = value
    else:
        raise MultilevelError(
            f"unknown prior key '{key}': use Intercept, b, b_<coef>, sd, sd_<group>, sd_<group>__<coef>, sigma, cor, cor_<group>, shape"
        )
    del d


def _check_family(key: str, value: Prior, allowed: set[str]) -> None:
    if value.family not in allowed:
        raise MultilevelError(f"a {value} prior is not available for '{key}'; allowed: {sorted(allowed)}")


def priors(model, **overrides) -> pd.DataFrame:
    """The priors a Bayesian fit of `model` will use (brms defaults unless overridden), as a table."""
    return resolve_priors(model, overrides).table(model)
