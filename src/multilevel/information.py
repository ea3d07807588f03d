"""Information criteria: WAIC (Watanabe 2010) and DIC (not in ArviZ 1.x), PSIS-LOO through ArviZ, and the
pointwise log-likelihood they read: conditional on the group effects (as brms) or group-marginal."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import logsumexp

from .components import covariance
from .errors import MultilevelError, MultilevelWarning
from .families import LOG_2PI
from .partitioned import refuse_rows
from .predict import predictor, residual_sd


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


def dic(log_lik: np.ndarray, log_lik_at_mean: np.ndarray) -> pd.Series:
    """DIC (Spiegelhalter et al. 2002) with p_D = mean deviance - deviance at the posterior mean, and Gelman's
    p_V = var(deviance) / 2; `log_lik` is pointwise per draw (..., nobs), `log_lik_at_mean` (nobs,)."""
    deviance = -2 * log_lik.reshape(-1, log_lik.shape[-1]).sum(axis=1)
    at_mean = -2 * float(np.sum(log_lik_at_mean))
    p_d = deviance.mean() - at_mean
    p_v = deviance.var(ddof=1) / 2
    return pd.Series(
        {
            "dic": at_mean + 2 * p_d,
            "p_d": p_d,
            "dic_v": deviance.mean() + p_v,
            "p_v": p_v,
            "mean_deviance": deviance.mean(),
            "deviance_at_mean": at_mean,
        }
    )


def group_marginal_log_likelihood(post) -> np.ndarray:
    """log p(y_g | beta, Sigma, sigma) per draw and group, the group effects integrated out: (chains, draws, m).

    The unit of prediction for a new group (leave-one-group-out). Needs one grouping factor: with several
    (crossed) the groups' likelihoods do not factor. Woodbury: V = R + Z Sigma Z' with Sigma = L L', so
    log det V = log det R + log det M and e'V^-1 e = e'R^-1 e - c'M^-1 c, M = I + L'Z'R^-1 Z L, c = L'Z'R^-1 e.
    """
    design = post.design
    groups = {b.group for b in design.blocks}
    if len(groups) != 1:
        raise MultilevelError(
            f"the group-marginal likelihood needs a single grouping factor; this model has {sorted(groups)}: "
            "use the conditional log-likelihood (as brms) instead"
        )
    codes, m = design.blocks[0].codes, design.blocks[0].m
    Z = np.column_stack([b.Z for b in design.blocks])
    K = Z.shape[1]
    G = sp.csr_matrix((np.ones(design.nobs), (codes, np.arange(design.nobs))), shape=(m, design.nobs))
    n_g = np.bincount(codes, minlength=m)
    rows, cols = np.tril_indices(K)
    ZZ = Z[:, rows] * Z[:, cols]
    fixed = post.predict(include_groups=False, summary=False)  # X beta + offset, of the held columns
    sd_res = post.residual_sd().reshape(-1, design.nobs)
    Ls = _stacked_factors(post)
    out = np.empty((fixed.shape[0], m))
    for d in range(fixed.shape[0]):
        r_inv = 1.0 / sd_res[d] ** 2
        e = design.y - fixed[d]
        sums = G @ np.column_stack([ZZ * r_inv[:, None], Z * (e * r_inv)[:, None], e * e * r_inv, np.log(sd_res[d] ** 2)])
        S = np.zeros((m, K, K))
        S[:, rows, cols] = sums[:, : len(rows)]
        S[:, cols, rows] = sums[:, : len(rows)]
        L = Ls[d]
        M = np.eye(K) + L.T @ S @ L
        c = sums[:, len(rows) : len(rows) + K] @ L
        chol = np.linalg.cholesky(M)
        w = np.linalg.solve(chol, c[:, :, None])[:, :, 0]
        logdet = 2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1) + sums[:, -1]
        quad = sums[:, -2] - np.sum(w * w, axis=1)
        out[d] = -0.5 * (n_g * LOG_2PI + logdet + quad)
    return out.reshape(post.beta.shape[:2] + (m,))


def _stacked_factors(post) -> np.ndarray:
    """Per draw, the block-diagonal Cholesky factor L of the group effects' covariance (all terms): (D, K, K)."""
    parts = []
    for sd, corr in zip(post.sd, post.corr):
        k = sd.shape[-1]
        cov = covariance(sd, corr).reshape(-1, k, k)
        w, V = np.linalg.eigh(cov)  # a square root that tolerates a singular covariance
        parts.append(V * np.sqrt(np.clip(w, 0, None))[:, None, :])
    K = sum(p.shape[-1] for p in parts)
    out = np.zeros((parts[0].shape[0], K, K))
    start = 0
    for p in parts:
        k = p.shape[-1]
        out[:, start : start + k, start : start + k] = p
        start += k
    return out


def pointwise_log_likelihood(post, kind: str = "conditional") -> np.ndarray:
    """Per draw, the log-likelihood of each observation given the group effects (``"conditional"``, as brms)
    or of each group with its effects integrated out (``"marginal"``, right for predicting new groups)."""
    refuse_rows(post.design, "LOO/WAIC (the log-likelihood of every row for every draw)")
    if kind == "conditional":
        return post.log_likelihood()
    if kind == "marginal":
        return group_marginal_log_likelihood(post)
    raise MultilevelError(f"kind must be 'conditional' or 'marginal', not {kind!r}")


def loo(post, kind: str = "conditional", log_lik: np.ndarray | None = None):
    """PSIS-LOO by ArviZ (with its Pareto-k diagnostics) on the conditional or group-marginal log-likelihood
    (`log_lik`, if already computed)."""
    import arviz_base
    import arviz_stats

    ll = pointwise_log_likelihood(post, kind) if log_lik is None else log_lik
    tree = arviz_base.from_dict(
        {"posterior": post.parameters(), "log_likelihood": {"y": ll}, "observed_data": {"y": np.zeros(ll.shape[-1])}},
        dims={"y": ["unit"]},
    )
    try:
        result = arviz_stats.loo(tree)
    except ValueError as exc:  # too few draws for Pareto smoothing's tail ('n_draws_tail must be at least 5')
        raise MultilevelError(f"PSIS-LOO cannot smooth the importance ratios of {ll.shape[0] * ll.shape[1]} draws "
                              f"(ArviZ: {exc}): sample more draws (a few hundred at least) and call loo() again") from None
    k = np.asarray(result.pareto_k).ravel()
    bad = int(np.sum(k > result.good_k))
    if bad:
        warnings.warn(
            f"{bad} of {k.size} Pareto k values exceed the reliability threshold: PSIS-LOO is unreliable for those "
            "units (influential observations); use K-fold cross-validation or the marginal (group) version",
            MultilevelWarning,
            stacklevel=2,
        )
    return result


def posterior_dic(post, log_lik: np.ndarray | None = None) -> pd.Series:
    """DIC of a Bayesian fit from the conditional log-likelihood (`log_lik`, if already computed), plugging in
    the posterior means of beta, b and sigma."""
    refuse_rows(post.design, "DIC (the log-likelihood of every row for every draw)")
    beta = post.beta if post.held is None else post.held_beta
    b = [x.reshape(-1, *x.shape[2:]).mean(axis=0) for x in post.b]
    mu = predictor(post.design, beta.reshape(-1, beta.shape[-1]).mean(axis=0), b, post.held)
    sd = residual_sd(post.design, None if post.sigma is None else float(post.sigma.mean()))
    at_mean = post.model.family.log_likelihood(post.design.y, mu, sd)
    return dic(post.log_likelihood() if log_lik is None else log_lik, at_mean)
