"""Occupancy (psi) or detection (p) probability against one covariate, from a fit's or a posterior's `predict`:
the other covariates of that part at their mean (numbers) or most common value (categories)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .errors import MultilevelError


def _part(model, part: str) -> tuple[list[str], pd.DataFrame]:
    """The data columns the psi or p formula reads (response left out) and the rows that part was coded on."""
    coding, frame = (model.occupancy_coding, model.site_frame) if part == "psi" else (model.detection_coding, model.survey_frame)
    return [c for c in coding.columns if c != model.response], frame


def numeric_covariates(model, part: str) -> list[str]:
    """The numeric covariates of the psi or p formula: those `probability_curve` can draw."""
    columns, frame = _part(model, part)
    return [c for c in columns if pd.api.types.is_numeric_dtype(frame[c])]


def _grid(model, covariate: str, part: str, n: int) -> pd.DataFrame:
    """n rows spanning the covariate's observed range, every other column the part uses held at a typical value."""
    columns, frame = _part(model, part)
    if covariate not in numeric_covariates(model, part):
        raise MultilevelError(f"'{covariate}' is not a numeric covariate of the {part} formula (its columns: {', '.join(columns) or 'none'})")
    grid = pd.DataFrame({covariate: np.linspace(frame[covariate].min(), frame[covariate].max(), n)})
    for c in columns:
        if c != covariate:
            grid[c] = frame[c].mean() if pd.api.types.is_numeric_dtype(frame[c]) else frame[c].mode().iloc[0]
    return grid


def probability_curve(result, covariate: str, part: str = "psi", n: int = 100) -> Figure:
    """psi or p against `covariate` with its 95 % band (Wald on the logit scale for a fit, posterior quantiles
    for draws); the line's data are in `fig.axes[0].lines[0]`."""
    grid = _grid(result.model, covariate, part, n)
    table = result.predict(grid, part=part)
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    ax.plot(grid[covariate], table["estimate"])
    ax.fill_between(grid[covariate], table["lower"], table["upper"], alpha=0.25)
    ax.set_ylim(0, 1)
    ax.set_xlabel(covariate)
    ax.set_ylabel("occupancy probability psi" if part == "psi" else "detection probability p")
    return fig
