"""Partitioned (Dask) against in-memory on a Parquet folder: CPU, wall and peak memory, each path in a fresh
process, single-threaded BLAS, synchronous Dask scheduler.

    PYTHONPATH=src python benchmarks/scale_data.py nested 10000000 /tmp/nested_1e7
    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/scale.py nested /tmp/nested_1e7 [--only dask] [--repeat 3] [--levels] [--categories known] [--dense] [--fill pairs]
    PYTHONPATH=src python benchmarks/scale_data.py crossed 10000000 /tmp/grow_1e7 --items 20000   # items growing
    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/scale.py crossed /tmp/grow_1e7 --only dask --solver iterative

The in-memory path reads the folder with pandas, then Model() and fit(); the Dask path gives Model() the
folder. "model" is reading plus Model() (design and cross-products); "fit" adds the REML fit. Peak memory is
the process's maximum resident set (imports included; "import" shows that baseline). Targets (issue 14): at
10^7 nested rows, Dask CPU <= 0.25x and peak memory <= 0.3x the in-memory path. Each run's marks go to
benchmarks/results/scale.json under '<kind> <folder name>'. Balanced data (scale_data.py
balanced) are also checked against their closed-form REML estimates:

    PYTHONPATH=src python benchmarks/scale_data.py balanced 100000000 /tmp/balanced_1e8 --groups 1000000
    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/scale.py balanced /tmp/balanced_1e8 --only dask

Results: docs/scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from results_file import update  # noqa: E402
from scale_data import FORMULAS  # noqa: E402

CHILD = """
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
import multilevel as mlv, pandas as pd
ARGS = json.loads(sys.argv[1])  # the parent's argparse namespace, with the path to run and the formula
FOLDER, PATH = ARGS["folder"], ARGS["path"]
def mark():
    return {"cpu": time.process_time(), "wall": time.perf_counter(), "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
out = {"import": mark()}
import multilevel.engine as engine
if ARGS["dense"]:  # every partition's sums dense over all levels (the path before sparse partials)
    import multilevel.level_partials as level_partials
    level_partials.SPARSE_SHARE = 0.0
if ARGS["fill"] != "auto":  # force the first term's fill: the map, the pair list (scalar first term) or the sparse product
    engine.fill_map_fits = lambda pairs: ARGS["fill"] == "map"
    engine.pairs_fit = lambda B, q, k0=1: ARGS["fill"] == "pairs"
data = pd.read_parquet(FOLDER) if PATH == "memory" else FOLDER
given = {"levels": json.load(open(FOLDER + "/_levels.json"))} if ARGS["levels"] and PATH == "dask" else {}
if ARGS["categories"] and PATH == "dask":  # a Dask DataFrame whose grouping factors are categoricals, their categories known or not
    import dask.dataframe as dd
    data = dd.read_parquet(FOLDER)
    for name, levels in json.load(open(FOLDER + "/_levels.json")).items():
        data[name] = data[name].astype(pd.CategoricalDtype(levels))
        data[name] = data[name] if ARGS["categories"] == "known" else data[name].cat.as_unknown()
model = mlv.Model(ARGS["formula"], data, **given)
model.cross_products
out["model"] = mark()
fit = model.fit(solver=ARGS["solver"])
out["fit"] = mark()
out["objective"], out["theta"] = fit.objective, list(fit.theta)
out["beta"], out["sigma"] = list(fit.beta), fit.sigma
out["evaluations"], out["objective_error"] = fit.info.evaluations, getattr(fit, "objective_error", 0.0)
print(json.dumps(out))
"""


def run(path: str, args: argparse.Namespace) -> dict:
    """One path in a fresh process: its marks (CPU and wall since start, peak RSS) and its fit. The child reads the
    whole namespace as one JSON argument, so a new flag needs no plumbing."""
    given = dict(vars(args), folder=str(args.folder), path=path, formula=FORMULAS[args.kind])
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(given)], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"the {path} path failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: dict[str, dict]) -> str:
    """Markdown rows: per path and stage, CPU and wall seconds (from the start of the process's work) and
    peak memory, with the Dask/in-memory ratios."""
    lines = ["| path | stage | CPU s | wall s | peak MB |", "|---|---|---|---|---|"]
    for path, marks in results.items():
        start = marks["import"]
        for stage in ("import", "model", "fit"):
            m = marks[stage]
            lines.append(f"| {path} | {stage} | {m['cpu'] - start['cpu']:.1f} | {m['wall'] - start['wall']:.1f} | {m['rss_mb']:.0f} |")
    if set(results) == {"memory", "dask"}:
        mem, dsk = results["memory"], results["dask"]
        for stage in ("model", "fit"):
            cpu = (dsk[stage]["cpu"] - dsk["import"]["cpu"]) / (mem[stage]["cpu"] - mem["import"]["cpu"])
            wall = (dsk[stage]["wall"] - dsk["import"]["wall"]) / (mem[stage]["wall"] - mem["import"]["wall"])
            peak = dsk[stage]["rss_mb"] / mem[stage]["rss_mb"]
            lines.append(f"| dask / memory | {stage} | {cpu:.2f}x | {wall:.2f}x | {peak:.2f}x |")
        lines.append(f"\nobjective difference {dsk['objective'] - mem['objective']:.3g}, "
                     f"max theta difference {max(abs(a - b) for a, b in zip(dsk['theta'], mem['theta'])):.3g}")
    return "\n".join(lines)


def closed_form_check(expected: dict, results: dict[str, dict]) -> str:
    """Each path's REML estimates of the balanced one-way design against their closed form (scale_data.py)."""
    lines = []
    for path, out in results.items():
        sd_g = out["theta"][0] * out["sigma"]
        lines.append(f"{path}: beta {out['beta'][0]:.10g} (closed form {expected['beta']:.10g}), sigma {out['sigma']:.10g} "
                     f"({expected['sigma']:.10g}), sd_g {sd_g:.10g} ({expected['sd_g']:.10g}); largest relative difference "
                     f"{max(abs(a / b - 1) for a, b in ((out['beta'][0], expected['beta']), (out['sigma'], expected['sigma']), (sd_g, expected['sd_g']))):.2g}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(FORMULAS))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--only", choices=["memory", "dask"])
    parser.add_argument("--levels", action="store_true", help="the Dask path is given the grouping factors' levels "
                        "(_levels.json, written by scale_data.py), which skips its levels pass")
    parser.add_argument("--categories", choices=["known", "unknown"], help="the Dask path reads the folder as a Dask "
                        "DataFrame whose grouping factors are categoricals (of _levels.json), their categories known "
                        "(the levels pass is skipped) or not")
    parser.add_argument("--dense", action="store_true", help="hold every partition's sums dense over all levels "
                        "(no sparse partials: level_partials.SPARSE_SHARE = 0)")
    parser.add_argument("--fill", choices=["auto", "map", "pairs", "product"], default="auto",
                        help="force the engine's fill of the first term (auto: by its size and the memory available)")
    parser.add_argument("--solver", choices=["exact", "iterative"], default="exact",
                        help="fit(solver=...): the exact engine or the approximate iterative one (crossed scalar terms)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per path; the one with the least model-stage CPU is kept "
                        "(on a shared machine the least disturbed)")
    args = parser.parse_args()
    paths = [args.only] if args.only else ["memory", "dask"]
    runs = {path: [] for path in paths}
    for _ in range(args.repeat):  # alternating, so both paths see the same spells of load
        for path in paths:
            runs[path].append(run(path, args))
    results = {path: min(rs, key=lambda r: r["model"]["cpu"] - r["import"]["cpu"]) for path, rs in runs.items()}
    load = os.getloadavg()[0]
    print(f"{args.kind}: {FORMULAS[args.kind]}, {args.folder}; load average {load:.1f}" + ("; levels given" if args.levels else "")
          + ("" if args.fill == "auto" else f"; fill {args.fill}") + (f"; categories {args.categories}" if args.categories else "") + ("; dense partials" if args.dense else "")
          + ("" if args.solver == "exact" else f"; solver {args.solver}"))
    print(table(results))
    expected = args.folder / "_closed_form.json"
    row = {"formula": FORMULAS[args.kind], "load_average": load, "repeat": args.repeat, "levels_given": args.levels,
           "fill": args.fill, "categories": args.categories, "dense": args.dense,
           "solver": args.solver, "paths": results}
    if expected.exists():
        row["closed_form"] = json.loads(expected.read_text())
        print(closed_form_check(row["closed_form"], results))
    key = f"{args.kind} {args.folder.name}" + (" levels given" if args.levels else "") + ("" if args.fill == "auto" else f" fill {args.fill}")
    key += (f" categories {args.categories}" if args.categories else "") + (" dense" if args.dense else "")
    key += "" if args.solver == "exact" else f" solver {args.solver}"
    print(update("scale", {key: row}))


if __name__ == "__main__":
    main()
