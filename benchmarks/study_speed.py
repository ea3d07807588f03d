"""Study speed (issue 15): cost per replicate and method against a standalone fit, and 2 cores against 1.

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/study_speed.py [--replicates 60] [--no-save]

Standalone: what a user does by hand for one data set of the same shape — build `mlv.Model(formula, data)`
and fit it (median of runs after a warm-up); "fit only" leaves the model building out. Study: the wall time
of `mlv.study` with that one method, divided by the replicates (simulation, refit through
`Model.with_response`, intervals and scoring included). Targets: study / standalone <= 1.2; 2 cores >= 1.6x
the throughput of 1. Results go to results/study_speed.json, the previous ones shown beside.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported: single-threaded BLAS

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "study_speed.json"
sys.path.insert(0, str(HERE.parent / "src"))

import multilevel as mlv  # noqa: E402
from multilevel.study import simulate  # noqa: E402

SCENARIO = "correlated slopes"
BAYES = {"sampler": "gibbs", "chains": 1, "draws": 500, "warmup": 250}
STANDALONE = {  # method -> what a user calls on a model of one data set
    "ML": lambda m: m.fit(method="ML"),
    "REML": lambda m: m.fit(),
    "zero-avoiding": lambda m: m.fit(prior="zero-avoiding"),
    "Bayes": lambda m: m.sample(seed=1, progress=False, **BAYES),
}


def median_seconds(function, runs: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def study_seconds(model, truth, methods, replicates: int, cores: int) -> float:
    start = time.perf_counter()
    mlv.study(model, truth, methods, replicates=replicates, seed=1, cores=cores, bayes=BAYES, progress=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicates", type=int, default=60)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    scenario = mlv.SCENARIOS[SCENARIO]
    model = scenario.model()
    data = model.design.frame.assign(y=simulate(model, scenario.truth, seed=0))
    print(f"load average {os.getloadavg()[0]:.2f}; scenario '{SCENARIO}' ({model.nobs} rows); {args.replicates} replicates")
    results = {}
    for method, call in STANDALONE.items():
        fitted = mlv.Model(scenario.formula, data)
        standalone = median_seconds(lambda: call(mlv.Model(scenario.formula, data)), runs=7)
        fit_only = median_seconds(lambda: call(fitted.with_response(fitted.design.y)), runs=7)
        per_replicate = study_seconds(model, scenario.truth, [method], args.replicates, 1) / args.replicates
        results[method] = {"standalone": standalone, "fit_only": fit_only, "study_per_replicate": per_replicate,
                           "ratio": per_replicate / standalone}
    methods = list(STANDALONE)
    one = study_seconds(model, scenario.truth, methods, args.replicates, 1)
    two = study_seconds(model, scenario.truth, methods, args.replicates, 2)
    results["cores"] = {"one": one, "two": two, "throughput_ratio": one / two}
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    report(results, previous)
    if not args.no_save:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1))


def report(results: dict, previous: dict) -> None:
    print(f"{'method':<15}{'standalone s':>14}{'fit only s':>12}{'study s/rep':>13}{'ratio':>8}{'previous':>10}")
    for method in STANDALONE:
        r, old = results[method], previous.get(method, {}).get("ratio")
        print(f"{method:<15}{r['standalone']:>14.4f}{r['fit_only']:>12.4f}{r['study_per_replicate']:>13.4f}"
              f"{r['ratio']:>8.2f}{'' if old is None else f'{old:>10.2f}'}")
    c, old = results["cores"], previous.get("cores", {}).get("throughput_ratio")
    print(f"all four methods: 1 core {c['one']:.1f} s, 2 cores {c['two']:.1f} s: throughput x{c['throughput_ratio']:.2f}"
          + ("" if old is None else f" (previous x{old:.2f})"))


if __name__ == "__main__":
    main()
