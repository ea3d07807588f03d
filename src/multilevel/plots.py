"""Pictures of fitted models (pipeline step 9): each function reads results and returns a matplotlib Figure.

Plots never refit or re-estimate: they draw the tables and draws of the result objects (live or loaded with
`multilevel.io.load`) and, where a picture needs numbers from another step (no-pooling estimates,
predictive draws, Pareto k), take them as arguments.

Examples:
    >>> import multilevel as mlv
    >>> from multilevel import plots
    >>> fit = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff")).fit()
    >>> fig = plots.caterpillar(fit)
    >>> len(fig.axes[0].collections[0].get_segments())  # one interval per batch
    6
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from .errors import MultilevelError
from .kinds import Generalized, OccupancyResult, is_bayesian

Z95 = 1.959963984540054  # normal 97.5 % quantile: frequentist group-effect intervals are estimate +/- Z95 * SE
PARETO_K_LIMIT = 0.7  # above this, PSIS-LOO is unreliable for that observation (Vehtari et al. 2024)
COLORS = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]


# ---------------------------------------------------------------------------------------------- helpers
def label(result) -> str:
    """Short name of a result: 'REML', 'ML', 'REML (zero-avoiding)', 'ML binomial (Laplace)', 'Bayes (nuts)',
    'occupancy ML' or 'occupancy Bayes (nuts)'."""
    if isinstance(result, OccupancyResult):
        return f"occupancy {f'Bayes ({result.sampler})' if is_bayesian(result) else 'ML'}"
    if is_bayesian(result):
        return f"Bayes ({result.sampler})"
    if isinstance(result, Generalized):
        return f"ML {result.family.name} ({'Laplace' if result.nAGQ <= 1 else f'AGQ {result.nAGQ}'})"
    return result.method + (f" ({result.prior})" if getattr(result, "prior", None) else "")


def group_effect_table(result) -> pd.DataFrame:
    """The long group-effects table (group, level, term, estimate, std_error[, ci_lower, ci_upper])."""
    table = result.group_effects
    return table() if callable(table) else table


def _intervals(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """95 % intervals: the credible interval if present, else estimate +/- 1.96 conditional SD."""
    if "ci_lower" in table:
        return table["ci_lower"].to_numpy(), table["ci_upper"].to_numpy()
    est, se = table["estimate"].to_numpy(), table["std_error"].to_numpy()
    return est - Z95 * se, est + Z95 * se


def _as_list(results) -> list:
    if isinstance(results, dict):
        return list(results.values())
    return list(results) if isinstance(results, (list, tuple)) else [results]


def _names(results, labels) -> list[str]:
    if isinstance(results, dict):
        return list(results)
    items = _as_list(results)
    if labels is not None:
        if len(labels) != len(items):
            raise MultilevelError(f"got {len(labels)} labels for {len(items)} results: give one label per result")
        return list(labels)
    return [label(r) for r in items]


def _grid(n: int, ncols: int, width: float = 4.2, height: float = 3.0) -> tuple[Figure, np.ndarray]:
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(width * ncols, height * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.remove()
    return fig, axes.ravel()[:n]


def _draw_names(post, var_names) -> list[str]:
    params = post.parameters()
    if var_names is None:
        return list(params)
    unknown = [v for v in var_names if v not in params]
    if unknown:
        raise MultilevelError(f"no parameter named {unknown}; parameters: {list(params)}")
    return list(var_names)


# ---------------------------------------------------------------------------------------------- group effects
def caterpillar(results, group: str | None = None, term: str | None = None, labels=None) -> Figure:
    """Group effects with 95 % intervals, one panel per (group, term); several results side by side.

    `results` is a fit, a posterior, a list of them or a dict label -> result. Frequentist intervals are
    estimate +/- 1.96 conditional SD; Bayesian ones are the central 95 % credible intervals.
    """
    items, names = _as_list(results), _names(results, labels)
    tables = [group_effect_table(r) for r in items]
    first = tables[0]
    keys = first[["group", "term"]].drop_duplicates()
    if group is not None:
        keys = keys[keys["group"] == group]
    if term is not None:
        keys = keys[keys["term"] == term]
    if keys.empty:
        raise MultilevelError(
            f"no group effects for group={group!r}, term={term!r}; available: "
            + ", ".join(f"{g}/{t}" for g, t in first[["group", "term"]].drop_duplicates().itertuples(index=False))
        )
    n_levels = [int(((first["group"] == g) & (first["term"] == t)).sum()) for g, t in keys.itertuples(index=False)]
    fig = Figure(figsize=(4.2 * len(keys), 1.2 + 0.22 * min(max(n_levels), 150)))
    axes = fig.subplots(1, len(keys), squeeze=False)
    offsets = (np.arange(len(items)) - (len(items) - 1) / 2) * (0.6 / max(len(items), 1))
    for ax, (g, t) in zip(axes[0], keys.itertuples(index=False)):
        rows = [tab[(tab["group"] == g) & (tab["term"] == t)].set_index("level") for tab in tables]
        order = rows[0]["estimate"].sort_values().index
        for i, (row, name, dy) in enumerate(zip(rows, names, offsets)):
            row = row.reindex(order)
            lo, hi = _intervals(row)
            y = np.arange(len(order)) + dy
            color = COLORS[i % len(COLORS)]
            ax.hlines(y, lo, hi, color=color, linewidth=1.2, label=name)
            ax.plot(row["estimate"].to_numpy(), y, "o", color=color, markersize=3)
        ax.axvline(0.0, color="0.5", linewidth=0.8, linestyle=":")
        ax.set_yticks(np.arange(len(order)), [str(v) for v in order], fontsize=7 if len(order) > 30 else 9)
        ax.set_title(f"{g}: {t}")
        ax.set_xlabel("group effect (deviation from the population value)")
        if len(items) > 1:
            ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def shrinkage(no_pooling: pd.DataFrame, partial_pooling: pd.DataFrame, term: str, term_y: str | None = None,
              population: dict | None = None) -> Figure:
    """Arrows from each group's own estimate (no pooling) to its partially pooled one, sized by group size.

    Both tables are long: columns ``level``, ``term``, ``estimate`` (the group's coefficient, population value
    plus group effect); `no_pooling` also has ``n`` (rows in the group). With `term_y` the arrows move in the
    plane (term, term_y); otherwise they move along the term against group size. `population` (term -> value)
    marks the population estimate.
    """
    for name, table in (("no_pooling", no_pooling), ("partial_pooling", partial_pooling)):
        missing = {"level", "term", "estimate"} - set(table.columns)
        if missing:
            raise MultilevelError(f"{name} needs columns level, term, estimate; missing {sorted(missing)}")
    if "n" not in no_pooling:
        raise MultilevelError("no_pooling needs a column 'n' (rows per group) to size the points")
    wide_np = no_pooling.pivot(index="level", columns="term", values="estimate")
    wide_pp = partial_pooling.pivot(index="level", columns="term", values="estimate").reindex(wide_np.index)
    sizes = no_pooling.drop_duplicates("level").set_index("level")["n"].reindex(wide_np.index).to_numpy(float)
    for t in (term, term_y):
        if t is not None and (t not in wide_np or t not in wide_pp):
            raise MultilevelError(f"term {t!r} is not in both tables; terms: {sorted(set(wide_np) & set(wide_pp))}")
    area = 15 + 120 * sizes / sizes.max()
    fig = Figure(figsize=(6.5, 5))
    ax = fig.subplots()
    if term_y is None:
        x0 = x1 = sizes
        y0, y1 = wide_np[term].to_numpy(), wide_pp[term].to_numpy()
        ax.set_xlabel("rows in the group")
        ax.set_ylabel(term)
    else:
        x0, x1 = wide_np[term].to_numpy(), wide_pp[term].to_numpy()
        y0, y1 = wide_np[term_y].to_numpy(), wide_pp[term_y].to_numpy()
        ax.set_xlabel(term)
        ax.set_ylabel(term_y)
    ax.scatter(x0, y0, s=area, facecolors="none", edgecolors=COLORS[0], label="no pooling (group alone)")
    ax.scatter(x1, y1, s=area, color=COLORS[1], label="partial pooling (model)")
    for a, b, c, d in zip(x0, y0, x1, y1):
        ax.annotate("", xy=(c, d), xytext=(a, b), arrowprops={"arrowstyle": "->", "color": "0.35", "linewidth": 0.8})
    if population:
        if term_y is None:
            ax.axhline(population[term], color="k", linestyle="--", linewidth=1, label="population estimate")
        else:
            ax.plot(population[term], population[term_y], "k*", markersize=12, label="population estimate")
    ax.set_title("Shrinkage toward the population estimate")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- variances
def variance_decomposition(results, labels=None) -> Figure:
    """Stacked bars of where the variance lives: each grouping factor's intercept variance and the residual,
    as shares of their sum (the variance of one observation at covariates 0), one bar per result.

    A result may also be a DataFrame with columns ``component`` and ``variance`` (e.g. a table from
    another check), drawn as given.
    """
    items, names = _as_list(results), _names(results, labels) if labels or isinstance(results, dict) else None
    if names is None:
        names = [label(r) if not isinstance(r, pd.DataFrame) else f"table {i + 1}" for i, r in enumerate(items)]
    tables = [r if isinstance(r, pd.DataFrame) else _intercept_variances(r) for r in items]
    components = list(dict.fromkeys(c for t in tables for c in t["component"]))
    fig = Figure(figsize=(7, 1.4 + 0.6 * len(items)))
    ax = fig.subplots()
    left = np.zeros(len(items))
    for j, comp in enumerate(components):
        share = np.array([_share(t, comp) for t in tables])
        bars = ax.barh(np.arange(len(items)), share, left=left, color=COLORS[j % len(COLORS)], label=comp)
        for bar, s in zip(bars, share):
            if s > 0.06:
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_y() + bar.get_height() / 2, f"{s:.0%}",
                        ha="center", va="center", fontsize=8, color="white")
        left += share
    ax.set_yticks(np.arange(len(items)), names)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of variance")
    ax.legend(fontsize=8, ncol=min(len(components), 4), loc="upper center", bbox_to_anchor=(0.5, -0.35))
    ax.set_title("Variance decomposition")
    fig.tight_layout()
    return fig


def _intercept_variances(result) -> pd.DataFrame:
    vc = result.variance_components
    keep = (vc["term2"] == "") & ((vc["term"] == "(Intercept)") | (vc["group"] == "Residual"))
    rows = vc[keep]
    if not (rows["group"] != "Residual").any():
        raise MultilevelError("the variance decomposition needs random intercepts; this model has none")
    # For Bayesian tables the variance column is the posterior mean of the variance, the same scale as ML/REML.
    return pd.DataFrame({"component": rows["group"].to_numpy(), "variance": rows["variance"].to_numpy()})


def _share(table: pd.DataFrame, component: str) -> float:
    total = table["variance"].sum()
    return float(table.loc[table["component"] == component, "variance"].sum() / total) if total > 0 else 0.0


def variance_posteriors(post, fits=(), var_names=None) -> Figure:
    """Posterior density of each random-effect SD (and sigma), with the frequentist estimates marked:
    a REML or ML estimate at 0 against posterior mass away from it shows a boundary fit."""
    params = post.parameters()
    names = var_names or [n for n in params if n.startswith("sd_") or n == "sigma"]
    fig, axes = _grid(len(names), 3)
    fits = _as_list(fits) if fits is not None else []
    for ax, name in zip(axes, names):
        draws = params[name].ravel()
        ax.hist(draws, bins=50, density=True, color="0.75", label="posterior")
        lo, hi = np.quantile(draws, [0.025, 0.975])
        ax.axvspan(lo, hi, color="0.9", zorder=0)
        for i, fit in enumerate(fits):
            value = _frequentist_sd(fit, name)
            ax.axvline(value, color=COLORS[(i + 1) % len(COLORS)], linewidth=2, label=f"{label(fit)}: {value:.3g}")
        ax.set_title(name, fontsize=9)
        ax.set_xlim(left=0)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _frequentist_sd(fit, brms_name: str) -> float:
    """The SD a frequentist fit reports for a brms-named SD parameter."""
    vc = fit.variance_components
    if brms_name == "sigma":
        return float(vc.loc[vc["group"] == "Residual", "sd"].iloc[0])
    group, _, coef = brms_name[3:].rpartition("__")
    coef = "(Intercept)" if coef == "Intercept" else coef
    hit = vc[(vc["group"] == group) & (vc["term"] == coef) & (vc["term2"] == "")]
    if hit.empty:
        raise MultilevelError(f"the fit {label(fit)} has no variance component {group}: {coef}")
    return float(hit["sd"].iloc[0])


# ---------------------------------------------------------------------------------------------- MCMC diagnostics
def trace(post, var_names=None) -> Figure:
    """Draws against iteration, one line per chain and one panel per parameter."""
    params, names = post.parameters(), _draw_names(post, var_names)
    fig, axes = _grid(len(names), 2, width=5.5, height=2.2)
    for ax, name in zip(axes, names):
        for c, chain in enumerate(params[name]):
            ax.plot(chain, linewidth=0.5, alpha=0.8, color=COLORS[c % len(COLORS)], label=f"chain {c + 1}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("draw")
    fig.tight_layout()
    return fig


def rank(post, var_names=None, bins: int = 20) -> Figure:
    """Rank histograms: the ranks of each chain's draws among all chains; flat bars mean the chains agree."""
    params, names = post.parameters(), _draw_names(post, var_names)
    fig, axes = _grid(len(names), 2, width=5.5, height=2.2 + 0.25 * post.n_chains)
    for ax, name in zip(axes, names):
        draws = params[name]
        ranks = stats.rankdata(draws.ravel()).reshape(draws.shape)
        edges = np.linspace(0.5, draws.size + 0.5, bins + 1)
        expected = draws.shape[1] / bins
        for c, chain_ranks in enumerate(ranks):
            counts, _ = np.histogram(chain_ranks, edges)
            base = c * 1.2 * expected * 2
            ax.bar(edges[:-1], counts, width=np.diff(edges), bottom=base, align="edge",
                   color=COLORS[c % len(COLORS)], edgecolor="white", linewidth=0.3)
            ax.axhline(base + expected, color="k", linestyle=":", linewidth=0.7)
        ax.set_yticks([c * 2.4 * expected + expected for c in range(post.n_chains)],
                      [f"chain {c + 1}" for c in range(post.n_chains)], fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("rank of draw (all chains)")
    fig.tight_layout()
    return fig


def pareto_k(k, limit: float = PARETO_K_LIMIT) -> Figure:
    """PSIS-LOO Pareto k per observation (an ArviZ ELPD result, whose own threshold is then used, or an
    array); points above the line are observations whose leave-one-out estimate is unreliable."""
    values = np.asarray(getattr(k, "pareto_k", k)).ravel()
    limit = float(getattr(k, "good_k", limit))
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    bad = values > limit
    ax.scatter(np.flatnonzero(~bad), values[~bad], s=10, color=COLORS[0], label=f"k <= {limit}")
    ax.scatter(np.flatnonzero(bad), values[bad], s=18, color="C3", marker="x", label=f"k > {limit} ({bad.sum()})")
    ax.axhline(limit, color="C3", linestyle="--", linewidth=1)
    return _finish(fig, ax, "observation", "Pareto k", "PSIS-LOO diagnostics")


# ---------------------------------------------------------------------------------------------- predictive checks
def ppc_overlay(y: np.ndarray, y_rep: np.ndarray, n: int = 50, seed: int = 0) -> Figure:
    """Histogram outline of the observed response over those of `n` replicated data sets (draws x nobs)."""
    y = np.asarray(y, float)
    y_rep = np.asarray(y_rep, float).reshape(-1, y.size)
    pick = np.random.default_rng(seed).choice(y_rep.shape[0], size=min(n, y_rep.shape[0]), replace=False)
    edges = np.histogram_bin_edges(np.concatenate([y, y_rep[pick].ravel()]), bins=min(40, max(10, y.size // 5)))
    mids = (edges[:-1] + edges[1:]) / 2
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    for i, row in enumerate(y_rep[pick]):
        ax.plot(mids, np.histogram(row, edges, density=True)[0], color=COLORS[0], alpha=0.2, linewidth=0.8,
                label="replicated" if i == 0 else None)
    ax.plot(mids, np.histogram(y, edges, density=True)[0], color="k", linewidth=2, label="observed")
    return _finish(fig, ax, "response", "density", "Posterior predictive check")


def _finish(fig: Figure, ax, xlabel: str, ylabel: str, title: str) -> Figure:
    """Axis labels, title and legend, then a tight layout: the last steps every single-panel plot shares."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def ppc_statistic(t_rep: np.ndarray, t_obs: float, name: str = "T(y)") -> Figure:
    """Distribution of a test statistic over replicated data with the observed value marked (and its
    posterior predictive p-value, the share of replicates at or above it)."""
    t_rep = np.asarray(t_rep, float).ravel()
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    ax.hist(t_rep, bins=40, color="0.7", label="replicated")
    p = float(np.mean(t_rep >= t_obs))
    ax.axvline(t_obs, color="k", linewidth=2, label=f"observed (p = {p:.2f})")
    ax.set_xlabel(name)
    ax.set_title(f"Predictive check: {name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- frequentist residuals
def residuals(fit) -> Figure:
    """Residuals against fitted values, and a normal QQ plot of the residuals."""
    fitted, resid = np.asarray(fit.fitted()), np.asarray(fit.residuals())
    fig = Figure(figsize=(9, 3.6))
    left, right = fig.subplots(1, 2)
    left.scatter(fitted, resid, s=8, alpha=0.7)
    left.axhline(0, color="k", linewidth=0.8)
    left.set_xlabel("fitted")
    left.set_ylabel("residual")
    left.set_title(f"Residuals ({label(fit)})")
    (theory, ordered), (slope, intercept, _) = stats.probplot(resid, dist="norm")
    right.scatter(theory, ordered, s=8, alpha=0.7)
    right.plot(theory, intercept + slope * theory, color="C3", linewidth=1)
    right.set_xlabel("normal quantile")
    right.set_ylabel("residual")
    right.set_title("Normal QQ plot")
    fig.tight_layout()
    return fig


def quantile_residuals(sim) -> Figure:
    """DHARMa's two panels for `fit.simulated_residuals()`: a uniform QQ plot with the KS test, and the
    residuals against the rank of the fitted values with their 0.25, 0.5, 0.75 lines."""
    r = np.sort(sim.residuals)
    tests = sim.tests()["p_value"]
    fig = Figure(figsize=(9, 3.6))
    left, right = fig.subplots(1, 2)
    left.scatter((np.arange(len(r)) + 0.5) / len(r), r, s=8, alpha=0.7)
    left.plot([0, 1], [0, 1], color="C3", linewidth=1)
    left.set_title(f"Uniform QQ (KS p = {tests.iloc[0]:.3g}, dispersion p = {tests.iloc[1]:.3g})", fontsize=9)
    left.set_xlabel("expected")
    left.set_ylabel("observed")
    right.scatter(stats.rankdata(sim.fitted) / len(sim.fitted), sim.residuals, s=8, alpha=0.7)
    for q in (0.25, 0.5, 0.75):
        right.axhline(q, color="C3", linewidth=0.8, linestyle="--")
    right.set_xlabel("fitted (rank transformed)")
    right.set_ylabel("scaled residual")
    right.set_title("Residuals vs fitted")
    fig.tight_layout()
    return fig


def binned_residuals(table: pd.DataFrame) -> Figure:
    """`fit.binned_residuals()`: mean residual per bin against mean fitted probability inside +/- 2 SE."""
    fig = Figure(figsize=(5, 3.6))
    ax = fig.subplots()
    ax.plot(table["fitted"], table["bound"], color="0.5", linewidth=1, label="+/- 2 SE")
    ax.plot(table["fitted"], -table["bound"], color="0.5", linewidth=1)
    colour = np.where(table["inside"], "C0", "C3")
    ax.scatter(table["fitted"], table["residual"], s=14, c=colour, label="bins")
    ax.axhline(0, color="k", linewidth=0.8)
    return _finish(fig, ax, "mean fitted probability", "mean residual",
                   f"Binned residuals ({int(table['inside'].mean() * 100)} % inside 2 SE)")


# ---------------------------------------------------------------------------------------------- studies
def _study_panels(table: pd.DataFrame, column: str) -> tuple[Figure, np.ndarray, list[str], list[str]]:
    """One panel per parameter that has `column`, one row of points per method."""
    t = table.dropna(subset=[column])
    if t.empty:
        raise MultilevelError(f"no method in this study reports {column}")
    parameters = list(dict.fromkeys(t["parameter"]))
    methods = list(dict.fromkeys(t["method"]))
    fig, axes = _grid(len(parameters), 3, width=3.6, height=0.8 + 0.35 * len(methods))
    return fig, axes, parameters, methods


def study_coverage(result, level: float = 0.95) -> Figure:
    """Coverage of each method's 95 % intervals per parameter, with +/- 2 Monte Carlo SE bars, against the
    nominal line."""
    table = result.table
    fig, axes, parameters, methods = _study_panels(table, "coverage")
    for ax, parameter in zip(axes, parameters):
        t = table[(table["parameter"] == parameter)].set_index("method").reindex(methods)
        y = np.arange(len(methods))
        ax.errorbar(t["coverage"], y, xerr=2 * t["coverage_mcse"].fillna(0), fmt="o", color=COLORS[0], capsize=3)
        ax.axvline(level, color="k", linestyle="--", linewidth=1)
        ax.set_yticks(y, methods, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(parameter, fontsize=9)
        ax.set_xlabel("coverage", fontsize=8)
    fig.suptitle(f"Interval coverage (nominal {level:.0%}; bars: 2 MC SE)", fontsize=10)
    fig.tight_layout()
    return fig


def study_errors(result) -> Figure:
    """Bias (+/- 2 MC SE) and RMSE of each method per parameter: bias as points, RMSE as bars."""
    table = result.table
    fig, axes, parameters, methods = _study_panels(table, "rmse")
    for ax, parameter in zip(axes, parameters):
        t = table[(table["parameter"] == parameter)].set_index("method").reindex(methods)
        y = np.arange(len(methods))
        ax.barh(y, t["rmse"], color=COLORS[1], alpha=0.35, label="RMSE")
        ax.errorbar(t["bias"], y, xerr=2 * t["bias_mcse"].fillna(0), fmt="o", color=COLORS[0], capsize=3, label="bias")
        ax.axvline(0, color="k", linewidth=0.8)
        ax.set_yticks(y, methods, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(parameter, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle("Bias (points, 2 MC SE bars) and RMSE (bars)", fontsize=10)
    fig.tight_layout()
    return fig


def study_boundary(results: dict, parameter: str) -> Figure:
    """Share of boundary estimates of `parameter` (e.g. an SD) against the number of groups, one line per
    method; `results` maps any label to a study, its number of groups read from the study's settings."""
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    tables = [(sum(r.settings["n_levels"].values()), r.table) for r in results.values()]
    tables.sort(key=lambda pair: pair[0])
    methods = list(dict.fromkeys(m for _, t in tables for m in t.loc[t["parameter"] == parameter, "method"]))
    if not methods:
        raise MultilevelError(f"no study has the parameter '{parameter}'")
    for j, method in enumerate(methods):
        points = [(n, t.set_index(["method", "parameter"]).loc[(method, parameter)]) for n, t in tables
                  if ((t["method"] == method) & (t["parameter"] == parameter)).any()]
        n = [p[0] for p in points]
        share = np.array([p[1]["boundary_share"] for p in points], dtype=float)
        mcse = np.array([p[1]["boundary_mcse"] for p in points], dtype=float)
        ax.errorbar(n, share, yerr=2 * np.nan_to_num(mcse), marker="o", capsize=3, color=COLORS[j % len(COLORS)], label=method)
    ax.set_xscale("log")
    ax.set_xticks([n for n, _ in tables], [str(n) for n, _ in tables])
    ax.minorticks_off()
    return _finish(fig, ax, "number of groups", "share on the boundary", f"Boundary estimates of {parameter}")
