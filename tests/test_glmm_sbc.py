"""Simulation-based calibration (Talts et al. 2018) of the GLMM samplers: NUTS and the independence sampler with the
group effects integrated by quadrature (binomial and Poisson) and Pólya–Gamma Gibbs (binomial; negative binomial with its shape);
and the joint NUTS sampler on a Poisson model with nested terms (partial centring, the outer term integrated out).

As tests/test_sbc.py: parameters from proper priors, data from them, ranks of the true values among thinned
posterior draws, which are uniform when the sampler is right. 8 groups x 5 rows, a random intercept and a slope
on an uncentred covariate (the centred-intercept path); binomial rows have 4 trials; the negative binomial's shape
has a gamma(4, 2) prior (brms's gamma(0.01, 0.01) is too diffuse to simulate from).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import multilevel as mlv
from sbc_ranks import KEPT, ranks_of_truth, uniformity_pvalues

PRIORS = {"Intercept": mlv.prior.normal(0, 1), "b": mlv.prior.normal(0, 1), "sd": mlv.prior.half_normal(1)}
SHAPE_PRIOR = mlv.prior.gamma(4, 2)
GROUPS, PER_GROUP, TRIALS = 8, 5, 4
X = np.random.default_rng(2013).normal(0.5, 1.0, GROUPS * PER_GROUP)
RUNS = {  # (family, sampler) -> (warmup, draws before thinning)
    ("binomial", "nuts"): (300, 2 * KEPT),
    ("poisson", "nuts"): (300, 2 * KEPT),
    ("binomial", "imh"): (300, 4 * KEPT),
    ("poisson", "imh"): (300, 4 * KEPT),
    ("binomial", "gibbs"): (200, 10 * KEPT),
    ("negbinomial", "gibbs"): (200, 10 * KEPT),
}
FORMULAS = {"binomial": "y | trials(n) ~ x + (1 | g)", "poisson": "y ~ x + (1 | g)", "negbinomial": "y ~ x + (1 | g)"}
PARAMETERS = ["b_Intercept", "b_x", "sd_g__Intercept", "r_g[g0,Intercept]"]


def parameters(family: str) -> list[str]:
    return PARAMETERS + ["shape"] if family == "negbinomial" else PARAMETERS


def priors(family: str) -> dict:
    return PRIORS | {"shape": SHAPE_PRIOR} if family == "negbinomial" else PRIORS


def simulate(family: str, replicate: int) -> tuple[pd.DataFrame, dict[str, float]]:
    """Data and true values drawn from the prior (alpha: the intercept of centred x)."""
    rng = np.random.default_rng([2013, replicate])
    alpha, slope, tau = (PRIORS[k].sample(rng) for k in ("Intercept", "b", "sd"))
    u = rng.normal(0, tau, GROUPS)
    g = np.repeat(np.arange(GROUPS), PER_GROUP)
    eta = alpha + slope * (X - X.mean()) + u[g]
    truth = {"b_Intercept": alpha - slope * X.mean(), "b_x": slope, "sd_g__Intercept": tau, "r_g[g0,Intercept]": u[0]}
    if family == "binomial":
        y = rng.binomial(TRIALS, 1 / (1 + np.exp(-eta)))
    elif family == "poisson":
        y = rng.poisson(np.exp(eta))
    else:
        truth["shape"] = shape = SHAPE_PRIOR.sample(rng)
        y = rng.negative_binomial(shape, shape / (shape + np.exp(eta)))
    data = pd.DataFrame({"y": y, "n": TRIALS, "x": X, "g": [f"g{i}" for i in g]})
    return data, truth


def ranks(family: str, sampler: str, replicates: range) -> np.ndarray:
    """(replicates, parameters) ranks of the true values among KEPT thinned posterior draws."""
    warmup, draws = RUNS[(family, sampler)]
    out = []
    for r in replicates:
        data, truth = simulate(family, r)
        post = mlv.Model(FORMULAS[family], data, family=family).sample(
            chains=1, draws=draws, warmup=warmup, seed=r, prior=priors(family), sampler=sampler, progress=False
        )
        out.append(ranks_of_truth(post.parameters() | post.group_effect_draws(), truth, parameters(family)))
    return np.array(out)


@pytest.mark.slow
@pytest.mark.parametrize("family, sampler", list(RUNS), ids=[f"{f}-{s}" for f, s in RUNS])
def test_glmm_sbc(family, sampler):
    """60 replicates, five bins: gross miscalibration of any exact GLMM sampler fails it."""
    p = uniformity_pvalues(ranks(family, sampler, range(60)), parameters(family), bins=5)
    assert min(p.values()) > 0.001, p


NESTED = ["b_Intercept", "b_x", "sd_a__Intercept", "sd_b__Intercept", "r_a[a0,Intercept]", "r_b[a0b0,Intercept]"]


def simulate_nested(replicate: int, outer: int = 6, inner: int = 3, rows: int = 3) -> tuple[pd.DataFrame, dict]:
    """Poisson counts with a random intercept b nested in a (each b level in one a level): NUTS samples b's totals
    partially centred and integrates a out (its effects drawn exactly given them)."""
    rng = np.random.default_rng([2014, replicate])
    alpha, slope, tau_a, tau_b = (PRIORS[k].sample(rng) for k in ("Intercept", "b", "sd", "sd"))
    u_a, u_b = rng.normal(0, tau_a, outer), rng.normal(0, tau_b, outer * inner)
    b = np.repeat(np.arange(outer * inner), rows)
    a = b // inner
    x = np.random.default_rng(2014).normal(0.5, 1.0, len(b))
    y = rng.poisson(np.exp(alpha + slope * (x - x.mean()) + u_a[a] + u_b[b]))
    truth = dict(zip(NESTED, [alpha - slope * x.mean(), slope, tau_a, tau_b, u_a[0], u_b[0]]))
    data = pd.DataFrame({"y": y, "x": x, "a": [f"a{i}" for i in a], "b": [f"a{i // inner}b{i % inner}" for i in b]})
    return data, truth


@pytest.mark.slow
def test_nested_poisson_sbc():
    """The joint NUTS sampler with partial centring and the outer nested term integrated out: 60 replicates, five
    bins, the outer effect (drawn from its exact conditional) among the parameters."""
    out = []
    for r in range(60):
        data, truth = simulate_nested(r)
        post = mlv.Model("y ~ x + (1 | a) + (1 | b)", data, family="poisson").sample(
            chains=1, draws=10 * KEPT, warmup=500, seed=r, prior=PRIORS, sampler="nuts", progress=False)
        out.append(ranks_of_truth(post.parameters() | post.group_effect_draws(), truth, NESTED))
    p = uniformity_pvalues(np.array(out), NESTED, bins=5)
    assert min(p.values()) > 0.001, p
