"""`OccupancyPosterior`: NUTS draws of an occupancy model's coefficients, with the latent occupancy drawn
exactly per draw, in the package's posterior vocabulary (summary, fixed_effects, to_arviz, loo)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

from .arguments import check_level
from .diagnostics import draw_summary
from .html_tables import result_html
from .information import loo
from . import saving
from .kinds import Bayesian, OccupancyResult
from .occupancy_gof import posterior_predictive_check


class OccupancyPosterior(Bayesian, OccupancyResult):
    """Draws (chains x draws x coefficients) named as the ML fit's rows, plus per site and draw the latent
    occupancy `z`, P(z = 1 | y, coefficients) `w` and the site's log-likelihood. With a random intercept, `sd`
    (chains x draws) and the group effects `b` (chains x draws x groups)."""

    def __init__(self, model, draws: np.ndarray, sd: np.ndarray | None, b: np.ndarray | None, z: np.ndarray, w: np.ndarray,
                 site_loglik: np.ndarray, stats: dict, seed: int, seconds: float, prior_variance: float, sampler: str = "nuts"):
        self.model, self.draws, self.sd, self.b = model, draws, sd, b
        self.z, self.w, self.site_loglik = z, w, site_loglik
        self.stats, self.seed, self.seconds, self.prior_variance = stats, seed, seconds, prior_variance
        self.sampler = sampler
        self.warnings: list[str] = []
        self.held: tuple | None = None  # (the held model, its draws) where the sampler centred far covariates

    @property
    def columns(self) -> tuple:
        """The model whose columns the draws are formed of and those draws: the held ones (`Occupancy.held_model`)
        where the sampler held the columns, whose X beta loses no digits to a covariate far from zero."""
        return self.held if self.held is not None else (self.model, self.draws)

    @property
    def n_chains(self) -> int:
        return self.draws.shape[0]

    @property
    def n_draws(self) -> int:
        return self.draws.shape[1]

    @property
    def sd_name(self) -> str | None:
        """The random intercept's SD as a parameter name, e.g. `p(sd_route)`."""
        return self.model.sd_name

    def parameters(self) -> dict[str, np.ndarray]:
        """Coefficient draws by name (chains x draws each), and the random intercept's SD."""
        out = {n: self.draws[..., i] for i, n in enumerate(self.model.parameter_names)}
        return out if self.sd is None else out | {self.sd_name: self.sd}

    @property
    def group_effects(self) -> pd.DataFrame:
        """Posterior mean, SD and 95 % interval of each group's random intercept (empty without one)."""
        if self.b is None:
            return pd.DataFrame(columns=["group", "level", "estimate", "std_error", "lower", "upper"])
        flat = self.b.reshape(-1, self.b.shape[-1])
        return pd.DataFrame({"group": self.model.random[0].group, "level": self.model.random_levels,
                             "estimate": flat.mean(axis=0), "std_error": flat.std(axis=0, ddof=1),
                             "lower": np.quantile(flat, 0.025, axis=0), "upper": np.quantile(flat, 0.975, axis=0)})

    def summary(self, prob: float = 0.95) -> pd.DataFrame:
        """mean, sd, quantiles, bulk/tail ESS and R-hat of the coefficients and of `n_occ`, the number of occupied
        sites among those surveyed."""
        return draw_summary({**self.parameters(), "n_occ": self.z.sum(axis=-1)}, prob)

    @property
    def fixed_effects(self) -> pd.DataFrame:
        """Posterior mean (`estimate`), SD (`std_error`) and 95 % interval per coefficient, laid out as the ML fit's."""
        s = self.summary().loc[self.model.parameter_names]
        return pd.DataFrame({"estimate": s["mean"], "std_error": s["sd"], "lower": s["q2.5"], "upper": s["q97.5"]})

    def n_occupied(self) -> pd.Series:
        """The posterior of the number of occupied sites (the `n_occ` row of the summary)."""
        return self.summary().loc["n_occ"]

    @property
    def conditional_occupancy(self) -> pd.Series:
        """P(site occupied | all detections), averaged over the draws of P(z = 1 | y, coefficients)."""
        return pd.Series(self.w.mean(axis=(0, 1)), index=self.model.sites, name="P(z = 1 | y)")

    def predict(self, newdata, part: str = "psi", prob: float = 0.95) -> pd.DataFrame:
        """psi or p for new sites or surveys: posterior mean, SD and interval of the probability (random effects
        left out: the population value)."""
        prob = check_level(prob, "prob")
        model, draws = self.columns
        M, cols = model.new_matrix(newdata, part)
        values = expit(np.einsum("ij,cdj->cdi", M, draws[..., cols])).reshape(-1, M.shape[0])
        lo, hi = (1 - prob) / 2, (1 + prob) / 2
        index = newdata.index if isinstance(newdata, pd.DataFrame) else None
        return pd.DataFrame({"estimate": values.mean(axis=0), "std_error": values.std(axis=0, ddof=1),
                             "lower": np.quantile(values, lo, axis=0), "upper": np.quantile(values, hi, axis=0)}, index=index)

    def to_arviz(self):
        """An ArviZ DataTree: the coefficients and z per site, sample_stats, and the log-likelihood per site."""
        import arviz_base

        posterior = {**self.parameters(), "z": self.z}
        dims = {"z": ["site"], "y": ["site"]}
        coords = {"site": list(map(str, self.model.sites))}
        if self.b is not None:
            group = self.model.random[0].group
            posterior[f"r_{group}"], dims[f"r_{group}"] = self.b, [group]
            coords[group] = list(map(str, self.model.random_levels))
        groups = {"posterior": posterior, "sample_stats": self.stats, "log_likelihood": {"y": self.site_loglik},
                  "observed_data": {"y": self.model.arrays.detected.astype(float)}}
        return arviz_base.from_dict(groups, dims=dims, coords=coords)

    def posterior_predictive_check(self, statistic: str = "freeman-tukey", seed: int = 1) -> pd.Series:
        """Bayesian p-value of a fit statistic on detections per site (`occupancy_gof`, as spOccupancy's ppcOcc)."""
        return posterior_predictive_check(self, statistic, seed)

    def loo(self):
        """PSIS-LOO over sites (each site's detection history left out in turn) by ArviZ."""
        return loo(self, log_lik=self.site_loglik)

    def save(self, path, force: bool = False):
        """Write the draws, the latent occupancy and the model's data to ``.nc`` (reopen with `multilevel.load`)."""
        return saving.save(self, path, force=force)

    def _title(self) -> str:
        return f"Occupancy posterior ({'NUTS' if self.sampler == 'nuts' else 'Pólya-Gamma Gibbs'}, {self.n_chains} chains x {self.n_draws} draws, seed {self.seed}, {self.seconds:.1f} s)"

    def __repr__(self) -> str:
        notes = "".join(f"\n * {w}" for w in self.warnings)
        return self._title() + "\n" + self.summary().round(4).to_string() + ("\nWarnings:" + notes if notes else "")

    def _repr_html_(self) -> str:
        return result_html(self._title(), [], [("Posterior", self.summary())], self.warnings)
