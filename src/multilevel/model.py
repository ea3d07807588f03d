"""`Model`: a formula on data, the entry point to every fit.

>>> import multilevel as mlv
>>> model = mlv.Model("Reaction ~ 1 + Days + (1 + Days | Subject)", mlv.datasets.load("sleepstudy"))
>>> model.nobs, model.fixed_names, model.n_levels
(180, ['(Intercept)', 'Days'], {'Subject': 18})
"""

from __future__ import annotations

from functools import cached_property

from . import families
from .crossprod import CrossProducts, cross_products
from .design import Design, build_design
from .engine import Engine
from .errors import MultilevelError


class Model:
    """A linear mixed model: formula (lme4/brms syntax) evaluated on data.

    Parameters
    ----------
    formula : str
        e.g. ``"Reaction ~ Days + (Days | Subject)"``.
    data : DataFrame-like
        pandas or polars DataFrame, pyarrow Table, or dict of columns.
    weights, offset : column name or array, optional
        Prior weights (residual variance sigma^2 / w; binomial: trials of a proportion) and a known offset.
    family : str or `multilevel.families.Family`, optional
        ``"binomial"``, ``"binomial(probit)"``, ``"poisson"``, ``"negbinomial"``...; Gaussian by default.
    """

    def __init__(self, formula: str, data, weights=None, offset=None, family=None):
        from .glmm import prepare_data, validate

        self.family = families.parse(family)
        self.design: Design = build_design(formula, prepare_data(formula, data, self.family), weights=weights,
                                           offset=offset, residual=isinstance(self.family, families.Gaussian))
        validate(self.design, self.family)

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
        return Engine(self.cross_products, [b.k for b in self.design.blocks], [b.m for b in self.design.blocks])

    def fit(self, method: str | None = None, prior: str | None = None, **glmm_options):
        """Maximum-likelihood fit: ``method="REML"`` (default) or ``"ML"``; ``prior="zero-avoiding"``
        adds blme's default covariance prior (a penalised fit that never sits on the boundary).
        Non-Gaussian families are fitted by ML (`multilevel.glmm.fit_glmm`: ``nAGQ=``, ``information=``)."""
        if not isinstance(self.family, families.Gaussian):
            from .glmm import fit_glmm

            if method not in (None, "ML") or prior is not None:
                raise MultilevelError("a GLMM is fitted by maximum likelihood: method='REML' and prior= do not apply")
            return fit_glmm(self, **glmm_options)
        if glmm_options:
            raise MultilevelError(f"{sorted(glmm_options)} apply to non-Gaussian families only")
        from .lmm import fit_lmm

        return fit_lmm(self, method=method or "REML", prior=prior)

    def sample(self, **kwargs):
        """Full Bayesian fit by MCMC; see `multilevel.bayes.sample` for the arguments."""
        from .bayes import sample

        return sample(self, **kwargs)

    def __repr__(self) -> str:
        return f"Model({str(self.formula)!r}, nobs={self.nobs})"

    def summary(self) -> str:
        return self.design.summary()
