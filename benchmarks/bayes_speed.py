"""Bayesian speed against brms and the Python peers: min bulk ESS per second of the whole sample() call.

Each model runs in a fresh process, pinned to one core with single-threaded BLAS, 4 chains x (1000 warmup
+ 1000 draws), twice: first with an empty compilation cache (a user's first run), then again (the cache
serves the second); "warm" is the median of 5 further fits in that second process, the way the peers'
timings in ../shared/reference/timings.md were taken (in-process, after a warm-up). Targets (issue 4): at least 10x brms's ESS/s of sampling, and above every peer's ESS/s
of its whole run (../shared/reference/timings.md and python-peers.md).

    python benchmarks/bayes_speed.py            # all models
    python benchmarks/bayes_speed.py radon      # one
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from child import run_pinned  # noqa: E402
from results_file import update  # noqa: E402
MODELS = {
    "sleepstudy": ("sleepstudy", "Reaction ~ 1 + Days + (1 + Days | Subject)", 88.4, 268),
    "radon": ("radon", "log_radon ~ floor + (1 | county)", 133.7, 3182.8),
    "hsb82": ("Hsb82", "mAch ~ 1 + (1 | school)", 7.3, 80),
}
CHILD = """
import json, sys, time
t0 = time.perf_counter()
import multilevel as mlv
model = mlv.Model({formula!r}, mlv.datasets.load({data!r}))
t1 = time.perf_counter()
post = model.sample(chains=4, draws=1000, warmup=1000, seed=1, progress=False)
t2 = time.perf_counter()
s = post.summary()
warm = []
for _ in range({repeats}):  # in-process refits, as the peers' timings were taken (median of 5 after a warm-up)
    t = time.perf_counter()
    model.sample(chains=4, draws=1000, warmup=1000, seed=1, progress=False)
    warm.append(time.perf_counter() - t)
print(json.dumps({{"sample_s": t2 - t1, "process_s": t2 - t0, "min_ess": float(s["ess_bulk"].min()),
                   "max_rhat": float(s["r_hat"].max()), "divergences": int(post.stats["diverging"].sum()),
                   "warm_s": sorted(warm)[len(warm) // 2] if warm else None}}))
"""


def run(name: str, cache: str, repeats: int = 0) -> dict:
    data, formula, _, _ = MODELS[name]
    return run_pinned(CHILD.format(formula=formula, data=data, repeats=repeats), cache,
                      XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")


def main(names: list[str]) -> None:
    rows = {}
    print(f"{'model':<11} {'run':<6} {'sample() s':>10} {'min ESS':>8} {'ESS/s':>8} {'10x brms':>9} {'best peer':>9}  "
          "ratio to 10x brms / to best peer")
    for name in names:
        _, _, brms, peer = MODELS[name]
        with tempfile.TemporaryDirectory() as cache:
            first = run(name, cache)
            second = run(name, cache, repeats=5)
            warm = dict(second, sample_s=second["warm_s"])
            for run_name, r in (("first", first), ("second", second), ("warm", warm)):
                rate = r["min_ess"] / r["sample_s"]
                verdicts = [f"{rate / (10 * brms):.2f}x {'ok' if rate >= 10 * brms else 'below'}",
                            f"{rate / peer:.2f}x {'ok' if rate > peer else 'below'}"]
                rows[f"{name}/{run_name}"] = dict(r, ess_per_s=rate)
                print(f"{name:<11} {run_name:<6} {r['sample_s']:>10.2f} {r['min_ess']:>8.0f} {rate:>8.0f} "
                      f"{10 * brms:>9.0f} {peer:>9.0f}  {' / '.join(verdicts)}")
    update("bayes_speed", rows)


if __name__ == "__main__":
    main(sys.argv[1:] or list(MODELS))
