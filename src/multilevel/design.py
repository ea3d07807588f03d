"""Formula + data to numbers (pipeline step 2): y, X with named columns, one block per random term.

Every later stage reads the `Design` and nothing else of the data. Fixed-effect names follow lme4
(``(Intercept)``, ``sectorCatholic``, ``temperature.L``, ``I(Days^2)``); see docs/formula.md.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import formulaic
import numpy as np
import pandas as pd

from .data import (
    as_factor,
    as_frame,
    check_finite,
    check_types,
    drop_missing,
    _holds_numbers,
    names_in,
    prepare_categoricals,
    unknown_column_error,
    unknown_names,
)
from .errors import MultilevelError, MultilevelWarning
from .formula import Formula, RandomTerm, _plain, _to_python_power, cbind_parts, parse

_MISSING_RE = re.compile(r"`([^`]+)` is not present")
ALIAS_TOL = 1e-7


@dataclass
class RandomBlock:
    """One random-effects term as numbers: group codes, level labels and per-row covariates."""

    term: RandomTerm
    coef_names: list[str]
    levels: np.ndarray
    codes: np.ndarray
    Z: np.ndarray
    spec: object = field(default=None, repr=False)

    @property
    def group(self) -> str:
        return self.term.group

    @property
    def k(self) -> int:
        """Number of coefficients that vary by group."""
        return self.Z.shape[1]

    @property
    def m(self) -> int:
        """Number of levels of the grouping factor."""
        return len(self.levels)

    @property
    def q(self) -> int:
        """Number of random effects of this term."""
        return self.m * self.k


@dataclass
class Design:
    """Numbers of a mixed model: response, fixed-effect matrix, random blocks, weights, offset."""

    formula: Formula
    y: np.ndarray
    X: np.ndarray
    fixed_names: list[str]
    blocks: list[RandomBlock]
    weights: np.ndarray | None = None
    offset: np.ndarray | None = None
    se: np.ndarray | None = None
    n_dropped: int = 0
    aliased: list[str] = field(default_factory=list)
    frame: pd.DataFrame | None = field(default=None, repr=False)
    fixed_spec: object = field(default=None, repr=False)
    trials: np.ndarray | None = None  # binomial trials (cbind or trials()); y is then the proportion

    @property
    def nobs(self) -> int:
        return len(self.y)

    @property
    def p(self) -> int:
        return self.X.shape[1]

    @property
    def n_levels(self) -> dict[str, int]:
        """Grouping factor as written in the formula -> number of levels."""
        return {b.group: b.m for b in self.blocks}

    def summary(self) -> str:
        """A short text description of the design."""
        lines = [
            f"Formula: {self.formula}",
            f"Observations: {self.nobs} used" + (f", {self.n_dropped} dropped for missing values" if self.n_dropped else ""),
            f"Fixed effects ({self.p}): {', '.join(self.fixed_names) or 'none'}",
        ]
        for b in self.blocks:
            kind = "correlated" if b.term.correlated and b.k > 1 else "independent" if b.k > 1 else ""
            lines.append(f"Random: {', '.join(b.coef_names)} | {b.group}  ({b.m} levels{', ' + kind if kind else ''})")
        if self.aliased:
            lines.append(f"Dropped as aliased (rank-deficient X): {', '.join(self.aliased)}")
        return "\n".join(lines)


def build_design(formula: str | Formula, data, weights=None, offset=None, residual: bool = True) -> Design:
    """Evaluate the formula on the data; refuse bad input with a `MultilevelError`. `residual=False` (binomial,
    Poisson: no residual variance) allows a level per row, e.g. an observation-level random effect."""
    f = formula if isinstance(formula, Formula) else parse(formula)
    frame = as_frame(data)
    frame, weights, offset = _attach_arrays(frame, weights, offset)
    columns = list(frame.columns)
    used = _used_columns(f, frame, weights, offset)
    frame, n_dropped = drop_missing(frame, used)
    check_types(frame, used)
    check_finite(frame, used)
    _check_response_type(f, frame)
    frame = prepare_categoricals(frame, used)
    y = _response(f, frame)
    trials = _trials(f, frame, y)
    if trials is not None:
        y = y / trials
    X, fixed_names, fixed_spec = _fixed_matrix(f.fixed, frame, columns)
    X, fixed_names, aliased = _drop_aliased(X, fixed_names)
    blocks = [_random_block(t, frame, columns) for t in f.random]
    blocks.sort(key=lambda b: -b.m)  # lme4's order: decreasing number of levels (stable)
    n = len(y)
    for b in blocks:
        _check_block(b, n, known_residual=f.se is not None or not residual)
    w = _positive_column(weights if weights is not None else f.weights, frame, "weights")
    se = _positive_column(f.se, frame, "se()")
    off = _numeric_column(offset, frame, "offset")
    for expr in f.offsets:
        values = _expression(expr, frame, f"offset({expr})")
        off = values if off is None else off + values
    if n <= X.shape[1]:
        raise MultilevelError(f"only {n} observations for {X.shape[1]} fixed effects: simplify the fixed part")
    return Design(f, y, X, fixed_names, blocks, w, off, se, n_dropped, aliased, frame, fixed_spec, trials)


def _attach_arrays(frame: pd.DataFrame, weights, offset):
    """Weights or offsets given as arrays become hidden columns, so row dropping keeps them aligned."""
    extra, names = {}, []
    for arg, key in ((weights, "(weights)"), (offset, "(offset)")):
        if arg is None or isinstance(arg, str):
            names.append(arg)
            continue
        values = np.asarray(arg, dtype=float).ravel()
        if values.size != len(frame):
            raise MultilevelError(f"{key[1:-1]} has {values.size} values for {len(frame)} rows of data")
        extra[key] = values
        names.append(key)
    return (frame.assign(**extra) if extra else frame), names[0], names[1]


def _used_columns(f: Formula, frame: pd.DataFrame, weights, offset) -> list[str]:
    """Every data column the model reads; unknown names raise with suggestions."""
    columns = list(frame.columns)
    pieces = [(f.response, "the response"), (f.fixed, "the fixed part")]
    pieces += [(o, f"offset({o})") for o in f.offsets]
    pieces += [(t.expr, f"the random term {t}") for t in f.random]
    used: dict[str, None] = {}
    for expr, where in pieces:
        for name in unknown_names(_to_python_power(expr), columns):
            raise unknown_column_error(name, columns, where)
        used.update(dict.fromkeys(names_in(expr, columns)))
    for term in f.random:
        for g in term.group_factors:
            if g not in frame.columns:
                raise unknown_column_error(g, columns, f"the grouping factor of {term}")
            used.setdefault(g, None)
    for extra, where in ((f.se, "se()"), (f.weights, "weights()"), (f.trials, "trials()")):
        if extra is not None:
            if extra not in frame.columns:
                raise unknown_column_error(extra, columns, where)
            used.setdefault(extra, None)
    for arg, where in ((weights, "weights"), (offset, "offset")):
        if isinstance(arg, str):
            if arg not in frame.columns:
                raise unknown_column_error(arg, columns, where)
            used.setdefault(arg, None)
    return list(used)


def _check_response_type(f: Formula, frame: pd.DataFrame) -> None:
    """A response column must hold numbers (checked before strings become categoricals)."""
    expr = f.response.strip()
    if expr not in frame.columns:
        return
    col = frame[expr]
    numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    if not (numeric or _holds_numbers(col)):
        raise MultilevelError(
            f"the response '{expr}' is not numeric (dtype {col.dtype}): a linear mixed model needs a numeric "
            "response; convert it, or code a binary outcome as 0/1"
        )


def _response(f: Formula, frame: pd.DataFrame) -> np.ndarray:
    """The response column; for cbind(successes, failures), the successes."""
    parts = cbind_parts(f.response)
    return _expression(parts[0] if parts else f.response, frame, "the response")


def _expression(expr: str, frame: pd.DataFrame, where: str) -> np.ndarray:
    """One numeric column from a column name or an expression such as 'size - incidence' or 'log(x)'."""
    expr = expr.strip()
    if expr in frame.columns:
        return frame[expr].to_numpy(dtype=float)
    mm = _evaluate(f"0 + I({expr})", frame, list(frame.columns), where)
    if mm.shape[1] != 1:
        raise MultilevelError(f"{where} '{expr}' is not numeric: it expands to {mm.shape[1]} columns")
    return _finite_matrix(mm, [expr], where)[:, 0]


def _trials(f: Formula, frame: pd.DataFrame, successes: np.ndarray) -> np.ndarray | None:
    """Binomial trials from cbind(successes, failures) or brms's trials(n); None for other responses."""
    parts = cbind_parts(f.response)
    if parts is None and f.trials is None:
        return None
    if parts is not None:
        failures = _expression(parts[1], frame, "the failures in cbind()")
        _refuse_rows(failures < 0, f"cbind({parts[0]}, {parts[1]}): the failures are negative (more successes than "
                     "trials)", frame)
        trials = successes + failures
    else:
        trials = _expression(f.trials, frame, "trials()")
        _refuse_rows(successes > trials, f"{f.response} | trials({f.trials}): more successes than trials", frame)
    _refuse_rows(trials <= 0, "rows with no trials carry no information about a proportion: drop them", frame)
    return trials


def _refuse_rows(bad: np.ndarray, message: str, frame: pd.DataFrame) -> None:
    """Raise naming up to five offending rows by their data index."""
    if np.any(bad):
        rows = list(frame.index[bad][:5])
        raise MultilevelError(f"{message}: {int(np.sum(bad))} row(s), e.g. rows {rows}")


def _finite_matrix(mm, names: list[str], where: str) -> np.ndarray:
    """A model matrix as floats; refuse values made infinite or missing by a transformation."""
    values = np.ascontiguousarray(np.asarray(mm, dtype=float))
    bad = ~np.isfinite(values)
    if bad.any():
        cols = [n for n, b in zip(names, bad.any(axis=0)) if b]
        raise MultilevelError(
            f"{where} has {int(bad.any(axis=1).sum())} row(s) with missing or infinite values in {cols} after "
            "transformation (e.g. log of zero): transform the data first or drop those rows"
        )
    return values


def _fixed_matrix(fixed: str, frame: pd.DataFrame, columns: list[str]):
    simple = NumericColumns.parse(fixed, frame)
    if simple is not None:  # intercept and numeric columns only: no formula machinery needed
        return simple.matrix(frame), simple.names, simple
    expr = _poly_for_ordered(fixed, frame)
    mm = _evaluate(expr, frame, columns, "the fixed part")
    order = names_in(fixed, frame.columns)
    names = [lme4_name(c, order) for c in mm.columns]
    return _finite_matrix(mm, names, "the fixed part"), names, mm.model_spec


def _evaluate(expr: str, frame: pd.DataFrame, columns: list[str], where: str):
    """Materialise an expression with formulaic; its errors become ours."""
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return formulaic.model_matrix(_to_python_power(expr), frame, na_action="ignore")
    except Exception as exc:  # any library failure is reported in our words
        text = _plain(exc)
        missing = _MISSING_RE.search(str(exc))
        if missing:
            raise unknown_column_error(missing.group(1), columns, where) from None
        raise MultilevelError(f"cannot evaluate {where} '{expr}': {text}") from None


def _poly_for_ordered(expr: str, frame: pd.DataFrame) -> str:
    """Ordered categoricals get polynomial contrasts, as in R."""
    for name in names_in(expr, frame.columns):
        dtype = frame[name].dtype
        if isinstance(dtype, pd.CategoricalDtype) and dtype.ordered:
            expr = re.sub(rf"(?<![\w.(]){re.escape(name)}(?![\w.(])", f"C({name}, contr.poly)", expr)
    return expr


_POLY_RE = re.compile(r"^C\(\s*([^,]+?)\s*,\s*contr\.poly\s*\)\[(.+)\]$")
_CAT_RE = re.compile(r"^([^\[]+)\[(?:T\.)?(.+)\]$")


def lme4_name(name: str, order: list[str] | None = None) -> str:
    """formulaic's column name to lme4's: 'sector[T.Catholic]' -> 'sectorCatholic'.

    Within an interaction, variables are put in their order of first appearance in the formula (`order`),
    as R does: 'meanses*cses + sector*cses' gives 'cses:sectorCatholic'.
    """
    if name == "Intercept":
        return "(Intercept)"
    parts = _split_interaction(name)
    if order and len(parts) > 1:
        rank = {v: i for i, v in enumerate(order)}
        parts.sort(key=lambda part: min((rank[v] for v in names_in(part, order)), default=len(order)))
    return ":".join(_lme4_factor(part) for part in parts)


def _lme4_factor(part: str) -> str:
    poly = _POLY_RE.match(part)
    if poly:
        return poly.group(1) + poly.group(2)
    cat = _CAT_RE.match(part)
    if cat:
        return cat.group(1) + cat.group(2)
    return part.replace(" ** ", "^").replace("**", "^")


def _split_interaction(name: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(name):
        depth += ch in "([" 
        depth -= ch in ")]"
        if ch == ":" and depth == 0:
            parts.append(name[start:i])
            start = i + 1
    parts.append(name[start:])
    return parts


def _drop_aliased(X: np.ndarray, names: list[str]):
    """Drop columns in the span of earlier ones (lme4 drops them with a message); warn naming them."""
    bad = _aliased_columns(X)
    if not bad.any():
        return X, names, []
    aliased = [n for n, b in zip(names, bad) if b]
    warnings.warn(
        f"the fixed-effect matrix is rank deficient: dropping {len(aliased)} aliased column(s) "
        f"{aliased} (they are linear combinations of earlier columns; their effects are not identifiable)",
        MultilevelWarning,
        stacklevel=3,
    )
    keep = ~bad
    return np.ascontiguousarray(X[:, keep]), [n for n, k in zip(names, keep) if k], aliased


def _aliased_columns(X: np.ndarray) -> np.ndarray:
    """Mask of columns whose distance to the span of the earlier kept columns is below ALIAS_TOL of their
    norm: R's in-order rule (LINPACK dqrdc2, used by lm and lme4), so the later of two aliased columns goes."""
    bad = np.zeros(X.shape[1], dtype=bool)
    if X.shape[1] == 0:
        return bad
    R = np.linalg.qr(X, mode="r")
    basis = np.empty((X.shape[0], 0))
    scale = np.linalg.norm(X, axis=0)
    if np.all(np.abs(np.diag(R)) > ALIAS_TOL * scale):
        return bad  # full rank: the common case costs one QR
    for j in range(X.shape[1]):
        resid = X[:, j] - basis @ (basis.T @ X[:, j])
        resid = resid - basis @ (basis.T @ resid)  # second pass: orthogonality to rounding error
        size = np.linalg.norm(resid)
        if scale[j] == 0 or size <= ALIAS_TOL * scale[j]:
            bad[j] = True
        else:
            basis = np.column_stack([basis, resid / size])
    return bad


def _random_block(term: RandomTerm, frame: pd.DataFrame, columns: list[str]) -> RandomBlock:
    codes, levels = group_codes(frame, term.group_factors)
    simple = NumericColumns.parse(term.expr, frame)
    if simple is not None:  # '1', '1 + x', '0 + x + z' of numeric columns: no formula machinery needed
        Z, names, spec = simple.matrix(frame), simple.names, simple
    else:
        mm = _evaluate(_poly_for_ordered(term.expr, frame), frame, columns, f"the random term {term}")
        names, spec = [lme4_name(c, names_in(term.expr, frame.columns)) for c in mm.columns], mm.model_spec
        Z = _finite_matrix(mm, names, f"the random term {term}")
    if Z.shape[1] == 0:
        raise MultilevelError(f"the random term {term} has no columns: write at least '1 | {term.group}'")
    return RandomBlock(term, names, levels, codes, Z, spec)


@dataclass(frozen=True)
class NumericColumns:
    """An expression that is an optional intercept plus numeric columns, evaluated directly.

    Formula evaluation costs milliseconds a term; most random terms, and many fixed parts, are '1 + x'. Gives the same
    matrix and names as formulaic would, and plays the part of its model spec for new data.
    """

    intercept: bool
    columns: tuple[str, ...]

    @classmethod
    def parse(cls, expr: str, frame: pd.DataFrame) -> NumericColumns | None:
        tokens = [t.strip() for t in expr.split("+")]
        intercept = "0" not in tokens and "-1" not in tokens
        columns = tuple(t for t in tokens if t not in ("0", "1", "-1"))
        if any(t == "" for t in tokens) or len(set(columns)) != len(columns):
            return None
        for name in columns:
            if name not in frame.columns:
                return None
            dtype = frame[name].dtype
            if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
                return None
        return cls(intercept, columns) if intercept or columns else None

    @property
    def names(self) -> list[str]:
        return (["(Intercept)"] if self.intercept else []) + list(self.columns)

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        parts = ([np.ones(len(frame))] if self.intercept else []) + [frame[c].to_numpy(dtype=float) for c in self.columns]
        return np.column_stack(parts)

    def get_model_matrix(self, frame: pd.DataFrame, na_action: str = "raise") -> pd.DataFrame:
        """The columns for new data (the interface predict uses for formulaic's specs); missing values raise."""
        values = self.matrix(frame)
        if na_action == "raise" and not np.all(np.isfinite(values)):
            raise ValueError(f"missing or infinite values in {', '.join(self.columns)}")
        return pd.DataFrame(values, columns=self.names, index=frame.index)


def group_codes(frame: pd.DataFrame, factors: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and labels of the (interaction of the) grouping factors; unused levels dropped."""
    cats = [as_factor(frame[g]) for g in factors]
    if len(cats) == 1:
        cat = cats[0].remove_unused_categories()
        return cat.codes.astype(np.int64), np.asarray(cat.categories.astype(str), dtype=object)
    combined = np.zeros(len(frame), dtype=np.int64)
    for cat in cats:  # mixed-radix number of the level codes: one integer per combination
        combined = combined * len(cat.categories) + cat.codes
    uniq, codes = np.unique(combined, return_inverse=True)
    digits = []
    for cat in reversed(cats):
        digits.append(cat.categories.astype(str).to_numpy()[uniq % len(cat.categories)])
        uniq = uniq // len(cat.categories)
    labels = [":".join(parts) for parts in zip(*reversed(digits))]
    return codes.ravel().astype(np.int64), np.asarray(labels, dtype=object)


def _check_block(b: RandomBlock, n: int, known_residual: bool = False) -> None:
    """Refuse terms lme4 refuses; with known residual SDs (brms se()) a level per row is identifiable."""
    if b.m < 2:
        raise MultilevelError(
            f"the grouping factor '{b.group}' has only {b.m} level in the rows used: a random effect needs at "
            f"least two groups; drop the term {b.term} or use '{b.group}' as a fixed effect"
        )
    if known_residual:
        return
    if b.m >= n:
        raise MultilevelError(
            f"the grouping factor '{b.group}' has {b.m} levels for {n} observations: each group needs more than "
            f"one observation on average for its variance to be separated from the residual; drop {b.term}"
        )
    if b.q >= n:
        raise MultilevelError(
            f"the term {b.term} has {b.q} random effects for {n} observations: more random effects than "
            "observations cannot be separated from the residual; simplify the term (fewer slopes)"
        )


def _positive_column(spec, frame: pd.DataFrame, what: str) -> np.ndarray | None:
    values = _numeric_column(spec, frame, what)
    if values is not None and not np.all(values > 0):
        raise MultilevelError(f"{what} must be positive and finite; found {int(np.sum(~(values > 0)))} bad value(s)")
    return values


def _numeric_column(spec, frame: pd.DataFrame, what: str) -> np.ndarray | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        col = frame[spec]
        if not pd.api.types.is_numeric_dtype(col):
            raise MultilevelError(f"{what} column '{spec}' is not numeric")
        values = col.to_numpy(dtype=float)
    else:
        raise MultilevelError(f"{what} must be a column name or an array")
    if not np.all(np.isfinite(values)):
        raise MultilevelError(f"{what} has missing or infinite values")
    return values
