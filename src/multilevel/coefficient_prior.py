"""Normal priors on the fixed-effect coefficients as an augmentation of the engine's [X y]'[X y] block.

Part of the engine stage: it knows arrays only. Building one from the Bayesian priors is `priors.coefficient_prior`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CoefficientPrior:
    """Independent normal priors beta_j ~ N(mean_j, 1 / precision_j) on the columns of X (precision 0: flat).

    On the relative scale of the penalised least-squares system (every term divided by sigma^2) prior j
    adds sigma^2 precision_j (beta_j - mean_j)^2 to the penalised residual. The engine's factor and the
    collapsed JAX density both add it through `augmentation`, so the samplers share one definition.
    """

    precision: np.ndarray
    mean: np.ndarray

    def augmentation(self, sigma2, xp=np):
        """The (p + 1) x (p + 1) addition to the [X y]'[X y] block at sigma^2 (numpy or JAX): sigma^2 P on X'X,
        sigma^2 P mean on X'y and sigma^2 mean'P mean on y'y, which keeps the augmented system positive definite."""
        w = sigma2 * self.precision
        shift = w * self.mean
        return xp.block([[xp.diag(w), shift[:, None]], [shift[None, :], xp.reshape(shift @ self.mean, (1, 1))]])
