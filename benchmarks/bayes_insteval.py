"""The blocked Gibbs sampler on InstEval (73,421 rows, 4,128 random effects in three crossed terms).

Issue 4's goal: a minimum bulk ESS of 400 on every variance parameter in under 5 minutes on 2 cores
(chains in parallel processes). Stan cannot fit this model in practice; statsmodels did not finish the
frequentist fit in 10 minutes (../shared/reference/python-peers.md). Prints iterations per second, the
minimum bulk ESS over sd_* and sigma, ESS per minute of the whole sample() call and the projected time
to reach ESS 400.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bayes_insteval.py [draws per chain] [warmup]
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import multilevel as mlv  # noqa: E402

FORMULA = "y ~ 1 + service + (1|s) + (1|d) + (1|dept:service)"
TARGET_ESS, BUDGET_S = 400, 300.0


def main(draws: int = 3000, warmup: int = 300, chains: int = 2, cores: int = 2) -> None:
    model = mlv.Model(FORMULA, mlv.datasets.load("InstEval"))
    start = time.perf_counter()
    post = model.sample(sampler="gibbs", chains=chains, cores=cores, draws=draws, warmup=warmup, seed=1, progress=False)
    seconds = time.perf_counter() - start
    table = post.summary()
    variance = table.loc[[n for n in table.index if n.startswith("sd_") or n == "sigma"]]
    iters = chains * (draws + warmup)
    min_ess = float(variance["ess_bulk"].min())
    per_min = min_ess / seconds * 60
    print(f"InstEval Gibbs: {chains} chains x ({warmup} warmup + {draws} draws) on {cores} cores, {seconds:.1f} s")
    print(f"  iterations/s (all chains): {iters / seconds:.1f}   per chain: {iters / seconds / chains:.1f}")
    print(variance[["mean", "sd", "ess_bulk", "ess_tail", "r_hat"]].round(4).to_string())
    print(f"  min bulk ESS over variance parameters: {min_ess:.0f}  ->  {per_min:.0f} per minute")
    needed = TARGET_ESS / per_min * 60
    verdict = "meets" if needed < BUDGET_S else "misses"
    print(f"  time to min ESS {TARGET_ESS} (projected): {needed:.0f} s  ({verdict} the {BUDGET_S:.0f} s goal; ratio {BUDGET_S / needed:.2f}x)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
