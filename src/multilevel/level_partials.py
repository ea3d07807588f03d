"""A partition's per-level sums held dense over all of a term's levels where it sees many of them, and as (levels,
values) over only the levels it sees where it sees few (data sorted by group, or batches far smaller than the
levels: a 250,000-row batch of 10^7 levels need not fill 10^7 zeros); summed by merging the level lists, dense
once they cover SPARSE_SHARE of the levels. docs/scale.md has the measurements."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from .crossprod import CrossProducts
from .design import Design

SPARSE_SHARE = 0.25  # a term's sums are held sparse while they cover at most this share of its levels


def localised(design: Design) -> tuple[Design, list[np.ndarray | None]]:
    """The design with each term's codes into the levels its rows see, where those are few, and per term those
    levels (sorted global codes; None: every level, codes unchanged). A narrow range of codes is taken whole (no
    sort); rows far fewer than the levels by their distinct codes."""
    blocks, seen = [], []
    for b in design.blocks:
        levels = _seen_levels(b.codes, b.m)
        seen.append(levels)
        if levels is None:
            blocks.append(b)
            continue
        local = b.codes - levels[0] if levels[-1] - levels[0] + 1 == len(levels) else np.searchsorted(levels, b.codes)
        blocks.append(replace(b, levels=b.levels[levels], codes=local))
    return replace(design, blocks=blocks), seen


def _seen_levels(codes: np.ndarray, m: int) -> np.ndarray | None:
    """The levels a partial is held over: a range of codes within SPARSE_SHARE of the levels, else the distinct
    codes when there are few rows, else None (all levels)."""
    if not len(codes):
        return None
    low, high = int(codes.min()), int(codes.max())
    if high - low + 1 <= SPARSE_SHARE * m:
        return np.arange(low, high + 1)
    if len(codes) <= SPARSE_SHARE * m:
        levels = _distinct_sorted(np.sort(codes))
        return levels if len(levels) <= SPARSE_SHARE * m else None
    return None


def _distinct_sorted(values: np.ndarray) -> np.ndarray:
    """The distinct values of a sorted array (np.unique hashes them first: 10x slower here)."""
    keep = np.empty(len(values), dtype=bool)
    keep[:1] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def merged_levels(seen: list[np.ndarray | None], m: int) -> np.ndarray | None:
    """The levels a sum of partials is held over: their union, or None (all) when any is dense or the union
    covers more than SPARSE_SHARE of the m levels."""
    if any(s is None for s in seen):
        return None
    union = _distinct_sorted(np.sort(np.concatenate(seen), kind="stable"))  # sorted runs: merged in linear time
    return union if len(union) <= SPARSE_SHARE * m else None


def summed(arrays: list[np.ndarray], seen: list[np.ndarray | None], union: np.ndarray | None, m: int,
           into_first: bool = False) -> np.ndarray:
    """The sum of per-level arrays (first axis: the levels each is held over, `seen`; None: all m) over `union`
    (None: all m levels); `into_first` adds into the first array when it is held over `union` already."""
    if union is None and all(s is None for s in seen):
        return total(arrays, into_first)
    size = m if union is None else len(union)
    first = seen[0] is None if union is None else seen[0] is not None and np.array_equal(seen[0], union)
    out = arrays[0] if into_first and first else np.zeros((size,) + arrays[0].shape[1:])
    skip = 1 if out is arrays[0] else 0
    for a, s in zip(arrays[skip:], seen[skip:]):
        where = positions(s, union)
        if where is None:
            out += a
        elif len(where) and where[-1] - where[0] + 1 == len(where):
            out[where[0] : where[-1] + 1] += a  # a range of levels: a slice, no gather and scatter
        else:
            out[where] += a  # levels are distinct within a partial: no repeated targets
    return out


def positions(seen: np.ndarray | None, union: np.ndarray | None) -> np.ndarray | None:
    """Where the levels `seen` sit among `union` (None: all levels, in order)."""
    if seen is None:
        return None
    if union is None:
        return seen
    return seen - union[0] if union[-1] - union[0] + 1 == len(union) else np.searchsorted(union, seen)  # a range: no search


def summed_off(blocks: list[sp.spmatrix], rows: list, cols: list, shape: tuple[int, int], all_levels: bool) -> sp.csr_matrix:
    """The sum of off-diagonal blocks Z_i'WZ_j, each held over its own effects `rows` and `cols` (positions of its
    effects among the sum's; None: the same), as one CSR matrix of `shape` (`all_levels`: every block is held over
    all effects, so they add as they are)."""
    if all_levels:
        return sum(blocks[1:], blocks[0]).tocsr()
    parts = [b.tocoo() for b in blocks]
    r = np.concatenate([p.row if at is None else at[p.row] for p, at in zip(parts, rows)])
    c = np.concatenate([p.col if at is None else at[p.col] for p, at in zip(parts, cols)])
    return sp.csr_matrix((np.concatenate([p.data for p in parts]), (r, c)), shape=shape)


def effect_positions(level_positions: np.ndarray | None, k: int) -> np.ndarray | None:
    """Positions of a term's effects (k per level, level-major) from the positions of its levels."""
    if level_positions is None:
        return None
    return (level_positions[:, None] * k + np.arange(k)).ravel()


def add_cross_products(parts: list[CrossProducts], seen: list[list], m: list[int], into_first: bool = False,
                       dense: bool = False) -> tuple[CrossProducts, list[np.ndarray | None]]:
    """The sum of partial cross-products whose terms are held over the levels `seen` (per part, per term; m: the
    terms' level counts), and the levels each term of the sum is held over (`dense`: all of them)."""
    first = parts[0]
    n_terms = len(first.diag)
    unions = [None if dense else merged_levels([s[i] for s in seen], m[i]) for i in range(n_terms)]
    ks = [d.shape[1] for d in first.diag]
    diag, zxy = [], []
    for i in range(n_terms):
        held = [s[i] for s in seen]
        diag.append(summed([p.diag[i] for p in parts], held, unions[i], m[i], into_first))
        z = summed([p.zxy[i].reshape(-1, ks[i], p.zxy[i].shape[1]) for p in parts], held, unions[i], m[i], into_first)
        zxy.append(z.reshape(-1, z.shape[2]))
    off = {}
    for (i, j) in first.off:
        all_levels = all(s[i] is None and s[j] is None for s in seen) and unions[i] is None and unions[j] is None
        rows = [effect_positions(positions(s[i], unions[i]), ks[i]) for s in seen]
        cols = [effect_positions(positions(s[j], unions[j]), ks[j]) for s in seen]
        shape = (diag[i].shape[0] * ks[i], diag[j].shape[0] * ks[j])
        off[(i, j)] = summed_off([p.off[(i, j)] for p in parts], rows, cols, shape, all_levels)
    xy = total([p.xy for p in parts], into_first)
    cp = CrossProducts(sum(p.n for p in parts), first.p, diag, off, zxy, xy, sum(p.sum_log_w for p in parts), first.scaling)
    return cp, unions


def total(arrays: list[np.ndarray], into_first: bool) -> np.ndarray:
    """The sum of arrays in one new array (`sum` makes one per addition, and a dense partial over 10^5 levels
    costs more to allocate than to add), or in the first."""
    if into_first:
        out = arrays[0]
    else:
        out = arrays[0].copy() if len(arrays) == 1 else arrays[0] + arrays[1]
        arrays = arrays[1:]
    for a in arrays[1:]:
        out += a
    return out
