"""Bayesian GLMM speed against brms: min bulk ESS per second of the whole sample() call.

Each model runs in a fresh process pinned to one core, 4 chains x (1000 warmup + 1000 draws), twice: with an
empty compilation cache (a user's first run), then again (the cache serves it). brms's rate is its sampling-only
min bulk ESS/s from ../shared/reference/timings.md; the target (issue 13) is 10x that. The rate is per CPU second of
the call (`time.process_time`; the wall seconds are recorded too): on a shared machine wall time measures the load.

    python benchmarks/glmm_bayes_speed.py              # all models, NUTS
    python benchmarks/glmm_bayes_speed.py cbpp         # one
    python benchmarks/glmm_bayes_speed.py --gibbs cbpp verbagg   # Pólya–Gamma Gibbs (binomial-logit models)
    python benchmarks/glmm_bayes_speed.py --auto cbpp salamanders  # the default sampler="auto" (IMH where it applies)
    python benchmarks/glmm_bayes_speed.py --auto --seeds 5 cbpp    # seeds 1..5: the spread of the IMH's ESS

Gibbs compiles nothing, so it runs once per model ("first"). The rows record the sampler that ran, the IMH
proposal's check (Pareto k, acceptance rate, nodes) and the 1-minute load average when the run ended.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from child import run_pinned  # noqa: E402
from results_file import update  # noqa: E402
MODELS = {  # data, formula, family, brms's min bulk ESS per second of sampling
    "cbpp": ("cbpp", "incidence | trials(size) ~ period + (1 | herd)", "binomial", 476),
    "salamanders": ("Salamanders", "count ~ spp + mined + (1 | site)", "negbinomial", 161),
    "verbagg": ("VerbAgg", "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", "bernoulli", 5.3),
    "grouseticks": ("grouseticks", "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", "poisson", 1.6),
}
CHILD = """
import json, os, time
import multilevel as mlv
model = mlv.Model({formula!r}, mlv.datasets.load({data!r}), family={family!r})
t, c = time.perf_counter(), time.process_time()
post = model.sample(chains=4, draws=1000, warmup=1000, seed={seed}, progress=False, sampler={sampler!r})
seconds, cpu = time.perf_counter() - t, time.process_time() - c
s = post.summary()
check = {{k: v for k, v in (post.proposal_check or {{}}).items() if k != "reason"}}
print(json.dumps({{"sample_s": seconds, "cpu_s": cpu, "min_ess": float(s["ess_bulk"].min()), "max_rhat": float(s["r_hat"].max()),
                   "divergences": int(sum(post.stats.get("diverging", [0]).ravel()) if "diverging" in post.stats else 0),
                   "sampler": post.sampler, "proposal": check, "load_1min": os.getloadavg()[0]}}))
"""


def run(name: str, cache: str, sampler: str, seed: int = 1) -> dict:
    data, formula, family, _ = MODELS[name]
    return run_pinned(CHILD.format(formula=formula, data=data, family=family, sampler=sampler, seed=seed), cache)


def main(names: list[str], sampler: str = "nuts", seeds: int = 1) -> None:
    rows = {}
    print(f"{'model':<12} {'run':<9} {'ran':<5} {'wall s':>7} {'CPU s':>7} {'min ESS':>8} {'ESS/CPU s':>9} {'brms':>6} {'ratio':>6} "
          f"{'div':>4} {'load':>5}")
    for name in names:
        brms = MODELS[name][3]
        for seed in range(1, seeds + 1):
            with tempfile.TemporaryDirectory() as cache:
                for run_name in ("first", "second") if sampler != "gibbs" else ("first",):
                    r = run(name, cache, sampler, seed)
                    rate = r["min_ess"] / r["cpu_s"]
                    label = run_name + (f"/seed{seed}" if seed > 1 else "")
                    rows[f"{name}/{label}" + ("" if sampler == "nuts" else f"/{sampler}")] = dict(r, ess_per_cpu_s=rate)
                    print(f"{name:<12} {label:<9} {r['sampler']:<5} {r['sample_s']:>7.2f} {r['cpu_s']:>7.2f} {r['min_ess']:>8.0f} "
                          f"{rate:>9.1f} {brms:>6} {rate / brms:>6.2f} {r['divergences']:>4} {r['load_1min']:>5.1f}")
    update("glmm_bayes_speed", rows)


if __name__ == "__main__":
    args = sys.argv[1:]
    flags = {a for a in args if a.startswith("--")}
    seeds = int(args[args.index("--seeds") + 1]) if "--seeds" in args else 1
    names = [a for a in args if not a.startswith("--") and not a.isdigit()]
    sampler = next((f[2:] for f in ("--gibbs", "--auto", "--imh") if f in flags), "nuts")
    main(names or (["cbpp", "verbagg"] if sampler == "gibbs" else list(MODELS)), sampler, seeds)
