"""Predictions and simulation from fitted parameters, shared by the frequentist and Bayesian results."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .data import as_frame, names_in, unknown_column_error
from .design import Design, lme4_name
from .errors import MultilevelError


def linear_predictor(design: Design, beta: np.ndarray, b: list[np.ndarray] | None) -> np.ndarray:
    """X beta (+ Z b when group effects are given) (+ offset) on the rows of the design."""
    eta = design.X @ beta
    if design.offset is not None:
        eta = eta + design.offset
    return eta if b is None else eta + random_part(design, b)


def random_part(design: Design, b: list[np.ndarray]) -> np.ndarray:
    """Z b: each row's group effects times its covariates, summed over terms."""
    out = np.zeros(design.nobs)
    for block, bb in zip(design.blocks, b):
        out += np.einsum("nk,nk->n", block.Z, bb[block.codes])
    return out


def new_fixed_matrix(design: Design, frame: pd.DataFrame) -> np.ndarray:
    """The fixed-effect matrix for new rows, with the fitted data's coding and aliased columns dropped."""
    try:
        mm = design.fixed_spec.get_model_matrix(frame, na_action="raise")
    except Exception as exc:  # formulaic's failure in our words
        raise MultilevelError(f"cannot build the fixed-effect columns for the new data: {exc}") from None
    order = names_in(design.formula.fixed, design.frame.columns)
    names = [lme4_name(c, order) for c in mm.columns]
    keep = [names.index(n) for n in design.fixed_names]
    return mm.to_numpy(dtype=float)[:, keep]


def predict_new(design: Design, beta: np.ndarray, b: list[np.ndarray] | None, data, offset=None) -> np.ndarray:
    """Predictions for new data: known groups get their effects, unseen groups none (population level)."""
    frame = as_frame(data)
    known_offset = new_offset(design, frame, offset)
    needed = set()
    for block in design.blocks:
        needed.update(block.term.group_factors)
    for col in design.frame.columns:
        if col in needed and col not in frame.columns and b is not None:
            raise unknown_column_error(col, frame.columns, "the new data (a grouping factor)")
    frame = _match_categories(design, frame)
    eta = new_fixed_matrix(design, frame) @ beta + known_offset
    if b is None:
        return eta
    for block, bb in zip(design.blocks, b):
        labels = _labels(frame, block.term.group_factors)
        index = pd.Index(block.levels).get_indexer(labels)
        Z = block.spec.get_model_matrix(frame).to_numpy(dtype=float)
        effect = np.where(index[:, None] >= 0, bb[np.maximum(index, 0)], 0.0)
        eta = eta + np.einsum("nk,nk->n", Z, effect)
    return eta


def new_offset(design: Design, frame: pd.DataFrame, offset) -> np.ndarray | float:
    """The offset of the new rows (a column name or an array); required when the model has one."""
    if offset is None:
        if design.offset is not None:
            raise MultilevelError("the model was fitted with an offset: pass offset= (a column name or an array) for the new rows")
        return 0.0
    if isinstance(offset, str):
        if offset not in frame.columns:
            raise unknown_column_error(offset, frame.columns, "the new data (the offset)")
        offset = frame[offset]
    values = np.asarray(offset, dtype=float).reshape(-1)
    if values.shape != (len(frame),):
        raise MultilevelError(f"the offset has {values.size} values for {len(frame)} new rows: give one per row")
    return values


def _match_categories(design: Design, frame: pd.DataFrame) -> pd.DataFrame:
    """Give new categorical columns the categories seen in fitting (so contrasts line up)."""
    changed = {}
    for col in frame.columns:
        if col in design.frame.columns and isinstance(design.frame[col].dtype, pd.CategoricalDtype):
            cats = design.frame[col].cat.categories
            values = frame[col].astype(str)
            unknown = sorted(set(values) - set(map(str, cats)))
            if unknown and _is_fixed_factor(design, col):
                raise MultilevelError(
                    f"column '{col}' has level(s) {unknown[:5]} not seen in fitting: fixed effects exist only "
                    f"for {list(map(str, cats))}"
                )
            changed[col] = pd.Categorical(values, categories=list(map(str, cats)) + unknown,
                                          ordered=design.frame[col].dtype.ordered)
    return frame.assign(**changed) if changed else frame


def _is_fixed_factor(design: Design, col: str) -> bool:
    return col in names_in(design.formula.fixed, [col])


def _labels(frame: pd.DataFrame, factors: tuple[str, ...]) -> np.ndarray:
    parts = [frame[g].astype(str).to_numpy() for g in factors]
    out = parts[0].astype(object)
    for p in parts[1:]:
        out = out + ":" + p
    return out


def simulate(design: Design, family, beta, covariances, sigma: float, n: int, seed) -> np.ndarray:
    """n response vectors from the model: new group effects and residuals, fixed effects as given."""
    rng = np.random.default_rng(seed)
    eta = linear_predictor(design, beta, None)
    resid_sd = residual_sd(design, sigma)
    out = np.empty((n, design.nobs))
    for i in range(n):
        b = [draw_group_effects(rng, cov, block.m) for block, cov in zip(design.blocks, covariances)]
        out[i] = family.simulate(rng, eta + random_part(design, b), resid_sd)
    return out


def draw_group_effects(rng: np.random.Generator, cov: np.ndarray, m: int) -> np.ndarray:
    """m draws from N(0, cov), allowing a singular cov."""
    w, V = np.linalg.eigh(cov)
    root = V * np.sqrt(np.clip(w, 0, None))
    return rng.standard_normal((m, cov.shape[0])) @ root.T


def residual_sd(design: Design, sigma) -> np.ndarray:
    """Each row's residual SD: sigma / sqrt(weight), combined with a known se() (sigma None: the se alone).
    sigma may be one value or draws (..., 1) broadcasting against the rows."""
    if sigma is None:
        return design.se
    sd = np.full(np.broadcast_shapes(np.shape(sigma), (design.nobs,)), sigma, dtype=float)
    if design.weights is not None:
        sd = sd / np.sqrt(design.weights)
    if design.se is not None:
        sd = np.sqrt(sd**2 + design.se**2)
    return sd
