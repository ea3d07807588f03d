"""How the cross-products hold the columns [X y]: centred where the model absorbs it, scaled by powers of two.

Sums of squares of uncentred data lose the digits that tell the rows apart: with y shifted by 1e6, y'y holds
1e12 of which the residual sum of squares is a difference in the 9th digit. Centring the columns before the sums
are formed keeps them; the engine undoes it exactly in every number it returns (docs/frequentist.md, "Numeric
range"). Centring needs a constant column in the model (an intercept, or a factor's full set of dummies) to absorb
the shift; without one the columns are only scaled.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

FAR_COVARIATE = 10.0  # a random slope's covariate this many SDs from zero is centred in its term (beside an intercept)
CENTRE_RATIO = 1.0  # centre a column whose mean exceeds its SD this many times (below it centring gains < 2x)
DIGITS_LOST = 1e-4  # warn when rounding a column's values (eps |mean|) exceeds this share of its SD


@dataclass(frozen=True)
class Scaling:
    """The columns [X y] as the cross-products hold them: ([X y] - centre) / scale = [X y] A, with
    A = (I - [unit; 0] centre') diag(1 / scale) and X unit = 1 (the intercept, or dummies summing to one).

    Only columns other than the unit's are centred, and only when a unit exists (the model absorbs the shift);
    scales are powers of two, so scaling alone changes no bit of any result. `lost` names columns whose values
    no longer resolve their own spread (a shift near 1/eps times it)."""

    centre: np.ndarray  # (p + 1,)
    scale: np.ndarray  # (p + 1,)
    unit: np.ndarray  # (p,): X unit = 1, zeros when no combination of columns is constant
    lost: tuple[str, ...] = ()
    z_centre: tuple = ()  # per random term, (k,) centres of its covariates (None: held as given); `random_map`

    @classmethod
    def identity(cls, p: int) -> Scaling:
        return cls(np.zeros(p + 1), np.ones(p + 1), np.zeros(p))

    @classmethod
    def learn(cls, X: np.ndarray, y: np.ndarray, names: list[str]) -> Scaling:
        """Centres and scales from the rows at hand (a sample is enough: any nearby centre removes the shift)."""
        Xy = np.column_stack([X, y])
        mean, sd = Xy.mean(axis=0), Xy.std(axis=0)
        size = np.where(sd > 0, sd, np.abs(mean))
        scale = np.where(np.isfinite(size) & (size > 0), 2.0 ** np.round(np.log2(np.where(size > 0, size, 1.0))), 1.0)
        unit = unit_combination(X, names)
        centre = column_centres(Xy, np.append(unit, 0.0), mean, sd)
        lost = (sd > 0) & (np.finfo(float).eps * np.abs(mean) > DIGITS_LOST * sd)
        return cls(centre, scale, unit, tuple(n for n, bad in zip([f"column '{n}'" for n in names] + ["the response"], lost) if bad))

    def apply(self, Xy: np.ndarray) -> np.ndarray:
        """The held columns of a fresh [X y], overwriting it (a second n x (p + 1) array costs more than the arithmetic)."""
        Xy -= self.centre
        Xy /= self.scale
        return Xy

    @property
    def matrix(self) -> np.ndarray:
        """A, with [X y] A the columns held."""
        unit = np.append(self.unit, 0.0)
        return (np.eye(len(unit)) - np.outer(unit, self.centre)) / self.scale

    @property
    def inverse(self) -> np.ndarray:
        """A^-1 = diag(scale) (I + [unit; 0] centre') (centre' unit = 0)."""
        unit = np.append(self.unit, 0.0)
        return self.scale[:, None] * (np.eye(len(unit)) + np.outer(unit, self.centre))

    def coefficients(self, beta: np.ndarray) -> np.ndarray:
        """The user's coefficients from those of the held columns: [-beta; 1] = scale_y A [-beta_held; 1]."""
        return -self.scale[-1] * (self.matrix @ np.append(-beta, 1.0))[:-1]

    def held_coefficients(self, beta: np.ndarray) -> np.ndarray:
        """The inverse of `coefficients`."""
        return -(self.inverse @ np.append(-beta, 1.0))[:-1] / self.scale[-1]

    def precision_factor(self, R: np.ndarray) -> np.ndarray:
        """R_X of the user's columns from that of the held ones: A_X^-T R (not triangular once centred)."""
        p = len(self.unit)
        return self.inverse[:p, :p].T @ R

    def random_map(self, term: int, k: int) -> np.ndarray:
        """M with the term's covariates as held, Z_held = Z M, so that b = M b_held and Sigma = M Sigma_held M' in
        the user's terms: identity, but for centred covariates M[intercept, j] = -centre_j."""
        M = np.eye(k)
        centre = self.z_centre[term] if term < len(self.z_centre) else None
        if centre is not None:
            M[int(np.flatnonzero(centre == INTERCEPT)[0])] = np.where(centre == INTERCEPT, 1.0, -centre)
        return M

    @property
    def random_centred(self) -> bool:
        """True when a random slope's covariate is held centred."""
        return any(c is not None for c in self.z_centre)

    def drop(self, keep: np.ndarray) -> Scaling:
        """The scaling of the columns `keep` of [X y] (aliased columns dropped; the last is the response)."""
        return replace(self, centre=self.centre[keep], scale=self.scale[keep], unit=self.unit[keep[:-1]])


INTERCEPT = np.inf  # marks the intercept's place in a term's `z_centre`


def random_centres(blocks) -> tuple:
    """Per random term with an intercept, the centres of its covariates averaging more than FAR_COVARIATE SDs from
    zero (0 for the others, INTERCEPT at the intercept); None for a term without any. Held centred, the term's
    covariance is that of the covariates near their mean, which floating point resolves; `random_map` undoes it."""
    out = []
    for block in blocks:
        if "(Intercept)" not in block.coef_names or block.k < 2:
            out.append(None)
            continue
        mean, sd = block.Z.mean(axis=0), block.Z.std(axis=0)
        centre = np.where((sd > 0) & (np.abs(mean) > FAR_COVARIATE * sd), mean, 0.0)
        centre[block.coef_names.index("(Intercept)")] = INTERCEPT
        out.append(centre if np.any(np.isfinite(centre) & (centre != 0)) else None)
    return tuple(out)


def held_random(block, centre):
    """The block with its covariates as held: Z - Z[:, intercept] centre' (unchanged for None)."""
    if centre is None:
        return block
    a = int(np.flatnonzero(centre == INTERCEPT)[0])
    shift = np.where(centre == INTERCEPT, 0.0, centre)
    return replace(block, Z=block.Z - block.Z[:, [a]] * shift)


def column_centres(M: np.ndarray, unit: np.ndarray, mean: np.ndarray | None = None, sd: np.ndarray | None = None) -> np.ndarray:
    """The centre of each column of M: its mean where it exceeds CENTRE_RATIO SDs, the column is not part of the
    unit (M unit = 1, which absorbs the shift) and a unit exists; else 0."""
    mean = M.mean(axis=0) if mean is None else mean
    sd = M.std(axis=0) if sd is None else sd
    movable = (sd > 0) & (unit == 0) & unit.any()
    return np.where(movable & (np.abs(mean) > CENTRE_RATIO * sd), mean, 0.0)


def unit_combination(X: np.ndarray, names: list[str]) -> np.ndarray:
    """Integer coefficients u with X u = 1 exactly (the intercept; or a factor's full set of dummies), else zeros."""
    p = X.shape[1]
    if "(Intercept)" in names:
        return np.eye(p)[list(names).index("(Intercept)")]
    if p == 0 or not len(X):
        return np.zeros(p)
    u = np.rint(np.linalg.lstsq(X, np.ones(len(X)), rcond=None)[0])
    return u if np.array_equal(X @ u, np.ones(len(X))) else np.zeros(p)
