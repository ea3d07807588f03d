"""Time building InstEval's Design and CrossProducts (73,421 rows), single-threaded; target < 1 s.

Run: ``OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/design.py``. Prints the median of
several runs and the ratio to lme4's whole fit time from ../shared/reference/timings.md when found.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import multilevel as mlv  # noqa: E402
from multilevel.crossprod import cross_products  # noqa: E402
from multilevel.design import build_design  # noqa: E402

FORMULA = "y ~ 1 + service + (1|s) + (1|d) + (1|dept:service)"
TARGET_SECONDS = 1.0
TIMINGS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "timings.md"


def lme4_fit_seconds() -> float | None:
    """lme4's whole REML fit of the same model (OpenBLAS column of timings.md), if the file is there."""
    if not TIMINGS.exists():
        return None
    for line in TIMINGS.read_text().splitlines():
        if line.startswith("| insteval_reml |"):
            return float(line.strip().strip("|").split("|")[-1])
    return None


def time_once(data) -> tuple[float, float]:
    """Seconds to build the design, and then its cross-products."""
    start = time.perf_counter()
    design = build_design(FORMULA, data)
    built = time.perf_counter()
    cross_products(design)
    return built - start, time.perf_counter() - built


def main(runs: int = 7) -> None:
    data = mlv.datasets.load("InstEval")
    time_once(data)  # warm-up: imports and caches
    times = [time_once(data) for _ in range(runs)]
    design_s = statistics.median(t[0] for t in times)
    cross_s = statistics.median(t[1] for t in times)
    total = statistics.median(t[0] + t[1] for t in times)
    print(f"InstEval ({len(data)} rows) {FORMULA}")
    print(f"  design        {design_s * 1e3:8.1f} ms (median of {runs})")
    print(f"  cross-products{cross_s * 1e3:8.1f} ms")
    print(f"  total         {total * 1e3:8.1f} ms   target < {TARGET_SECONDS * 1e3:.0f} ms: ratio {total / TARGET_SECONDS:.2f}")
    lme4 = lme4_fit_seconds()
    if lme4:
        print(f"  lme4's whole REML fit of this model: {lme4:.2f} s; our design + cross-products are {total / lme4:.3f} of it")


if __name__ == "__main__":
    main()
