"""The collapsed crossed Gibbs sampler (`sampler="crossed-gibbs"`) as crossed designs grow: CPU seconds per sweep,
min bulk ESS per CPU second, peak memory, and the chain's autocorrelations of the intercept, the SDs and sigma.

    PYTHONPATH=src python benchmarks/scale_data.py crossed 1000000 /tmp/grow_1e6 --items 2000
    PYTHONPATH=src python benchmarks/scale_data.py crossed 10000000 /tmp/grow_1e7 --items 20000
    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/crossed_gibbs.py /tmp/grow_1e6 /tmp/grow_1e7 [--draws 1000] [--blocked]

`y ~ x + (1 | user) + (1 | item)`, 20 rows a user and 500 an item (items grow with the data). Each folder runs in
a fresh process: the Dask path reads the Parquet folder with its levels given (`_levels.json`), then one chain
of `crossed_gibbs.CrossedChain` sweeps `--warmup` times and keeps `--draws` sweeps of beta, the SDs and sigma
(the group effects' draws are not kept, so peak memory is the sampler's, not the draws'). `--blocked` also runs
the blocked Gibbs chain (`gibbs.Chain`, one dense factor per sweep) on the same model, where it fits; `--plain`
the plain Gibbs chain (nothing collapsed), to show what the collapsing buys as the design grows. Results go
to benchmarks/results/crossed_gibbs.json; docs/scale.md quotes them.
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
import json, resource, time, warnings
warnings.simplefilter("ignore")
import numpy as np
import multilevel as mlv
from arviz_stats.base import array_stats
from multilevel.crossed_gibbs import CrossedChain
from multilevel.gibbs import Chain
from multilevel.partitioned import sampler_inputs
from multilevel.priors import for_centred_response, resolve_priors
class PlainChain(CrossedChain):
    # the plain Gibbs sampler PRZ (2020) compare against: beta given all effects, then each term's effects given
    # beta and the others (nothing collapsed)
    def sweep(self):
        s2 = 1.0 if self.sigma is None else self.sigma**2
        prior = self.coefficient_prior()
        a = [b[:, 0] for b in self.b]
        L = np.linalg.cholesky(self.xtx / s2 + np.diag(prior.precision))
        rhs = (self.xty - sum(z.T @ x for z, x in zip(self.zx, a))) / s2 + prior.precision * prior.mean
        self.beta = np.linalg.solve(L.T, np.linalg.solve(L, rhs) + self.rng.standard_normal(len(rhs)))
        earlier = []
        for k in range(len(a)):
            lower = sum((self.off[(j, k)].T @ a[j] for j in range(k)), np.zeros(len(a[k])))
            upper = sum((self.off[(k, j)] @ a[j] for j in range(k + 1, len(a))), np.zeros(len(a[k])))
            d = self.ztz[k] / s2 + 1.0 / self.cov[k][0, 0]
            a[k] = (self.zy[k] - lower - upper - self.zx[k] @ self.beta) / (s2 * d) + self.rng.standard_normal(len(d)) / np.sqrt(d)
            earlier.append(lower)
        self.b = [x[:, None] for x in a]
        return self.draw_variances(lambda: self._rss(a, earlier))
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.process_time()
model = mlv.Model(FORMULA, FOLDER, levels=json.load(open(FOLDER + "/_levels.json")))
ps = resolve_priors(model, None)
y0, held = for_centred_response(model.design, ps)
design, cp, columns, _ = sampler_inputs(model, y0, ps.informative)
out = {"rows": model.nobs, "levels": dict(model.n_levels), "model_cpu": time.process_time() - start, "model_peak_mb": peak()}
for kind in KINDS:
    begin = time.process_time()
    rng = np.random.default_rng([1, 0])
    chain = {"crossed": CrossedChain, "plain": PlainChain, "blocked": Chain}[kind](design, held, rng, cp)
    built = time.process_time()
    for _ in range(WARMUP):
        chain.sweep()
    kept = {name: np.empty(DRAWS) for name in ["Intercept (centred)", "b_x", "sd_user", "sd_item", "sigma"]}
    sweeps = time.process_time()
    for d in range(DRAWS):
        chain.sweep()
        for name, value in zip(kept, [chain.beta[-1], chain.beta[0], np.sqrt(chain.cov[0][0, 0]), np.sqrt(chain.cov[1][0, 0]), chain.sigma]):
            kept[name][d] = value
    done = time.process_time()
    per_sweep = (done - sweeps) / DRAWS
    ess = {name: float(array_stats.ess(v[None, :], chain_axis=0, draw_axis=1, method="bulk")) for name, v in kept.items()}
    acf = {name: [float(np.corrcoef(v[:-lag], v[lag:])[0, 1]) for lag in (1, 5, 20)] for name, v in kept.items()}
    out[kind] = {
        "build_cpu": built - begin, "cpu_per_sweep": per_sweep, "ess_bulk": ess, "autocorrelation_lags_1_5_20": acf,
        "min_ess_per_cpu_s": min(ess.values()) / (done - sweeps), "peak_mb": peak(),
        "means": {name: float(v.mean()) for name, v in kept.items()},
    }
print(json.dumps(out))
"""


def run(folder: Path, warmup: int, draws: int, kinds: list[str]) -> dict:
    """One folder in a fresh process, single-threaded BLAS."""
    code = (f"FOLDER, FORMULA, WARMUP, DRAWS, KINDS = {str(folder)!r}, {FORMULAS['crossed']!r}, {warmup}, {draws}, "
            f"{kinds!r}\n" + CHILD)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{folder} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: dict[str, dict]) -> str:
    """Markdown rows: per folder and sampler, CPU per sweep, min bulk ESS per CPU s, peak memory and lag-1/lag-20
    autocorrelations of the intercept, the SDs and sigma."""
    lines = ["| rows | users x items | sampler | CPU s / sweep | min bulk ESS / CPU s | peak MB | lag-1 (lag-20) autocorrelation: "
             "intercept, sd_user, sd_item, sigma |", "|---|---|---|---|---|---|---|"]
    for out in results.values():
        levels = " x ".join(f"{v:,}" for v in out["levels"].values())
        for kind in ("crossed", "plain", "blocked"):
            if kind not in out:
                continue
            r = out[kind]
            acf = ", ".join(f"{r['autocorrelation_lags_1_5_20'][n][0]:.3f} ({r['autocorrelation_lags_1_5_20'][n][2]:.2f})"
                            for n in ("Intercept (centred)", "sd_user", "sd_item", "sigma"))
            lines.append(f"| {out['rows']:,} | {levels} | {kind} | {r['cpu_per_sweep']:.3f} | {r['min_ess_per_cpu_s']:.1f} | "
                         f"{r['peak_mb']:.0f} | {acf} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--blocked", action="store_true", help="also run the blocked Gibbs chain (dense factor per sweep)")
    parser.add_argument("--plain", action="store_true", help="also run the plain Gibbs chain (beta given all effects, then "
                        "each term's effects: nothing collapsed), the comparison of Papaspiliopoulos, Roberts & Zanella")
    args = parser.parse_args()
    kinds = ["crossed"] + (["plain"] if args.plain else []) + (["blocked"] if args.blocked else [])
    results = {}
    for folder in args.folders:
        results[folder.name] = run(folder, args.warmup, args.draws, kinds)
        print(json.dumps(results[folder.name]), flush=True)
    print(table(results))
    suffix = "".join(f" with {k}" for k in kinds[1:])
    print("written to", update("crossed_gibbs", {f"crossed {k}{suffix}": v for k, v in results.items()}))


if __name__ == "__main__":
    main()
