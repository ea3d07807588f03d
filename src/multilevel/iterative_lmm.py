"""ML/REML fits of crossed random terms (random slopes on the first term only) by the APPROXIMATE iterative solver (``Model.fit(solver="iterative")``):
L-BFGS-B on `iterative_engine`'s criterion (conjugate gradients for the solves, stochastic Lanczos quadrature with
fixed probes for the log-determinant) and its exact gradient, from the moment start; BOBYQA from lme4's start
when the first term has random slopes (the gradient is derived for scalar terms). For designs whose dense block is too large to factor
at every evaluation (docs/scale.md: 10^7 crossed rows with 20,000 items).

>>> import multilevel as mlv
>>> data = mlv.datasets.load("Penicillin")
>>> fit = mlv.Model("diameter ~ 1 + (1 | plate) + (1 | sample)", data).fit(solver="iterative")
>>> fit.approximation.startswith("APPROXIMATE")
True
>>> fit.objective_error < 1.0
True
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .approximate_fit import ApproximateLmmFit
from .components import boundary_parameters
from .engine import theta_to_T, tri_index
from .errors import MultilevelError, emit
from .iterative_engine import IterativeEngine
from .lmm import moment_start, moment_start_from, singular_message
from .optimize import OptimumInfo, bobyqa, finite_difference_checks, lbfgsb
from .partitioned import PartitionedDesign
from .scaling import precision_message, unabsorbed_messages

PROBES = 16  # Rademacher probes of the log-determinant (after deflating each term's common shift)
STEPS = 12  # Lanczos steps a probe (the quadrature's change from 6 to 12 steps is reported)
SEED = 20_140  # the probes' seed: the same criterion at every theta and in every run


def fit_iterative(model, method: str, warn: bool = True) -> ApproximateLmmFit:
    """The approximate ML/REML fit of a model with crossed random terms (see the module's docstring)."""
    design, cp = model.design, model.cross_products
    ks = [b.k for b in design.blocks]
    engine = IterativeEngine(cp, ks, [b.m for b in design.blocks], PROBES, STEPS, SEED)
    reml = method == "REML"

    def objective(theta):
        return engine.evaluate(theta, reml).criterion

    lower = np.concatenate([[0.0 if i == j else -np.inf for i, j in tri_index(k)] for k in ks])
    if engine.has_gradient:
        start = moment_start_from(cp) if isinstance(design, PartitionedDesign) else moment_start(design)
        info = _scaled_lbfgsb(engine, reml, start, np.sqrt([b.m for b in design.blocks]))
    else:  # slopes on the first term: derivative-free from lme4's start
        start = np.concatenate([[1.0 if i == j else 0.0 for i, j in tri_index(k)] for k in ks])
        info = bobyqa(objective, start, lower)
    info = finite_difference_checks(objective, info, lower)
    at = engine.evaluate(info.x, reml)
    held = cp.held
    sigma = float(np.sqrt(at.r2 / (engine.n - engine.p if reml else engine.n)))
    factors = [theta_to_T(info.x[: engine.n0], ks[0])] + [np.array([[t]]) for t in info.x[engine.n0:]]
    held_b = [u @ T.T * held.scale[-1] for u, T in zip(at.modes, factors)]
    inverse = held.covariance_factor(at.rx) if engine.p else np.zeros((0, 0))
    error = at.logdet.error
    label = (f"APPROXIMATE: solver='iterative' estimates the log-determinant by stochastic Lanczos quadrature "
             f"({PROBES} probes, seed {SEED}; estimated error of the criterion {error:.2g}: 3 standard errors of the "
             f"probes, {at.logdet.standard_error:.2g} each, plus the quadrature's change {at.logdet.quadrature_change:.2g}); "
             f"the solves are by conjugate gradients to a relative residual of 1e-10, {at.iterations} iterations at the optimum")
    messages = list(info.warnings) + [precision_message(c) for c in held.lost] + unabsorbed_messages(held)
    if boundary_parameters(design.blocks, factors):
        messages.append(singular_message(design.blocks, factors))
    if warn:
        emit(messages)
    return ApproximateLmmFit(model, method, info, factors, sigma, at.beta, sigma**2 * inverse.T @ inverse, held_b,
                             at.criterion, error, label, messages)


def _scaled_lbfgsb(engine: IterativeEngine, reml: bool, start: np.ndarray, scale: np.ndarray) -> OptimumInfo:
    """L-BFGS-B on the criterion and its exact gradient (the probes fixed) over x = theta * scale, scale = sqrt(levels)
    per term: each level adds a log-determinant term in theta_t, so the curvature grows with the levels, and in x it is
    alike across terms and L-BFGS-B's first step is of the right size (7 gradients for 10-19 unscaled at 1e5-6e5 rows).
    The result in theta (the derivatives of the convergence check too)."""

    def value_and_gradient(x: np.ndarray) -> tuple[float, np.ndarray]:
        at = engine.evaluate(x / scale, reml, gradient=True)
        return at.criterion, at.gradient / scale

    info = lbfgsb(value_and_gradient, lambda x: engine.evaluate(x / scale, reml).criterion, start * scale,
                  np.zeros(len(start)))
    return replace(info, x=info.x / scale, gradient=info.gradient * scale, hessian=info.hessian * np.outer(scale, scale),
                   checked_at=info.checked_at / scale)


def check_iterative(model, prior: str | None) -> None:
    """Refuse what the iterative solver does not fit, naming the fix."""
    if prior is not None:
        raise MultilevelError("solver='iterative' fits ML/REML without a covariance prior: drop prior= or use the "
                              "exact solver")
    if not model.gaussian:
        raise MultilevelError("solver='iterative' fits Gaussian linear mixed models; a GLMM is fitted by the exact "
                              "solver (the default)")
