"""Pólya-Gamma Gibbs sampling of an occupancy model, as spOccupancy's `PGOcc` (Polson, Scott & Windle 2013).

Given the latent occupancy z, occupancy is a logistic regression of z on the sites and detection one of y on the
surveys of occupied sites. With a Pólya-Gamma variable omega ~ PG(1, eta) per logit, each becomes Gaussian in its
coefficients (and in a random intercept's effects, held as one-hot columns beside them), so a sweep draws omega
(`polyagamma`, Devroye's exact method), the coefficients in one Gaussian draw per part, a random-effect variance
from its inverse-gamma conditional, then z from P(z = 1 | y, coefficients).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_solve, solve_triangular

from . import chains, polya_gamma
from .occupancy_likelihood import site_posterior


def gaussian_draw(rng: np.random.Generator, M: np.ndarray, kappa: np.ndarray, omega: np.ndarray,
                  prior_precision: np.ndarray) -> np.ndarray:
    """One draw of the coefficients of a Pólya-Gamma-augmented logistic regression: N(Q^-1 M'kappa, Q^-1) with
    Q = M' diag(omega) M + diag(prior_precision), kappa = y - 1/2."""
    L = np.linalg.cholesky((M * omega[:, None]).T @ M + np.diag(prior_precision))
    noise = solve_triangular(L.T, rng.standard_normal(len(L)), lower=False, check_finite=False)
    return cho_solve((L, True), M.T @ kappa, check_finite=False) + noise


def _one_hot(codes: np.ndarray, m: int) -> np.ndarray:
    out = np.zeros((len(codes), m))
    out[np.arange(len(codes)), codes] = 1.0
    return out


class Chain:
    """One chain's state (coefficients, random effects, their variance, z) and its sweep."""

    def __init__(self, model, prior_variance: float, sd_prior: tuple[float, float], rng: np.random.Generator, init: np.ndarray):
        a = model.arrays
        self.arrays, self.rng, self.n_occ = a, rng, a.X.shape[1]
        self.sites, self.slots = model.survey_sites, model.survey_slots
        self.y = a.Y[self.sites, self.slots]
        self.part, self.m = (model.random[1].part, model.random[1].m) if model.random else (None, 0)
        self.codes = model.random[1].codes if model.random else np.zeros(len(a.X), int)
        occupancy_effects = _one_hot(self.codes, self.m) if self.part == "psi" else np.zeros((len(a.X), 0))
        detection_effects = _one_hot(self.codes[self.sites], self.m) if self.part == "p" else np.zeros((len(self.y), 0))
        self.M_psi = np.hstack([a.X, occupancy_effects])  # sites x (occupancy coefficients [, effects])
        self.M_p = np.hstack([a.V[self.sites, self.slots], detection_effects])  # surveys x (detection coefficients [, effects])
        self.prior_precision, self.sd_prior = 1.0 / prior_variance, sd_prior
        self.coef, self.effects, self.sigma2 = init.copy(), np.zeros(self.m), 1.0
        self.z = np.ones(len(a.X))

    def _precision(self, part: str, n: int) -> np.ndarray:
        """Prior precisions of a part's n coefficients, then of the random effects if they shift this part."""
        effects = np.full(self.m, 1.0 / self.sigma2) if self.part == part else np.zeros(0)
        return np.r_[np.full(n, self.prior_precision), effects]

    def _update(self, part: str, M: np.ndarray, y: np.ndarray, cols: slice) -> None:
        """Draw omega given the current logits, then the part's coefficients (and its random effects)."""
        own = self.part == part
        x = np.r_[self.coef[cols], self.effects] if own else self.coef[cols]
        omega = polya_gamma.draw(self.rng, 1.0, M @ x)
        x = gaussian_draw(self.rng, M, y - 0.5, omega, self._precision(part, cols.stop - cols.start))
        self.coef[cols] = x[: cols.stop - cols.start]
        if own:
            self.effects = x[cols.stop - cols.start:]

    def sweep(self) -> tuple[np.ndarray, np.ndarray]:
        """One Gibbs sweep; returns P(z = 1 | y, coefficients) per site and each site's log-likelihood."""
        k = len(self.coef)
        self._update("psi", self.M_psi, self.z, slice(0, self.n_occ))
        occupied = self.z[self.sites] == 1
        self._update("p", self.M_p[occupied], self.y[occupied], slice(self.n_occ, k))
        if self.part is not None:
            shape, scale = self.sd_prior
            self.sigma2 = (scale + 0.5 * self.effects @ self.effects) / self.rng.gamma(shape + 0.5 * self.m)
        site_ll, w = site_posterior(self.coef, self.arrays, **self.shifts())
        self.z = (self.rng.random(len(w)) < w).astype(float)
        return w, site_ll

    def shifts(self) -> dict:
        """The random effects as per-site shifts of the psi or p logits (for `site_posterior`)."""
        return {} if self.part is None else {f"shift_{self.part}": self.effects[self.codes]}


def run_chain(model, prior_variance: float, sd_prior: tuple[float, float], seed: int, chain: int, init: np.ndarray,
              warmup: int, draws: int, report=None) -> dict:
    """Burn in, then keep `draws` sweeps of one chain (its own generator: default_rng([seed, chain])). After a stop
    request (`chains.stop_requested()`, Ctrl-C): the draws kept so far, the first of the full chain's, or None
    before any."""
    ch = Chain(model, prior_variance, sd_prior, np.random.default_rng([seed, chain]), init)
    n_sites = len(ch.z)
    out = {"draws": np.empty((draws, len(init))), "sd": np.empty(draws), "b": np.empty((draws, ch.m)),
           "z": np.empty((draws, n_sites)), "w": np.empty((draws, n_sites)), "site_loglik": np.empty((draws, n_sites))}
    step = max(1, (warmup + draws) // 100)
    for it in range(warmup + draws):
        if chains.stop_requested():
            return {k: v[: it - warmup] for k, v in out.items()} if it > warmup else None
        w, site_ll = ch.sweep()
        if report is not None and ((it + 1) % step == 0 or it + 1 == warmup + draws):
            report(chain, it + 1)
        d = it - warmup
        if d >= 0:
            out["draws"][d], out["sd"][d], out["b"][d] = ch.coef, np.sqrt(ch.sigma2), ch.effects
            out["z"][d], out["w"][d], out["site_loglik"][d] = ch.z, w, site_ll
    return out
