"""Speed of the APPROXIMATE Laplace-marginalised sampler (`sampler="laplace"`) against brms: min bulk ESS per
second of the whole sample() call, its importance-sampling check included, as `glmm_bayes_speed.py` measures
the exact samplers (fresh process on one core, 4 chains x (1000 + 1000), a first run with an empty
compilation cache and a second one). Wall and CPU seconds are both recorded: on a shared machine the CPU time
of the process is the fair one; the ratio uses CPU seconds. The check's largest estimated bias is printed.

    python benchmarks/glmm_laplace_speed.py                 # verbagg and grouseticks (the crossed models)
    python benchmarks/glmm_laplace_speed.py cbpp            # one
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from glmm_bayes_speed import MODELS  # noqa: E402
from child import run_pinned  # noqa: E402
from results_file import update  # noqa: E402

CHILD = """
import json, time
import multilevel as mlv
model = mlv.Model({formula!r}, mlv.datasets.load({data!r}), family={family!r})
t, c = time.perf_counter(), time.process_time()
post = model.sample(chains=4, draws=1000, warmup=1000, seed=1, progress=False, sampler="laplace")
wall, cpu = time.perf_counter() - t, time.process_time() - c
s, check = post.summary(), post.importance_check
worst = check["bias"].abs().idxmax()
print(json.dumps({{"sample_s": wall, "cpu_s": cpu, "min_ess": float(s["ess_bulk"].min()),
                   "max_rhat": float(s["r_hat"].max()), "divergences": int(post.stats["diverging"].sum()),
                   "largest_bias": [worst, float(check.loc[worst, "bias"])], "check": check.attrs}}))
"""


def run(name: str, cache: str) -> dict:
    data, formula, family, _ = MODELS[name]
    return run_pinned(CHILD.format(formula=formula, data=data, family=family), cache)


def main(names: list[str]) -> None:
    rows = {}
    print(f"{'model':<12} {'run':<6} {'wall s':>8} {'CPU s':>8} {'min ESS':>8} {'ESS/CPU s':>9} {'brms':>6} {'ratio':>6} "
          f"{'div':>4}  largest estimated bias")
    for name in names:
        brms = MODELS[name][3]
        with tempfile.TemporaryDirectory() as cache:
            for run_name in ("first", "second"):
                r = run(name, cache)
                rate = r["min_ess"] / r["cpu_s"]
                rows[f"{name}/{run_name}"] = dict(r, ess_per_cpu_s=rate)
                print(f"{name:<12} {run_name:<6} {r['sample_s']:>8.1f} {r['cpu_s']:>8.1f} {r['min_ess']:>8.0f} {rate:>9.1f} "
                      f"{brms:>6} {rate / brms:>6.2f} {r['divergences']:>4}  {r['largest_bias'][1]:+.3f} ({r['largest_bias'][0]})",
                      flush=True)
                update("glmm_laplace_speed", rows)


if __name__ == "__main__":
    main(sys.argv[1:] or ["verbagg", "grouseticks"])
