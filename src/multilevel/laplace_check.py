"""The importance-sampling check of `sampler="laplace"`: how far its posterior is from the exact one, on the
user's model.

For a subsample of the draws x = (beta, theta), group effects are drawn from the Laplace Gaussian and weighted
against the exact joint p(y, u | x) (a scalar first term, often most of the effects, integrated out exactly by
quadrature given the others, so the weights cover only the other terms): the weights' mean estimates the exact
marginal likelihood over Laplace's, r(x). Re-weighting the draws by r (Pareto-smoothed, Vehtari et al. 2024)
estimates the exact posterior mean of each parameter; its difference from the Laplace draws' mean on the same
subsample, in posterior SDs, is the estimated bias. The group effects (drawn from the Laplace Gaussian) get
both weights. Pareto k above 0.7 of either weighting (the inner one's median over the draws) means the
estimate itself is unreliable.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import laplace_density
from .glmm_bayes import NODES
from .glmm_density import quadrature_nodes

PARETO_K_LIMIT = 0.7  # above it importance weights are too heavy-tailed to trust (Vehtari et al. 2024)
BIAS_LIMIT = 0.1  # posterior SDs of estimated bias in a mean above which the approximation is reported as large
STREAM = 2**32 - 1  # the check's random stream: np.random.default_rng([seed, STREAM]) (chains use [seed, chain])


def importance_check(post, layout, data: dict, positions: np.ndarray, n_draws: int, n_proposals: int) -> pd.DataFrame:
    """Per parameter (and per term, its group effect with the largest bias): the estimated bias of the Laplace
    posterior mean (Laplace minus exact, in posterior SDs) and its Monte Carlo SE; the weights' diagnostics in
    `attrs` (pareto_k; inner_pareto_k, the median over the checked draws: each from K proposals is noisy, and
    their largest is high even for a good proposal; ess, draws, proposals)."""
    from arviz_stats.base.array import array_stats
    from scipy.special import logsumexp

    flat = positions.reshape(-1, positions.shape[-1])
    pick = np.unique(np.linspace(0, len(flat) - 1, min(n_draws, len(flat))).round().astype(int))
    ratios, inner_means, plain_means = _weigh(layout, data, flat[pick], n_proposals, post.seed)
    n_proposals = ratios.shape[1]
    failed = float(np.mean(~np.isfinite(ratios)))  # numerical failures (NaN, overflow): zero weight, reported
    ratios = np.where(np.isfinite(ratios), ratios, -np.inf)
    log_r = logsumexp(ratios, axis=1) - np.log(n_proposals)
    ok = np.isfinite(log_r)
    w, k_outer = np.zeros(len(log_r)), np.nan
    if ok.sum() > 1:
        smoothed, k_outer = array_stats.psislw(log_r[ok].max() - log_r[ok])  # ArviZ takes negated log ratios
        w[ok] = np.exp(smoothed - smoothed.max())
    with np.errstate(invalid="ignore"):
        w /= w.sum()  # NaN if every draw failed: the table then says the check failed
    inner_means = np.where(ok[:, None], inner_means, 0.0)
    whole = np.isfinite(ratios).all(axis=1)
    k_inner = np.nan  # no inner weights: every effect integrated exactly (one scalar term)
    if n_proposals > 1 and whole.any():
        k_inner = float(np.median(array_stats.psislw(ratios[whole].max(1, keepdims=True) - ratios[whole], axis=-1)[1]))
    rows = {}
    for name, draws in post.parameters().items():
        phi = draws.reshape(-1)[pick]
        sd = draws.std(ddof=1) or 1.0
        d = w - 1.0 / len(pick)
        rows[name] = (-(d @ phi) / sd, np.sqrt(np.sum(d**2 * (phi - phi.mean()) ** 2)) / sd)
    plain, inner = plain_means.mean(0), w @ inner_means
    start = 0
    for block, b in zip(post.design.blocks, post.b):
        size = block.m * block.k
        sd = b.reshape(-1, size).std(axis=0, ddof=1)
        bias = (plain[start : start + size] - inner[start : start + size]) / np.where(sd > 0, sd, 1.0)
        rows[f"r_{block.group} (largest)"] = (bias[np.argmax(np.abs(bias))], np.nan)
        start += size
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["bias", "mcse"])
    table.index.name = "parameter"
    table.attrs.update(failed=failed, pareto_k=float(k_outer), inner_pareto_k=k_inner, ess=float(1.0 / np.sum(w**2)),
                       draws=len(pick), proposals=n_proposals)
    return table


def _weigh(layout, data: dict, points: np.ndarray, n_proposals: int, seed: int):
    """Per checked draw: the K log ratios, the group effects' means under the weights, and at the mode (Laplace's).
    A scalar first term is integrated by quadrature given the other terms (`marginal_importance_draws`)."""
    import jax

    rng = np.random.default_rng([seed, STREAM])
    scalar = layout.base.ks[0] == 1
    draw = laplace_density.marginal_importance_draws if scalar else laplace_density.importance_draws
    data = {**data, **quadrature_nodes(NODES)} if scalar else data  # per-group sums by scatter: faster over K
    size = layout.q_rest if scalar else laplace_density.noise_size(layout)
    n_proposals = n_proposals if size else 1  # nothing left to weigh: the check is exact
    run = jax.jit(lambda d, x, z: draw(layout, d, x, z))
    at_mode = jax.jit(lambda d, x: laplace_density.mode_effects(layout, d, x))
    ratios, inner, plain = [], [], []
    for x in points:
        v, blocks = run(data, x, rng.standard_normal((n_proposals, size)))
        v = np.where(np.isfinite(v := np.asarray(v)), v, -np.inf)
        effects = np.concatenate([np.asarray(b).reshape(n_proposals, -1) for b in blocks], axis=1)
        weights = np.exp(v - v.max())
        ratios.append(v)
        inner.append(weights @ effects / weights.sum())
        plain.append(np.concatenate([np.asarray(b).ravel() for b in at_mode(data, x)]))
    return np.array(ratios), np.array(inner), np.array(plain)


def messages(post) -> list[str]:
    """The APPROXIMATE label of a Laplace posterior with its check's numbers, and a warning when the check finds
    a bias above BIAS_LIMIT posterior SDs or heavy-tailed weights (empty for exact samplers)."""
    table = post.importance_check
    if post.sampler != "laplace":
        return []
    if table is None:
        return ["APPROXIMATE: sampler='laplace' integrates the group effects out by the Laplace approximation; "
                "this result carries no importance-sampling check of its error"]
    a = table.attrs
    if not np.isfinite(table["bias"]).any():
        return ["APPROXIMATE: sampler='laplace' integrates the group effects out by the Laplace approximation; its "
                f"importance-sampling check failed ({a.get('failed', 0):.0%} of its weights not finite): the "
                "approximation's error on this model is unknown; use sampler='nuts', which is exact"]
    inner = "" if np.isnan(a["inner_pareto_k"]) else f", inner (median) {a['inner_pareto_k']:.2f}"
    worst = table["bias"].abs().idxmax()
    out = [f"APPROXIMATE: sampler='laplace' integrates the group effects out by the Laplace approximation and draws "
           f"them from its Gaussian. Importance-sampling check on {int(a['draws'])} draws x {int(a['proposals'])}: largest "
           f"estimated bias {table.loc[worst, 'bias']:+.3f} posterior SD ({worst}); Pareto k {a['pareto_k']:.2f}{inner}; "
           f"weights' ESS {a['ess']:.0f}. Every parameter's in post.importance_check"]
    if abs(table.loc[worst, "bias"]) > BIAS_LIMIT or np.nanmax([a["pareto_k"], a["inner_pareto_k"]]) > PARETO_K_LIMIT:
        out.append(f"the Laplace approximation's error on this model may matter (estimated bias above {BIAS_LIMIT} "
                   f"posterior SD, or Pareto k above {PARETO_K_LIMIT}: the check itself is then unreliable); use "
                   "sampler='nuts', which is exact")
    return out
