"""`compare({...})`: one table for several fits of the same data.

Bayesian fits: PSIS-LOO by ArviZ (`arviz_stats.compare`): elpd, its difference from the best model with
the SE of that difference, p_loo and stacking weights, plus WAIC and DIC beside it. Frequentist fits:
npar, AIC, BIC, logLik, deviance and the likelihood-ratio test of each model against the next simpler
one (REML fits refitted by ML first, as lme4's anova).

>>> import multilevel as mlv
>>> df = mlv.datasets.load("sleepstudy")
>>> fits = {"intercepts": mlv.Model("Reaction ~ Days + (1 | Subject)", df).fit(),
...         "slopes": mlv.Model("Reaction ~ Days + (Days | Subject)", df).fit()}
>>> compare(fits).round(1)[["npar", "AIC", "Chisq", "Df"]]
            npar     AIC  Chisq   Df
intercepts     4  1802.1    NaN  NaN
slopes         6  1763.9   42.1  2.0
"""

from __future__ import annotations

import pandas as pd

from .anova import anova, check_same_data
from .errors import MultilevelError
from .information import loo, pointwise_log_likelihood, posterior_dic, waic
from .kinds import is_bayesian


def compare(fits: dict, kind: str = "conditional") -> pd.DataFrame:
    """Compare several Bayesian fits (LOO/WAIC/DIC) or several frequentist fits (AIC/BIC/LRT), given by name.

    For Bayesian fits ``kind="marginal"`` scores each group with its effects integrated out (predicting new
    groups) instead of each observation given its group's effects (as brms).
    """
    if not isinstance(fits, dict) or len(fits) < 2:
        raise MultilevelError("compare takes a dict of two or more fits, e.g. compare({'small': fit1, 'big': fit2})")
    names, values = list(fits), list(fits.values())
    bayes = [is_bayesian(f) for f in values]
    if all(bayes):
        return _compare_bayes(names, values, kind)
    if any(bayes):
        raise MultilevelError(
            "compare got both Bayesian and frequentist fits: their criteria are not on one scale; compare "
            "Bayesian fits with each other (LOO) and frequentist fits with each other (AIC/LRT)"
        )
    return anova(*values, names=names)


def _compare_bayes(names: list[str], posts: list, kind: str) -> pd.DataFrame:
    """ArviZ's LOO comparison table, with WAIC and DIC columns joined on the model names."""
    import arviz_stats

    check_same_data(posts, names)
    results, extra = {}, {}
    for name, post in zip(names, posts):
        ll = pointwise_log_likelihood(post, kind)
        results[name] = loo(post, kind, ll)
        w = waic(ll)
        extra[name] = {"elpd_waic": w["elpd_waic"], "p_waic": w["p_waic"]}
        if kind == "conditional":  # DIC plugs in the group effects: defined for the conditional likelihood only
            d = posterior_dic(post, ll)
            extra[name].update(dic=d["dic"], p_d=d["p_d"], p_v=d["p_v"])
    return arviz_stats.compare(results).join(pd.DataFrame(extra).T)
