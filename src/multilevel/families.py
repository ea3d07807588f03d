"""Response families: what the model assumes about y given the linear predictor, held in one object so that
the formula, design, cross-products and engine never assume it (the "family seam").

A family gives the pointwise log-likelihood and simulation of new responses (and, for the generalized models,
its link, variance function and what iteratively reweighted least squares needs). The Gaussian family with
the identity link is the special case where one weighted least-squares step is exact, which is why the
linear mixed model profiles its likelihood in closed form; every Gaussian formula outside the engine's
criterion goes through this object.

>>> import numpy as np
>>> g = Gaussian()
>>> float(g.log_likelihood(np.array([1.0]), np.array([0.0]), np.array([1.0]))[0])  # log N(1 | 0, 1)
-1.4189385332046727
"""

from __future__ import annotations

import numpy as np

from .errors import MultilevelError

LOG_2PI = float(np.log(2 * np.pi))


class Family:
    """A response distribution with a link; subclasses give the formulas."""

    name = "family"
    link = "identity"

    def log_likelihood(self, y: np.ndarray, mu: np.ndarray, scale: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def simulate(self, rng: np.random.Generator, mu: np.ndarray, scale: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{self.name}({self.link})"


class Gaussian(Family):
    """Normal responses, identity link: y ~ N(mu, scale^2), scale = sigma / sqrt(weight) per row."""

    name = "gaussian"

    def log_likelihood(self, y: np.ndarray, mu: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Pointwise log density of y given its mean and SD."""
        return -0.5 * ((y - mu) / scale) ** 2 - np.log(scale) - 0.5 * LOG_2PI

    def simulate(self, rng: np.random.Generator, mu: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """One draw of y per mean (the normal noise drawn in mu's shape)."""
        return mu + rng.standard_normal(np.shape(mu)) * scale


GAUSSIAN = Gaussian()


def family_of(family) -> Family:
    """A family object from a name or an object; only the Gaussian family is fitted so far."""
    if family is None or isinstance(family, Gaussian) or (isinstance(family, str) and family.strip().lower() == "gaussian"):
        return GAUSSIAN
    raise MultilevelError(
        f"family {family!r} is not available: multilevel fits Gaussian (linear) mixed models; binomial, Poisson "
        "and negative-binomial models are not supported yet (docs/limitations.md)"
    )
