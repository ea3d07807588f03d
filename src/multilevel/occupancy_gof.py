"""MacKenzie & Bailey (2004) goodness of fit of an occupancy model: Pearson's chi-square of the observed against
the expected numbers of sites with each detection history, within cohorts of sites surveyed on the same visits,
calibrated by a parametric bootstrap (simulate from the fit, refit, recompute)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy.special import expit

from .arguments import check_count, check_seed
from .errors import MultilevelError


def history_table(fit) -> pd.DataFrame:
    """Per cohort (visits made) and detection history: the observed and expected numbers of sites."""
    a = fit.model.arrays
    psi = fit.psi.to_numpy()
    p = expit(a.V @ fit.alpha)
    rows = []
    patterns, cohort = np.unique(a.mask.astype(bool), axis=0, return_inverse=True)
    for c, visits in enumerate(patterns):
        sites = np.flatnonzero(cohort.ravel() == c)
        pc, yc = p[np.ix_(sites, visits)], a.Y[np.ix_(sites, visits)]
        for h in itertools.product((0, 1), repeat=int(visits.sum())):
            h = np.array(h)
            prob = psi[sites] * np.prod(np.where(h == 1, pc, 1 - pc), axis=1) + (1 - psi[sites]) * (h.sum() == 0)
            rows.append({"cohort": "".join("x" if v else "." for v in visits), "history": "".join(map(str, h)),
                         "observed": int(np.sum(np.all(yc == h, axis=1))), "expected": float(prob.sum())})
    return pd.DataFrame(rows)


def chi_square(fit) -> float:
    """The MacKenzie-Bailey statistic: sum over cohorts and histories of (observed - expected)^2 / expected."""
    t = history_table(fit)
    return float(np.sum((t["observed"] - t["expected"]) ** 2 / t["expected"]))


def mackenzie_bailey(fit, n_sim: int = 100, seed: int = 1) -> pd.Series:
    """The statistic, its parametric-bootstrap p-value (share of simulated statistics at least as large) and
    c-hat (observed over the mean simulated statistic; above 1 means overdispersion)."""
    if fit.model.random is not None:
        raise MultilevelError("the MacKenzie-Bailey test is implemented for models without random effects")
    n_sim = check_count(n_sim, "n_sim")
    rng = np.random.default_rng(check_seed(seed))
    observed = chi_square(fit)
    psi, p, site = fit.psi.to_numpy(), fit.p["p"].to_numpy(), fit.model.survey_sites
    sims = np.empty(n_sim)
    for i in range(n_sim):
        z = rng.random(len(psi)) < psi
        y = (rng.random(len(p)) < p) & z[site]
        sims[i] = chi_square(fit.model.with_response(y.astype(float)).fit())
    return pd.Series({"chisq": observed, "p_value": float(np.mean(sims >= observed)), "c_hat": observed / sims.mean(),
                      "n_sim": n_sim})


def posterior_predictive_check(post, statistic: str = "freeman-tukey", seed: int = 1) -> pd.Series:
    """Bayesian p-value of a fit statistic on detections summed by site (spOccupancy's `ppcOcc(group = 1)`): per
    draw, the statistic of the data and of data replicated from (z, p) against the expected z sum_j p_ij; the
    p-value is the share of draws where the replicate's is larger (near 0 or 1: lack of fit)."""
    if statistic not in ("freeman-tukey", "chi-squared"):
        raise MultilevelError(f"statistic must be 'freeman-tukey' or 'chi-squared', not {statistic!r}")
    seed = check_seed(seed)
    model, draws = post.columns
    a = model.arrays
    eta = np.einsum("sjk,cdk->cdsj", a.V, draws[..., a.X.shape[1]:])
    if post.b is not None and post.model.random[1].part == "p":
        eta = eta + post.b[..., post.model.random[1].codes][..., None]
    p = expit(eta) * a.mask
    expected = post.z * p.sum(axis=-1)
    replicate = ((np.random.default_rng(seed).random(p.shape) < p) * post.z[..., None]).sum(axis=-1)
    observed = (a.Y * a.mask).sum(axis=-1)

    def stat(y):
        if statistic == "freeman-tukey":
            return np.sum((np.sqrt(y) - np.sqrt(expected)) ** 2, axis=-1)
        return np.sum((y - expected) ** 2 / (expected + 1e-6), axis=-1)  # spOccupancy's e = 1e-6 guard

    fit_y, fit_rep = stat(observed), stat(replicate)
    return pd.Series({"statistic": statistic, "p_value": float(np.mean(fit_rep > fit_y)), "mean_observed": float(fit_y.mean()),
                      "mean_replicated": float(fit_rep.mean())})
