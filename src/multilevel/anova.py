"""Likelihood-ratio tests between nested mixed models, as lme4's ``anova(fit_small, fit_big)``.

GLMM fits (Laplace or quadrature, absolute scale) are compared as they are; REML fits are refitted by ML first
(REML likelihoods of models with different fixed effects are not comparable), the models are ordered by their number of parameters, and each is tested against the one
before it: Chisq = the drop in deviance, Df = the extra parameters, p from the chi-square distribution.

>>> import multilevel as mlv
>>> from multilevel.anova import anova  # also mlv.anova
>>> df = mlv.datasets.load("sleepstudy")
>>> small = mlv.Model("Reaction ~ Days + (1 | Subject)", df).fit()
>>> big = mlv.Model("Reaction ~ Days + (Days | Subject)", df).fit()
>>> anova(small, big).round(2)[["npar", "deviance", "Chisq", "Df"]]
        npar  deviance  Chisq   Df
model1     4   1794.08    NaN  NaN
model2     6   1751.94  42.14  2.0
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .errors import MultilevelError
from .kinds import Generalized
from .partitioned import response_values


def anova(*fits, names: list[str] | None = None) -> pd.DataFrame:
    """Likelihood-ratio test table (npar, AIC, BIC, logLik, deviance, Chisq, Df, p_value) of nested fits."""
    if len(fits) < 2:
        raise MultilevelError("anova compares two or more fits: pass e.g. anova(fit_small, fit_big)")
    names = list(names) if names is not None else [f"model{i + 1}" for i in range(len(fits))]
    if len(names) != len(fits):
        raise MultilevelError(f"got {len(names)} names for {len(fits)} fits: give one name per fit")
    check_same_data(fits, names)
    ml = [ml_fit(f, name) for f, name in zip(fits, names)]
    order = sorted(range(len(ml)), key=lambda i: ml[i].n_params)  # stable, as lme4
    table = pd.DataFrame(
        {
            "npar": [ml[i].n_params for i in order],
            "AIC": [ml[i].aic for i in order],
            "BIC": [ml[i].bic for i in order],
            "logLik": [ml[i].loglik for i in order],
            "deviance": [ml[i].objective for i in order],
        },
        index=[names[i] for i in order],
    )
    chisq = -np.diff(table["deviance"].to_numpy())
    df = np.diff(table["npar"].to_numpy()).astype(float)
    with np.errstate(invalid="ignore"):
        p = np.where(df > 0, stats.chi2.sf(chisq, np.where(df > 0, df, 1)), np.nan)
    table["Chisq"] = np.concatenate([[np.nan], chisq])
    table["Df"] = np.concatenate([[np.nan], df])
    table["p_value"] = np.concatenate([[np.nan], p])
    return table


def check_same_data(fits, names: list[str]) -> None:
    """Refuse fits to different rows: their likelihoods are not comparable (partitioned data: the same count and
    response sketch, `partitioned.response_values`)."""
    first = fits[0].design
    for fit, name in zip(fits[1:], names[1:]):
        d = fit.design
        if d.nobs != first.nobs or not np.array_equal(response_values(d), response_values(first)):
            raise MultilevelError(
                f"'{name}' was fitted to different data than '{names[0]}' ({d.nobs} vs {first.nobs} rows, or a "
                "different response): likelihood-ratio tests need the same rows. Drop missing values from the "
                "data before building both models."
            )


def ml_fit(fit, name: str):
    """The fit itself if ML (every GLMM fit), else its ML refit (as lme4: 'refitting model(s) with ML')."""
    if isinstance(fit, Generalized):
        return fit
    if fit.prior:
        raise MultilevelError(
            f"'{name}' is a penalised (zero-avoiding) fit: a likelihood-ratio test needs plain ML fits; "
            "refit with model.fit(method='ML')"
        )
    if not fit.reml:
        return fit
    return fit.model.fit(method="ML", warn=False)  # the user has seen this model's warnings already
