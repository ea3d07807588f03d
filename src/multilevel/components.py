"""Variance components as values: covariances from SDs and correlations, lme4's VarCorr table, the boundary
tolerance shared by singular-fit detection and the methods table, and the parameters on the boundary in words."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .engine import tri_index

SINGULAR_TOL = 1e-4  # lme4's isSingular tolerance on a relative factor's diagonal (and on SD / sigma)


def covariance(sd: np.ndarray, corr: np.ndarray) -> np.ndarray:
    """Covariance matrices (..., k, k) from SDs (..., k) and correlations (..., k, k)."""
    return sd[..., :, None] * corr * sd[..., None, :]


def variance_table(blocks, covariances: list[np.ndarray], sigma: float | None) -> pd.DataFrame:
    """lme4's VarCorr as a table: a row per variance, one per covariance (term2 set), then Residual."""
    rows = []
    for block, cov in zip(blocks, covariances):
        names = block.coef_names
        sds = np.sqrt(np.diag(cov))
        for a, name in enumerate(names):
            rows.append((block.group, name, "", cov[a, a], sds[a], np.nan))
        for a, b in tri_index(len(names)):
            if a != b:
                corr = cov[a, b] / (sds[a] * sds[b]) if sds[a] > 0 and sds[b] > 0 else np.nan
                rows.append((block.group, names[b], names[a], cov[a, b], np.nan, corr))
    if sigma is not None:
        rows.append(("Residual", "", "", sigma**2, sigma, np.nan))
    return pd.DataFrame(rows, columns=["group", "term", "term2", "variance", "sd", "corr"])


def boundary_parameters(blocks, factors: list[np.ndarray]) -> list[str]:
    """Each zero diagonal of a relative factor, in words: a variance of 0 or a perfect correlation."""
    out = []
    for block, T in zip(blocks, factors):
        for i, name in enumerate(block.coef_names):
            if T[i, i] >= SINGULAR_TOL:
                continue
            if np.all(np.abs(T[i, :i]) < SINGULAR_TOL):
                out.append(f"the variance of '{name}' between levels of '{block.group}' is estimated as 0")
            else:
                out.append(
                    f"'{name}' by '{block.group}' is perfectly correlated with the terms before it "
                    "(a correlation of +/-1)"
                )
    return out
