"""Bayesian results: posterior draws with brms's parameter names, tables laid out as the frequentist ones,
diagnostics (R-hat, ESS, divergences) from ArviZ, and ArviZ's DataTree for everything else."""

from __future__ import annotations

import warnings
from functools import cached_property

import numpy as np
import pandas as pd

from .engine import tri_index
from .errors import MultilevelError, MultilevelWarning
from .predict import linear_predictor, predict_new, random_part

RHAT_LIMIT = 1.01
ESS_PER_CHAIN = 100  # bulk/tail ESS below 100 per chain is reported (as Stan's guidance)


def brms_coef(name: str) -> str:
    """lme4 coefficient name to brms's ('(Intercept)' -> 'Intercept')."""
    return "Intercept" if name == "(Intercept)" else name


class Posterior:
    """Posterior draws of a Gaussian mixed model; the same vocabulary as `LmmFit`."""

    def __init__(self, model, beta, sd, corr, sigma, b, stats: dict, priors, seed: int, seconds: float, sampler: str):
        self.model, self.priors, self.seed, self.seconds, self.sampler = model, priors, seed, seconds, sampler
        self.beta, self.sd, self.corr, self.sigma, self.b, self.stats = beta, sd, corr, sigma, b, stats
        self.warnings = self._diagnose()
        for message in self.warnings:
            warnings.warn(message, MultilevelWarning, stacklevel=3)

    @classmethod
    def from_collapsed(cls, model, layout, positions, beta_c, b, means, stats, priors, seed, seconds, sampler):
        """Assemble draws from the collapsed sampler: constrained parameters plus the exact conditional draws."""
        from .collapsed import constrain

        sds, chols, sigma, alpha, _ = constrain(layout, positions, np)
        names = model.design.fixed_names
        beta = np.empty(positions.shape[:2] + (len(names),))
        others = [n for n in names if n != "(Intercept)"] if layout.intercept else names
        for j, name in enumerate(others):
            beta[..., names.index(name)] = beta_c[..., j]
        if layout.intercept:
            beta[..., names.index("(Intercept)")] = alpha - beta_c @ means
        corr = [np.einsum("...ab,...cb->...ac", L, L) for L in chols]
        return cls(model, beta, sds, corr, sigma, b, stats, priors, seed, seconds, sampler)

    # ------------------------------------------------------------------ shapes and names
    @property
    def design(self):
        return self.model.design

    @property
    def n_chains(self) -> int:
        return self.beta.shape[0]

    @property
    def n_draws(self) -> int:
        return self.beta.shape[1]

    def parameters(self) -> dict[str, np.ndarray]:
        """Population-level, sd, cor and sigma draws (chains x draws) with brms's names."""
        out = {}
        for j, name in enumerate(self.design.fixed_names):
            out[f"b_{brms_coef(name)}"] = self.beta[..., j]
        for block, sd, corr in zip(self.design.blocks, self.sd, self.corr):
            for a, name in enumerate(block.coef_names):
                out[f"sd_{block.group}__{brms_coef(name)}"] = sd[..., a]
            for a in range(block.k):
                for c in range(a + 1, block.k):
                    out[f"cor_{block.group}__{brms_coef(block.coef_names[a])}__{brms_coef(block.coef_names[c])}"] = corr[..., a, c]
        if self.sigma is not None:
            out["sigma"] = self.sigma
        return out

    def group_effect_draws(self) -> dict[str, np.ndarray]:
        """Group effects as brms names them, r_<group>[<level>,<coef>] -> (chains x draws)."""
        out = {}
        for block, b in zip(self.design.blocks, self.b):
            for j, coef in enumerate(block.coef_names):
                for g, level in enumerate(block.levels):
                    out[f"r_{block.group}[{level},{brms_coef(coef)}]"] = b[..., g, j]
        return out

    # ------------------------------------------------------------------ diagnostics
    def _diagnose(self) -> list[str]:
        out = []
        n_div = int(np.sum(self.stats.get("diverging", 0)))
        if n_div:
            out.append(
                f"{n_div} divergent transitions after warmup: the sampler may have missed part of the posterior; "
                "results can be biased. Check the model (a variance near zero?) or give more informative priors."
            )
        table = self.summary()
        bad_rhat = table.index[table["r_hat"] > RHAT_LIMIT].tolist()
        if bad_rhat:
            out.append(
                f"R-hat above {RHAT_LIMIT} for {', '.join(bad_rhat)}: the chains disagree; run longer (more draws "
                "and warmup) before trusting these estimates."
            )
        limit = ESS_PER_CHAIN * self.n_chains
        low = table.index[(table["ess_bulk"] < limit) | (table["ess_tail"] < limit)].tolist()
        if low:
            out.append(
                f"effective sample size below {limit} for {', '.join(low)}: means and intervals are imprecise; "
                "draw more."
            )
        return out

    # ------------------------------------------------------------------ tables
    def summary(self, group_effects: bool = False, prob: float = 0.95) -> pd.DataFrame:
        """mean, sd, quantiles, bulk/tail ESS and R-hat (ArviZ's) for every parameter."""
        from arviz_stats.base import array_stats

        params = self.parameters()
        if group_effects:
            params.update(self.group_effect_draws())
        names = list(params)
        arr = np.stack([params[n] for n in names], axis=-1)  # chains x draws x P
        lo, hi = (1 - prob) / 2, (1 + prob) / 2
        flat = arr.reshape(-1, arr.shape[-1])
        with np.errstate(invalid="ignore", divide="ignore"):
            ess_bulk = array_stats.ess(arr, chain_axis=0, draw_axis=1, method="bulk")
            ess_tail = array_stats.ess(arr, chain_axis=0, draw_axis=1, method="tail", prob=0.05)
            rhat = array_stats.rhat(arr, chain_axis=0, draw_axis=1, method="rank") if self.n_chains > 1 else np.full(len(names), np.nan)
        return pd.DataFrame(
            {
                "mean": flat.mean(axis=0),
                "sd": flat.std(axis=0, ddof=1),
                f"q{100 * lo:g}": np.quantile(flat, lo, axis=0),
                "q50": np.quantile(flat, 0.5, axis=0),
                f"q{100 * hi:g}": np.quantile(flat, hi, axis=0),
                "ess_bulk": ess_bulk,
                "ess_tail": ess_tail,
                "r_hat": rhat,
            },
            index=pd.Index(names, name="parameter"),
        )

    @cached_property
    def fixed_effects(self) -> pd.DataFrame:
        """Posterior mean (estimate), SD (std_error) and 95 % credible interval per coefficient."""
        flat = self.beta.reshape(-1, self.beta.shape[-1])
        return interval_table(flat, pd.Index(self.design.fixed_names, name="term"))

    @cached_property
    def variance_components(self) -> pd.DataFrame:
        """As the frequentist table (posterior means), plus 95 % intervals for each SD / correlation."""
        from .lmm import variance_table

        covs_draws = [s[..., :, None] * c * s[..., None, :] for s, c in zip(self.sd, self.corr)]
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
        from .tables import callable_table

        return callable_table(self._group_effects(), self._group_effects)

    def _group_effects(self, prob: float = 0.95) -> pd.DataFrame:
        rows = []
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
        from .variance import icc

        return icc(self, conditional, level)

    def r2(self, level: float = 0.95) -> pd.DataFrame:
        from .variance import r2

        return r2(self, level)

    def pooling(self, group: str | None = None) -> pd.DataFrame:
        from .pooling import pooling

        return pooling(self, group)

    def ppc(self, stats=None, seed=None):
        """Posterior predictive check: replicated data, test statistics and posterior predictive p-values."""
        from .ppc import ppc

        return ppc(self, stats, seed=seed)

    def dic(self):
        from .information import posterior_dic

        return posterior_dic(self)

    # ------------------------------------------------------------------ predictions and checks
    def linear_predictor_draws(self) -> np.ndarray:
        """X beta + Z b for every draw: (chains, draws, nobs)."""
        out = np.empty(self.beta.shape[:2] + (self.design.nobs,))
        for c in range(self.n_chains):
            for d in range(self.n_draws):
                out[c, d] = linear_predictor(self.design, self.beta[c, d], [b[c, d] for b in self.b])
        return out

    def residual_sd(self) -> np.ndarray:
        """Per draw and row, the residual SD (sigma / sqrt(w), or the known se)."""
        d = self.design
        if self.sigma is None:
            return np.broadcast_to(d.se, self.beta.shape[:2] + (d.nobs,))
        sd = self.sigma[..., None] * np.ones(d.nobs)
        if d.weights is not None:
            sd = sd / np.sqrt(d.weights)
        if d.se is not None:
            sd = np.sqrt(sd**2 + d.se**2)
        return sd

    def log_likelihood(self) -> np.ndarray:
        """Pointwise log-likelihood given the group effects (as brms): (chains, draws, nobs)."""
        mu = self.linear_predictor_draws()
        sd = self.residual_sd()
        return -0.5 * ((self.design.y - mu) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)

    def predict(self, new_data=None, include_groups: bool = True, summary: bool = True):
        """Posterior mean (and interval) of the expected response for new (or the fitted) rows."""
        flat_beta = self.beta.reshape(-1, self.beta.shape[-1])
        flat_b = [b.reshape(-1, *b.shape[2:]) for b in self.b]
        idx = range(flat_beta.shape[0])
        if new_data is None:
            draws = np.stack([linear_predictor(self.design, flat_beta[i], [b[i] for b in flat_b] if include_groups else None) for i in idx])
        else:
            draws = np.stack([predict_new(self.design, flat_beta[i], [b[i] for b in flat_b] if include_groups else None, new_data) for i in idx])
        if not summary:
            return draws
        return pd.DataFrame({"estimate": draws.mean(0), "ci_lower": np.quantile(draws, 0.025, 0), "ci_upper": np.quantile(draws, 0.975, 0)})

    def posterior_predictive(self, seed=None) -> np.ndarray:
        """Replicated responses, one per draw: (chains, draws, nobs)."""
        rng = np.random.default_rng(self.seed if seed is None else seed)
        mu = self.linear_predictor_draws()
        return mu + rng.standard_normal(mu.shape) * self.residual_sd()

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
        return arviz_base.from_dict(groups, dims=dims, coords=coords)

    def loo(self, kind: str = "conditional"):
        """PSIS-LOO by ArviZ; kind="conditional" (given the group effects, as brms) or "marginal" (new groups)."""
        from .information import loo

        return loo(self, kind)

    def waic(self, kind: str = "conditional") -> pd.Series:
        """WAIC (Watanabe 2010) from the pointwise log-likelihood."""
        from .information import pointwise_log_likelihood, waic

        return waic(pointwise_log_likelihood(self, kind))

    def save(self, path, force: bool = False):
        """Write the draws and the model's data to netCDF (never overwrites unless force=True); `mlv.load` reopens it."""
        from .io import save

        return save(self, path, force=force)

    def __repr__(self) -> str:
        head = (
            f"Bayesian fit ({self.sampler}, {self.n_chains} chains x {self.n_draws} draws, seed {self.seed}, "
            f"{self.seconds:.1f} s)\nFormula: {self.design.formula}\n"
        )
        body = self.summary().round(4).to_string()
        notes = "".join(f"\n * {w}" for w in self.warnings)
        return head + body + ("\nWarnings:" + notes if notes else "")


def interval_table(flat: np.ndarray, index, prob: float = 0.95) -> pd.DataFrame:
    """Mean, SD and central interval of each column of draws (draws x quantities)."""
    lo, hi = (1 - prob) / 2, (1 + prob) / 2
    return pd.DataFrame(
        {
            "estimate": flat.mean(axis=0),
            "std_error": flat.std(axis=0, ddof=1),
            "ci_lower": np.quantile(flat, lo, axis=0),
            "ci_upper": np.quantile(flat, hi, axis=0),
        },
        index=index,
    )
