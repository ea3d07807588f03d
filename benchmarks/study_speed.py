"""Study speed (issue 15): cost per replicate and method against a standalone fit, and 2 cores against 1.

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/study_speed.py [--replicates 60] [--cores-replicates 100] [--no-save]

Standalone: what a user does by hand for one data set of the same shape — build `mlv.Model(formula, data)`
and fit it (median of runs after a warm-up); "fit only" leaves the model building out. Study: the wall time
of `mlv.study` with that one method, divided by the replicates (simulation, refit through
`Model.with_response`, intervals and scoring included). Targets: study / standalone <= 1.2; 2 cores >= 1.6x
the throughput of 1, on a study of the default size (100 replicates, all four methods). The machine may be
shared: the load average is recorded, and beside the wall-time ratio a CPU-time one, what 2 idle cores
would give: the 1-core run's CPU seconds over half the worker processes' (each worker's start, importing
the package, counted). Under load the wall-time ratio says little: Linux's autogroup scheduler shares the
CPUs between sessions, so a session's 2 workers get about what its 1 process got. Results go to results/study_speed.json, the previous ones shown beside.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported: single-threaded BLAS

import argparse
import json
import resource
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
ROUNDS = 5
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
    return study_times(model, truth, methods, replicates, cores)["wall"]


def study_times(model, truth, methods, replicates: int, cores: int) -> dict:
    """Wall seconds of a study and CPU seconds of this process and of its (finished) worker processes."""
    start, cpu, workers = time.perf_counter(), time.process_time(), children_cpu()
    mlv.study(model, truth, methods, replicates=replicates, seed=1, cores=cores, bayes=BAYES, progress=False)
    return {"wall": time.perf_counter() - start, "cpu": time.process_time() - cpu, "workers_cpu": children_cpu() - workers}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicates", type=int, default=60)
    parser.add_argument("--cores-replicates", type=int, default=100)
    parser.add_argument("--part", choices=["all", "replicate", "cores"], default="all")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    scenario = mlv.SCENARIOS[SCENARIO]
    model = scenario.model()
    print(f"load average {os.getloadavg()[0]:.2f}; scenario '{SCENARIO}' ({model.nobs} rows); {args.replicates} replicates")
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results = dict(previous)
    if args.part in ("all", "replicate"):
        results |= per_replicate(scenario, model, args.replicates)
    if args.part in ("all", "cores"):
        results["cores"] = cores(scenario, model, args.cores_replicates)
    report(results, previous)
    if not args.no_save:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1))


def per_replicate(scenario, model, replicates: int) -> dict:
    """Per method, in ROUNDS rounds (a shared machine's load changes): standalone, fit only and a study of
    replicates / ROUNDS replicates; the medians, and the median of the rounds' ratios."""
    data = model.design.frame.assign(y=simulate(model, scenario.truth, seed=0))
    fitted = mlv.Model(scenario.formula, data)
    out = {}
    for method, call in STANDALONE.items():
        rounds = []
        for _ in range(ROUNDS):
            standalone = median_seconds(lambda: call(mlv.Model(scenario.formula, data)), runs=3)
            fit_only = median_seconds(lambda: call(fitted.with_response(fitted.design.y)), runs=3)
            study = study_seconds(model, scenario.truth, [method], replicates // ROUNDS, 1) / (replicates // ROUNDS)
            rounds.append((standalone, fit_only, study))
        standalone, fit_only, study = (statistics.median(r[i] for r in rounds) for i in range(3))
        out[method] = {"standalone": standalone, "fit_only": fit_only, "study_per_replicate": study,
                       "ratio": statistics.median(r[2] / r[0] for r in rounds),
                       "ratio_to_fit_only": statistics.median(r[2] / r[1] for r in rounds),
                       "load_average": os.getloadavg()[0]}
    return out


def cores(scenario, model, replicates: int) -> dict:
    """1 core against 2, twice in turn; the medians."""
    methods, load_before = list(STANDALONE), os.getloadavg()[0]
    runs = [(study_times(model, scenario.truth, methods, replicates, 1), study_times(model, scenario.truth, methods, replicates, 2))
            for _ in range(2)]
    one, two = ({k: statistics.median(r[i][k] for r in runs) for k in runs[0][i]} for i in (0, 1))
    return {"replicates": replicates, "one": one["wall"], "two": two["wall"],
            "throughput_ratio": statistics.median(r[0]["wall"] / r[1]["wall"] for r in runs), "one_cpu": one["cpu"],
            "two_workers_cpu": two["workers_cpu"], "two_parent_cpu": two["cpu"],
            "cpu_ratio": statistics.median(r[0]["cpu"] / (r[1]["workers_cpu"] / 2) for r in runs),
            "load_average": [load_before, os.getloadavg()[0]]}


def report(results: dict, previous: dict) -> None:
    print(f"{'method':<15}{'standalone s':>14}{'fit only s':>12}{'study s/rep':>13}{'ratio':>8}{'previous':>10}{'/fit only':>11}")
    for method in STANDALONE:
        r, old = results[method], previous.get(method, {}).get("ratio")
        print(f"{method:<15}{r['standalone']:>14.4f}{r['fit_only']:>12.4f}{r['study_per_replicate']:>13.4f}"
              f"{r['ratio']:>8.2f}{'' if old is None else f'{old:>10.2f}'}{r.get('ratio_to_fit_only', float('nan')):>11.2f}")
    c, old = results["cores"], previous.get("cores", {}).get("throughput_ratio")
    print(f"all four methods, {c['replicates']} replicates: 1 core {c['one']:.1f} s, 2 cores {c['two']:.1f} s: throughput "
          f"x{c['throughput_ratio']:.2f}" + ("" if old is None else f" (previous x{old:.2f})")
          + f", load average {c['load_average'][0]:.1f} -> {c['load_average'][1]:.1f}")
    print(f"CPU: 1 core {c['one_cpu']:.1f} s; 2 cores: workers {c['two_workers_cpu']:.1f} s, parent {c['two_parent_cpu']:.1f} s: "
          f"on 2 idle cores x{c['cpu_ratio']:.2f}")


if __name__ == "__main__":
    main()
