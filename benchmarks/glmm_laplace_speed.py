"""Speed of the APPROXIMATE Laplace-marginalised sampler (`sampler="laplace"`) against brms: min bulk ESS per
second of the whole sample() call, its importance-sampling check included, as `glmm_bayes_speed.py` measures
the exact samplers (fresh process on one core, 4 chains x (1000 + 1000), a first run with an empty
compilation cache and a second one).

    python benchmarks/glmm_laplace_speed.py                 # cbpp and verbagg
    python benchmarks/glmm_laplace_speed.py grouseticks     # one (slow: ~50 ms per density evaluation)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from glmm_bayes_speed import MODELS, run  # noqa: E402
from results_file import update  # noqa: E402


def main(names: list[str]) -> None:
    rows = {}
    print(f"{'model':<12} {'run':<6} {'sample() s':>10} {'min ESS':>8} {'ESS/s':>8} {'brms':>6} {'ratio':>6} {'div':>4}")
    for name in names:
        brms = MODELS[name][3]
        with tempfile.TemporaryDirectory() as cache:
            for run_name in ("first", "second"):
                r = run(name, cache, "laplace")
                rate = r["min_ess"] / r["sample_s"]
                rows[f"{name}/{run_name}"] = dict(r, ess_per_s=rate)
                print(f"{name:<12} {run_name:<6} {r['sample_s']:>10.2f} {r['min_ess']:>8.0f} {rate:>8.1f} {brms:>6} "
                      f"{rate / brms:>6.2f} {r['divergences']:>4}")
    update("glmm_laplace_speed", rows)


if __name__ == "__main__":
    main(sys.argv[1:] or ["cbpp", "verbagg"])
