"""Simulation-based calibration (Talts et al. 2018), shared by the SBC tests: the rank of each true value among a
posterior's thinned draws, and a chi-square test that those ranks are uniform."""

from __future__ import annotations

import numpy as np
from scipy import stats

KEPT = 99  # thinned draws per replicate: ranks 0..99, equally likely in 2, 4, 5, 10, 20, 25 or 50 bins


def ranks_of_truth(draws: dict, truth: dict, parameters: list[str]) -> list[int]:
    """Per parameter, how many of KEPT evenly thinned draws of chain 0 fall below the true value."""
    thin = draws[parameters[0]].shape[1] // KEPT
    return [int(np.sum(draws[p][0, thin - 1 :: thin][:KEPT] < truth[p])) for p in parameters]


def uniformity_pvalues(ranks: np.ndarray, parameters: list[str], bins: int) -> dict[str, float]:
    """Chi-square test of uniform ranks (0..KEPT) in `bins` equally likely bins, per parameter (a column of ranks)."""
    width = (KEPT + 1) // bins
    return {p: stats.chisquare(np.bincount(ranks[:, j] // width, minlength=bins)).pvalue for j, p in enumerate(parameters)}
