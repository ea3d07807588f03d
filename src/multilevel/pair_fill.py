"""The fill B M B' of a scalar first term when the engine's fill map is too large (crossed terms with many levels:
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


def pairs_fit(B: sp.csr_matrix, q_rest: int) -> bool:
    """Whether the pair list of B's first q_rest rows fits in a quarter of the memory available."""
    counts = np.bincount(B.indices[: B.indptr[q_rest]], minlength=B.shape[1]).astype(np.float64)
    available = available_bytes()
    return available is not None and bool(PAIR_BYTES * np.sum(counts * (counts + 1) / 2) <= MEMORY_SHARE * available)


class PairFill:
    """The lower triangle of B M B' for per-level scalars M, B (r x m0) being [Z_2..Z_t, X, y]'WZ_1 with its
    first q_rest rows (the other terms' effects) sparse and the rest (X, y) dense."""

    def __init__(self, B: sp.csr_matrix, q_rest: int, rest: sp.csr_matrix):
        """`rest`: B's first q_rest rows transposed (m0 x q_rest), e.g. the cross-products' Z_1'WZ_2 (not copied)."""
        self.B, self.q, self.r = B, q_rest, B.shape[0]
        self.dense = B[q_rest:].toarray()  # X and y rows: (p + 1, m0)
        self.pairs = _pair_list(rest, self.r)

    def fill(self, M: np.ndarray) -> np.ndarray:
        """The dense r x r lower triangle of B diag(M) B' (zeros above the diagonal)."""
        F = (self.pairs @ M).reshape(self.r, self.r)  # rows and columns of the other terms' effects
        rest = (self.B @ (self.dense * M).T).T  # (p + 1, r): the X and y rows against every row
        F[self.q :, : self.q] = rest[:, : self.q]
        F[self.q :, self.q :] = np.tril(rest[:, self.q :])
        return F


def _pair_list(Bt: sp.csr_matrix, r: int) -> sp.csc_matrix:
    """For each level (row of Bt: its entries in the other terms' rows), every pair of its entries (a, b) with
    b's row not after a's, as (flat target a_row * r + b_row, weight B_a B_b): an (r^2 x m0) CSC matrix whose
    product with M sums the pairs into the flat lower triangle. Bt's indices are sorted in place."""
    Bt.sort_indices()
    counts = np.diff(Bt.indptr)
    indptr = np.concatenate([[0], np.cumsum(counts * (counts + 1) // 2)])
    targets, weights = np.empty(indptr[-1], dtype=np.int32 if r * r < 2**31 else np.int64), np.empty(indptr[-1])
    for start in range(0, Bt.shape[0], CHUNK_LEVELS):
        stop = min(Bt.shape[0], start + CHUNK_LEVELS)
        lo, hi = Bt.indptr[start], Bt.indptr[stop]
        rows, values, c = Bt.indices[lo:hi].astype(np.int64), Bt.data[lo:hi], counts[start:stop]
        first = np.repeat(np.cumsum(c) - c, c)  # each entry's level's first entry
        run = np.arange(hi - lo) - first + 1  # pairs of an entry with those at or before it in its level
        a = np.repeat(np.arange(hi - lo), run)
        b = first[a] + np.arange(len(a)) - np.repeat(np.cumsum(run) - run, run)
        targets[indptr[start] : indptr[stop]] = rows[a] * r + rows[b]
        weights[indptr[start] : indptr[stop]] = values[a] * values[b]
    return sp.csc_matrix((weights, targets, indptr), shape=(r * r, Bt.shape[0]))
