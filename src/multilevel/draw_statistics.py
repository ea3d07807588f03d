"""Statistics of sampler draws in NumPy alone: rank-normalised split R-hat, bulk and tail effective sample sizes
(ArviZ's definitions, Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021) and the Pareto k of importance ratios
(Zhang & Stephens 2009 with the weak prior of Vehtari, Simpson, Gelman, Yao & Gabry 2024).

ArviZ computes the same numbers (tests/test_draw_statistics.py holds ours to them), but importing `arviz_stats`
costs 0.45 CPU s (0.22 s of it matplotlib, imported by `arviz_base`'s settings), more than a whole independence
sampler run on cbpp: every `sample()` reports R-hat and ESS, so they are computed here (docs/bayes.md, "Speed").
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

MIN_DRAWS = 4  # fewer draws per chain: no estimate (NaN), as ArviZ


def rhat_rank(draws: np.ndarray) -> float:
    """Rank-normalised split R-hat of (chains, draws): the larger of the bulk's and the folded draws' (NaN for one
    chain, fewer than MIN_DRAWS draws or any NaN)."""
    if draws.shape[0] < 2 or _invalid(draws):
        return np.nan
    split = _split(draws)
    return max(_rhat(_z_scale(split)), _rhat(_z_scale(np.abs(split - np.median(split)))))


def ess_bulk(draws: np.ndarray) -> float:
    """Bulk effective sample size of (chains, draws): of the rank-normalised split chains."""
    return np.nan if _invalid(draws) else _ess(_z_scale(_split(draws)))


def ess_tail(draws: np.ndarray, prob: float = 0.05) -> float:
    """Tail effective sample size: the smaller of the ESS of the indicators of the prob and 1 - prob quantiles."""
    if _invalid(draws):
        return np.nan
    return min(_ess(_split(draws <= np.quantile(draws, p))) for p in sorted((prob, 1 - prob)))


def _invalid(draws: np.ndarray) -> bool:
    return draws.shape[1] < MIN_DRAWS or bool(np.isnan(draws).any())


def _split(draws: np.ndarray) -> np.ndarray:
    """Each chain's first and last halves as chains of their own."""
    half = draws.shape[1] // 2
    return np.vstack([draws[:, :half], draws[:, draws.shape[1] - half :]])


def _z_scale(draws: np.ndarray) -> np.ndarray:
    """Normal scores of the pooled ranks (Blom's offset 3/8)."""
    ranks = stats.rankdata(draws, method="average").reshape(draws.shape)
    return special.ndtri((ranks - 0.375) / (draws.size + 0.25))


def _rhat(chains: np.ndarray) -> float:
    n = chains.shape[1]
    between = n * np.var(chains.mean(axis=1), ddof=1)
    within = np.mean(np.var(chains, axis=1, ddof=1))
    return float(np.sqrt((between / within + n - 1) / n))


def _autocovariance(chains: np.ndarray) -> np.ndarray:
    """Each chain's autocovariance at every lag (biased, divided by n), by FFT."""
    n = chains.shape[1]
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(chains - chains.mean(axis=1, keepdims=True), n=size, axis=1)
    return np.fft.irfft(f * np.conjugate(f), n=size, axis=1)[:, :n] / n


def _ess(chains: np.ndarray) -> float:
    """Effective sample size of (chains, draws) by Geyer's initial positive, then monotone, sequence of the
    autocorrelations pooled over chains."""
    chains = np.asarray(chains, dtype=float)
    m, n = chains.shape
    if np.max(chains) - np.min(chains) < np.finfo(float).resolution:
        return float(chains.size)
    acov = _autocovariance(chains).mean(axis=0)
    mean_var = acov[0] * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n + (np.var(chains.mean(axis=1), ddof=1) if m > 1 else 0.0)
    rho = 1.0 - (mean_var - acov) / var_plus
    rho[0] = 1.0
    kept = np.zeros(n)
    kept[:2] = rho[:2]
    even, odd, t = 1.0, rho[1], 1
    while t < n - 3 and even + odd > 0.0:
        even, odd = rho[t + 1], rho[t + 2]
        if even + odd >= 0:
            kept[t + 1], kept[t + 2] = even, odd
        t += 2
    last = t - 2
    if even > 0:
        kept[last + 1] = even
    for t in range(1, last - 1, 2):  # monotone: no pair of lags above the pair before it
        if kept[t + 1] + kept[t + 2] > kept[t - 1] + kept[t]:
            kept[t + 1] = kept[t + 2] = (kept[t - 1] + kept[t]) / 2.0
    tau = -1.0 + 2.0 * np.sum(kept[: last + 1]) + np.sum(kept[last + 1 : last + 2])
    tau = max(tau, 1.0 / np.log10(m * n))
    return np.nan if np.isnan(kept).any() else float(m * n / tau)


def pareto_k(log_ratios: np.ndarray) -> float:
    """The estimated shape k of the generalized Pareto distribution fitted to the largest importance ratios (the
    3 sqrt(S) largest of S, or S / 5 for S up to 225): above 0.5 the ratios have no finite variance, above 0.7
    importance sampling estimates are unreliable (Vehtari et al. 2024). NaN for fewer than 25 finite ratios."""
    r = np.sort(log_ratios[np.isfinite(log_ratios)])
    s = len(r)
    tail = int(np.floor(3 * np.sqrt(s)) if s > 225 else np.floor(s / 5))
    if tail < 5:
        return np.nan
    r = r - r[-1]
    if r[-1] - r[s - tail] < np.finfo(float).tiny:
        return np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        return _gpd_shape(np.exp(r[s - tail :]) - np.exp(r[s - tail - 1]))


def _gpd_shape(x: np.ndarray) -> float:
    """Zhang & Stephens's (2009) posterior-mean estimate of the generalized Pareto shape of sorted exceedances x,
    shrunk towards 0.5 by a prior worth 10 observations."""
    n = len(x)
    grid = 30 + int(np.sqrt(n))
    b = 1.0 - np.sqrt(grid / (np.arange(1, grid + 1) - 0.5))
    b = b / (3.0 * x[int(n / 4 + 0.5) - 1]) + 1.0 / x[-1]
    k = np.mean(np.log1p(-b[:, None] * x), axis=1)
    log_lik = n * (np.log(-b / k) - k - 1.0)
    w = np.exp(log_lik - special.logsumexp(log_lik))
    keep = w >= 10 * np.finfo(float).eps
    b_mean = np.sum(b[keep] * w[keep]) / np.sum(w[keep])
    shape = np.mean(np.log1p(-b_mean * x))
    return float((n * shape + 10 * 0.5) / (n + 10))
