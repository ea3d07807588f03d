"""`OccupancyFit`: a single-season occupancy model fitted by maximum likelihood, and the tables derived from it.

Coefficients are on the logit scale and named as unmarked's `coef()`: `psi((Intercept))`, `p(date)`.
"""

from __future__ import annotations

import copy
from functools import cached_property

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import expit

from .arguments import check_level
from .html_tables import result_html
from . import saving
from .kinds import Criteria, Frequentist, OccupancyResult
from .occupancy_gof import mackenzie_bailey
from .occupancy_likelihood import conditional_occupancy
from .occupancy_random import modes
from .optimize import OptimumInfo
from .summary import warning_lines


class OccupancyFit(Criteria, Frequentist, OccupancyResult):
    """Maximum-likelihood estimates, their covariance (inverse observed information) and per-site values;
    convergence (the optimiser's `info`), AIC and BIC (log of the number of sites) as the other fits'."""

    def __init__(self, model, params: np.ndarray, vcov: np.ndarray, loglik: float, info: OptimumInfo,
                 sigma: float | None = None, sigma_se: float = np.nan, n_agq: int = 0):
        self.model, self.params, self.vcov, self.loglik, self.info = model, params, vcov, loglik, info
        self.sigma, self.sigma_se, self.nAGQ = sigma, sigma_se, n_agq  # the random intercept's SD (None: no term)
        self.held: OccupancyFit | None = None  # the fit in the columns it was made in (`in_user_columns`)
        self.warnings: list[str] = []

    def in_user_columns(self, model, B: np.ndarray) -> OccupancyFit:
        """This fit of a held model (`Occupancy.held_model`) in the user's coefficients (B maps them), keeping itself
        as `held`: probabilities and predictions are formed of the held columns, which lose no digits to a
        covariate far from zero (the user's X beta sums terms of c times a slope)."""
        user = copy.copy(self)
        user.model, user.params, user.vcov, user.held = model, B @ self.params, B @ self.vcov @ B.T, self
        return user

    @property
    def _columns(self) -> OccupancyFit:
        """The fit whose model's columns and coefficients the probabilities are formed of."""
        return self.held if self.held is not None else self

    @cached_property
    def _modes(self) -> np.ndarray:
        """Conditional modes of the random intercept per group (empty without a term, zero at sigma 0)."""
        if self.model.random is None:
            return np.zeros(0)
        term, h = self.model.random[1], self._columns
        return modes(h.params, self.sigma, h.model.arrays, term)[0] if self.sigma > 0 else np.zeros(term.m)

    @property
    def _shifts(self) -> dict:
        """The random effects as per-site shifts of the psi or p logits, for `site_posterior`."""
        if self.model.random is None or self.sigma is None:  # no term, or the fit without it (a random fit's start)
            return {}
        term = self.model.random[1]
        return {f"shift_{term.part}": self._modes[term.codes]}

    @property
    def variance_components(self) -> pd.DataFrame:
        """The random intercept's SD and variance (and the SD's standard error), as lme4's VarCorr."""
        if self.model.random is None:
            return pd.DataFrame(columns=["part", "group", "term", "variance", "sd", "sd_std_error"])
        random, term = self.model.random
        return pd.DataFrame({"part": [term.part], "group": [random.group], "term": ["(Intercept)"], "variance": [self.sigma**2],
                             "sd": [self.sigma], "sd_std_error": [self.sigma_se]})

    @property
    def group_effects(self) -> pd.DataFrame:
        """Conditional modes of the random intercept per group level."""
        if self.model.random is None:
            return pd.DataFrame(columns=["group", "level", "estimate"])
        return pd.DataFrame({"group": self.model.random[0].group, "level": self.model.random_levels, "estimate": self._modes})

    @property
    def approximation(self) -> str:
        """How a random intercept was integrated out: 'Laplace' or 'adaptive quadrature, n nodes'."""
        return "Laplace" if self.nAGQ == 1 else f"adaptive quadrature, {self.nAGQ} nodes"

    @property
    def names(self) -> list[str]:
        return self.model.parameter_names

    @property
    def n_params(self) -> int:
        return len(self.params) + (self.sigma is not None)

    @property
    def nobs(self) -> int:
        """Number of surveys (visits made)."""
        return int(self.model.arrays.mask.sum())

    @property
    def n_independent(self) -> int:
        """Sites: the likelihood is a product over sites, not over surveys (AICcmodavg's sample size of unmarked fits)."""
        return len(self.model.sites)

    @property
    def message(self) -> str:
        return self.info.message

    @property
    def objective(self) -> float:
        """-2 log-likelihood."""
        return -2 * self.loglik

    @cached_property
    def fixed_effects(self) -> pd.DataFrame:
        """estimate, std_error, z_value, p_value per coefficient (Wald, as unmarked)."""
        se = np.sqrt(np.diag(self.vcov))
        z = self.params / se
        return pd.DataFrame({"estimate": self.params, "std_error": se, "z_value": z, "p_value": 2 * stats.norm.sf(np.abs(z))},
                            index=pd.Index(self.names, name="parameter"))

    @property
    def beta(self) -> np.ndarray:
        """Occupancy coefficients (logit scale)."""
        return self.params[: self.model.arrays.a]

    @property
    def alpha(self) -> np.ndarray:
        """Detection coefficients (logit scale)."""
        return self.params[self.model.arrays.a:]

    @property
    def psi(self) -> pd.Series:
        """Fitted occupancy probability per site (at the conditional modes of a random effect on psi)."""
        h = self._columns
        eta = h.model.arrays.X @ h.beta + self._shifts.get("shift_psi", 0.0)
        return pd.Series(expit(eta), index=self.model.sites, name="psi")

    @property
    def p(self) -> pd.DataFrame:
        """Fitted detection probability per survey: the model's rows (site, visit, y) with a column `p` (at the
        conditional modes of a random effect on p)."""
        h = self._columns
        eta = h.model.detection_matrix @ h.alpha
        if "shift_p" in self._shifts:
            eta = eta + self._shifts["shift_p"][self.model.survey_sites]
        return self.model.surveys.assign(p=expit(eta))

    @property
    def conditional_occupancy(self) -> pd.Series:
        """P(site occupied | its detections): 1 where the species was seen, below psi where it never was."""
        h = self._columns
        return pd.Series(conditional_occupancy(h.params, h.model.arrays, **self._shifts), index=self.model.sites,
                         name="P(z = 1 | y)")

    def n_occupied(self) -> pd.Series:
        """Finite-sample number of occupied sites among those surveyed: the sum of P(z = 1 | y) (unmarked's
        ranef/bup), its SD given the estimates (a sum of independent Bernoulli) and the sites seen occupied."""
        w = self.conditional_occupancy.to_numpy()
        return pd.Series({"estimate": w.sum(), "sd": np.sqrt(np.sum(w * (1 - w))), "observed": int(self.model.arrays.detected.sum())})

    def predict(self, newdata, part: str = "psi", prob: float = 0.95) -> pd.DataFrame:
        """psi (occupancy, from site covariates) or p (detection, from survey covariates) for new rows, with
        delta-method standard errors and a Wald interval made on the logit scale; a random effect is left out
        (new sites: the population value)."""
        prob = check_level(prob, "prob")
        h = self._columns
        M, cols = h.model.new_matrix(newdata, part)
        eta = M @ h.params[cols]
        se_eta = np.sqrt(np.einsum("ij,jk,ik->i", M, h.vcov[cols, cols], M))
        z = stats.norm.ppf((1 + prob) / 2)
        value = expit(eta)
        index = newdata.index if isinstance(newdata, pd.DataFrame) else None
        return pd.DataFrame({"estimate": value, "std_error": se_eta * value * (1 - value), "lower": expit(eta - z * se_eta),
                             "upper": expit(eta + z * se_eta)}, index=index)

    def goodness_of_fit(self, n_sim: int = 100, seed: int = 1) -> pd.Series:
        """MacKenzie-Bailey chi-square test by parametric bootstrap (`occupancy_gof`)."""
        return mackenzie_bailey(self, n_sim, seed)

    def save(self, path, force: bool = False):
        """Write the fit and the model's data to ``.json`` (reopen with `multilevel.load`)."""
        return saving.save(self, path, force=force)

    def summary(self) -> str:
        """Readable text: the two coefficient tables, log-likelihood, AIC, BIC, the sites and the warnings."""
        head, notes = self._overview()
        return "\n".join(head + [self.fixed_effects.round(4).to_string()] + notes + warning_lines(self.warnings))

    def _overview(self) -> tuple[list[str], list[str]]:
        """The summary's lines above the coefficient table and below it."""
        n = self.n_occupied()
        head = [
            "Single-season occupancy model fit by maximum likelihood (latent occupancy summed out)",
            f" occupancy: {self.model.occupancy_formula}   detection: {self.model.detection_formula}",
            f" sites {len(self.model.sites)}, surveys {self.nobs}, sites with a detection {int(n['observed'])}",
        ]
        notes = [f"random intercept {self.model.random[0]} on {self.model.random[1].part}: SD {self.sigma:.4f} "
                 f"({self.approximation})"] if self.sigma is not None else []
        notes += [f"log-likelihood {self.loglik:.4f}   AIC {self.aic:.4f}   BIC {self.bic:.4f}",
                  f"occupied sites (estimated): {n['estimate']:.1f} (sd {n['sd']:.2f})"]
        return head, notes

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        head, notes = self._overview()
        return result_html(head[0], head[1:], [("Coefficients", self.fixed_effects)], self.warnings, notes)
