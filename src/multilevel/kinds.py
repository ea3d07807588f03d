"""The two kinds of result, as types to dispatch on: checks, comparisons and plots ask `isinstance(result,
Frequentist)` instead of sniffing attributes, and never import a concrete result class."""

from __future__ import annotations

import numpy as np

from .errors import MultilevelError


class OfModel:
    """A result of a `Model`, which holds the design: its design and number of observations."""

    @property
    def design(self):
        return self.model.design

    @property
    def nobs(self) -> int:
        return self.design.nobs


class Criteria:
    """A fit's convergence (its optimiser's `info`) and AIC/BIC from its `loglik`, `n_params` and `n_independent`."""

    @property
    def converged(self) -> bool:
        return self.info.converged

    @property
    def n_independent(self) -> int:
        """The independent units BIC's log(n) counts: the rows (an occupancy fit's sites, whose rows are not)."""
        return self.nobs

    @property
    def aic(self) -> float:
        return -2 * self.loglik + 2 * self.n_params

    @property
    def bic(self) -> float:
        return -2 * self.loglik + np.log(self.n_independent) * self.n_params


class Frequentist:
    """A maximum-likelihood (ML/REML, penalised) fit: point estimates, `beta`, `covariances`, `sigma`."""


class Generalized(Frequentist):
    """A GLMM fit by maximum likelihood (Laplace or quadrature): no residual sigma, no REML, no prior."""


class Bayesian:
    """Posterior draws: `beta` (chains, draws, p), `sd`, `corr`, `sigma`, `b` per term. `finished` is None for a
    full run; after Ctrl-C, the draws each chain had finished."""

    finished: list[int] | None = None

    @property
    def partial(self) -> bool:
        """True when sampling was interrupted (Ctrl-C) and these are the draws finished by then."""
        return self.finished is not None


def is_bayesian(result) -> bool:
    return isinstance(result, Bayesian)


class OccupancyResult:
    """An occupancy model's result (ML fit or posterior), besides its kind: psi and p from two formulas."""


class Study:
    """A repeated-sampling study: per method and parameter, scores against a known truth."""


def require_result(value, argument: str) -> None:
    """Refuse anything but a fit, a posterior or a study where one is expected, naming the argument."""
    if not isinstance(value, (Frequentist, Bayesian, Study)):
        raise MultilevelError(
            f"{argument} must be a result of model.fit() or model.sample() (or mlv.load), not {type(value).__name__}"
        )
