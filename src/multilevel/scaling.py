"""How the cross-products hold the columns [X y]: centred where the model absorbs it, scaled by powers of two.

Sums of squares of uncentred data lose the digits that tell the rows apart: with y shifted by 1e6, y'y holds
1e12 of which the residual sum of squares is a difference in the 9th digit. Centring the columns before the sums
are formed keeps them; the engine undoes it exactly in every number it returns (docs/frequentist.md, "Numeric
range"). Centring needs a constant column in the model (an intercept, or a factor's full set of dummies) to absorb
the shift; without one the columns are only scaled. A product column (x:w, beside x, w and lower products) is
formed again from its centred parents, (x - c_x)(w - c_w): formed of x + 1e9 it would be nearly a multiple of w.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from fractions import Fraction
from itertools import combinations

import numpy as np
import scipy.linalg as sla

from .data import names_in
from .errors import MultilevelError
from .names import interaction_parts

FAR_COVARIATE = 10.0  # a random slope's covariate this many SDs from zero is centred in its term (beside an intercept)
FAR_SPREAD = 32.0  # a random slope's covariate whose spread lies beyond 32 (or below 1/32) is held scaled in its term
CENTRE_RATIO = 1.0  # centre a column whose mean exceeds its SD this many times (below it centring gains < 2x)
FAR_TRANSFORM = 1e3  # a nonlinear transform of a column this many SDs from zero has lost 6 digits (its square)
RANGE = 1e140  # values beyond it (or nonzero below its inverse) overflow (underflow) in the sums of squares
DIGITS_LOST = 1e-4  # warn when rounding a column's values (eps |mean|) exceeds this share of its SD
UNABSORBED = 100.0  # without a constant column, a response averaging this many SDs from zero exhausts the precision


@dataclass(frozen=True)
class Scaling:
    """The columns [X y] as the cross-products hold them: ([X y] - centre) / scale = [X y] A, with
    A = (I - [unit; 0] centre') diag(1 / scale) and X unit = 1 (the intercept, or dummies summing to one); a
    product column first formed again from its centred parents (`products`), which adds to A's column the
    expansion (x - c_x)(w - c_w) = x:w - c_w x - c_x w + c_x c_w unit.

    Only columns other than the unit's are centred, and only when a unit exists (the model absorbs the shift);
    scales are powers of two, so scaling alone changes no bit of any result. `lost` names columns whose values
    no longer resolve their own spread (a shift near 1/eps times it)."""

    centre: np.ndarray  # (p + 1,); a product column's: that of the product of its centred parents
    scale: np.ndarray  # (p + 1,)
    unit: np.ndarray  # (p,): X unit = 1, zeros when no combination of columns is constant
    lost: tuple[str, ...] = ()
    terms: tuple = ()  # per random term, the Scaling of its covariates [Z 0] (None: held as given); `random_columns`
    products: tuple = ()  # (column, its parents' columns, expansion: (column or -1 for the unit, parents left out))
    unabsorbed: tuple = ()  # without a unit: (mean, SD) of a response averaging over UNABSORBED SDs from zero

    @classmethod
    def identity(cls, p: int) -> Scaling:
        return cls(np.zeros(p + 1), np.ones(p + 1), np.zeros(p))

    @classmethod
    def learn(cls, X: np.ndarray, y: np.ndarray, names: list[str], ratio: float = CENTRE_RATIO, scaled: bool = True) -> Scaling:
        """Centres and scales from the rows at hand (a sample is enough: any nearby centre removes the shift): columns
        averaging more than `ratio` SDs from zero centred; `scaled=False` keeps scale 1."""
        Xy = np.column_stack([X, y])
        check_range(Xy, [f"column '{n}'" for n in names] + ["the response"])
        mean, sd = Xy.mean(axis=0), Xy.std(axis=0)
        unit = unit_combination(X, names)
        centre = column_centres(Xy, np.append(unit, 0.0), mean, sd, ratio)
        products = product_columns(X, names, centre, unit)
        if products:  # their own centres and scales are those of the products of the centred parents
            held_products(Xy, centre, products)
            mean, sd = Xy.mean(axis=0), Xy.std(axis=0)
            centre = column_centres(Xy, np.append(unit, 0.0), mean, sd, ratio)
        size = np.where(sd > 0, sd, np.abs(mean))
        scale = np.where(np.isfinite(size) & (size > 0), 2.0 ** np.round(np.log2(np.where(size > 0, size, 1.0))), 1.0)
        scale = scale if scaled else np.ones_like(scale)
        lost = (sd > 0) & (np.finfo(float).eps * np.abs(mean) > DIGITS_LOST * sd)
        far = not unit.any() and sd[-1] > 0 and abs(mean[-1]) > UNABSORBED * sd[-1]
        return cls(centre, scale, unit, tuple(n for n, bad in zip([f"column '{n}'" for n in names] + ["the response"], lost) if bad),
                   products=products, unabsorbed=(float(mean[-1]), float(sd[-1])) if far else ())

    def record(self) -> dict:
        """Plain values (a file's): centres, scales, the unit and the products (random terms' are not kept)."""
        return {"centre": self.centre.tolist(), "scale": self.scale.tolist(), "unit": self.unit.tolist(),
                "products": [[k, list(parents), [[row, list(out)] for row, out in expansion]]
                             for k, parents, expansion in self.products]}

    @classmethod
    def from_record(cls, record, p: int) -> Scaling:
        """The `record` of p fixed columns back, checked (a file's values, not trusted)."""
        try:
            centre, scale, unit = (np.asarray(record[k], dtype=float) for k in ("centre", "scale", "unit"))
            products = tuple((_index(k, p), tuple(_index(j, p) for j in parents),
                              tuple((_index(row, p, -1), tuple(_index(j, p) for j in out)) for row, out in expansion))
                             for k, parents, expansion in record["products"])
        except (KeyError, TypeError, ValueError) as err:
            raise MultilevelError(f"the saved column scaling is not readable ({err}): the file is damaged or altered") from None
        if centre.shape != (p + 1,) or scale.shape != (p + 1,) or unit.shape != (p,) or not np.all(np.isfinite(centre)) \
                or not np.all(scale > 0):
            raise MultilevelError(f"the saved column scaling does not fit the model's {p} fixed columns: the file is "
                                  "damaged or altered")
        return cls(centre, scale, unit, products=products)

    def apply(self, Xy: np.ndarray) -> np.ndarray:
        """The held columns of a fresh [X y], overwriting it (a second n x (p + 1) array costs more than the arithmetic)."""
        held_products(Xy, self.centre, self.products)
        Xy -= self.centre
        Xy /= self.scale
        return Xy

    @property
    def matrix(self) -> np.ndarray:
        """A, with [X y] A the columns held."""
        return self.matrix_of(float)

    def matrix_of(self, number) -> np.ndarray:
        """A with entries of the type `number` (float; `Fraction`: exact rational arithmetic on the floats held)."""
        dtype = float if number is float else object
        unit, centre, scale = (np.array([number(float(v)) for v in x], dtype=dtype)
                               for x in (np.append(self.unit, 0.0), self.centre, self.scale))
        eye = np.eye(len(unit), dtype=dtype)
        A = eye - np.outer(unit, centre)
        for k, _, expansion in self.products:
            A[:, k] = -centre[k] * unit
            for row, left_out in expansion:
                A[:, k] += np.prod(-centre[list(left_out)]) * (unit if row < 0 else eye[row])
        return A / scale

    def _order(self) -> np.ndarray:
        """The order of the columns in which A is upper triangular: the unit's first, products after their factors."""
        unit = np.append(self.unit, 0.0)
        degree = np.ones(len(unit))
        for k, parents, _ in self.products:
            degree[k] = len(parents)
        return np.lexsort((np.arange(len(unit)), degree, unit == 0))

    @property
    def inverse(self) -> np.ndarray:
        """A^-1 by back substitution: A is upper triangular with the unit's columns first and products after their
        factors (without products, diag(scale) (I + [unit; 0] centre'), exactly)."""
        A, order = self.matrix, self._order()
        inv = np.empty_like(A)
        inv[np.ix_(order, order)] = sla.solve_triangular(A[np.ix_(order, order)], np.eye(len(order)), lower=False)
        return inv

    def map_to(self, other: Scaling) -> np.ndarray:
        """A^-1 A_other, the map from these held columns to `other`'s ([X y] A_other = held A^-1 A_other), in exact
        rational arithmetic and rounded once: each factor holds products of centres (c^2 for x + 1e9 in a product)
        that cancel in the map, whose entries are differences of nearby centres (without products, in floats: A^-1
        is then exact and the map's error that of a centre, absorbed by the intercept)."""
        if not self.products and not other.products:
            return self.inverse @ other.matrix
        A, B, order = self.matrix_of(Fraction), other.matrix_of(Fraction), self._order()
        A, B = A[np.ix_(order, order)], B[order]
        M = np.empty_like(B)
        for i in reversed(range(len(order))):
            M[i] = (B[i] - A[i, i + 1:] @ M[i + 1:]) / A[i, i]
        out = np.empty(M.shape)
        out[order] = M.astype(float)
        return out

    def coefficients(self, beta: np.ndarray) -> np.ndarray:
        """The user's coefficients from those of the held columns: [-beta; 1] = scale_y A [-beta_held; 1]."""
        return -self.scale[-1] * (self.matrix @ np.append(-beta, 1.0))[:-1]

    def held_coefficients(self, beta: np.ndarray) -> np.ndarray:
        """The inverse of `coefficients`."""
        return -(self.inverse @ np.append(-beta, 1.0))[:-1] / self.scale[-1]

    @property
    def coefficient_map(self) -> np.ndarray:
        """The linear part of `coefficients`: scale_y A_X (the rest moves with the response's centre)."""
        return self.scale[-1] * self.matrix[: len(self.unit), : len(self.unit)]

    def coefficient_covariance(self, V: np.ndarray) -> np.ndarray:
        """The covariance of the user's coefficients from V, that of the held ones."""
        A = self.coefficient_map
        return A @ V @ A.T

    def random_effects(self, b: list[np.ndarray]) -> list[np.ndarray]:
        """The user's group effects (one (levels x k) array per term) from the held ones: b = M b_held per level."""
        return [bi @ self.random_map(i, bi.shape[1]).T for i, bi in enumerate(b)]

    def precision_factor(self, R: np.ndarray) -> np.ndarray:
        """R_X of the user's columns from that of the held ones: A_X^-T R (not triangular once centred)."""
        p = len(self.unit)
        return self.inverse[:p, :p].T @ R

    def covariance_factor(self, R: np.ndarray) -> np.ndarray:
        """R_X^-1 of the user's columns from R of the held ones (lower triangular): R^-1 A_X', formed without
        inverting R_X, whose condition grows with the square of a product's shift."""
        p = len(self.unit)
        return sla.solve_triangular(R, self.matrix[:p, :p].T, lower=True)

    def random_map(self, term: int, k: int) -> np.ndarray:
        """M with the term's covariates as held, Z_held = Z M, so that b = M b_held and Sigma = M Sigma_held M' in
        the user's terms: the term's own A (identity unless its covariates are held centred)."""
        columns = self.terms[term] if term < len(self.terms) else None
        return np.eye(k) if columns is None else columns.matrix[:k, :k]

    @property
    def random_centred(self) -> bool:
        """True when a random slope's covariate is held centred."""
        return any(c is not None and np.any(c.centre) for c in self.terms)

    @property
    def random_held(self) -> bool:
        """True when a random slope's covariate is held otherwise than given (centred or scaled)."""
        return any(c is not None for c in self.terms)


    def drop(self, keep: np.ndarray) -> Scaling:
        """The scaling of the columns `keep` of [X y] (aliased columns dropped; the last is the response)."""
        position = {int(j): i for i, j in enumerate(keep)}
        position[-1] = -1
        products = []
        for k, parents, expansion in self.products:
            if k not in position:
                continue
            if any(j not in position for j in parents) or any(row not in position for row, _ in expansion):
                raise MultilevelError(
                    f"a factor of the product column {k + 1} is aliased (dropped) while the product is not: the product "
                    "cannot be held centred. Drop the aliased factor from the formula (or centre it in the data)"
                )
            products.append((position[k], tuple(position[j] for j in parents),
                             tuple((position[row], tuple(position[j] for j in out)) for row, out in expansion)))
        return replace(self, centre=self.centre[keep], scale=self.scale[keep], unit=self.unit[keep[:-1]],
                       products=tuple(products))


def check_range(Xy: np.ndarray, labels: list[str]) -> None:
    """Refuse columns whose largest magnitude lies beyond RANGE (or below 1 / RANGE, not 0): their squares and sums
    overflow (or underflow to 0) before any centring or scaling can help (y * 1e-200 gave sigma = 0, silently)."""
    big = np.max(np.abs(Xy), axis=0, initial=0.0)
    for label, b in zip(labels, big):
        if b > RANGE or 0 < b < 1 / RANGE:
            raise MultilevelError(
                f"{label} reaches {b:.3g}: beyond about 1e{'+' if b > 1 else '-'}140 the squares and sums a fit forms "
                "overflow double precision (or underflow to 0). Express it in other units first (multiply it by a power of "
                "ten that brings it near 1)"
            )


def _index(value, p: int, low: int = 0) -> int:
    """A column index of a file's record, checked to lie in [low, p)."""
    if type(value) is not int or not low <= value < p:
        raise ValueError(f"column index {value!r} out of range")
    return value


def precision_message(column: str) -> str:
    """Plain words for a column whose values no longer resolve their own spread (`Scaling.lost`)."""
    return (
        f"{column} lies so far from zero for its spread that its values are stored with rounding errors above 1e-4 of "
        "that spread: the data themselves have lost digits that tell the rows apart, and the estimates can be off by "
        "a similar share. Subtract a constant from it before the data are stored as floating-point numbers."
    )


def unabsorbed_messages(held: Scaling) -> list[str]:
    """Plain words for a model without an intercept (nor a factor's full set of dummies) whose response lies far from
    zero for its spread (`Scaling.unabsorbed`): nothing can take the shift out before the sums are formed."""
    if not held.unabsorbed:
        return []
    mean, sd = held.unabsorbed
    return [
        f"the response averages {mean:.3g}, {abs(mean) / sd:.3g} times its SD from zero, and the model has no intercept (nor "
        "a factor's full set of dummies) to absorb that distance: the random effects must carry it, their variance grows "
        "to its square, and double precision runs out before the criterion resolves sigma and the variances (a fit of "
        "sleepstudy's Reaction + 1e9 without an intercept gave a sigma 2.3 times too large). The estimates may be off. "
        "Add an intercept to the fixed part ('y ~ 1 + x + ...'), which absorbs the distance exactly; without one the "
        "model says the mean response is 0 where the predictors are 0."
    ]


def far_covariate_messages(blocks, held: Scaling) -> list[str]:
    """Random slopes whose covariate lies far from zero beside the term's intercept (held centred, `random_columns`):
    the fit is exact, but the intercept's variance and its correlation with the slope describe the covariate at 0."""
    out = []
    for block, columns in zip(blocks, held.terms):
        products = {k for k, _, _ in columns.products} if columns is not None else set()
        for j, (name, mean) in enumerate(zip(block.coef_names, [] if columns is None else columns.centre)):
            if mean != 0 and j not in products:
                out.append(
                    f"the random slope '{name}' by '{block.group}' has covariate values averaging {mean:.3g}, more than "
                    f"{FAR_COVARIATE:g} times their spread from zero: the intercept's variance and its correlation with the "
                    f"slope refer to '{name}' = 0, far outside the data (computed exactly, the covariate centred within "
                    f"the fit, but an extrapolation). Centre '{name}' (subtract a value near its mean) for values within "
                    "the data."
                )
    return out


def random_columns(blocks) -> tuple:
    """Per random term with a covariate, the `Scaling` that holds its covariates centred where one averages more than
    FAR_COVARIATE SDs from zero beside the term's intercept (products of them formed of centred factors), and scaled by
    a power of two where one's spread lies beyond FAR_SPREAD or below its inverse; None for the others (held as
    given). Held so, the term's covariance is that of covariates near their mean and of a spread near 1, which
    floating point and the optimiser resolve (Days * 1e-8 gave a sigma 21 % off; * 1e8 failed); `random_map`
    undoes it."""
    out = []
    for block in blocks:
        columns = None
        if any(name != "(Intercept)" for name in block.coef_names):
            learned = Scaling.learn(block.Z, np.zeros(len(block.Z)), block.coef_names, FAR_COVARIATE)
            far = (learned.scale > FAR_SPREAD) | (learned.scale < 1 / FAR_SPREAD)
            columns = replace(learned, scale=np.where(far, learned.scale, 1.0))
        held = columns is not None and (np.any(columns.centre) or np.any(columns.scale != 1.0))
        out.append(columns if held else None)
    return tuple(out)


def term_scales(terms: tuple, n: int) -> list:
    """Per random term (n of them), the scales its covariates are held by (None: as given; `random_columns`): what a
    saved theta refers to."""
    return [None if i >= len(terms) or terms[i] is None else terms[i].scale[:-1].tolist() for i in range(n)]


def held_random(block, columns: Scaling | None):
    """The block with its covariates as `columns` holds them (unchanged for None)."""
    if columns is None:
        return block
    return replace(block, Z=columns.apply(np.column_stack([block.Z, np.zeros(len(block.Z))]))[:, :-1])


def held_blocks(design, scaling: Scaling) -> list:
    """The design's random blocks with their covariates as `scaling` holds them."""
    terms = scaling.terms or (None,) * len(design.blocks)
    return [held_random(b, c) for b, c in zip(design.blocks, terms)]


def held_columns(X: np.ndarray, names: list[str]) -> np.ndarray:
    """X as the cross-products would hold it (centred, products formed of centred parents, scaled): what aliasing is
    judged on, so that a shift of a column changes nothing."""
    Xy = np.column_stack([X, np.zeros(len(X))])
    return Scaling.learn(X, Xy[:, -1], names).apply(Xy)[:, :-1]


def column_centres(M: np.ndarray, unit: np.ndarray, mean: np.ndarray | None = None, sd: np.ndarray | None = None,
                   ratio: float = CENTRE_RATIO) -> np.ndarray:
    """The centre of each column of M: its mean where it exceeds `ratio` SDs, the column is not part of the unit
    (M unit = 1, which absorbs the shift) and a unit exists; else 0."""
    mean = M.mean(axis=0) if mean is None else mean
    sd = M.std(axis=0) if sd is None else sd
    movable = (sd > 0) & (unit == 0) & unit.any()
    return np.where(movable & (np.abs(mean) > ratio * sd), mean, 0.0)


def product_columns(X: np.ndarray, names: list[str], centre: np.ndarray, unit: np.ndarray) -> tuple:
    """Product columns to form again from centred parents: each x:w:.. or power I(x^2) whose factors (x, w, ..) are
    columns, one at least centred, every product of fewer of them a column too (the expansion needs them: `x*w`, not
    `x:w` alone; `x + I(x^2)`, not `I(x^2)` alone), and which equals the product of its factors' columns to rounding.
    A factor repeated (a power) is a parent as many times."""
    if not unit.any():
        return ()
    parts = [factor_parts(n) for n in names]
    column = {}
    for j, part in enumerate(parts):
        column.setdefault(part, j)
    out = []
    for k, part in enumerate(parts):
        parents = sorted(column.get((f,), -1) for f in part)
        if len(part) < 2 or unit[k] != 0 or min(parents) < 0 or not np.any(centre[parents]):
            continue
        expansion = []
        for size in range(len(parents) + 1):
            for kept in combinations(range(len(parents)), size):
                factors = tuple(sorted(f for i in kept for f in parts[parents[i]]))
                row = -1 if not kept else column.get(factors, -2)
                expansion.append((row, tuple(j for i, j in enumerate(parents) if i not in kept)))
        product = np.prod(X[:, parents], axis=1)
        if any(row == -2 for row, _ in expansion) or np.any(np.abs(X[:, k] - product) > 8 * np.finfo(float).eps * np.abs(product)):
            continue
        out.append((k, tuple(parents), tuple(expansion)))
    return tuple(out)


_POWER = re.compile(r"^I\((?P<name>[^\W\d][\w.]*)\s*(?:\^|\*\*)\s*(?P<power>[2-9])\)$")
_RAW_POLY = re.compile(r"^poly\((?P<name>[^\W\d][\w.]*),\s*\d+,\s*raw\s*=\s*True\)(?P<power>\d)$")


def factor_parts(name: str) -> tuple[str, ...]:
    """A column's factors as a sorted multiset: 'x:w' -> ('w', 'x'), 'I(x^2)' -> ('x', 'x'), 'x:I(x^2)' -> ('x', 'x',
    'x'); any other name is its own single factor."""
    out = []
    for part in interaction_parts(name):
        power, raw = _POWER.match(part.strip()), _RAW_POLY.match(part.strip())
        if raw:  # formulaic's raw polynomial columns count from 0: x, x^2, ...
            out += [raw["name"]] * (int(raw["power"]) + 1)
        else:
            out += [power["name"]] * int(power["power"]) if power else [part]
    return tuple(sorted(out))


def transform_messages(X: np.ndarray, names: list[str], frame, evaluate) -> list[str]:
    """Plain words for fixed columns computed from a numeric data column lying more than FAR_TRANSFORM SDs from zero
    by a transform that is not affine in it and is not formed again here of the centred column (products and powers
    whose lower terms are columns are: `product_columns`; formulaic's orthogonal `poly(x, d)` centres x itself): the
    formula library evaluates it before any centring, so its values have lost digits (a square: twice the decimal
    digits of the column's distance from zero in SDs). `evaluate(rows)` gives the columns of other rows (affinity is
    judged on three rows along the inputs' line, x = 0, m, 2m: rounding hides the curvature near the data)."""
    columns, out, handled = set(frame.columns), [], None
    for k, name in enumerate(names):
        x = X[:, k]
        if name in columns or np.all((x == 0) | (x == 1)) or (name.startswith("poly(") and "raw" not in name):
            continue
        if handled is None:  # learned only when a computed column needs the test
            handled = {j for j, _, _ in Scaling.learn(X, np.zeros(len(X)), names).products}
        if k in handled:
            continue
        far = [c for c in names_in(name, columns) if _far(frame[c])]
        if far and not _affine_in(evaluate, frame, far, k):
            values = np.asarray(frame[far[0]], dtype=float)
            out.append(
                f"the column '{name}' is computed from '{far[0]}', whose values average {values.mean():.3g}, "
                f"{abs(values.mean()) / values.std():.2g} times their spread from zero: the formula evaluates it before any "
                f"centring, so its values have lost more than 6 of their 16 digits (a square of '{far[0]}' loses twice the "
                f"digits of that ratio) and the estimates involving it can be off. Centre '{far[0]}' in the data first "
                f"(subtract a value near its mean); a polynomial written in full ('{far[0]} + I({far[0]}^2)') or "
                f"poly({far[0]}, 2) is formed exactly"
            )
    return out


def _far(column) -> bool:
    """A numeric column averaging more than FAR_TRANSFORM SDs from zero."""
    values = np.asarray(column)
    if not np.issubdtype(values.dtype, np.number) or values.dtype == bool:
        return False
    values = values.astype(float)
    return bool(values.std() > 0 and abs(values.mean()) > FAR_TRANSFORM * values.std())


def _affine_in(evaluate, frame, inputs: list[str], k: int) -> bool:
    """Whether column k is affine in the inputs: its second difference along x = t m (t = 0, 1, 2; every input at once)
    vanishes to rounding (center(x), scale(x), I(x - c) do; I(x^2), log(x) do not)."""
    rows = frame.iloc[[0, 0, 0]].copy()
    for c in inputs:
        rows[c] = np.array([0.0, 1.0, 2.0]) * float(np.asarray(frame[c], dtype=float).mean())
    try:
        col = np.asarray(evaluate(rows), dtype=float)[:, k]
    except Exception:  # noqa: BLE001 (a transform undefined at 0, such as log: not affine)
        return False
    second = col[0] - 2.0 * col[1] + col[2]
    return bool(np.all(np.isfinite(col)) and abs(second) <= 1e-9 * np.sum(np.abs(col) * [1.0, 2.0, 1.0]))


def held_products(Xy: np.ndarray, centre: np.ndarray, products: tuple) -> None:
    """Overwrite each product column with the product of its centred parents (parents are not products)."""
    for k, parents, _ in products:
        Xy[:, k] = np.prod(Xy[:, list(parents)] - centre[list(parents)], axis=1)


def unit_combination(X: np.ndarray, names: list[str]) -> np.ndarray:
    """Integer coefficients u with X u = 1 exactly (the intercept; or a factor's full set of dummies), else zeros."""
    p = X.shape[1]
    if "(Intercept)" in names:
        return np.eye(p)[list(names).index("(Intercept)")]
    if p == 0 or not len(X):
        return np.zeros(p)
    u = np.rint(np.linalg.lstsq(X, np.ones(len(X)), rcond=None)[0])
    return u if np.array_equal(X @ u, np.ones(len(X))) else np.zeros(p)
