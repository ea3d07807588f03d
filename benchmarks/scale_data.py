"""Write large nested or crossed data sets as Parquet folders, one file per chunk (little memory whatever n).

    PYTHONPATH=src python benchmarks/scale_data.py nested 10000000 /tmp/nested_1e7
    PYTHONPATH=src python benchmarks/scale_data.py crossed 1000000 /tmp/crossed_1e6 --items 2000

nested:  y = 1 + 0.5 x + a_g + b_g x + e, 50 rows per group g (--per-group; --by-group: rows sorted by group) (a ~ N(0, 1), b ~ N(0, 0.3^2), corr 0.3, e ~ N(0, 1));
         formula "y ~ x + (1 + x | g)".
crossed: y = 1 + 0.5 x + u_user + v_item + e, 20 rows per user, --items items (u ~ N(0, 0.8^2), v ~ N(0, 0.5^2));
         formula "y ~ x + (1 | user) + (1 | item)".
balanced: y = 1 + a_g + e, --groups groups (a ~ N(0, 1), e ~ N(0, 1)), each file one row of every group in a random
         order (rows / groups files); formula "y ~ 1 + (1 | g)". Writes _closed_form.json beside the files: the REML
         estimates of this balanced one-way design in closed form (the ANOVA estimators; Searle, Casella & McCulloch
         1992, 3.7), from per-group sums accumulated as the rows are written.
Groups are integers; the rows of a group are spread over all files (row order random), as logged data are. The
grouping factors' levels present are written to _levels.json (for Model(levels=...): scale.py --levels).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CHUNK = 1_000_000  # rows per file
FORMULAS = {"nested": "y ~ x + (1 + x | g)", "crossed": "y ~ x + (1 | user) + (1 | item)", "balanced": "y ~ 1 + (1 | g)"}


def nested_effects(n_groups: int, rng: np.random.Generator) -> np.ndarray:
    """Per group (intercept, slope) deviations with SDs 1 and 0.3, correlation 0.3."""
    cov = np.array([[1.0, 0.3 * 0.3], [0.3 * 0.3, 0.09]])
    return rng.multivariate_normal(np.zeros(2), cov, size=n_groups)


def write(kind: str, n: int, folder: Path, items: int, seed: int, per_group: int = 50, by_group: bool = False) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "nested":
        effects = nested_effects(max(2, n // per_group), rng)
        present = {"g": np.zeros(len(effects), dtype=bool)}
    else:
        users, item_effects = rng.normal(0, 0.8, max(2, n // 20)), rng.normal(0, 0.5, items)
        present = {"user": np.zeros(len(users), dtype=bool), "item": np.zeros(items, dtype=bool)}
    for i, start in enumerate(range(0, n, CHUNK)):
        size = min(CHUNK, n - start)
        x = rng.normal(size=size)
        e = rng.normal(size=size)
        if kind == "nested":
            g = (start + np.arange(size)) * len(effects) // n if by_group else rng.integers(0, len(effects), size)
            y = 1 + 0.5 * x + effects[g, 0] + effects[g, 1] * x + e
            table = pa.table({"y": y, "x": x, "g": g})
        else:
            user, item = rng.integers(0, len(users), size), rng.integers(0, items, size)
            y = 1 + 0.5 * x + users[user] + item_effects[item] + e
            table = pa.table({"y": y, "x": x, "user": user, "item": item})
        for name, seen in present.items():
            seen[table[name].to_numpy()] = True
        pq.write_table(table, folder / f"part-{i:05d}.parquet")
    write_levels(folder, {name: np.flatnonzero(seen) for name, seen in present.items()})


def write_levels(folder: Path, levels: dict[str, np.ndarray]) -> None:
    """The grouping factors' levels present, as `_levels.json` beside the files (scale.py --levels gives them to Model)."""
    (folder / "_levels.json").write_text(json.dumps({name: values.tolist() for name, values in levels.items()}))


def write_balanced(n: int, folder: Path, groups: int, seed: int) -> None:
    """The balanced one-way design, one file per round of one row per group, and its closed-form REML estimates."""
    if n % groups:
        raise SystemExit(f"balanced data need rows ({n}) to be a multiple of groups ({groups})")
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    effects = rng.normal(size=groups)
    sums, squares = np.zeros(groups), np.zeros(groups)
    for i in range(n // groups):
        g = rng.permutation(groups)
        y = 1.0 + effects[g] + rng.normal(size=groups)
        sums += np.bincount(g, weights=y, minlength=groups)
        squares += np.bincount(g, weights=y * y, minlength=groups)
        pq.write_table(pa.table({"y": y, "g": g}), folder / f"part-{i:05d}.parquet")
    (folder / "_closed_form.json").write_text(json.dumps(closed_form(sums, squares, n // groups)))
    write_levels(folder, {"g": np.arange(groups)})


def closed_form(sums: np.ndarray, squares: np.ndarray, per_group: int) -> dict:
    """REML of y ~ 1 + (1 | g) with J groups of n rows from per-group sums and sums of squares: beta = grand mean,
    sigma^2 = MSW, sd_g^2 = (MSB - MSW) / n (valid when positive, as here)."""
    J, n = len(sums), per_group
    means = sums / n
    msw = np.sum(squares - sums * means) / (J * (n - 1))
    msb = n * np.sum((means - means.mean()) ** 2) / (J - 1)
    return {"rows": J * n, "groups": J, "beta": float(means.mean()), "sigma": float(np.sqrt(msw)),
            "sd_g": float(np.sqrt((msb - msw) / n))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(FORMULAS))
    parser.add_argument("rows", type=int)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--groups", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--per-group", type=int, default=50, help="nested: rows per group")
    parser.add_argument("--by-group", action="store_true", help="nested: rows sorted by group, each group's rows "
                        "together (each file and batch sees a narrow slice of the groups)")
    args = parser.parse_args()
    if args.kind == "balanced":
        write_balanced(args.rows, args.folder, args.groups, args.seed)
    else:
        write(args.kind, args.rows, args.folder, args.items, args.seed, args.per_group, args.by_group)


if __name__ == "__main__":
    main()
