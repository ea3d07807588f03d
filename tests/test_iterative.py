"""The APPROXIMATE iterative solver (fit(solver="iterative"), docs/scale.md) against the exact criterion.

Tolerances come from the estimator's own stated error eps (fit.objective_error: three standard errors of the
Lanczos log-determinant's probes plus its quadrature's change). If the approximate criterion is within eps of the
exact one at the approximate optimum theta_a and at the exact optimum theta_e, then
|approx_min - exact_min| <= eps and exact(theta_a) - exact_min <= 2 eps (approx(theta_a) <= approx(theta_e)).
The solves are by conjugate gradients to a relative residual of 1e-10, so at a given theta sigma and beta equal
the exact engine's to about 1e-10 times the system's condition (asserted at 1e-7).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import reference

import multilevel as mlv
from multilevel.errors import MultilevelError
from multilevel.iterative_engine import IterativeEngine
from multilevel.iterative_lmm import PROBES, SEED, STEPS
from multilevel.krylov import conjugate_gradients, lanczos_logdet, lanczos_logdet_slopes, rademacher_probes


def crossed_data(rows: int, items: int, seed: int = 3) -> pd.DataFrame:
    """benchmarks/scale_data.py's crossed design: 20 rows a user, items at random."""
    rng = np.random.default_rng(seed)
    users = rows // 20
    user, item = rng.integers(0, users, rows), rng.integers(0, items, rows)
    x = rng.normal(size=rows)
    y = 1 + 0.5 * x + rng.normal(0, 0.8, users)[user] + rng.normal(0, 0.5, items)[item] + rng.normal(size=rows)
    return pd.DataFrame({"y": y, "x": x, "user": user, "item": item})


@pytest.fixture(scope="module")
def crossed():
    """10^5 crossed rows, 5,000 users x 200 items (500 rows an item, as the benchmark's growing design)."""
    return mlv.Model("y ~ x + (1 | user) + (1 | item)", crossed_data(100_000, 200))


def within_stated_error(model, method: str):
    """The approximate and exact fits, asserting the bounds of the module's docstring."""
    exact, approx = model.fit(method), model.fit(method, solver="iterative")
    eps = approx.objective_error
    assert 0 < eps < 10
    assert abs(approx.objective - exact.objective) <= eps
    assert model.engine.objective(approx.theta, method == "REML") - exact.objective <= 2 * eps
    return exact, approx


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_crossed_within_stated_error(crossed, method):
    exact, approx = within_stated_error(crossed, method)
    assert approx.method == method and approx.converged


def test_solves_are_exact_at_a_given_theta(crossed):
    """At the exact optimum, the iterative engine's sigma^2, beta and modes are the exact engine's (CG to 1e-10)."""
    exact = crossed.fit()
    engine = IterativeEngine(crossed.cross_products, [1, 1], [b.m for b in crossed.design.blocks], PROBES, STEPS, SEED)
    at = engine.evaluate(exact.theta, True)
    held = crossed.cross_products.held
    assert held.coefficients(at.beta) == pytest.approx(exact.beta, rel=1e-7)
    assert np.sqrt(at.r2 / (crossed.nobs - 2)) == pytest.approx(exact.sigma, rel=1e-7)
    for t, u, b in zip(exact.theta, at.modes, exact.random_effects):
        assert t * u * held.scale[-1] == pytest.approx(b, rel=1e-7, abs=1e-9 * np.abs(b).max())


def test_insteval_against_lme4():
    """Three crossed scalar terms (73,421 rows, 4,128 effects): lme4's REML criterion within the stated error, the
    approximate criterion at lme4's theta within it too, and the exact criterion at our theta within twice it."""
    ref = reference("insteval_reml")
    model = mlv.Model(ref["formula"], mlv.datasets.load(ref["dataset"]))
    fit = model.fit(solver="iterative")
    eps = fit.objective_error
    assert abs(fit.objective - ref["REMLcrit"]) <= eps
    assert model.engine.objective(fit.theta, True) - ref["REMLcrit"] <= 2 * eps
    engine = IterativeEngine(model.cross_products, [1, 1, 1], [b.m for b in model.design.blocks], PROBES, STEPS, SEED)
    at_lme4 = engine.evaluate(np.array(ref["theta"]["values"]), True)
    assert abs(at_lme4.criterion - ref["REMLcrit"]) <= at_lme4.logdet.error


def test_labelled_reproducible_and_refusing(crossed):
    fit = crossed.fit(solver="iterative")
    assert fit.approximation.startswith("APPROXIMATE")
    assert "APPROXIMATE" in fit.summary().splitlines()[0] and "APPROXIMATE" in fit._repr_html_()
    assert crossed.fit(solver="iterative").objective == fit.objective  # fixed probes: the same criterion
    assert fit.fixed_effects.loc["x", "estimate"] == pytest.approx(0.5, abs=5 * fit.fixed_effects.loc["x", "std_error"])
    assert fit.confint().shape == (2, 2)
    with pytest.raises(MultilevelError, match="exact solver"):
        fit.confint("profile")
    with pytest.raises(MultilevelError, match="approximate solver"):
        fit.icc()


def slope_data(rows: int, items: int, seed: int = 11) -> pd.DataFrame:
    """`crossed_data` with a random slope of x by user (SD 0.3, correlation 0.25 with the intercept)."""
    rng = np.random.default_rng(seed)
    users = rows // 20
    user, item = rng.integers(0, users, rows), rng.integers(0, items, rows)
    x = rng.normal(size=rows)
    a = rng.multivariate_normal([0, 0], [[0.64, 0.06], [0.06, 0.09]], users)
    y = 1 + 0.5 * x + a[user, 0] + a[user, 1] * x + rng.normal(0, 0.5, items)[item] + rng.normal(size=rows)
    return pd.DataFrame({"y": y, "x": x, "user": user, "item": item})


@pytest.fixture(scope="module")
def sloped():
    """5 x 10^4 crossed rows, 2,500 users (intercept and slope) x 100 items."""
    return mlv.Model("y ~ x + (1 + x | user) + (1 | item)", slope_data(50_000, 100))


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_random_slopes_within_stated_error(sloped, method):
    """Random slopes on the first term (eliminated per user as 2 x 2 blocks): the bounds of the module's docstring,
    and the variance components' table as the exact fit's (the same theta to BOBYQA's precision)."""
    exact, approx = within_stated_error(sloped, method)
    assert approx.variance_components.columns.tolist() == exact.variance_components.columns.tolist()
    assert approx.variance_components["term"].tolist() == exact.variance_components["term"].tolist()
    assert not approx.is_singular and approx.random_effects[0].shape == exact.random_effects[0].shape


def test_random_slopes_solves_are_exact_at_a_given_theta(sloped):
    """At the exact optimum, the iterative engine's sigma^2, beta and modes (users' 2-vectors) are the exact engine's."""
    exact = sloped.fit()
    engine = IterativeEngine(sloped.cross_products, [2, 1], [b.m for b in sloped.design.blocks], PROBES, STEPS, SEED)
    at = engine.evaluate(exact.theta, True)
    held = sloped.cross_products.held
    assert held.coefficients(at.beta) == pytest.approx(exact.beta, rel=1e-7)
    assert np.sqrt(at.r2 / (sloped.nobs - 2)) == pytest.approx(exact.sigma, rel=1e-7)
    factors = [exact.factor.T[0], exact.factor.T[1]]
    for T, u, b in zip(factors, at.modes, exact.random_effects):
        assert held.random_effects([u @ T.T * held.scale[-1]])[0] == pytest.approx(b, rel=1e-7, abs=1e-9 * np.abs(b).max())


def test_refused_models(sleep):
    with pytest.raises(MultilevelError, match="random slope on a term with fewer levels.*exact solver"):
        mlv.Model("y ~ x + (1 | user) + (1 + x | item)", slope_data(4_000, 20)).fit(solver="iterative")
    with pytest.raises(MultilevelError, match="one random term"):
        mlv.Model("Reaction ~ Days + (Days | Subject)", sleep).fit(solver="iterative")
    with pytest.raises(MultilevelError, match="one random term"):
        mlv.Model("Reaction ~ Days + (1 | Subject)", sleep).fit(solver="iterative")
    with pytest.raises(MultilevelError, match="solver must be"):
        mlv.Model("Reaction ~ Days + (1 | Subject)", sleep).fit(solver="cg")
    with pytest.raises(MultilevelError, match="covariance prior"):
        mlv.Model("Reaction ~ Days + (1 | Subject)", sleep).fit(prior="zero-avoiding", solver="iterative")


def random_spd(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(size, size)) / np.sqrt(size)
    return G @ G.T + np.diag(rng.uniform(0.5, 2.0, size))


def test_conjugate_gradients_solves():
    A = random_spd(60, 1)
    rhs = np.random.default_rng(2).normal(size=(60, 3))
    X, _ = conjugate_gradients(lambda V: A @ V, rhs, np.diag(A).copy(), 1e-12, 500)
    assert X == pytest.approx(np.linalg.solve(A, rhs), rel=1e-9, abs=1e-10)


def test_conjugate_gradients_refuse_an_indefinite_system():
    """A direction of negative curvature is named at once (it used to run to the iteration limit and blame the
    conditioning)."""
    indefinite = np.diag(np.r_[np.ones(30), -np.ones(30)])
    with pytest.raises(MultilevelError, match="not positive definite"):
        conjugate_gradients(lambda V: indefinite @ V, np.ones((60, 1)), np.ones(60), 1e-10, 200)


def test_lanczos_logdet_refuses_one_step():
    """Its error estimate compares the quadrature with half the steps: one step is refused with a clear message."""
    A = random_spd(20, 4)
    with pytest.raises(MultilevelError, match="at least 2 steps"):
        lanczos_logdet(lambda V: A @ V, np.diag(A).copy(), rademacher_probes(20, 4, 5), 1)


def test_lanczos_logdet_within_its_error():
    """Sampling error: the estimate within its stated error of log det; with every eigenvector deflated, exact."""
    A = random_spd(80, 3)
    exact = np.linalg.slogdet(A)[1]
    estimate = lanczos_logdet(lambda V: A @ V, np.diag(A).copy(), rademacher_probes(80, 64, 5), 40)
    assert abs(estimate.value - exact) <= estimate.error
    scale = 1 / np.sqrt(np.diag(A))
    _, vectors = np.linalg.eigh(scale[:, None] * A * scale)
    deflated = lanczos_logdet(lambda V: A @ V, np.diag(A).copy(), rademacher_probes(80, 4, 5), 40, vectors)
    assert deflated.value == pytest.approx(exact, rel=1e-10)


def test_partitioned_data_give_the_same_fit():
    """From a Dask DataFrame of shuffled partitions (the same cross-products to rounding): the same approximate fit,
    criterion within the exact-vs-partitioned agreement of docs/scale.md (1e-10 relative) and theta within
    BOBYQA's stopping precision (1e-5)."""
    dd = pytest.importorskip("dask.dataframe")
    data = crossed_data(20_000, 100, seed=7)
    formula = "y ~ x + (1 | user) + (1 | item)"
    memory = mlv.Model(formula, data).fit(solver="iterative")
    parts = mlv.Model(formula, dd.from_pandas(data.sample(frac=1, random_state=3), npartitions=3, sort=False))
    dask = parts.fit(solver="iterative")
    assert dask.objective == pytest.approx(memory.objective, rel=1e-10)
    assert dask.theta == pytest.approx(memory.theta, abs=1e-5)
    assert "APPROXIMATE" in dask.summary()


def central_differences(criterion, theta: np.ndarray, h: float) -> np.ndarray:
    """d criterion / d theta by central differences of step h."""
    steps = h * np.eye(len(theta))
    return np.array([(criterion(theta + e) - criterion(theta - e)) / (2 * h) for e in steps])


# Finite differences of step h = 1e-5 err by O(h^2) = 1e-10 relative (truncation) and by the criterion's rounding
# over 2h (at most 1e-12 |f| in the sums of a few 10^4 terms, so 1e-12 |f| / h absolute): the gradient's tolerance.
FD_STEP = 1e-5


@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("theta", [[0.8, 0.5], [0.3, 1.2], [1.5, 0.05]])
def test_gradient_is_the_approximate_criterions(method, theta):
    """The iterative criterion's analytic gradient (reverse mode through the Lanczos quadrature, probes fixed; the
    envelope theorem for r^2 and log|R_X|) against central differences of the same approximate criterion."""
    model = mlv.Model("y ~ x + (1 | user) + (1 | item)", crossed_data(20_000, 100))
    engine = IterativeEngine(model.cross_products, [1, 1], [b.m for b in model.design.blocks], PROBES, STEPS, SEED)
    reml, theta = method == "REML", np.array(theta)
    at = engine.evaluate(theta, reml, gradient=True)
    assert at.criterion == engine.evaluate(theta, reml).criterion  # asking for the gradient leaves the value alone
    numeric = central_differences(lambda t: engine.evaluate(t, reml).criterion, theta, FD_STEP)
    assert at.gradient == pytest.approx(numeric, rel=1e-7, abs=1e-12 * abs(at.criterion) / FD_STEP)


def test_gradient_with_three_terms():
    """Three crossed scalar terms (the first eliminated, two applied by products): the same check."""
    data = crossed_data(20_000, 100, seed=5)
    data["site"] = np.random.default_rng(6).integers(0, 40, len(data))
    model = mlv.Model("y ~ x + (1 | user) + (1 | item) + (1 | site)", data)
    engine = IterativeEngine(model.cross_products, [1, 1, 1], [b.m for b in model.design.blocks], PROBES, STEPS, SEED)
    theta = np.array([0.7, 0.4, 0.2])
    at = engine.evaluate(theta, True, gradient=True)
    numeric = central_differences(lambda t: engine.evaluate(t, True).criterion, theta, FD_STEP)
    assert at.gradient == pytest.approx(numeric, rel=1e-7, abs=1e-12 * abs(at.criterion) / FD_STEP)


@pytest.mark.parametrize("exhausted", [False, True])
def test_lanczos_slopes_against_differences(exhausted):
    """krylov's reverse pass on A(t) = T M T + I, T = diag(t per block): the estimate's derivatives by t (through A,
    its diagonal and directions built from it) against central differences, with runs that go all the steps and,
    with M = 0.3 J (K then has at most 4 distinct eigenvalues), runs whose Krylov space is exhausted early."""
    size = 40
    M = np.full((size, size), 0.3) if exhausted else random_spd(size, 9)
    block = np.repeat([0, 1], size // 2)
    probes = rademacher_probes(size, 6, 10)

    def estimate(t: np.ndarray, slopes: bool = False):
        lam = t[block]
        A = lam[:, None] * M * lam + np.eye(size)
        diagonal = np.diag(A).copy()
        W = np.zeros((size, 2))
        W[np.arange(size), block] = np.sqrt(diagonal)
        W /= np.linalg.norm(W, axis=0)

        def pullback(a, b):
            slope = [np.sum((b * (M @ (lam[:, None] * a)) + a * (M @ (lam[:, None] * b)))[block == j]) for j in (0, 1)]
            return A @ a, A @ b, np.array(slope)

        if not slopes:
            return lanczos_logdet(lambda V: A @ V, diagonal, probes, 8, W).value
        value, s = lanczos_logdet_slopes(lambda V: A @ V, pullback, diagonal, probes, 8, W)
        d_diag = 2 * lam * np.diag(M)  # d A_ii / d t_block(i)
        w_bar = s.directions[np.arange(size), block]
        w = W[np.arange(size), block]
        per = np.bincount(block, w_bar * w) / np.bincount(block, diagonal)
        d_bar = s.diagonal + 0.5 * w_bar * w / diagonal - 0.5 * per[block]
        return value.value, s.operator + np.bincount(block, d_bar * d_diag)

    t = np.array([0.9, 1.3])
    value, gradient = estimate(t, True)
    assert value == estimate(t)
    if exhausted:  # every run stopped early: its quadrature is exact, no change from half the steps
        lam = t[block]
        A = lam[:, None] * M * lam + np.eye(size)
        assert lanczos_logdet(lambda V: A @ V, np.diag(A).copy(), probes, 8).quadrature_change == 0.0
    numeric = central_differences(estimate, t, FD_STEP)
    assert gradient == pytest.approx(numeric, rel=1e-7, abs=1e-12 * abs(value) / FD_STEP)
