"""Fit speed against lme4: every lme4/blme reference model, timed in-process and single-threaded.

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/fit_speed.py [--runs 5] [--only insteval]

Times `mlv.Model(formula, data).fit(...)` as a whole (model building included, as lme4's lmer() call
includes it; data loading excluded), the median of N runs after one warm-up, against lme4's OpenBLAS
time in ../shared/reference/timings.md. Targets (issue 3): at most lme4's time, at most half of it where
lme4 takes more than 0.1 s, and at most 0.4 of it for InstEval. Results go to results/fit_speed.json;
the previous results there are shown beside the new ones.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported: single-threaded BLAS

import argparse
import json
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parent.parent / "shared" / "reference"
RESULTS = HERE / "results" / "fit_speed.json"
sys.path.insert(0, str(HERE.parent / "src"))

import multilevel as mlv  # noqa: E402


def lme4_timings() -> dict[str, float]:
    """lme4's OpenBLAS seconds per reference id, read from the lme4/blme table of timings.md."""
    text = (REFERENCE / "timings.md").read_text()
    section = text.split("## lme4 / blme fits", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and re.fullmatch(r"[0-9.]+", cells[-1]):
            out[cells[0]] = float(cells[-1])
    return out


def target_ratio(ref_id: str, lme4_seconds: float) -> float:
    """Issue 3's bound on our time / lme4's time."""
    if ref_id.startswith("insteval"):
        return 0.4
    return 0.5 if lme4_seconds > 0.1 else 1.0


def reference_models() -> list[dict]:
    """The lme4::lmer and blme::blmer reference fits: id, formula, data set, method, prior."""
    out = []
    for path in sorted(REFERENCE.glob("*.json")):
        ref = json.loads(path.read_text())
        if ref.get("kind") not in ("lme4::lmer", "blme::blmer"):
            continue
        out.append(
            {
                "id": path.stem,
                "formula": ref["formula"],
                "dataset": ref["dataset"],
                "method": "REML" if ref["REML"] else "ML",
                "prior": "zero-avoiding" if ref["kind"] == "blme::blmer" else None,
            }
        )
    return out


def time_fit(spec: dict, data, runs: int) -> list[float]:
    """Seconds per fit, after one untimed warm-up."""
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(runs + 1):
            start = time.perf_counter()
            mlv.Model(spec["formula"], data).fit(method=spec["method"], prior=spec["prior"])
            if i:
                times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per model (median reported)")
    parser.add_argument("--only", default="", help="substring: time only the reference ids containing it")
    parser.add_argument("--no-save", action="store_true", help="do not write results/fit_speed.json")
    args = parser.parse_args()

    lme4 = lme4_timings()
    previous = json.loads(RESULTS.read_text())["seconds"] if RESULTS.exists() else {}
    current = dict(previous)
    header = f"{'model':30s} {'ours s':>9s} {'lme4 s':>8s} {'ratio':>7s} {'target':>7s} {'':4s} {'previous s':>10s}"
    print(header)
    print("-" * len(header))
    failures = 0
    for spec in reference_models():
        if args.only not in spec["id"]:
            continue
        data = mlv.datasets.load(spec["dataset"])
        runs = max(1, args.runs // 2) if spec["id"].startswith("insteval") else args.runs
        ours = statistics.median(time_fit(spec, data, runs))
        current[spec["id"]] = ours
        ref = lme4[spec["id"]]
        ratio, target = ours / ref, target_ratio(spec["id"], ref)
        ok = ratio <= target
        failures += not ok
        prev = f"{previous[spec['id']]:10.4f}" if spec["id"] in previous else f"{'-':>10s}"
        print(f"{spec['id']:30s} {ours:9.4f} {ref:8.4f} {ratio:7.2f} {target:7.2f} {'ok' if ok else 'SLOW':4s} {prev}")
    load = os.getloadavg()[0]
    print(f"\n{failures} model(s) over target; OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}; "
          f"load average {load:.1f} on {os.cpu_count()} cores (above ~1 per core, times are inflated)")
    if not args.no_save:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({"seconds": current, "load_average": load}, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
