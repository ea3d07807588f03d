"""The engine (pipeline step 4): pure functions of the relative covariance parameters theta.

Penalised least squares as in Bates et al. (2015, JSS 67(1), sections 3-4). The augmented system

    [ L'Z'WZL + I   L'Z'W[X y] ]
    [ [X y]'WZL     [X y]'W[X y] ]

is factored blockwise: the first term's block (one k x k block per level) is eliminated level by
level; its fill into the rest is a fixed sparse pattern applied as one matrix-vector product; the
remaining Schur complement (other terms, X and y) is dense and only its lower triangle is formed
and factored. One factorisation gives the REML/ML criterion, beta-hat, the conditional modes and
their conditional covariances. Both the frequentist fit and the Bayesian samplers use it; normal
priors on the coefficients (`coefficient_prior.CoefficientPrior`) enter the samplers' system in its [X y] block.
The system holds [X y] centred and scaled (`crossprod.Scaling`); every value returned is in the user's units.
docs/performance.md gives the measurements behind these choices.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.linalg import lapack

from .coefficient_prior import CoefficientPrior
from .crossprod import CrossProducts
from .dense_memory import available_bytes
from .pair_fill import PairFill, pairs_fit, pairs_within_runs

LOG_2PI = float(np.log(2 * np.pi))
DENSE_FILL_ENTRIES = 100_000  # a fill map this small is faster dense than through scipy.sparse's call overhead
FILL_MAP_PAIRS = 20_000_000  # a fill map of up to this many pairs is always built
FILL_MAP_BYTES_PER_PAIR = 72  # the map's memory per pair while it is built
FILL_MAP_MEMORY_SHARE = 0.25  # beyond FILL_MAP_PAIRS, a map is built only within this share of the memory available


def profiled_criterion(log_det: float, r2: float, log_det_rx: float, n: int, p: int, sum_log_w: float, reml: bool) -> float:
    """lme4's profiled REML criterion or deviance from log|L|^2 (random effects), r^2 and log|R_X|^2 (REML only)."""
    nu = n - p if reml else n
    dev = log_det - sum_log_w + nu * (1.0 + LOG_2PI + np.log(r2 / nu))
    return float(dev + log_det_rx) if reml else float(dev)


def fill_map_fits(pairs: float) -> bool:
    """Whether to build the fill map (fast; ~72 bytes a pair while built) rather than a pair list (any first
    term: 12 bytes a pair, `pair_fill`) or a sparse product at each evaluation (a sixth of the map's memory and 6x
    its time at 10^7 crossed rows): always up to FILL_MAP_PAIRS, beyond that only within a quarter of the memory
    available."""
    if pairs <= FILL_MAP_PAIRS:
        return True
    available = available_bytes()
    return available is not None and FILL_MAP_BYTES_PER_PAIR * pairs <= FILL_MAP_MEMORY_SHARE * available


def tri_index(k: int) -> list[tuple[int, int]]:
    """Positions of a k x k lower-triangular factor in lme4's column-wise theta order."""
    return [(i, j) for j in range(k) for i in range(j, k)]


@lru_cache(maxsize=None)
def _tri_arrays(k: int) -> tuple[np.ndarray, np.ndarray]:
    """`tri_index(k)` as (rows, cols) index arrays, computed once per k."""
    rows, cols = zip(*tri_index(k))
    return np.array(rows), np.array(cols)


def theta_to_T(values: np.ndarray, k: int) -> np.ndarray:
    """The k x k lower-triangular relative factor of one term from its theta values."""
    T = np.zeros((k, k))
    T[_tri_arrays(k)] = values
    return T


@dataclass
class Factor:
    """Blocked Cholesky factor at one theta, with what solutions and variances need."""

    theta: np.ndarray
    T: list[np.ndarray]
    A11: np.ndarray  # (m0, k0, k0): T0'G T0 + I
    L11: np.ndarray  # (m0, k0, k0) lower Cholesky factors of A11
    Ls: np.ndarray  # lower Cholesky factor of the trailing Schur complement, (r, r)
    ldL2: float
    ldRX2: float
    r2: float


class Engine:
    """Evaluates the profiled criterion and its by-products for one set of cross-products.

    Public arrays other code reads (the JAX density builds its system from them):
    `C22`, the unscaled dense cross-product of [Z_2..Z_t, X, y] (r x r); `B`, the sparse
    [Z_2..Z_t, X, y]'WZ_1 (r x q0); and the fill B M B' as a linear map: for the first term's
    per-level blocks M (m0 x k0 x k0, flattened), `fill_map @ M.ravel()` gives the lower triangle of
    B M B' at the flat r x r positions `fill_targets` (a dense array for small maps, else scipy.sparse).
    """

    def __init__(self, cp: CrossProducts, ks: list[int], ms: list[int]):
        self.cp, self.ks, self.ms = cp, list(ks), list(ms)
        self.n, self.p = cp.n, cp.p
        self.n_terms = len(ks)
        sizes = [k * (k + 1) // 2 for k in ks]
        self.theta_slices = []
        start = 0
        for s in sizes:
            self.theta_slices.append(slice(start, start + s))
            start += s
        self.n_theta = start
        self.q = [k * m for k, m in zip(ks, ms)]
        self.q_rest = sum(self.q[1:])
        self.r = self.q_rest + self.p + 1
        self._G0 = cp.diag[0].reshape(ms[0], ks[0] ** 2)
        self._build_trailing()
        self._build_fill()
        self._build_scaling()
        self._hold(cp)

    def _hold(self, cp: CrossProducts) -> None:
        """How the cross-products hold [X y] (centre and scale), and the trailing diagonal's scale in user units."""
        self.held = cp.held
        self._unscale = np.concatenate([np.ones(self.q_rest), self.held.scale])

    # ------------------------------------------------------------------ parameters
    def theta_start(self) -> np.ndarray:
        """lme4's start: identity relative factors."""
        out = np.zeros(self.n_theta)
        for k, sl in zip(self.ks, self.theta_slices):
            out[sl] = [1.0 if i == j else 0.0 for i, j in tri_index(k)]
        return out

    def theta_lower(self) -> np.ndarray:
        """Lower bounds: 0 on the diagonal of each factor, none elsewhere."""
        out = np.full(self.n_theta, -np.inf)
        for k, sl in zip(self.ks, self.theta_slices):
            out[sl] = [0.0 if i == j else -np.inf for i, j in tri_index(k)]
        return out

    def factors_of(self, theta: np.ndarray) -> list[np.ndarray]:
        return [theta_to_T(theta[sl], k) for k, sl in zip(self.ks, self.theta_slices)]

    # ------------------------------------------------------------------ setup
    def _build_trailing(self) -> None:
        """Dense cross-product of [Z_2..Z_t, X, y], unscaled."""
        cp, r = self.cp, self.r
        C = np.zeros((r, r))
        offs = np.cumsum([0] + self.q[1:])
        self.rest_offsets = offs
        for a in range(1, self.n_terms):
            sa = slice(offs[a - 1], offs[a])
            m, k = self.ms[a], self.ks[a]
            block = np.zeros((m, k, m, k))
            block[np.arange(m), :, np.arange(m), :] = cp.diag[a]
            C[sa, sa] = block.reshape(m * k, m * k)
            for b in range(a + 1, self.n_terms):
                sb = slice(offs[b - 1], offs[b])
                C[sa, sb] = cp.off[(a, b)].toarray()
                C[sb, sa] = C[sa, sb].T
            C[sa, self.q_rest :] = cp.zxy[a]
            C[self.q_rest :, sa] = cp.zxy[a].T
        C[self.q_rest :, self.q_rest :] = cp.xy
        self.C22 = C

    def _build_fill(self) -> None:
        """The linear map from the first term's per-level M_g (flattened) to the lower triangle of B M B'.

        B = [Z_2..Z_t, X, y]'WZ_1 (r x q0). Within a level the entries of B are ordered by row, so each pair
        (e1, e2) with e2 not after e1 lands in the lower triangle; a same-row pair of two coefficients
        stands for both of its orders (M_g is symmetric). The map has a row for each entry of the trailing
        matrix's lower triangle that receives fill (flat index in `fill_targets`).
        """
        cp, k0, m0, r, q0 = self.cp, self.ks[0], self.ms[0], self.r, self.q[0]
        parts = [cp.off[(0, a)].T for a in range(1, self.n_terms)]
        B = sp.vstack(parts + [sp.csr_matrix(cp.zxy[0][:, :-1].T)]).tocsr()
        B.eliminate_zeros()
        # the response row is kept whole, zeros included: under Pólya–Gamma weights Z'Wz = Z'kappa is exactly 0
        # for a level with half successes, up to rounding, and a pattern without it would be rebuilt every sweep
        y = sp.csr_matrix((cp.zxy[0][:, -1], np.arange(q0), [0, q0]), shape=(1, q0))
        B = sp.vstack([B, y], format="csr")  # (r, q0)
        self.B = B
        self.pair_fill = None
        coo = B.tocoo()
        level, coef = coo.col // k0, coo.col % k0
        entries = np.bincount(level, minlength=m0).astype(np.float64)
        if not fill_map_fits(np.sum(entries * (entries + 1) / 2)):  # crossed terms with many levels: no map
            self.fill_map = self.fill_targets = None
            self._fill_unique = False  # `refresh` rebuilds
            if self.n_terms > 1 and pairs_fit(B, self.q_rest, k0):  # one term: no pairs to list
                rest = [cp.off[(0, a)] for a in range(1, self.n_terms)]
                self.pair_fill = PairFill(B, self.q_rest, rest[0] if len(rest) == 1 else sp.hstack(rest, format="csr"), k0)
            return
        order = np.lexsort((coef, coo.row, level))
        rows, vals, level, coef = coo.row[order].astype(np.int64), coo.data[order], level[order], coef[order]
        e1, e2 = pairs_within_runs(np.bincount(level, minlength=m0))  # e2 at or before e1 in the same level
        both_orders = (rows[e1] == rows[e2]) & (e1 != e2)
        weight = vals[e1] * vals[e2] * np.where(both_orders, 2.0, 1.0)
        target = rows[e1] * r + rows[e2]
        mcol = level[e1] * k0 * k0 + coef[e1] * k0 + coef[e2]
        hit = np.zeros(r * r, dtype=bool)
        hit[target] = True
        self.fill_targets = np.flatnonzero(hit)  # entries of the r x r matrix that get fill
        row_of = np.cumsum(hit) - 1
        Q = sp.csr_matrix((weight, (row_of[target], mcol)), shape=(len(self.fill_targets), m0 * k0 * k0))
        size = Q.shape[0] * Q.shape[1]
        self.fill_map = Q.toarray() if size <= DENSE_FILL_ENTRIES or Q.nnz > 0.3 * size else Q
        # for `refresh`: each pair's two entries of B.data and its place in the map (one pair per place)
        csr = np.lexsort((mcol, row_of[target]))
        self._fill_pairs = (order[e1][csr], order[e2][csr], np.where(both_orders, 2.0, 1.0)[csr],
                            mcol[csr].astype(np.int32), row_of[target][csr] * Q.shape[1] + mcol[csr])
        self._fill_rows = np.concatenate([[0], np.cumsum(np.bincount(row_of[target], minlength=Q.shape[0]))])
        self._fill_unique = Q.nnz == len(weight)
        self._B_slots = None

    def _build_scaling(self) -> None:
        """Index arrays for Lambda_rest' S Lambda_rest + I on the lower triangle of the trailing matrix."""
        offs, r = self.rest_offsets, self.r
        self._scalar_rest = [(a, slice(offs[a - 1], offs[a])) for a in range(1, self.n_terms) if self.ks[a] == 1]
        self._vector_rest = [(a, slice(offs[a - 1], offs[a])) for a in range(1, self.n_terms) if self.ks[a] > 1]
        upper, lower = [], []  # strict upper triangle of each level's k x k block, and its mirror
        for a, sa in self._vector_rest:
            k = self.ks[a]
            i, j = np.triu_indices(k, 1)
            starts = sa.start + k * np.arange(self.ms[a])[:, None]
            upper.append(((starts + i) * r + starts + j).ravel())
            lower.append(((starts + j) * r + starts + i).ravel())
        self._block_upper = np.concatenate(upper) if upper else None
        self._block_lower = np.concatenate(lower) if lower else None
        self._re_diagonal = np.arange(self.q_rest) * (r + 1)

    # ------------------------------------------------------------------ new values, same structure
    def refresh(self, cp: CrossProducts) -> Engine:
        """An engine for new cross-products of the same design and sparsity pattern (`crossprod.Reweighting`:
        a penalised IRLS step's weights and working response; `Model.with_response`: a new response). The fill
        map's pattern and the index arrays are reused and only values recomputed; a different pattern gets a
        full build."""
        data = self._B_data(cp)
        if data is None:
            return Engine(cp, self.ks, self.ms)
        new = copy.copy(self)
        new.cp, new.B = cp, sp.csr_matrix((data, self.B.indices, self.B.indptr), shape=self.B.shape)
        new._G0 = cp.diag[0].reshape(self.ms[0], self.ks[0] ** 2)
        new._hold(cp)
        new._build_trailing()
        d1, d2, mult, cols, flat = self._fill_pairs
        weight = data[d1] * data[d2] * mult
        if isinstance(self.fill_map, np.ndarray):
            new.fill_map = np.zeros(self.fill_map.shape)
            new.fill_map.ravel()[flat] = weight
        else:
            new.fill_map = sp.csr_matrix((weight, cols, self._fill_rows), shape=self.fill_map.shape)
        return new

    def _B_data(self, cp: CrossProducts) -> np.ndarray | None:
        """B's values (in this engine's pattern) from new cross-products; None if they do not fit the pattern."""
        if not self._fill_unique:
            return None
        parts = [cp.off[(0, a)] for a in range(1, self.n_terms)]
        mine = [self.cp.off[(0, a)] for a in range(1, self.n_terms)]
        if any(x.nnz != y.nnz or not (np.array_equal(x.indices, y.indices) and np.array_equal(x.indptr, y.indptr))
               for x, y in zip(parts, mine)):
            return None
        if self._B_slots is None:
            self._B_slots = self._source_slots()
        source = np.concatenate([x.data for x in parts] + [cp.zxy[0].T.ravel()])
        slots = self._B_slots
        if np.any(source[slots < 0] != 0):
            return None  # an entry that was zero when the pattern was made is not any more
        data = np.zeros(self.B.nnz)
        data[slots[slots >= 0]] = source[slots >= 0]
        return data

    def _source_slots(self) -> np.ndarray:
        """For each source value (the blocks Z_0'WZ_a, then Z_0'W[X y] transposed), its index in B.data (-1: not
        in B's pattern)."""
        q0 = self.q[0]
        B = self.B
        b_keys = np.repeat(np.arange(B.shape[0]), np.diff(B.indptr)) * q0 + B.indices
        keys = []
        for a in range(1, self.n_terms):
            off = self.cp.off[(0, a)]
            c0 = np.repeat(np.arange(off.shape[0]), np.diff(off.indptr))
            keys.append((self.rest_offsets[a - 1] + off.indices) * q0 + c0)
        keys.append(self.q_rest * q0 + np.arange((self.p + 1) * q0))
        keys = np.concatenate(keys)
        order = np.argsort(b_keys)
        pos = np.minimum(np.searchsorted(b_keys[order], keys), len(order) - 1)
        slots = order[pos]
        return np.where(b_keys[slots] == keys, slots, -1)

    def fill_product(self, M: np.ndarray) -> sp.coo_matrix:
        """B M B' (both triangles) as a sparse product, for per-level blocks M (flat): what the fill map gives
        without enumerating every pair of a level's entries (its memory is the product's, not the pairs')."""
        k0, m0 = self.ks[0], self.ms[0]
        if k0 == 1:
            return (self.B.multiply(M[None, :]).tocsr() @ self.B.T).tocoo()
        blocks = sp.bsr_matrix((M.reshape(m0, k0, k0), np.arange(m0), np.arange(m0 + 1)), shape=(m0 * k0,) * 2)
        return (self.B @ blocks @ self.B.T).tocoo()

    def _fill_lower(self, M: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows, columns and values of the lower triangle of B M B' where it has fill (map or product)."""
        if self.fill_map is not None:
            return self.fill_targets // self.r, self.fill_targets % self.r, self.fill_map @ M
        if self.pair_fill is not None:
            F = self.pair_fill.fill(M)
            rows, cols = np.nonzero(F)
            return rows, cols, F[rows, cols]
        P = self.fill_product(M)
        lower = P.row >= P.col
        return P.row[lower], P.col[lower], P.data[lower]

    # ------------------------------------------------------------------ evaluation
    def _first_block(self, T0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Per level of the first term: A = T0'G T0 + I, its Cholesky factor, M = T0 A^-1 T0' (flat), log det."""
        k0 = self.ks[0]
        if k0 == 1:
            t2 = T0[0, 0] ** 2
            A = t2 * self._G0[:, 0] + 1.0
            return A.reshape(-1, 1, 1), np.sqrt(A).reshape(-1, 1, 1), t2 / A, float(np.sum(np.log(A)))
        K = (T0[:, None, :, None] * T0[None, :, None, :]).reshape(k0 * k0, k0 * k0)  # kron(T0, T0)
        A = (self._G0 @ K).reshape(-1, k0, k0)  # T0'G_g T0 for every level g
        A[:, np.arange(k0), np.arange(k0)] += 1.0
        L = np.linalg.cholesky(A)
        M = np.linalg.inv(A).reshape(-1, k0 * k0) @ K.T
        return A, L, M.ravel(), 2.0 * float(np.sum(np.log(np.diagonal(L, axis1=1, axis2=2))))

    def _factor(self, theta: np.ndarray, clean: bool, prior: CoefficientPrior | None = None, sigma: float = 1.0) -> Factor | None:
        """The blocked factor; with clean=False the strict upper triangle of Ls is left unspecified."""
        theta = np.asarray(theta, dtype=float)
        T = self.factors_of(theta)
        try:
            A11, L11, M, ld1 = self._first_block(T[0])
        except np.linalg.LinAlgError:  # A = T0'G T0 + I lost definiteness to rounding (covariates far from 0)
            return None
        S = self.C22.copy()
        if prior is not None:
            S[self.q_rest :, self.q_rest :] += prior.augmentation(sigma**2)
        if self.fill_map is not None:
            S.reshape(-1)[self.fill_targets] -= self.fill_map @ M
        elif self.pair_fill is not None:
            S -= self.pair_fill.fill(M)
        else:
            P = self.fill_product(M)
            S[P.row, P.col] -= P.data
        if self.n_terms > 1:
            self._scale_rest(S, T)
        c, info = lapack.dpotrf(S.T, lower=0, clean=int(clean), overwrite_a=1)  # S.T: Fortran order, no copy
        if info != 0:
            return None
        Ls = c.T
        d = np.diagonal(Ls) * self._unscale  # exact: the scales are powers of two
        if not np.all(np.isfinite(d)):
            return None
        q2 = self.q_rest
        logd = 2.0 * np.log(d[:-1])
        return Factor(theta, T, A11, L11, Ls, ld1 + float(np.sum(logd[:q2])), float(np.sum(logd[q2:])), float(d[-1] ** 2))

    def factor(self, theta: np.ndarray, prior: CoefficientPrior | None = None, sigma: float = 1.0) -> Factor | None:
        """Blocked Cholesky factor at theta; None if the system is not positive definite.

        With `prior`, of the system augmented by normal priors on the coefficients at residual SD `sigma`
        (the Bayesian conditional of beta and b given the variances); without, the likelihood's own system.
        """
        return self._factor(theta, clean=True, prior=prior, sigma=sigma)

    def _scale_rest(self, S: np.ndarray, T: list[np.ndarray]) -> None:
        """S <- Lambda_rest' S Lambda_rest (in place, lower triangle) and add I for the random-effect rows."""
        if self._scalar_rest:
            scale = np.ones(self.r)
            for a, sa in self._scalar_rest:
                scale[sa] = T[a][0, 0]
            S *= scale[:, None]
            S *= scale
        flat = S.reshape(-1)
        if self._vector_rest:
            flat[self._block_upper] = flat[self._block_lower]  # the transforms mix within each level's block
            for a, sa in self._vector_rest:
                k, m = self.ks[a], self.ms[a]
                rows = S[sa, :].reshape(m, k, self.r)
                S[sa, :] = np.einsum("ba,gbr->gar", T[a], rows).reshape(m * k, self.r)
                cols = S[:, sa].reshape(self.r, m, k)
                S[:, sa] = np.einsum("rgb,ba->rga", cols, T[a]).reshape(self.r, m * k)
        flat[self._re_diagonal] += 1.0

    def objective(self, theta: np.ndarray, reml: bool = True) -> float:
        """lme4's profiled criterion: the REML criterion or the deviance (-2 log-likelihood)."""
        f = self._factor(theta, clean=False)
        if f is None or f.r2 <= 0:
            return np.inf
        return self.criterion(f, reml)

    def criterion(self, f: Factor, reml: bool) -> float:
        return profiled_criterion(f.ldL2, f.r2, f.ldRX2, self.n, self.p, self.cp.sum_log_w, reml)

    def loglik_fixed_sigma(self, f: Factor, sigma: float, reml: bool) -> float:
        """Log (restricted) likelihood at theta and a given sigma (beta profiled / integrated)."""
        nu = self.n - self.p if reml else self.n
        val = f.ldL2 - self.cp.sum_log_w + nu * (LOG_2PI + 2 * np.log(sigma)) + f.r2 / sigma**2
        if reml:
            val += f.ldRX2
        return -0.5 * float(val)

    # ------------------------------------------------------------------ gradient (scalar terms)
    @property
    def has_gradient(self) -> bool:
        """An analytic gradient is available when every term is scalar (one coefficient per group)."""
        return all(k == 1 for k in self.ks)

    def objective_and_gradient(self, theta: np.ndarray, reml: bool = True) -> tuple[float, np.ndarray]:
        """The criterion and its gradient in theta, for models whose terms are all scalar.

        With Omega the penalised system over [Z, X] (REML) or Z (ML): d log|Omega| / d theta_j =
        (2 / theta_j)(q_j - tr_j(Omega^-1)), and by the envelope theorem d r^2 / d theta_j =
        -2 |u_j|^2 / theta_j. The first term's trace is tr(A11^-1) + tr(S^-1 A21 A11^-2 A12), the second
        part being one more fill product; S^-1 comes from the trailing factor (LAPACK dpotri).
        """
        theta = np.asarray(theta, dtype=float)
        f = self._factor(theta, clean=True)
        if f is None or f.r2 <= 0:
            return np.inf, np.zeros_like(theta)
        value = self.criterion(f, reml)
        keep = self.q_rest + (self.p if reml else 0)
        traces = np.empty(self.n_terms)
        t0 = theta[0]
        a = f.A11.reshape(-1)
        traces[0] = float(np.sum(1.0 / a))
        if keep:
            Sinv, info = lapack.dpotri(f.Ls[:keep, :keep].T.copy(order="F"), lower=0)  # upper of the inverse
            if info != 0:
                return value, np.full_like(theta, np.nan)
            scale = np.ones(self.r)
            for j, sj in self._scalar_rest:
                scale[sj] = theta[j]
            rows, cols, p2 = self._fill_lower(t0**2 / a**2)  # lower triangle: rows >= cols
            inside = rows < keep
            rows, cols = rows[inside], cols[inside]
            p2 = p2[inside] * scale[rows] * scale[cols]
            weight = np.where(rows == cols, 1.0, 2.0)  # each off-diagonal entry stands for its mirror too
            traces[0] += float(np.sum(weight * p2 * Sinv[cols, rows]))
            d = np.diagonal(Sinv)
            for j, sj in self._scalar_rest:
                traces[j] = float(np.sum(d[sj]))
        _, b = self.solve_held(f)
        nu = (self.n - self.p) if reml else self.n
        grad = np.zeros(self.n_terms)
        for j in range(self.n_terms):
            if theta[j] == 0.0:
                continue  # the criterion is even in theta_j: its derivative at 0 is 0
            u2 = float(np.sum(b[j] ** 2)) / theta[j] ** 2
            grad[j] = 2.0 / theta[j] * (self.q[j] - traces[j]) - 2.0 * nu * u2 / (f.r2 * theta[j])
        return value, grad

    # ------------------------------------------------------------------ solutions
    def solve(self, f: Factor) -> tuple[np.ndarray, list[np.ndarray]]:
        """beta-hat and the conditional modes b (y units) per term, each (m, k)."""
        beta, b = self.solve_held(f)
        return self.held.coefficients(beta), self.held.random_effects(b)

    def solve_held(self, f: Factor) -> tuple[np.ndarray, list[np.ndarray]]:
        """`solve` for the columns as the system holds them (`held`: centred, scaled; b in y units of a term's
        covariates as held): what fitted values and predictions are formed from without losing digits."""
        beta, u = self._solve_held(f)
        scale = self.held.scale[-1]
        return beta, [uu * scale @ T.T for uu, T in zip(u, f.T)]

    def solve_spherical(self, f: Factor) -> tuple[np.ndarray, list[np.ndarray]]:
        """beta-hat and the spherical modes u (b = Lambda u) per term, each (m, k), in user units: what a GLMM's
        penalty needs."""
        beta, u = self._solve_held(f)
        scale = self.held.scale[-1]
        return self.held.coefficients(beta), [uu * scale for uu in u]

    def _solve_held(self, f: Factor) -> tuple[np.ndarray, list[np.ndarray]]:
        """`solve_spherical` for the columns as the system holds them."""
        Ls, q2, p = f.Ls, self.q_rest, self.p
        x2 = sla.solve_triangular(Ls[:-1, :-1], Ls[-1, :-1], lower=True, trans="T", check_finite=False)
        u_rest = []
        scaled = x2.copy()
        offs = self.rest_offsets
        for a in range(1, self.n_terms):
            sa = slice(offs[a - 1], offs[a])
            u = x2[sa].reshape(self.ms[a], self.ks[a])
            u_rest.append(u)
            scaled[sa] = (u @ f.T[a].T).ravel()
        beta = x2[q2 : q2 + p]
        v = self.B.T @ np.append(-scaled, 1.0)  # B's last row minus the others' combination, without slicing B
        k0, m0 = self.ks[0], self.ms[0]
        rhs = v.reshape(m0, k0) @ f.T[0]  # T0' v_g
        u0 = np.linalg.solve(f.A11, rhs[:, :, None])[:, :, 0] if k0 > 1 else rhs / f.A11.reshape(m0, 1)
        return beta, [u0] + u_rest

    def beta_precision_factor(self, f: Factor) -> np.ndarray:
        """R_X (p x p; lower triangular unless columns were centred): (R_X R_X')^{-1} sigma^2 is the covariance of beta-hat."""
        q2, p = self.q_rest, self.p
        return self.held.precision_factor(f.Ls[q2 : q2 + p, q2 : q2 + p])

    def beta_covariance_factor(self, f: Factor) -> np.ndarray:
        """R_X^{-1} (p x p): sigma^2 R_X^{-T} R_X^{-1} is the covariance of beta-hat (`Scaling.covariance_factor`)."""
        q2, p = self.q_rest, self.p
        return self.held.covariance_factor(f.Ls[q2 : q2 + p, q2 : q2 + p])

    def conditional_covariances(self, f: Factor) -> list[np.ndarray]:
        """Per term (m, k, k): blocks of Lambda (Lambda'Z'WZ Lambda + I)^{-1} Lambda' (times sigma^2 = lme4's condVar)."""
        q2, k0, m0 = self.q_rest, self.ks[0], self.ms[0]
        out = []
        A11inv = np.linalg.inv(f.A11) if k0 > 1 else (1.0 / f.A11).reshape(m0, 1, 1)
        if q2 == 0:
            blocks0 = A11inv
        else:
            Lzz = f.Ls[:q2, :q2]
            W = (self._rest_lambda_t(f.T) @ self.B[:q2]).toarray()  # (q2, q0): Lambda_rest' Z_rest'WZ_0
            W = W.reshape(q2, m0, k0) @ f.T[0]  # times T0 per level
            W = np.einsum("rga,gab->rgb", W, A11inv)
            V = sla.solve_triangular(Lzz, W.reshape(q2, m0 * k0), lower=True, check_finite=False).reshape(q2, m0, k0)
            blocks0 = A11inv + np.einsum("rga,rgb->gab", V, V)
            Linv = sla.solve_triangular(Lzz, np.eye(q2), lower=True, check_finite=False)
            offs = self.rest_offsets
            rest_blocks = []
            for a in range(1, self.n_terms):
                k, m = self.ks[a], self.ms[a]
                cols = Linv[:, offs[a - 1] : offs[a]].reshape(q2, m, k)
                rest_blocks.append(np.einsum("rga,rgb->gab", cols, cols))
        out.append(np.einsum("ab,gbc,dc->gad", f.T[0], blocks0, f.T[0]))
        if q2:
            for a, blk in enumerate(rest_blocks, start=1):
                out.append(np.einsum("ab,gbc,dc->gad", f.T[a], blk, f.T[a]))
        return out

    def _rest_lambda_t(self, T: list[np.ndarray]) -> sp.csr_matrix:
        """Lambda_rest' (q2 x q2, sparse): each trailing term's T' repeated down the diagonal, once per level."""
        blocks = [sp.kron(sp.identity(self.ms[a]), T[a].T) for a in range(1, self.n_terms)]
        return sp.block_diag(blocks, format="csr")
