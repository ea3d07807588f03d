"""The cost of the dense block before it is built: crossed terms with many levels on both sides make the
engine factor a dense r x r matrix (r = effects of every term but the first, plus X and y), which grows as the
square of the levels. Refuse it when it cannot fit in memory, warn when it is large, with the numbers."""

from __future__ import annotations

import os
import warnings

from .errors import MultilevelError, MultilevelWarning

COPIES = 3  # the engine's r x r cross-product, the matrix refactored at each evaluation, and a work copy
WARN_BYTES = 2**30  # a dense block over 1 GiB is worth a warning even when it fits
FLOPS_PER_SECOND = 1e10  # one core's dense Cholesky, for the per-evaluation estimate
ITERATIVE_HINT = ("; crossed terms without slopes can be fitted APPROXIMATELY, without the dense matrix, by "
                  "model.fit(solver='iterative'), and sampled exactly by model.sample(sampler='crossed-gibbs') "
                  "(docs/scale.md)")


def dense_size(design) -> int:
    """r: the side of the dense matrix (effects of every random term after the first, fixed effects, response)."""
    return sum(b.q for b in design.blocks[1:]) + design.p + 1


def available_bytes() -> int | None:
    """Memory the system can still give (Linux's MemAvailable); None where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_dense_size(design) -> None:
    """Raise before building a dense block that cannot fit in memory; warn (with memory and time) when it is large."""
    r = dense_size(design)
    need = COPIES * 8 * r * r
    if need < WARN_BYTES:
        return
    terms = ", ".join(f"{b.term} ({b.m} levels)" for b in design.blocks[1:])
    what = (f"the crossed term(s) {terms} make a dense {r:,} x {r:,} matrix: about {need / 2**30:.1f} GiB, and "
            f"~{r**3 / 3 / FLOPS_PER_SECOND:.0f} s per evaluation of the criterion (hundreds are needed)")
    free = available_bytes()
    if free is not None and need > free:
        raise MultilevelError(
            f"{what}, but only {free / 2**30:.1f} GiB of memory is available. Fit a subset of the levels, drop "
            f"slopes from those terms, or model the factor with fewer levels as a fixed effect{ITERATIVE_HINT}"
        )
    warnings.warn(f"{what}. It fits in memory but will be slow{ITERATIVE_HINT}", MultilevelWarning, stacklevel=4)
