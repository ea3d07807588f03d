"""Predictions and simulation from fitted parameters, shared by the frequentist and Bayesian results."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dataclasses import replace

from .arguments import check_count, check_seed
from .design import Design, apply_coding
from .errors import MultilevelError
from .scaling import Scaling, held_blocks


def linear_predictor(design: Design, beta: np.ndarray, b: list[np.ndarray] | None) -> np.ndarray:
    """X beta (+ Z b when group effects are given) (+ offset) on the rows of the design."""
    eta = design.X @ beta
    if design.offset is not None:
        eta = eta + design.offset
    return eta if b is None else eta + random_part(design, b)


def held_predictor(design: Design, held: Scaling, beta: np.ndarray, b: list[np.ndarray] | None) -> np.ndarray:
    """`linear_predictor` from the coefficients of the columns as the fit holds them (`Scaling`; b: y units, a term's
    covariates held centred): each column centred before it meets its coefficient, so a predictor far from zero
    costs no digits (X beta of the user's columns sums terms of c times a slope that cancel)."""
    X = held.apply(np.column_stack([design.X, np.zeros(design.nobs)]))[:, :-1]
    eta = held.centre[-1] + held.scale[-1] * (X @ beta)
    if design.offset is not None:
        eta = eta + design.offset
    return eta if b is None else eta + random_part(held_rows(design, held), b)


def held_rows(design: Design, held: Scaling) -> Design:
    """The design with its random terms' covariates as `held` holds them (the group effects' parametrisation)."""
    return replace(design, blocks=held_blocks(design, held))


def random_part(design: Design, b: list[np.ndarray]) -> np.ndarray:
    """Z b: each row's group effects times its covariates, summed over terms; code -1 (a level not seen in
    fitting) has no group effect."""
    out = np.zeros(design.nobs)
    for block, bb in zip(design.blocks, b):
        effects = np.concatenate([bb, np.zeros((1, bb.shape[1]))])  # row -1: no effect
        out += np.einsum("nk,nk->n", block.Z, effects[block.codes])
    return out


def predict_new(design: Design, beta: np.ndarray, b: list[np.ndarray] | None, data, offset=None,
                held: Scaling | None = None):
    """Predictions for new data, coded as the fitted data: known groups get their effects, unseen groups none
    (population level); without group effects (b None) the grouping columns are not needed. With `held`, beta and b
    are the held columns' (`held_predictor`). A Dask DataFrame gives a lazy Dask Series in its partitions (its
    offset a column name)."""
    check_offset(design, offset)
    if type(data).__module__.split(".")[0] == "dask":
        if not isinstance(getattr(data, "_meta", None), pd.DataFrame):
            raise MultilevelError(f"new data must be a data frame, not a Dask {type(data).__name__}: use .to_frame()")
        if offset is not None and not isinstance(offset, str):
            raise MultilevelError("with a Dask DataFrame give offset= as a column name: an array cannot follow the partitions")
        return data.map_partitions(_predicted, design.coding, beta, b, offset, held, meta=("prediction", float))
    return _predicted(data, design.coding, beta, b, offset, held, index=False)


def check_offset(design: Design, offset) -> None:
    """Refuse an offset for new rows of a model fitted without one (it would be silently left out)."""
    coding = design.coding
    if offset is not None and coding.offset is None and "(offset)" not in coding.columns and not coding.offsets:
        raise MultilevelError("offset= was given for the new rows, but the model was fitted without an offset, so its "
                              "predictions have none: drop offset=, or refit with Model(..., offset=...)")


def _predicted(data, coding, beta: np.ndarray, b: list[np.ndarray] | None, offset, held: Scaling | None,
               index: bool = True):
    """Predictions for the rows of `data` (a partition: as a Series on its index, empty for no rows)."""
    if index and not len(data):
        return pd.Series(np.empty(0), index=data.index, name="prediction")
    values = predictor(apply_coding(coding, data, offset=offset, new=True, random=b is not None), beta, b, held)
    return pd.Series(values, index=data.index, name="prediction") if index else values


def predictor(design: Design, beta: np.ndarray, b: list[np.ndarray] | None, held: Scaling | None) -> np.ndarray:
    """`linear_predictor` of the user's coefficients, or with `held` `held_predictor` of the held columns'."""
    return linear_predictor(design, beta, b) if held is None else held_predictor(design, held, beta, b)


def simulate(design: Design, family, eta, covariances, sigma: float | None, n: int, seed) -> np.ndarray:
    """n response vectors from the model: new group effects, then the responses given them, the fixed part of the
    linear predictor (offset included) as given by `eta`. With `sigma` Gaussian residuals; without (binomial, Poisson, negative binomial) draws from the family
    at the means, binomial responses with trials as success counts."""
    rng = np.random.default_rng(check_seed(seed))
    n = check_count(n, "n")
    resid_sd = None if sigma is None else residual_sd(design, sigma)
    out = np.empty((n, design.nobs))
    for i in range(n):
        b = [draw_group_effects(rng, cov, block.m) for block, cov in zip(design.blocks, covariances)]
        eta_i = eta + random_part(design, b)
        if resid_sd is not None:
            out[i] = family.draw(rng, eta_i, resid_sd)
        else:
            y = family.simulate(family.link.linkinv(eta_i), design.family_weights, rng)
            out[i] = y if design.trials is None else np.round(y * design.trials)
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


def row_log_likelihood(design: Design, family, mu: np.ndarray, sigma) -> np.ndarray:
    """Each row's Gaussian log density given its mean and `residual_sd` (sigma one value, or draws (..., 1))."""
    return family.log_likelihood(design.y, mu, residual_sd(design, sigma))
