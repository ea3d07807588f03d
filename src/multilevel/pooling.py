"""Complete, no and partial pooling side by side: the data behind a shrinkage plot.

For one grouping factor and each of its coefficients (intercept, slopes):

- no pooling: least squares with a separate coefficient per group (the group effects as unpenalised
  indicator columns; covariates without a group effect keep one common coefficient) — the mixed model's
  limit as the between-group variance grows without bound;
- complete pooling: least squares ignoring the groups (every group gets the population coefficient);
- partial pooling: the fit's population coefficient plus the group's effect (conditional mode, or the
  posterior mean of their sum for a Bayesian fit);
- shrinkage: (no pooling - partial) / (no pooling - population), 0 when the group's own data decide alone
  and 1 when it is pulled all the way to the population value (with correlated coefficients a slope can be
  pulled past it or away from it: the pull acts on the vector). For a random intercept with no other
  covariates this is sigma²/n_j / (tau² + sigma²/n_j).

Other random terms of the model are left out of the no- and complete-pooling regressions.

>>> import multilevel as mlv
>>> fit = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff")).fit()
>>> pooling(fit).round(2).head(2)[["level", "n", "no_pooling", "partial_pooling", "shrinkage"]]
  level  n  no_pooling  partial_pooling  shrinkage
0     A  5      1505.0          1509.89       0.22
1     B  5      1528.0          1527.89       0.22
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .crossprod import rescaled, response
from .errors import MultilevelError, MultilevelWarning
from .kinds import Frequentist
from .partitioned import PartitionedDesign, refuse_rows
from .scaling import Scaling


def _block(design, group: str | None):
    """The random term of `group` (the only one if there is one)."""
    blocks = design.blocks
    if group is None:
        if len(blocks) > 1:
            raise MultilevelError(
                f"the model has several random terms ({', '.join(b.group for b in blocks)}): pass group=... to choose one"
            )
        return blocks[0]
    for b in blocks:
        if b.group == group:
            return b
    raise MultilevelError(f"no random term for group {group!r}; the model has {[b.group for b in blocks]}")


def _term_index(design, block) -> int:
    """The block's position among the design's terms (by identity: comparing blocks would read their rows)."""
    return next(i for i, b in enumerate(design.blocks) if b is block)


def no_pooling(design, block) -> np.ndarray:
    """Per-group least-squares coefficients (m, k); NaN where a group's own data cannot identify them. Solved in
    centred columns (`_centred`), so covariates far from zero (x + 1e9) keep their digits."""
    m, k = block.m, block.k
    common = [j for j, name in enumerate(design.fixed_names) if name not in block.coef_names]
    Z, X, shift, means = _centred(block, design.X[:, common])
    Zg = np.zeros((design.nobs, m * k))
    rows = np.arange(design.nobs)
    for a in range(k):
        Zg[rows, block.codes * k + a] = Z[:, a]
    ok = np.array([np.linalg.matrix_rank(Z[block.codes == g]) == k for g in range(m)])
    if not ok.all():
        warnings.warn(
            f"{int((~ok).sum())} level(s) of '{block.group}' have too few distinct rows to estimate their own "
            f"{block.coef_names}: their no-pooling estimates are NaN and their rows are left out",
            MultilevelWarning,
            stacklevel=3,
        )
    keep_rows = ok[block.codes]
    keep_cols = np.repeat(ok, k)
    A = np.column_stack([X, Zg[:, keep_cols]])[keep_rows]
    norms = np.linalg.norm(A, axis=0)
    norms[norms == 0] = 1.0
    y = response(design)[keep_rows]
    coef, _, rank, _ = np.linalg.lstsq(A / norms, y, rcond=None)
    if rank < A.shape[1]:
        raise _not_identified(block)
    coef = coef / norms
    out = np.full((m, k), np.nan)
    out[ok] = coef[len(common):].reshape(-1, k)
    if "(Intercept)" in block.coef_names:  # undo the centring: the intercepts at the covariates' zero
        out[:, block.coef_names.index("(Intercept)")] -= np.sum(out * shift, axis=1) + means @ coef[:len(common)]
    return out


def _centred(block, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The term's covariates centred within each group and the common columns X at their means, where the term has
    an intercept to absorb the shifts (as given otherwise), with each group's covariate means (m, k; 0 for the
    intercept) and the common columns' means. Exact reparametrisations: without them a covariate far from zero
    leaves a group's [1, x] nearly collinear (x + 1e9: every slope NaN)."""
    Z, shift = block.Z.copy(), np.zeros((block.m, block.k))
    if "(Intercept)" not in block.coef_names:
        return Z, X, shift, np.zeros(X.shape[1])
    n = np.bincount(block.codes, minlength=block.m)
    for a, name in enumerate(block.coef_names):
        if name != "(Intercept)":
            shift[:, a] = np.bincount(block.codes, Z[:, a], minlength=block.m) / np.maximum(n, 1)
            Z[:, a] -= shift[block.codes, a]
    means = X.mean(axis=0)
    return Z, X - means, shift, means


def _not_identified(block) -> MultilevelError:
    return MultilevelError(
        f"the no-pooling regression is not identified: a covariate is constant within every level of "
        f"'{block.group}' (a group-level predictor), so it cannot be told apart from the groups' own "
        "coefficients. Fit the model without it to see no-pooling estimates."
    )


NOT_IDENTIFIED = 1e-10  # a common column whose part not explained by the groups' columns is below this share of it


def pooling_from_sums(cp, design, block) -> tuple[np.ndarray, np.ndarray]:
    """`no_pooling` and `complete_pooling` of unweighted partitioned data from the cross-products, by the normal
    equations with each level's k x k block eliminated (a Schur complement in the common columns); refused when a
    level cannot identify its own coefficients (the in-memory path leaves its rows out, which the sums cannot)."""
    m, k, t, p = block.m, block.k, _term_index(design, block), cp.p
    user, back = rescaled(cp, None), np.linalg.inv(cp.held.random_map(t, k))  # the user's columns
    A = np.einsum("ba,gbc,cd->gad", back, cp.diag[t], back)
    zxy = np.einsum("ba,gbc->gac", back, user.zxy[t].reshape(m, k, p + 1))
    if design.coding.weights is not None or np.any(np.linalg.matrix_rank(A) < k):
        refuse_rows(design, f"pooling with weights, or with levels of '{block.group}' whose rows cannot estimate their "
                            f"own {block.coef_names} (the in-memory table leaves those rows out),")
    common = [j for j, name in enumerate(design.fixed_names) if name not in block.coef_names]
    B = zxy[:, :, common + [p]]  # Z_g'[C y]
    solved = np.linalg.solve(A, B)
    schur = user.xy[np.ix_(common + [p], common + [p])] - np.einsum("gka,gkb->ab", B, solved)
    n_common = len(common)
    if np.any(np.diag(schur)[:n_common] <= NOT_IDENTIFIED * np.diag(user.xy)[common]):
        raise _not_identified(block)
    gamma = np.linalg.solve(schur[:n_common, :n_common], schur[:n_common, -1])
    none = solved[:, :, -1] - solved[:, :, :n_common] @ gamma
    beta = np.linalg.solve(user.xy[:p, :p], user.xy[:p, p])
    names = design.fixed_names
    return none, np.array([beta[names.index(c)] if c in names else 0.0 for c in block.coef_names])


def complete_pooling(design, coef_names: list[str]) -> np.ndarray:
    """Least-squares coefficients ignoring the groups, for the named coefficients (0 if not in X), solved in the
    columns as the cross-products hold them (`scaling.Scaling`)."""
    held = Scaling.learn(design.X, response(design), design.fixed_names)  # centred columns: no digits lost to x + 1e9
    Xy = held.apply(np.column_stack([design.X, response(design)]))
    beta = held.coefficients(np.linalg.lstsq(Xy[:, :-1], Xy[:, -1], rcond=None)[0])
    return np.array([beta[design.fixed_names.index(c)] if c in design.fixed_names else 0.0 for c in coef_names])


def _partial(result, block) -> tuple[np.ndarray, np.ndarray]:
    """Population coefficients (k,) and partial-pooling group coefficients (m, k) of one term."""
    names = result.design.fixed_names
    idx = [names.index(c) if c in names else None for c in block.coef_names]
    t = _term_index(result.design, block)
    if isinstance(result, Frequentist):
        pop = np.array([result.beta[j] if j is not None else 0.0 for j in idx])
        return pop, pop + result.random_effects[t]
    beta = result.beta.reshape(-1, result.beta.shape[-1])
    pop_draws = np.column_stack([beta[:, j] if j is not None else np.zeros(len(beta)) for j in idx])
    b = result.b[t].reshape(-1, block.m, block.k)
    return pop_draws.mean(axis=0), (pop_draws[:, None, :] + b).mean(axis=0)


def pooling(result, group: str | None = None) -> pd.DataFrame:
    """Per group and coefficient: size, no-, complete- and partial-pooling estimates, and the shrinkage."""
    design = result.design
    block = _block(design, group)
    if isinstance(design, PartitionedDesign):
        (none, complete), n = pooling_from_sums(result.model.cross_products, design, block), block.sizes
    else:
        none, complete = no_pooling(design, block), complete_pooling(design, block.coef_names)
        n = np.bincount(block.codes, minlength=block.m)
    population, partial = _partial(result, block)
    rows = []
    for a, coef in enumerate(block.coef_names):
        with np.errstate(invalid="ignore", divide="ignore"):
            shrink = (none[:, a] - partial[:, a]) / (none[:, a] - population[a])
        rows.append(
            pd.DataFrame(
                {
                    "group": block.group,
                    "level": block.levels,
                    "term": coef,
                    "n": n,
                    "no_pooling": none[:, a],
                    "complete_pooling": complete[a],
                    "partial_pooling": partial[:, a],
                    "population": population[a],
                    "shrinkage": shrink,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)
