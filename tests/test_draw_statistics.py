"""Our R-hat, bulk/tail ESS and Pareto k (`draw_statistics`, NumPy alone) are ArviZ's numbers."""

from __future__ import annotations

import numpy as np
import pytest
from arviz_stats.base.array import array_stats

from multilevel import draw_statistics as ds


def chains(rng, n_chains, n_draws, phi, shift=0.0):
    """AR(1) chains with autocorrelation phi (chain c shifted by c * shift)."""
    e = rng.standard_normal((n_chains, n_draws))
    x = np.empty_like(e)
    x[:, 0] = e[:, 0]
    for t in range(1, n_draws):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x + shift * np.arange(n_chains)[:, None]


@pytest.mark.parametrize("n_chains, n_draws, phi, shift", [(4, 1000, 0.0, 0.0), (4, 1000, 0.9, 0.0), (2, 301, -0.5, 0.0),
                                                           (3, 50, 0.5, 0.5), (1, 400, 0.7, 0.0), (4, 7, 0.3, 0.0)])
def test_rhat_and_ess_are_arviz_s(n_chains, n_draws, phi, shift):
    rng = np.random.default_rng(n_draws)
    for x in (chains(rng, n_chains, n_draws, phi, shift), np.exp(chains(rng, n_chains, n_draws, phi, shift)),
              np.round(chains(rng, n_chains, n_draws, phi, shift))):  # skewed, tied
        ours = ds.ess_bulk(x), ds.ess_tail(x), ds.rhat_rank(x)
        theirs = (array_stats.ess(x, chain_axis=0, draw_axis=1, method="bulk"),
                  array_stats.ess(x, chain_axis=0, draw_axis=1, method="tail", prob=0.05),
                  array_stats.rhat(x, chain_axis=0, draw_axis=1, method="rank") if n_chains > 1 else np.nan)
        assert np.allclose(ours, theirs, rtol=1e-9, equal_nan=True), (ours, theirs)


def test_degenerate_draws_are_arviz_s():
    constant = np.ones((4, 100))
    assert ds.ess_bulk(constant) == array_stats.ess(constant, chain_axis=0, draw_axis=1, method="bulk") == 400
    for bad in (np.full((4, 3), 1.0), np.where(np.arange(400).reshape(4, 100) == 7, np.nan, 1.0)):
        assert np.isnan(ds.ess_bulk(bad)) and np.isnan(ds.rhat_rank(bad)) and np.isnan(ds.ess_tail(bad))


@pytest.mark.parametrize("dof", [3.0, 2.0, 1.5])
def test_pareto_k_is_arviz_s(dof):
    """Log ratios whose ratios have Pareto tails of shape 1 / dof (t-distributed log ratios: lighter)."""
    rng = np.random.default_rng(int(10 * dof))
    for log_r in (np.log(rng.pareto(dof, 4000) + 1.0), rng.standard_t(dof, 1000), rng.normal(size=200)):
        k = array_stats.psislw(log_r.max() - log_r)[1]  # ArviZ takes negated log ratios
        assert ds.pareto_k(log_r) == pytest.approx(float(k), abs=1e-10)


def test_ratios_that_underflow_get_no_pareto_k():
    """When all but a few ratios underflow next to the largest (t(0.8) log ratios), ArviZ's fit degenerates (k 0.05,
    'light'); ours says NaN, which fails every threshold (the independence sampler then falls back)."""
    log_r = np.random.default_rng(8).standard_t(0.8, 1000)
    assert np.isnan(ds.pareto_k(log_r))
