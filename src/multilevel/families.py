"""Response distributions and link functions: the family seam of the pipeline.

A family says how the mean mu = g^-1(eta) of each response relates to the linear predictor and what the
response's distribution is, so formula, design, cross-products and engine never assume it. Everything the fits
need of it lives here: link, inverse link and their derivatives, variance function, log-likelihood on the
absolute scale (binomial coefficient included, so -2 log-likelihood is lme4's), deviance residuals, scores and
the observed and expected information in eta (penalised IRLS and the Laplace approximation), simulation. The
Gaussian family with the identity link is the special case where one weighted least-squares step is exact,
which is why the linear mixed model profiles its likelihood in closed form; its log-density and draws with
each row's SD given (`Gaussian.log_likelihood`, `Gaussian.draw`) serve the linear model's results and
posteriors. R-style strings are parsed by `parse`.

Conventions (R's glm): a binomial response is the proportion of successes with the number of trials as
its weight; other weights are prior weights multiplying each row's log-likelihood.

>>> fam = parse("binomial(probit)")
>>> fam.name, fam.link.name
('binomial', 'probit')
>>> float(GAUSSIAN.log_likelihood(np.array([1.0]), np.array([0.0]), np.array([1.0]))[0])  # log N(1 | 0, 1)
-1.4189385332046727
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from .errors import MultilevelError

EPS = np.finfo(float).eps
LOGIT_BOUND = -np.log(EPS)  # R's logit clamps eta to +-36: mu stays inside (0, 1)
PROBIT_BOUND = -stats.norm.ppf(EPS)  # R's probit clamp, about 8.1
INTEGER_TOL = 1e-8
CANONICAL_LOGIT_BOUND = 30.0  # |eta| within which the logit's clamps never act (mu (1 - mu) > 1e-13 > EPS)
CANONICAL_LOG_BOUND = -30.0  # eta above which the log link's floor EPS never acts
LOG_2PI = float(np.log(2 * np.pi))


# ---------------------------------------------------------------------- links
@dataclass(frozen=True)
class Link:
    """A link function g with g^-1, d mu / d eta and d^2 mu / d eta^2 (R's clamping of extreme eta)."""

    name: str

    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        mu = np.asarray(mu, dtype=float)
        return {"identity": lambda: mu, "log": lambda: np.log(mu), "logit": lambda: special.logit(mu),
                "probit": lambda: stats.norm.ppf(mu), "cloglog": lambda: np.log(-np.log1p(-mu))}[self.name]()

    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        eta = np.asarray(eta, dtype=float)
        if self.name == "identity":
            return eta
        if self.name == "log":
            return np.maximum(np.exp(eta), EPS)
        if self.name == "logit":
            return special.expit(np.clip(eta, -LOGIT_BOUND, LOGIT_BOUND))
        if self.name == "probit":
            return stats.norm.cdf(np.clip(eta, -PROBIT_BOUND, PROBIT_BOUND))
        return np.clip(-np.expm1(-np.exp(eta)), EPS, 1 - EPS)  # cloglog

    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        """d mu / d eta."""
        eta = np.asarray(eta, dtype=float)
        if self.name == "identity":
            return np.ones_like(eta)
        if self.name == "log":
            return np.maximum(np.exp(eta), EPS)
        if self.name == "logit":
            mu = special.expit(eta)
            return np.maximum(mu * (1 - mu), EPS)
        if self.name == "probit":
            return np.maximum(stats.norm.pdf(eta), EPS)
        return np.maximum(np.exp(eta - np.exp(eta)), EPS)  # cloglog

    def mu_eta2(self, eta: np.ndarray) -> np.ndarray:
        """d^2 mu / d eta^2, which the observed information of a non-canonical link needs."""
        eta = np.asarray(eta, dtype=float)
        if self.name == "identity":
            return np.zeros_like(eta)
        if self.name == "log":
            return np.exp(eta)
        if self.name == "logit":
            mu = special.expit(eta)
            return mu * (1 - mu) * (1 - 2 * mu)
        if self.name == "probit":
            return -eta * stats.norm.pdf(eta)
        return np.exp(eta - np.exp(eta)) * (1 - np.exp(eta))  # cloglog


# ---------------------------------------------------------------------- families
@dataclass(frozen=True)
class Family:
    """Base of the families: the quantities every fit needs, in terms of a few distribution-specific ones.

    Subclasses give `variance`, `variance_deriv`, `_kernel` (and `_normaliser` where the log-likelihood has terms
    free of mu), `unit_deviance`, `_draw`, `check_response`, `start_mu`; `dispersion` is the family's extra parameter (sigma, or the negative-binomial size) or None.
    """

    link: Link
    name: str = ""
    links: tuple[str, ...] = ()
    canonical_link: str = ""
    dispersion: float | None = None

    def __post_init__(self):
        if self.link.name not in self.links:
            raise MultilevelError(f"the {self.name} family takes the link(s) {list(self.links)}, not {self.link.name!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(link={self.link.name!r}{self._dispersion_repr()})"

    def _dispersion_repr(self) -> str:
        return ""

    @property
    def canonical(self) -> bool:
        """True if the link is canonical: observed and expected information then coincide."""
        return self.link.name == self.canonical_link

    @property
    def has_dispersion(self) -> bool:
        """Whether the family has a parameter beyond the mean (sigma, negative-binomial size)."""
        return False

    def with_dispersion(self, value: float) -> Family:
        """The same family with its extra parameter set (only families that have one)."""
        raise MultilevelError(f"the {self.name} family has no dispersion parameter")

    def _phi(self) -> float:
        """The scale by which score and information are divided (sigma^2 for the Gaussian, else 1)."""
        return 1.0

    # ---- likelihood
    def loglik(self, y: np.ndarray, mu: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Log-likelihood of each row on the absolute scale (binomial: the proportion y of `weights` trials)."""
        y, w = np.asarray(y, float), _ones_like(weights, y)
        return self._kernel(y, np.asarray(mu, float), w) + self._normaliser(y, w)

    def loglik_kernel(self, y: np.ndarray, mu: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Each row's log-likelihood less its `log_normaliser`: the part that changes with mu."""
        return self._kernel(np.asarray(y, float), np.asarray(mu, float), _ones_like(weights, y))

    def log_normaliser(self, y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Each row's log-likelihood terms free of mu (binomial coefficient, log y!): fits that evaluate the
        log-likelihood at many means add them once."""
        return self._normaliser(np.asarray(y, float), _ones_like(weights, y))

    def _normaliser(self, y: np.ndarray, w: np.ndarray) -> np.ndarray:
        return np.zeros(np.shape(y))

    def saturated_loglik(self, y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Each row's log-likelihood at mu = y (the reference of deviance residuals)."""
        return self.loglik(y, self.clip_mu(np.asarray(y, float)), weights)

    def clip_mu(self, mu: np.ndarray) -> np.ndarray:
        """mu moved into the interior of the family's mean space (only where it is bounded)."""
        return mu

    def deviance_residuals(self, y: np.ndarray, mu: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """sign(y - mu) sqrt(w d(y, mu)): their squares sum to the deviance."""
        y, mu = np.asarray(y, float), np.asarray(mu, float)
        d = _ones_like(weights, y) * self.unit_deviance(y, mu)
        return np.sign(y - mu) * np.sqrt(np.maximum(d, 0.0))

    def pearson_residuals(self, y: np.ndarray, mu: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """(y - mu) sqrt(w / V(mu))."""
        return (np.asarray(y, float) - mu) * np.sqrt(_ones_like(weights, y) / self.variance(mu))

    # ---- derivatives in eta (score and information, dispersion included)
    def score(self, y: np.ndarray, eta: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """d loglik / d eta for each row."""
        return self._score(y, self._moments(eta), _ones_like(weights, y))

    def loglik_kernel_and_score(self, y, eta, weights=None) -> tuple[np.ndarray, np.ndarray]:
        """`loglik_kernel` at the mean g^-1(eta) and `score`, from one evaluation of the link (quadrature nodes)."""
        y, w = np.asarray(y, float), _ones_like(weights, y)
        mu = self._canonical_mean(eta)
        if mu is not None:
            return self._canonical_kernel(y, eta, mu, w), w * (y - mu)
        moments = self._moments(eta)
        return self._kernel(y, moments[0], w), self._score(y, moments, w)

    def kernel_at(self, y: np.ndarray, eta: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """`loglik_kernel` at the mean g^-1(eta) (penalised IRLS's objective)."""
        y, w = np.asarray(y, float), _ones_like(weights, y)
        mu = self._canonical_mean(eta)
        if mu is not None:
            return self._canonical_kernel(y, eta, mu, w)
        return self._kernel(y, self.link.linkinv(eta), w)

    @property
    def exact_information_slope(self) -> bool:
        """Whether `information_slope` is exact (a canonical link), so gradients using it are exact to rounding."""
        return self.canonical

    def information_slope(self, y, eta: np.ndarray, weights: np.ndarray | None = None,
                          kind: str = "observed") -> np.ndarray | None:
        """d information / d eta = w V'(mu) V(mu) where `_canonical_mean` applies (a canonical link, no clamp at
        work), else None."""
        mu = self._canonical_mean(eta)
        return None if mu is None else _ones_like(weights, eta) * self.variance_deriv(mu) * self.variance(mu)

    def _canonical_mean(self, eta: np.ndarray) -> np.ndarray | None:
        """mu = g^-1(eta) where the link is canonical and no clamp acts (then d mu / d eta = V(mu): the score is
        w (y - mu), the information w V(mu), the kernel linear in eta), else None (the general formulas)."""
        return None

    def _canonical_kernel(self, y, eta, mu, w):
        """`_kernel` at mu = `_canonical_mean(eta)`, written with eta (fewer logarithms)."""
        return self._kernel(y, mu, w)

    @staticmethod
    def _score(y, moments, w):
        mu, d1, v = moments
        return w * (y - mu) * d1 / v

    def expected_information(self, eta: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Fisher information in eta, w mu_eta^2 / V(mu): the IRLS working weights (lme4's Laplace)."""
        _, d1, v = self._moments(eta)
        return _ones_like(weights, eta) * d1**2 / v

    def observed_information(self, y: np.ndarray, eta: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """-d^2 loglik / d eta^2: equals the expected information for a canonical link."""
        return self._information(y, eta, self._moments(eta), _ones_like(weights, y), "observed")

    def information(self, y, eta, weights=None, kind: str = "observed") -> np.ndarray:
        """The observed or the expected information, by name."""
        return self._information(y, eta, self._moments(eta), _ones_like(weights, eta), kind)

    def kernel_score_information(self, y, eta, weights=None, kind: str = "observed") -> tuple:
        """`kernel_at`, `score` and `information` from one evaluation of the link (a PIRLS step needs all three)."""
        y, w = np.asarray(y, float), _ones_like(weights, y)
        mu = self._canonical_mean(eta)
        if mu is not None:
            return self._canonical_kernel(y, eta, mu, w), w * (y - mu), w * self.variance(mu)
        moments = self._moments(eta)
        return self._kernel(y, moments[0], w), self._score(y, moments, w), self._information(y, eta, moments, w, kind)

    def score_and_information(self, y, eta, weights=None, kind: str = "observed") -> tuple[np.ndarray, np.ndarray]:
        """`score` and `information` together, from one evaluation of the link (penalised IRLS needs both)."""
        w, mu = _ones_like(weights, eta), self._canonical_mean(eta)
        if mu is not None:
            return w * (y - mu), w * self.variance(mu)
        moments = self._moments(eta)
        return self._score(y, moments, w), self._information(y, eta, moments, w, kind)

    def _moments(self, eta):
        """mu, d mu / d eta and the variance (dispersion included) at eta."""
        mu = self.link.linkinv(eta)
        return mu, self.link.mu_eta(eta), self.variance(mu) * self._phi()

    def _information(self, y, eta, moments, w, kind: str) -> np.ndarray:
        mu, d1, v = moments
        if kind == "expected" or self.canonical:
            return w * d1**2 / v
        d2, var = self.link.mu_eta2(eta), self.variance(mu)
        dratio = (d2 * var - d1**2 * self.variance_deriv(mu)) / var**2  # d/d eta of mu_eta / V
        return w * (d1**2 / var - (y - mu) * dratio) / self._phi()

    def working(self, y: np.ndarray, eta: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """IRLS working weights and working response z = eta + (y - mu) / mu_eta (a Fisher-scoring step)."""
        mu = self.link.linkinv(eta)
        return self.expected_information(eta, weights), eta + (y - mu) / self.link.mu_eta(eta)

    # ---- data
    def simulate(self, mu: np.ndarray, weights: np.ndarray | None = None, rng=None) -> np.ndarray:
        """One response per row drawn at means mu (binomial: proportions of the `weights` trials)."""
        rng = np.random.default_rng(rng)
        return self._draw(np.asarray(mu, float), _ones_like(weights, mu), rng)

    def check_response(self, y: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Raise a MultilevelError naming the rows whose response is outside the family's support."""

    def start_mu(self, y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Starting means for IRLS (R's mustart): inside the mean space even where y is on its edge."""
        return np.asarray(y, float)


class Gaussian(Family):
    """Normal responses, identity (default) or log link; `dispersion` is the residual SD sigma."""

    def __init__(self, link: str = "identity", sigma: float | None = 1.0):
        super().__init__(_link(link), "gaussian", ("identity", "log"), "identity", sigma)

    def _dispersion_repr(self) -> str:
        return f", sigma={self.dispersion!r}"

    @property
    def has_dispersion(self) -> bool:
        return True

    def with_dispersion(self, value: float) -> Gaussian:
        return Gaussian(self.link.name, float(value))

    def _phi(self) -> float:
        return float(self.dispersion) ** 2

    def variance(self, mu):
        return np.ones_like(np.asarray(mu, float))

    def variance_deriv(self, mu):
        return np.zeros_like(np.asarray(mu, float))

    def log_likelihood(self, y: np.ndarray, mu: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Pointwise log density of y given its mean and each row's SD (shapes broadcast: posterior draws)."""
        return -0.5 * ((y - mu) / scale) ** 2 - np.log(scale) - 0.5 * LOG_2PI

    def draw(self, rng: np.random.Generator, mu: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """One draw of y per mean given each row's SD (the normal noise drawn in mu's shape)."""
        return mu + rng.standard_normal(np.shape(mu)) * scale

    def _kernel(self, y, mu, w):
        return self.log_likelihood(y, mu, float(self.dispersion) / np.sqrt(w))

    def unit_deviance(self, y, mu):
        return (y - mu) ** 2

    def _draw(self, mu, w, rng):
        return self.draw(rng, mu, float(self.dispersion) / np.sqrt(w))


class Binomial(Family):
    """Binomial proportions (0/1 outcomes, or successes out of `weights` trials): logit, probit or cloglog."""

    def __init__(self, link: str = "logit"):
        super().__init__(_link(link), "binomial", ("logit", "probit", "cloglog"), "logit")

    def variance(self, mu):
        return mu * (1 - mu)

    def variance_deriv(self, mu):
        return 1 - 2 * mu

    def clip_mu(self, mu):
        return np.clip(mu, 0.0, 1.0)

    def _kernel(self, y, mu, w):
        k = np.round(w * y)
        return special.xlogy(k, mu) + special.xlog1py(w - k, -mu)

    def _canonical_mean(self, eta):
        if self.link.name != "logit" or np.maximum.reduce(np.abs(eta), axis=None, initial=0.0) > CANONICAL_LOGIT_BOUND:
            return None
        return special.expit(eta)

    def _canonical_kernel(self, y, eta, mu, w):
        return w * np.log(mu) - (w - np.round(w * y)) * eta  # k log mu + (w - k) log(1 - mu), log(1 - mu) = log mu - eta

    def _normaliser(self, y, w):
        k = np.round(w * y)
        return special.gammaln(w + 1) - special.gammaln(k + 1) - special.gammaln(w - k + 1)

    def unit_deviance(self, y, mu):
        return 2 * (special.xlogy(y, y) - special.xlogy(y, mu) + special.xlogy(1 - y, 1 - y) - special.xlog1py(1 - y, -mu))

    def _draw(self, mu, w, rng):
        n = np.round(w).astype(np.int64)
        return rng.binomial(n, mu) / n

    def check_response(self, y, weights=None):
        w = _ones_like(weights, y)
        _refuse(~((y >= 0) & (y <= 1)), y, "a binomial response must be a proportion in [0, 1] (or 0/1, or "
                "cbind(successes, failures))")
        _refuse(np.abs(w - np.round(w)) > INTEGER_TOL, w, "the numbers of trials must be whole numbers")
        k = w * y
        _refuse(np.abs(k - np.round(k)) > INTEGER_TOL * np.maximum(w, 1), k,
                "the numbers of successes (proportion x trials) must be whole numbers")

    def start_mu(self, y, weights=None):
        w = _ones_like(weights, y)
        return (w * y + 0.5) / (w + 1)


class Poisson(Family):
    """Counts with variance equal to the mean, log link; an exposure enters as offset(log(exposure))."""

    def __init__(self, link: str = "log"):
        super().__init__(_link(link), "poisson", ("log", "identity"), "log")

    def variance(self, mu):
        return mu

    def variance_deriv(self, mu):
        return np.ones_like(mu)

    def _kernel(self, y, mu, w):
        return w * (special.xlogy(y, mu) - mu)

    def _canonical_mean(self, eta):
        if self.link.name != "log" or np.minimum.reduce(eta, axis=None, initial=0.0) < CANONICAL_LOG_BOUND:
            return None
        return np.exp(eta)

    def _canonical_kernel(self, y, eta, mu, w):
        return w * (y * eta - mu)

    def _normaliser(self, y, w):
        return -w * special.gammaln(y + 1)

    def unit_deviance(self, y, mu):
        return 2 * (special.xlogy(y, y) - special.xlogy(y, mu) - (y - mu))

    def _draw(self, mu, w, rng):
        return rng.poisson(mu).astype(float)

    def check_response(self, y, weights=None):
        _check_counts(y, "Poisson")

    def start_mu(self, y, weights=None):
        return y + 0.1


LARGE_SIZE = 1e6  # NB sizes above: lgamma(y + t) - lgamma(t) cancels (2e-8 per row at 1e6, 5e-3 at 1e11); lbeta's form


class NegativeBinomial(Family):
    """NB2 counts, Var(y) = mu + mu^2 / theta, log link; theta (the size: lme4/MASS theta, glmmTMB's phi,
    brms's shape; 1/theta is the 'alpha' of Stata and statsmodels) is estimated when None."""

    def __init__(self, theta: float | None = None, link: str = "log"):
        super().__init__(_link(link), "negative_binomial", ("log",), "", theta)

    def _dispersion_repr(self) -> str:
        return f", theta={self.dispersion!r}"

    @property
    def has_dispersion(self) -> bool:
        return True

    def with_dispersion(self, value: float) -> NegativeBinomial:
        return NegativeBinomial(float(value), self.link.name)

    @property
    def theta(self) -> float:
        if self.dispersion is None:
            raise MultilevelError("the negative-binomial size theta is not set: fit the model to estimate it")
        return float(self.dispersion)

    def variance(self, mu):
        return mu + mu**2 / self.theta

    def variance_deriv(self, mu):
        return 1 + 2 * mu / self.theta

    def _kernel(self, y, mu, w):
        t = self.theta  # -t log(1 + mu / t), not t log t - t log(t + mu): those cancel to nothing for a large size
        return w * (special.xlogy(y, mu) - special.xlogy(y, t + mu) - t * np.log1p(mu / t))

    def _normaliser(self, y, w):
        t = self.theta
        if t <= LARGE_SIZE:
            return w * (special.gammaln(y + t) - special.gammaln(t) - special.gammaln(y + 1))
        some = np.where(y > 0, y, 1.0)  # log Gamma(y + t) / Gamma(t) = log Gamma(y) - log B(t, y) (0 at y = 0): lbeta's
        rising = np.where(y > 0, special.gammaln(some) - special.betaln(t, some), 0.0)  # large-t expansion, no cancelling
        return w * (rising - special.gammaln(y + 1))

    @property
    def exact_information_slope(self) -> bool:
        return True

    def information_slope(self, y, eta, weights=None, kind: str = "observed") -> np.ndarray:
        """d information / d eta (log link): the observed t (t + y) mu (t - mu) / (t + mu)^3, the expected
        t^2 mu / (t + mu)^2."""
        t, mu, w = self.theta, np.exp(eta), _ones_like(weights, y)
        if kind == "expected":
            return w * t * t * mu / (t + mu) ** 2
        return w * t * (t + y) * mu * (t - mu) / (t + mu) ** 3

    def loglik_size_partial(self, y, eta, weights=None) -> np.ndarray:
        """d log-likelihood / d log(theta) at fixed eta, per row (log link)."""
        t, mu, w = self.theta, np.exp(eta), _ones_like(weights, y)
        return w * t * (special.digamma(y + t) - special.digamma(t) + np.log(t / (t + mu)) + 1 - (y + t) / (t + mu))

    def size_partials(self, y, eta, weights=None, kind: str = "observed") -> tuple:
        """d / d log(theta) at fixed eta of the log-likelihood, the score t (y - mu) / (t + mu) and the observed
        information t mu (t + y) / (t + mu)^2 (or the expected, t mu / (t + mu)), per row (log link)."""
        t, mu, w = self.theta, np.exp(eta), _ones_like(weights, y)
        tm = t + mu
        score = w * t * (y - mu) * mu / tm**2
        if kind == "expected":
            information = w * t * mu * mu / tm**2
        else:
            information = w * t * mu * (2 * t * mu + y * mu - t * y) / tm**3
        return self.loglik_size_partial(y, eta, weights), score, information

    def unit_deviance(self, y, mu):
        t = self.theta
        return 2 * (special.xlogy(y, y) - special.xlogy(y, mu) - (y + t) * (np.log(y + t) - np.log(mu + t)))

    def _draw(self, mu, w, rng):
        t = self.theta
        return rng.negative_binomial(t, t / (t + mu)).astype(float)

    def check_response(self, y, weights=None):
        _check_counts(y, "negative-binomial")

    def start_mu(self, y, weights=None):
        return y + (y == 0) / 6.0


# ---------------------------------------------------------------------- helpers
def _link(name: str) -> Link:
    if isinstance(name, Link):
        return name
    if name not in ("identity", "log", "logit", "probit", "cloglog"):
        raise MultilevelError(f"unknown link {name!r}: use 'logit', 'probit', 'cloglog', 'log' or 'identity'")
    return Link(name)


def _ones_like(weights, y) -> np.ndarray:
    return np.ones(np.shape(y)) if weights is None else np.asarray(weights, float)


def _refuse(bad: np.ndarray, values: np.ndarray, message: str) -> None:
    """Raise naming the first offending rows (1-based) and their values."""
    if np.any(bad):
        rows = np.flatnonzero(bad)
        shown = ", ".join(f"row {i + 1}: {values[i]:g}" for i in rows[:5])
        more = f" and {rows.size - 5} more" if rows.size > 5 else ""
        raise MultilevelError(f"{message}; {rows.size} row(s) are not ({shown}{more})")


def _check_counts(y: np.ndarray, what: str) -> None:
    _refuse(y < 0, y, f"a {what} response must be a count (0, 1, 2, ...): negative values found")
    _refuse(np.abs(y - np.round(y)) > INTEGER_TOL, y, f"a {what} response must be a count: non-integer values found")


GAUSSIAN = Gaussian()
_FAMILIES = {
    "gaussian": Gaussian,
    "normal": Gaussian,
    "binomial": Binomial,
    "bernoulli": Binomial,
    "poisson": Poisson,
    "negbinomial": NegativeBinomial,
    "negative.binomial": NegativeBinomial,
    "negative_binomial": NegativeBinomial,
    "nbinom2": NegativeBinomial,
}
_SPEC_RE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(?:\(\s*(?:link\s*=\s*)?[\"']?(\w*)[\"']?\s*\))?\s*$")


def parse(spec) -> Family:
    """A family from an object or an R-style string: 'binomial', 'binomial(probit)',
    'binomial(link = "cloglog")', 'poisson', 'negbinomial' (also 'nbinom2', 'negative.binomial'), 'gaussian'."""
    if spec is None:
        return Gaussian()
    if isinstance(spec, Family):
        return spec
    if isinstance(spec, type) and issubclass(spec, Family):
        return spec()
    match = _SPEC_RE.match(spec) if isinstance(spec, str) else None
    if match is None or match.group(1).lower() not in _FAMILIES:
        raise MultilevelError(
            f"unknown family {spec!r}: use 'gaussian', 'binomial', 'binomial(probit)', 'binomial(cloglog)', "
            "'poisson', 'negbinomial', or a family object such as mlv.families.Binomial(link='probit')"
        )
    cls = _FAMILIES[match.group(1).lower()]
    return cls(link=match.group(2)) if match.group(2) else cls()
