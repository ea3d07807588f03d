"""NUTS on the collapsed posterior with BlackJAX: one compiled program per chain does window adaptation,
the draws, and the exact conditional draws of the integrated-out effects.

BlackJAX was chosen by measurement (docs/bayes.md): on sleepstudy its compiled sampler costs ~10 us per
leapfrog step against ~160 us for nutpie driven through a Python callback, and NumPyro compiled slower.
Startup dominates small models, so the traced program is serialised with `jax.export` into the user's
cache (keyed by the model's shapes, priors and library versions) and XLA's persistent compilation
cache keeps the machine code: a second session skips tracing and compiling. Each chain's key is
fold_in(seed, chain), so draws do not depend on how many processes run the chains.
"""

from __future__ import annotations

import hashlib
import os
import sys
from functools import partial
from pathlib import Path

import numpy as np

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


def _chain_program(layout, warmup: int, draws: int):
    """(data, key, init) -> draws, sampler statistics, step size and conditional draws of one chain.

    Warmup and sampling share one NUTS kernel inside one scan: Stan's windowed adaptation (BlackJAX's
    schedule, dual averaging and Welford mass-matrix estimator) updates the kernel's step size and
    diagonal metric while i < warmup, then holds them. BlackJAX's `window_adaptation` runs its own scan
    with a second copy of the kernel, which doubles the program XLA has to compile (docs/bayes.md).
    """
    import blackjax
    import jax
    import jax.numpy as jnp
    from blackjax.adaptation.mass_matrix import mass_matrix_adaptation
    from blackjax.adaptation.step_size import dual_averaging_adaptation
    from blackjax.adaptation.window_adaptation import build_schedule

    from .collapsed import conditional_draw, log_density

    q = sum(k * m for k, m in zip(layout.ks, layout.ms)) + layout.p_c
    schedule = np.zeros((warmup + draws, 2), dtype=np.int32)
    schedule[:warmup] = np.asarray(build_schedule(warmup), dtype=np.int32)
    kernel = blackjax.mcmc.nuts.build_kernel()
    da_init, da_update, da_final = dual_averaging_adaptation(0.8)
    mm_init, mm_update, mm_final = mass_matrix_adaptation(True)

    def pick(flag, new, old):
        return jax.tree_util.tree_map(lambda a, b: jnp.where(flag, a, b), new, old)

    def program(data, key, init):
        logdensity = partial(jax.jit(log_density, static_argnums=0), layout, data)
        k_run, k_cond = jax.random.split(key)

        def one(carry, xs):
            st, da, mm, step, imm = carry
            i, k, (slow, window_end) = xs
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
            carry = (st, pick(adapting, da2, da), pick(adapting, mm2, mm), jnp.where(adapting, step2, step),
                     jnp.where(adapting, imm2, imm))
            return carry, (st.position, st.logdensity, info.is_divergent, info.num_integration_steps,
                           info.acceptance_rate, info.energy, info.num_trajectory_expansions)

        mm0 = mm_init(init.shape[0])
        start = (blackjax.nuts.init(init, logdensity), da_init(1.0), mm0, jnp.asarray(1.0), mm0.inverse_mass_matrix)
        steps = jnp.arange(warmup + draws)
        (_, _, _, step, _), out = jax.lax.scan(one, start, (steps, jax.random.split(k_run, warmup + draws), (schedule[:, 0], schedule[:, 1])))
        out = tuple(o[warmup:] for o in out)
        z = jax.random.normal(k_cond, (draws, q))
        cond = jax.vmap(partial(conditional_draw, layout, data))(out[0], z)
        return out + (step,) + cond

    return program


def _program(layout, warmup: int, draws: int, data: dict, init: np.ndarray):
    """The chain program, from memory, from the on-disk export, or traced and exported now."""
    import jax

    token = repr((layout, warmup, draws, sorted((k, v.shape, str(v.dtype)) for k, v in data.items()), init.shape,
                  jax.__version__, _versions()))
    name = hashlib.sha256(token.encode()).hexdigest()[:32]
    if name in _PROGRAMS:
        return _PROGRAMS[name]
    path = cache_dir() / "export" / f"{name}.bin"
    exported = None
    if path.exists():
        try:
            exported = jax.export.deserialize(bytearray(path.read_bytes()))
        except Exception:  # a stale or damaged cache entry is rebuilt, never trusted
            exported = None
    spec = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), data)
    specs = (spec, jax.ShapeDtypeStruct((2,), np.uint32), jax.ShapeDtypeStruct(init.shape, np.float64))
    if exported is None:
        exported = jax.export.export(jax.jit(_chain_program(layout, warmup, draws)))(*specs)
        try:
            blob = exported.serialize()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(blob)
            tmp.replace(path)
        except (OSError, ImportError):  # no writable cache (or no serialiser): this session keeps it in memory
            pass
    fn = jax.jit(exported.call).lower(*specs).compile(compiler_options=compile_options(data))
    _PROGRAMS[name] = fn
    return fn


# XLA's default CPU pipeline (fusion emitters, LLVM -O3) spends 5-7 s compiling even a tiny model's sampler,
# many times what the program then runs for; its plain emitters at -O0 compile 3-4x faster and run up to
# 1.6x slower, which only pays for programs whose run is long (measured in docs/bayes.md).
FAST_COMPILE = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0}
FAST_COMPILE_MAX_WORK = 200_000  # multiply-adds per density evaluation up to which the fast pipeline is used


def compile_options(data: dict) -> dict:
    """XLA options for one chain's program: the fast-compiling pipeline unless the density is costly."""
    C, B = data["C22"], data["B"]
    work = C.shape[0] ** 3 // 3 + B.size * B.shape[-1] + data["fill_vals"].size
    return dict(FAST_COMPILE) if work <= FAST_COMPILE_MAX_WORK else {}


def _versions() -> str:
    """Library versions and a digest of our density code: a change to either invalidates the cache."""
    from importlib.metadata import version

    here = Path(__file__).parent
    code = hashlib.sha256(b"".join((here / f).read_bytes() for f in ("collapsed.py", "nuts.py", "priors.py")))
    return ";".join(f"{p}={version(p)}" for p in ("jaxlib", "blackjax")) + ";" + code.hexdigest()[:16]


def run_chain(layout, data: dict, seed: int, chain: int, init: np.ndarray, warmup: int, draws: int):
    """Warm up and sample one chain: (positions, sample_stats, (beta_c, b_first, b_rest))."""
    setup_jax()
    import jax

    fn = _program(layout, warmup, draws, data, init)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), chain)
    out = [np.asarray(o) for o in fn(data, key, init)]
    stats = {
        "lp": out[1], "diverging": out[2].astype(bool), "n_steps": out[3], "acceptance_rate": out[4],
        "energy": out[5], "tree_depth": out[6], "step_size": np.full(draws, float(out[7])),
    }
    return out[0], stats, tuple(out[8:])


def _chain_job(args):
    """Process-pool entry point: one chain."""
    return run_chain(*args)


def run_chains(layout, data, seed: int, inits: list[np.ndarray], warmup: int, draws: int, cores: int, progress: bool):
    """All chains, sequentially or in `cores` processes; identical draws either way."""
    chains = len(inits)
    jobs = [(layout, data, seed, c, inits[c], warmup, draws) for c in range(chains)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=chains, desc="chains", unit="chain", leave=False)
    if cores > 1 and chains > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(cores, chains)) as pool:
            results = []
            for r in pool.imap(_chain_job, jobs):
                results.append(r)
                if bar is not None:
                    bar.update(1)
    else:
        results = []
        for job in jobs:
            results.append(run_chain(*job))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    positions = np.stack([r[0] for r in results])
    stats = {k: np.stack([r[1][k] for r in results]) for k in results[0][1]}
    cond = [np.stack([r[2][i] for r in results]) for i in range(3)]
    return positions, stats, cond
