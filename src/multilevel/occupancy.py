"""`Occupancy(occupancy=, detection=, data=, site=, response=)`: the single-season occupancy model on long data
(one row per site x visit). Occupancy (psi) is modelled from site covariates, detection (p) from survey
covariates, both on the logit scale with the package's formula and design machinery; the latent occupancy is
summed out exactly (`occupancy_likelihood`). See docs/occupancy.md.

>>> import multilevel as mlv
>>> df = mlv.datasets.load("pcru_occupancy")
>>> fit = mlv.Occupancy("~ 1", "~ MinAfterSunset_scaled + Temperature_scaled", df).fit()
>>> round(float(fit.psi.iloc[0]), 3)
0.823
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pandas as pd
import scipy.linalg as sla
from scipy import optimize

from .arguments import check_column_name, check_formula_text
from .data import as_frame, check_group_ids
from .design import apply_coding, learn_coding, used_columns
from .errors import MultilevelError, emit
from .formula import RandomTerm, parse
from .glmm import MAX_NAGQ
from .occupancy_bayes import SPOCCUPANCY_IG, SPOCCUPANCY_PRIOR_VARIANCE, sample
from .occupancy_fit import OccupancyFit
from .occupancy_posterior import OccupancyPosterior
from .occupancy_likelihood import OccupancyArrays, gradient_hessian, loglik
from .occupancy_random import RandomIntercept, marginal_loglik
from .optimize import OptimumInfo, bobyqa, finite_difference_checks, free_coordinates
from .optimize import gradient_hessian as fd_gradient_hessian
from .scaling import Scaling, precision_message

GRADIENT_TOL = 1e-6  # largest absolute score accepted at the optimum
BOUNDARY = 1e-6  # psi or p this close to 0 or 1 at every site or survey: the maximum is at infinity


def _formula(text: str, response: str, what: str):
    """`~ rhs` (or bare `rhs`) as a Formula with the response column on the left."""
    rhs = text.strip()
    rhs = rhs[1:] if rhs.startswith("~") else rhs
    if "~" in rhs:
        raise MultilevelError(f"the {what} formula '{text}' has a left-hand side: write it one-sided, e.g. "
                              f"'~ {rhs.split('~', 1)[1].strip()}'; the detections are the column response= ('{response}')")
    return parse(f"{response} ~ {rhs}")


def newton_polish(x: np.ndarray, arrays, steps: int = 5):
    """Newton steps on the analytic score from where trust-exact stopped, kept while the score shrinks: it can
    stop short ("a bad approximation caused failure to predict improvement", oven's ~1 ~1 at a score of 1.4e-6)
    when rounding of the log-likelihood hides the last gain. Returns x, the score and the Hessian there."""
    grad, H = gradient_hessian(x, arrays)
    for _ in range(steps):
        if not np.all(np.isfinite(H)) or not np.all(np.linalg.eigvalsh(-H) > 0):
            break
        x_new = x - np.linalg.solve(H, grad)
        grad_new, H_new = gradient_hessian(x_new, arrays)
        if not np.max(np.abs(grad_new)) < np.max(np.abs(grad)):
            break
        x, grad, H = x_new, grad_new, H_new
    return x, grad, H


class Occupancy:
    """A single-season occupancy model: `fit()` by maximum likelihood, occupancy summed out exactly."""

    def __init__(self, occupancy: str, detection: str, data, site: str = "site", response: str = "y"):
        frame = as_frame(data)
        occupancy, detection = (check_formula_text(occupancy, "occupancy", "~ forest"),
                                check_formula_text(detection, "detection", "~ date"))
        for column, what in ((check_column_name(site, "site", "site"), "site"),
                             (check_column_name(response, "response", "y"), "response")):
            if column not in frame.columns:
                raise MultilevelError(f"the {what} column '{column}' is not in the data")
        self.occupancy_formula, self.detection_formula = occupancy, detection
        self.scalings: tuple[Scaling, Scaling] | None = None  # a held model's (psi, p) columns: `held_model`
        self.site, self.response = site, response
        occ, det = _formula(occupancy, response, "occupancy"), _formula(detection, response, "detection")
        if frame[site].isna().any():
            raise MultilevelError(f"the site column '{site}' is missing on row {int(np.flatnonzero(frame[site].isna())[0])}")
        check_group_ids(frame[site], site)  # big ids stored as floats may have merged sites: said before they merge
        frame = frame.assign(**{site: frame[site].astype(str)})
        if pd.api.types.is_bool_dtype(frame[response]):  # True/False detections (missing: a visit not made)
            frame = frame.assign(**{response: frame[response].map({True: 1.0, False: 0.0}).astype(float)})
        visited = _visited(frame, site, response)
        rows = frame[visited]
        _check_detections(rows[response], response)
        occ_columns, det_columns = used_columns(occ, rows, None, None), used_columns(det, rows, None, None)
        _check_site_constant(rows, [c for c in occ_columns if c != response], site)
        _check_survey_complete(rows, [c for c in det_columns if c != response], site)
        codes, self.sites = pd.factorize(rows[site], sort=False)
        slots = rows.groupby(codes).cumcount().to_numpy()
        site_rows = rows.groupby(codes, sort=True).head(1)
        self.occupancy_coding = learn_coding(occ, site_rows)
        self.detection_coding = learn_coding(det, rows)
        occ_design, det_design = apply_coding(self.occupancy_coding, site_rows), apply_coding(self.detection_coding, rows)
        X, self.detection_matrix = occ_design.X, det_design.X
        self.random = _random_intercept(occ_design, det_design, codes, len(self.sites))
        S, J, b = len(self.sites), slots.max() + 1, self.detection_matrix.shape[1]
        V, Y, mask = np.zeros((S, J, b)), np.zeros((S, J)), np.zeros((S, J))
        V[codes, slots], Y[codes, slots], mask[codes, slots] = self.detection_matrix, rows[response].to_numpy(float), 1.0
        self.arrays = OccupancyArrays(X, V, Y, mask)
        self.survey_sites, self.survey_slots = codes, slots
        self.site_frame, self.survey_frame = site_rows, rows  # the rows each part was coded on
        visit = ["visit"] if "visit" in rows.columns else []
        self.data = rows[list(dict.fromkeys([site, response, *visit, *occ_columns, *det_columns]))]  # what a saved result keeps
        self.random_levels = [*occ_design.blocks, *det_design.blocks][0].levels if self.random else None
        self.surveys = rows[[c for c in (site, "visit", response) if c in rows.columns]].reset_index(drop=True)
        self.parameter_names = [f"psi({n})" for n in self.occupancy_coding.fixed_names] + [
            f"p({n})" for n in self.detection_coding.fixed_names]

    @property
    def sd_name(self) -> str | None:
        """The random intercept's SD as a parameter name, e.g. `p(sd_route)` (None without one)."""
        return f"{self.random[1].part}(sd_{self.random[0].group})" if self.random else None

    def with_response(self, y) -> Occupancy:
        """The same model with new detections, one per survey in the model's row order (`surveys`): refits
        (bootstrap, goodness of fit) go through it."""
        try:
            y = np.asarray(y, dtype=float)
        except (TypeError, ValueError):
            y = np.full(1, np.nan)  # refused below, in our words
        if y.shape != (len(self.survey_sites),) or not np.isin(y, (0, 1)).all():
            raise MultilevelError(f"with_response needs {len(self.survey_sites)} detections, each 0 or 1")
        new = copy.copy(self)
        Y = np.zeros_like(self.arrays.Y)
        Y[self.survey_sites, self.survey_slots] = y
        new.arrays = replace(self.arrays, Y=Y)
        new.surveys = self.surveys.assign(**{self.response: y})
        return new

    def loglik(self, params) -> float:
        """The log-likelihood at coefficients in `parameter_names` order."""
        return loglik(np.asarray(params, float), self.arrays)

    def fit(self, n_agq: int = 1) -> OccupancyFit:
        """Maximum likelihood: with no random effects by Newton trust region on the analytic gradient and Hessian
        (SEs from it); with a random intercept by BOBYQA on the Laplace (`n_agq=1`) or adaptive Gauss-Hermite
        (`n_agq` nodes) approximation, SEs from its finite-difference Hessian."""
        if isinstance(n_agq, bool) or not isinstance(n_agq, (int, np.integer)) or not 1 <= n_agq <= MAX_NAGQ:
            raise MultilevelError(f"n_agq must be an integer >= 1 (1 = Laplace) and at most {MAX_NAGQ} (as lme4's "
                                  f"quadrature; more nodes underflow to a log-likelihood of -inf), got {n_agq!r}")
        held, B, lost = self.held_model()
        fit = held._fit_fixed()
        fit = fit if self.random is None else held._fit_random(fit, n_agq)
        if B is not None:  # the user's coefficients and their covariance from the held columns'
            fit = fit.in_user_columns(self, B)
        fit.warnings.extend(precision_message(c) for c in lost)
        emit(fit.warnings)
        return fit

    def held_model(self, scaled: bool = True) -> tuple[Occupancy, np.ndarray | None, list[str]]:
        """The model on its columns as `Scaling` holds them (far from zero: centred where an intercept absorbs it;
        scaled by powers of two unless `scaled=False`), and B mapping those coefficients to the user's (None when
        nothing is held otherwise: the model itself), with the columns whose stored values lost digits. Fitted on the
        user's x + 1e9 the optimiser sees an intercept and a slope correlated within a hair of -1 and stops far from
        the maximum (and a sampler takes steps of the intercept's posterior width, 1e9 times too wide for the slope)."""
        occ = Scaling.learn(self.arrays.X, np.zeros(len(self.arrays.X)), list(self.occupancy_coding.fixed_names),
                            scaled=scaled)
        det = Scaling.learn(self.detection_matrix, np.zeros(len(self.detection_matrix)),
                            list(self.detection_coding.fixed_names), scaled=scaled)
        lost = [*occ.lost, *det.lost]
        if not any(np.any(s.centre) or np.any(s.scale != 1) for s in (occ, det)):
            return self, None, lost
        X = occ.apply(np.column_stack([self.arrays.X, np.zeros(len(self.arrays.X))]))[:, :-1]
        V = np.zeros_like(self.arrays.V)
        held = copy.copy(self)
        held.detection_matrix = det.apply(np.column_stack([self.detection_matrix, np.zeros(len(self.detection_matrix))]))[:, :-1]
        V[self.survey_sites, self.survey_slots] = held.detection_matrix
        held.arrays, held.scalings = replace(self.arrays, X=X, V=V), (occ, det)
        return held, sla.block_diag(occ.coefficient_map, det.coefficient_map), lost

    def _fit_fixed(self) -> OccupancyFit:
        def objective(x):
            return -self.loglik(x)

        def jac(x):
            return -gradient_hessian(x, self.arrays)[0]

        def hess(x):
            return -gradient_hessian(x, self.arrays)[1]

        start = np.zeros(len(self.parameter_names))
        res = optimize.minimize(objective, start, jac=jac, hess=hess, method="trust-exact", options={"gtol": 1e-10})
        x, grad, H = newton_polish(res.x, self.arrays)
        proper = bool(np.max(np.abs(grad)) < GRADIENT_TOL) and bool(np.all(np.linalg.eigvalsh(-H) > 0))
        vcov = np.linalg.inv(-H) if proper else np.full_like(H, np.nan)
        info = OptimumInfo(x, -self.loglik(x), int(res.nfev), str(res.message))
        fit = OccupancyFit(self, x, vcov, -info.fun, info)
        at_one = [name for name, values in (("psi", fit.psi), ("p", fit.p["p"])) if np.all(values > 1 - BOUNDARY)]
        at_zero = [name for name, values in (("psi", fit.psi), ("p", fit.p["p"])) if np.all(values < BOUNDARY)]
        for part in at_one:  # the Hessian's curvature there is rounding: no SE (the others are given psi or p = 1)
            cut = slice(0, self.arrays.a) if part == "psi" else slice(self.arrays.a, None)
            fit.vcov[cut, :], fit.vcov[:, cut] = np.nan, np.nan
        if not proper or at_one or at_zero:  # not converged: the optimiser's report says why
            info.warnings.append(boundary_message(at_one) if at_one and not at_zero else
                                 f"no proper maximum: {' and '.join(at_zero) or 'the estimates'} at a boundary (0 "
                                 "everywhere); estimates and SEs are not usable")
        fit.warnings.extend(info.warnings)
        return fit

    def sample(self, chains: int = 4, draws: int = 1000, warmup: int = 1000, seed: int = 1, cores: int = 1,
               prior_variance: float = SPOCCUPANCY_PRIOR_VARIANCE, sd_prior: tuple[float, float] = SPOCCUPANCY_IG,
               progress: bool = False, sampler: str = "nuts") -> OccupancyPosterior:
        """NUTS with the occupancy summed out (`sampler="nuts"`) or Pólya-Gamma Gibbs (`"gibbs"`, spOccupancy's);
        normal(0, variance `prior_variance`) priors on all coefficients and inverse-gamma `sd_prior` (shape, scale)
        on a random intercept's variance (spOccupancy's defaults). A covariate averaging more than its SD from zero
        is centred (as `fit()` centres it): the intercept's prior is then on the intercept at its mean (brms's
        convention), so a shift of the covariate changes no posterior (docs/occupancy.md)."""
        return sample(self, chains, draws, warmup, seed, cores, prior_variance, sd_prior, progress, sampler)

    def marginal_loglik(self, params, sigma: float, n_agq: int = 1) -> float:
        """The log-likelihood with the random intercept (SD `sigma`) integrated out; the plain one at sigma 0."""
        if sigma <= 0:
            return self.loglik(params)
        return marginal_loglik(np.asarray(params, float), sigma, self.arrays, self.random[1], n_agq)

    def _fit_random(self, start: OccupancyFit, n_agq: int) -> OccupancyFit:
        def deviance(x):
            return -2 * self.marginal_loglik(x[:-1], x[-1], n_agq)

        lower = np.r_[np.full(len(start.params), -np.inf), 0.0]
        info = finite_difference_checks(deviance, bobyqa(deviance, np.r_[start.params, 1.0], lower), lower)
        free = free_coordinates(info.x, lower)
        _, H = fd_gradient_hessian(deviance, info.x, free)
        idx = np.flatnonzero(free)
        cov = np.full((len(info.x), len(info.x)), np.nan)
        try:
            cov[np.ix_(idx, idx)] = 2 * np.linalg.inv(H[np.ix_(idx, idx)])
        except np.linalg.LinAlgError:
            pass
        k = len(start.params)
        fit = OccupancyFit(self, info.x[:k], cov[:k, :k], -info.fun / 2, info, sigma=info.x[k], sigma_se=np.sqrt(cov[k, k]),
                           n_agq=n_agq)
        fit.warnings.extend(info.warnings)
        return fit

    def new_matrix(self, newdata, part: str) -> tuple[np.ndarray, slice]:
        """The design matrix of new rows for psi or p, and the slice of the coefficients it multiplies."""
        if part not in ("psi", "p"):
            raise MultilevelError(f"part must be 'psi' or 'p', not {part!r}")
        a = self.arrays.a
        coding, cols = (self.occupancy_coding, slice(0, a)) if part == "psi" else (self.detection_coding, slice(a, None))
        X = apply_coding(coding, as_frame(newdata), new=True).X
        if self.scalings is not None:  # a held model's columns (`held_model`)
            X = self.scalings[part == "p"].apply(np.column_stack([X, np.zeros(len(X))]))[:, :-1]
        return X, cols


def boundary_message(at_one: list[str]) -> str:
    """Plain words for a maximum at psi = 1 (every site had a detection) and/or p = 1 (every visit to those sites
    detected the species): a boundary fit, as unmarked's (a huge logit with a huge SE), not a failure."""
    said = {"psi": "every site had a detection, so the occupancy probability psi", "p": "every visit detected the "
            "species, so the detection probability p"}
    return (f"boundary fit: {' and '.join(said[n] for n in at_one)} {'are' if len(at_one) > 1 else 'is'} estimated at "
            f"1, the edge of what is possible: the maximum lies at an infinite logit, so the {' and '.join(at_one)} "
            f"coefficients are not usable and have no SE (report {' = 1, '.join(at_one)} = 1 from these data). For an estimate inside (0, 1) with an interval, use "
            "sample(), whose prior keeps it off the edge; or survey sites where the species may be missed.")


def _check_detections(y: pd.Series, response: str) -> None:
    """Refuse data without a single detection: occupancy and detection are then not identifiable."""
    if not (y == 1).any():
        raise MultilevelError(
            f"no visit detected the species (every '{response}' is 0): occupancy (psi) and detection (p) cannot be told "
            "apart, since 'absent' and 'present but missed' explain the data equally (every psi x p near 0 fits), so "
            f"neither can be estimated. Check that '{response}' holds the detections (1 = detected); if the species was "
            "truly never detected, report the naive occupancy 0 and the survey effort (sites, visits), or fit these "
            "sites together with data where it was detected.")


def _visited(frame: pd.DataFrame, site: str, response: str) -> np.ndarray:
    """Rows of visits made (response present); refuse responses other than 0/1 and sites never visited."""
    y = pd.to_numeric(frame[response], errors="coerce")
    visited = frame[response].notna().to_numpy()
    bad = visited & ~np.isin(y, (0, 1))
    if bad.any():
        i = np.flatnonzero(bad)[0]
        value = frame[response].iloc[i]
        raise MultilevelError(f"detections '{response}' must be 0 or 1 (missing for a visit not made); "
                              f"site {frame[site].iloc[i]} has {value.item() if isinstance(value, np.generic) else value!r}")
    never = frame.groupby(site, sort=False)[response].count()
    never = never[never == 0]
    if len(never):
        raise MultilevelError(f"site {never.index[0]} has no visits (every '{response}' missing): drop it or give its surveys")
    return visited


def _check_site_constant(rows: pd.DataFrame, columns: list[str], site: str) -> None:
    """Occupancy covariates describe a site: they must be present and the same on all of its rows."""
    for c in columns:
        if c == site:
            continue
        if rows[c].isna().any():
            raise MultilevelError(f"the site covariate '{c}' is missing at site {rows[site][rows[c].isna()].iloc[0]}")
        counts = rows.groupby(site, sort=False, observed=True)[c].nunique()
        if (counts > 1).any():
            raise MultilevelError(f"the site covariate '{c}' varies within site {counts.index[counts > 1][0]}: "
                                  "occupancy covariates must be constant within a site (survey covariates go in the detection formula)")


def _check_survey_complete(rows: pd.DataFrame, columns: list[str], site: str) -> None:
    """Detection covariates must be present on every visit made."""
    for c in columns:
        missing = rows[c].isna().to_numpy()
        if missing.any():
            row = rows.iloc[np.flatnonzero(missing)[0]]
            visit = f", visit {row['visit']}" if "visit" in rows.columns else ""
            raise MultilevelError(f"the detection covariate '{c}' is missing on a visit made (site {row[site]}{visit}): "
                                  "give it, or mark the visit as not made with a missing response")


def _random_intercept(occ, det, codes: np.ndarray, n_sites: int) -> tuple[RandomTerm, RandomIntercept] | None:
    """The model's random intercept, (its term, per-site group codes), or None; more than one term, a
    term with slopes, or groups that do not contain whole sites are refused."""
    blocks = [("psi", b) for b in occ.blocks] + [("p", b) for b in det.blocks]
    if not blocks:
        return None
    if len(blocks) > 1 or blocks[0][1].k > 1:
        raise MultilevelError("occupancy models take one random intercept, (1 | group), in one of the two formulas; "
                              f"got {', '.join(f'{part}: {b.term}' for part, b in blocks)}")
    part, block = blocks[0]
    site_codes = block.codes
    if part == "p":  # rows -> sites: a group must hold whole sites
        site_codes = np.full(n_sites, -1)
        site_codes[codes] = block.codes
        if np.any(site_codes[codes] != block.codes):
            raise MultilevelError(f"the detection random effect {block.term} varies within a site: only groups of whole "
                                  "sites (sites nested in groups) are supported")
    return block.term, RandomIntercept(part, site_codes, block.m)
