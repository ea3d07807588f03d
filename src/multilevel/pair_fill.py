"""The fill B M B' of the first term when the engine's fill map is too large (crossed terms with many levels:
the map takes about 72 bytes a pair while built, 10 GB at 10^7 crossed rows): each level's pairs of entries in the
other terms' rows, listed level by level (12 bytes a pair, no sort) and applied by one scatter per evaluation; the
rows of X and y, dense over the levels, by one product. docs/scale.md has the measurements."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .dense_memory import available_bytes

PAIR_BYTES = 12  # a pair's flat target (int32) and weight (float64)
MEMORY_SHARE = 0.25  # the list is built only within this share of the memory available
CHUNK_LEVELS = 5_000  # levels whose pairs are formed at a time while building (~50 MB of temporaries at 20 entries a level)


def pairs_fit(B: sp.csr_matrix, q_rest: int, k0: int = 1) -> bool:
    """Whether the pair list of B's first q_rest rows (k0 columns a level) fits in a quarter of the memory available."""
    counts = np.bincount(B.indices[: B.indptr[q_rest]] // k0, minlength=B.shape[1] // k0).astype(np.float64)
    available = available_bytes()
    return available is not None and bool(PAIR_BYTES * np.sum(counts * (counts + 1) / 2) <= MEMORY_SHARE * available)


def pairs_within_runs(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For entries held in runs of `counts` (a level's entries together), the positions (a, b) of every pair of
    entries of one run with b at or before a: a ascending, and for each a, b from its run's first entry to a."""
    first = np.repeat(np.cumsum(counts) - counts, counts)  # each entry's run's first entry
    run = np.arange(len(first)) - first + 1  # pairs of an entry with those at or before it in its run
    a = np.repeat(np.arange(len(first)), run)
    return a, first[a] + np.arange(len(a)) - np.repeat(np.cumsum(run) - run, run)


class PairFill:
    """The lower triangle of B M B' for per-level k0 x k0 blocks M, B (r x m0 k0, level-major columns) being
    [Z_2..Z_t, X, y]'WZ_1 with its first q_rest rows (the other terms' effects) sparse and the rest (X, y) dense."""

    def __init__(self, B: sp.csr_matrix, q_rest: int, rest: sp.csr_matrix, k0: int = 1):
        """`rest`: B's first q_rest rows transposed (m0 k0 x q_rest), e.g. the cross-products' Z_1'WZ_2 (not copied)."""
        self.B, self.q, self.r, self.k0 = B, q_rest, B.shape[0], k0
        self.dense = B[q_rest:].toarray()  # X and y rows: (p + 1, m0 k0)
        self.pairs = _pair_list(rest, self.r, k0)

    def fill(self, M: np.ndarray) -> np.ndarray:
        """The dense r x r lower triangle of B diag(M) B' (zeros above the diagonal); M: the blocks, flat."""
        F = (self.pairs @ M).reshape(self.r, self.r)  # rows and columns of the other terms' effects
        k0 = self.k0
        if k0 == 1:
            DM = self.dense * M
        else:  # each level's X and y entries times its block
            DM = np.einsum("cga,gab->cgb", self.dense.reshape(len(self.dense), -1, k0), M.reshape(-1, k0, k0)).reshape(self.dense.shape)
        rest = (self.B @ DM.T).T  # (p + 1, r): the X and y rows against every row
        F[self.q :, : self.q] = rest[:, : self.q]
        F[self.q :, self.q :] = np.tril(rest[:, self.q :])
        return F


def _pair_list(Bt: sp.csr_matrix, r: int, k0: int = 1) -> sp.csc_matrix:
    """For each level (its k0 rows of Bt: its entries in the other terms' rows, per coefficient), every pair of
    its entries (e1, e2) with e2 not after e1 in (row, coefficient) order, as (flat target row_1 * r + row_2, weight
    B_e1 B_e2, doubled for two coefficients of one row, which stand for both orders): an (r^2 x m0 k0^2) CSC matrix,
    a column per entry (a, b) of a level's block, whose product with the flat blocks M sums the pairs into the flat
    lower triangle. Bt's indices are sorted in place."""
    Bt.sort_indices()
    m0, kk = Bt.shape[0] // k0, k0 * k0
    counts = np.diff(Bt.indptr[::k0])  # entries per level
    starts = np.concatenate([[0], np.cumsum(counts * (counts + 1) // 2)])
    targets, weights = np.empty(starts[-1], dtype=np.int32 if r * r < 2**31 else np.int64), np.empty(starts[-1])
    per_column = np.zeros(m0 * kk, dtype=np.int64)
    for start in range(0, m0, CHUNK_LEVELS):
        stop = min(m0, start + CHUNK_LEVELS)
        lo, hi = Bt.indptr[start * k0], Bt.indptr[stop * k0]
        rows, values, c = Bt.indices[lo:hi].astype(np.int64), Bt.data[lo:hi], counts[start:stop]
        if k0 > 1:  # a level's entries in (row, coefficient) order
            coef = np.repeat(np.arange(start * k0, stop * k0) % k0, np.diff(Bt.indptr[start * k0 : stop * k0 + 1]))
            order = np.lexsort((coef, rows, np.repeat(np.arange(stop - start), c)))
            rows, values, coef = rows[order], values[order], coef[order]
        a, b = pairs_within_runs(c)
        target, weight = rows[a] * r + rows[b], values[a] * values[b]
        if k0 > 1:  # grouped by block entry (level, coef a, coef b): the CSC matrix's columns
            weight *= np.where((rows[a] == rows[b]) & (a != b), 2.0, 1.0)
            column = np.repeat(np.arange(stop - start), c)[a] * kk + coef[a] * k0 + coef[b]
            order = np.argsort(column, kind="stable")
            target, weight = target[order], weight[order]
            per_column[start * kk : stop * kk] = np.bincount(column, minlength=(stop - start) * kk)
        targets[starts[start] : starts[stop]], weights[starts[start] : starts[stop]] = target, weight
    indptr = starts if k0 == 1 else np.concatenate([[0], np.cumsum(per_column)])
    return sp.csc_matrix((weights, targets, indptr), shape=(r * r, m0 * kk))
