"""The damped Newton iteration every PIRLS mode finder runs (`pirls`, `scalar_pirls`, `laplace_gradient`): the
stopping rule and the step halving live here once; each solver brings only its Newton step and its evaluation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import MultilevelError

MAX_ITERATIONS = 100
MAX_HALVINGS = 30
STEP_TOL = 1e-11  # Newton steps this small (relative): the mode is exact to rounding, the objective to ~1e-12


@dataclass
class JointMode:
    """Conditional modes at one (theta, beta) of the Laplace solvers with a gradient (`laplace_gradient`,
    `vector_pirls`): the first term's u and the others', and the system (with a `logdet`) at the Laplace weights."""

    theta: np.ndarray
    beta: np.ndarray
    u1: np.ndarray
    u2: np.ndarray
    eta: np.ndarray
    system: Any
    minus2_cond_loglik: float
    score: np.ndarray  # per row at the modes
    w_observed: np.ndarray  # the observed information per row at the modes
    observed: Any  # the system with the observed information (`system` itself unless lme4's expected)

    @property
    def laplace(self) -> float:
        return self.minus2_cond_loglik + float(np.sum(self.u1 * self.u1) + self.u2 @ self.u2) + self.system.logdet


def step_size(beta: np.ndarray, u: list[np.ndarray], new_beta: np.ndarray, new_u: list[np.ndarray]) -> float:
    """Largest change of (beta, u) relative to the size of the values: the iteration stops when it is below its tol.
    A part handed back as the same array (beta held fixed) has not changed."""
    change = size = 0.0
    for a, b in zip([beta, *u], [new_beta, *new_u]):
        if a.size:
            if b is not a:
                change = max(change, float(np.maximum.reduce(np.abs(b - a), axis=None)))
            size = max(size, float(np.maximum.reduce(np.abs(a), axis=None)))
    return change / (1.0 + size)


def iterate(beta: np.ndarray, u: list[np.ndarray], state: Any, pdev: float,
            newton_step: Callable[[np.ndarray, list[np.ndarray], Any], tuple],
            evaluate: Callable[[np.ndarray, list[np.ndarray]], tuple[float, Any]],
            tol: float, where: Callable[[], str]) -> tuple[np.ndarray, list[np.ndarray], Any, float, Any]:
    """Newton steps from (beta, u) (penalised deviance pdev) until a step is below `tol`.

    `evaluate(beta, u)` gives a candidate's penalised deviance and its `state` (the linear predictor and whatever the
    solver computed with it); `newton_step(beta, u, state)` gives the Newton point (new_beta, new_u, found), `found`
    what the solver built for it (its system), handed back with the point where the iteration stopped: (beta, u,
    state, pdev, found). A step that raises the penalised deviance is halved (`halved_step`). `where()` names the
    point in the error when there is no convergence."""
    for _ in range(MAX_ITERATIONS):
        new_beta, new_u, found = newton_step(beta, u, state)
        if step_size(beta, u, new_beta, new_u) < tol:
            return beta, u, state, pdev, found
        beta, u, state, pdev = halved_step(beta, u, new_beta, new_u, pdev, evaluate)
    raise MultilevelError(
        f"penalised IRLS did not converge in {MAX_ITERATIONS} iterations at {where()}: the model may be too complex "
        "for the data (complete separation, or a group with all-zero responses); simplify the model"
    )


def halved_step(beta, u, new_beta, new_u, pdev: float, evaluate) -> tuple:
    """The first of the Newton step's fractions 1, 1/2, 1/4, ... whose penalised deviance does not exceed `pdev`
    (to 1e-10 relative): (beta, u, state, pdev) there."""
    t = 1.0
    for _ in range(MAX_HALVINGS):
        if t == 1.0:  # the Newton point itself
            cand_beta, cand_u = new_beta, new_u
        else:
            cand_beta = beta if new_beta is beta else beta + t * (new_beta - beta)
            cand_u = [a + t * (b - a) for a, b in zip(u, new_u)]
        cand_pdev, cand_state = evaluate(cand_beta, cand_u)
        if cand_pdev <= pdev + 1e-10 * (1.0 + abs(pdev)):
            return cand_beta, cand_u, cand_state, cand_pdev
        t /= 2.0
    raise MultilevelError("penalised IRLS failed: step halving could not reduce the penalised deviance")
