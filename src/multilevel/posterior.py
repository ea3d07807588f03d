"""Bayesian results: posterior draws with brms's parameter names, tables laid out as the frequentist ones,
diagnostics (R-hat, ESS, divergences) from ArviZ, and ArviZ's DataTree for everything else."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from . import saving
from .arguments import check_flag, check_level, check_seed
from .components import covariance, variance_table
from .diagnostics import draw_summary
from .design import apply_coding
from .engine import tri_index
from .html_tables import result_html
from .information import loo, pointwise_log_likelihood, posterior_dic, waic
from .kinds import Bayesian, OfModel
from .names import brms_coef, fixed_name, group_effect_name, variance_names
from .pooling import pooling
from .ppc import ppc
from .predict import check_offset, predictor, residual_sd
from .scaling import Scaling
from .tables import callable_table, interval_table
from .variance import icc, r2


APPROXIMATIONS = {"laplace": "APPROXIMATE: group effects integrated out by the Laplace approximation"}


class Posterior(Bayesian, OfModel):
    """Posterior draws of a mixed model (Gaussian: sigma; negative binomial: shape); the same vocabulary as
    `LmmFit` and `GlmmFit`. The sampler's diagnostics (divergences, R-hat, ESS) are stored in `warnings`;
    `partial` marks the draws of a run stopped by Ctrl-C; `approximation` names an approximate sampler's
    approximation (None when exact), whose importance-sampling check is `importance_check`."""

    importance_check: pd.DataFrame | None = None  # sampler="laplace": `laplace_check.importance_check`'s table
    proposal_check: dict | None = None  # sampler="imh": the proposal's Pareto k, acceptance rate and failure reason
    sampler_note: str = ""  # sampler="auto": why it ran the sampler it ran, when that is not the first choice

    def __init__(self, model, beta, sd, corr, sigma, b, stats: dict, priors, seed: int, seconds: float, sampler: str,
                 warnings: list[str] | None = None, shape=None, finished: list[int] | None = None,
                 held: tuple[np.ndarray, Scaling] | None = None):
        self.model, self.priors, self.seed, self.seconds, self.sampler = model, priors, seed, seconds, sampler
        self.beta, self.sd, self.corr, self.sigma, self.b, self.stats = beta, sd, corr, sigma, b, stats
        # the draws of the coefficients of the columns as the sampler held them (`centring.held_draws`): predictions
        # are formed of these, which lose no digits to a column far from zero (None: the user's columns)
        self.held_beta, self.held = held if held is not None else (None, None)
        self.shape, self.finished = shape, finished
        self.warnings = list(warnings or [])

    @property
    def approximation(self) -> str | None:
        """The label of an approximate sampler's draws (``sampler="laplace"``); None for the exact samplers."""
        return APPROXIMATIONS.get(self.sampler)

    # ------------------------------------------------------------------ shapes and names
    @property
    def n_chains(self) -> int:
        return self.beta.shape[0]

    @property
    def n_draws(self) -> int:
        return self.beta.shape[1]

    def parameters(self) -> dict[str, np.ndarray]:
        """Population-level, sd, cor and sigma draws (chains x draws) with brms's names."""
        out = {fixed_name(name): self.beta[..., j] for j, name in enumerate(self.design.fixed_names)}
        for block, sd, corr in zip(self.design.blocks, self.sd, self.corr):
            sd_names, cor_entries = variance_names(block)
            out.update({name: sd[..., a] for a, name in enumerate(sd_names)})
            out.update({name: corr[..., a, c] for a, c, name in cor_entries})
        if self.sigma is not None:
            out["sigma"] = self.sigma
        if self.shape is not None:
            out["shape"] = self.shape
        return out

    def group_effect_draws(self) -> dict[str, np.ndarray]:
        """Group effects as brms names them, r_<group>[<level>,<coef>] -> (chains x draws)."""
        out = {}
        for block, b in zip(self.design.blocks, self.b):
            for j, coef in enumerate(block.coef_names):
                for g, level in enumerate(block.levels):
                    out[group_effect_name(block.group, level, coef)] = b[..., g, j]
        return out

    # ------------------------------------------------------------------ tables
    def summary(self, group_effects: bool = False, prob: float = 0.95) -> pd.DataFrame:
        """mean, sd, quantiles, bulk/tail ESS and R-hat (ArviZ's) for every parameter."""
        params = self.parameters()
        if group_effects:
            params.update(self.group_effect_draws())
        table = draw_summary(params, prob)
        if self.approximation:
            table.attrs["approximation"] = self.approximation
        return table

    @cached_property
    def fixed_effects(self) -> pd.DataFrame:
        """Posterior mean (estimate), SD (std_error) and 95 % credible interval per coefficient."""
        flat = self.beta.reshape(-1, self.beta.shape[-1])
        return interval_table(flat, pd.Index(self.design.fixed_names, name="term"))

    @cached_property
    def variance_components(self) -> pd.DataFrame:
        """As the frequentist table (posterior means), plus 95 % intervals for each SD / correlation."""
        covs_draws = [covariance(s, c) for s, c in zip(self.sd, self.corr)]
        mean_cov = [c.reshape(-1, *c.shape[-2:]).mean(axis=0) for c in covs_draws]
        sigma_mean = None if self.sigma is None else float(self.sigma.mean())
        table = variance_table(self.design.blocks, mean_cov, sigma_mean)
        draws = np.stack([x.ravel() for x in self._component_draws()], axis=1)  # in the table's row order
        is_sd = (table["term2"] == "").to_numpy()
        means = draws.mean(axis=0)
        table["sd"] = np.where(is_sd, means, np.nan)
        table["corr"] = np.where(is_sd, np.nan, means)
        table["ci_lower"], table["ci_upper"] = np.quantile(draws, [0.025, 0.975], axis=0)
        return table

    def _component_draws(self) -> list[np.ndarray]:
        """Draws of each SD and correlation, then sigma, in `variance_table`'s row order."""
        out = []
        for block, s, c in zip(self.design.blocks, self.sd, self.corr):
            out += [s[..., a] for a in range(block.k)]
            out += [c[..., a, b] for b, a in tri_index(block.k) if a != b]
        return out + ([self.sigma] if self.sigma is not None else [])

    @cached_property
    def group_effects(self) -> pd.DataFrame:
        """Every group's effect: posterior mean, SD and 95 % credible interval (long table, as the frequentist
        one); also callable, ``post.group_effects(prob=0.9)`` for other intervals."""
        return callable_table(self._group_effects(), self._group_effects)

    def _group_effects(self, prob: float = 0.95) -> pd.DataFrame:
        prob, rows = check_level(prob, "prob"), []
        for block, b in zip(self.design.blocks, self.b):
            flat = b.reshape(-1, block.m, block.k)
            for j, coef in enumerate(block.coef_names):
                t = interval_table(flat[:, :, j], None, prob)
                t.insert(0, "term", coef)
                t.insert(0, "level", block.levels)
                t.insert(0, "group", block.group)
                rows.append(t)
        return pd.concat(rows, ignore_index=True)

    def icc(self, conditional: bool = False, level: float = 0.95) -> pd.DataFrame:
        """Share of variance at each level, as posterior draws summarised with credible intervals."""
        return icc(self, conditional, level)

    def r2(self, level: float = 0.95) -> pd.DataFrame:
        return r2(self, level)

    def pooling(self, group: str | None = None) -> pd.DataFrame:
        return pooling(self, group)

    def ppc(self, stats=None, seed=None):
        """Posterior predictive check: replicated data, test statistics and posterior predictive p-values."""
        return ppc(self, stats, seed=seed)

    def dic(self):
        return posterior_dic(self)

    # ------------------------------------------------------------------ predictions and checks
    def linear_predictor_draws(self) -> np.ndarray:
        """X beta + Z b for every draw: (chains, draws, nobs)."""
        return self._predictor_draws(self.design, True).reshape(self.beta.shape[:2] + (self.design.nobs,))

    def _predictor_draws(self, rows, include_groups: bool) -> np.ndarray:
        """X beta (+ Z b) on `rows` for every draw, chains flattened (draws, rows): of the held columns where the
        sampler held them (`predict.predictor`)."""
        beta = self.beta if self.held is None else self.held_beta
        flat_beta = beta.reshape(-1, beta.shape[-1])
        flat_b = [b.reshape(-1, *b.shape[2:]) for b in self.b]
        return np.stack([predictor(rows, flat_beta[i], [b[i] for b in flat_b] if include_groups else None, self.held)
                         for i in range(flat_beta.shape[0])])

    def residual_sd(self) -> np.ndarray:
        """Per draw and row, the residual SD (sigma / sqrt(w), or the known se)."""
        if self.sigma is None:
            return np.broadcast_to(self.design.se, self.beta.shape[:2] + (self.design.nobs,))
        return residual_sd(self.design, self.sigma[..., None])

    def log_likelihood(self) -> np.ndarray:
        """Pointwise log-likelihood given the group effects (as brms): (chains, draws, nobs)."""
        if self.model.gaussian:
            return self.model.family.log_likelihood(self.design.y, self.linear_predictor_draws(), self.residual_sd())
        return self._per_draw(lambda fam, mu: fam.loglik(self.design.y, mu, self.design.family_weights))

    def _per_draw(self, f) -> np.ndarray:
        """f(family, mu) for each draw of a GLMM, the family holding that draw's shape (negative binomial)."""
        family, mu = self.model.family, self.model.family.link.linkinv(self.linear_predictor_draws())
        if self.shape is None:
            return f(family, mu)
        return np.stack([np.stack([f(family.with_dispersion(self.shape[c, d]), mu[c, d]) for d in range(self.n_draws)])
                         for c in range(self.n_chains)])

    def predict(self, new_data=None, include_groups: bool = True, summary: bool = True, offset=None):
        """Posterior mean (and interval) of the expected response for new (or the fitted) rows; the new rows are
        coded once, as the fitted data (unseen groups get no group effect)."""
        check_offset(self.design, offset)
        include_groups, summary = check_flag(include_groups, "include_groups"), check_flag(summary, "summary")
        rows = self.design if new_data is None else apply_coding(self.design.coding, new_data, offset=offset, new=True,
                                                                 random=include_groups)
        draws = self._predictor_draws(rows, include_groups)
        if not summary:
            return draws
        return pd.DataFrame({"estimate": draws.mean(0), "ci_lower": np.quantile(draws, 0.025, 0), "ci_upper": np.quantile(draws, 0.975, 0)})

    def posterior_predictive(self, seed=None) -> np.ndarray:
        """Replicated responses, one per draw: (chains, draws, nobs)."""
        rng = np.random.default_rng(self.seed if seed is None else check_seed(seed))
        if not self.model.gaussian:
            return self._per_draw(lambda fam, mu: fam.simulate(mu, self.design.family_weights, rng))
        return self.model.family.draw(rng, self.linear_predictor_draws(), self.residual_sd())

    def to_arviz(self, log_likelihood: bool = True, posterior_predictive: bool = False):
        """An ArviZ DataTree (arviz-base): posterior, sample_stats, observed_data, log_likelihood, ..."""
        import arviz_base

        posterior = dict(self.parameters())
        dims, coords = {}, {}
        for block, b in zip(self.design.blocks, self.b):
            name = f"r_{block.group}"
            key = name if name not in posterior else f"{name}_{len(posterior)}"
            posterior[key] = b
            dims[key] = [block.group, f"{block.group}_coef"]
            coords[block.group] = list(map(str, block.levels))
            coords[f"{block.group}_coef"] = [brms_coef(c) for c in block.coef_names]
        groups = {"posterior": posterior, "sample_stats": self.stats, "observed_data": {"y": self.design.y}}
        dims["y"] = ["obs"]
        if log_likelihood:
            groups["log_likelihood"] = {"y": self.log_likelihood()}
        if posterior_predictive:
            groups["posterior_predictive"] = {"y": self.posterior_predictive()}
        tree = arviz_base.from_dict(groups, dims=dims, coords=coords)
        if self.approximation:
            tree.attrs["approximation"] = self.approximation
        return tree

    def loo(self, kind: str = "conditional"):
        """PSIS-LOO by ArviZ; kind="conditional" (given the group effects, as brms) or "marginal" (new groups)."""
        return loo(self, kind)

    def waic(self, kind: str = "conditional") -> pd.Series:
        """WAIC (Watanabe 2010) from the pointwise log-likelihood."""
        return waic(pointwise_log_likelihood(self, kind))

    def save(self, path, force: bool = False):
        """Write the draws and the model's data to netCDF (never overwrites unless force=True); `mlv.load` reopens it."""
        return saving.save(self, path, force=force)

    def _heading(self) -> list[str]:
        partial = ", PARTIAL: interrupted" if self.partial else ""
        partial += f", {self.approximation}" if self.approximation else ""
        return [f"Bayesian fit ({self.sampler}, {self.n_chains} chains x {self.n_draws} draws, seed {self.seed}, "
                f"{self.seconds:.1f} s{partial})", f"Formula: {self.design.formula}"] + [self.sampler_note] * bool(self.sampler_note)

    def __repr__(self) -> str:
        body = self.summary().round(4).to_string()
        notes = "".join(f"\n * {w}" for w in self.warnings)
        return "\n".join(self._heading()) + "\n" + body + ("\nWarnings:" + notes if notes else "")

    def _repr_html_(self) -> str:
        title, *lines = self._heading()
        return result_html(title, lines, [("", self.summary())], self.warnings)
