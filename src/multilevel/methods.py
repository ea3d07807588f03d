"""`methods(model)`: the same formula fitted every way, in one table, with a plain-words account of the differences.

Methods: ML, REML, REML with the zero-avoiding covariance prior (blme's), full Bayes (NUTS, brms's priors),
and penalised regressions from scikit-learn with the group effects as indicator columns (one column per
level and group coefficient), the penalty chosen by cross-validation:

- ridge and elastic net: every column penalised toward 0, fixed effects included;
- ridge toward the group-level mean: the fixed effects unpenalised, only the group columns penalised, so
  each group is pulled toward what the fixed part predicts for it — the mixed model's shrinkage target. With
  one penalty lambda it is a mixed model with every group variance sigma²/lambda, tuned by CV not estimated.

Columns are used on their own scale (no standardising), as the mixed model does.

>>> import multilevel as mlv
>>> model = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff2"))
>>> result = methods(model, include=["ML", "REML", "zero-avoiding", "ridge toward group mean"])
>>> result.wide().loc["sd_Batch__Intercept"].round(2).tolist()
[0.0, 0.0, 1.49, 0.0]
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .crossprod import response
from .errors import MultilevelError
from .html_tables import result_html
from .bootstrap import parameter_values
from .components import SINGULAR_TOL
from .names import fixed_name, group_effect_name, sd_name, variance_names
from .partitioned import refuse_rows
from .scaling import Scaling

SD_BOUNDARY = SINGULAR_TOL  # an SD below this fraction of sigma is on the boundary (lme4's isSingular tolerance)
COR_BOUNDARY = 1 - SINGULAR_TOL
RIDGE_ALPHAS = np.logspace(-4, 6, 81)
ALL_METHODS = ("ML", "REML", "zero-avoiding", "Bayes", "ridge", "elastic net", "ridge toward group mean")
Z95 = stats.norm.ppf(0.975)  # the 95 % Wald multiplier
COLUMNS = ["method", "kind", "parameter", "estimate", "ci_lower", "ci_upper", "on_boundary"]


@dataclass
class MethodsComparison:
    """Every method's estimates in one long table, the wall times, and an account of where they differ."""

    table: pd.DataFrame  # method, kind, parameter, estimate, ci_lower, ci_upper, on_boundary
    runs: pd.DataFrame  # per method: seconds, any estimate on the boundary, penalty
    fits: dict

    def wide(self, kinds=("fixed", "sd", "cor", "sigma")) -> pd.DataFrame:
        """Estimates side by side: one row per parameter, one column per method."""
        t = self.table[self.table["kind"].isin(kinds)]
        order = list(dict.fromkeys(t["parameter"]))
        wide = t.pivot(index="parameter", columns="method", values="estimate")
        return wide.loc[order, [m for m in self.runs.index if m in wide.columns]]

    def account(self) -> str:
        return account(self)

    def __repr__(self) -> str:
        return (
            f"{self.wide().round(4).to_string()}\n\n{self.runs.round(3).to_string()}\n\n{self.account()}"
        )

    def _repr_html_(self) -> str:
        notes = [line.removeprefix("- ") for line in self.account().splitlines()]
        tables = [("Estimates by method", self.wide()), ("Runs", self.runs)]
        return result_html("Methods compared", [], tables, notes=notes)


def methods(model, include=None, bayes: dict | None = None, seed: int = 0) -> MethodsComparison:
    """Fit `model` by every method in `include` (default all) and tabulate; `bayes` passes sampler options."""
    include = checked_methods(include, ALL_METHODS)
    check_model(model)
    tables, runs, fits = [], {}, {}
    for name in include:
        rows, fit, penalty, seconds, others = run_method(model, name, bayes, seed)
        for w in others:
            warnings.warn(f"{name}: {w.message}", w.category, stacklevel=2)
        tables.append(rows.frame().assign(method=name))
        runs[name] = {
            "seconds": seconds,
            "on_boundary": bool(np.any(rows.on_boundary == 1.0)),
            "penalty": penalty,
            "warnings": len(others),
        }
        fits[name] = fit
    table = pd.concat(tables, ignore_index=True)[COLUMNS]
    return MethodsComparison(table, pd.DataFrame(runs).T.rename_axis("method"), fits)


def checked_methods(include, allowed) -> list[str]:
    """The methods asked for (all of `allowed` if None), unknown names refused."""
    include = list(allowed if include is None else include)
    unknown = [m for m in include if m not in allowed]
    if unknown or not include:
        raise MultilevelError(f"unknown method(s) {unknown}: choose from {list(allowed)}")
    return include


def check_model(model) -> None:
    """Refuse what is not a model, and models whose methods cannot be compared (known residual SDs, data in partitions)."""
    if not hasattr(model, "design") or not hasattr(model, "fit"):
        raise MultilevelError(f"methods takes a model, mlv.Model(formula, data), not {type(model).__name__} {str(model)[:40]!r}")
    refuse_rows(model.design, "mlv.methods (ridge and elastic net fit the rows)")
    if model.design.se is not None:
        raise MultilevelError("methods() compares fits with an estimated residual variance; this model has se(): use model.sample()")


def run_method(model, name: str, bayes: dict | None = None, seed: int = 0, profile: bool = True):
    """One method on `model`, timed: (rows, fit, penalty, seconds, warnings raised other than the boundary
    one, which is a column). `profile=False` leaves out ML's profile intervals for the SDs."""
    runners = {
        "ML": lambda: _frequentist(model.fit(method="ML"), profile),
        "REML": lambda: _frequentist(model.fit()),
        "zero-avoiding": lambda: _frequentist(model.fit(prior="zero-avoiding")),
        "Bayes": lambda: bayes_rows(model.sample(**{"seed": seed, "progress": False, **(bayes or {})})),
        "ridge": lambda: _penalised(model.design, "ridge", seed),
        "elastic net": lambda: _penalised(model.design, "elastic net", seed),
        "ridge toward group mean": lambda: _ridge_to_mean(model.design),
    }
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows, fit, penalty = runners[name]()
    seconds = time.perf_counter() - start
    others = [w for w in caught if not str(w.message).startswith("boundary (singular)")]
    return rows, fit, penalty, seconds, others


@dataclass
class Rows:
    """One method's estimates, parameter by parameter, as arrays (a study scores thousands of these; `frame`
    makes the table). on_boundary: 1.0, 0.0, or NaN where the method does not judge it."""

    kind: list[str]
    parameter: list[str]
    estimate: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    on_boundary: np.ndarray

    def frame(self) -> pd.DataFrame:
        """The rows as a table (columns of COLUMNS but method; on_boundary a nullable boolean)."""
        boundary = pd.array(self.on_boundary == 1.0, dtype="boolean")
        boundary[np.isnan(self.on_boundary)] = pd.NA
        return pd.DataFrame({"kind": self.kind, "parameter": self.parameter, "estimate": self.estimate,
                             "ci_lower": self.ci_lower, "ci_upper": self.ci_upper, "on_boundary": boundary})


def joined(parts: list[Rows]) -> Rows:
    """Rows one after another."""
    return Rows([k for r in parts for k in r.kind], [n for r in parts for n in r.parameter],
                *(np.concatenate([getattr(r, c) for r in parts]) for c in ("estimate", "ci_lower", "ci_upper", "on_boundary")))


def _rows(kind, names, estimate, lower=None, upper=None, boundary=None) -> Rows:
    n = len(names)
    nan = np.full(n, np.nan)
    return Rows(
        [kind] * n,
        list(names),
        np.asarray(estimate, dtype=float),
        nan if lower is None else np.asarray(lower, dtype=float),
        nan if upper is None else np.asarray(upper, dtype=float),
        nan.copy() if boundary is None else np.asarray(boundary, dtype=float),
    )


def _variance_rows(params: dict, lower: dict | None = None, upper: dict | None = None) -> list[Rows]:
    """sd, cor and sigma rows from brms-named values, with the boundary rule applied to each."""
    sigma = params["sigma"]
    out = []
    for kind, test in (("sd", lambda v: v < SD_BOUNDARY * sigma), ("cor", lambda v: abs(v) > COR_BOUNDARY)):
        names = [n for n in params if n.startswith(kind + "_")]
        if names:
            out.append(
                _rows(
                    kind,
                    names,
                    [params[n] for n in names],
                    None if lower is None else [lower[n] for n in names],
                    None if upper is None else [upper[n] for n in names],
                    [bool(test(params[n])) for n in names],
                )
            )
    out.append(_rows("sigma", ["sigma"], [sigma], None if lower is None else [lower["sigma"]], None if upper is None else [upper["sigma"]], [False]))
    return out


def group_names(design) -> list[str]:
    """Every group effect's brms name: term by term, coefficient by coefficient, level by level."""
    return [
        group_effect_name(block.group, level, coef)
        for block in design.blocks
        for coef in block.coef_names
        for level in block.levels
    ]


def flat_effects(per_term: list[np.ndarray]) -> np.ndarray:
    """Values per term (levels x coefficients) in one vector, in the order of `group_names`."""
    return np.concatenate([v.T.ravel() for v in per_term])


def _frequentist(fit, profile: bool = True):
    """Rows of an ML/REML fit: Wald intervals for fixed effects, conditional intervals for group effects, and
    for an ML fit (if `profile`) profile intervals for the SDs, correlations and sigma."""
    params = parameter_values(fit)
    se = np.sqrt(np.diag(fit.vcov.to_numpy()))  # the Wald intervals of fit.fixed_effects, without its Satterthwaite df
    fixed = _rows("fixed", [n for n in params if n.startswith("b_")], fit.beta, fit.beta - Z95 * se, fit.beta + Z95 * se)
    b = flat_effects(fit.random_effects)
    sd = flat_effects([np.sqrt(np.diagonal(c, axis1=1, axis2=2)) for c in fit.conditional_covariances])
    group = _rows("group", group_names(fit.design), b, b - Z95 * sd, b + Z95 * sd)
    lower = upper = None
    if profile and not fit.reml and not fit.prior:
        lower, upper = _profile_bounds(fit)
    return joined([fixed, *_variance_rows(params, lower, upper), group]), fit, "estimated"


def _profile_bounds(fit) -> tuple[dict, dict]:
    """Profile-likelihood bounds of the SDs, correlations and sigma, keyed by brms names."""
    ci = fit.confint(method="profile")
    names = {"sigma": "sigma"}
    for block in fit.design.blocks:
        (lme4_sds, lme4_cors), (sds, cors) = variance_names(block, "lme4"), variance_names(block)
        names.update(zip(lme4_sds, sds))
        names.update((lme4[2], brms[2]) for lme4, brms in zip(lme4_cors, cors))
    ci = ci[ci.index.isin(list(names))].rename(index=names)
    return ci["lower"].to_dict(), ci["upper"].to_dict()


def bayes_rows(post, point: str = "mean"):
    """Rows of a Bayesian fit: posterior means (or medians, `point="median"`) and 95 % equal-tailed intervals."""
    center = {"mean": np.mean, "median": np.median}[point]
    params = {k: v.ravel() for k, v in post.parameters().items()}
    est = {k: float(center(v)) for k, v in params.items()}
    lo = {k: float(np.quantile(v, 0.025)) for k, v in params.items()}
    hi = {k: float(np.quantile(v, 0.975)) for k, v in params.items()}
    b = [n for n in params if n.startswith("b_")]
    fixed = _rows("fixed", b, [est[n] for n in b], [lo[n] for n in b], [hi[n] for n in b])
    draws = post.group_effect_draws()
    names = group_names(post.design)
    by_name = np.vstack([draws[n].ravel() for n in names])  # one row of draws per group effect
    group = _rows("group", names, center(by_name, axis=1), *np.quantile(by_name, [0.025, 0.975], axis=1))
    return joined([fixed, *_variance_rows(est, lo, hi), group]), post, "prior (brms default)"


def _indicator_columns(design) -> np.ndarray:
    """Group effects as columns: one per level and coefficient of every random term (term-major, as group_names)."""
    cols = []
    for block in design.blocks:
        for a in range(block.k):
            Z = np.zeros((design.nobs, block.m))
            Z[np.arange(design.nobs), block.codes] = block.Z[:, a]
            cols.append(Z)
    return np.column_stack(cols)


def _penalised(design, kind: str, seed: int):
    """Ridge or elastic net on [X, group columns], everything but the intercept penalised, penalty by CV."""
    from sklearn.linear_model import ElasticNetCV, RidgeCV
    from sklearn.model_selection import KFold

    names = design.fixed_names
    intercept = "(Intercept)" in names
    keep = [j for j, n in enumerate(names) if n != "(Intercept)"]
    Zg = _indicator_columns(design)
    A = np.column_stack([design.X[:, keep], Zg])
    y = response(design)
    if kind == "ridge":
        est = RidgeCV(alphas=RIDGE_ALPHAS, fit_intercept=intercept).fit(A, y)
    else:
        folds = KFold(5, shuffle=True, random_state=seed)
        est = ElasticNetCV(l1_ratio=[0.1, 0.5, 0.9, 1.0], cv=folds, fit_intercept=intercept, max_iter=50_000).fit(A, y)
    beta = np.zeros(len(names))
    beta[keep] = est.coef_[: len(keep)]
    if intercept:
        beta[names.index("(Intercept)")] = est.intercept_
    b = est.coef_[len(keep):]
    shrunk_out = est.alpha_ >= RIDGE_ALPHAS[-1] if kind == "ridge" else not np.any(b)
    names_g = group_names(design)
    rows = [_rows("fixed", _fixed_names(design), beta), _rows("group", names_g, b, boundary=[bool(shrunk_out)] * len(names_g))]
    penalty = f"alpha={est.alpha_:.4g}" + (f", l1_ratio={est.l1_ratio_:g}" if kind != "ridge" else "") + " (CV)"
    return joined(rows), est, penalty


def _ridge_to_mean(design):
    """Ridge on the group columns only, fixed effects unpenalised (projected out), penalty by leave-one-out CV.

    Also reports what the penalty implies as a mixed model: sigma from the residuals with the ridge's effective
    degrees of freedom, and a between-group SD of sigma / sqrt(lambda) for every group coefficient.
    """
    from sklearn.linear_model import RidgeCV

    y, Zg = response(design), _indicator_columns(design)
    held = Scaling.learn(design.X, np.zeros(design.nobs), design.fixed_names)  # centred: x + 1e9 keeps its digits
    X = held.apply(np.column_stack([design.X, np.zeros(design.nobs)]))[:, :-1]
    Q, _ = np.linalg.qr(X)
    Zr, yr = Zg - Q @ (Q.T @ Zg), y - Q @ (Q.T @ y)
    est = RidgeCV(alphas=RIDGE_ALPHAS, fit_intercept=False).fit(Zr, yr)
    b = est.coef_
    held_beta = np.linalg.lstsq(X, y - Zg @ b, rcond=None)[0]
    lam = float(est.alpha_)
    d = np.linalg.svd(Zr, compute_uv=False)
    edf = X.shape[1] + float(np.sum(d**2 / (d**2 + lam)))
    sigma = float(np.sqrt(np.sum((y - X @ held_beta - Zg @ b) ** 2) / (design.nobs - edf)))
    beta = held.coefficients(held_beta)
    implied = {}
    for block in design.blocks:
        for coef in block.coef_names:
            implied[sd_name(block.group, coef)] = sigma / np.sqrt(lam)
    implied["sigma"] = sigma
    variance = _variance_rows(implied)
    at_edge = lam >= RIDGE_ALPHAS[-1]  # the largest penalty tried: group effects shrunk to 0, the ridge's boundary
    variance[0].on_boundary[:] = at_edge
    names_g = group_names(design)
    rows = [_rows("fixed", _fixed_names(design), beta), *variance, _rows("group", names_g, b, boundary=[at_edge] * len(names_g))]
    return joined(rows), est, f"lambda={lam:.4g} (LOO-CV)"


def _fixed_names(design) -> list[str]:
    return [fixed_name(n) for n in design.fixed_names]


def _interval_width(table: pd.DataFrame, method: str) -> float:
    t = table[(table["method"] == method) & (table["kind"] == "group")]
    return float((t["ci_upper"] - t["ci_lower"]).mean())


def account(result: MethodsComparison) -> str:
    """A short plain-words account of where the methods differ and why."""
    t, runs = result.table, result.runs
    lines = []
    boundary = t[t["on_boundary"].fillna(False).astype(bool) & t["kind"].isin(["sd", "cor"])]
    for method, rows in boundary.groupby("method", sort=False):
        lines.append(
            f"{method} puts {', '.join(rows['parameter'])} on the boundary (an SD of 0 or a correlation of +/-1): "
            "the criterion is best there, which rarely means the groups truly do not differ."
        )
    off = [m for m in ("zero-avoiding", "Bayes") if m in runs.index and not runs.loc[m, "on_boundary"]]
    if len(boundary) and off:
        lines.append(
            f"Off the boundary: {' and '.join(off)}, whose priors put little weight on an SD of exactly 0 "
            "(Bayes also averages over all plausible SDs instead of picking one)."
        )
    wide = result.wide(("sd",))
    if {"ML", "REML"} <= set(wide.columns) and len(wide):
        ratio = (wide["REML"] / wide["ML"]).replace([np.inf], np.nan).dropna()
        if len(ratio):
            lines.append(
                f"REML's group SDs are {100 * (ratio.mean() - 1):+.1f}% against ML's on average: ML does not allow "
                "for the degrees of freedom the fixed effects use, so it underestimates variances, most with few groups."
            )
    if {"REML", "Bayes"} <= set(runs.index):
        w_f, w_b = _interval_width(t, "REML"), _interval_width(t, "Bayes")
        if w_f > 0:
            lines.append(
                f"Bayesian intervals for group effects are {w_b / w_f:.2f} times as wide as REML's on average: REML's are "
                "conditional on the estimated variances and fixed effects (treated as known), the Bayesian ones "
                "integrate over their uncertainty."
            )
    penalised = [m for m in ("ridge", "elastic net", "ridge toward group mean") if m in runs.index]
    if penalised:
        penalties = "; ".join(f"{m}: {runs.loc[m, 'penalty']}" for m in penalised)
        lines.append(
            f"Penalised regressions ({penalties}) tune one "
            "penalty for all group columns by cross-validation, for prediction; the mixed model estimates its "
            "shrinkage (sigma²/tau², per coefficient, with correlations) from the likelihood and gives intervals."
        )
        edge = [m for m in penalised if t[(t["method"] == m) & (t["kind"] == "group")]["on_boundary"].fillna(False).any()]
        if edge:
            lines.append(f"{', '.join(edge)} shrink every group effect to 0 (the largest penalty tried): the penalised "
                         "regressions' version of a boundary fit.")
    if "ridge" in runs.index or "elastic net" in runs.index:
        lines.append(
            "Plain ridge and elastic net also shrink the fixed effects toward 0; 'ridge toward group mean' leaves "
            "them unpenalised, as a hierarchical model does, and is the fair comparison."
        )
    fixed = result.wide(("fixed",))
    if len(fixed.columns) > 1:
        rel = (fixed.max(axis=1) - fixed.min(axis=1)) / fixed.abs().max(axis=1)
        if rel.max() < 1e-4:
            lines.append("The fixed effects agree across methods to 4 significant digits.")
        else:
            worst = rel.idxmax()
            lines.append(
                f"The fixed effects differ most on {worst} (from {fixed.loc[worst].min():.4g} to {fixed.loc[worst].max():.4g})."
            )
    if {"REML", "zero-avoiding"} & set(runs.index):
        lines.append(
            "SD intervals: profile likelihood for ML; none in the REML and zero-avoiding rows (a parametric "
            "bootstrap gives them); credible intervals for Bayes."
        )
    return "\n".join(f"- {line}" for line in lines)
