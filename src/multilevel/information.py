"""Information criteria not in ArviZ 1.x: WAIC (Watanabe 2010)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import logsumexp


def waic(log_lik: np.ndarray) -> pd.Series:
    """elpd_waic = sum(lppd_i - p_i), p_i the posterior variance of log p(y_i | draw); with SEs."""
    ll = log_lik.reshape(-1, log_lik.shape[-1])
    lppd = logsumexp(ll, axis=0) - np.log(ll.shape[0])
    p_i = ll.var(axis=0, ddof=1)
    elpd_i = lppd - p_i
    n = elpd_i.size
    return pd.Series(
        {
            "elpd_waic": elpd_i.sum(),
            "se": np.sqrt(n * elpd_i.var(ddof=1)),
            "p_waic": p_i.sum(),
            "p_waic_se": np.sqrt(n * p_i.var(ddof=1)),
            "waic": -2 * elpd_i.sum(),
            "n_p_waic_over_0.4": int(np.sum(p_i > 0.4)),
        }
    )
