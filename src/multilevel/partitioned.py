"""Data in partitions — a Dask DataFrame or a folder/glob of Parquet files — to cross-products (pipeline step 3
without the rows in memory).

Two passes over the partitions, each tree-reduced on the user's Dask client (the synchronous scheduler when
there is none): the distinct levels of the level-bearing columns, from which the coding is learned once; then
per partition `apply_coding` and `cross_products` (per-level sums by bincount over the global level codes),
summed. Aliasing comes from the summed X'X. Everything that reads only cross-products then runs unchanged;
what needs rows is a lazy second pass (`fitted`, `residuals`) or refused. docs/scale.md has the measurements.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import pandas as pd

from .centring import centred_cross_products, centred_design, columns_from_means, product_centres_from_sums
from .crossprod import CrossProducts, cross_products, design_scaling, rescaled
from .data import check_finite, names_in
from .design import (
    TABLE_SPREAD,
    Coding,
    Design,
    RandomBlock,
    aliased_in_gram,
    apply_coding,
    check_counts,
    check_factor_levels,
    constant_response,
    constant_within_groups,
    learn_coding,
    used_columns,
    warn_aliased,
)
from .errors import MultilevelError, UnseenLevelError
from .formula import parse
from .level_partials import add_cross_products, localised, summed, total
from .partition_sources import as_source, compute
from .predict import predictor, row_log_likelihood
from .scaling import Scaling, held_blocks

SPLIT_EVERY = 2  # partial results combined per task of the reduction tree: two keep the fewest partials alive (docs/scale.md)
SAMPLE_ROWS = 10_000  # rows of the data the coding is learned from beside one per level (a Dask partition may hold 10^6)
SPREAD_ROWS = 64  # of them, rows taken evenly spaced from each partition (or file) by the levels pass
SKETCH_SIZE = 4001  # quantiles kept of the response: brms's default priors within 1/4001 in rank (docs/scale.md)


def is_partitioned(data) -> bool:
    """True for a Dask DataFrame or a path (folder or glob) of Parquet files."""
    return isinstance(data, (str, os.PathLike)) or type(data).__module__.split(".")[0] == "dask"


def tree_reduce(parts: list, combine):
    """A tree of `combine` calls over delayed parts, SPLIT_EVERY at a time, down to one delayed value."""
    from dask import delayed

    parts = list(parts)
    while len(parts) > 1:
        parts = [delayed(combine, pure=True)(*parts[i : i + SPLIT_EVERY]) for i in range(0, len(parts), SPLIT_EVERY)]
    return parts[0]


@dataclass
class Seen:
    """What the levels pass saw: one row for each distinct value of each level-bearing column set, rows spread
    over the partitions (up to SAMPLE_ROWS: the first rows of each level may all share a predictor's value, and
    the scaling learned from them would then not centre it), and the number of rows complete in every used column."""

    rows: pd.DataFrame
    spread: pd.DataFrame
    n: int

    @property
    def learning_rows(self) -> pd.DataFrame:
        """The rows the coding and the scaling are learned from."""
        return pd.concat([self.rows, self.spread])


def _complete(frame: pd.DataFrame, used: list[str]) -> pd.DataFrame:
    """Model rows of one partition: those complete in every used column (the frame itself, not a copy, if all are)."""
    keep = frame[used].notna().all(axis=1).to_numpy()
    return frame if keep.all() else frame[keep]


def _distinct(rows: pd.DataFrame, sets: list[tuple[str, ...]]) -> pd.DataFrame:
    """The first row of each distinct value of each column set (and the first row: a model without level columns
    still has a row to learn its columns' types from)."""
    firsts = [_first_rows(rows[s[0]]) if len(s) == 1 else None for s in sets]
    return pd.concat([rows.head(1)] + [rows[f] if f is not None else rows.drop_duplicates(subset=list(s)) for s, f in zip(sets, firsts)])


def _first_rows(col: pd.Series) -> np.ndarray | None:
    """Where each integer id first occurs, by a table over the ids' range (faster than hashing: docs/scale.md);
    None when the column is not integers or its range is too wide for a table."""
    if not pd.api.types.is_integer_dtype(col.dtype) or not isinstance(col.dtype, np.dtype) or not len(col):
        return None
    ids = col.to_numpy()
    low, high = int(ids.min()), int(ids.max())
    if high - low >= TABLE_SPREAD * len(ids) + 1024:
        return None
    first = np.full(high - low + 1, len(ids))
    np.minimum.at(first, ids - low, np.arange(len(ids)))
    mask = np.zeros(len(ids), dtype=bool)
    mask[first[first < len(ids)]] = True
    return mask


def column_kinds(meta: pd.DataFrame, used: list[str], groups: set[str]) -> dict[str, bool]:
    """Whether each used column other than the grouping factors holds levels (text, categories, booleans) rather
    than numbers, as the data's declared types say (a grouping factor's ids may differ in type between partitions)."""
    return {c: _is_levels(meta[c]) for c in used if c not in groups}


def check_kinds(rows: pd.DataFrame, kinds: dict[str, bool]) -> None:
    """Refuse a column holding numbers in this partition where the data's declared types say levels, or the reverse
    (it would be coded as a factor in some partitions and as a number in others)."""
    for c, levels in kinds.items():
        if _is_levels(rows[c]) != levels and rows[c].notna().any():
            here, there = ("text or categories", "numbers") if not levels else ("numbers", "text or categories")
            raise MultilevelError(
                f"column '{c}' holds {here} ({rows[c].dtype}) but {there} in the data's declared types (a Dask "
                f"DataFrame's meta, the first Parquet file holding it): store it with one type in every partition"
            )


def seen_in(frame: pd.DataFrame, used: list[str], sets: list[tuple[str, ...]], kinds: dict[str, bool]) -> Seen:
    """The levels pass on one partition."""
    rows = _complete(frame, used)
    check_kinds(rows, kinds)
    distinct, spread = _distinct(rows, sets), _evenly(rows, SPREAD_ROWS)
    check_finite(pd.concat([distinct, spread]), used)  # the coding is learned from these rows: refused here, naming the partition
    return Seen(distinct, spread, len(rows))


def merge_seen(*parts: Seen, sets: list[tuple[str, ...]]) -> Seen:
    """Several partitions' `Seen` as one."""
    rows = pd.concat([s.rows for s in parts])
    return Seen(_distinct(rows, sets), _evenly(pd.concat([s.spread for s in parts]), SAMPLE_ROWS), sum(s.n for s in parts))


def _evenly(rows: pd.DataFrame, size: int) -> pd.DataFrame:
    """At most `size` rows, evenly spaced."""
    return rows if len(rows) <= size else rows.iloc[np.linspace(0, len(rows) - 1, size).astype(np.int64)]


@dataclass
class Reduced:
    """What the accumulation pass sums: the cross-products, the unweighted column sums of X (the samplers centre
    by the plain means, as brms), a quantile sketch of the response (brms's default priors), the model rows of each
    random term's levels and of each fixed factor's categories (given levels must all have rows) and the rows dropped
    for missing values."""

    cp: CrossProducts | None  # None: no model rows
    x_sums: np.ndarray | None
    sketch: Sketch | None
    level_rows: list[np.ndarray] | None
    n_dropped: int
    seen: list[np.ndarray | None] | None = None  # per term, the levels its sums are held over (None: all; level_partials)
    m: list[int] | None = None  # per term, its number of levels
    unweighted: np.ndarray | None = None  # weighted data: the held X'X and each term's sum of z z' unweighted, flat


@dataclass
class Sketch:
    """Sorted response values with weights (rows each stands for): exact while there are at most SKETCH_SIZE
    values, else SKETCH_SIZE weighted quantiles (each merge moves a quantile by at most 1/SKETCH_SIZE in rank); and
    the exact smallest and largest values."""

    values: np.ndarray
    weights: np.ndarray
    low: float
    high: float

    @classmethod
    def of(cls, values: np.ndarray, weights: np.ndarray | None, low: float | None = None, high: float | None = None) -> Sketch:
        """The sketch of values with weights (None: each stands for one row), whose extremes are `low` and `high`
        (None: theirs)."""
        if weights is None:
            values = np.sort(values)
            weights = np.ones(len(values)) if len(values) <= SKETCH_SIZE else None
        else:
            order = np.argsort(values)
            values, weights = values[order], weights[order]
        low, high = values[0] if low is None else low, values[-1] if high is None else high
        if len(values) <= SKETCH_SIZE:
            return cls(values, weights, low, high)
        if weights is None:
            return cls(_unit_quantiles(values, SKETCH_SIZE), np.full(SKETCH_SIZE, len(values) / SKETCH_SIZE), low, high)
        return cls(_weighted_quantiles(values, weights, SKETCH_SIZE), np.full(SKETCH_SIZE, weights.sum() / SKETCH_SIZE), low, high)

    @classmethod
    def merge(cls, *sketches: Sketch) -> Sketch:
        """The sketch of several sketches' values together."""
        return cls.of(np.concatenate([s.values for s in sketches]), np.concatenate([s.weights for s in sketches]),
                      min(s.low for s in sketches), max(s.high for s in sketches))

    def sample(self) -> np.ndarray:
        """Values standing for the response in its summaries (median, MAD, mean, SD): all of them when they are
        few and unweighted, else SKETCH_SIZE equally weighted quantiles."""
        if np.all(self.weights == 1.0):
            return self.values
        return _weighted_quantiles(self.values, self.weights, SKETCH_SIZE)


def _unit_quantiles(values: np.ndarray, size: int) -> np.ndarray:
    """`_weighted_quantiles` of sorted values with unit weights, whose midpoints are at ranks (j + 1/2) / n: read
    at their positions instead of interpolating over all n (a batch's sketch in a third of the time)."""
    n = len(values)
    at = np.clip((np.arange(size) + 0.5) / size * n - 0.5, 0.0, n - 1.0)
    low = np.floor(at).astype(np.int64)
    high = np.minimum(low + 1, n - 1)
    return values[low] + (values[high] - values[low]) * (at - low)


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """`size` quantiles at ranks (i + 1/2) / size of sorted weighted values (interpolated at weight midpoints)."""
    middle = (np.cumsum(weights) - weights / 2) / weights.sum()
    return np.interp((np.arange(size) + 0.5) / size, middle, values)


def partial_sums(frame: pd.DataFrame, coding: Coding, scaling: Scaling, kinds: dict[str, bool]) -> Reduced:
    """The sums of one partition's model rows with the global coding and scaling."""
    rows = _complete(frame, list(coding.columns))
    n_complete = len(rows)
    if not n_complete:
        return Reduced(None, None, None, None, len(frame))
    check_kinds(rows, kinds)
    design = apply_coding(coding, rows)
    x_sums = np.ones(design.nobs) @ design.X  # X.sum(axis=0) walks the rows one at a time
    local, seen = localised(design)
    level_rows = [np.bincount(b.codes, minlength=b.m) for b in local.blocks]
    level_rows += [np.bincount(design.frame[c].cat.codes, minlength=len(d.categories)) for c, d in fixed_categories(coding).items()]
    unweighted = _unweighted_moments(design, scaling) if coding.weights is not None else None
    return Reduced(cross_products(local, scaling), x_sums, Sketch.of(design.y, None), level_rows, len(frame) - n_complete,
                   seen, [b.m for b in design.blocks], unweighted)


def _unweighted_moments(design: Design, scaling: Scaling) -> np.ndarray:
    """For weighted data, X'X and each term's sum of z z' of the columns as held, unweighted (ICC and R² average over
    the rows unweighted, as in memory), flat: p^2 + sum of k^2 numbers."""
    X = scaling.apply(np.column_stack([design.X, np.zeros(design.nobs)]))[:, :-1]
    return np.concatenate([(X.T @ X).ravel()] + [(b.Z.T @ b.Z).ravel() for b in held_blocks(design, scaling)])


def add_partial_sums(*parts: Reduced, into_first: bool = False, dense: bool = False) -> Reduced:
    """Several partitions' sums as one; `into_first` adds into the first part's arrays (a file's running total,
    which nothing else holds: one dense partial less alive); `dense` holds the sum over every level."""
    n_dropped = sum(p.n_dropped for p in parts)
    parts = [p for p in parts if p.cp is not None]
    if not parts:
        return Reduced(None, None, None, None, n_dropped)
    m, seen = parts[0].m, [p.seen for p in parts]
    cp, unions = add_cross_products([p.cp for p in parts], seen, m, into_first, dense)
    level_rows = [summed([p.level_rows[i] for p in parts], [s[i] for s in seen], unions[i], m[i], into_first)
                  for i in range(len(m))]
    level_rows += [total([p.level_rows[i] for p in parts], into_first) for i in range(len(m), len(parts[0].level_rows))]
    sketch = Sketch.merge(*(p.sketch for p in parts))
    unweighted = None if parts[0].unweighted is None else total([p.unweighted for p in parts], into_first)
    return Reduced(cp, total([p.x_sums for p in parts], into_first), sketch, level_rows, n_dropped, unions, m, unweighted)


def level_sets(f, meta: pd.DataFrame, used: list[str]) -> list[tuple[str, ...]]:
    """Column sets whose distinct values the coding needs: each non-numeric column (its levels), each grouping
    factor, and each interaction of grouping factors (its level combinations)."""
    sets = [(c,) for c in used if _is_levels(meta[c]) or any(c in t.group_factors for t in f.random)]
    sets += [t.group_factors for t in f.random if len(t.group_factors) > 1]
    return list(dict.fromkeys(sets))


def _is_levels(col: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype)


def check_learnable(coding: Coding, sets: list[tuple[str, ...]]) -> None:
    """Refuse what the levels pass cannot learn: transforms whose state needs all rows (center, scale, poly,
    splines) and numeric columns used as factors (their levels were not collected)."""
    level_columns = {c for s in sets for c in s}
    columns = [coding.response, coding.trials, *coding.offsets]
    specs = [coding.fixed_spec] + [c.spec for c in columns if c is not None] + [t.spec for t in coding.terms]
    for spec in specs:
        for name in getattr(spec, "transform_state", {}) or {}:
            raise MultilevelError(
                f"'{name}' learns its values from all rows, which partitioned data are not read for: compute the "
                "transformed column in the data first (e.g. subtract a known mean), or fit in memory"
            )
        for expr, (kind, _) in (getattr(spec, "encoder_state", {}) or {}).items():
            numeric = [c for c in names_in(expr, coding.columns) if c not in level_columns]
            if getattr(kind, "value", kind) == "categorical" and numeric:
                raise MultilevelError(
                    f"'{expr}' uses the numeric column(s) {numeric} as a factor: with partitioned data store them as "
                    "strings or categoricals, so that one pass over the data finds their levels"
                )


def drop_aliased(coding: Coding, sums: Reduced) -> tuple[Coding, Reduced]:
    """Fixed columns aliased in the summed X'X dropped from the coding and the sums (with lme4's warning)."""
    cp = sums.cp
    bad = aliased_in_gram(cp.xy[: cp.p, : cp.p])
    if not bad.any():
        return coding, sums
    names = list(coding.fixed_names)
    aliased = [n for n, b in zip(names, bad) if b]
    warn_aliased(aliased, stacklevel=6)
    keep = np.append(np.flatnonzero(~bad), cp.p)  # and the response column
    coding = replace(coding, fixed_names=tuple(n for n, b in zip(names, bad) if not b), aliased=tuple(aliased))
    unweighted = sums.unweighted
    if unweighted is not None:  # its X'X without the aliased columns
        p = cp.p
        gram = unweighted[: p * p].reshape(p, p)[np.ix_(~bad, ~bad)]
        unweighted = np.concatenate([gram.ravel(), unweighted[p * p :]])
    cp = replace(cp, p=len(keep) - 1, zxy=[z[:, keep] for z in cp.zxy], xy=cp.xy[np.ix_(keep, keep)], scaling=cp.held.drop(keep))
    return coding, replace(sums, cp=cp, x_sums=sums.x_sums[~bad], unweighted=unweighted)


def partitioned_design(formula, data, weights=None, offset=None, levels=None) -> tuple[PartitionedDesign, CrossProducts]:
    """The design (without rows) and cross-products of partitioned data: levels pass (skipped when every level-bearing
    column's levels are given in `levels` or known categories), coding, accumulation pass, checks of the sums."""
    for arg, what in ((weights, "weights"), (offset, "offset")):
        if arg is not None and not isinstance(arg, str):
            raise MultilevelError(f"with partitioned data give {what} as a column name: an array cannot follow the partitions")
    f = parse(formula) if isinstance(formula, str) else formula
    source = as_source(data)
    used = used_columns(f, source.meta, weights, offset)
    sets = level_sets(f, source.meta, used)
    groups = {g for t in f.random for g in t.group_factors}
    kinds = column_kinds(source.meta, used, groups)
    given = given_levels(source, sets, groups | {":".join(t.group_factors) for t in f.random}, levels)
    rows = _levels_pass(source, used, sets, kinds).learning_rows if given is None else rows_of_levels(source, used, given)
    coding = learn_coding(f, rows, weights, offset, aliasing=False)
    if coding.se is not None:
        raise MultilevelError("known standard errors (se()) are not supported for partitioned data (the samplers read "
                              "them per row): a meta-analysis's rows fit in memory, pass them as a pandas frame (ddf.compute())")
    check_learnable(coding, sets)
    check_factor_levels(coding.fixed_spec, coding.terms)
    sums = _accumulate(source, used, coding, design_scaling(apply_coding(coding, rows)), kinds, levels is not None)
    if given is not None:
        check_given_levels(coding, sums.level_rows, levels or {})
    coding, sums = drop_aliased(coding, sums)
    n = sums.cp.n
    check_counts(coding, n)
    check_variation_of_sums(coding, sums.cp, sums.sketch)  # as in memory: the residual variance needs variation within groups
    moments = RowMoments.of(sums.cp, sums.x_sums, sums.unweighted)
    return (PartitionedDesign(coding, source, n, sums.n_dropped, sums.x_sums / n, sums.sketch.sample(), moments,
                              sums.level_rows), sums.cp)


def _accumulate(source, used: list[str], coding: Coding, scaling: Scaling, kinds: dict[str, bool], levels_given: bool) -> Reduced:
    """The accumulation pass: every partition's sums with the coding and the scaling (learned from the levels pass's
    rows: any nearby centre will do), tree-summed, each term's sums then held over all its levels."""
    from dask import delayed

    shared = delayed(coding, pure=True, traverse=False)  # one task holding the coding, not a copy in every task
    parts = source.partials(used, partial_sums, shared, scaling, kinds, combine=partial(add_partial_sums, into_first=True))
    try:
        (sums,) = compute(tree_reduce(parts, add_partial_sums))
    except UnseenLevelError as exc:
        raise (UnseenLevelError(f"{exc}; levels= must list every level in the data") if levels_given else exc) from None
    if sums.cp is None:
        raise MultilevelError(f"no rows are left after dropping rows with missing values in {used}: check those columns")
    return add_partial_sums(sums, into_first=True, dense=True)  # terms held over the levels seen: over all levels


WITHIN_SHARE = 1e-14  # a response whose sum of squares within levels is below this share of its total is constant within
# them to the sums' precision (an SD ratio of 1e-7; exactly constant: 2e-16 at 10^5 rows, 17 partitions, shifts to 1e9)


def check_variation_of_sums(coding: Coding, cp: CrossProducts, sketch: Sketch) -> None:
    """`design.check_variation`'s refusals from the sums: a constant response (its exact extremes), or one constant
    within every level of a term with an intercept (its sum of squares within levels, y'y less each level's
    (Z'y)^2 / n, at most WITHIN_SHARE of that about its mean: the sums' rounding, not exact zeros; in memory a response
    nearly constant within levels is fitted with a warning that its variances are meaningless)."""
    name = str(coding.formula.response).strip()
    if sketch.low == sketch.high:
        raise constant_response(name, cp.n, sketch.low)
    for t, diag, zxy in zip(coding.terms, cp.diag, cp.zxy):
        if "(Intercept)" not in t.coef_names:
            continue
        j = list(t.coef_names).index("(Intercept)")
        counts, sums = diag[:, j, j], zxy.reshape(len(diag), -1, zxy.shape[1])[:, j, -1]
        about_mean = cp.yty - sums.sum() ** 2 / counts.sum()
        within = cp.yty - np.sum(sums**2 / counts)
        if within <= WITHIN_SHARE * about_mean:
            raise constant_within_groups(name, t.term.group, " (to the precision of the sums: its SD within levels is below 1e-7 of its SD)")


def given_levels(source, sets: list[tuple[str, ...]], groups: set[str], levels) -> dict | None:
    """The levels that skip the levels pass: those of `levels=` and the data's known categories (a Dask DataFrame's
    categoricals with `cat.known`); None, to run the pass, when some level-bearing column's levels are not known
    and `levels=` is not given (given, it must then cover them: refused naming the fix). An interaction of grouping
    factors is given as its level combinations, ``{"a:b": [(a1, b1), ...]}``; its factors' levels are theirs."""
    if levels is not None:
        if not isinstance(levels, dict):
            raise MultilevelError(f"levels= must be a dict of grouping factor to its levels, not {type(levels).__name__}")
        unknown = sorted(set(levels) - groups)
        if unknown:
            raise MultilevelError(f"levels= names {unknown}, which are not grouping factors of the formula")
    given = {**source.known_categories([s[0] for s in sets if len(s) == 1]), **(levels or {})}
    for name, combinations in [(n, v) for n, v in given.items() if ":" in n]:
        for i, factor in enumerate(name.split(":")):
            implied = _combination_column(name, combinations, i)
            if factor in (levels or {}) and set(_index_of(factor, levels[factor])) != set(implied):
                raise MultilevelError(f"levels= for '{factor}' and the combinations given for '{name}' differ: give "
                                      f"the levels of '{factor}' that its combinations hold, or only the combinations")
            given.setdefault(factor, implied)
    missing = [":".join(s) for s in sets if ":".join(s) not in given]
    if not missing:
        return given
    if levels is None:
        return None
    raise MultilevelError(
        f"levels= skips the pass over the data that finds levels, so it must give every grouping factor's levels "
        f"(an interaction's as its level combinations, e.g. {{'a:b': [(a1, b1), ...]}}), and the formula may have no "
        f"other factor columns (but categoricals with known categories) (missing: {missing}): give them, or omit "
        f"levels= to learn them in one pass"
    )


def _combination_column(name: str, combinations, i: int) -> pd.Index:
    """The distinct values of the i-th factor among an interaction's given level combinations (checked as tuples)."""
    width = len(name.split(":"))
    try:
        rows = [tuple(c) for c in combinations]
    except TypeError:
        rows = None
    if rows is None or isinstance(combinations, str) or any(len(r) != width for r in rows) or len(set(rows)) != len(rows):
        raise MultilevelError(f"levels= for '{name}' must be a list of distinct combinations, each a tuple of {width} "
                              f"levels (one per factor), e.g. [(a1, b1), (a1, b2)]")
    return pd.Index(list(dict.fromkeys(r[i] for r in rows)))


def rows_of_levels(source, used: list[str], given: dict) -> pd.DataFrame:
    """Rows to learn the coding from without a levels pass: the first complete rows of the data (up to SAMPLE_ROWS),
    repeated to hold each given level of each column once at least, and each given combination of an interaction
    (their other columns: real rows, for the scaling)."""
    combinations = {name: [tuple(c) for c in values] for name, values in given.items() if ":" in name}
    given = {c: _index_of(c, values) for c, values in given.items() if ":" not in c}
    sample = source.first_rows(used, partial(_complete, used=used))
    if not len(sample):
        raise MultilevelError(f"no rows are left after dropping rows with missing values in {used}: check those columns")
    size = max([min(len(sample), SAMPLE_ROWS)] + [len(index) for index in given.values()]
               + [len(rows) for rows in combinations.values()])
    rows = sample.iloc[np.resize(np.arange(len(sample)), size)].reset_index(drop=True)
    for c, index in given.items():
        rows[c] = _column_of(c, np.resize(index.to_numpy(), size), source.meta[c].dtype)
    for name, values in combinations.items():  # after the single factors: each row a given combination
        for i, factor in enumerate(name.split(":")):
            rows[factor] = _column_of(factor, np.resize(pd.Index([v[i] for v in values]).to_numpy(), size),
                                      source.meta[factor].dtype)
    return rows


def _index_of(name: str, values) -> pd.Index:
    """Given levels as an index, refused unless they are a collection of distinct values without missing ones."""
    try:
        index = pd.Index(values)
    except TypeError:
        index = None
    if index is None or not index.is_unique or index.hasnans:
        raise MultilevelError(f"levels= for '{name}' must be a list of distinct values without missing ones")
    return index


def _column_of(name: str, values: np.ndarray, dtype) -> pd.Series | pd.Categorical:
    """Given levels as a column of the data's type (categoricals: in the order of known categories, else sorted)."""
    if isinstance(dtype, pd.CategoricalDtype):
        known = dtype.categories if len(dtype.categories) else None
        if known is not None and not pd.Index(values).isin(known).all():
            outside = sorted(set(pd.Index(values).difference(known).astype(str)))[:5]
            raise MultilevelError(f"levels= for '{name}' has {outside}, which are not among its categories")
        return pd.Categorical(values, categories=known, ordered=dtype.ordered)
    try:
        return pd.Series(values).astype(dtype)
    except (TypeError, ValueError) as exc:
        raise MultilevelError(f"levels= for '{name}' are not values of its type ({dtype}): {exc}") from None


def check_given_levels(coding: Coding, level_rows: list[np.ndarray], levels: dict) -> None:
    """Refuse given levels (`levels=`, or known categories of a grouping factor or fixed factor) without model rows:
    a pass over the data would not have found them, and the fit would differ."""
    columns = [":".join(t.term.group_factors) for t in coding.terms] + list(fixed_categories(coding))
    labels = [t.levels for t in coding.terms] + [d.categories for d in fixed_categories(coding).values()]
    for column, names, rows in zip(columns, labels, level_rows):
        empty = [names[i] for i in np.flatnonzero(rows == 0)]
        if empty and column in levels:
            raise MultilevelError(
                f"level(s) {empty[:5]} of '{column}' given in levels= have no complete rows in the data (rows with "
                f"missing values are dropped): give only the levels present, or omit levels= to learn them"
            )
        if empty:
            raise MultilevelError(
                f"categories {empty[:5]} of '{column}' have no complete rows in the data (rows with missing values are "
                f"dropped). Known categories are taken as the levels, skipping a pass over the data: remove the unused "
                f"ones (df['{column}'] = df['{column}'].cat.remove_unused_categories()), or let one pass learn the "
                f"levels (df['{column}'] = df['{column}'].cat.as_unknown())"
            )


def fixed_categories(coding: Coding) -> dict[str, pd.CategoricalDtype]:
    """The categorical columns other than grouping factors (fixed-effect factors), with their learned categories."""
    groups = {g for t in coding.terms for g in t.term.group_factors}
    return {c: d for c, d in coding.categories.items() if c not in groups}


def _levels_pass(source, used: list[str], sets: list[tuple[str, ...]], kinds: dict[str, bool]) -> Seen:
    merge = partial(merge_seen, sets=sets)
    (seen,) = compute(tree_reduce(source.partials(used, seen_in, used, sets, kinds, combine=merge), merge))
    if seen.n == 0:
        raise MultilevelError(f"no rows are left after dropping rows with missing values in {used}: check those columns")
    return seen


@dataclass(frozen=True)
class RowMoments:
    """Unweighted moments of the model rows read from the sums (ICC, R²): X'X and each term's sum of z z' as the
    cross-products hold them, the map back to the user's columns, and X's column sums."""

    n: int
    gram: np.ndarray  # (p, p): X'X of the held columns
    held: Scaling
    x_sums: np.ndarray  # (p,): the user's columns' sums
    terms: list[np.ndarray]  # per term (k, k): the mean of z z' over the rows, the user's covariates

    @classmethod
    def of(cls, cp: CrossProducts, x_sums: np.ndarray, unweighted: np.ndarray | None) -> RowMoments:
        """From the cross-products, or for weighted data from their unweighted moments (`Reduced.unweighted`); a held
        term's covariates Z M mapped back: Z'Z = M^-T (Z M)'(Z M) M^-1."""
        p, at = cp.p, cp.p * cp.p
        gram = cp.xy[:p, :p] if unweighted is None else unweighted[:at].reshape(p, p)
        terms = []
        for t, diag in enumerate(cp.diag):
            k = diag.shape[1]
            if unweighted is None:
                zz = diag.sum(axis=0)
            else:
                zz, at = unweighted[at : at + k * k].reshape(k, k), at + k * k
            back = np.linalg.inv(cp.held.random_map(t, k))
            terms.append(back.T @ zz @ back / cp.n)
        return cls(cp.n, gram, cp.held, x_sums, terms)

    def fixed_variance(self, beta: np.ndarray) -> np.ndarray:
        """var(X beta) over the rows (ddof 1) for each row of beta (draws, p): X beta less its mean is X_held g with g
        the held coefficients less the mean times the unit's (X unit = 1), so no mean squared cancels."""
        p = len(self.x_sums)
        inverse = self.held.inverse[:p, :p]
        mean = beta @ self.x_sums / self.n
        g = beta @ inverse.T - mean[:, None] * (inverse @ self.held.unit)[None, :]
        held_sums = self.x_sums @ self.held.matrix[:p, :p]
        sum_sq = np.einsum("da,ab,db->d", g, self.gram, g)
        return (sum_sq - (g @ held_sums) ** 2 / self.n) / (self.n - 1)


class PartitionedDesign(Design):
    """A design whose rows stay in their partitions: the coding, the counts, the random terms' levels and the rows'
    moments. Reading its rows (`X`, `y`, ...) is refused naming the alternatives; `fitted`, `residuals` and
    `log_likelihood` are lazy."""

    def __init__(self, coding: Coding, source, nobs: int, n_dropped: int, x_means: np.ndarray, response_sample: np.ndarray,
                 moments: RowMoments, level_rows: list[np.ndarray]):
        self.coding, self._source, self._nobs, self.n_dropped = coding, source, nobs, n_dropped
        self.moments = moments  # the rows' unweighted averages (ICC, R²)
        self.x_means, self.response_sample = x_means, response_sample
        self.formula, self.fixed_names, self.aliased = coding.formula, list(coding.fixed_names), list(coding.aliased)
        self.blocks = [PartitionedBlock(t, rows) for t, rows in zip(coding.terms, level_rows)]

    def __repr__(self) -> str:
        return f"PartitionedDesign({str(self.formula)!r}, nobs={self.nobs}, partitions={self._source.npartitions})"

    @property
    def nobs(self) -> int:
        return self._nobs

    @property
    def source(self):
        """The data's used columns as a Dask DataFrame (built on first use: the passes read Parquet files directly)."""
        return self._source.to_dask(list(self.coding.columns))

    @property
    def p(self) -> int:
        return len(self.fixed_names)

    y = property(lambda self: _refuse("the response"))
    X = property(lambda self: _refuse("the fixed-effect matrix"))
    frame = property(lambda self: _refuse("the data rows"))
    weights = property(lambda self: None if self.coding.weights is None else _refuse("the weights"))
    offset = property(lambda self: None if self.coding.offset is None else _refuse("the offset"))
    se = None  # known standard errors are refused for partitioned data

    def fitted(self, beta: np.ndarray, b: list[np.ndarray] | None, held: Scaling | None = None):
        """X beta (+ Z b) (+ offset) of every model row, as a lazy Dask Series in the data's partitions (with `held`,
        beta and b are the held columns': `predict.held_predictor`)."""
        return self.source.map_partitions(_row_values, self.coding, beta, b, held, meta=("fitted", float))

    def residuals(self, beta: np.ndarray, b: list[np.ndarray], held: Scaling | None = None):
        """y - fitted of every model row, as a lazy Dask Series."""
        return self.source.map_partitions(_row_values, self.coding, beta, b, held, "residual", meta=("residual", float))

    def log_likelihood(self, beta: np.ndarray, b: list[np.ndarray], held: Scaling | None, family, sigma: float):
        """Each model row's log density given its fitted value (`predict.row_log_likelihood`), as a lazy Dask Series."""
        return self.source.map_partitions(_row_values, self.coding, beta, b, held, "log_likelihood", family, sigma,
                                          meta=("log_likelihood", float))


class PartitionedBlock(RandomBlock):
    """A random term of partitioned data: its names, levels and rows per level (`sizes`); its rows (`codes`, `Z`) are
    refused."""

    def __init__(self, t, sizes: np.ndarray):
        self.term, self.coef_names, self.levels, self.spec = t.term, list(t.coef_names), t.levels, t.spec
        self.sizes = sizes

    def __repr__(self) -> str:
        return f"PartitionedBlock({self.term}, levels={self.m})"

    @property
    def k(self) -> int:
        return len(self.coef_names)

    codes = property(lambda self: _refuse("the group codes of the rows"))
    Z = property(lambda self: _refuse("the random-effect covariates of the rows"))


def _row_values(frame: pd.DataFrame, coding: Coding, beta, b, held: Scaling | None, what: str = "fitted", family=None,
                sigma: float | None = None) -> pd.Series:
    """Fitted values, residuals or log-likelihoods of one partition's model rows, on their index (`predict.predictor`,
    `predict.row_log_likelihood`)."""
    rows = _complete(frame, list(coding.columns))
    values = np.empty(0)
    if len(rows):
        design = apply_coding(coding, rows)
        values = predictor(design, beta, b, held)
        if what == "residual":
            values = design.y - values
        elif what == "log_likelihood":
            values = row_log_likelihood(design, family, values, sigma)
    return pd.Series(values, index=rows.index, name=what)


def _refuse(what: str):
    raise MultilevelError(
        f"this needs {what}, and the rows of partitioned data are not held in memory. Everything computed from the cross-products works "
        "(fit, summaries, intervals, Satterthwaite, profiles, ICC/R², sampling); fit.fitted(), fit.residuals() and "
        "fit.log_likelihood() are lazy Dask series, predict(new_data) works on new rows; for per-row checks (LOO, "
        "predictive checks, bootstrap) "
        "fit a subsample in memory or use group-level K-fold"
    )


def refuse_rows(design: Design, what: str) -> None:
    """Refuse, naming the alternatives, a statistic that reads the rows (for every draw, refit or group) when they
    stay in their partitions."""
    if isinstance(design, PartitionedDesign):
        raise MultilevelError(
            f"{what} reads the rows of the data, and partitioned data (Dask, Parquet) are not held in memory: fit a "
            "subsample in memory for it (e.g. mlv.Model(formula, ddf.sample(frac=0.01).compute())), or compare models by group-level K-fold (fit each model without some groups' rows, score the held-out rows "
            "with predict(new_data)). From the sums on all the data: fits, summaries, intervals, ICC/R², sampling; "
            "fitted(), residuals() and log_likelihood() are lazy Dask series"
        )


def response_values(design: Design) -> np.ndarray:
    """The response for its summaries (brms's default priors, starting values): all of it in memory, the
    quantile sketch's sample for partitioned data."""
    return design.response_sample if isinstance(design, PartitionedDesign) else design.y


def sampler_inputs(model, y0: float = 0.0, informative=frozenset()) -> tuple[Design, CrossProducts, Scaling, bool]:
    """The samplers' design (non-intercept columns centred, products of far factors formed of centred ones, the
    intercept last: `centring.centred_design`; the response less y0, which only a model with an intercept absorbs)
    and its cross-products, with the `Scaling` that makes those columns and whether there is an intercept; for
    partitioned data by the exact linear map of the cross-products (`centring.centred_cross_products`; products
    of far factors formed of centred ones, `centring.columns_from_means`) instead of the rows."""
    design = model.design
    if not isinstance(design, PartitionedDesign):
        centred, columns, intercept = centred_design(design, informative)
        centred = replace(centred, y=centred.y - y0) if y0 else centred
        return centred, cross_products(centred, Scaling.identity(centred.p)), columns, intercept
    names = design.fixed_names
    if "(Intercept)" not in names:
        return design, rescaled(model.cross_products, None), Scaling.identity(len(names)), False  # the user's units
    centred = copy.copy(design)
    keep = [j for j, n in enumerate(names) if n != "(Intercept)"]
    centred.fixed_names = [names[j] for j in keep] + ["(Intercept)"]
    cp = model.cross_products
    columns = product_centres_from_sums(columns_from_means(names, design.x_means, column_sds(cp, names.index("(Intercept)")),
                                                           cp.held.products, informative), cp, names.index("(Intercept)"))
    return centred, centred_cross_products(cp, names, columns, y0), columns, True


def column_sds(cp: CrossProducts, intercept: int) -> np.ndarray:
    """Each fixed column's (weighted) SD from the held cross-products, whose intercept column is 1: centring leaves
    an SD alone and the held scale restores it (a product's is that of its centred factors' product)."""
    xy, p = cp.xy, cp.p
    n = xy[intercept, intercept]
    variance = np.diag(xy)[:p] / n - (xy[intercept, :p] / n) ** 2
    return np.sqrt(np.maximum(variance, 0.0)) * cp.held.scale[:p]
