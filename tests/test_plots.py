"""Each plot draws what it says: one interval per group at the reference (lme4) conditional modes, one arrow
per group from an independent per-group least-squares fit, bars at the reference variance shares, lines at
the reference ML/REML SDs, one trace line per chain, and so on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import reference
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from scipy import stats

import multilevel as mlv
from multilevel import plots
from multilevel.errors import MultilevelError

SLOPES = "Reaction ~ Days + (Days | Subject)"



@pytest.fixture(scope="module")
def model(sleep):
    return mlv.Model(SLOPES, sleep)


@pytest.fixture(scope="module")
def reml(model):
    return model.fit()


@pytest.fixture(scope="module")
def ml(model):
    return model.fit(method="ML")


@pytest.fixture(scope="module")
def post(model):
    return model.sample(chains=2, draws=100, warmup=100, seed=3, progress=False)


def interval_segments(ax) -> list[np.ndarray]:
    return [c.get_segments() for c in ax.collections if isinstance(c, LineCollection)]


def test_caterpillar_one_interval_per_group_at_the_reference_modes(reml):
    ref = reference("sleepstudy_slopes_reml")["ranef"]
    fig = plots.caterpillar(reml)
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # (Intercept) and Days
    for ax, term in zip(fig.axes, ["(Intercept)", "Days"]):
        (segments,) = interval_segments(ax)
        assert len(segments) == 18
        labels = [t.get_text() for t in ax.get_yticklabels()]
        for seg, level in zip(segments, labels):
            i = next(j for j, (t, lv) in enumerate(zip(ref["term"], ref["level"])) if t == term and lv == level)
            lo, hi = seg[0, 0], seg[1, 0]
            centre, half = (lo + hi) / 2, (hi - lo) / 2
            assert abs(centre - ref["condval"][i]) <= 1e-3 * ref["condsd"][i]
            assert half == pytest.approx(stats.norm.ppf(0.975) * ref["condsd"][i], rel=1e-3)


def test_caterpillar_side_by_side_draws_each_result(reml, post):
    fig = plots.caterpillar({"REML": reml, "Bayes": post}, term="Days")
    (ax,) = fig.axes
    reml_segments, bayes_segments = interval_segments(ax)
    assert len(reml_segments) == len(bayes_segments) == 18
    table = post.group_effects()
    days = table[table["term"] == "Days"].set_index("level")
    labels = [t.get_text() for t in ax.get_yticklabels()]
    for seg, level in zip(bayes_segments, labels):
        row = days.loc[[lv for lv in days.index if str(lv) == level][0]]
        assert (seg[0, 0], seg[1, 0]) == pytest.approx((row["ci_lower"], row["ci_upper"]))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["REML", "Bayes"]


def test_caterpillar_nested_groups_and_unknown_term():
    ref = reference("pastes_nested_reml")
    fit = mlv.Model(ref["formula"], mlv.datasets.load("Pastes")).fit()
    fig = plots.caterpillar(fit)
    counts = sorted(len(interval_segments(ax)[0]) for ax in fig.axes)
    assert counts == sorted(ref["ngrps"].values())
    with pytest.raises(MultilevelError, match="no group effects"):
        plots.caterpillar(fit, term="Days")


def no_pooling_fits(sleep) -> pd.DataFrame:
    """Each subject's own least-squares line, by numpy (independent of the package)."""
    rows = []
    for subject, part in sleep.groupby("Subject", observed=True):
        X = np.column_stack([np.ones(len(part)), part["Days"]])
        coef = np.linalg.lstsq(X, part["Reaction"].to_numpy(), rcond=None)[0]
        for term, value in zip(["(Intercept)", "Days"], coef):
            rows.append({"level": str(subject), "term": term, "estimate": value, "n": len(part)})
    return pd.DataFrame(rows)


def partial_pooling_from_reference() -> pd.DataFrame:
    ref = reference("sleepstudy_slopes_reml")
    fixed = dict(zip(ref["fixef"]["names"], ref["fixef"]["estimate"]))
    r = ref["ranef"]
    return pd.DataFrame({"level": r["level"], "term": r["term"],
                         "estimate": [fixed[t] + v for t, v in zip(r["term"], r["condval"])]})


def test_shrinkage_one_arrow_per_group_from_own_fit_to_pooled(sleep):
    alone, pooled = no_pooling_fits(sleep), partial_pooling_from_reference()
    fixed = dict(zip(*[reference("sleepstudy_slopes_reml")["fixef"][k] for k in ("names", "estimate")]))
    fig = plots.shrinkage(alone, pooled, "(Intercept)", "Days", population=fixed)
    (ax,) = fig.axes
    arrows = [t for t in ax.texts if t.arrow_patch is not None]
    assert len(arrows) == 18
    a = alone.pivot(index="level", columns="term", values="estimate")
    p = pooled.pivot(index="level", columns="term", values="estimate").reindex(a.index)
    starts = np.array([arrow.xyann for arrow in arrows])
    ends = np.array([arrow.xy for arrow in arrows])
    assert starts == pytest.approx(a[["(Intercept)", "Days"]].to_numpy())
    assert ends == pytest.approx(p[["(Intercept)", "Days"]].to_numpy())
    # partial pooling narrows the spread of the subjects' intercepts and slopes
    assert np.all(ends.std(axis=0) < starts.std(axis=0))


def test_shrinkage_one_dimension_and_bad_tables(sleep):
    alone, pooled = no_pooling_fits(sleep), partial_pooling_from_reference()
    fig = plots.shrinkage(alone, pooled, "Days")
    assert len([t for t in fig.axes[0].texts if t.arrow_patch is not None]) == 18
    with pytest.raises(MultilevelError, match="'n'"):
        plots.shrinkage(alone.drop(columns="n"), pooled, "Days")
    with pytest.raises(MultilevelError, match="not in both"):
        plots.shrinkage(alone, pooled, "Age")


def test_variance_decomposition_bars_at_reference_shares():
    names = ["sleepstudy_intercept_reml", "pastes_nested_reml"]
    refs = [reference(n) for n in names]
    fits = [mlv.Model(r["formula"], mlv.datasets.load(r["dataset"])).fit() for r in refs]
    fig = plots.variance_decomposition(fits, labels=["sleep", "pastes"])
    bars = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    for row, ref in enumerate(refs):
        variances = [v for c in ref["varcomp"] for v in c["variance"]] + [ref["residual"]["variance"]]
        expected = sorted(np.array(variances) / sum(variances))
        widths = sorted(b.get_width() for b in bars if abs(b.get_y() + b.get_height() / 2 - row) < 1e-9 and b.get_width() > 0)
        assert widths == pytest.approx(expected, rel=1e-3)


def test_variance_posteriors_mark_reference_ml_and_reml(post, reml, ml):
    fig = plots.variance_posteriors(post, [reml, ml])
    names = [n for n in post.parameters() if n.startswith("sd_") or n == "sigma"]
    assert [ax.get_title() for ax in fig.axes] == names
    refs = [reference("sleepstudy_slopes_reml"), reference("sleepstudy_slopes_ml")]
    for ax, name in zip(fig.axes, names):
        lines = [ln.get_xdata()[0] for ln in ax.lines]
        if name == "sigma":
            expected = [r["sigma"] for r in refs]
        else:
            j = ["sd_Subject__Intercept", "sd_Subject__Days"].index(name)
            expected = [r["varcomp"][0]["sd"][j] for r in refs]
        assert lines == pytest.approx(expected, rel=1e-4)
        area = sum(p.get_height() * p.get_width() for p in ax.containers[0])
        assert area == pytest.approx(1.0)  # the posterior is drawn as a density


def test_trace_one_line_per_chain_with_the_draws(post):
    fig = plots.trace(post, var_names=["b_Days", "sigma"])
    assert len(fig.axes) == 2
    for ax, name in zip(fig.axes, ["b_Days", "sigma"]):
        assert len(ax.lines) == post.n_chains
        for c, line in enumerate(ax.lines):
            assert np.array_equal(line.get_ydata(), post.parameters()[name][c])
    with pytest.raises(MultilevelError, match="no parameter"):
        plots.trace(post, var_names=["b_Age"])


def test_rank_bars_count_every_draw_of_every_chain(post):
    fig = plots.rank(post, bins=10)
    assert len(fig.axes) == len(post.parameters())
    for ax in fig.axes:
        bars = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert len(bars) == 10 * post.n_chains
        assert sum(b.get_height() for b in bars) == post.n_chains * post.n_draws


def test_pareto_k_every_observation_and_its_threshold():
    k = np.array([0.1, 0.2, 0.95, 0.3, 0.71, -0.1])
    fig = plots.pareto_k(k)
    (ax,) = fig.axes
    good, bad = [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]
    assert len(good) + len(bad) == k.size
    assert sorted(bad[:, 1]) == [0.71, 0.95]
    assert ax.lines[0].get_ydata()[0] == plots.PARETO_K_LIMIT


def test_ppc_overlay_and_statistic(model):
    rng = np.random.default_rng(1)
    y = model.design.y
    y_rep = rng.normal(y.mean(), y.std(), size=(2, 40, y.size))
    fig = plots.ppc_overlay(y, y_rep, n=25)
    lines = fig.axes[0].lines
    assert len(lines) == 26 and lines[-1].get_label() == "observed"
    mids, density = lines[-1].get_xdata(), lines[-1].get_ydata()
    width = mids[1] - mids[0]
    assert np.sum(density) * width == pytest.approx(1.0)  # the observed response as a density
    assert mids[0] - width / 2 <= y.min() and y.max() <= mids[-1] + width / 2
    t_rep = y_rep.reshape(-1, y.size).std(axis=1)
    fig = plots.ppc_statistic(t_rep, y.std(), "sd")
    (ax,) = fig.axes
    assert ax.lines[0].get_xdata()[0] == y.std()
    assert f"p = {np.mean(t_rep >= y.std()):.2f}" in ax.get_legend().get_texts()[1].get_text()


def test_residual_and_qq_plots_draw_the_fits_residuals(reml):
    fig = plots.residuals(reml)
    left, right = fig.axes
    points = left.collections[0].get_offsets()
    assert np.allclose(points[:, 0], reml.fitted()) and np.allclose(points[:, 1], reml.residuals())
    qq = right.collections[0].get_offsets()
    assert np.allclose(qq[:, 1], np.sort(reml.residuals()))
    assert np.allclose(qq[:, 0], np.sort(qq[:, 0])) and abs(np.mean(qq[:, 0])) < 1e-12
    # the residuals sum with the fitted values to the response
    assert np.allclose(points[:, 0] + points[:, 1], reml.design.y)
