"""NUTS with BlackJAX on a target density: the Gaussian collapsed posterior (`collapsed`) or a GLMM's
(`glmm_density`) or an occupancy model's (`occupancy_likelihood`). Per chain, one compiled program gives the
starting state, one runs segments of NUTS steps with Stan's windowed adaptation, and one draws the
integrated-out effects exactly. A target is a module with `log_density(layout, data, x)` and `work(data)`, and,
if it has effects to draw, `conditional_draw(layout, data, x, z)` and `noise_size(layout)` (the standard normals
z per draw, or uniforms on (0, 1) if the module sets `UNIFORM_NOISE = True`); without them there is no third program.

BlackJAX was chosen by measurement (docs/bayes.md): on sleepstudy its compiled sampler costs ~10 us per
leapfrog step against ~160 us for nutpie driven through a Python callback, and NumPyro compiled slower.
Startup dominates small models, so the traced programs are serialised with `jax.export` into the user's
cache (keyed by the model's shapes, prior families and library versions; the data and the priors' values,
which brms's defaults take from y, are runtime arguments) and XLA's persistent compilation
cache keeps the machine code: a second session skips tracing and compiling. Each chain's key is
fold_in(seed, chain), so draws do not depend on how many processes run the chains."""

from __future__ import annotations

import hashlib
import os
import sys
from functools import partial
from pathlib import Path

import numpy as np

from . import chains
from .saving import write_atomically

_READY = False
# One chain's program is small: XLA's intra-op thread pool only adds overhead, and multi-threaded Eigen has
# been seen to wedge on CPU (a chain waiting forever on an idle pool), so chains run single-threaded.
XLA_SINGLE_THREAD = ("--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1")
_PROGRAMS: dict = {}


def cache_dir() -> Path:
    """Where compiled programs are kept (MULTILEVEL_CACHE overrides ~/.cache/multilevel)."""
    return Path(os.environ.get("MULTILEVEL_CACHE", Path.home() / ".cache" / "multilevel"))


def setup_jax() -> None:
    """float64, and JAX's persistent compilation cache in the user's cache directory."""
    global _READY
    if _READY:
        return
    if "jax" not in sys.modules:  # XLA reads its flags once, at import
        os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *XLA_SINGLE_THREAD]).strip()
    import jax

    jax.config.update("jax_enable_x64", True)
    try:
        (cache_dir() / "jax").mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except (OSError, AttributeError):  # no writable home: compile in memory only
        pass
    _READY = True


CONDITIONAL_ROWS = 1000  # draws per call of the conditional program (a stopped chain computes at most this many more)
SEGMENTS = 50  # a chain runs in at least this many compiled calls: Ctrl-C and progress are seen between two
MAX_SEGMENT = 200  # and in calls of at most this many steps, so a long chain is cut as finely (~0.1 ms a call)


def segment_length(total: int, target: int = SEGMENTS) -> int:
    """Steps per compiled call for a chain of `total` steps; the last call may run past the end (those steps
    change nothing and are dropped), so a prime length is cut as finely as any other."""
    return min(-(-total // min(total, target)), MAX_SEGMENT)


def _chain_programs(target, layout, warmup: int, draws: int, length: int, dim: int):
    """The traced functions of one chain: its starting state, a segment of NUTS steps, the conditional draws.

    Warmup and sampling share one NUTS kernel inside one scan: Stan's windowed adaptation (BlackJAX's
    schedule, dual averaging and Welford mass-matrix estimator) updates the kernel's step size and
    diagonal metric while i < warmup, then holds them. BlackJAX's `window_adaptation` runs its own scan
    with a second copy of the kernel, which doubles the program XLA has to compile (docs/bayes.md). The
    chain runs in equal segments (fixed by warmup and draws alone) so that progress can be shown between
    them; every step's key is drawn from the chain's key up front.
    """
    import blackjax
    import jax
    import jax.numpy as jnp
    from blackjax.adaptation.mass_matrix import mass_matrix_adaptation
    from blackjax.adaptation.step_size import dual_averaging_adaptation
    from blackjax.adaptation.window_adaptation import build_schedule

    total = warmup + draws
    padded = -(-total // length) * length  # whole segments, past the end of the chain
    schedule = np.zeros((padded, 2), dtype=np.int32)
    schedule[:warmup] = np.asarray(build_schedule(warmup), dtype=np.int32)
    kernel = blackjax.mcmc.nuts.build_kernel()
    da_init, da_update, da_final = dual_averaging_adaptation(getattr(layout, "target_accept", 0.8))
    mm_init, mm_update, mm_final = mass_matrix_adaptation(not getattr(layout, "dense_metric", False))
    density = jax.jit(target.log_density, static_argnums=0)  # traced once, called from every place NUTS needs it
    uniform = getattr(target, "UNIFORM_NOISE", False)  # a rejection sampler's uniforms, not normals' CDFs (4x faster)

    def fresh(data, x, logdensity=None):
        """The state a chain starts from at x: NUTS state, dual averaging, Welford, step size, metric."""
        mm0 = mm_init(x.shape[0])
        nuts0 = blackjax.nuts.init(x, logdensity or partial(density, layout, data))
        return (nuts0, da_init(1.0), mm0, jnp.asarray(1.0), mm0.inverse_mass_matrix)

    # the carry's shapes, without tracing the density (a stand-in of the same output shapes)
    shapes = jax.eval_shape(lambda x: fresh(None, x, lambda y: 0.0 * y.sum()), jax.ShapeDtypeStruct((dim,), np.float64))
    carry_tree = jax.tree_util.tree_structure(shapes)
    leaves = jax.tree_util.tree_leaves(shapes)

    def pick(flag, new, old):
        return jax.tree_util.tree_map(lambda a, b: jnp.where(flag, a, b), new, old)

    def keys(seed, chain):
        """The chain's keys for its NUTS steps and for its conditional draws (derived in the program: no
        eager JAX calls, each a compilation of its own, in the driver)."""
        return jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), chain))

    def step_keys(seed, chain):
        """One key per step of the chain (as many as it has, whatever the segments), repeated past its end."""
        per_step = jax.random.split(keys(seed, chain)[0], total)
        return jnp.concatenate([per_step, jnp.repeat(per_step[-1:], padded - total, axis=0)])

    def segment(data, leaves, seed, chain, start):
        """(data, carry's leaves, seed, chain, first step) -> (carry's leaves, per-step draws and statistics)."""
        logdensity = partial(density, layout, data)
        carry = jax.tree_util.tree_unflatten(carry_tree, leaves)  # flat at the boundary: exports serialise leaves
        steps = jax.lax.dynamic_slice_in_dim(step_keys(seed, chain), start, length)
        slow, window_end = jax.lax.dynamic_slice_in_dim(jnp.asarray(schedule), start, length).T

        def one(carry, xs):
            st, da, mm, step, imm = carry
            i, k, slow, window_end = xs
            st, info = kernel(k, st, logdensity, step, imm)
            # adaptation, applied only while i < warmup
            da2 = da_update(da, info.acceptance_rate)
            mm2 = pick(slow == 1, mm_update(mm, st.position), mm)
            closed = mm_final(mm2)  # end of a slow window: new metric, step size restarts from its average
            mm2 = pick(window_end == 1, closed, mm2)
            imm2 = jnp.where(window_end == 1, closed.inverse_mass_matrix, imm)
            da2 = pick(window_end == 1, da_init(da_final(da2)), da2)
            step2 = jnp.where(i == warmup - 1, da_final(da2), jnp.exp(da2.log_step_size))
            adapting = i < warmup
            new = (st, pick(adapting, da2, da), pick(adapting, mm2, mm), jnp.where(adapting, step2, step),
                   jnp.where(adapting, imm2, imm))
            carry = pick(i < total, new, carry)  # steps past the chain's end change nothing
            return carry, (st.position, st.logdensity, info.is_divergent, info.num_integration_steps,
                           info.acceptance_rate, info.energy, info.num_trajectory_expansions, step)

        carry, out = jax.lax.scan(one, carry, (start + jnp.arange(length), steps, slow, window_end))
        return jax.tree_util.tree_leaves(carry), out

    def conditional(data, positions, seed, chain, first):
        """The conditional draws of rows first, first + 1, ...: each row's noise from a key of its own, so the
        rows can be drawn in blocks (and a stopped chain's draws are the first of the full chain's)."""
        key = keys(seed, chain)[1]
        rows = first + jnp.arange(positions.shape[0])
        noise = partial(jax.random.uniform, minval=np.finfo(np.float64).tiny) if uniform else jax.random.normal
        z = jax.vmap(lambda i: noise(jax.random.fold_in(key, i), (target.noise_size(layout),)))(rows)
        return jax.vmap(partial(target.conditional_draw, layout, data))(positions, z)

    def begin(data, x):
        """The first carry's leaves (its own program: in the segment it would be one more copy of the
        density's gradient for XLA to compile)."""
        return jax.tree_util.tree_leaves(fresh(data, x))

    return begin, segment, conditional, leaves


def _programs(target, layout, warmup: int, draws: int, data: dict, init: np.ndarray):
    """The compiled (begin, segment, conditional) programs (conditional None for a target without conditional
    draws), the segment length and the conditional's rows per call: from memory, from the on-disk exports (nothing
    traced), or traced and exported now."""
    import jax

    length, rows = segment_length(warmup + draws), min(draws, CONDITIONAL_ROWS)
    token = repr((target.__name__, layout, warmup, draws, length, sorted((k, v.shape, str(v.dtype)) for k, v in data.items()), init.shape,
                  jax.__version__, _versions()))
    name = hashlib.sha256(token.encode()).hexdigest()[:32]
    if name not in _PROGRAMS:
        traced = []  # the traced functions, built only if an export is missing

        def build(part: str):
            if not traced:
                traced.append(_chain_programs(target, layout, warmup, draws, length, init.shape[0]))
            begin, segment, conditional, leaves = traced[0]
            spec = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), data)
            seed, chain = jax.ShapeDtypeStruct((), np.int64), jax.ShapeDtypeStruct((), np.int32)
            if part == "begin":
                return begin, (spec, jax.ShapeDtypeStruct(init.shape, np.float64))
            if part == "conditional":
                return conditional, (spec, jax.ShapeDtypeStruct((rows, init.shape[0]), np.float64), seed, chain,
                                     jax.ShapeDtypeStruct((), np.int32))
            return segment, (spec, leaves, seed, chain, jax.ShapeDtypeStruct((), np.int32))

        options = compile_options(target, data)
        compiled = {"conditional": None}
        for part in ("begin", "segment") + (("conditional",) if hasattr(target, "conditional_draw") else ()):
            exported = _load_or_export(f"{name}-{part}", partial(build, part))
            args, _ = jax.tree_util.tree_unflatten(exported.in_tree, exported.in_avals)
            opts = options if part == "segment" else _once_options(target, part)
            compiled[part] = jax.jit(exported.call).lower(*args).compile(compiler_options=opts)
        _PROGRAMS[name] = (compiled["begin"], compiled["segment"], compiled["conditional"], length, rows)
    return _PROGRAMS[name]


def _load_or_export(name: str, build):
    """The export of build() -> (function, argument specs), read from the cache directory or made and saved."""
    import jax

    path = cache_dir() / "export" / f"{name}.bin"
    if path.exists():
        try:
            return jax.export.deserialize(bytearray(path.read_bytes()))
        except Exception:  # a stale or damaged cache entry is rebuilt, never trusted
            pass
    fn, specs = build()
    exported = jax.export.export(jax.jit(fn))(*specs)
    try:
        blob = exported.serialize()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda tmp: tmp.write_bytes(blob))
    except (OSError, ImportError):  # no writable cache (or no serialiser): this session keeps it in memory
        pass
    return exported


# XLA's default CPU pipeline (fusion emitters, LLVM -O3) spends 5-7 s compiling even a tiny model's sampler,
# many times what the program then runs for. Its plain emitters at -O1 compile it about twice as fast and run
# as fast; the starting state and the conditional draws, run once per chain, compile at -O0. A costly density (egsingle's 3-level
# growth model) runs 15 % faster with the default pipeline, which then pays for its compile (docs/bayes.md).
FAST_COMPILE = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 1}
ONCE = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0}
FAST_COMPILE_MAX_WORK = 200_000  # multiply-adds per density evaluation up to which the fast pipeline is used


def _once_options(target, part: str) -> dict:
    """XLA options for a program run once per chain: -O0, but -O1 for conditional draws that evaluate the density's
    terms at every draw (`CONDITIONAL_PER_DRAW = True`: a GLMM's quadrature term, half the run time of -O0)."""
    return dict(FAST_COMPILE) if part == "conditional" and getattr(target, "CONDITIONAL_PER_DRAW", False) else ONCE


def compile_options(target, data: dict) -> dict:
    """XLA options for one chain's program: the fast-compiling pipeline unless the density is costly."""
    return dict(FAST_COMPILE) if target.work(data) <= FAST_COMPILE_MAX_WORK else {}


def _versions() -> str:
    """Library versions and a digest of our density code: a change to either invalidates the cache."""
    from importlib.metadata import version

    here = Path(__file__).parent
    code = hashlib.sha256(b"".join((here / f).read_bytes() for f in ("collapsed.py", "glmm_density.py", "laplace_density.py", "occupancy_likelihood.py", "nuts.py", "priors.py", "coefficient_prior.py")))
    return ";".join(f"{p}={version(p)}" for p in ("jaxlib", "blackjax")) + ";" + code.hexdigest()[:16]


@chains.gc_paused()  # in a worker process too (docs/bayes.md, "Speed")
def run_chain(target, layout, data: dict, seed: int, chain: int, init: np.ndarray, warmup: int, draws: int, report=None):
    """Warm up and sample one chain: (positions, sample_stats, the target's conditional draws), or None if a stop
    request (`chains.stop_requested()`, Ctrl-C) came before any draw; after a stop, the draws finished so far
    (the first draws of the full chain: every step's key is fixed up front).

    `report(chain, steps_done)` is called after each segment (progress bars)."""
    setup_jax()
    import jax

    begin, segment, conditional, length, rows = _programs(target, layout, warmup, draws, data, init)
    carry = begin(data, init)
    parts, total = [], warmup + draws
    for start in range(0, total, length):
        if chains.stop_requested():
            break
        carry, out = segment(data, carry, np.int64(seed), np.int32(chain), np.int32(start))
        parts.append(out)
        jax.block_until_ready(carry)  # one segment at a time, so Ctrl-C is seen between two (docs/reliability.md)
        if report is not None:
            report(chain, min(start + length, total))
    done = min(len(parts) * length, total)
    if done <= warmup:
        return None
    out = [np.concatenate([np.asarray(p[i]) for p in parts])[warmup:done] for i in range(len(parts[0]))]
    cond = () if conditional is None else _conditional_draws(conditional, rows, data, out[0], seed, chain)
    stats = {
        "lp": out[1], "diverging": out[2].astype(bool), "n_steps": out[3], "acceptance_rate": out[4],
        "energy": out[5], "tree_depth": out[6], "step_size": out[7],
    }
    return out[0], stats, cond


def _conditional_draws(conditional, rows: int, data: dict, positions: np.ndarray, seed: int, chain: int) -> tuple:
    """The target's conditional draws at every position, `rows` per call (the last block padded, then cut)."""
    n = len(positions)
    padded = np.concatenate([positions, np.repeat(positions[-1:], -n % rows, axis=0)])
    blocks = [conditional(data, padded[i : i + rows], np.int64(seed), np.int32(chain), np.int32(i))
              for i in range(0, n, rows)]
    return tuple(np.concatenate([np.asarray(b[j]) for b in blocks])[:n] for j in range(len(blocks[0])))


def run_chains(target, layout, data, seed: int, inits: list[np.ndarray], warmup: int, draws: int, cores: int,
               progress: bool):
    """All chains of `target` (a module, see above), sequentially or in `cores` processes; identical draws either
    way. Returns (positions, stats, conditional draws, finished): `finished` is None for a full run, else
    (Ctrl-C) the draws each chain finished, and the arrays hold the chains and draws `chains.kept_chains` keeps."""
    jobs = [(target, layout, data, seed, c, inits[c], warmup, draws) for c in range(len(inits))]
    results = chains.run(run_chain, jobs, cores, warmup, draws, progress, stoppable=True)
    results, n, finished = chains.kept_chains(results, lambda r: len(r[0]), draws)
    positions = np.stack([r[0][:n] for r in results])
    stats = {k: np.stack([r[1][k][:n] for r in results]) for k in results[0][1]}
    cond = [np.stack([r[2][i][:n] for r in results]) for i in range(len(results[0][2]))]
    return positions, stats, cond, finished
