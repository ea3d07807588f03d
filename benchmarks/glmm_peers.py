"""Python peers on the Bayesian GLMM benchmarks: NumPyro (and Bambi with nutpie where it installs), side by side.

Not a dependency of multilevel: the peers live in their own virtual environment (PEER_PYTHON, default
/work/peer-venv/bin/python; `python -m venv /work/peer-venv && /work/peer-venv/bin/pip install numpyro arviz pandas bambi
nutpie "matplotlib<3.11"`: arviz 0.23's preview import fails on matplotlib 3.11).
Each model is brms's (its default priors as each reference file prints them: the centred intercept student-t, flat
b, half-student-t(3, 0, 2.5) SDs, the negative binomial's shape gamma(0.01, 0.01)), hand-coded non-centred as brms
writes it, 4 chains x (1000 + 1000) one after another in a fresh process pinned to one core; grouseticks with
NUTS's acceptance target 0.99, as the brms run that is its truth (0.8 diverges). The rate is the min bulk ESS (ArviZ)
over b_* (the intercept uncentred, as brms reports it), sd_* and shape (`arviz_stats`' bulk ESS) per CPU second of building, compiling and
sampling (imports excluded), as `glmm_bayes_speed.py` times our whole sample().

    PEER_PYTHON=/work/peer-venv/bin/python python benchmarks/glmm_peers.py cbpp grouseticks   # NumPyro
    python benchmarks/glmm_peers.py --bambi cbpp      # Bambi (its own default priors) sampled by nutpie

Bambi's rows use Bambi's default priors (not brms's: what a Bambi user gets) and nutpie's sampler on PyMC's model;
nutpie runs the 4 chains in threads, all counted in the CPU time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from glmm_bayes_speed import MODELS  # noqa: E402
from results_file import update  # noqa: E402

DATA = Path(os.environ.get("SHARED_DATA", HERE.parent.parent / "shared" / "data"))
PEER_PYTHON = os.environ.get("PEER_PYTHON", "/work/peer-venv/bin/python")
SPECS = {  # csv, response, trials, fixed predictors (factors as strings), random terms, family, intercept loc, target
    "cbpp": ("cbpp", "incidence", "size", ["period"], ["herd"], "binomial", 0.0, 0.8),
    "salamanders": ("Salamanders", "count", None, ["spp", "mined"], ["site"], "negbinomial", -2.3, 0.8),
    "verbagg": ("VerbAgg", "r2", None, ["Anger", "Gender", "btype", "situ"], ["id", "item"], "bernoulli", 0.0, 0.8),
    "grouseticks": ("grouseticks", "TICKS", None, ["YEAR", "cHEIGHT"], ["BROOD", "INDEX", "LOCATION"], "poisson", 0.7,
                    0.99),
}
CHILD = r"""
import json, os, time
import numpy as np, pandas as pd
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import numpyro, numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS
from arviz_stats.base import array_stats
csv, response, trials, fixed, groups, family, loc, target = {spec!r}
c0 = time.process_time()
d = pd.read_csv({data!r} + "/" + csv + ".csv")
factors = [f for f in fixed if d[f].dtype == object or f in ("YEAR", "period")]
X = pd.get_dummies(d[fixed].astype({{f: str for f in factors}}), drop_first=True).to_numpy(float)
means = X.mean(axis=0)
Xc = X - means
y = (d[response] == "Y").to_numpy(float) if family == "bernoulli" else d[response].to_numpy(float)
n = None if trials is None else d[trials].to_numpy(float)
codes = [pd.factorize(d[g].astype(str))[0] for g in groups]
sizes = [int(c.max()) + 1 for c in codes]
half_t = dist.FoldedDistribution(dist.StudentT(3.0, 0.0, 2.5))

def model():
    alpha = numpyro.sample("Intercept", dist.StudentT(3.0, loc, 2.5))
    b = numpyro.sample("b", dist.ImproperUniform(dist.constraints.real, (), (X.shape[1],)))
    eta = alpha + Xc @ b
    for g, c, m in zip(groups, codes, sizes):
        sd = numpyro.sample("sd_" + g, half_t)
        z = numpyro.sample("z_" + g, dist.Normal(0.0, 1.0).expand([m]))
        eta = eta + sd * z[c]
    if family == "binomial":
        numpyro.sample("y", dist.Binomial(total_count=n, logits=eta), obs=y)
    elif family == "bernoulli":
        numpyro.sample("y", dist.Bernoulli(logits=eta), obs=y)
    elif family == "poisson":
        numpyro.sample("y", dist.Poisson(jnp.exp(eta)), obs=y)
    else:
        shape = numpyro.sample("shape", dist.Gamma(0.01, 0.01))
        numpyro.sample("y", dist.NegativeBinomial2(jnp.exp(eta), shape), obs=y)

mcmc = MCMC(NUTS(model, target_accept_prob=target), num_warmup=1000, num_samples=1000, num_chains=4,
            chain_method="sequential", progress_bar=False)
mcmc.run(jax.random.PRNGKey(1), extra_fields=("diverging",))
s = mcmc.get_samples(group_by_chain=True)
cpu = time.process_time() - c0
draws = {{"b_Intercept": np.asarray(s["Intercept"] - s["b"] @ means)}}
draws.update({{f"b[{{i}}]": np.asarray(s["b"][..., i]) for i in range(X.shape[1])}})
draws.update({{k: np.asarray(v) for k, v in s.items() if k.startswith("sd_") or k == "shape"}})
ess = {{k: float(array_stats.ess(v, chain_axis=0, draw_axis=1, method="bulk")) for k, v in draws.items()}}
div = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
print(json.dumps({{"cpu_s": cpu, "min_ess": min(ess.values()), "worst": min(ess, key=ess.get), "divergences": div,
                  "peer": "numpyro " + numpyro.__version__, "target_accept": target, "load_1min": os.getloadavg()[0]}}))
"""

BAMBI = {  # csv, Bambi's formula, family, columns read as categories, NUTS's acceptance target
    "cbpp": ("cbpp", "p(incidence, size) ~ period + (1|herd)", "binomial", ["period", "herd"], 0.8),
    "salamanders": ("Salamanders", "count ~ spp + mined + (1|site)", "negativebinomial", ["site"], 0.8),
    "verbagg": ("VerbAgg", "r2['Y'] ~ Anger + Gender + btype + situ + (1|id) + (1|item)", "bernoulli", ["id"], 0.8),
    "grouseticks": ("grouseticks", "TICKS ~ YEAR + cHEIGHT + (1|BROOD) + (1|INDEX) + (1|LOCATION)", "poisson",
                    ["YEAR", "BROOD", "INDEX", "LOCATION"], 0.99),
}
BAMBI_CHILD = r"""
import json, os, time
import numpy as np, pandas as pd
import bambi as bmb, nutpie
from arviz_stats.base import array_stats
csv, formula, family, categories, target = {spec!r}
c0 = time.process_time()
d = pd.read_csv({data!r} + "/" + csv + ".csv")
d[categories] = d[categories].astype(str)
model = bmb.Model(formula, d, family=family)
idata = model.fit(inference_method="nutpie", chains=4, tune=1000, draws=1000, random_seed=1, progressbar=False,
                  target_accept=target)
cpu = time.process_time() - c0
ess = {{}}
for name, v in idata.posterior.data_vars.items():
    if name.endswith("_log__") or ("|" in name and not name.endswith("_sigma")):
        continue  # group effects and the unconstrained SDs: not in brms's reported set
    a = v.values.reshape(v.shape[0], v.shape[1], -1)
    for i in range(a.shape[2]):
        ess[f"{{name}}[{{i}}]"] = float(array_stats.ess(a[:, :, i], chain_axis=0, draw_axis=1, method="bulk"))
div = int(idata.sample_stats["diverging"].values.sum()) if "diverging" in idata.sample_stats else -1
print(json.dumps({{"cpu_s": cpu, "min_ess": min(ess.values()), "worst": min(ess, key=ess.get), "divergences": div,
                  "peer": f"bambi {{bmb.__version__}} + nutpie {{nutpie.__version__}}", "target_accept": target,
                  "load_1min": os.getloadavg()[0]}}))
"""


def main(names: list[str], peer: str) -> None:
    rows = {}
    for name in names:
        brms = MODELS[name][3]
        if peer == "numpyro":
            code = CHILD.format(spec=SPECS[name], data=str(DATA))
        else:
            code = BAMBI_CHILD.format(spec=BAMBI[name], data=str(DATA))
        r = _run(code)
        rate = r["min_ess"] / r["cpu_s"]
        rows[f"{name}/{peer}"] = dict(r, ess_per_cpu_s=rate)
        print(f"{name:<12} {peer} CPU {r['cpu_s']:7.1f} s  min ESS {r['min_ess']:6.0f} ({r['worst']})  {rate:8.2f}/s  "
              f"{rate / brms:6.2f}x brms  div {r['divergences']}  load {r['load_1min']:.1f}")
    update("glmm_bayes_speed", rows)


def _run(code: str) -> dict:
    """The JSON the child prints last, run by the peers' Python on core 0 (single-threaded BLAS and XLA)."""
    import json
    import subprocess

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    env.pop("PYTHONPATH", None)
    out = subprocess.run(["taskset", "-c", "0", PEER_PYTHON, "-c", code], capture_output=True, text=True, env=env,
                         check=False)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--bambi"]
    main(args or list(SPECS), "bambi-nutpie" if "--bambi" in sys.argv else "numpyro")
