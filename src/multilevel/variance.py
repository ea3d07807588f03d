"""Variance decomposition: intra-class correlations (any number of levels) and Nakagawa & Schielzeth's R².

The variance of a random term is averaged over the rows, mean_i z_i' Sigma z_i (Johnson 2014), which is
the variance itself for a random intercept and accounts for slopes by the covariate values in the data.
The fixed part contributes var(X beta). Then (Nakagawa, Johnson & Schielzeth 2017):

- ICC (adjusted) of a grouping factor = its variance / (all random variances + residual);
- conditional ICC = its variance / (fixed + random + residual);
- marginal R² = fixed / total; conditional R² = (fixed + random) / total.

Frequentist fits give point estimates, with parametric-bootstrap intervals on request; Bayesian fits give
the same quantities per posterior draw, summarised with credible intervals.

Binomial, Poisson and negative-binomial models have no residual variance; their shares are on the latent
(link) scale, with the distribution-specific variance of Nakagawa, Johnson & Schielzeth (2017, table 1) as the
residual: pi^2/3 for the logit link, 1 for probit, pi^2/6 for cloglog; for log-link counts the lognormal
approximation ln(1 + 1/lambda) (Poisson) or ln(1 + 1/lambda + 1/shape) (negative binomial), lambda =
exp(mean of the fixed part and offset + total random variance / 2), the expected count. The residual row then
reads "Residual (latent)".

>>> import multilevel as mlv
>>> fit = mlv.Model("mAch ~ 1 + (1 | school)", mlv.datasets.load("Hsb82")).fit()
>>> icc(fit)["estimate"].round(4).to_dict()
{'school': 0.1804, 'Residual': 0.8196}
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .bootstrap import bootstrap as run_bootstrap
from .arguments import check_level
from .components import covariance
from .errors import MultilevelError
from .kinds import Frequentist, Generalized
from .partitioned import PartitionedDesign
from .scaling import held_blocks
from .tables import interval_table


def _term_moments(blocks, nobs: int) -> list[np.ndarray]:
    """Per random term, the k x k mean of z_i z_i' over rows: mean_i z_i' Sigma z_i = sum(Sigma * M)."""
    return [block.Z.T @ block.Z / nobs for block in blocks]


LATENT_VARIANCE = {"logit": np.pi**2 / 3, "probit": 1.0, "cloglog": np.pi**2 / 6}  # Nakagawa et al. 2017, table 1
LATENT_ROW = "Residual (latent)"


def _components(groups: list[str], fixed: np.ndarray, covs: list[np.ndarray], moments: list[np.ndarray],
                residual: np.ndarray) -> dict[str, np.ndarray]:
    """Variances (one value per draw) of the fixed part (`fixed`), each grouping factor (`groups`, whose covariates'
    mean z z' are `moments` for the covariances `covs`) and the residual."""
    out = {"fixed": fixed}
    for group, cov, M in zip(groups, covs, moments):
        v = np.einsum("dab,ab->d", cov, M)
        out[group] = out.get(group, 0.0) + v
    out["Residual"] = residual
    return out


def latent_variance(family, design, eta: np.ndarray, random_total: np.ndarray, shape=None) -> np.ndarray:
    """Per draw, the distribution-specific residual variance on the link scale (Nakagawa et al. 2017); eta: X beta
    (draws x nobs)."""
    link = family.link.name
    if family.name == "binomial":
        return np.full(len(eta), LATENT_VARIANCE[link])
    if link != "log":
        raise MultilevelError(f"latent-scale variance shares of a {family.name} model need the log link, not {link}")
    offset = 0.0 if design.offset is None else float(np.mean(design.offset))
    lam = np.exp(eta.mean(axis=-1) + offset + random_total / 2)
    return np.log1p(1 / lam + (0.0 if shape is None else 1 / np.asarray(shape, float)))


def _draws(result) -> dict[str, np.ndarray]:
    """Variance components of a fit (one 'draw') or of every posterior draw; the residual on the latent scale
    for binomial and count models."""
    design = result.design
    if design.se is not None:
        raise MultilevelError(
            "variance shares need an estimated residual variance; this model has known standard errors (se()), "
            "so there is no residual level to share with"
        )
    groups = [block.group for block in design.blocks]
    if isinstance(result, Frequentist):
        sigma = None if _latent(result) else np.array([result.sigma])
        shape = None if sigma is not None or result.nb_theta is None else np.array([result.nb_theta])
    else:
        covs = [covariance(s, c).reshape(-1, s.shape[-1], s.shape[-1]) for s, c in zip(result.sd, result.corr)]
        sigma = None if _latent(result) else result.sigma.ravel()
        shape = _posterior_shape(result)
    if isinstance(design, PartitionedDesign):  # from the sums, in the user's columns
        beta = result.beta.reshape(-1, result.beta.shape[-1])
        covs = [c[None] for c in result.covariances] if isinstance(result, Frequentist) else covs
        eta, fixed, moments = None, design.moments.fixed_variance(beta), design.moments.terms
    else:  # as held: a far random slope's covariate centred (z' Sigma z is the same)
        blocks = design.blocks if result.held is None else held_blocks(design, result.held)
        covs = [c[None] for c in result.held_covariances] if isinstance(result, Frequentist) else covs
        eta = _fixed_part(result)
        fixed, moments = eta.var(axis=-1, ddof=1), _term_moments(blocks, eta.shape[-1])
    parts = _components(groups, fixed, covs, moments, None if sigma is None else sigma**2)
    if sigma is None:
        random_total = sum(v for k, v in parts.items() if k not in ("fixed", "Residual"))
        parts["Residual"] = latent_variance(result.model.family, design, eta, random_total, shape)
    return parts


def _fixed_part(result) -> np.ndarray:
    """X beta on the result's rows (draws x nobs; one row for a fit), offset left out, as its predictions form it: of
    the held columns where the result holds them, so a predictor far from zero costs no digits."""
    if isinstance(result, Frequentist):
        eta = np.asarray(result.predict(include_groups=False), dtype=float)[None]
    else:
        eta = result.predict(include_groups=False, summary=False)
    return eta if result.design.offset is None else eta - result.design.offset


def _latent(result) -> bool:
    """Whether the result's variance shares are on the latent scale (a binomial or count model)."""
    return isinstance(result, Generalized) or not isinstance(result, Frequentist) and not result.model.gaussian


def _posterior_shape(post):
    """A negative-binomial posterior's shape per draw (the family's fixed value when not sampled); else None."""
    family = post.model.family
    if family.name != "negative_binomial":
        return None
    return family.theta if post.shape is None else np.ravel(post.shape)


def icc_draws(result) -> dict[str, np.ndarray]:
    """Each grouping factor's ICC (adjusted) per posterior draw, or as one value of a frequentist fit."""
    return {k: np.ravel(v) for k, v in _icc_values(_draws(result), False).items() if k != "Residual"}


def icc_at(design, beta: np.ndarray, covariances: list[np.ndarray], sigma: float) -> dict[str, float]:
    """Each grouping factor's ICC (adjusted) at given parameter values (a study's truth)."""
    groups, eta = [block.group for block in design.blocks], (design.X @ beta)[None]
    parts = _components(groups, eta.var(axis=-1, ddof=1), [c[None] for c in covariances],
                        _term_moments(design.blocks, design.nobs), np.array([sigma]) ** 2)
    return {k: float(v[0]) for k, v in _icc_values(parts, False).items() if k != "Residual"}


def _icc_values(parts: dict[str, np.ndarray], conditional: bool) -> dict[str, np.ndarray]:
    """Shares of each grouping factor and the residual; with `conditional` the fixed part joins the total."""
    levels = {k: v for k, v in parts.items() if k != "fixed"}
    total = sum(levels.values()) + (parts["fixed"] if conditional else 0.0)
    return {k: v / total for k, v in levels.items()}


def _r2_values(parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    random = sum(v for k, v in parts.items() if k not in ("fixed", "Residual"))
    total = parts["fixed"] + random + parts["Residual"]
    return {"marginal": parts["fixed"] / total, "conditional": (parts["fixed"] + random) / total}


def _table(result, values_of, name: str, level: float, bootstrap: int, seed) -> pd.DataFrame:
    """One row per quantity: the estimate, plus intervals (posterior quantiles or bootstrap percentiles)."""
    check_level(level)
    parts = _draws(result)
    values = values_of(parts)
    index = pd.Index([LATENT_ROW if k == "Residual" and _latent(result) else k for k in values], name=name)
    flat = np.column_stack([np.asarray(v, dtype=float).ravel() for v in values.values()])
    if not isinstance(result, Frequentist):
        return interval_table(flat, index, level)
    table = pd.DataFrame({"estimate": flat[0]}, index=index)
    if bootstrap:

        def statistic(fit):
            return pd.Series({k: float(np.ravel(v)[0]) for k, v in values_of(_draws(fit)).items()})

        ci = run_bootstrap(result, n=bootstrap, seed=seed, statistic=statistic).interval(level)
        table["ci_lower"], table["ci_upper"] = ci["lower"].to_numpy(), ci["upper"].to_numpy()
    return table


def variance_decomposition(result) -> pd.DataFrame:
    """Variance of the fixed part, of each grouping factor (row-averaged) and of the residual, with shares."""
    parts = {k: float(np.mean(v)) for k, v in _draws(result).items()}
    table = pd.DataFrame({"variance": parts}).rename_axis("component")
    random_total = sum(v for k, v in parts.items() if k != "fixed")
    table["share_random"] = [np.nan if k == "fixed" else v / random_total for k, v in parts.items()]
    table["share_total"] = table["variance"] / table["variance"].sum()
    return table


def icc(result, conditional: bool = False, level: float = 0.95, bootstrap: int = 0, seed=None) -> pd.DataFrame:
    """Intra-class correlation of every grouping factor (and the residual's share; without
    ``conditional`` the rows sum to 1).

    ``conditional=True`` puts the fixed part's variance in the denominator. A Bayesian fit gives posterior
    mean, SD and credible interval; a frequentist fit the estimate, with ``bootstrap=n`` percentile intervals.
    """
    return _table(result, lambda parts: _icc_values(parts, conditional), "component", level, bootstrap, seed)


def r2(result, level: float = 0.95, bootstrap: int = 0, seed=None) -> pd.DataFrame:
    """Nakagawa & Schielzeth's marginal (fixed part) and conditional (fixed + random) R²."""
    return _table(result, _r2_values, "r2", level, bootstrap, seed)
