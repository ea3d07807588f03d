"""MacKenzie & Bailey (2004) goodness of fit of an occupancy model: Pearson's chi-square of the observed against
the expected numbers of sites with each detection history, within cohorts of sites surveyed on the same visits,
calibrated by a parametric bootstrap (simulate from the fit, refit, recompute)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy.special import expit

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
    rng = np.random.default_rng(seed)
    observed = chi_square(fit)
    psi, p, site = fit.psi.to_numpy(), fit.p["p"].to_numpy(), fit.model.survey_sites
    sims = np.empty(n_sim)
    for i in range(n_sim):
        z = rng.random(len(psi)) < psi
        y = (rng.random(len(p)) < p) & z[site]
        sims[i] = chi_square(fit.model.with_response(y.astype(float)).fit())
    return pd.Series({"chisq": observed, "p_value": float(np.mean(sims >= observed)), "c_hat": observed / sims.mean(),
                      "n_sim": n_sim})
