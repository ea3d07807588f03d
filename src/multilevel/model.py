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
from .crossprod import CrossProducts, cross_products, design_scaling, with_response
from .dense_memory import check_dense_size
from .design import Design, build_design
from .engine import Engine
from .errors import MultilevelError
from .families import GAUSSIAN, Family, Gaussian, parse
from .glmm import fit_glmm, prepare_data, validate
from .iterative_lmm import check_iterative, fit_iterative
from .lmm import checked_method, fit_lmm
from .partitioned import PartitionedDesign, is_partitioned, partitioned_design
from .scaling import check_range


class Model:
    """A mixed model: formula (lme4/brms syntax) evaluated on data, with a response family (Gaussian by default).

    Parameters
    ----------
    formula : str
        e.g. ``"Reaction ~ Days + (Days | Subject)"``.
    data : DataFrame-like or partitioned
        pandas or polars DataFrame, pyarrow Table, or dict of columns; or, for data beyond memory, a Dask
        DataFrame or a folder/glob of Parquet files (cross-products accumulated per partition; docs/scale.md).
    weights, offset : column name or array, optional
        Prior weights (residual variance sigma^2 / w; binomial: trials of a proportion) and a known offset.
    family : str or `multilevel.families.Family`, optional
        ``"binomial"``, ``"binomial(probit)"``, ``"poisson"``, ``"negbinomial"``...; Gaussian by default.
    levels : dict, optional
        Partitioned data only: each grouping factor's levels, e.g. ``{"g": range(200_000)}``, when known; the pass
        over the data that finds them is then skipped. An interaction of grouping factors (``(1 | a:b)``,
        ``(1 | a/b)``) is given as its level combinations, ``{"a:b": [("a1", "b1"), ...]}`` (its factors' levels
        follow). Every level must have rows, and every row a listed level.
    """

    def __init__(self, formula: str, data, weights=None, offset=None, family=None, levels=None):
        self.family: Family = parse(family)
        if levels is not None and not is_partitioned(data):
            raise MultilevelError("levels= is for partitioned data (Dask, Parquet), whose levels take a pass to find; "
                                  "data in memory have their levels read from the rows: omit levels=")
        if is_partitioned(data):
            if not self.gaussian:
                raise MultilevelError(
                    f"the {self.family!r} family is fitted on data in memory only: partitioned (Dask, Parquet) data are "
                    "supported for Gaussian models; load the rows into a pandas DataFrame"
                )
            self.design, self.__dict__["cross_products"] = partitioned_design(formula, data, weights, offset, levels)
        else:
            self.design: Design = build_design(formula, prepare_data(formula, data, self.family), weights=weights,
                                               offset=offset, residual=self.gaussian)
            validate(self.design, self.family)

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
        response's cross-products are recomputed (a GLMM's are PIRLS's, per fit). Bootstrap, profiles and studies
        refit through this. Binomial responses with trials are success counts, as `simulate` draws them. An
        engine already built here is refreshed for the new response (its structure reused), not rebuilt."""
        try:
            y = np.asarray(y, dtype=float)
        except (TypeError, ValueError):
            raise MultilevelError(f"the new response must be numbers, one per row used ({self.nobs}), not "
                                  f"{type(y).__name__} {str(y)[:40]!r}") from None
        if y.shape != (self.nobs,):
            raise MultilevelError(f"the new response has shape {y.shape}; this model uses {self.nobs} rows")
        design = replace(self.design, y=y if self.design.trials is None else y / self.design.trials)
        if not self.gaussian:
            return Model.from_design(design, self.family)
        model = Model.from_design(design, self.family, with_response(self.cross_products, design))
        if "engine" in self.__dict__:
            model.__dict__["engine"] = self.engine.refresh(model.cross_products)
        return model

    @property
    def gaussian(self) -> bool:
        """Whether this is a linear mixed model (Gaussian family), fitted by the profiled ML/REML criterion."""
        return isinstance(self.family, Gaussian)

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
        """The design's sums; a Gaussian model's hold random slopes' covariates far from zero centred in their
        term (`scaling.random_columns`: its fits map the effects and covariances back, `LmmFit`)."""
        if not self.gaussian:
            return cross_products(self.design)
        return cross_products(self.design, design_scaling(self.design))

    @cached_property
    def engine(self) -> Engine:
        if not self.design.blocks:
            raise MultilevelError(
                "the formula has no random term such as '(1 | group)': this is a linear model, not a mixed one"
            )
        check_dense_size(self.design)
        return Engine(self.cross_products, [b.k for b in self.design.blocks], [b.m for b in self.design.blocks])

    def fit(self, method: str | None = None, prior: str | None = None, warn: bool = True, *, nAGQ: int | None = None,
            information: str | None = None, solver: str = "exact"):
        """Maximum-likelihood fit: ``method="REML"`` (default) or ``"ML"``; ``prior="zero-avoiding"``
        adds blme's default covariance prior (a penalised fit that never sits on the boundary).
        ``warn=False`` keeps convergence and boundary warnings in ``fit.warnings`` without raising them.
        Binomial, Poisson and negative-binomial models are fitted by ML (`multilevel.glmm.fit_glmm`: ``nAGQ``
        quadrature nodes, 1 = Laplace; ``information="observed" | "expected"``). ``solver="iterative"``: the
        APPROXIMATE solver for crossed terms with many levels (random slopes on the first term only) (`multilevel.iterative_lmm`; docs/scale.md)."""
        if solver not in ("exact", "iterative"):
            raise MultilevelError(f"solver must be 'exact' or 'iterative', not {solver!r}")
        if solver == "iterative":
            check_iterative(self, prior)
            return fit_iterative(self, checked_method(method or "REML"), warn)
        if self.gaussian:
            if nAGQ is not None or information is not None:
                raise MultilevelError("nAGQ= and information= apply to binomial, Poisson and negative-binomial models only")
            return fit_lmm(self, method=method or "REML", prior=prior, warn=warn)
        if (method is not None and str(method).upper() != "ML") or prior is not None:
            raise MultilevelError("a GLMM is fitted by maximum likelihood: method='REML' and prior= do not apply")
        return fit_glmm(self, 1 if nAGQ is None else nAGQ, information or "observed", warn)

    def sample(self, **kwargs):
        """Full Bayesian fit by MCMC; see `multilevel.bayes.sample` for the arguments."""
        if not isinstance(self.design, PartitionedDesign):  # (partitioned: the cross-products' scaling checked them)
            d = self.design
            check_range(np.column_stack([d.X, d.y]), [f"column '{n}'" for n in d.fixed_names] + ["the response"])
        return sample(self, **kwargs)

    def __repr__(self) -> str:
        return f"Model({str(self.formula)!r}, nobs={self.nobs})"

    def summary(self) -> str:
        return self.design.summary()
