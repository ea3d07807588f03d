"""NUTS (or Pólya-Gamma Gibbs) on spOccupancy's OVEN occupancy model against JAGS (issue 17): min bulk ESS per
second of the whole `model.sample(...)` call, against JAGS's 64.5 per second of sampling
(../shared/reference/oven_occupancy_jags.json).

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/occupancy_speed.py [--draws 2000] [--cores 1] [--sampler gibbs]

Runs the call twice (the first compiles or loads the cached programs; the second is what a user's next session
sees) and prints both, with the agreement with JAGS in posterior SDs; writes results/occupancy_speed.json. Printed,
never asserted.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported: single-threaded BLAS

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFERENCE = json.loads((HERE.parent.parent / "shared" / "reference" / "oven_occupancy_jags.json").read_text())
sys.path.insert(0, str(HERE.parent / "src"))

import multilevel as mlv  # noqa: E402
from results_file import update  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--sampler", choices=("nuts", "gibbs"), default="nuts")
    args = parser.parse_args()
    df = mlv.datasets.load("oven_occupancy")
    model = mlv.Occupancy("~ Elevation_scaled + I(Elevation_scaled**2)", "~ day_scaled + tod_scaled + I(day_scaled**2)", df)
    jags = REFERENCE["timing"]["min_ess_bulk_per_second_sampling"]
    row = {"sampler": args.sampler, "chains": 4, "draws": args.draws, "warmup": args.warmup, "cores": args.cores,
           "jags_ess_per_second": jags, "load_average": os.getloadavg()[0]}
    for run in ("first call", "second call"):
        start = time.perf_counter()
        post = model.sample(chains=4, draws=args.draws, warmup=args.warmup, seed=1, cores=args.cores, sampler=args.sampler)
        seconds = time.perf_counter() - start
        table = post.summary().loc[model.parameter_names]
        ess = table["ess_bulk"].min()
        print(f"{run}: {seconds:.1f} s, min bulk ESS {ess:.0f} ({table['ess_bulk'].idxmin()}), {ess / seconds:.0f} ESS/s "
              f"= {ess / seconds / jags:.1f}x JAGS ({jags:.1f})")
        row[run.replace(" ", "_")] = {"seconds": seconds, "min_ess_bulk": ess, "ess_per_second": ess / seconds,
                                      "ratio_to_jags": ess / seconds / jags}
    row["max_mean_error_in_sd"] = max(abs(table.loc[n, "mean"] - r["mean"]) / r["sd"]
                                      for n, r in zip(model.parameter_names, REFERENCE["posterior_summary"]))
    update("occupancy_speed", {f"oven {args.sampler} cores={args.cores}": row})
    for name, ref in zip(model.parameter_names, REFERENCE["posterior_summary"]):
        print(f"  {name:28s} mean {table.loc[name, 'mean']:8.4f} (JAGS {ref['mean']:8.4f}, "
              f"{(table.loc[name, 'mean'] - ref['mean']) / ref['sd']:+.3f} SD)  sd ratio {table.loc[name, 'sd'] / ref['sd']:.3f}")


if __name__ == "__main__":
    main()
