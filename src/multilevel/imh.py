"""An exact independence Metropolis-Hastings sampler for GLMMs whose one scalar term carries the group effects
(`sampler="imh"`, and what `sampler="auto"` runs when its proposal passes the check).

The target is the marginal posterior of phi = (log SD, [log shape,] alpha, beta), a few dimensions, with the
group effects integrated out by adaptive quadrature (`scalar_marginal`, vectorised over points). The proposal is
a multivariate t (DOF degrees of freedom) at the posterior mode with the inverse Hessian's scale; each chain's
warmup proposals, pooled and weighted by their truncated importance ratios, give the sampling proposal's location and scale.
Every chain then draws all its proposals at once (`numpy.random.default_rng([seed, chain])`: the draws do not
depend on `cores`), their log densities are one vectorised evaluation, and the accept/reject sequence is cheap.
The group effects are drawn exactly given each draw. The sampling proposals' Pareto k and the acceptance rate
diagnose the proposal on the user's model (`diagnose`; docs/bayes.md, "Which sampler runs when").
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
from scipy import optimize

from .draw_statistics import pareto_k
from .glmm_bayes import NODES, target_inputs, to_posterior
from .glmm_density import quadrature_nodes
from .posterior import Posterior
from .priors import PriorSet, brms_scale
from .scalar_marginal import LINKS, ScalarMarginal

DOF = 10  # the t proposal's degrees of freedom: tails heavier than the posterior's, so the weights stay bounded
PARETO_K_LIMIT = 0.5  # above it the importance weights have no finite variance (docs/bayes.md): NUTS runs instead
MIN_ACCEPTANCE = 0.3  # below it the chains stick at single draws too often (docs/bayes.md)
ADAPT_PROPOSALS = 1000  # warmup proposals of all chains together (at most `warmup` a chain): 2,000 or 4,000 gave
# the same acceptance within 0.02 and no more ESS on cbpp and salamanders, at more CPU (docs/bayes.md)
FEWER_NODES = (7, 9, 11, 15)  # quadrature node counts tried for the sampling proposals, fewest first
QUADRATURE_TOL = 1e-5  # their log density's largest difference from NODES's allowed on the checked draws
NODE_CHECKS = 200  # warmup proposals (resampled by weight, duplicates dropped) the node counts are checked on
STEP = 1e-3  # finite-difference step for the mode's gradient and the Hessian (unconstrained units)


class ProposalFailed(Exception):
    """The proposal cannot be built or is too poor for this model (the reason in words)."""


def reason_unsupported(model) -> str | None:
    """Why the independence sampler does not apply to this model, or None when it does."""
    blocks = model.design.blocks
    if len(blocks) != 1 or blocks[0].k != 1:
        return "it needs one scalar random term (the group effects integrated out by quadrature)"
    family = model.family
    if LINKS.get(family.name) != family.link.name:
        return f"it handles the logit (binomial) and log (Poisson, negative binomial) links, not {family.link.name}"
    return None


def sample_imh(model, ps: PriorSet, chains: int, draws: int, warmup: int, seed: int) -> Posterior:
    """Draws of a GLMM's posterior by independence Metropolis-Hastings, the proposal's check in `proposal_check`
    (its `reason` empty when it passes); raises `ProposalFailed` when no proposal can be built.

    Each chain's warmup is min(warmup, ADAPT_PROPOSALS / chains) steps from the Laplace proposal: they only have
    to locate and scale the adapted proposal, and a chain forgets its start at its first accepted move."""
    start = time.perf_counter()
    layout, data, centred, columns = target_inputs(model, ps, NODES)
    few = ScalarMarginal(layout, data | quadrature_nodes(FEWER_NODES[0]))
    proposal = posterior_mode(few, model)
    anchor = few.effect_modes(proposal[0])  # the modes at phi's mode: every point's Newton steps begin there
    target = ScalarMarginal(layout, data, anchor)
    rngs = [np.random.default_rng([seed, c]) for c in range(chains)]
    n_warm = min(warmup, -(-ADAPT_PROPOSALS // chains))
    warm = [_run(target, proposal, rng, n_warm, None) for rng in rngs]
    x_warm = np.concatenate([w.x for w in warm])
    log_p, log_r = (np.concatenate([getattr(w, name) for w in warm]) for name in ("log_p", "log_r"))
    proposal = adapted(x_warm, log_r, proposal)
    target, nodes = fewest_nodes(layout, data, x_warm, log_p, log_r, rngs[0], anchor)
    runs = [_run(target, proposal, rng, draws, w.chain[-1]) for rng, w in zip(rngs, warm)]
    check = diagnose(np.concatenate([r.log_r for r in runs]), np.mean([r.stats["accepted"].mean() for r in runs]))
    positions = np.stack([r.chain for r in runs])
    stats = {k: np.stack([r.stats[k] for r in runs]) for k in runs[0].stats}
    effects = np.stack([target.draw_effects(r.chain, rng, r.modes) for r, rng in zip(runs, rngs)])
    post = to_posterior(model, ps, layout, centred, columns, positions, stats, [effects[..., None]], None, seed,
                        start, "imh")
    post.proposal_check = check | {"nodes": nodes, "warmup": n_warm}
    return post


def fewest_nodes(layout, data: dict, x: np.ndarray, log_p: np.ndarray, log_r: np.ndarray, rng: np.random.Generator,
                 anchor: np.ndarray | None = None):
    """The target with the fewest quadrature nodes (of FEWER_NODES) whose log density is within QUADRATURE_TOL of
    NODES's (`log_p`) at NODE_CHECKS warmup proposals x resampled by their importance ratios `log_r` (so, roughly,
    posterior draws: where the error moves the posterior; NODES's own error is below 1e-5:
    tests/test_glmm_bayes.py), and that count."""
    ok = np.flatnonzero(np.isfinite(log_r))
    w = np.exp(log_r[ok] - log_r[ok].max())
    pick = np.unique(rng.choice(ok, NODE_CHECKS, p=w / w.sum())) if len(ok) else ok
    for nodes in FEWER_NODES:
        fewer = ScalarMarginal(layout, data | quadrature_nodes(nodes), anchor)
        if len(pick) and np.max(np.abs(fewer.log_density(x[pick]) - log_p[pick])) < QUADRATURE_TOL:
            return fewer, nodes
    return ScalarMarginal(layout, data, anchor), NODES


def posterior_mode(target: ScalarMarginal, model) -> tuple[np.ndarray, np.ndarray]:
    """The log posterior's mode (BFGS, gradients by central differences evaluated as one batch) and a square root
    S (S S' = the inverse of the negative Hessian there, by second differences in one batch); on a few-node
    target, as they only centre and scale the first proposal."""
    dim, base = target.dim, target.layout.base
    x0 = np.zeros(dim)
    x0[: base.n_sd] = np.log(0.5)
    if base.intercept:
        x0[base.dim - 1] = brms_scale(model.design.y, model.family.link.name)[0]
    eye = STEP * np.eye(dim)

    def value_and_gradient(x):
        f = target.log_density(np.concatenate([x[None], x + eye, x - eye]))
        if not np.all(np.isfinite(f)):
            return np.inf, np.zeros(dim)
        return -f[0], -(f[1 : dim + 1] - f[dim + 1 :]) / (2 * STEP)

    found = optimize.minimize(value_and_gradient, x0, jac=True, method="BFGS", options={"gtol": 1e-4})
    mode = found.x
    H = hessian(target, mode)
    try:
        inverse_factor = np.linalg.inv(np.linalg.cholesky(-H))
    except np.linalg.LinAlgError:
        inverse_factor = np.full_like(H, np.nan)
    if not np.all(np.isfinite(inverse_factor)):
        raise ProposalFailed("the log posterior is not concave at its mode (a flat or improper direction)")
    return mode, inverse_factor.T


def hessian(target: ScalarMarginal, x: np.ndarray) -> np.ndarray:
    """The log density's Hessian at x by central second differences (2 d^2 + 1 points, one batch)."""
    dim = len(x)
    eye = STEP * np.eye(dim)
    i, j = np.triu_indices(dim, 1)
    corners = [x + s * eye[i] + t * eye[j] for s, t in ((1, 1), (1, -1), (-1, 1), (-1, -1))]
    f = target.log_density(np.concatenate([x[None], x + eye, x - eye, *corners]))
    f0, plus, minus = f[0], f[1 : dim + 1], f[dim + 1 : 2 * dim + 1]
    pp, pm, mp, mm = np.split(f[2 * dim + 1 :], 4)
    H = np.diag((plus - 2 * f0 + minus) / STEP**2)
    H[i, j] = H[j, i] = (pp - pm - mp + mm) / (4 * STEP**2)
    return H


def adapted(x: np.ndarray, log_ratio: np.ndarray, proposal):
    """The t proposal's location and scale from the warmup proposals x: their mean and covariance weighted by the
    importance ratios truncated at their mean times sqrt(S) (Ionides 2008); the old proposal if too few are finite."""
    ok = np.isfinite(log_ratio)
    if ok.sum() < 10 * x.shape[1]:
        return proposal
    w = np.exp(log_ratio[ok] - log_ratio[ok].max())
    w = np.minimum(w, w.mean() * np.sqrt(ok.sum()))
    w /= w.sum()
    mean = w @ x[ok]
    centred = x[ok] - mean
    try:
        return mean, np.linalg.cholesky((centred * w[:, None]).T @ centred / (1 - w @ w))
    except np.linalg.LinAlgError:
        return proposal


def _draw_t(proposal, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n draws of the multivariate t proposal (mean, S: scale S S') and their log densities (up to a constant)."""
    mean, chol = proposal
    w = rng.standard_normal((n, len(mean))) / np.sqrt(rng.chisquare(DOF, n) / DOF)[:, None]
    return mean + w @ chol.T, _log_t(w)


def _log_t(w: np.ndarray) -> np.ndarray:
    """The t proposal's log density at standardised points w, up to a constant."""
    return -0.5 * (DOF + w.shape[-1]) * np.log1p(np.sum(w**2, axis=-1) / DOF)


class Run(NamedTuple):
    """A chain's stretch: its proposals, their log densities and log importance ratios, the chain's draws, their
    statistics and their groups' conditional modes and SDs."""

    x: np.ndarray
    log_p: np.ndarray
    log_r: np.ndarray
    chain: np.ndarray
    stats: dict
    modes: tuple


def _run(target: ScalarMarginal, proposal, rng: np.random.Generator, n: int, start: np.ndarray | None) -> Run:
    """n independence Metropolis-Hastings steps from `start` (None: the first proposal is taken)."""
    x, log_q = _draw_t(proposal, rng, n)
    log_p, mode, s = target.log_density(x, modes=True)
    log_r = log_p - log_q
    u = np.log(rng.uniform(size=n))
    if start is not None:  # the chain's state, in the index -1 slot
        (p0,), m0, s0 = target.log_density(start, modes=True)
        x, log_p, mode, s = (np.concatenate([v, w]) for v, w in ((x, start[None]), (log_p, [p0]), (mode, m0), (s, s0)))
        log_r = np.append(log_r, p0 - _log_t(np.linalg.solve(proposal[1], start - proposal[0])))
    index = np.empty(n, dtype=np.int64)
    accept_prob = np.empty(n)
    at = -1 if start is not None else 0
    for i in range(n):
        d = log_r[i] - log_r[at]
        accept_prob[i] = 1.0 if d >= 0 else np.exp(d)
        if u[i] < d:
            at = i
        index[i] = at
    accepted = np.concatenate([[index[0] == 0], index[1:] != index[:-1]])
    stats = {"lp": log_p[index], "acceptance_rate": accept_prob, "accepted": accepted}
    return Run(x[:n], log_p[:n], log_r[:n], x[index], stats, (mode[index], s[index]))


def diagnose(log_ratio: np.ndarray, acceptance: float) -> dict:
    """The proposal's Pareto k (of its importance ratios on the sampling proposals) and acceptance rate, and the
    reason it fails (empty when it passes)."""
    k = pareto_k(log_ratio)
    reason = ""
    if not k <= PARETO_K_LIMIT:
        reason = f"its proposal's Pareto k is {k:.2f}, above {PARETO_K_LIMIT}"
    elif acceptance < MIN_ACCEPTANCE:
        reason = f"its proposal's acceptance rate is {acceptance:.2f}, below {MIN_ACCEPTANCE}"
    return {"pareto_k": k, "acceptance_rate": float(acceptance), "reason": reason}


def messages(post) -> list[str]:
    """The warning of an independence sampler run whose proposal failed its check (sampler="imh" asked for)."""
    check = getattr(post, "proposal_check", None)
    if post.sampler != "imh" or not check or not check["reason"]:
        return []
    return [(f"the independence sampler's proposal is poor for this model ({check['reason']}): its chains are exact "
             "but may mix slowly and miss the tails; sampler='nuts' (or 'auto', which would have chosen it) is safer")]
