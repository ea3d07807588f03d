"""Cross-products of the design (pipeline step 3): computed once, after this nothing costs per row.

For random terms i, j and the augmented fixed matrix [X y]: the diagonal blocks Z_i'WZ_i (block
diagonal: one k x k block per level), off-diagonal blocks Z_i'WZ_j (sparse), Z_i'W[X y] and
[X y]'W[X y]. Being sums over rows, they can be accumulated over partitions of the data.

The columns [X y] are centred (where the model absorbs it) and scaled before the sums are formed (`Scaling`):
sums of squares of uncentred data lose the digits that distinguish the rows (docs/frequentist.md, "Numeric range").
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from .design import Design, RandomBlock
from .scaling import Scaling, held_blocks, random_columns

@dataclass
class CrossProducts:
    """Sufficient statistics of a Gaussian mixed model, stored by term pair."""

    n: int
    p: int
    diag: list[np.ndarray]  # per term: (m, k, k)
    off: dict[tuple[int, int], sp.csr_matrix]  # (i, j), i < j: Z_i'WZ_j, shape (q_i, q_j)
    zxy: list[np.ndarray]  # per term: (q_i, p + 1) = Z_i'W[X y]
    xy: np.ndarray  # (p + 1, p + 1) = [X y]'W[X y]
    sum_log_w: float = 0.0
    scaling: Scaling | None = None  # how [X y] is held (None: as given)

    @property
    def yty(self) -> float:
        return float(self.xy[-1, -1])

    @property
    def held(self) -> Scaling:
        return self.scaling if self.scaling is not None else Scaling.identity(self.p)


def z_matrix(block: RandomBlock) -> sp.csr_matrix:
    """The sparse n x (m k) model matrix of one term, columns ordered level-major."""
    n, k = block.Z.shape
    indices = (block.codes[:, None] * k + np.arange(k)[None, :]).ravel()
    indptr = np.arange(0, n * k + 1, k)
    return sp.csr_matrix((block.Z.ravel(), indices, indptr), shape=(n, block.q))


def diagonal_block(block: RandomBlock, w: np.ndarray | None) -> np.ndarray:
    """Z'WZ of one term as (m, k, k): one k x k block per level."""
    m, k = block.m, block.k
    out = np.empty((m, k, k))
    for a in range(k):
        for b in range(a, k):
            prod = block.Z[:, a] * block.Z[:, b]
            if w is not None:
                prod = prod * w
            out[:, a, b] = out[:, b, a] = np.bincount(block.codes, weights=prod, minlength=m)
    return out


def grouped_sums(block: RandomBlock, V: np.ndarray) -> np.ndarray:
    """Z'V for one term, as (q, c): sums of covariate-times-V within each level."""
    m, k = block.m, block.k
    out = np.empty((m, k, V.shape[1]))
    for a in range(k):
        za = block.Z[:, a]
        for c in range(V.shape[1]):
            out[:, a, c] = np.bincount(block.codes, weights=za * V[:, c], minlength=m)
    return out.reshape(m * k, V.shape[1])


def response(design: Design) -> np.ndarray:
    """The response less any offset."""
    return design.y if design.offset is None else design.y - design.offset


def learn_scaling(design: Design) -> Scaling:
    """The design's `Scaling`, learned from its rows."""
    return Scaling.learn(design.X, response(design), design.fixed_names)


def design_scaling(design: Design, with_response: bool = True) -> Scaling:
    """The design's `Scaling` with its random slopes' far covariates held centred in their terms (`random_columns`);
    `with_response=False` leaves the response as given (a GLMM's, which PIRLS reweights)."""
    y = response(design) if with_response else np.zeros(design.nobs)
    return replace(Scaling.learn(design.X, y, design.fixed_names), terms=random_columns(design.blocks))


def weighted_columns(design: Design, scaling: Scaling) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """[X y] as `scaling` holds it, W[X y] and the weights (brms se() enters as weights 1/se^2; None when unweighted)."""
    w = design.weights
    if design.se is not None:
        w = (1.0 if w is None else w) / design.se**2
    Xy = np.empty((design.nobs, design.p + 1), order="F")  # columns contiguous: the per-level sums read them one by one
    Xy[:, :-1], Xy[:, -1] = design.X, response(design)
    Xy = scaling.apply(Xy)
    return Xy, (Xy if w is None else Xy * w[:, None]), w


def cross_products(design: Design, scaling: Scaling | None = None) -> CrossProducts:
    """All cross-products of a design, with weights (and brms se() as weights 1/se^2), of the columns as `scaling`
    holds them (learned from the design's rows when not given; random slopes' covariates as given unless the
    scaling centres them: `random_columns`)."""
    scaling = learn_scaling(design) if scaling is None else scaling
    Xy, WXy, w = weighted_columns(design, scaling)
    blocks = held_blocks(design, scaling)
    diag = [diagonal_block(b, w) for b in blocks]
    zxy = [grouped_sums(b, WXy) for b in blocks]
    zs = [z_matrix(b) for b in blocks] if len(blocks) > 1 else []  # only cross blocks need Z
    off = {}
    for i in range(len(zs) - 1):
        left = zs[i].T.tocsr() if w is None else (zs[i].multiply(w[:, None])).T.tocsr()
        for j in range(i + 1, len(zs)):
            off[(i, j)] = (left @ zs[j]).tocsr()
    sum_log_w = 0.0 if w is None else float(np.sum(np.log(w)))
    return CrossProducts(design.nobs, design.p, diag, off, zxy, Xy.T @ WXy, sum_log_w, scaling)


def with_response(cp: CrossProducts, design: Design) -> CrossProducts:
    """The cross-products for the design's (new) response: only Z'Wy, X'Wy and y'Wy change (the response's centre
    and scale relearned), computed as `cross_products` computes them (a refit equals a fit from scratch)."""
    scaling = replace(learn_scaling(design), terms=cp.held.terms)
    Xy, WXy, _ = weighted_columns(design, scaling)
    zxy = [np.column_stack([old[:, :-1], grouped_sums(b, WXy[:, -1:])]) for old, b in zip(cp.zxy, held_blocks(design, scaling))]
    return replace(cp, zxy=zxy, xy=Xy.T @ WXy, scaling=scaling)


def rescaled(cp: CrossProducts, scaling: Scaling | None) -> CrossProducts:
    """The same sums for the columns as `scaling` holds them (None: as given), by the exact linear map
    [X y] A_2 = ([X y] A_1) A_1^-1 A_2; mapping back to uncentred columns brings back their rounding."""
    target = scaling if scaling is not None else Scaling.identity(cp.p)
    M = cp.held.inverse @ target.matrix
    return replace(cp, zxy=[z @ M for z in cp.zxy], xy=M.T @ cp.xy @ M, scaling=scaling)


def residual_sum_of_squares(cp: CrossProducts, beta: np.ndarray, b: list[np.ndarray]) -> float:
    """|y - X beta - sum_i Z_i b_i|^2_W as a quadratic form in the cross-products (no rows needed); b per term
    (m, k), beta and b in the user's units. Rounding grows with y'y / rss, as in the engine's r2."""
    p, held = cp.p, cp.held
    scale = held.scale[-1]
    beta, b = held.held_coefficients(beta), [bi / scale for bi in b]
    xy, yx = cp.xy[:p, :p], cp.xy[:p, p]
    rss = cp.yty - 2.0 * beta @ yx + beta @ xy @ beta
    flat = [bi.ravel() for bi in b]
    for i, (bi, v) in enumerate(zip(b, flat)):
        rss += -2.0 * v @ (cp.zxy[i][:, p] - cp.zxy[i][:, :p] @ beta) + v @ np.einsum("gab,gb->ga", cp.diag[i], bi).ravel()
        for j in range(i + 1, len(b)):
            rss += 2.0 * v @ (cp.off[(i, j)] @ flat[j])
    return float(rss) * scale**2


class Reweighting:
    """Cross-products of one design at any weights and response with one sparsity pattern (penalised IRLS: the
    weights and working response change at every step, the pattern never does). Each off-diagonal block
    Z_i'WZ_j keeps the pattern of the design's rows, zeros included, so an engine built once can `refresh`."""

    def __init__(self, design: Design):
        self.design = design
        self.pairs = {}
        for i, bi in enumerate(design.blocks):
            for j in range(i + 1, len(design.blocks)):
                self.pairs[(i, j)] = _pair_pattern(bi, design.blocks[j])

    def at(self, weights: np.ndarray, y: np.ndarray) -> CrossProducts:
        """The cross-products of the design with these weights and response."""
        design = replace(self.design, y=y, weights=weights)
        Xy, WXy, w = weighted_columns(design, Scaling.identity(design.p))  # working responses are near eta: as given
        diag = [diagonal_block(b, w) for b in design.blocks]
        zxy = [grouped_sums(b, WXy) for b in design.blocks]
        off = {}
        for key, (slot, rows, values, indices, indptr, shape) in self.pairs.items():
            data = np.bincount(slot, weights=values * w[rows], minlength=len(indices))
            off[key] = sp.csr_matrix((data, indices, indptr), shape=shape)
        return CrossProducts(design.nobs, design.p, diag, off, zxy, Xy.T @ WXy, float(np.sum(np.log(w))))


def _pair_pattern(bi: RandomBlock, bj: RandomBlock):
    """Where each row's products Z_i[r, a] Z_j[r, b] land in the CSR data of Z_i'Z_j (slot per contribution)."""
    n = len(bi.codes)
    a, b = np.meshgrid(np.arange(bi.k), np.arange(bj.k), indexing="ij")
    a, b = a.ravel(), b.ravel()
    rows = np.repeat(np.arange(n), a.size)
    row_idx = (bi.codes[:, None] * bi.k + a[None, :]).ravel()
    col_idx = (bj.codes[:, None] * bj.k + b[None, :]).ravel()
    values = (bi.Z[:, a] * bj.Z[:, b]).ravel()
    keys, slot = np.unique(row_idx * bj.q + col_idx, return_inverse=True)
    indices = (keys % bj.q).astype(np.int32)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(keys // bj.q, minlength=bi.q))]).astype(np.int32)
    return slot.ravel(), rows, values, indices, indptr, (bi.q, bj.q)
