"""Generated designs and a catalogue of study scenarios (docs/study.md reports what they show).

`study_data(formula, groups, size)` makes a data frame for a formula with one grouping factor: `groups`
levels, `size` rows each (a number: balanced; a list: one size per group), every other variable a standard
normal covariate and the response 0 (a study replaces it). `SCENARIOS` holds the cases of the forum thread
this package grew from: few groups with a small between-group SD, many small groups, correlated slopes,
unbalanced groups.

>>> study_data("y ~ x + (1 | g)", groups=3, size=[1, 2, 3]).groupby("g").size().tolist()
[1, 2, 3]
"""

from __future__ import annotations

from dataclasses import dataclass

import formulaic
import numpy as np
import pandas as pd

from .errors import MultilevelError
from .formula import parse
from .model import Model
from .study import study


def study_data(formula: str, groups: int, size, seed: int = 0) -> pd.DataFrame:
    """Rows for `formula` on `groups` groups of `size` rows (int, or one int per group); covariates N(0, 1). The
    response column holds N(0, 1) placeholders (a model needs a varying response); a study replaces it."""
    f = parse(formula)
    if len(f.groups) != 1 or ":" in f.groups[0]:
        raise MultilevelError(f"study_data generates one grouping factor; the formula has {list(f.groups) or 'none'}")
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 2:
        raise MultilevelError(f"groups must be an integer >= 2, got {groups!r}")
    sizes = np.full(groups, size) if np.ndim(size) == 0 else np.asarray(size)
    if sizes.shape != (groups,) or sizes.dtype.kind not in "iu" or sizes.min() < 1:
        raise MultilevelError(f"size must be an integer >= 1 or a list of {groups} of them, got {size!r}")
    group = f.groups[0]
    labels = np.array([f"{group}{i + 1:0{len(str(groups))}d}" for i in range(groups)])
    frame = pd.DataFrame({f.response: 0.0, group: np.repeat(labels, sizes)})
    rng = np.random.default_rng(seed)
    for name in sorted(_covariates(f) - {group, f.response}):
        frame[name] = rng.standard_normal(len(frame))
    frame[f.response] = rng.standard_normal(len(frame))
    return frame


def _covariates(f) -> set[str]:
    """Variables the fixed part and the random terms' expressions use."""
    names = set(formulaic.Formula(f.fixed).required_variables)
    for term in f.random:
        names |= set(formulaic.Formula(term.expr).required_variables)
    return names


@dataclass(frozen=True, eq=False)
class Scenario:
    """A design and a truth to study: `run(**study options)` simulates and scores."""

    name: str
    description: str
    formula: str
    groups: int
    size: object
    truth: dict

    def model(self) -> Model:
        return Model(self.formula, study_data(self.formula, self.groups, self.size))

    def run(self, **options):
        """`multilevel.study` of this scenario's model and truth."""
        return study(self.model(), self.truth, **options)


def _unbalanced_sizes(groups: int, smallest: int, largest: int) -> list[int]:
    """Group sizes spread geometrically from `smallest` to `largest`."""
    return [int(round(s)) for s in np.geomspace(smallest, largest, groups)]


SCENARIOS = {
    s.name: s
    for s in [
        Scenario("few groups, small SD", "5 groups of 10, between-group SD 0.3 against a residual SD of 1: "
                 "boundary country", "y ~ 1 + (1 | g)", 5, 10,
                 {"b_Intercept": 0.0, "sd_g__Intercept": 0.3, "sigma": 1.0}),
        Scenario("many small groups", "100 groups of 3, between-group SD 0.5", "y ~ 1 + x + (1 | g)", 100, 3,
                 {"b_Intercept": 0.0, "b_x": 0.5, "sd_g__Intercept": 0.5, "sigma": 1.0}),
        Scenario("correlated slopes", "20 groups of 10; intercept SD 1, slope SD 0.5, correlation 0.5",
                 "y ~ 1 + x + (1 + x | g)", 20, 10,
                 {"b_Intercept": 0.0, "b_x": 1.0, "sd_g__Intercept": 1.0, "sd_g__x": 0.5, "cor_g__Intercept__x": 0.5,
                  "sigma": 1.0}),
        Scenario("unbalanced groups", "20 groups of 1 to 40 rows, between-group SD 0.5", "y ~ 1 + x + (1 | g)", 20,
                 _unbalanced_sizes(20, 1, 40), {"b_Intercept": 0.0, "b_x": 0.5, "sd_g__Intercept": 0.5, "sigma": 1.0}),
    ]
}
