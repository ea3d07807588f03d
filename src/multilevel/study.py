"""`study(model, truth, methods, replicates, seed, cores)`: repeated sampling from a known truth, every method
fitted to every simulated data set, and scored (bias, RMSE, coverage, width, boundary share, with Monte
Carlo standard errors; see `multilevel.study_result`).

A replicate draws group effects and residuals from the truth (or, with ``truth="prior"``, the parameters
themselves from the Bayesian priors first: then the coverage of the credible intervals is a simulation-based
calibration check), refits through `Model.with_response` (the design and its cross-products are shared), and
runs each method as `mlv.methods` does. Replicate i draws from ``SeedSequence(seed).spawn(replicates)[i]``, so
the result does not depend on `cores`. Ctrl-C returns the finished replicates, marked partial.

>>> import multilevel as mlv
>>> model = mlv.Model("y ~ 1 + (1 | g)", mlv.study_data("y ~ 1 + (1 | g)", groups=6, size=4))
>>> result = study(model, {"b_Intercept": 0, "sd_g__Intercept": 1, "sigma": 1}, ["REML"], replicates=5, seed=1)
>>> list(result.table["parameter"])
['b_Intercept', 'sd_g__Intercept', 'sigma', 'r_g[,Intercept]', 'icc_g', 'predict_known_groups', 'predict_new_groups']
"""

from __future__ import annotations

import sys
import warnings
from functools import cached_property

import numpy as np
import pandas as pd

from .arguments import check_count, check_seed
from .centring import centred_design, uncentre
from .chains import run
from .components import covariance
from .errors import MultilevelError, MultilevelWarning
from .kinds import Bayesian, Frequentist
from .methods import ALL_METHODS, Rows, bayes_rows, check_model, checked_methods, flat_effects, group_names, joined, run_method
from .names import brms_coef, fixed_name, group_effect_name, variance_names
from .predict import draw_group_effects, linear_predictor, residual_sd
from .priors import default_priors, resolve_priors
from .study_result import ESTIMATE_COLUMNS, RUN_COLUMNS, StudyResult
from .variance import icc_at, icc_draws

STUDY_METHODS = (*ALL_METHODS, "Bayes median")


def study(model, truth=None, methods=None, replicates: int = 100, seed: int | None = None, cores: int = 1,
          bayes: dict | None = None, profile: bool = False, progress: bool | None = None) -> StudyResult:
    """Simulate `replicates` data sets on `model`'s design from `truth`, fit every method, score them.

    truth: None (the model's REML estimates), a frequentist fit, values by brms or lme4 parameter name
    (correlations default to 0), or ``"prior"`` (drawn per replicate from ``bayes["prior"]``, which must be
    proper and not depend on the data). methods: names of `mlv.methods` plus ``"Bayes median"`` (default
    all of `mlv.methods`). bayes: `model.sample` options. profile: ML's profile intervals for SDs too.
    """
    methods = checked_methods(methods, STUDY_METHODS)
    check_count(replicates, "replicates")
    check_count(cores, "cores")
    check_seed(seed, generators=False)
    check_model(model)
    bayes = dict(bayes or {})
    truth_of = _truth(model, truth, bayes)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**31))
    seeds = np.random.SeedSequence(seed).spawn(replicates)
    bar = _Bar(replicates) if (sys.stderr.isatty() if progress is None else progress) else False
    plan = _Plan(model, truth_of, methods, bayes, profile)  # sent to each worker once
    # a job per replicate: Ctrl-C loses none that finished
    done = run(_run_one, list(enumerate(seeds)), cores, 0, 0, bar, interruptible=True, shared=(plan,))
    finished = [rep for rep in done if rep is not None]
    partial = len(finished) < replicates
    if partial:
        warnings.warn(f"study interrupted: {len(finished)} of {replicates} replicates finished; the result is "
                      "marked partial", MultilevelWarning, stacklevel=2)
    estimates = pd.DataFrame([row for rep in finished for row in rep[0]], columns=ESTIMATE_COLUMNS)
    runs_ = pd.DataFrame([row for rep in finished for row in rep[1]], columns=RUN_COLUMNS)
    settings = {
        "formula": str(model.formula), "nobs": model.nobs, "n_levels": model.n_levels, "truth": truth_of.description,
        "methods": methods, "replicates": replicates, "finished": len(finished), "seed": seed, "cores": cores,
        "bayes": {k: str(v) for k, v in bayes.items()}, "profile": profile, "partial": partial,
    }
    return StudyResult(estimates.sort_values("replicate", kind="stable", ignore_index=True),
                       runs_.sort_values("replicate", kind="stable", ignore_index=True), settings)


class _Bar:
    """One progress bar over replicates (a `chains.run` reporter: each call is one replicate done)."""

    def __init__(self, total: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="study", unit="replicate")

    def __call__(self, job: int, done: int) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


# ---------------------------------------------------------------------------------------------- the truth
class FixedTruth:
    """The same parameter values for every replicate."""

    def __init__(self, beta, covariances, sigma: float, description):
        self.beta, self.covariances, self.sigma = np.asarray(beta, float), [np.asarray(c, float) for c in covariances], float(sigma)
        self.description = description

    def draw(self, rng: np.random.Generator):
        return self.beta, self.covariances, self.sigma


class PriorTruth:
    """Parameters drawn per replicate from the Bayesian priors (the centred intercept as brms puts it)."""

    def __init__(self, model, priors):
        design = model.design
        centred, self.columns, self.intercept = centred_design(design, priors.informative)
        self.names, self.centred_names = list(design.fixed_names), list(centred.fixed_names)
        self.blocks = [(i, list(b.coef_names)) for i, b in enumerate(design.blocks)]
        self.priors = priors
        self.description = "prior: " + ", ".join(f"{k} ~ {v}" for k, v in priors.table(model)["prior"].items())

    def draw(self, rng: np.random.Generator):
        ps = self.priors
        slopes = [ps.b[n].sample(rng) for n in self.centred_names if n != "(Intercept)"]
        beta_c = np.array(slopes + ([ps.intercept.sample(rng)] if self.intercept else []), dtype=float)
        beta = uncentre(self.names, self.centred_names, beta_c, self.columns)
        covs = []
        for i, coefs in self.blocks:
            sd = np.array([ps.sd[(i, c)].sample(rng) for c in coefs])
            covs.append(covariance(sd, _lkj(ps.cor.get(i), len(coefs), rng)))
        return beta, covs, float(ps.sigma.sample(rng))


def _lkj(prior, k: int, rng: np.random.Generator) -> np.ndarray:
    """A correlation matrix from LKJ(eta): for k = 2, (r + 1) / 2 ~ Beta(eta, eta)."""
    corr = np.eye(k)
    if k == 2:
        corr[0, 1] = corr[1, 0] = 2 * rng.beta(prior.params[0], prior.params[0]) - 1
    return corr


def _truth(model, truth, bayes: dict):
    """The truth object for `study`'s truth argument."""
    if truth is None:
        truth = model.fit(warn=False)
    if isinstance(truth, Frequentist):
        if list(truth.design.fixed_names) != model.fixed_names or truth.design.n_levels != model.n_levels:
            raise MultilevelError("the truth fit is of another model: its fixed effects or groups differ from this model's")
        named = _named_values(model.design, truth.beta, truth.covariances, truth.sigma)
        return FixedTruth(truth.beta, truth.covariances, truth.sigma, named)
    if isinstance(truth, str) and truth == "prior":
        return _prior_truth(model, bayes.get("prior"))
    if isinstance(truth, dict):
        return _truth_from_names(model.design, truth)
    raise MultilevelError(
        f"truth must be a frequentist fit, a dict of parameter values by name, 'prior' or None, not {type(truth).__name__}"
    )


def _prior_truth(model, overrides) -> PriorTruth:
    """Refuse priors that cannot be drawn from (flat, LKJ beyond 2 x 2) or that depend on the data."""
    ps, defaults = resolve_priors(model, overrides), default_priors(model)
    pairs = [("Intercept", ps.intercept, defaults.intercept), ("sigma", ps.sigma, defaults.sigma)]
    pairs += [(f"sd of {c} | {model.design.blocks[i].group}", p, defaults.sd[(i, c)]) for (i, c), p in ps.sd.items()]
    from_data = [name for name, p, d in pairs if p is not None and p == d]
    if from_data:
        raise MultilevelError(
            f"truth='prior' needs priors that do not depend on the data; brms's defaults for {', '.join(from_data)} "
            "scale with y: give them in bayes={'prior': {...}}, e.g. 'sd': mlv.prior.half_normal(1)"
        )
    if any(model.design.blocks[i].k > 2 for i in ps.cor):
        raise MultilevelError("truth='prior' draws LKJ correlations for 2 x 2 matrices only; this model has a larger one")
    truth = PriorTruth(model, ps)
    try:
        truth.draw(np.random.default_rng(0))
    except MultilevelError as exc:
        raise MultilevelError(f"truth='prior' draws the truth from the priors, so every one must be proper: {exc}") from None
    return truth


def _aliases(design) -> dict[str, str]:
    """Every accepted parameter name (brms's and lme4's) -> brms's name."""
    out = {"sigma": "sigma"}
    for n in design.fixed_names:
        out[n] = out[fixed_name(n)] = fixed_name(n)
    for block in design.blocks:
        (sds, cors), (lme4_sds, lme4_cors) = variance_names(block), variance_names(block, "lme4")
        out.update({n: n for n in sds} | dict(zip(lme4_sds, sds)))
        out.update({c[2]: c[2] for c in cors} | {l4[2]: c[2] for l4, c in zip(lme4_cors, cors)})
    return out


def _truth_from_names(design, values: dict) -> FixedTruth:
    """Values by name to a truth: every fixed effect, SD and sigma required, correlations 0 unless given."""
    aliases = _aliases(design)
    unknown = [k for k in values if k not in aliases]
    if unknown:
        raise MultilevelError(f"unknown parameter name(s) {unknown} in the truth; this model's: {sorted(set(aliases.values()))}")
    v = {aliases[k]: float(x) for k, x in values.items()}
    required = [fixed_name(n) for n in design.fixed_names] + [n for b in design.blocks for n in variance_names(b)[0]] + ["sigma"]
    missing = [n for n in required if n not in v]
    if missing:
        raise MultilevelError(f"the truth has no value for {missing}")
    if v["sigma"] <= 0 or any(v[n] < 0 for n in required if n.startswith("sd_")):
        raise MultilevelError("SDs in the truth must be >= 0 and sigma > 0")
    covs = []
    for block in design.blocks:
        sds, cors = variance_names(block)
        corr = np.eye(block.k)
        for a, c, name in cors:
            corr[a, c] = corr[c, a] = v.get(name, 0.0)
        if np.linalg.eigvalsh(corr)[0] < -1e-12:
            raise MultilevelError(f"the truth's correlations of {block.group} do not form a correlation matrix")
        covs.append(covariance(np.array([v[n] for n in sds]), corr))
    beta = np.array([v[fixed_name(n)] for n in design.fixed_names])
    return FixedTruth(beta, covs, v["sigma"], _named_values(design, beta, covs, v["sigma"]))


def _named_values(design, beta, covariances, sigma) -> dict[str, float]:
    """Parameter values by brms name (SDs, correlations, sigma), as the study's settings record them."""
    out = {fixed_name(n): float(x) for n, x in zip(design.fixed_names, beta)}
    for block, cov in zip(design.blocks, covariances):
        sd = np.sqrt(np.diag(cov))
        sds, cors = variance_names(block)
        out.update({n: float(s) for n, s in zip(sds, sd)})
        out.update({name: float(cov[a, c] / (sd[a] * sd[c])) if sd[a] * sd[c] > 0 else 0.0 for a, c, name in cors})
    out["sigma"] = float(sigma)
    return out


# ---------------------------------------------------------------------------------------------- a replicate
class _Plan:
    """What every replicate shares: the model, the truth, the methods and their options, and the design's
    names (made once per worker)."""

    def __init__(self, model, truth, methods: list[str], bayes: dict, profile: bool):
        self.model, self.truth, self.methods, self.bayes, self.profile = model, truth, methods, bayes, profile

    @cached_property
    def names(self) -> _Names:
        return _Names(self.model.design)

    def replica(self, y: np.ndarray):
        """The model for a simulated response: design and cross-products shared, the engine refreshed from the
        model's (built once per worker), not rebuilt."""
        if self.model.gaussian:
            self.model.engine  # cached on the model: every replica's engine is a refresh of it
        return self.model.with_response(y)


def _run_one(plan: _Plan, index: int, seed: np.random.SeedSequence, report=None):
    """One replicate as a `chains.run` job; `report` is told when it is done."""
    out = _replicate(plan, index, seed)
    if report is not None:
        report(0, 1)
    return out


def simulate(model, truth, seed=None) -> np.ndarray:
    """One response vector on `model`'s rows drawn from `truth` (as `study` takes it), as a replicate draws it."""
    return _simulated(model, _truth(model, truth, {}), np.random.default_rng(seed))[0]


def _simulated(model, truth, rng: np.random.Generator):
    """A response drawn from the truth: (y, beta, covariances, sigma, group effects)."""
    beta, covs, sigma = truth.draw(rng)
    design = model.design
    b = [draw_group_effects(rng, cov, block.m) for block, cov in zip(design.blocks, covs)]
    y = model.family.draw(rng, linear_predictor(design, beta, b), residual_sd(design, sigma))
    return y, beta, covs, sigma, b


def _replicate(plan: _Plan, index: int, seed: np.random.SeedSequence):
    """Simulate one data set, fit every method: (estimate rows, run rows)."""
    y, beta, covs, sigma, b = _simulated(plan.model, plan.truth, np.random.default_rng(seed))
    design, names = plan.model.design, plan.names
    replica = plan.replica(y)
    true = _named_values(design, beta, covs, sigma) | dict(zip(names.group, flat_effects(b)))
    true |= {f"icc_{g}": v for g, v in icc_at(design, beta, covs, sigma).items()}
    method_seed = int(seed.generate_state(1)[0])
    estimates, runs_ = [], []
    for name, rows, fit, seconds, n_warnings, message in _fits(replica, plan.methods, plan.bayes, plan.profile, method_seed):
        runs_.append((index, name, seconds, rows is None, n_warnings, message))
        if rows is not None:
            rows = joined([rows, *_icc_rows(fit, name)])
            estimates += [(index, name, *r) for r in _scored(rows, true, names.pooled)]
            estimates += [(index, name, *r) for r in _prediction(rows, design, names, beta, b, covs, sigma)]
    return estimates, runs_


def _fits(model, methods, bayes, profile, seed):
    """(method, rows, fit, seconds, warnings, failure message) per method; rows None if the method failed.
    "Bayes median" reads the posterior that "Bayes" draws (one sampler run for both)."""
    done = {}
    for name in methods:
        base = "Bayes" if name == "Bayes median" else name
        if base not in done:
            try:
                done[base] = run_method(model, base, bayes, seed, profile)
            except (ValueError, ArithmeticError) as exc:  # MultilevelError, LinAlgError, a solver's refusal
                done[base] = exc
        result = done[base]
        if isinstance(result, Exception):
            yield name, None, None, np.nan, 0, f"{type(result).__name__}: {result}"
            continue
        rows, fit, _, seconds, others = result
        if name == "Bayes median":
            rows = bayes_rows(fit, "median")[0]
        yield name, rows, fit, seconds, len(others), ""


class _Names:
    """A design's group-effect names (block, coefficient, level order, as the methods' rows), the pooled
    parameter r_<group>[,<coef>] of each, and the fixed effects' brms names."""

    def __init__(self, design):
        self.group = group_names(design)
        self.pooled = {
            group_effect_name(block.group, level, coef): f"r_{block.group}[,{brms_coef(coef)}]"
            for block in design.blocks
            for coef in block.coef_names
            for level in block.levels
        }
        self.fixed = [fixed_name(n) for n in design.fixed_names]


def _icc_rows(fit, method: str) -> list[Rows]:
    """ICC rows of a fit (none for the penalised regressions): the value, or posterior mean/median and interval."""
    if not isinstance(fit, (Frequentist, Bayesian)):
        return []
    draws = icc_draws(fit)
    names = [f"icc_{g}" for g in draws]
    by_group = np.vstack(list(draws.values()))
    center = np.median if method == "Bayes median" else np.mean
    if isinstance(fit, Bayesian):
        return [Rows(["icc"] * len(names), names, center(by_group, axis=1), *np.quantile(by_group, [0.025, 0.975], axis=1),
                     np.full(len(names), np.nan))]
    nan = np.full(len(names), np.nan)
    return [Rows(["icc"] * len(names), names, by_group[:, 0], nan, nan, nan)]


def _scored(rows: Rows, true: dict, pooled: dict) -> list[tuple]:
    """(kind, parameter, truth, estimate, error, squared error, covered, width, on boundary) per parameter;
    group effects averaged within the replicate into one row per term coefficient."""
    truth = np.array([true.get(n, np.nan) for n in rows.parameter])
    est, lo, hi = rows.estimate, rows.ci_lower, rows.ci_upper
    error = est - truth
    covered = np.where(np.isnan(lo) | np.isnan(hi), np.nan, (lo <= truth) & (truth <= hi))
    keys = {}
    codes = np.array([keys.setdefault(pooled.get(n, n), len(keys)) for n in rows.parameter])
    counts = np.bincount(codes)
    means = [np.bincount(codes, weights=v) / counts for v in (truth, est, error, error**2, covered, hi - lo, rows.on_boundary)]
    first = np.unique(codes, return_index=True)[1]
    return [(rows.kind[first[i]], key, *(float(m[i]) for m in means)) for i, key in enumerate(keys)]


def _prediction(rows: Rows, design, names: _Names, beta, b, covs, sigma) -> list[tuple]:
    """Root mean squared error of predicting a new observation at every row of the design, in expectation
    over its noise: of the same groups (the method's group effects) and of new groups (the fixed part only).
    The truth column is the error of the true parameters (the noise floor); the error column the excess."""
    est = dict(zip(rows.parameter, rows.estimate))
    beta_hat = np.array([est[n] for n in names.fixed])
    flat = np.array([est[n] for n in names.group])
    ends = np.cumsum([block.q for block in design.blocks])[:-1]
    b_hat = [part.reshape(block.k, block.m).T for part, block in zip(np.split(flat, ends), design.blocks)]
    noise = residual_sd(design, sigma) ** 2
    between = sum(np.einsum("na,ab,nb->n", block.Z, cov, block.Z) for block, cov in zip(design.blocks, covs))
    known = np.mean((linear_predictor(design, beta, b) - linear_predictor(design, beta_hat, b_hat)) ** 2 + noise)
    new = np.mean((linear_predictor(design, beta, None) - linear_predictor(design, beta_hat, None)) ** 2 + between + noise)
    out = []
    for name, value, floor in (("predict_known_groups", known, np.mean(noise)), ("predict_new_groups", new, np.mean(between + noise))):
        rmse, truth = float(np.sqrt(value)), float(np.sqrt(floor))
        out.append(("prediction", name, truth, rmse, rmse - truth, (rmse - truth) ** 2, np.nan, np.nan, np.nan))
    return out
