"""Cross-products by term pair against a direct dense computation of Z'WZ, Z'W[X y] and [X y]'W[X y] (of the
columns as `Scaling` holds them)."""

from __future__ import annotations

import numpy as np
import pytest

import multilevel as mlv
from multilevel.crossprod import cross_products
from multilevel.design import build_design


def dense_z(block) -> np.ndarray:
    """Z of one term built row by row: column (level, coefficient), level-major."""
    Z = np.zeros((len(block.codes), block.m * block.k))
    for row, level in enumerate(block.codes):
        Z[row, level * block.k : (level + 1) * block.k] = block.Z[row]
    return Z


def check_against_dense(design, w):
    cp = cross_products(design)
    W = np.diag(w)
    y = design.y if design.offset is None else design.y - design.offset
    Xy = cp.held.apply(np.column_stack([design.X, y]))  # the columns as the sums hold them (centred, scaled)
    y = Xy[:, -1]
    Zs = [dense_z(b) for b in design.blocks]
    assert (cp.n, cp.p) == (design.nobs, design.p)
    np.testing.assert_allclose(cp.xy, Xy.T @ W @ Xy, rtol=1e-12)
    np.testing.assert_allclose(cp.yty, y @ W @ y, rtol=1e-12)
    for i, (block, Zi) in enumerate(zip(design.blocks, Zs)):
        full = Zi.T @ W @ Zi
        k = block.k
        for level in range(block.m):
            np.testing.assert_allclose(cp.diag[i][level], full[level * k : (level + 1) * k, level * k : (level + 1) * k],
                                       rtol=1e-12, atol=1e-9)
        # the diagonal block is block diagonal: nothing between different levels
        mask = np.kron(np.eye(block.m), np.ones((k, k))) == 0
        assert np.all(full[mask] == 0)
        np.testing.assert_allclose(cp.zxy[i], Zi.T @ W @ Xy, rtol=1e-12, atol=1e-9)
        for j in range(i + 1, len(Zs)):
            np.testing.assert_allclose(cp.off[(i, j)].toarray(), Zi.T @ W @ Zs[j], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(cp.sum_log_w, np.sum(np.log(w)), rtol=1e-12)
    return cp


def test_sleepstudy_slopes_unweighted():
    design = build_design("Reaction ~ Days + (Days | Subject)", mlv.datasets.load("sleepstudy"))
    cp = check_against_dense(design, np.ones(design.nobs))
    assert cp.diag[0].shape == (18, 2, 2) and cp.zxy[0].shape == (36, 3) and cp.off == {}


def test_crossed_terms_with_weights_and_offset():
    pen = mlv.datasets.load("Penicillin")
    rng = np.random.default_rng(1)
    w = rng.uniform(0.5, 2.0, len(pen))
    off = rng.normal(size=len(pen))
    design = build_design("diameter ~ 1 + (1 | plate) + (1 | sample)", pen, weights=w, offset=off)
    cp = check_against_dense(design, w)
    assert set(cp.off) == {(0, 1)} and cp.off[(0, 1)].shape == (24, 6)


def test_several_terms_nested_and_slopes_with_weights():
    sleep = mlv.datasets.load("sleepstudy")
    data = sleep.assign(half=(sleep.Days >= 5).map({True: "late", False: "early"}), x=np.cos(sleep.Days))
    w = 1.0 + (np.arange(len(data)) % 4)
    design = build_design("Reaction ~ Days + x + (Days || Subject) + (1 + x | Subject/half)", data, weights=w)
    assert len(design.blocks) == 4
    check_against_dense(design, w)


def test_known_standard_errors_weight_by_inverse_variance():
    schools = mlv.datasets.load("eight_schools")
    design = build_design("y | se(sigma) ~ 1 + (1 | school)", schools)
    check_against_dense(design, 1.0 / schools.sigma.to_numpy() ** 2)


@pytest.mark.parametrize("parts", [2, 3])
def test_cross_products_add_over_partitions(parts):
    """Sums over rows: the products of row partitions, held with the same scaling, add up to those of the whole (the
    out-of-core route)."""
    sleep = mlv.datasets.load("sleepstudy")
    whole = cross_products(build_design("Reaction ~ Days + (Days | Subject)", sleep))
    pieces = [cross_products(build_design("Reaction ~ Days + (Days | Subject)", chunk), whole.scaling)
              for chunk in (sleep.iloc[i::parts] for i in range(parts))]  # every chunk holds all subjects
    np.testing.assert_allclose(sum(p.xy for p in pieces), whole.xy, rtol=1e-12, atol=1e-12 * np.abs(whole.xy).max())  # centred sums near 0
    np.testing.assert_allclose(sum(p.diag[0] for p in pieces), whole.diag[0], rtol=1e-12)
