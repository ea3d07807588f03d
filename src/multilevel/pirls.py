"""Penalised iteratively reweighted least squares (PIRLS) on the blocked engine, and the Laplace objective.

At covariance parameters theta (and fixed effects beta, or with beta found jointly) the conditional modes u of
the spherical random effects (b = Lambda u) maximise log f(y | u) - |u|^2 / 2. Each Newton step is a
penalised weighted least-squares problem with the observed information as weights and a working response:
exactly the engine's system, so one engine factorisation per step (Bates et al. 2015; MixedModels.jl's GLMM
holds an LMM as its working model in the same way). The steps are taken to convergence (Newton, quadratic), so
the objective below is the exact Laplace approximation, not lme4's value at a not-quite-converged mode:

    -2 log L(theta, beta) ~ -2 log f(y | u-hat) + |u-hat|^2 + log det(Lambda' Z' W Z Lambda + I),

W the observed information at u-hat (the Laplace approximation proper, as TMB / glmmTMB) or, as lme4 for
non-canonical links, the expected (Fisher) information.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from .crossprod import Reweighting
from .design import Design
from .engine import Engine, Factor, theta_to_T
from .errors import MultilevelError
from .families import Family
from .newton_modes import STEP_TOL, iterate
from .predict import random_part

INFORMATION_KINDS = ("observed", "expected")
TINY = np.finfo(float).tiny  # the smallest weight (a zero information would make the system singular)
WEIGHT_STEP = 1e-5  # central-difference step in eta of the weights' derivative of a non-canonical link


@dataclass
class Mode:
    """The conditional modes at one (theta, beta) and what the Laplace objective is made of; the engine and its
    factor with the information weights at the modes are built when first asked for (`system`)."""

    theta: np.ndarray
    beta: np.ndarray
    u: list[np.ndarray]  # spherical modes per term, (m, k)
    eta: np.ndarray  # linear predictor at the modes, offset included
    T: list[np.ndarray]  # each term's relative factor at theta
    minus2_cond_loglik: float  # -2 log f(y | u-hat)
    penalty: float  # |u-hat|^2
    system: Callable[[], tuple[Engine, Factor]]

    @cached_property
    def _built(self) -> tuple[Engine, Factor]:
        return self.system()

    @property
    def engine(self) -> Engine:
        return self._built[0]

    @property
    def factor(self) -> Factor:
        return self._built[1]

    @property
    def logdet(self) -> float:
        """log det(Lambda' Z' W Z Lambda + I)."""
        return self.factor.ldL2

    @property
    def laplace(self) -> float:
        """The Laplace approximation to -2 log-likelihood."""
        return self.minus2_cond_loglik + self.penalty + self.logdet

    @property
    def b(self) -> list[np.ndarray]:
        """Random effects on the data scale, b = Lambda u, per term."""
        return [u @ T.T for u, T in zip(self.u, self.T)]


def start_beta(design: Design, family: Family, offset: np.ndarray) -> np.ndarray:
    """glm's start: least squares of link(mustart) - offset on X, so that an offset or an intercept far from 0 (a
    rare outcome, log exposure in small units) starts PIRLS near its answer (from beta = 0, eta = offset + 5 already
    stopped step halving)."""
    if not design.p:
        return np.zeros(0)
    target = family.link.linkfun(family.start_mu(design.y, design.family_weights)) - offset
    return np.linalg.lstsq(design.X, target, rcond=None)[0]


class Pirls:
    """PIRLS for one design and family: modes and the Laplace objective as functions of theta and beta.

    Keeps the last modes as the start of the next call (as lme4): an optimiser's neighbouring points then need
    two or three Newton steps.
    """

    def __init__(self, design: Design, family: Family, information: str = "observed"):
        if information not in INFORMATION_KINDS:
            raise MultilevelError(f"information must be 'observed' or 'expected', not {information!r}")
        self.design, self.family, self.information = design, family, information
        self.y = design.y
        self.prior_weights = design.family_weights
        self.offset = np.zeros(design.nobs) if design.offset is None else design.offset
        self.ks = [b.k for b in design.blocks]
        self.ms = [b.m for b in design.blocks]
        sizes = np.cumsum([0] + [k * (k + 1) // 2 for k in self.ks])
        self.theta_slices = [slice(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        self._engines: dict[bool, Engine] = {}  # the last engine of each system: the next one refreshes its values
        self.u = [np.zeros((m, k)) for m, k in zip(self.ms, self.ks)]
        self.beta_start = start_beta(design, family, self.offset)  # glm's start, also where a failed warm start retries
        self.beta = self.beta_start.copy()
        self._normaliser: tuple = (None, 0.0)

    @cached_property
    def _systems(self) -> dict[bool, Reweighting]:
        """The reweighted cross-products in u alone and in (beta, u): built when the engine's PIRLS first needs them
        (the vectorised mode finders never do)."""
        design = self.design
        spherical = replace(design, X=np.empty((design.nobs, 0)), offset=None, se=None)
        return {False: Reweighting(spherical), True: Reweighting(replace(design, offset=None, se=None))}

    # ------------------------------------------------------------------ pieces
    def factors(self, theta: np.ndarray) -> list[np.ndarray]:
        """Each term's relative factor T from theta."""
        return [theta_to_T(theta[sl], k) for k, sl in zip(self.ks, self.theta_slices)]

    def eta(self, theta: np.ndarray, beta: np.ndarray, u: list[np.ndarray]) -> np.ndarray:
        """X beta + Z Lambda u + offset."""
        b = [uu @ T.T for uu, T in zip(u, self.factors(theta))]
        return self.design.X @ beta + self.offset + random_part(self.design, b)

    def minus2_loglik(self, eta: np.ndarray, family: Family) -> float:
        """-2 log f(y | eta), summed over rows (the terms free of eta summed once per family)."""
        kernel = float(np.sum(family.kernel_at(self.y, eta, self.prior_weights)))
        return -2.0 * (kernel + self.normaliser(family))

    def normaliser(self, family: Family) -> float:
        """The rows' log-likelihood terms free of eta, summed (kept for the last family asked)."""
        if self._normaliser[0] is not family and self._normaliser[0] != family:
            self._normaliser = (family, float(np.sum(family.log_normaliser(self.y, self.prior_weights))))
        return self._normaliser[1]

    def weights(self, eta: np.ndarray, family: Family, kind: str) -> np.ndarray:
        """Observed or expected information in eta; the expected where the observed is not positive."""
        return self._positive(family.information(self.y, eta, self.prior_weights, kind), eta, family, kind)

    def weights_slope(self, eta: np.ndarray, family: Family, kind: str) -> np.ndarray:
        """d `weights` / d eta per row: exact for a canonical link and the negative binomial, else central differences
        (error ~1e-10)."""
        slope = family.information_slope(self.y, eta, self.prior_weights, kind)
        if slope is not None:
            return slope
        return (self.weights(eta + WEIGHT_STEP, family, kind) - self.weights(eta - WEIGHT_STEP, family, kind)) / (2 * WEIGHT_STEP)

    def score_and_weights(self, eta: np.ndarray, family: Family, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """The score and `weights` in eta, from one evaluation of the link."""
        score, w = family.score_and_information(self.y, eta, self.prior_weights, kind)
        return score, self._positive(w, eta, family, kind)

    def evaluation(self, eta: np.ndarray, family: Family) -> tuple[float, np.ndarray, np.ndarray]:
        """`minus2_loglik`, the score and the observed `weights` at eta, from one evaluation of the link."""
        kernel, score, w = family.kernel_score_information(self.y, eta, self.prior_weights, "observed")
        return -2.0 * (float(np.add.reduce(kernel)) + self.normaliser(family)), score, self._positive(w, eta, family, "observed")

    def _positive(self, w: np.ndarray, eta: np.ndarray, family: Family, kind: str) -> np.ndarray:
        if kind == "observed" and w.size and not np.minimum.reduce(w, axis=None) > 0:  # (NaN: not positive either)
            w = np.where(w > 0, w, family.expected_information(eta, self.prior_weights))
        return np.maximum(w, TINY)

    def loglik_size_partial(self, eta: np.ndarray, family: Family) -> np.ndarray:
        """d log f(y | eta) / d log(size) at fixed eta, per row (eta (n,) or (n, K)): the negative binomial's exact
        partial, for exact gradients' last coordinate without re-running PIRLS."""
        shape = (-1,) + (1,) * (np.ndim(eta) - 1)
        return family.loglik_size_partial(self.y.reshape(shape), eta, self.prior_weights.reshape(shape))

    def determinant_kind(self, family: Family) -> str:
        """The information the Laplace log-determinant uses: lme4's expected one for a non-canonical link when asked
        (information="expected"), else the observed one."""
        return "expected" if self.information == "expected" and not family.canonical else "observed"

    def size_partials(self, eta: np.ndarray, family: Family, kind: str):
        """Per row, d/d log(size) at fixed eta of the log-likelihood, the score and the `kind` weights."""
        return family.size_partials(self.y, eta, self.prior_weights, kind)

    def engine(self, eta: np.ndarray, fixed: np.ndarray, family: Family, kind: str, joint: bool) -> Engine:
        """The penalised weighted least-squares problem at eta in u (and beta when joint): information weights of
        `kind` and the working response z = eta - fixed + score / w (`fixed`: the offset, plus X beta unless joint)."""
        score, w = self.score_and_weights(eta, family, kind)
        working = eta - fixed + score / w
        cp = self._systems[joint].at(w, working)
        base = self._engines.get(joint)
        engine = Engine(cp, self.ks, self.ms) if base is None else base.refresh(cp)
        self._engines[joint] = engine  # a refresh that needed a new pattern passes it on
        return engine

    # ------------------------------------------------------------------ the iteration
    def mode(self, theta: np.ndarray, beta: np.ndarray | None = None, family: Family | None = None) -> Mode:
        """Conditional modes at theta and beta; with beta None, beta is found jointly (lme4's nAGQ = 0)."""
        theta = np.asarray(theta, dtype=float)
        family = family or self.family
        joint = beta is None
        beta = self.beta.copy() if joint else np.asarray(beta, dtype=float)
        u = [x.copy() for x in self.u]
        eta = self.eta(theta, beta, u)
        pdev = self.minus2_loglik(eta, family) + _sumsq(u)

        def newton_step(beta, u, eta):
            fixed = self.offset if joint else self.offset + self.design.X @ beta
            engine = self.engine(eta, fixed, family, "observed", joint)
            factor = engine.factor(theta)
            if factor is None:
                raise MultilevelError("penalised IRLS failed: the weighted system is not positive definite")
            new_beta, new_u = engine.solve_spherical(factor)
            return (new_beta if joint else beta), new_u, (engine, factor)

        def evaluate(beta, u):
            eta = self.eta(theta, beta, u)
            return self.minus2_loglik(eta, family) + _sumsq(u), eta

        beta, u, eta, pdev, (engine, factor) = iterate(beta, u, eta, pdev, newton_step, evaluate, STEP_TOL,
                                                       lambda: f"theta = {np.round(theta, 4)}")
        return self._finish(theta, beta, u, eta, pdev, engine, factor, family)

    def _finish(self, theta, beta, u, eta, pdev, engine, factor, family) -> Mode:
        """Store the modes for the next start; refactor with the expected information if asked for."""
        self.u, self.beta = [x.copy() for x in u], beta.copy()
        if self.determinant_kind(family) == "expected":
            fixed = self.offset if engine.p else self.offset + self.design.X @ beta
            engine = self.engine(eta, fixed, family, "expected", engine.p > 0)
            factor = engine.factor(theta)
        penalty = _sumsq(u)
        return Mode(theta, beta, u, eta, factor.T, pdev - penalty, penalty, lambda: (engine, factor))

    def settled(self, theta: np.ndarray, beta: np.ndarray, u: list[np.ndarray], eta: np.ndarray, minus2_cond_loglik: float,
                family: Family) -> Mode:
        """The `Mode` at modes another solver found (this PIRLS's to rounding, `scalar_pirls`, `laplace_gradient`):
        the engine is built only if asked for, by this PIRLS from those modes (one Newton step)."""
        u = [x.copy() for x in u]

        def system():
            self.u, self.beta = [x.copy() for x in u], beta.copy()
            mode = self.mode(theta, beta, family)
            return mode.engine, mode.factor

        return Mode(theta, beta, u, eta, self.factors(theta), minus2_cond_loglik, _sumsq(u), system)

    def laplace(self, theta: np.ndarray, beta: np.ndarray | None = None, family: Family | None = None) -> float:
        """The Laplace objective (-2 log-likelihood); inf where PIRLS fails."""
        try:
            return self.mode(theta, beta, family).laplace
        except MultilevelError:
            return np.inf


def _sumsq(u: list[np.ndarray]) -> float:
    return float(sum(np.sum(x * x) for x in u))

