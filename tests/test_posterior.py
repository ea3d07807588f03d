"""Posterior results: diagnostics warnings in plain words, reproducibility by seed whatever the cores,
table layouts, and the ArviZ DataTree."""

from __future__ import annotations

import numpy as np
import pytest

import multilevel as mlv
from multilevel.errors import MultilevelWarning
from multilevel.bayes import diagnosed
from multilevel.posterior import Posterior


@pytest.fixture(scope="module")
def dyestuff():
    return mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff"))


@pytest.fixture(scope="module")
def gibbs_post(dyestuff):
    return dyestuff.sample(sampler="gibbs", chains=2, draws=2000, warmup=200, seed=3, progress=False)


def rebuild(post: Posterior, **changes) -> Posterior:
    """The same draws as a new Posterior, some arrays replaced (to create known diagnostic situations)."""
    parts = dict(beta=post.beta, sd=post.sd, corr=post.corr, sigma=post.sigma, b=post.b, stats=post.stats)
    parts.update(changes)
    return diagnosed(Posterior(post.model, parts["beta"], parts["sd"], parts["corr"], parts["sigma"], parts["b"],
                               parts["stats"], post.priors, post.seed, post.seconds, post.sampler))


def test_low_effective_sample_size_is_reported(dyestuff):
    with pytest.warns(MultilevelWarning, match="effective sample size below 200 for .*draw more"):
        post = dyestuff.sample(sampler="gibbs", chains=2, draws=30, warmup=50, seed=1, progress=False)
    assert any("effective sample size" in w for w in post.warnings)
    assert "Warnings:" in repr(post)


def test_chains_that_disagree_are_reported(gibbs_post):
    beta = gibbs_post.beta.copy()
    beta[1] += 5 * beta.std()
    with pytest.warns(MultilevelWarning, match=r"R-hat above 1.01 for b_Intercept(, [^:]*)?: the chains disagree"):
        rebuild(gibbs_post, beta=beta)


def test_divergences_are_reported(gibbs_post):
    diverging = np.zeros(gibbs_post.beta.shape[:2], dtype=bool)
    diverging[0, :7] = True
    with pytest.warns(MultilevelWarning, match="7 divergent transitions after warmup"):
        post = rebuild(gibbs_post, stats={"diverging": diverging})
    assert post.warnings[0].startswith("7 divergent transitions")


def test_no_warnings_when_all_is_well(gibbs_post):
    assert gibbs_post.warnings == []


@pytest.mark.parametrize("sampler", ["nuts", "gibbs"])
def test_same_seed_same_draws_for_one_or_two_cores(dyestuff, sampler):
    kw = dict(sampler=sampler, chains=2, draws=200, warmup=100, seed=5, progress=False)
    one, two = dyestuff.sample(cores=1, **kw), dyestuff.sample(cores=2, **kw)
    for a, b in [(one.beta, two.beta), (one.sigma, two.sigma), (one.sd[0], two.sd[0]), (one.b[0], two.b[0])]:
        np.testing.assert_array_equal(a, b)


def test_tables_have_the_frequentist_layout(dyestuff, gibbs_post):
    fit = dyestuff.fit()
    fe = gibbs_post.fixed_effects
    assert list(fe.index) == list(fit.fixed_effects.index)
    assert {"estimate", "std_error", "ci_lower", "ci_upper"} <= set(fe.columns)
    vc = gibbs_post.variance_components
    assert list(vc["group"]) == list(fit.variance_components["group"])
    assert {"term", "term2", "variance", "sd", "corr", "ci_lower", "ci_upper"} <= set(vc.columns)
    ge = gibbs_post.group_effects()
    assert len(ge) == dyestuff.n_levels["Batch"]
    assert (ge["ci_lower"] < ge["estimate"]).all() and (ge["estimate"] < ge["ci_upper"]).all()
    icc = gibbs_post.icc()
    assert 0 < icc.loc["Batch", "estimate"] < 1


def test_summary_names_as_brms(gibbs_post):
    table = gibbs_post.summary(group_effects=True)
    assert list(table.index[:3]) == ["b_Intercept", "sd_Batch__Intercept", "sigma"]
    assert "r_Batch[A,Intercept]" in table.index
    assert {"mean", "sd", "q2.5", "q50", "q97.5", "ess_bulk", "ess_tail", "r_hat"} <= set(table.columns)


def test_arviz_datatree(dyestuff, gibbs_post):
    tree = gibbs_post.to_arviz(posterior_predictive=True)
    assert {"posterior", "sample_stats", "observed_data", "log_likelihood", "posterior_predictive"} <= set(tree.children)
    assert tree["log_likelihood"]["y"].shape == (2, 2000, dyestuff.nobs)
    assert tree["posterior"]["r_Batch"].shape == (2, 2000, 6, 1)
