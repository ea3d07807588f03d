"""Readable text summaries of fits, in the spirit of lme4's print."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd

from .html_tables import result_html


def _fmt(x: float, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return ""
    return f"{x:.{digits}g}" if abs(x) < 1e-3 or abs(x) >= 1e6 else f"{x:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{x}"


def _pvalue(p: float) -> str:
    return "<2e-16" if p < 2e-16 else f"{p:.3g}"


def variance_lines(vc: pd.DataFrame) -> list[str]:
    """The random-effects block: one line per variance, correlations beside."""
    lines = [f" {'Groups':<12} {'Name':<16} {'Variance':>12} {'Std.Dev.':>10}  Corr"]
    last_group = None
    variances = vc[vc["term2"] == ""]
    corr = vc[vc["term2"] != ""]
    for _, row in variances.iterrows():
        group = row["group"] if row["group"] != last_group else ""
        last_group = row["group"]
        cors = corr[(corr["group"] == row["group"]) & (corr["term2"] == row["term"])]["corr"]
        cor_text = " ".join(f"{c:+.2f}" for c in cors)
        lines.append(f" {group:<12} {row['term']:<16} {row['variance']:>12.5g} {row['sd']:>10.5g}  {cor_text}")
    return lines


def fixed_lines(fe: pd.DataFrame) -> list[str]:
    lines = [f" {'':<22} {'Estimate':>11} {'Std. Error':>11} {'df':>8} {'t value':>8} {'Pr(>|t|)':>9}"]
    for name, row in fe.iterrows():
        df = "inf" if not np.isfinite(row["df"]) else f"{row['df']:.1f}"
        lines.append(
            f" {name:<22} {row['estimate']:>11.5g} {row['std_error']:>11.4g} {df:>8} {row['t_value']:>8.3f} {_pvalue(row['p_value']):>9}"
        )
    return lines


def lmm_overview(fit) -> dict:
    """The text parts of a fit's summary: title, formula, criterion, observations and groups, aliased columns."""
    d = fit.design
    kind = "REML" if fit.reml else "maximum likelihood"
    crit = "REML criterion" if fit.reml else "Deviance"
    groups = ", ".join(f"{g}, {n}" for g, n in d.n_levels.items())
    return {
        "title": f"Linear mixed model fit by {kind}"
        + (" with the zero-avoiding covariance prior (blme default)" if fit.prior else ""),
        "formula": f"Formula: {d.formula}",
        "criterion": f"{crit}: {fit.objective:.4f}   logLik: {fit.loglik:.4f}   AIC: {fit.aic:.2f}   BIC: {fit.bic:.2f}"
        + (f"   penalised: {fit.penalized_objective:.4f}" if fit.prior else ""),
        "observations": f"Number of obs: {fit.nobs}"
        + (f" ({d.n_dropped} rows dropped for missing values)" if d.n_dropped else "") + f"; groups: {groups}",
        "aliased": [f"Dropped aliased fixed-effect columns (linear combinations of the others, not estimable): "
                    f"{', '.join(d.aliased)}"] if d.aliased else [],
    }


def lmm_summary(fit) -> str:
    """lme4-style text of a frequentist fit, with plain-words warnings."""
    parts = lmm_overview(fit)
    lines = [parts["title"], parts["formula"], "", parts["criterion"]]
    lines += ["", "Random effects:"] + variance_lines(fit.variance_components) + [parts["observations"]]
    lines += ["", "Fixed effects (Satterthwaite df):"] + fixed_lines(fit.fixed_effects)
    lines += [line for a in parts["aliased"] for line in ("", a)]
    return "\n".join(lines + warning_lines(fit.warnings))


def approximate_summary(fit) -> str:
    """The text of an approximate fit (solver='iterative'): its label first, the criterion with its estimated error."""
    parts = lmm_overview(fit)
    crit = "REML criterion" if fit.reml else "Deviance"
    lines = [parts["title"] + " -- APPROXIMATE", fit.approximation, parts["formula"], "",
             f"{crit}: {fit.objective:.4f} (estimated error {fit.objective_error:.2g})"]
    lines += ["", "Random effects:"] + variance_lines(fit.variance_components) + [parts["observations"]]
    lines += ["", "Fixed effects (Wald z):"] + fixed_lines(fit.fixed_effects)
    lines += [line for a in parts["aliased"] for line in ("", a)]
    return "\n".join(lines + warning_lines(fit.warnings))


def approximate_html(fit) -> str:
    """An approximate fit as a notebook block: its label and criterion's error first, then the tables."""
    head = approximate_summary(fit).split("\n")
    tables = [("Random effects", fit.variance_components), ("Fixed effects (Wald z)", fit.fixed_effects)]
    return result_html(head[0], [line for line in head[1:5] if line], tables, fit.warnings, [])


def warning_lines(warnings: list[str]) -> list[str]:
    """A fit's warnings as a wrapped list (nothing when there are none)."""
    lines = ["", "Warnings:"] if warnings else []
    for w in warnings:
        lines += textwrap.wrap(w, width=100, initial_indent=" * ", subsequent_indent="   ", break_on_hyphens=False)
    return lines


def lmm_html(fit) -> str:
    """The summary as a notebook block: the same lines, the variance and fixed-effect tables, the warnings."""
    parts = lmm_overview(fit)
    tables = [("Random effects", fit.variance_components), ("Fixed effects (Satterthwaite df)", fit.fixed_effects)]
    lines = [parts["formula"], parts["criterion"], parts["observations"]]
    return result_html(parts["title"], lines, tables, fit.warnings, parts["aliased"])


def glmm_html(fit) -> str:
    """A GLMM fit as a notebook block: its summary's header, the variance and fixed-effect tables, the warnings."""
    head = glmm_summary(fit).split("\n")
    tables = [("Random effects", fit.variance_components), ("Fixed effects (Wald z)", fit.fixed_effects)]
    return result_html(head[0], [line for line in head[1:3] if line], tables, fit.warnings, [])


def glmm_summary(fit) -> str:
    """glmer-style text of a GLMM fit: family and link, approximation, likelihood scale, random and fixed effects."""
    fam = fit.family
    lines = [f"Generalized linear mixed model fit by maximum likelihood ({fit.approximation})",
             f" Family: {fam.name} ({fam.link.name})" + (f", theta = {fam.dispersion:.5g}" if fit.nb_theta else ""),
             f"Formula: {fit.design.formula}"]
    if not fam.canonical:
        lines.append(f"Laplace log-determinant: {fit.information} information")
    lines += ["", "     AIC      BIC   logLik  deviance", f"{fit.aic:8.1f} {fit.bic:8.1f} {fit.loglik:8.1f} {fit.deviance:9.1f}",
              "", "Random effects:"] + variance_lines(fit.variance_components)
    groups = ", ".join(f"{g}, {m}" for g, m in fit.design.n_levels.items())
    lines.append(f"Number of obs: {fit.nobs}; groups: {groups}")
    lines += ["", "Fixed effects:", f" {'':<24} {'Estimate':>10} {'Std. Error':>10} {'z value':>8} {'Pr(>|z|)':>9}"]
    for name, row in fit.fixed_effects.iterrows():
        lines.append(f" {name:<24} {row['estimate']:>10.5g} {row['std_error']:>10.4g} {row['z_value']:>8.3f} "
                     f"{_pvalue(row['p_value']):>9}")
    return "\n".join(lines + warning_lines(fit.warnings))


class LmmText:
    """The text and notebook faces of a frequentist result, from the class's `_text`/`_html` writers (`LmmFit`,
    the `SavedFit` of old files, and `GlmmText` for GLMM fits)."""

    _text = staticmethod(lmm_summary)
    _html = staticmethod(lmm_html)

    def summary(self) -> str:
        return self._text(self)

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        return self._html(self)


class GlmmText(LmmText):
    """The text and notebook faces of a GLMM fit."""

    _text = staticmethod(glmm_summary)
    _html = staticmethod(glmm_html)
