"""The two kinds of result, as types to dispatch on: checks, comparisons and plots ask `isinstance(result,
Frequentist)` instead of sniffing attributes, and never import a concrete result class."""

from __future__ import annotations


class Frequentist:
    """A maximum-likelihood (ML/REML, penalised) fit: point estimates, `beta`, `covariances`, `sigma`."""


class Generalized(Frequentist):
    """A GLMM fit by maximum likelihood (Laplace or quadrature): no residual sigma, no REML, no prior."""


class Bayesian:
    """Posterior draws: `beta` (chains, draws, p), `sd`, `corr`, `sigma`, `b` per term."""


def is_bayesian(result) -> bool:
    return isinstance(result, Bayesian)
