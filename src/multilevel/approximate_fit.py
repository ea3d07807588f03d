"""`ApproximateLmmFit`: an ML/REML fit by the APPROXIMATE iterative solver (``fit(solver="iterative")``,
`iterative_lmm`), labelled so in every face it shows, with the estimated error of its criterion.

It holds what the iterative solver computes exactly up to rounding at its theta (sigma, beta and its covariance,
the conditional modes) and the criterion, whose log-determinant is a stochastic estimate. What needs the
conditional covariances or refits of the exact criterion (profile intervals, Satterthwaite df, ICC/R^2, the
bootstrap, saving) is refused, naming the exact solver on a subsample.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd
from scipy import stats

from . import predict as _predict
from .arguments import check_flag, check_level
from .components import boundary_parameters, variance_table
from .errors import MultilevelError
from .kinds import Criteria, OfModel
from .optimize import OptimumInfo
from .partitioned import PartitionedDesign
from .summary import approximate_html, approximate_summary

REFUSED = ("satterthwaite_df", "conditional_covariances", "group_effects", "icc", "r2", "variance_decomposition",
           "pooling", "ppc", "bootstrap", "save", "simulate", "deviance")


class ApproximateLmmFit(Criteria, OfModel):
    """An ML/REML fit whose criterion's log-determinant is estimated (stochastic Lanczos quadrature)."""

    def __init__(self, model, method: str, info: OptimumInfo, factors: list[np.ndarray], sigma: float, held_beta: np.ndarray,
                 beta_covariance: np.ndarray, held_b: list[np.ndarray], objective: float, objective_error: float,
                 approximation: str, warnings: list[str]):
        self.model, self.method, self.info, self.factors = model, method, info, factors
        self.reml, self.prior = method == "REML", None
        self.theta = info.x
        self.held = model.cross_products.held
        self.held_beta, self.held_b = held_beta, held_b  # of the columns as the cross-products hold them: fitted values use these
        self.sigma, self.beta, self._b = sigma, self.held.coefficients(held_beta), self.held.random_effects(held_b)
        self.objective, self.objective_error = objective, objective_error
        self.approximation = approximation
        self.warnings = warnings
        names = list(self.design.fixed_names)
        self.vcov = pd.DataFrame(beta_covariance, index=names, columns=names)

    def __getattr__(self, name: str):
        if name in REFUSED:
            raise MultilevelError(f"fit.{name} needs the exact criterion or the conditional covariances, which the "
                                  "approximate solver (solver='iterative') does not form: fit a subsample (or the whole "
                                  "data where its dense block fits) with the exact solver, model.fit()")
        raise AttributeError(name)

    @property
    def loglik(self) -> float:
        """Log-likelihood (REML's for REML fits), approximate: within `objective_error` / 2."""
        return -0.5 * self.objective

    @property
    def n_params(self) -> int:
        return len(self.beta) + len(self.theta) + 1

    @property
    def is_singular(self) -> bool:
        return bool(boundary_parameters(self.design.blocks, self.factors))

    @cached_property
    def fixed_effects(self) -> pd.DataFrame:
        """Estimates, standard errors, Wald z statistics (df infinite) and p-values, Wald 95 % CIs."""
        se = np.sqrt(np.diag(self.vcov.to_numpy()))
        t = self.beta / se
        z = stats.norm.ppf(0.975)
        return pd.DataFrame({"estimate": self.beta, "std_error": se, "t_value": t, "df": np.inf,
                             "p_value": 2 * stats.norm.sf(np.abs(t)), "ci_lower": self.beta - z * se,
                             "ci_upper": self.beta + z * se}, index=pd.Index(self.design.fixed_names, name="term"))

    @cached_property
    def variance_components(self) -> pd.DataFrame:
        """Variances, SDs and correlations of each random term, then the residual (as lme4's VarCorr): sigma^2 M T T' M'
        (M undoes the centring of a far random-slope covariate, identity otherwise)."""
        held = self.model.cross_products.held
        maps = [held.random_map(i, b.k) for i, b in enumerate(self.design.blocks)]
        covariances = [self.sigma**2 * (M @ T) @ (M @ T).T for M, T in zip(maps, self.factors)]
        return variance_table(self.design.blocks, covariances, self.sigma)

    @property
    def random_effects(self) -> list[np.ndarray]:
        """Conditional modes per term as (levels x k) arrays."""
        return [b.copy() for b in self._b]

    def fitted(self):
        """Fitted values X beta + Z b for the rows used (partitioned data: a lazy Dask series)."""
        return self._linear_predictor(self.held_b)

    def _linear_predictor(self, held_b: list[np.ndarray] | None):
        """On the model's rows, formed of the held columns (`predict.held_predictor`), as `LmmFit`'s."""
        if isinstance(self.design, PartitionedDesign):
            return self.design.fitted(self.held_beta, held_b, self.held)
        return _predict.held_predictor(self.design, self.held, self.held_beta, held_b)

    def predict(self, new_data=None, include_groups: bool = True, offset=None):
        """Predictions X beta + Z b for new rows (the fitted rows if None), as `LmmFit.predict`."""
        b = self.held_b if check_flag(include_groups, "include_groups") else None
        if new_data is None:
            return self._linear_predictor(b)
        return _predict.predict_new(self.design, self.held_beta, b, new_data, offset, held=self.held)

    def confint(self, method: str = "Wald", level: float = 0.95) -> pd.DataFrame:
        """Wald intervals for the fixed effects (profile intervals need the exact criterion: refused)."""
        if method != "Wald":
            raise MultilevelError(f"confint(method={method!r}) needs the exact criterion; the approximate solver gives "
                                  "Wald intervals for the fixed effects only, confint('Wald'); profile intervals need the exact solver, "
                                  "model.fit()")
        se = np.sqrt(np.diag(self.vcov.to_numpy()))
        z = stats.norm.ppf(0.5 + check_level(level, "level") / 2)
        return pd.DataFrame({"lower": self.beta - z * se, "upper": self.beta + z * se}, index=self.design.fixed_names)

    def summary(self) -> str:
        return approximate_summary(self)

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        return approximate_html(self)
