"""The first term's fill for a crossed design whose first term has random slopes: the fill map, the pair list and
the sparse product, each engine built in this process from the same cross-products (run one fill per process for
its peak memory), single-threaded BLAS.

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/fill_slopes.py 1000000 pairs
    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/fill_slopes.py 1000000 map

y ~ x + (1 + x | user) + (1 | item): 20 rows a user, 2,000 items. Prints per fill the engine's build and
per-evaluation CPU seconds, the pair list's size, the process peak and the REML criterion at three thetas.
Results: docs/scale.md.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd

import multilevel as mlv
import multilevel.engine as engine_module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=int)
    parser.add_argument("fills", nargs="+", choices=["map", "pairs", "product"])
    args = parser.parse_args()
    n, users, items = args.rows, args.rows // 20, 2000
    rng = np.random.default_rng(1)
    u, i, x = rng.integers(0, users, n), rng.integers(0, items, n), rng.normal(size=n)
    y = (1 + 0.5 * x + rng.normal(0, 0.8, users)[u] + rng.normal(0, 0.3, users)[u] * x + rng.normal(0, 0.5, items)[i]
         + rng.normal(size=n))
    model = mlv.Model("y ~ x + (1 + x | user) + (1 | item)", pd.DataFrame({"y": y, "x": x, "user": u, "item": i}))
    cp, ks, ms = model.cross_products, [b.k for b in model.design.blocks], [b.m for b in model.design.blocks]
    theta = np.array([0.8, 0.1, 0.3, 0.5])
    for fill in args.fills:
        engine_module.fill_map_fits = lambda pairs, fill=fill: fill == "map"
        engine_module.pairs_fit = lambda B, q, k0=1, fill=fill: fill == "pairs"
        start = time.process_time()
        engine = engine_module.Engine(cp, ks, ms)
        build = time.process_time() - start
        start = time.process_time()
        values = [engine.objective(theta * s, True) for s in (1.0, 0.9, 1.1)]
        each = (time.process_time() - start) / len(values)
        size = engine.pair_fill.pairs.nnz * 12 / 2**20 if engine.pair_fill is not None else float("nan")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{fill}: build {build:.1f} CPU-s, {each:.2f} CPU-s an evaluation, pair list {size:.0f} MB, "
              f"peak {peak:.0f} MB, criteria {values}", flush=True)


if __name__ == "__main__":
    main()
