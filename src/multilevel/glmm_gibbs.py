"""`sample(sampler="gibbs")` for binomial-logit and negative-binomial (log link) mixed models: Pólya–Gamma
augmented blocked Gibbs.

Each sweep draws omega_i ~ PG(h_i, psi_i) for every row (exact draws, `polya_gamma`); given them the model is the
Gaussian one with weights omega and response kappa / omega - offset, residual SD 1, so the rest of the sweep is
the Gaussian Gibbs sampler's (`gibbs.Chain`): the centred coefficients and all group effects in one draw on the
engine refreshed with the new weights, then the SDs and correlations; last, each scalar term's SD once more with
its standardised effects held (interweaving). Binomial rows: h = trials, psi = eta, kappa = successes - h / 2.
Negative binomial NB(shape r, mean exp(eta)): its success odds are exp(eta - log r), so h = y + r,
psi = eta - log r (an offset), kappa = (y - r) / 2; each sweep first draws r given eta by slice sampling on log r
(`NegativeBinomialChain`). Exact: every step leaves the augmented posterior (Polson, Scott & Windle 2013)
invariant. docs/bayes.md has the measured agreement and speed.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from . import polya_gamma
from .centring import centred_design
from .chains import run as run_chains
from .crossprod import Reweighting
from .design import Design
from .errors import MultilevelError
from .gibbs import Chain, keep_sweeps, posterior_of
from .posterior import Posterior
from .predict import random_part
from .priors import PriorSet


class PolyaGammaChain(Chain):
    """A Gaussian Gibbs chain whose weights and response are redrawn from the Pólya–Gamma conditional each sweep."""

    def __init__(self, design: Design, ps: PriorSet, rng: np.random.Generator):
        self.h, self.kappa = self.augmentation(design)
        self.offset = self.design_offset(design)
        self.reweighting = Reweighting(replace(design, offset=None, se=None))
        super().__init__(design, ps, rng, self.reweighting.at(np.ones(design.nobs), np.zeros(design.nobs)))
        self.cov = [np.diag((0.5 * np.exp(rng.uniform(-1, 1, blk.k))) ** 2) for blk in design.blocks]
        self.beta = np.zeros(design.p)
        if design.fixed_names[-1] == "(Intercept)":  # the centred design's intercept, started at the mean's link
            self.beta[-1] = self.start_intercept(design) + rng.uniform(-0.5, 0.5)
        self.b = [np.zeros((blk.m, blk.k)) for blk in design.blocks]

    @staticmethod
    def augmentation(design: Design) -> tuple[np.ndarray, np.ndarray]:
        """The rows' PG shapes h (trials) and kappa = successes - h / 2."""
        h = polya_gamma.check_shapes(design.family_weights, "numbers of trials (times any prior weights)")
        return h, h * (design.y - 0.5)

    @staticmethod
    def design_offset(design: Design) -> np.ndarray:
        """The design's offset (zeros if none)."""
        return np.zeros(design.nobs) if design.offset is None else np.asarray(design.offset, float)

    def start_intercept(self, design: Design) -> float:
        """The logit of the overall share of successes (clipped to 0.01-0.99)."""
        share = np.clip(np.sum(self.h * design.y) / np.sum(self.h), 0.01, 0.99)
        return float(np.log(share / (1 - share)))

    def sweep(self) -> float:
        """Pólya–Gamma weights given the linear predictor, then the Gaussian chain's sweep given the weights, then
        each scalar term's SD again with its standardised effects held (`_rescale`)."""
        eta = self.design.X @ self.beta + self.offset + random_part(self.design, self.b)
        omega, z = polya_gamma.augment(self.rng, self.h, self.kappa, eta)
        self.block.refresh(self.reweighting.at(omega, z - self.offset))
        rate = super().sweep()
        resid = z - self.offset - self.design.X @ self.beta - random_part(self.design, self.b)
        for a, blk in enumerate(self.design.blocks):
            if blk.k == 1:
                resid = self._rescale(a, omega, resid)
        return rate

    def _rescale(self, a: int, omega: np.ndarray, resid: np.ndarray) -> np.ndarray:
        """The SD s of scalar term `a` given u = b / s, the other effects and the weights (interweaving, Yu & Meng
        2011): the pseudo-data z are Gaussian in s with precision P = sum omega w^2, w = Z u, so a draw from that
        Gaussian on the real line is accepted with the prior ratio p(|s'|) / p(|s|) and b becomes s' u. Exact; it
        moves the SD where the effects and their SD pin each other (cbpp, 4 x 1000: its bulk ESS 527 -> 1116).
        `resid`: the pseudo-data less the offset and the current fit; returns it after the move."""
        blk, s = self.design.blocks[a], float(np.sqrt(self.cov[a][0, 0]))
        w = blk.Z[:, 0] * self.b[a][blk.codes, 0] / s
        rest = resid + s * w
        precision = float(omega @ (w * w))
        proposal = float(omega @ (w * rest)) / precision + self.rng.standard_normal() / np.sqrt(precision)
        prior = self.sd_priors[a][0]
        if np.log(self.rng.uniform()) >= float(prior.logpdf(abs(proposal))) - float(prior.logpdf(s)):
            return resid
        self.b[a] = self.b[a] * (proposal / s)
        self.cov[a] = np.array([[proposal**2]])
        return rest - proposal * w


class NegativeBinomialChain(PolyaGammaChain):
    """Pólya–Gamma Gibbs for NB(shape r, mean exp(eta)): h = w (y + r), kappa = w (y - r) / 2 and the offset less
    log r (w the prior weights), with r drawn first in each sweep (fixed when the family's theta is given)."""

    def __init__(self, design: Design, ps: PriorSet, rng: np.random.Generator, family):
        self.family, self.shape_prior, self.row_weights = family, ps.shape, design.family_weights
        super().__init__(design, ps, rng)
        self.r = float(family.theta) if ps.shape is None else float(np.exp(rng.uniform(-1, 1)))

    @property
    def shape(self) -> float | None:
        """The shape r when it is sampled (None when the family fixes it)."""
        return None if self.shape_prior is None else self.r

    @staticmethod
    def augmentation(design: Design) -> tuple[None, None]:
        """None: h and kappa follow the shape, set in each sweep."""
        return None, None

    def start_intercept(self, design: Design) -> float:
        """The log of the mean count (at least 0.01)."""
        return float(np.log(max(np.sum(self.row_weights * design.y) / np.sum(self.row_weights), 0.01)))

    def sweep(self) -> float:
        """The shape given the linear predictor, then the Pólya–Gamma sweep at that shape."""
        base = self.design_offset(self.design)
        eta = self.design.X @ self.beta + base + random_part(self.design, self.b)
        if self.shape_prior is not None:
            self.r = self._draw_shape(eta)
        self.h = self.row_weights * (self.design.y + self.r)
        self.kappa = self.row_weights * (self.design.y - self.r) / 2
        self.offset = base - np.log(self.r)
        return super().sweep()

    def _draw_shape(self, eta: np.ndarray) -> float:
        """r given eta by a slice-sampling update of log r (Neal 2003: stepping out by SLICE_WIDTH, then shrinking),
        which leaves p(r | eta, y) invariant; the augmentation's omega is redrawn at the new r right after."""
        mu = np.exp(eta)

        def log_target(s: float) -> float:
            r = np.exp(s)
            ll = self.family.with_dispersion(r).loglik(self.design.y, mu, self.row_weights).sum()
            return float(ll + self.shape_prior.logpdf(r) + s) if np.isfinite(ll) else -np.inf

        return float(np.exp(slice_step(self.rng, log_target, np.log(self.r), SLICE_WIDTH)))


SLICE_WIDTH = 1.0  # initial slice interval on log shape (its posterior SD is about 0.1-0.5 on count data)
SLICE_STEPS = 50  # at most this many step-outs in all, split at random between the two sides (Neal 2003, fig. 3)


def slice_step(rng: np.random.Generator, log_target, x: float, width: float) -> float:
    """One univariate slice-sampling update from x (Neal 2003, stepping out with a random split of SLICE_STEPS, then
    shrinkage): leaves the density exp(log_target) invariant."""
    level = log_target(x) + np.log(rng.uniform())
    left = x - width * rng.uniform()
    right = left + width
    steps_left = int(rng.uniform() * SLICE_STEPS)
    steps_right = SLICE_STEPS - 1 - steps_left
    while steps_left > 0 and log_target(left) > level:
        left, steps_left = left - width, steps_left - 1
    while steps_right > 0 and log_target(right) > level:
        right, steps_right = right + width, steps_right - 1
    while True:
        proposal = rng.uniform(left, right)
        if log_target(proposal) > level:
            return proposal
        left, right = (proposal, right) if proposal < x else (left, proposal)


def run_chain(design: Design, ps: PriorSet, seed: int, chain: int, warmup: int, draws: int, family=None,
              report=None) -> dict:
    """One chain's kept sweeps, from its own generator default_rng([seed, chain]); `family`: a negative binomial's."""
    rng = np.random.default_rng([seed, chain])
    ch = PolyaGammaChain(design, ps, rng) if family is None else NegativeBinomialChain(design, ps, rng, family)
    return keep_sweeps(ch, chain, warmup, draws, report)


def sample_polya_gamma(model, ps: PriorSet, chains: int, draws: int, warmup: int, seed: int, cores: int,
                       progress: bool) -> Posterior:
    """Pólya–Gamma Gibbs draws of a binomial-logit or negative-binomial (log link) model's posterior, as a
    `Posterior`."""
    start = time.perf_counter()
    family = model.family
    negative_binomial = family.name == "negative_binomial" and family.link.name == "log"
    if not negative_binomial and (family.name != "binomial" or family.link.name != "logit"):
        raise MultilevelError(
            f"sampler='gibbs' for a non-Gaussian model is Pólya–Gamma Gibbs, which needs the binomial family with the "
            f"logit link or the negative binomial with the log link, not {family.name} with the {family.link.name} "
            "link: use sampler='nuts' (the default)"
        )
    if not model.design.blocks:
        raise MultilevelError("the formula has no random term such as '(1 | group)'")
    design, columns, _ = centred_design(model.design, ps.informative)
    jobs = [(design, ps, seed, c, warmup, draws, family if negative_binomial else None) for c in range(chains)]
    res = run_chains(run_chain, jobs, cores, warmup, draws, progress, label="gibbs chain", stoppable=True)
    return posterior_of(model, design.fixed_names, columns, res, draws, ps, seed, time.perf_counter() - start)
