"""Formula + data to numbers (pipeline step 2): y, X with named columns, one block per random term.

Every later stage reads the `Design` and nothing else of the data. Fixed-effect names follow lme4
(``(Intercept)``, ``sectorCatholic``, ``temperature.L``, ``I(Days^2)``); see docs/formula.md.
"""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass, field
from functools import cached_property, partial

import formulaic
import numpy as np
import pandas as pd

from .data import (
    as_factor,
    as_frame,
    check_group_ids,
    check_finite,
    check_types,
    drop_missing,
    _holds_numbers,
    names_in,
    prepare_categoricals,
    unknown_column_error,
    unknown_names,
)
from .errors import MultilevelError, MultilevelWarning, UnseenLevelError
from .formula import Formula, RandomTerm, _plain, _to_python_power, cbind_parts, parse
from .names import interaction_parts
from .scaling import held_columns, transform_messages

_MISSING_RE = re.compile(r"`([^`]+)` is not present")
_OFFSET_RE = re.compile(r"name 'offset' is not defined")
ALIAS_TOL = 1e-7
TABLE_SPREAD = 4  # integer ids are coded by a lookup table while their range is at most this many times their count


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


@dataclass(frozen=True, eq=False)
class TermCoding:
    """What was learned of one random term: its coefficient names, its grouping factor's levels (the order of
    the group effects) and the spec that computes its covariates for any rows."""

    term: RandomTerm
    coef_names: tuple[str, ...]
    levels: np.ndarray = field(repr=False)
    spec: object = field(repr=False)

    @cached_property
    def numeric_levels(self) -> np.ndarray | None:
        """The levels as ascending numbers, or None when they are not (converted once, not per partition)."""
        try:
            learned = np.asarray(self.levels, dtype=float)
        except ValueError:
            return None
        return None if np.any(np.diff(learned) <= 0) else learned


@dataclass(frozen=True, eq=False)
class Column:
    """One learned numeric column: a column name, or an expression with the spec that evaluates it on any rows
    (the response, binomial trials, a formula offset)."""

    expr: str
    spec: object = field(default=None, repr=False)  # None: a plain column

    def values(self, frame: pd.DataFrame, where: str, evaluated=None) -> np.ndarray:
        """The column's values on the rows (`evaluated`: its model matrix on them, if learning made it)."""
        if self.spec is None:
            return frame[self.expr].to_numpy(dtype=float)
        if isinstance(self.spec, Arithmetic):
            return _finite_matrix(self.spec.values(frame)[:, None], [self.expr], where)[:, 0]
        mm = _evaluate(self.expr, frame, list(frame.columns), where, self.spec) if evaluated is None else evaluated
        return _finite_matrix(mm, [self.expr], where)[:, 0]


@dataclass(frozen=True, eq=False)
class Coding:
    """Everything learned from the data to turn rows into numbers: used columns, categorical levels (and
    ordered flags), the response (and binomial trials), the fixed-part spec, the fixed columns kept and aliased,
    per random term (in lme4's order) its levels and spec, and the formula's offsets. Learned once (`learn_coding`), applied alike to the fitted rows,
    to partitions of them and to new data (`apply_coding`), so every one gets the same columns and codes."""

    formula: Formula
    columns: tuple[str, ...]
    categories: dict[str, pd.CategoricalDtype] = field(repr=False)
    response: Column
    fixed_spec: object = field(repr=False)
    fixed_names: tuple[str, ...]
    aliased: tuple[str, ...]
    terms: tuple[TermCoding, ...]
    weights: str | None = None
    offset: str | None = None
    trials: Column | None = None
    offsets: tuple[Column, ...] = ()

    @property
    def se(self) -> str | None:
        """The column of known residual standard errors (brms's se()), if any."""
        return self.formula.se


@dataclass
class Design:
    """Numbers of a mixed model: response, fixed-effect matrix, random blocks, weights, offset.

    Rows of new data (``apply_coding(..., new=True)``) have no response (`y` is None), and code -1 for a group
    level not seen in fitting."""

    formula: Formula
    y: np.ndarray | None
    X: np.ndarray
    fixed_names: list[str]
    blocks: list[RandomBlock]
    coding: Coding = field(repr=False)
    weights: np.ndarray | None = None
    offset: np.ndarray | None = None
    se: np.ndarray | None = None
    n_dropped: int = 0
    aliased: list[str] = field(default_factory=list)
    frame: pd.DataFrame | None = field(default=None, repr=False)
    trials: np.ndarray | None = None  # binomial trials (cbind or trials()); y is then the proportion

    @property
    def fixed_spec(self):
        """What computes the fixed-effect columns of any rows (a formulaic model spec or `NumericColumns`)."""
        return self.coding.fixed_spec

    @property
    def nobs(self) -> int:
        return self.X.shape[0]

    @property
    def p(self) -> int:
        return self.X.shape[1]

    @property
    def n_levels(self) -> dict[str, int]:
        """Grouping factor as written in the formula -> number of levels."""
        return {b.group: b.m for b in self.blocks}

    @property
    def family_weights(self) -> np.ndarray:
        """Each row's weight in a family's log-likelihood: prior weights times binomial trials (1 where none)."""
        weights = np.ones(self.nobs) if self.weights is None else self.weights
        return weights if self.trials is None else weights * self.trials

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
    """Evaluate the formula on the data (learn the coding, apply it to the same rows); refuse bad input with a
    `MultilevelError`. `residual=False` (binomial, Poisson: no residual variance) allows a level per row."""
    evaluated: dict = {}  # what learning evaluated on these rows, applied as it is (no second formula evaluation)
    coding = learn_coding(formula, data, weights, offset, evaluated=evaluated)
    design = apply_coding(coding, data, weights, offset, evaluated=evaluated)
    check_counts(coding, design.nobs, residual)
    if residual and design.se is None:  # Gaussian: the residual variance needs variation within groups
        check_variation(design)
    return design


def check_variation(design: Design) -> None:
    """Refuse a response with no variation left for the residual (constant, or constant within every level of a
    grouping factor); warn about a group slope whose covariate never varies within a group."""
    y, name = design.y, design.formula.response.strip()
    if np.all(y == y[0]):
        raise constant_response(name, y.size, y[0])
    for block in design.blocks:
        if "(Intercept)" in block.coef_names and _constant_within(y, block):
            raise constant_within_groups(name, block.group)
        for j, coef in enumerate(block.coef_names):
            if coef != "(Intercept)" and _constant_within(block.Z[:, j], block):
                warnings.warn(
                    f"'{coef}' does not vary within any level of '{block.group}': its slope by '{block.group}' cannot "
                    f"be told apart from the intercept of {block.term}. A predictor measured once per group belongs "
                    "in the fixed part only; drop it from the random term", MultilevelWarning, stacklevel=4,
                )


def constant_response(name: str, n: int, value: float) -> MultilevelError:
    return MultilevelError(
        f"the response '{name}' is constant (every one of its {n} values is {value:g}): there is no variation "
        "for a model to explain; check the column"
    )


def constant_within_groups(name: str, group: str, precision: str = "") -> MultilevelError:
    return MultilevelError(
        f"the response '{name}' is constant within every level of '{group}'{precision}: all its variation is "
        "between those groups, so the residual variance is 0 and the likelihood has no maximum. Model one "
        "value per group (a regression of the group values), or check the response"
    )


def _constant_within(values: np.ndarray, block: RandomBlock) -> bool:
    """True if the values are exactly equal within every level of the block's grouping factor."""
    first = np.empty(block.m)
    first[block.codes[::-1]] = values[::-1]  # the last assignment wins: each level's first value
    return bool(np.all(values == first[block.codes]))


def learn_coding(formula: str | Formula, data, weights=None, offset=None, aliasing: bool = True,
                 evaluated: dict | None = None) -> Coding:
    """Learn from the data how to code rows: levels, contrasts, stateful transforms, aliased fixed columns and
    group levels. `weights`/`offset` are column names or arrays, as for `build_design`. ``aliasing=False`` keeps
    every fixed column (rows that are not all the data: aliasing is then found from X'X, `aliased_in_gram`).
    `evaluated` (a dict) receives the matrices evaluated on these rows, for `apply_coding` to the same data."""
    f = formula if isinstance(formula, Formula) else parse(formula)
    if weights is not None and f.weights is not None:
        raise MultilevelError(
            f"weights are given twice: in the formula (weights({f.weights})) and as weights=: give them once"
        )
    frame = as_frame(data)
    frame, weights, offset = _attach_arrays(frame, weights, offset)
    used = used_columns(f, frame, weights, offset)
    frame, n_dropped = _clean(f, frame, used)
    for g in _group_factors(f):
        check_group_ids(frame[g], g)
    frame = prepare_categoricals(frame, used, _group_factors(f))
    columns = list(frame.columns)
    evaluated = {} if evaluated is None else evaluated
    evaluated["rows"] = (frame, n_dropped)  # the rows cleaned and coded as `apply_coding` would code them
    response, trials = _learn_response(f, frame, evaluated)
    X, names, fixed_spec = _fixed_matrix(f.fixed, frame, columns)
    evaluated["fixed"] = (X, names)
    if not isinstance(fixed_spec, NumericColumns):  # plain numeric columns have no transforms
        probe = partial(_apply_spec, fixed_spec, f.fixed, columns=columns, where="the fixed part")
        for message in transform_messages(X, names, frame, lambda rows: probe(rows)[0]):
            warnings.warn(message, MultilevelWarning, stacklevel=4)
    aliased = _aliased(X, names) if aliasing else []
    terms = sorted((_learn_term(t, frame, columns, evaluated) for t in f.random), key=lambda t: -len(t.levels))  # lme4's order
    for t in terms:
        _check_levels(t)
    if aliasing:  # all the rows (partitioned data: a sample spanning the levels, checked after `check_learnable`)
        check_factor_levels(fixed_spec, terms)
    dtypes = {c: frame[c].dtype for c in used}
    categories = {c: d for c, d in dtypes.items() if isinstance(d, pd.CategoricalDtype)}
    kept = tuple(n for n in names if n not in aliased)
    w = weights if weights is not None else f.weights
    offsets = tuple(learn_column(o, frame, f"offset({o})", evaluated) for o in f.offsets)
    return Coding(f, tuple(used), categories, response, fixed_spec, kept, tuple(aliased), tuple(terms), w, offset,
                  trials, offsets)


def apply_coding(coding: Coding, data, weights=None, offset=None, *, new: bool = False, random: bool = True,
                 evaluated: dict | None = None) -> Design:
    """Rows to numbers with a learned coding: the learned columns, contrasts and group codes, whatever rows.

    For model rows (``new=False``) rows with missing values are dropped and counted, every check of
    `build_design` applies, and a level the coding lacks is refused; arrays the coding was learned with are
    passed again as `weights`/`offset`. For new data (``new=True``) the response, weights and se are not read,
    `offset` (a column name or an array) is needed if the model has one, a group level not learned gets code -1
    (no group effect), an unseen level of a fixed factor is refused, and ``random=False`` leaves out the random
    terms (whose columns are then not needed). Offsets written in the formula are evaluated on any rows.
    `evaluated`: what `learn_coding` evaluated on the same data, used as it is."""
    f = coding.formula
    frame = as_frame(data)
    frame, weights, offset = _attach_arrays(frame, weights, offset)
    evaluated = evaluated or {}
    if new:
        if coding.offset is not None and offset is None:
            raise MultilevelError("the model was fitted with an offset: pass offset= (a column name or an array) for the new rows")
        needed = _new_columns(coding, frame, offset, random)
        n_dropped = 0
    else:
        needed = _model_columns(coding, frame, weights, offset)
    if not new and "rows" in evaluated:  # the learning rows: cleaned and coded as learned already
        frame, n_dropped = evaluated["rows"]
    else:
        if not new:
            frame, n_dropped = _clean(f, frame, needed)
        frame = _learned_categories(coding, frame, needed, new)
    columns = list(frame.columns)
    learned = evaluated if not new and "rows" in evaluated else {}
    blocks = [_apply_term(t, frame, columns, new, learned.get(t)) for t in coding.terms] if random else []
    y, trials = (None, None) if new else _response(coding, frame, evaluated)
    X = _apply_fixed(coding, frame, columns, evaluated.get("fixed"))
    w = None if new else _positive_column(coding.weights, frame, "weights")
    se = None if new else _positive_column(coding.se, frame, "se()")
    off = _numeric_column(offset if new else coding.offset, frame, "offset")
    for column in coding.offsets:
        values = column.values(frame, f"offset({column.expr})", evaluated.get(column))
        off = values if off is None else off + values
    return Design(f, y, X, list(coding.fixed_names), blocks, coding, w, off, se, n_dropped, list(coding.aliased), frame,
                  trials)


def check_counts(coding: Coding, n: int, residual: bool = True) -> None:
    """Refuse models the n rows of the data (all partitions together) cannot identify, as lme4 does: a level per
    row, more random or fixed effects than rows. With known residual SDs (brms se()) or no residual variance
    (``residual=False``: binomial, Poisson) a level per row is fine (an observation-level random effect)."""
    for t in coding.terms if coding.se is None and residual else ():
        m, q, group = len(t.levels), len(t.levels) * len(t.coef_names), t.term.group
        if m >= n:
            raise MultilevelError(
                f"the grouping factor '{group}' has {m} levels for {n} observations: each group needs more than "
                f"one observation on average for its variance to be separated from the residual; drop {t.term}"
            )
        if q >= n:
            raise MultilevelError(
                f"the term {t.term} has {q} random effects for {n} observations: more random effects than "
                "observations cannot be separated from the residual; simplify the term (fewer slopes)"
            )
    p = len(coding.fixed_names)
    if n <= p:
        raise MultilevelError(f"only {n} observations for {p} fixed effects: simplify the fixed part")


def _attach_arrays(frame: pd.DataFrame, weights, offset):
    """Weights or offsets given as arrays become hidden columns, so row dropping keeps them aligned."""
    extra, names = {}, []
    for arg, key in ((weights, "(weights)"), (offset, "(offset)")):
        if arg is None or isinstance(arg, str):
            names.append(arg)
            continue
        try:
            values = np.asarray(arg, dtype=float).ravel()
        except (TypeError, ValueError):
            raise MultilevelError(f"{key[1:-1]} must name a column (a string such as {key[1:-1]}='w') or give one number "
                                  f"per row, not {type(arg).__name__} {str(arg)[:60]}") from None
        if values.size != len(frame):
            raise MultilevelError(f"{key[1:-1]} has {values.size} values for {len(frame)} rows of data")
        extra[key] = values
        names.append(key)
    return (frame.assign(**extra) if extra else frame), names[0], names[1]


def _clean(f: Formula, frame: pd.DataFrame, used: list[str]) -> tuple[pd.DataFrame, int]:
    """Model rows: drop rows missing a used value (and count them); refuse values a model cannot use."""
    frame, n_dropped = drop_missing(frame, used)
    check_types(frame, used)
    check_finite(frame, used)
    _check_response_type(f, frame)
    return frame, n_dropped


def _model_columns(coding: Coding, frame: pd.DataFrame, weights, offset) -> list[str]:
    """The learned columns, all present in model rows; the weights/offset given must be the ones learned."""
    for given, learned, what in ((weights, coding.weights, "weights"), (offset, coding.offset, "offset")):
        if given is not None and given != learned:
            raise MultilevelError(f"{what} given as '{given}', but the coding reads them from '{learned}': pass the {what} it was learned with")
    for name in coding.columns:
        if name not in frame.columns:
            if name in ("(weights)", "(offset)"):
                raise MultilevelError(f"the coding was learned with {name[1:-1]} given as an array: pass {name[1:-1]}= for these rows")
            raise unknown_column_error(name, frame.columns, "the data")
    return list(coding.columns)


def _new_columns(coding: Coding, frame: pd.DataFrame, offset, random: bool) -> list[str]:
    """The columns new rows need (the fixed part, offsets, and the random terms unless left out), all present and
    complete except grouping factors, whose missing values just mean no group effect."""
    f = coding.formula
    model = names_in(f.fixed, coding.columns)
    groups = []
    if random:
        for t in coding.terms:
            model += names_in(t.term.expr, coding.columns)
            groups += list(t.term.group_factors)
    model += [offset] if offset is not None else []
    for column in coding.offsets:
        model += names_in(column.expr, coding.columns)
    for name in dict.fromkeys(model + groups):
        if name not in frame.columns:
            where = "the new data (a grouping factor)" if name in groups else "the new data"
            raise unknown_column_error(name, frame.columns, where)
    needed = list(dict.fromkeys(model + groups))
    check_types(frame, needed)
    for name in dict.fromkeys(model):
        col = frame[name]
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        if name not in coding.categories and name not in groups and not numeric and not pd.api.types.is_bool_dtype(col):
            raise MultilevelError(f"column '{name}' was numeric in the fitted data but holds {col.dtype} values in the "
                                  f"new data: convert it to numbers first (pd.to_numeric)")
        bad = col.isna().to_numpy() | (np.isinf(col.to_numpy(dtype=float, na_value=np.nan)) if numeric else False)
        if bad.any():
            raise MultilevelError(
                f"column '{name}' of the new data has {int(bad.sum())} missing or infinite value(s): predictions "
                "need a value in every column of the model other than grouping factors"
            )
    return needed


def _learned_categories(coding: Coding, frame: pd.DataFrame, needed: list[str], new: bool) -> pd.DataFrame:
    """Give categorical columns the learned categories (codes of rows then mean the learned levels, and contrasts
    line up); refuse levels the coding lacks, except new rows' grouping levels, which become missing."""
    f = coding.formula
    held = {n for n, d in coding.categories.items() if n in needed and _holds_categories(frame[n], d)}
    for g in _group_factors(f) if new else ():  # new rows' ids as the fitted ones': warned where inexact
        if g in needed and g not in held:
            check_group_ids(frame[g], g)
    frame = prepare_categoricals(frame, [c for c in needed if c not in held], _group_factors(f))  # held: unused kept
    fixed = names_in(f.fixed, needed)
    model = set(fixed).union(*(names_in(t.term.expr, needed) for t in coding.terms))
    changed = {}
    for name, dtype in coding.categories.items():
        if name not in needed:
            continue
        col = frame[name]
        if _holds_categories(col, dtype):
            continue  # coded as learned already (the learning rows themselves, partitions of known categories)
        cat = as_factor(col)
        learned = dtype.categories.astype(str)
        index = pd.Index(learned).get_indexer(cat.categories.astype(str))
        unknown = sorted(cat.categories[index < 0].astype(str))
        if unknown and new and name in model:
            effects = "fixed effects" if name in fixed else "group-level coefficients"
            raise MultilevelError(
                f"column '{name}' has level(s) {unknown[:5]} not seen in fitting: {effects} exist only for {list(learned)}"
            )
        if unknown and not new:
            raise UnseenLevelError(
                f"column '{name}' has level(s) {unknown[:5]} the coding was not learned with: learn it from data "
                f"holding every level (it knows {list(learned)[:20]})"
            )
        changed[name] = pd.Series(pd.Categorical.from_codes(_recode(cat.codes, index), dtype=dtype), index=frame.index)
    return frame.assign(**changed) if changed else frame


def _holds_categories(col: pd.Series, dtype: pd.CategoricalDtype) -> bool:
    """Whether a column is categorical with exactly the learned categories (its codes are then the learned ones)."""
    own = col.dtype  # the dtype's fields, not the `.cat` accessor (which costs more than the test)
    return isinstance(own, pd.CategoricalDtype) and own.ordered == dtype.ordered and own.categories.equals(dtype.categories)


def _group_factors(f: Formula) -> list[str]:
    """The columns that name groups (each factor of every random term's grouping)."""
    return list(dict.fromkeys(g for t in f.random for g in t.group_factors))


def used_columns(f: Formula, frame: pd.DataFrame, weights, offset) -> list[str]:
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
            f"the response '{expr}' is not numeric (dtype {col.dtype}): a mixed model needs a numeric "
            "response; convert it, or code a binary outcome as 0/1"
        )


def learn_column(expr: str, frame: pd.DataFrame, where: str, evaluated: dict | None = None) -> Column:
    """Learn one numeric column: a column name, or an expression ('log(y)', 'size - incidence') and its spec
    (its values on these rows kept in `evaluated` under the column)."""
    expr = expr.strip()
    if expr in frame.columns:
        return Column(expr, None)
    arithmetic = Arithmetic.parse(expr, frame)
    if arithmetic is not None:
        return Column(expr, arithmetic)
    mm = _evaluate(f"0 + I({expr})", frame, list(frame.columns), where)
    if mm.shape[1] != 1:
        raise MultilevelError(f"{where} '{expr}' is not numeric: it expands to {mm.shape[1]} columns")
    column = Column(expr, mm.model_spec)
    if evaluated is not None:
        evaluated[column] = mm
    return column


def _learn_response(f: Formula, frame: pd.DataFrame, evaluated: dict) -> tuple[Column, Column | None]:
    """The response (for cbind(successes, failures), the successes) and the binomial trials: successes +
    failures, or brms's trials(n); no trials for other responses."""
    parts = cbind_parts(f.response)
    if parts is not None:
        return (learn_column(parts[0], frame, "the response", evaluated),
                learn_column(f"{parts[0]} + ({parts[1]})", frame, "cbind()", evaluated))
    trials = None if f.trials is None else learn_column(f.trials, frame, "trials()", evaluated)
    return learn_column(f.response, frame, "the response", evaluated), trials


def _response(coding: Coding, frame: pd.DataFrame, evaluated: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """The response of model rows and their binomial trials (None without); with trials, y is the proportion."""
    y = coding.response.values(frame, "the response", evaluated.get(coding.response))
    if coding.trials is None:
        return y, None
    trials = coding.trials.values(frame, "the trials", evaluated.get(coding.trials))
    f = coding.formula
    what = f"the failures in {f.response} are negative" if f.trials is None else f"{f.response} | trials({f.trials})"
    _refuse_rows(y > trials, f"{what}: more successes than trials", frame)
    _refuse_rows(trials <= 0, "rows with no trials carry no information about a proportion: drop them", frame)
    return y / trials, trials


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
    """Learn the fixed part: its spec, and its matrix and names on the learning rows (for the aliasing check)."""
    simple = NumericColumns.parse(fixed, frame) or PlainTerms.parse(fixed, frame)
    if simple is not None:  # intercept, numeric columns and plain factors only: no formula machinery needed
        return simple.matrix(frame), simple.names, simple
    mm = _evaluate(_poly_for_ordered(fixed, frame), frame, columns, "the fixed part")
    names = [lme4_name(c, names_in(fixed, frame.columns)) for c in mm.columns]
    return _finite_matrix(mm, names, "the fixed part"), names, mm.model_spec


def _apply_fixed(coding: Coding, frame: pd.DataFrame, columns: list[str], learned=None) -> np.ndarray:
    """The fixed-effect matrix of the rows, aliased columns left out (`learned`: (X, names) learning evaluated)."""
    fixed = coding.formula.fixed
    X, names = learned or _apply_spec(coding.fixed_spec, fixed, frame, columns, "the fixed part")
    if not coding.aliased:
        return X
    return np.ascontiguousarray(X[:, [names.index(n) for n in coding.fixed_names]])


def _apply_spec(spec, expr: str, frame: pd.DataFrame, columns: list[str], where: str) -> tuple[np.ndarray, list[str]]:
    """The columns a learned spec gives for the rows, and their lme4 names."""
    if isinstance(spec, (NumericColumns, PlainTerms)):
        return spec.matrix(frame), spec.names
    mm = _evaluate(expr, frame, columns, where, spec)
    names = [lme4_name(c, names_in(expr, frame.columns)) for c in mm.columns]
    return _finite_matrix(mm, names, where), names


def _evaluate(expr: str, frame: pd.DataFrame, columns: list[str], where: str, spec=None):
    """Materialise an expression with formulaic (with a learned `spec`: the learned coding); its errors become ours."""
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if spec is not None:
                return spec.get_model_matrix(frame, na_action="ignore")
            return formulaic.model_matrix(_to_python_power(expr), frame, na_action="ignore")
    except Exception as exc:  # any library failure is reported in our words
        text = _plain(exc)
        missing = _MISSING_RE.search(str(exc))
        if missing:
            raise unknown_column_error(missing.group(1), columns, where) from None
        if _OFFSET_RE.search(str(exc)):
            raise MultilevelError(
                f"offset() inside a formula is not supported here ({where} '{expr}'): remove it and pass the column "
                "as Model(..., offset='name') (or an array)"
            ) from None
        raise MultilevelError(f"cannot evaluate {where} '{expr}': {text}") from None


def check_factor_levels(fixed_spec, terms) -> None:
    """Refuse a factor with one level in the rows used (fixed part or a random term's covariates), as R's contrasts
    do: coded, it would silently drop out of the model."""
    for spec, where in [(fixed_spec, "the fixed part")] + [(t.spec, f"the random term {t.term}") for t in terms]:
        for factor, state in (getattr(spec, "factor_contrasts", None) or {}).items():
            levels = list(getattr(state, "levels", None) or [])
            if len(levels) == 1:
                raise MultilevelError(
                    f"the factor '{factor}' in {where} has one level ({levels[0]!r}) in the rows used: a factor needs "
                    "two or more levels. Drop it from the formula, or check the rows dropped for missing values"
                )


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
    parts = interaction_parts(name)
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


def _aliased(X: np.ndarray, names: list[str]) -> list[str]:
    """Columns in the span of earlier ones, which are dropped (lme4 drops them with a message); warn naming them.
    Judged on the columns as the cross-products hold them (`scaling.held_columns`): a shift changes nothing."""
    bad = _aliased_columns(held_columns(X, names))
    aliased = [n for n, b in zip(names, bad) if b]
    constant = [f"'{n}' is constant ({X[0, j]:g} in every row)" for j, n in enumerate(names) if bad[j] and np.all(X[:, j] == X[0, j])]
    warn_aliased(aliased, stacklevel=5, constant=constant)
    return aliased


def warn_aliased(aliased: list[str], stacklevel: int, constant: list[str] = ()) -> None:
    """Warn naming the aliased fixed-effect columns that are dropped (if any), and which of them are constant."""
    if aliased:
        warnings.warn(
            f"the fixed-effect matrix is rank deficient: dropping {len(aliased)} aliased column(s) "
            f"{aliased} (they are linear combinations of earlier columns; their effects are not identifiable)"
            + (f": {'; '.join(constant)}, the intercept again" if constant else ""),
            MultilevelWarning,
            stacklevel=stacklevel,
        )


def aliased_in_gram(G: np.ndarray) -> np.ndarray:
    """`_aliased_columns`' in-order rule from X'X alone (data in partitions): a column is aliased when its
    squared distance to the span of the earlier kept ones is below ALIAS_TOL^2 of its squared norm."""
    scale = np.sqrt(np.diag(G))
    bad = scale == 0
    R = np.divide(G, np.outer(scale, scale), out=np.zeros_like(G), where=~(bad[:, None] | bad[None, :]))
    kept: list[int] = []
    for j in np.flatnonzero(~bad):
        g = R[kept, j]
        resid = 1.0 - g @ np.linalg.solve(R[np.ix_(kept, kept)], g) if kept else 1.0
        if resid <= ALIAS_TOL**2:
            bad[j] = True
        else:
            kept.append(j)
    return bad


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


def _learn_term(term: RandomTerm, frame: pd.DataFrame, columns: list[str], evaluated: dict) -> TermCoding:
    """Learn a random term: its grouping factor's levels, and the spec and names of its covariates (the rows' codes
    and covariates kept in `evaluated` under the coding, for `apply_coding` to the same rows)."""
    codes, levels = group_codes(frame, term.group_factors)
    simple = NumericColumns.parse(term.expr, frame)
    mm = None
    if simple is not None:  # '1', '1 + x', '0 + x + z' of numeric columns: no formula machinery needed
        names, spec = simple.names, simple
    else:
        mm = _evaluate(_poly_for_ordered(term.expr, frame), frame, columns, f"the random term {term}")
        names, spec = [lme4_name(c, names_in(term.expr, frame.columns)) for c in mm.columns], mm.model_spec
    if not names:
        raise MultilevelError(f"the random term {term} has no columns: write at least '1 | {term.group}'")
    coding = TermCoding(term, tuple(names), levels, spec)
    evaluated[coding] = (codes, mm)
    return coding


def _apply_term(t: TermCoding, frame: pd.DataFrame, columns: list[str], new: bool, learned=None) -> RandomBlock:
    """A random term on the rows: each row's index into the learned levels, and its covariates (`learned`: the codes
    and covariate matrix learning made of the same rows, used as they are)."""
    if learned is not None:
        codes, mm = learned
        where = f"the random term {t.term}"
        Z = t.spec.matrix(frame) if mm is None else _finite_matrix(mm, list(t.coef_names), where)
        return RandomBlock(t.term, list(t.coef_names), t.levels, codes, Z, t.spec)
    factors = t.term.group_factors
    col = frame[factors[0]]
    codes = _numeric_codes(col, t.numeric_levels, new) if len(factors) == 1 else None
    if codes is not None:
        Z, _ = _apply_spec(t.spec, t.term.expr, frame, columns, f"the random term {t.term}")
        return RandomBlock(t.term, list(t.coef_names), t.levels, codes, Z, t.spec)
    index = None
    if len(factors) == 1 and isinstance(col.dtype, pd.CategoricalDtype):  # learned categories: no pass to drop unused
        local, categories = col.array.codes.astype(np.int64), col.dtype.categories
        index = _numeric_codes(categories.to_series(), t.numeric_levels, True)  # numbers: no 10^5 labels a partition
        labels = np.asarray(categories.astype(str), dtype=object) if index is None else categories.to_numpy()
    else:
        local, labels = group_codes(frame, factors)
    codes = _recode(local, pd.Index(t.levels).get_indexer(labels) if index is None else index)
    if not new and (codes < 0).any():
        raise UnseenLevelError(
            f"the grouping factor '{t.term.group}' has level(s) {sorted({str(v) for v in labels[local[codes < 0]]})[:5]} the coding "
            "was not learned with: learn it from data holding every level"
        )
    Z, _ = _apply_spec(t.spec, t.term.expr, frame, columns, f"the random term {t.term}")
    return RandomBlock(t.term, list(t.coef_names), t.levels, codes, Z, t.spec)


def _numeric_codes(col: pd.Series, learned: np.ndarray | None, new: bool) -> np.ndarray | None:
    """Codes of a numeric grouping column by lookup or binary search in its learned levels when they are ascending numbers
    (labels cost a Python call per level, which dominates large partitions); None to take the labels' path (other
    columns, model rows with an unseen level, integers beyond 2^53)."""
    if not pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype) or not len(col):
        return None
    if pd.api.types.is_integer_dtype(col.dtype) and np.abs(col.to_numpy()).max() > 2**53:
        return None
    if learned is None:
        return None
    plain_integers = isinstance(col.dtype, np.dtype) and col.dtype.kind in "iu"  # not pandas' nullable Int64
    codes = _codes_by_table(col.to_numpy(), learned) if plain_integers else None
    if codes is None:
        values, inverse = np.unique(col.to_numpy(dtype=float, na_value=np.nan), return_inverse=True)
        at = np.minimum(np.searchsorted(learned, values), len(learned) - 1)  # sorted needles: a cache-friendly search
        codes = np.where(learned[at] == values, at, -1).astype(np.int64)[inverse.ravel()]
    return None if not new and (codes < 0).any() else codes


def _codes_by_table(values: np.ndarray, learned: np.ndarray) -> np.ndarray | None:
    """Codes of integer ids by a lookup table over the learned levels' range (one pass, no sort: 15x faster than
    the search on 10^6 rows), -1 for ids not learned; None when the levels are not integers or spread too thinly."""
    low, span = learned[0], learned[-1] - learned[0] + 1
    if span > TABLE_SPREAD * len(learned) + 1024 or np.any(learned != np.round(learned)):
        return None
    table = np.full(int(span), -1, dtype=np.int64)
    table[(learned - low).astype(np.int64)] = np.arange(len(learned))
    offset = values.astype(np.int64) - int(low)
    inside = (offset >= 0) & (offset < span)
    return np.where(inside, table[np.where(inside, offset, 0)], -1)


def _recode(local: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Codes into local levels to codes into the learned ones (`index`: local level -> learned, -1 if none);
    -1 (missing) stays -1."""
    codes = np.full(len(local), -1, dtype=np.int64)
    known = local >= 0
    codes[known] = index[local[known]]
    return codes


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


@dataclass(frozen=True)
class PlainTerms:
    """An intercept plus numeric columns and unordered factors (treatment contrasts: the first level is the baseline)
    and two-way interactions of them whose main effects are in the model ('period', 'spp + mined', 'a*b'), evaluated
    directly: the matrix and names formulaic gives, without its milliseconds; the spec for new rows (coded with the
    learned levels)."""

    terms: tuple[tuple[str, ...], ...]  # main effects, then interactions (formulaic's order: by degree, as written)
    levels: dict  # each column's learned levels; None for a numeric column
    order: tuple[str, ...]  # the columns in order of first appearance (lme4's names of interactions)

    @classmethod
    def parse(cls, expr: str, frame: pd.DataFrame) -> PlainTerms | None:
        """The spec, or None unless the expression is that simple (factors of two or more levels)."""
        terms: list[tuple[str, ...]] = []
        for token in (t.strip() for t in expr.split("+")):
            if token == "1":
                continue
            if token in ("", "0", "-1") or token.count("*") + token.count(":") > 1:
                return None
            parts = tuple(p.strip() for p in token.replace("*", ":").split(":"))
            terms += [(p,) for p in parts] + [parts] if "*" in token else [parts]
        unique = list(dict.fromkeys(terms))
        if not unique or len({frozenset(t) for t in unique}) != len(unique) or any(len(set(t)) != len(t) for t in unique):
            return None
        if any(len(t) > 1 and any((c,) not in unique for c in t) for t in unique):
            return None  # an interaction without its main effects: R's contrasts would differ
        levels = {}
        for name in dict.fromkeys(c for t in unique for c in t):
            dtype = frame[name].dtype if name in frame.columns else None
            if isinstance(dtype, pd.CategoricalDtype) and not dtype.ordered and len(dtype.categories) > 1:
                levels[name] = tuple(dtype.categories)
            elif dtype is not None and pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
                levels[name] = None
            else:
                return None
        if all(lv is None for lv in levels.values()):
            return None  # numeric columns only: `NumericColumns`, or formulaic for their products
        return cls(tuple(sorted(unique, key=len)), levels, tuple(levels))

    def _labels(self, name: str) -> list[str]:
        levels = self.levels[name]
        return [name] if levels is None else [f"{name}[T.{level}]" for level in levels[1:]]

    @property
    def names(self) -> list[str]:
        out = ["(Intercept)"]
        for term in self.terms:
            labels = [""]
            for name in term:  # the first column's levels vary fastest
                labels = [f"{b}:{a}" if b else a for a in self._labels(name) for b in labels]
            out += [lme4_name(label, list(self.order)) for label in labels]
        return out

    def _columns(self, frame: pd.DataFrame, name: str) -> np.ndarray:
        col, levels = frame[name], self.levels[name]
        if levels is None:
            return col.to_numpy(dtype=float)[:, None]
        same = isinstance(col.dtype, pd.CategoricalDtype) and tuple(col.dtype.categories) == levels
        codes = col.array.codes if same else pd.Categorical(col, categories=list(levels)).codes
        return (np.asarray(codes)[:, None] == np.arange(1, len(levels))).astype(float)

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        parts = [np.ones((len(frame), 1))]
        for term in self.terms:
            block = self._columns(frame, term[0])
            for name in term[1:]:
                block = np.einsum("ni,nj->nji", block, self._columns(frame, name)).reshape(len(frame), -1)
            parts.append(block)
        return np.hstack(parts)


_OPERATORS = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.true_divide}
_FUNCTIONS = {"log": np.log, "exp": np.exp, "log2": np.log2, "log10": np.log10}  # formulaic's names


@dataclass(frozen=True, eq=False)
class Arithmetic:
    """A numeric expression of numeric columns and numbers (+ - * /, a sign, log, exp, log2, log10), evaluated directly:
    the spec of a `Column` such as cbind's 'size - incidence' or an offset's 'log(exposure)', with the values
    formulaic's I() would give, without its milliseconds."""

    tree: ast.Expression

    @classmethod
    def parse(cls, expr: str, frame: pd.DataFrame) -> Arithmetic | None:
        """The expression, or None if it holds anything else (then formulaic evaluates it)."""
        try:
            tree = ast.parse(expr, mode="eval")
        except SyntaxError:
            return None
        return cls(tree) if _plain_arithmetic(tree.body, frame) else None

    def values(self, frame: pd.DataFrame) -> np.ndarray:
        with np.errstate(all="ignore"):  # log(0) and the like: refused by the caller's finiteness check, by row
            return np.broadcast_to(_arithmetic(self.tree.body, frame), (len(frame),)).astype(float)


def _plain_arithmetic(node, frame: pd.DataFrame) -> bool:
    if isinstance(node, ast.BinOp):
        return type(node.op) in _OPERATORS and _plain_arithmetic(node.left, frame) and _plain_arithmetic(node.right, frame)
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, (ast.USub, ast.UAdd)) and _plain_arithmetic(node.operand, frame)
    if isinstance(node, ast.Call):
        return (isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and len(node.args) == 1
                and not node.keywords and _plain_arithmetic(node.args[0], frame))
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
    if isinstance(node, ast.Name) and node.id in frame.columns:
        dtype = frame[node.id].dtype
        return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
    return False


def _arithmetic(node, frame: pd.DataFrame):
    if isinstance(node, ast.BinOp):
        return _OPERATORS[type(node.op)](_arithmetic(node.left, frame), _arithmetic(node.right, frame))
    if isinstance(node, ast.UnaryOp):
        value = _arithmetic(node.operand, frame)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Call):
        return _FUNCTIONS[node.func.id](_arithmetic(node.args[0], frame))
    if isinstance(node, ast.Constant):
        return float(node.value)
    return frame[node.id].to_numpy(dtype=float)


def group_codes(frame: pd.DataFrame, factors: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and labels of the (interaction of the) grouping factors; unused levels dropped, and code -1
    for a row missing a factor (only new rows have them)."""
    cats = [as_factor(frame[g]) for g in factors]
    if len(cats) == 1:  # `as_factor` keeps only the levels that occur
        return cats[0].codes.astype(np.int64), np.asarray(cats[0].categories.astype(str), dtype=object)
    combined = np.zeros(len(frame), dtype=np.int64)
    for cat in cats:  # mixed-radix number of the level codes: one integer per combination
        combined = combined * len(cat.categories) + cat.codes
    missing = np.any([cat.codes < 0 for cat in cats], axis=0)
    uniq, codes = np.unique(combined[~missing], return_inverse=True)
    digits = []
    for cat in reversed(cats):
        digits.append(cat.categories.astype(str).to_numpy()[uniq % len(cat.categories)])
        uniq = uniq // len(cat.categories)
    labels = [":".join(parts) for parts in zip(*reversed(digits))]
    out = np.full(len(frame), -1, dtype=np.int64)
    out[~missing] = codes.ravel()
    return out, np.asarray(labels, dtype=object)


def _check_levels(t: TermCoding) -> None:
    """Refuse a grouping factor with one level, as lme4 does."""
    if len(t.levels) < 2:
        group = t.term.group
        raise MultilevelError(
            f"the grouping factor '{group}' has only {len(t.levels)} level in the rows used: a random effect needs at "
            f"least two groups; drop the term {t.term} or use '{group}' as a fixed effect"
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
