"""Designs against lme4: for every lmer reference fit, the same rows, fixed-effect columns and levels;
categorical coding against R's contrast mathematics."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import reference, reference_files

import multilevel as mlv
from multilevel.design import build_design

LMER_FITS = reference_files("lme4::lmer")


def test_there_are_reference_fits_to_check():
    assert len(LMER_FITS) >= 14


def lme4_group(name: str, ours: dict[str, int]) -> str:
    """Our name of lme4's grouping factor: lme4 writes the nested `batch/cask` as `cask:batch`, we write
    `batch:cask` (the order of the formula); the same set of factors is the same grouping."""
    matches = [g for g in ours if set(g.split(":")) == set(name.split(":"))]
    assert len(matches) == 1, (name, ours)
    return matches[0]


@pytest.mark.parametrize("name", LMER_FITS)
def test_design_matches_lme4(name):
    ref = reference(name)
    design = build_design(ref["formula"], mlv.datasets.load(ref["dataset"]))
    assert design.nobs == ref["nobs"]
    assert design.n_dropped == 0
    assert design.fixed_names == ref["fixef"]["names"]
    assert {lme4_group(g, design.n_levels): m for g, m in ref["ngrps"].items()} == design.n_levels


def test_nested_grouping_name_mapping():
    ref = reference("pastes_nested_reml")
    design = build_design(ref["formula"], mlv.datasets.load("Pastes"))
    assert set(ref["ngrps"]) == {"cask:batch", "batch"}
    assert design.n_levels == {"batch:cask": 30, "batch": 10}


def test_interaction_with_category_names_as_lme4():
    ref = reference("hsb82_ctx_slopes_reml")
    assert "cses:sectorCatholic" in ref["fixef"]["names"]
    design = build_design(ref["formula"], mlv.datasets.load("Hsb82"))
    hsb = mlv.datasets.load("Hsb82")
    column = design.X[:, design.fixed_names.index("cses:sectorCatholic")]
    np.testing.assert_array_equal(column, hsb.cses.to_numpy() * (hsb.sector == "Catholic").to_numpy())


def r_contr_poly(n: int) -> np.ndarray:
    """R's contr.poly(n): the powers 0..n-1 of the scores 1..n orthogonalised in order (each degree's
    part orthogonal to all lower degrees, leading coefficient positive), unit length, constant dropped."""
    scores = np.arange(1.0, n + 1)
    basis = []
    for degree in range(n):
        v = scores**degree
        for b in basis:
            v = v - (b @ v) * b
        for b in basis:  # second pass against rounding
            v = v - (b @ v) * b
        basis.append(v / np.linalg.norm(v))
    return np.column_stack(basis[1:])


def test_contr_poly_mathematics():
    c = r_contr_poly(4)
    # contr.poly(4) printed by R: .L = (-3, -1, 1, 3)/sqrt(20), .Q = (1, -1, -1, 1)/2, .C = (-1, 3, -3, 1)/sqrt(20)
    np.testing.assert_allclose(c[:, 0], np.array([-3, -1, 1, 3]) / np.sqrt(20), atol=1e-15)
    np.testing.assert_allclose(c[:, 1], np.array([1, -1, -1, 1]) / 2, atol=1e-15)
    np.testing.assert_allclose(c[:, 2], np.array([-1, 3, -3, 1]) / np.sqrt(20), atol=1e-15)


def test_ordered_factor_gets_polynomial_contrasts():
    cake = mlv.datasets.load("cake")
    design = build_design("angle ~ recipe * temperature + (1 | recipe:replicate)", cake)
    poly = ["temperature.L", "temperature.Q", "temperature.C", "temperature^4", "temperature^5"]
    assert design.fixed_names[:8] == ["(Intercept)", "recipeB", "recipeC"] + poly
    # R orders interaction columns with the first factor varying fastest
    assert design.fixed_names[8:10] == ["recipeB:temperature.L", "recipeC:temperature.L"]
    expected = r_contr_poly(6)[cake.temperature.cat.codes.to_numpy()]
    got = design.X[:, [design.fixed_names.index(p) for p in poly]]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13)
    inter = design.X[:, design.fixed_names.index("recipeC:temperature^4")]
    np.testing.assert_allclose(inter, expected[:, 3] * (cake.recipe == "C").to_numpy(), atol=1e-13)


def test_ordered_factor_in_a_random_term():
    cake = mlv.datasets.load("cake")
    design = build_design("angle ~ 1 + (1 + temperature | recipe)", cake)
    assert design.blocks[0].coef_names == ["(Intercept)", "temperature.L", "temperature.Q", "temperature.C",
                                           "temperature^4", "temperature^5"]
    # without an intercept R codes the first factor by indicators of all its levels, ordered or not
    design = build_design("angle ~ 1 + (0 + temperature | recipe)", cake)
    assert design.blocks[0].coef_names == [f"temperature{t}" for t in range(175, 226, 10)]
    np.testing.assert_array_equal(design.blocks[0].Z.argmax(axis=1), cake.temperature.cat.codes)


def test_instEval_ordered_and_unordered_factors():
    inst = mlv.datasets.load("InstEval")
    design = build_design("y ~ studage + service + dept + (1 | s)", inst)
    assert design.fixed_names[:5] == ["(Intercept)", "studage.L", "studage.Q", "studage.C", "service1"]
    # dept's reference is R's first level '15', not the numerically smallest
    assert design.fixed_names[5] == "dept5"
    assert "dept15" not in design.fixed_names
