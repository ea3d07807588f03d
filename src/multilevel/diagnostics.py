"""Sampler diagnostics: ArviZ's summary of draws (mean, SD, quantiles, bulk/tail ESS, rank R-hat) and the
warnings a sampler attaches to its posterior (divergences, R-hat above 1.01, too few effective draws)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import draw_statistics
from .arguments import check_level
from .partitioned import response_values

RHAT_LIMIT = 1.01
ESS_PER_CHAIN = 100  # bulk/tail ESS below 100 per chain is reported (as Stan's guidance)


def draw_summary(params: dict[str, np.ndarray], prob: float = 0.95) -> pd.DataFrame:
    """mean, sd, quantiles, bulk/tail ESS and R-hat (ArviZ's definitions, `draw_statistics`) for named draws
    (chains x draws each)."""
    check_level(prob, "prob")
    names = list(params)
    arr = np.stack([params[n] for n in names], axis=-1)  # chains x draws x P
    lo, hi = (1 - prob) / 2, (1 + prob) / 2
    flat = arr.reshape(-1, arr.shape[-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        ess_bulk = [draw_statistics.ess_bulk(arr[..., j]) for j in range(len(names))]
        ess_tail = [draw_statistics.ess_tail(arr[..., j]) for j in range(len(names))]
        rhat = [draw_statistics.rhat_rank(arr[..., j]) for j in range(len(names))]
    return pd.DataFrame(
        {
            "mean": flat.mean(axis=0),
            "sd": flat.std(axis=0, ddof=1),
            f"q{100 * lo:g}": np.quantile(flat, lo, axis=0),
            "q50": np.quantile(flat, 0.5, axis=0),
            f"q{100 * hi:g}": np.quantile(flat, hi, axis=0),
            "ess_bulk": ess_bulk,
            "ess_tail": ess_tail,
            "r_hat": rhat,
        },
        index=pd.Index(names, name="parameter"),
    )


EXACT_FIT = 1e-4  # a residual SD this small a fraction of the response's SD: the data carry no noise


def exact_fit_message(sigma: float | None, design) -> list[str]:
    """A warning when the model reproduces the response exactly (noise-free data: the variances mean nothing)."""
    spread = float(np.std(response_values(design)))
    if sigma is None or design.se is not None or not sigma < EXACT_FIT * spread:
        return []
    return [
        f"the model reproduces the response almost exactly (residual SD {sigma:.2g}, {sigma / spread:.1g} of the "
        "response's SD): the data look noise-free, e.g. y computed from the predictors and the groups, so the residual "
        "variance is about 0 and the variance estimates are meaningless. Check the response column"
    ]


FAR_WEIGHTS = 1e3  # weights averaging beyond 1e+-3 put theta = sd / sigma beyond lme4's absolute boundary rules


def weight_scale_message(design) -> list[str]:
    """A warning when the prior weights average far from 1: sigma scales with 1 / sqrt(mean weight) while the random
    effects' SDs do not, so theta = SD / sigma moves by sqrt of that mean, where the boundary rules (a theta below 1e-4
    is on the boundary, as lme4's) misjudge it (weights * 1e8 on sleepstudy: a false singular fit, beta 0.2 % off)."""
    weights = design.weights
    if weights is None or not len(weights):
        return []
    mean = float(np.mean(weights))
    if 1 / FAR_WEIGHTS <= mean <= FAR_WEIGHTS:
        return []
    return [
        f"the weights average {mean:.3g}: prior weights are relative (Var(e_i) = sigma^2 / w_i), so their scale moves sigma "
        f"and theta = SD / sigma by a factor of about {np.sqrt(mean):.3g}, far from where the fit's absolute rules "
        "(a theta below 1e-4 is on the boundary) hold, and the estimates may be off. Divide the weights by their mean: "
        "the fixed effects and the random effects' SDs stay the same, sigma becomes that of a weight-1 row"
    ]


def interrupted_message(finished: list[int] | None, chains: int, draws: int) -> list[str]:
    """The warning of a sampler stopped by Ctrl-C: the draws each chain finished and what was kept (empty for
    a full run)."""
    if finished is None:
        return []
    return [f"sampling was interrupted (Ctrl-C): the chains finished {', '.join(map(str, finished))} draws; this "
            f"partial posterior keeps {chains} chain{'s' * (chains > 1)} of their first {draws} draws. Run again "
            "for the full posterior before relying on it."]


def sampler_warnings(post) -> list[str]:
    """Plain-words warnings for divergent transitions, chains that disagree and too few effective draws (any
    sampler's draws with `stats`, `summary()` and `n_chains`)."""
    out = []
    n_div = int(np.sum(post.stats.get("diverging", 0)))
    if n_div:
        out.append(
            f"{n_div} divergent transitions after warmup: the sampler may have missed part of the posterior; "
            "results can be biased. Check the model (a variance near zero?) or give more informative priors."
        )
    table = post.summary()
    bad_rhat = table.index[table["r_hat"] > RHAT_LIMIT].tolist()
    if bad_rhat:
        out.append(
            f"R-hat above {RHAT_LIMIT} for {', '.join(bad_rhat)}: the chains disagree; run longer (more draws "
            "and warmup) before trusting these estimates."
        )
    limit = ESS_PER_CHAIN * post.n_chains
    low = table.index[(table["ess_bulk"] < limit) | (table["ess_tail"] < limit)].tolist()
    if low:
        out.append(
            f"effective sample size below {limit} for {', '.join(low)}: means and intervals are imprecise; "
            "draw more."
        )
    return out
