"""The engine against lme4's profiled objective and against a naive dense implementation.

The naive version works on the marginal model y ~ N(X beta, sigma^2 V), V = Z Lambda Lambda' Z' + W^-1
(Bates et al. 2015, JSS 67(1), section 3): profiled deviance log det V + n (1 + log(2 pi r2 / n)) with
r2 the generalised least-squares residual, REML adding log det X'V^-1 X and using n - p. It shares no
linear algebra with the blocked engine.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import reference, reference_files

import multilevel as mlv
from multilevel.crossprod import z_matrix
from multilevel.design import build_design
import multilevel.engine as engine_module
from multilevel.errors import MultilevelError
from multilevel.engine import Engine, theta_to_T

LMER_BLME = reference_files("lme4::lmer", "blme::blmer")
BLME_EXTRA_DF = 2.5  # blme's default Wishart df = q + 2.5 (reference README)


def engine_of(name: str):
    ref = reference(name)
    return ref, mlv.Model(ref["formula"], mlv.datasets.load(ref["dataset"])).engine


def blme_penalty(engine, theta: np.ndarray) -> float:
    """The reference README's prior deviance: -(df - q - 1) log det(T T') per term."""
    return sum(-(BLME_EXTRA_DF - 1.0) * np.linalg.slogdet(T @ T.T)[1] for T in engine.factors_of(theta))


def assert_objective_at(engine, ref, point) -> None:
    """lme4's / blme's profiled objective at one of the reference's check points, to 1e-8 relative."""
    theta = np.asarray(point["theta"])
    value = engine.objective(theta, ref["REML"])
    if ref["kind"] == "blme::blmer":
        value += blme_penalty(engine, theta)
    assert value == pytest.approx(point["objective"], rel=1e-8), point["point"]


@pytest.mark.parametrize("name", [n for n in LMER_BLME if not n.startswith("insteval")])
def test_objective_checks(name):
    """lme4's / blme's profiled objective at theta-hat, the start and their midpoint, to 1e-8 relative."""
    ref, engine = engine_of(name)
    for point in ref["objective_checks"]["points"]:
        assert_objective_at(engine, ref, point)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in LMER_BLME if n.startswith("insteval")])
def test_objective_checks_insteval(name):
    test_objective_checks(name)


def without_fill_map(monkeypatch, fill: str) -> None:
    """Engines built from here on take the pair list (a scalar first term) or the sparse product instead of the map."""
    monkeypatch.setattr(engine_module, "fill_map_fits", lambda pairs: False)
    if fill == "product":
        monkeypatch.setattr(engine_module, "pairs_fit", lambda B, q, k0=1: False)


@pytest.mark.parametrize("fill", ["pairs", "product"])
@pytest.mark.parametrize("name", [n for n in LMER_BLME if not n.startswith("insteval")])
def test_fill_without_the_map_gives_lme4s_objective(name, fill, monkeypatch):
    """Without a fill map (too many pairs for the memory) the fill B M B' comes from a pair list (scalar first
    terms) or a sparse product at each evaluation (crossed designs with many levels): lme4's / blme's objective to
    1e-8 at its checks, the gradient of scalar models as the map's (1e-9)."""
    ref, mapped = engine_of(name)
    without_fill_map(monkeypatch, fill)
    _, product = engine_of(name)
    assert product.fill_map is None and mapped.fill_map is not None
    assert (product.pair_fill is not None) == (fill == "pairs" and len(product.ks) > 1)
    for point in ref["objective_checks"]["points"]:
        assert_objective_at(product, ref, point)
        theta = np.asarray(point["theta"])
        if product.has_gradient:
            np.testing.assert_allclose(product.objective_and_gradient(theta, ref["REML"])[1],
                                       mapped.objective_and_gradient(theta, ref["REML"])[1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("pairs, available, built", [
    (1e6, None, True), (2e7, 1e3, True),  # small maps are always built
    (3e7, 1e10, True),  # 2.2 GB within a quarter of 10 GB
    (3e7, 8e9, False), (3e7, None, False),  # not within a quarter of 8 GB; unknown memory
])
def test_a_fill_map_beyond_the_floor_needs_a_quarter_of_the_memory(monkeypatch, pairs, available, built):
    monkeypatch.setattr(engine_module, "available_bytes", lambda: available)
    assert engine_module.fill_map_fits(pairs) is built


@pytest.mark.parametrize("available, built", [(None, False), (4 * 12 * 9, True), (4 * 12 * 9 - 1, False)])
def test_a_pair_list_needs_a_quarter_of_the_memory(monkeypatch, available, built):
    """Levels (columns) with 3, 2 and 0 entries in the other terms' rows (B's first 3; the last row, X and y, is left
    to a dense product): 6 + 3 pairs of 12 bytes, against a quarter of the memory available."""
    import multilevel.pair_fill as pair_fill

    B = sp.csr_matrix(np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [2.0, 2.0, 2.0]]))
    monkeypatch.setattr(pair_fill, "available_bytes", lambda: available)
    assert pair_fill.pairs_fit(B, 3) is built


@pytest.mark.parametrize("fill", ["pairs", "product"])
def test_a_crossed_fit_without_the_map_is_the_fit_by_the_map(monkeypatch, fill):
    formula, data = "diameter ~ 1 + (1 | plate) + (1 | sample)", mlv.datasets.load("Penicillin")
    mapped = mlv.Model(formula, data).fit()
    without_fill_map(monkeypatch, fill)
    product = mlv.Model(formula, data).fit()
    assert product.objective == pytest.approx(mapped.objective, rel=1e-10)
    np.testing.assert_allclose(product.theta, mapped.theta, rtol=1e-6)


def test_nuts_without_a_fill_map_is_refused_naming_the_alternatives(monkeypatch):
    monkeypatch.setattr(engine_module, "fill_map_fits", lambda pairs: False)
    model = mlv.Model("diameter ~ 1 + (1 | plate) + (1 | sample)", mlv.datasets.load("Penicillin"))
    with pytest.raises(MultilevelError, match="too many levels.*sampler='gibbs'.*fit"):
        model.sample(sampler="nuts", draws=50, warmup=50, chains=1, seed=1)


# ---------------------------------------------------------------------------- naive dense implementation
def dense_parts(design, theta, engine):
    """Dense Z (n x q), Lambda (q x q, block diagonal, columns level-major as the engine's) and W^-1."""
    Z = np.hstack([z_matrix(b).toarray() for b in design.blocks])
    Lam = np.zeros((Z.shape[1], Z.shape[1]))
    start = 0
    for block, T in zip(design.blocks, engine.factors_of(theta)):
        for _ in range(block.m):
            Lam[start : start + block.k, start : start + block.k] = T
            start += block.k
    w = np.ones(design.nobs) if design.weights is None else design.weights
    return Z, Lam, w


def naive(design, theta, engine, reml):
    """Criterion, beta-hat, b-hat and blocks of Lambda (Lambda'Z'WZ Lambda + I)^-1 Lambda', all dense."""
    Z, Lam, w = dense_parts(design, theta, engine)
    X, y, n, p = design.X, design.y, design.nobs, design.p
    V = Z @ Lam @ Lam.T @ Z.T + np.diag(1.0 / w)
    Vinv = np.linalg.inv(V)
    XtVX = X.T @ Vinv @ X
    beta = np.linalg.solve(XtVX, X.T @ Vinv @ y)
    resid = y - X @ beta
    r2 = resid @ Vinv @ resid
    nu = n - p if reml else n
    crit = np.linalg.slogdet(V)[1] + nu * (1 + np.log(2 * np.pi * r2 / nu))
    if reml:
        crit += np.linalg.slogdet(XtVX)[1]
    b = Lam @ Lam.T @ Z.T @ Vinv @ resid
    q = Z.shape[1]
    condvar = Lam @ np.linalg.inv(Lam.T @ Z.T @ np.diag(w) @ Z @ Lam + np.eye(q)) @ Lam.T
    return crit, beta, b, condvar


def crossed_data(seed: int = 1) -> pd.DataFrame:
    """A small unbalanced crossed design with two covariates and positive weights."""
    rng = np.random.default_rng(seed)
    n = 90
    df = pd.DataFrame(
        {
            "g1": pd.Categorical(rng.integers(0, 9, n).astype(str)),
            "g2": pd.Categorical(rng.integers(0, 5, n).astype(str)),
            "g3": pd.Categorical(rng.integers(0, 3, n).astype(str)),
            "x1": rng.normal(size=n),
            "x2": rng.normal(size=n),
            "w": rng.uniform(0.5, 2.0, n),
        }
    )
    df["y"] = 1.0 + 0.5 * df["x1"] + rng.normal(size=n) + df["g1"].cat.codes * 0.3 - df["g2"].cat.codes * 0.2
    return df


CASES = {
    "crossed scalar terms": ("y ~ 1 + x1 + (1 | g1) + (1 | g2)", None),
    "two vector terms, weights": ("y ~ 1 + x1 + (1 + x1 | g1) + (1 + x1 + x2 | g2) + (1 | g3)", "w"),
    "vector term second, weights": ("y ~ 1 + x2 + (1 | g1) + (1 + x2 | g2)", "w"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("reml", [True, False])
def test_engine_matches_naive_dense(case, reml):
    formula, weights = CASES[case]
    model = mlv.Model(formula, crossed_data(), weights=weights)
    engine, design = model.engine, model.design
    rng = np.random.default_rng(7)
    theta = engine.theta_start() + rng.uniform(-0.4, 0.4, engine.n_theta)  # off-diagonals of both signs
    crit, beta, b, condvar = naive(design, theta, engine, reml)
    f = engine.factor(theta)
    assert engine.objective(theta, reml) == pytest.approx(crit, rel=1e-10)
    assert engine.criterion(f, reml) == pytest.approx(crit, rel=1e-10)
    our_beta, our_b = engine.solve(f)
    np.testing.assert_allclose(our_beta, beta, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.concatenate([x.ravel() for x in our_b]), b, rtol=1e-7, atol=1e-9)
    start = 0
    for block, cov in zip(design.blocks, engine.conditional_covariances(f)):
        for g in range(block.m):
            sl = slice(start + g * block.k, start + (g + 1) * block.k)
            np.testing.assert_allclose(cov[g], condvar[sl, sl], rtol=1e-8, atol=1e-12)
        start += block.m * block.k


def test_factor_is_lower_triangular_and_objective_agrees():
    """factor() returns a clean lower-triangular Ls whose product rebuilds a symmetric matrix."""
    model = mlv.Model(CASES["two vector terms, weights"][0], crossed_data(), weights="w")
    engine = model.engine
    theta = engine.theta_start() * 0.7
    f = engine.factor(theta)
    assert np.all(np.triu(f.Ls, 1) == 0.0)
    S = f.Ls @ f.Ls.T
    np.testing.assert_allclose(S, S.T, rtol=0, atol=1e-10 * np.abs(S).max())
    assert engine.objective(theta) == engine.criterion(f, True)


def test_theta_to_T_column_order():
    """lme4's theta order: the lower triangle column by column."""
    np.testing.assert_array_equal(theta_to_T(np.array([1.0, 2.0, 3.0]), 2), [[1.0, 0.0], [2.0, 3.0]])


@pytest.mark.parametrize(
    "data, formula",
    [
        ("Penicillin", "diameter ~ 1 + (1|plate) + (1|sample)"),
        ("Pastes", "strength ~ 1 + (1|batch/cask)"),
        ("sleepstudy", "Reaction ~ Days + (1|Subject) + (0 + Days|Subject)"),
        ("Dyestuff", "Yield ~ 1 + (1|Batch)"),
    ],
)
@pytest.mark.parametrize("reml", [True, False])
def test_analytic_gradient_matches_finite_differences(data, formula, reml):
    """The scalar-term gradient (trace and envelope formulas) equals central differences of the criterion."""
    import multilevel as mlv

    engine = mlv.Model(formula, mlv.datasets.load(data)).engine
    assert engine.has_gradient
    theta = np.array([0.7, 0.4, 0.9][: engine.n_theta])
    value, grad = engine.objective_and_gradient(theta, reml)
    assert value == pytest.approx(engine.objective(theta, reml), rel=1e-12)
    h = 1e-6
    numeric = [
        (engine.objective(theta + h * e, reml) - engine.objective(theta - h * e, reml)) / (2 * h)
        for e in np.eye(len(theta))
    ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("formula, data", [("TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", "grouseticks"),
                                           ("Reaction ~ Days + (Days | Subject)", "sleepstudy")])
def test_refreshed_engine_equals_a_fresh_build(formula, data):
    """PIRLS refreshes one engine's values at each step: the result is the engine built from scratch, bit for bit,
    also when an entry that was zero when the pattern was made (here a response of zeros) becomes nonzero."""
    from multilevel.crossprod import Reweighting

    design = build_design(formula, mlv.datasets.load(data), residual=False)
    system = Reweighting(design)
    rng = np.random.default_rng(3)
    base = Engine(system.at(np.ones(design.nobs), np.zeros(design.nobs)), [b.k for b in design.blocks],
                  [b.m for b in design.blocks])
    theta = base.theta_start() * 0.7
    for _ in range(2):
        cp = system.at(rng.uniform(0.5, 2.0, design.nobs), rng.normal(size=design.nobs))
        fresh, refreshed = Engine(cp, base.ks, base.ms), base.refresh(cp)
        a, b = fresh.factor(theta), refreshed.factor(theta)
        np.testing.assert_array_equal(a.Ls, b.Ls)
        assert a.ldL2 == b.ldL2
        for x, y in zip(fresh.solve_spherical(a)[1], refreshed.solve_spherical(b)[1]):
            np.testing.assert_array_equal(x, y)
        base = refreshed


@pytest.mark.parametrize("formula", ["Reaction ~ Days + (Days | Subject) + (1 | Day)",
                                     "Reaction ~ Days + (Days | Subject) + (Days || Day) + (1 | Half)"])
def test_pair_list_of_a_first_term_with_slopes_is_the_maps_fill(formula, monkeypatch):
    """A first term with random slopes (k0 = 2) crossed with others: the pair list's lower triangle of B M B' equals
    the fill map's, and the sparse product's, at per-level blocks M from a theta (1e-12 of the largest entry); an
    engine built without the map takes the list and gives the map's criterion and gradient (1e-10)."""
    from multilevel.pair_fill import PairFill

    data = mlv.datasets.load("sleepstudy")
    data = data.assign(Day=data.Days.astype(str), Half=np.where(data.Days < 5, "early", "late"))
    engine = mlv.Model(formula, data).engine
    assert engine.ks[0] == 2 and engine.fill_map is not None
    rest = [engine.cp.off[(0, a)] for a in range(1, engine.n_terms)]
    pairs = PairFill(engine.B, engine.q_rest, rest[0] if len(rest) == 1 else sp.hstack(rest, format="csr"), k0=2)
    rng = np.random.default_rng(1)
    M = engine._first_block(engine.factors_of(rng.uniform(0.2, 1.5, engine.n_theta))[0])[2]
    expected = np.zeros((engine.r, engine.r))
    expected.reshape(-1)[engine.fill_targets] = engine.fill_map @ M
    product = engine.fill_product(M).toarray()
    F = pairs.fill(M)
    np.testing.assert_allclose(F, expected, rtol=0, atol=1e-12 * np.abs(expected).max())
    np.testing.assert_allclose(F, np.tril(product), rtol=0, atol=1e-12 * np.abs(expected).max())
    assert pairs.pairs.nnz == sum(n * (n + 1) // 2 for n in np.diff(engine.B[: engine.q_rest].T.tocsr().indptr[::2]))
    without_fill_map(monkeypatch, "pairs")
    listed = mlv.Model(formula, data).engine
    assert listed.fill_map is None and listed.pair_fill is not None
    theta = rng.uniform(0.2, 1.5, engine.n_theta)
    for reml in (True, False):
        (a, da), (b, db) = engine.objective_and_gradient(theta, reml), listed.objective_and_gradient(theta, reml)
        assert b == pytest.approx(a, rel=1e-10)
        np.testing.assert_allclose(db, da, rtol=1e-8, atol=1e-10 * np.abs(da).max())


@pytest.mark.parametrize("available, built", [(4 * 12 * 16, True), (4 * 12 * 16 - 1, False)])
def test_a_pair_list_of_a_term_with_slopes_counts_pairs_per_level(monkeypatch, available, built):
    """k0 = 2: columns (level, coefficient); a level's entries are those of both its columns (5 and 1: 15 + 1 pairs)."""
    import multilevel.pair_fill as pair_fill

    B = sp.csr_matrix(np.array([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 3.0], [2.0, 2.0, 2.0, 2.0]]))
    monkeypatch.setattr(pair_fill, "available_bytes", lambda: available)
    assert pair_fill.pairs_fit(B, 3, k0=2) is built


@pytest.mark.parametrize("counts", [[3, 0, 1, 2], [0, 0], [1], [4, 4, 0, 5]])
def test_pairs_within_runs_list_each_pair_of_a_run_once(counts):
    """The fill map's and the pair list's one enumeration: every (a, b), b at or before a, within each run."""
    from multilevel.pair_fill import pairs_within_runs

    starts = np.concatenate([[0], np.cumsum(counts)])
    expected = [(a, b) for s, e in zip(starts[:-1], starts[1:]) for a in range(s, e) for b in range(s, a + 1)]
    a, b = pairs_within_runs(np.asarray(counts))
    assert list(zip(a.tolist(), b.tolist())) == expected
