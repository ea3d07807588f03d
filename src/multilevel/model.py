"""`Model`: a formula on data, the entry point to every fit.

>>> import multilevel as mlv
>>> model = mlv.Model("Reaction ~ 1 + Days + (1 + Days | Subject)", mlv.datasets.load("sleepstudy"))
>>> model.nobs, model.fixed_names, model.n_levels
(180, ['(Intercept)', 'Days'], {'Subject': 18})
"""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property

import numpy as np

from .bayes import sample
from .crossprod import CrossProducts, cross_products, with_response
from .dense_memory import check_dense_size
from .design import Design, build_design
from .engine import Engine
from .errors import MultilevelError
from .families import GAUSSIAN, Family, family_of
from .lmm import fit_lmm


class Model:
    """A linear mixed model: formula (lme4/brms syntax) evaluated on data.

    Parameters
    ----------
    formula : str
        e.g. ``"Reaction ~ Days + (Days | Subject)"``.
    data : DataFrame-like
        pandas or polars DataFrame, pyarrow Table, or dict of columns.
    weights, offset : column name or array, optional
        Prior weights (residual variance sigma^2 / w) and a known offset.
    family : str or `multilevel.families.Family`, optional
        The response distribution (default Gaussian).
    """

    def __init__(self, formula: str, data, weights=None, offset=None, family=None):
        self.family: Family = family_of(family)
        self.design: Design = build_design(formula, data, weights=weights, offset=offset)

    @classmethod
    def from_design(cls, design: Design, family: Family = GAUSSIAN, cross_products: CrossProducts | None = None) -> Model:
        """A model on a design already built (and, optionally, its cross-products already computed)."""
        model = cls.__new__(cls)
        model.design, model.family = design, family
        if cross_products is not None:
            model.__dict__["cross_products"] = cross_products
        return model

    def with_response(self, y) -> Model:
        """The same model for a new response vector (rows as used here): the design is shared and only the
        response's cross-products are recomputed. Bootstrap, profiles and studies refit through this."""
        y = np.asarray(y, dtype=float)
        if y.shape != (self.nobs,):
            raise MultilevelError(f"the new response has shape {y.shape}; this model uses {self.nobs} rows")
        design = replace(self.design, y=y)
        return Model.from_design(design, self.family, with_response(self.cross_products, design))

    @property
    def formula(self):
        return self.design.formula

    @property
    def nobs(self) -> int:
        """Rows used (after dropping rows with missing values)."""
        return self.design.nobs

    @property
    def fixed_names(self) -> list[str]:
        return list(self.design.fixed_names)

    @property
    def n_levels(self) -> dict[str, int]:
        """Grouping factor as written in the formula -> number of levels."""
        return self.design.n_levels

    @cached_property
    def cross_products(self) -> CrossProducts:
        return cross_products(self.design)

    @cached_property
    def engine(self) -> Engine:
        if not self.design.blocks:
            raise MultilevelError(
                "the formula has no random term such as '(1 | group)': this is a linear model, not a mixed one"
            )
        check_dense_size(self.design)
        return Engine(self.cross_products, [b.k for b in self.design.blocks], [b.m for b in self.design.blocks])

    def fit(self, method: str = "REML", prior: str | None = None, warn: bool = True):
        """Maximum-likelihood fit: ``method="REML"`` (default) or ``"ML"``; ``prior="zero-avoiding"``
        adds blme's default covariance prior (a penalised fit that never sits on the boundary).
        ``warn=False`` keeps convergence and boundary warnings in ``fit.warnings`` without raising them."""
        return fit_lmm(self, method=method, prior=prior, warn=warn)

    def sample(self, **kwargs):
        """Full Bayesian fit by MCMC; see `multilevel.bayes.sample` for the arguments."""
        return sample(self, **kwargs)

    def __repr__(self) -> str:
        return f"Model({str(self.formula)!r}, nobs={self.nobs})"

    def summary(self) -> str:
        return self.design.summary()
