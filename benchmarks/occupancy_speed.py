"""NUTS (or Pólya-Gamma Gibbs) on spOccupancy's OVEN occupancy model against JAGS (issue 17): min bulk ESS per
second of the whole `model.sample(...)` call, against JAGS's 64.5 per second of sampling
(../shared/reference/oven_occupancy_jags.json).

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/occupancy_speed.py [--draws 2000] [--cores 1] [--sampler gibbs]

Three calls, each in a fresh Python process but the last: the first call of a session with an EMPTY compile cache
(a new machine or a new version: tracing and compiling everything), the first call of a session with that cache
warm (the user's next session), and a second call in that session (programs in memory). For each: wall-clock and
CPU seconds of the call (the CPU figure moves less with the shared machine's load), min bulk ESS, and the ratio to
JAGS of ESS per wall-clock second; the agreement with JAGS in posterior means and SDs. Writes
results/occupancy_speed.json. Printed, never asserted.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported: single-threaded BLAS

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFERENCE = json.loads((HERE.parent.parent / "shared" / "reference" / "oven_occupancy_jags.json").read_text())
JAGS = REFERENCE["timing"]["min_ess_bulk_per_second_sampling"]


def session(args, calls: int) -> list[dict]:
    """`calls` sample() calls in this process (the caller set MULTILEVEL_CACHE): per call its seconds, CPU seconds,
    min bulk ESS and agreement with JAGS."""
    sys.path.insert(0, str(HERE.parent / "src"))
    import multilevel as mlv

    df = mlv.datasets.load("oven_occupancy")
    model = mlv.Occupancy("~ Elevation_scaled + I(Elevation_scaled**2)", "~ day_scaled + tod_scaled + I(day_scaled**2)", df)
    out = []
    for _ in range(calls):
        start, cpu = time.perf_counter(), time.process_time()
        post = model.sample(chains=4, draws=args.draws, warmup=args.warmup, seed=1, cores=args.cores, sampler=args.sampler)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        table = post.summary().loc[model.parameter_names]
        refs = dict(zip(model.parameter_names, REFERENCE["posterior_summary"]))
        out.append({"seconds": seconds, "cpu_seconds": cpu, "min_ess_bulk": float(table["ess_bulk"].min()),
                    "slowest": table["ess_bulk"].idxmin(), "load_average": os.getloadavg()[0],
                    "mean_error_in_sd": {n: float((table.loc[n, "mean"] - r["mean"]) / r["sd"]) for n, r in refs.items()},
                    "sd_ratio": {n: float(table.loc[n, "sd"] / r["sd"]) for n, r in refs.items()}})
    return out


def in_fresh_process(args, cache: str, calls: int) -> list[dict]:
    """`session` in a new Python process with MULTILEVEL_CACHE=cache (imports and all)."""
    command = [sys.executable, __file__, "--session", str(calls), "--draws", str(args.draws), "--warmup", str(args.warmup),
               "--cores", str(args.cores), "--sampler", args.sampler]
    done = subprocess.run(command, env=os.environ | {"MULTILEVEL_CACHE": cache}, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--sampler", choices=("nuts", "gibbs"), default="nuts")
    parser.add_argument("--session", type=int, default=0, help=argparse.SUPPRESS)  # the child process's calls
    args = parser.parse_args()
    if args.session:
        print(json.dumps(session(args, args.session)))
        return
    from results_file import update

    row = {"sampler": args.sampler, "chains": 4, "draws": args.draws, "warmup": args.warmup, "cores": args.cores,
           "jags_ess_per_second": JAGS}
    with tempfile.TemporaryDirectory() as cache:
        calls = in_fresh_process(args, cache, 1) + in_fresh_process(args, cache, 2)
    for name, call in zip(("empty cache, first call", "warm cache, first call", "second call in a session"), calls):
        call["ess_per_second"] = call["min_ess_bulk"] / call["seconds"]
        call["ratio_to_jags"] = call["ess_per_second"] / JAGS
        call["ess_per_cpu_second"] = call["min_ess_bulk"] / call["cpu_seconds"]
        row[name.replace(" ", "_").replace(",", "")] = call
        print(f"{name}: {call['seconds']:.1f} s ({call['cpu_seconds']:.1f} CPU-s, load {call['load_average']:.1f}), "
              f"min bulk ESS {call['min_ess_bulk']:.0f} ({call['slowest']}), {call['ess_per_second']:.0f} ESS/s = "
              f"{call['ratio_to_jags']:.1f}x JAGS ({JAGS:.1f}); {call['ess_per_cpu_second']:.0f} ESS per CPU-s")
    last = calls[-1]
    row["max_mean_error_in_sd"] = max(abs(v) for v in last["mean_error_in_sd"].values())
    row["max_sd_ratio_error"] = max(abs(v - 1) for v in last["sd_ratio"].values())
    update("occupancy_speed", {f"oven {args.sampler} cores={args.cores}": row})
    for name in last["sd_ratio"]:
        print(f"  {name:28s} mean {last['mean_error_in_sd'][name]:+.3f} SD from JAGS, sd ratio {last['sd_ratio'][name]:.3f}")


if __name__ == "__main__":
    main()
