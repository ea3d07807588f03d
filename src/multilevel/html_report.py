"""One self-contained HTML report of one or several results: model and data, estimates, side-by-side
comparison, diagnostics with warnings highlighted, and the plots (PNG embedded; no network needed).

>>> import tempfile, pathlib, multilevel as mlv
>>> from multilevel import report
>>> fit = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff")).fit()
>>> path = report(fit, pathlib.Path(tempfile.mkdtemp()) / "report.html")
>>> "<img" in path.read_text()
True
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import occupancy_plots, plots
from .errors import MultilevelError
from .glmm_checks import is_binary
from .html_tables import escape as _e
from .html_tables import table as _table
from .kinds import Generalized, OccupancyResult, Study, require_result
from .partitioned import PartitionedDesign
from .saving import check_writable, write_atomically

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:1rem;
 color:#222;line-height:1.45}
h1{font-size:1.6rem;margin:.2rem 0}h2{font-size:1.25rem;border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
h3{font-size:1.05rem;margin-bottom:.3rem}
code{background:#f4f4f4;padding:.1rem .3rem;border-radius:3px;word-break:break-word}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;margin:.4rem 0 1rem}
table{border-collapse:collapse;font-size:.9rem;font-variant-numeric:tabular-nums}
th,td{padding:.25rem .6rem;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}thead th{background:#f6f6f6}
.warning{background:#fff3f0;border-left:5px solid #d9480f;padding:.5rem .8rem;margin:.4rem 0}
.ok{background:#f0fbf3;border-left:5px solid #2b8a3e;padding:.5rem .8rem;margin:.4rem 0}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:.85rem;color:#555}
.meta{color:#555;font-size:.9rem}
@media (max-width:600px){body{padding:.5rem}th,td{padding:.2rem .35rem;font-size:.8rem}}
@media print{body{max-width:none;padding:0}h2{break-after:avoid}figure,table,.warning{break-inside:avoid}
 .scroll{overflow:visible}a{color:inherit;text-decoration:none}}
"""


def report(results, path, title: str | None = None, force: bool = False, figures: dict | None = None) -> Path:
    """Write the HTML report of `results` (a result, a list, or a dict label -> result) to `path`.

    `figures` adds more matplotlib figures (caption -> Figure), e.g. a `plots.shrinkage` picture.
    An existing file is kept unless ``force=True``.
    """
    path = Path(path)
    check_writable(path, force)
    items = _labelled(results)
    page = render(items, title or "Multilevel model report", figures or {})
    write_atomically(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


def render(items: dict, title: str, figures: dict) -> str:
    """The report page as one HTML string (occupancy models and studies get their own sections, after the fits')."""
    studies = {n: r for n, r in items.items() if isinstance(r, Study)}
    occupancy = {n: r for n, r in items.items() if isinstance(r, OccupancyResult)}
    items = {n: r for n, r in items.items() if n not in studies and n not in occupancy}
    body = [f"<h1>{_e(title)}</h1>"]
    if items:
        body += [_model_section(items), _estimates_section(items)]
        if len(items) > 1:
            body.append(_comparison_section(items))
        body += [_diagnostics_section(items), _plots_section(items, figures)]
    body += [_occupancy_section(name, result) for name, result in occupancy.items()]
    if len(occupancy) > 1:
        body.append("<h2>Occupancy models side by side</h2><p class='meta'>Coefficients (logit scale), the random "
                    "intercept's SD and the occupied sites among those surveyed: estimate and standard error (posterior "
                    "mean and SD)</p>" + _table(occupancy_comparison(occupancy), "compare-occupancy"))
    body += [_study_section(name, study) for name, study in studies.items()]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>"
    )


def _labelled(results) -> dict:
    """Results as label -> result (labels made unique); anything but results is refused first."""
    if isinstance(results, dict):
        named = list(results.items())
    else:
        named = [(None, r) for r in (results if isinstance(results, (list, tuple)) else [results])]
    if not named:
        raise MultilevelError("report needs at least one result (a fit or a posterior)")
    for i, (name, r) in enumerate(named):
        require_result(r, f"report's results[{i if name is None else repr(name)}]")
    items = {}
    for name, r in named:
        base, i = name if name is not None else "study" if isinstance(r, Study) else plots.label(r), 2
        name = base
        while name in items:
            name, i = f"{base} #{i}", i + 1
        items[name] = r
    return items


# ---------------------------------------------------------------------------------------------- sections
def _model_section(items: dict) -> str:
    out = ["<h2>Model and data</h2>"]
    seen = set()
    for name, r in items.items():
        d = r.design
        key = str(d.formula)
        if key in seen:
            continue
        seen.add(key)
        out.append(f"<p>Formula: <code>{_e(key)}</code></p>")
        dropped = f", {d.n_dropped} dropped for missing values" if d.n_dropped else ", none dropped"
        out.append(f'<p class="meta">Rows used: {d.nobs}{dropped}. Fixed effects: {_e(", ".join(d.fixed_names))}.</p>')
        rows = []
        for b in d.blocks:
            sizes = b.sizes if isinstance(d, PartitionedDesign) else np.bincount(np.asarray(b.codes), minlength=b.m)
            rows.append([b.group, ", ".join(b.coef_names), b.m, sizes.min(), float(np.median(sizes)), sizes.max()])
        table = pd.DataFrame(rows, columns=["group", "varying", "levels", "smallest", "median size", "largest"])
        out.append(_table(table, f"groups-{_slug(key)}", index=False))
    return "".join(out)


def _estimates_section(items: dict) -> str:
    out = ["<h2>Estimates</h2>"]
    for name, r in items.items():
        glmm = isinstance(r, Generalized)
        kind = ("posterior mean, SD and 95 % credible interval" if plots.is_bayesian(r) else
                "estimate, standard error, Wald z" if glmm else "estimate, standard error, Satterthwaite df")
        out.append(f"<h3>{_e(name)}</h3><p class='meta'>Fixed effects ({kind})</p>")
        out.append(_table(r.fixed_effects, f"fixed-{_slug(name)}"))
        scale = "on the link scale" if glmm else "Residual = sigma"
        out.append(f"<p class='meta'>Variance components (SD and correlation of the group effects; {scale})</p>")
        out.append(_table(r.variance_components, f"varcomp-{_slug(name)}", index=False))
    return "".join(out)


def _comparison_section(items: dict) -> str:
    fixed = pd.concat({n: r.fixed_effects[["estimate", "std_error"]] for n, r in items.items()}, axis=1)
    fixed.columns = [f"{n} {c}" for n, c in fixed.columns]
    sds = {}
    for n, r in items.items():
        vc = r.variance_components
        keys = [f"{g}: {t}" if not t2 else f"{g}: cor({t2}, {t})" for g, t, t2 in vc[["group", "term", "term2"]].itertuples(index=False)]
        sds[n] = pd.Series(np.where(vc["term2"] == "", vc["sd"], vc["corr"]), index=pd.Index(keys, name="parameter"))
    return (
        "<h2>Side by side</h2><p class='meta'>Fixed effects: estimate and standard error (posterior mean and SD)</p>"
        + _table(fixed, "compare-fixed")
        + "<p class='meta'>Standard deviations and correlations</p>"
        + _table(pd.DataFrame(sds), "compare-variance")
    )


def _diagnostics_section(items: dict) -> str:
    out = ["<h2>Diagnostics</h2>"]
    for name, r in items.items():
        out.append(f"<h3>{_e(name)}</h3>")
        out.append(_table(_diagnostics(r), f"diagnostics-{_slug(name)}", index=False))
        if r.warnings:
            out += [f'<div class="warning"><strong>Warning:</strong> {_e(w)}</div>' for w in r.warnings]
        else:
            out.append('<div class="ok">No warnings.</div>')
    return "".join(out)


def _diagnostics(r) -> pd.DataFrame:
    if plots.is_bayesian(r):
        summary = r.summary()
        rows = [
            ("sampler", f"{r.sampler}, {r.n_chains} chains x {r.n_draws} draws, seed {r.seed}"),
            *([("approximation", r.approximation)] if getattr(r, "approximation", None) else []),
            ("divergent transitions", int(np.sum(r.stats.get("diverging", 0)))),
            ("largest R-hat", float(summary["r_hat"].max())),
            ("smallest bulk ESS", float(summary["ess_bulk"].min())),
            ("smallest tail ESS", float(summary["ess_tail"].min())),
            ("sampling time (s)", float(r.seconds)),
        ]
    else:
        glmm = isinstance(r, Generalized)
        crit = "deviance (-2 log-likelihood)" if glmm or not r.reml else "REML criterion"
        rows = [
            ("converged", "yes" if r.converged else "no"),
            ("singular (boundary) fit", "yes" if r.is_singular else "no"),
            (crit, r.objective), ("log-likelihood", r.loglik), ("AIC", r.aic), ("BIC", r.bic),
        ]
        if glmm:
            over = r.overdispersion()
            rows += [("family, link", f"{r.family.name}, {r.family.link.name}"), ("approximation", r.approximation),
                     ("Pearson chi-square / df", over["ratio"]), ("overdispersion p value", over["p_value"])]
    return pd.DataFrame(rows, columns=["check", "value"])


def _plots_section(items: dict, extra: dict) -> str:
    results = list(items.values())
    fits = [r for r in results if not plots.is_bayesian(r)]
    posts = [(n, r) for n, r in items.items() if plots.is_bayesian(r)]
    figs = [("Group effects with 95 % intervals", plots.caterpillar(items))]
    if all(_has_intercepts(r) for r in results):
        figs.append(("Where the variance lives (intercept variances and residual)", plots.variance_decomposition(items)))
    for f in [f for f in fits if not _partitioned(f)]:
        if not isinstance(f, Generalized):
            figs.append((f"Residuals: {plots.label(f)}", plots.residuals(f)))
            continue
        figs.append((f"Simulated quantile residuals (250 simulations, seed 0): {plots.label(f)}",
                     plots.quantile_residuals(f.simulated_residuals(seed=0))))
        if is_binary(f):
            figs.append((f"Binned residuals: {plots.label(f)}", plots.binned_residuals(f.binned_residuals())))
    for name, post in posts:
        figs.append((f"Posterior of the SDs with the frequentist estimates marked: {name}", plots.variance_posteriors(post, fits)))
        figs.append((f"Trace plots: {name}", plots.trace(post)))
        figs.append((f"Rank plots: {name}", plots.rank(post)))
        if _partitioned(post):
            continue
        figs.append((f"Posterior predictive check: {name}", plots.ppc_overlay(post.design.y, post.posterior_predictive())))
        figs.append((f"PSIS-LOO Pareto k: {name}", plots.pareto_k(post.loo())))
    figs += list(extra.items())
    left_out = ("<p class='meta'>Data in partitions (Dask, Parquet): the figures that read every row (residuals, "
                "posterior predictive checks, PSIS-LOO) are left out.</p>") if any(_partitioned(r) for r in results) else ""
    return "<h2>Plots</h2>" + left_out + "".join(_figure(caption, fig) for caption, fig in figs)


def _partitioned(r) -> bool:
    """Whether the result's rows stay in their partitions (figures reading every row are left out)."""
    return isinstance(r.design, PartitionedDesign)


def _occupancy_section(name: str, r) -> str:
    """An occupancy model's fit or posterior: the two formulas and the sites, the coefficients, diagnostics with
    warnings, psi and p against each numeric covariate (and trace and rank plots of draws)."""
    m, bayes = r.model, plots.is_bayesian(r)
    out = [f"<h2>Occupancy model: {_e(name)}</h2>",
           f"<p>Occupancy (psi): <code>{_e(m.occupancy_formula)}</code>; detection (p): <code>{_e(m.detection_formula)}</code>"
           f"{f'; random intercept <code>{_e(str(m.random[0]))}</code> on {m.random[1].part}' if m.random else ''}.</p>",
           f"<p class='meta'>{len(m.sites)} sites, {int(m.arrays.mask.sum())} surveys, species detected at "
           f"{int(m.arrays.detected.sum())} sites. Coefficients on the logit scale"
           f"{' (posterior summary; n_occ: occupied sites among those surveyed)' if bayes else ' (estimate, SE, Wald z)'}.</p>",
           _table(r.summary() if bayes else r.fixed_effects, f"occupancy-{_slug(name)}")]
    if m.random and not bayes:
        out.append(_table(r.variance_components, f"occupancy-varcomp-{_slug(name)}", index=False))
    out.append(_table(_occupancy_diagnostics(r), f"occupancy-diagnostics-{_slug(name)}", index=False))
    out += [f'<div class="warning"><strong>Warning:</strong> {_e(w)}</div>' for w in r.warnings] or ['<div class="ok">No warnings.</div>']
    figs = [(f"{'Occupancy psi' if part == 'psi' else 'Detection p'} against {c} (others at their mean), 95 % band: {name}",
             occupancy_plots.probability_curve(r, c, part)) for part in ("psi", "p") for c in occupancy_plots.numeric_covariates(m, part)]
    if bayes:
        figs += [(f"Trace plots: {name}", plots.trace(r)), (f"Rank plots: {name}", plots.rank(r))]
    return "".join(out) + "".join(_figure(caption, fig) for caption, fig in figs)


def occupancy_comparison(results: dict) -> pd.DataFrame:
    """Occupancy results (label -> ML fit or posterior) side by side: per coefficient, the random intercept's SD and
    `n_occ`, each result's estimate and standard error (posterior mean and SD) as '<label> estimate' and
    '<label> std_error' columns."""
    columns = {}
    for name, r in results.items():
        names = [n for n in (r.model.sd_name, "n_occ") if n is not None]
        if plots.is_bayesian(r):
            extra = r.summary().loc[names, ["mean", "sd"]].to_numpy()
        else:
            n = r.n_occupied()
            extra = [[r.sigma, r.sigma_se]] * (r.model.sd_name is not None) + [[n["estimate"], n["sd"]]]
        rows = r.fixed_effects[["estimate", "std_error"]]
        rows = pd.concat([rows, pd.DataFrame(extra, index=names, columns=rows.columns)])
        for column in ("estimate", "std_error"):
            columns[f"{name} {column}"] = rows[column]
    return pd.DataFrame(columns).rename_axis("parameter")


def _occupancy_diagnostics(r) -> pd.DataFrame:
    """Convergence and fit of an occupancy result, as (check, value) rows."""
    if plots.is_bayesian(r):
        summary, n = r.summary(), r.n_occupied()
        rows = [("sampler", f"{r.sampler}, {r.n_chains} chains x {r.n_draws} draws, seed {r.seed}")]
        rows += [("divergent transitions", int(np.sum(r.stats["diverging"])))] if "diverging" in r.stats else []  # NUTS only
        rows += [("largest R-hat", float(summary["r_hat"].max())), ("smallest bulk ESS", float(summary["ess_bulk"].min())),
                ("smallest tail ESS", float(summary["ess_tail"].min())), ("sampling time (s)", float(r.seconds)),
                ("occupied sites (posterior mean, sd)", f"{n['mean']:.1f} ({n['sd']:.2f})"),
                ("posterior predictive p (Freeman-Tukey by site)", float(r.posterior_predictive_check()["p_value"]))]
    else:
        n = r.n_occupied()
        rows = [("converged", "yes" if r.converged else "no"), ("-2 log-likelihood", r.objective),
                ("log-likelihood", r.loglik), ("AIC", r.aic),
                ("occupied sites (estimate, sd)", f"{n['estimate']:.1f} ({n['sd']:.2f})")]
        if r.model.random:
            rows.append(("random intercept", f"{r.model.random[0]} on {r.model.random[1].part}: SD {r.sigma:.4f} ({r.approximation})"))
    return pd.DataFrame(rows, columns=["check", "value"])


def _study_section(name: str, study) -> str:
    """A repeated-sampling study: its settings, the scores table and the coverage and error plots."""
    s = study.settings
    out = [f"<h2>Repeated-sampling study: {_e(name)}</h2>",
           f"<p>Formula: <code>{_e(s['formula'])}</code>; {s['finished']} replicates, seed {s['seed']}; "
           f"methods: {_e(', '.join(s['methods']))}.</p>",
           f"<p class='meta'>Truth: {_e(s['truth'])}</p>"]
    if study.partial:
        out.append(f'<div class="warning"><strong>Partial:</strong> interrupted after {s["finished"]} of '
                   f'{s["replicates"]} replicates.</div>')
    columns = ["method", "parameter", "truth", "bias", "bias_mcse", "rmse", "rmse_mcse", "coverage", "coverage_mcse",
               "width", "boundary_share", "failures", "warnings", "seconds"]
    out.append(_table(study.table[columns], f"study-{_slug(name)}", index=False))
    if study.table["coverage"].notna().any():
        out.append(_figure("Coverage of the 95 % intervals (bars: 2 Monte Carlo SE)", plots.study_coverage(study)))
    out.append(_figure("Bias (points) and RMSE (bars) by method", plots.study_errors(study)))
    return "".join(out)


def _has_intercepts(r) -> bool:
    """Whether the variance-decomposition plot applies: an intercept variance beside a residual (not a GLMM)."""
    if isinstance(r, Generalized):
        return False
    vc = r.variance_components
    return bool(((vc["term"] == "(Intercept)") & (vc["term2"] == "")).any())


# ---------------------------------------------------------------------------------------------- HTML pieces
def _figure(caption: str, fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}"><figcaption>{_e(caption)}</figcaption></figure>'


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
