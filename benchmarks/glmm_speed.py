"""GLMM fit speed against glmer / glmer.nb / glmmTMB: every GLMM reference model, single-threaded.

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/glmm_speed.py [--runs 3] [--only cbpp]

Times `mlv.Model(formula, data, family=...).fit(...)` as a whole (data loading excluded), the median of N runs
after one warm-up, in CPU seconds of this process (single-threaded, so equal to wall time on an idle machine, and
not inflated when other jobs share the cores; the wall-clock median is printed and recorded beside it), against the reference BLAS time of the GLMM table in ../shared/reference/timings.md (the
only column filled for every GLMM row; VerbAgg's glmer time, which the table lacks, as issue 12 quotes it), and against the `glmm` package (PyPI, Rust) in the same run when it is
importable (`--peer-path DIR` for a copy installed with `pip install --target DIR glmm`). Targets (issue 12): at most 0.3x the R time, 0.1x where R takes over 0.5 s; within 3x of `glmm`.
Printed and written to results/glmm_speed.json, never asserted.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported: single-threaded BLAS

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parent.parent / "shared" / "reference"
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import multilevel as mlv  # noqa: E402
from results_file import update  # noqa: E402

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
TOENAIL = "outcome ~ treatment*visit + (1 | patientID)"
MODELS = {  # reference id: (formula, data set, family, fit options)
    "cbpp_binomial_laplace": (CBPP, "cbpp", "binomial", {}),
    "cbpp_binomial_agq25": (CBPP, "cbpp", "binomial", {"nAGQ": 25}),
    "grouseticks_poisson": ("TICKS ~ YEAR + cHEIGHT + (1|BROOD) + (1|INDEX) + (1|LOCATION)", "grouseticks", "poisson", {}),
    "grouseticks_rawheight_poisson": ("TICKS ~ YEAR + HEIGHT + (1|BROOD) + (1|INDEX) + (1|LOCATION)", "grouseticks", "poisson", {}),
    "toenail_binomial_laplace": (TOENAIL, "toenail", "binomial", {}),
    "toenail_binomial_agq20": (TOENAIL, "toenail", "binomial", {"nAGQ": 20}),
    "owls_poisson_offset": ("SiblingNegotiation ~ FoodTreatment*SexParent + offset(log(BroodSize)) + (1|Nest)", "Owls", "poisson", {}),
    "grouseticks_nb": ("TICKS ~ YEAR + cHEIGHT + (1|BROOD) + (1|LOCATION)", "grouseticks", "negbinomial", {"information": "expected"}),
    "salamanders_nb2": ("count ~ spp + mined + (1|site)", "Salamanders", "nbinom2", {}),
    "verbagg_binomial_laplace": ("r2 ~ Anger + Gender + btype + situ + (1|id) + (1|item)", "VerbAgg", "binomial", {}),
}
R_FROM_ISSUE = {"verbagg_binomial_laplace": 3.3}  # glmer's seconds as issue 12 quotes them (no row in timings.md)


def r_timings() -> dict[str, float]:
    """R's seconds (reference BLAS column) per id, from the GLMM table of timings.md."""
    section = (REFERENCE / "timings.md").read_text().split("## lme4 GLMM fits", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 7 and cells[0] in MODELS:
            out[cells[0]] = float(cells[-2])  # the formula cells may hold escaped bars: count from the end
    return {**R_FROM_ISSUE, **out}


def peer_call(name: str):
    """The same fit by the `glmm` package (PyPI; Rust), or None if it is not installed. Its cbind() takes column
    names only, its offsets are arrays and its quadrature takes odd node counts only (no toenail AGQ 20)."""
    try:
        import glmm
    except ImportError:
        return None
    formula, data_name, family, options = MODELS[name]
    data = mlv.datasets.load(data_name)
    kwargs = {"nagq": options.get("nAGQ", 1)}
    if kwargs["nagq"] % 2 == 0:
        return None
    if data_name == "cbpp":
        data, formula = data.assign(fail=data["size"] - data["incidence"]), formula.replace("size - incidence", "fail")
    if "offset(" in formula:
        formula, kwargs["offset"] = formula.replace(" + offset(log(BroodSize))", ""), np.log(data["BroodSize"].to_numpy())
    if data_name == "VerbAgg":
        data, formula = data.assign(y=(data["r2"] == "Y").astype(float)), formula.replace("r2 ~", "y ~")
    if data_name == "toenail":
        data = data.assign(outcome=(data["outcome"] == "moderate or severe").astype(float))
    peer_family = {"negbinomial": "negativebinomial", "nbinom2": "negativebinomial"}.get(family, family)
    return lambda: glmm.fit(data, formula, peer_family, **kwargs)


def median_time(call, runs: int) -> tuple[float, float]:
    """Median CPU and wall seconds of `runs` calls after one warm-up."""
    cpu, wall = [], []
    for _ in range(runs + 1):
        start_cpu, start = time.process_time(), time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return statistics.median(cpu[1:]), statistics.median(wall[1:])


def ours(name: str):
    formula, data_name, family, options = MODELS[name]
    data = mlv.datasets.load(data_name)
    return lambda: mlv.Model(formula, data, family=family).fit(**options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="")
    parser.add_argument("--peer-path", default="", help="a directory holding the `glmm` package (pip install --target)")
    args = parser.parse_args()
    if args.peer_path:
        sys.path.append(args.peer_path)  # after ours: its own numpy copy never shadows the environment's
    r_time = r_timings()
    rows = {}
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'model':<32} {'cpu s':>8} {'wall s':>8} {'R s':>8} {'ratio':>7} {'target':>7} {'glmm s':>8} {'/glmm':>7}")
    for name in MODELS:
        if args.only in name:
            seconds, wall = median_time(ours(name), args.runs)
            target = 0.1 if r_time[name] > 0.5 else 0.3
            peer = peer_call(name)
            peer_s = median_time(peer, args.runs)[0] if peer else float("nan")
            print(f"{name:<32} {seconds:8.3f} {wall:8.3f} {r_time[name]:8.3f} {seconds / r_time[name]:7.2f} {target:7.1f} "
                  f"{peer_s:8.3f} {seconds / peer_s:7.1f}")
            rows[name] = {"cpu_s": seconds, "wall_s": wall, "r_s": r_time[name], "ratio": seconds / r_time[name],
                          "target": target, "glmm_s": peer_s if peer else None,
                          "load_average": os.getloadavg()[0]}
    update("glmm_speed", rows)

if __name__ == "__main__":
    main()
