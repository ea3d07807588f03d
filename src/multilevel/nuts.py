"""NUTS on the collapsed posterior with BlackJAX: window adaptation, then draws, one chain at a time.

BlackJAX was chosen by measurement (docs/bayes.md): on sleepstudy its compiled sampler costs ~10 us per
leapfrog step against ~160 us for nutpie driven through a Python callback, and NumPyro was slower to
compile. Each chain's key is fold_in(seed, chain), so draws do not depend on how many processes run them.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np

_CACHE_READY = False


def setup_jax() -> None:
    """float64, and JAX's persistent compilation cache in the user's cache directory."""
    global _CACHE_READY
    if _CACHE_READY:
        return
    import jax

    jax.config.update("jax_enable_x64", True)
    cache = Path(os.environ.get("MULTILEVEL_CACHE", Path.home() / ".cache" / "multilevel")) / "jax"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except (OSError, AttributeError):  # read-only home: compile in memory only
        pass
    _CACHE_READY = True


def _compiled():
    """The jitted warmup and sampling functions (built lazily so importing the package stays cheap)."""
    import blackjax
    import jax

    from .collapsed import log_density

    @partial(jax.jit, static_argnums=(0, 4))
    def warmup(layout, data, key, init, n_steps):
        logdensity = partial(log_density, layout, data)
        adapt = blackjax.window_adaptation(blackjax.nuts, logdensity, target_acceptance_rate=0.8)
        (state, params), _ = adapt.run(key, init, num_steps=n_steps)
        return state, params["step_size"], params["inverse_mass_matrix"]

    @partial(jax.jit, static_argnums=(0,))
    def draws(layout, data, state, step_size, inv_mass, keys):
        logdensity = partial(log_density, layout, data)
        kernel = blackjax.nuts(logdensity, step_size=step_size, inverse_mass_matrix=inv_mass)

        def one(st, key):
            st, info = kernel.step(key, st)
            return st, (st.position, st.logdensity, info.is_divergent, info.num_integration_steps,
                        info.acceptance_rate, info.energy, info.num_trajectory_expansions)

        return jax.lax.scan(one, state, keys)

    return warmup, draws


_FUNCS = None


def run_chain(layout, data, seed: int, chain: int, init: np.ndarray, warmup: int, draws: int, bar=None):
    """Warm up and sample one chain; returns (positions (draws, dim), sample_stats dict, step size)."""
    global _FUNCS
    setup_jax()
    import jax
    import jax.numpy as jnp

    if _FUNCS is None:
        _FUNCS = _compiled()
    warm, sample = _FUNCS
    key = jax.random.fold_in(jax.random.PRNGKey(seed), chain)
    k_warm, k_draw = jax.random.split(key)
    jdata = {k: jnp.asarray(v) for k, v in data.items()}
    state, step, inv_mass = warm(layout, jdata, k_warm, jnp.asarray(init), warmup)
    if bar is not None:
        bar.update(warmup)
    keys = jax.random.split(k_draw, draws)
    chunk = draws if bar is None else max(1, -(-draws // 10))
    outs = []
    for start in range(0, draws, chunk):
        part = keys[start : start + chunk]
        state, out = sample(layout, jdata, state, step, inv_mass, part)
        outs.append([np.asarray(o) for o in out])
        if bar is not None:
            bar.update(len(part))
    cols = [np.concatenate(c) for c in zip(*outs)]
    stats = {
        "lp": cols[1], "diverging": cols[2].astype(bool), "n_steps": cols[3], "acceptance_rate": cols[4],
        "energy": cols[5], "tree_depth": cols[6], "step_size": np.full(draws, float(step)),
    }
    return cols[0], stats


def _chain_job(args):
    """Process-pool entry point: one chain, no progress bar."""
    layout, data, seed, chain, init, warmup, draws = args
    return run_chain(layout, data, seed, chain, init, warmup, draws)


def run_chains(layout, data, seed: int, inits: list[np.ndarray], warmup: int, draws: int, cores: int, progress: bool):
    """All chains, sequentially or in `cores` processes; identical draws either way."""
    chains = len(inits)
    jobs = [(layout, data, seed, c, inits[c], warmup, draws) for c in range(chains)]
    if cores > 1 and chains > 1:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ctx.Pool(min(cores, chains)) as pool:
            results = list(_progress(pool.imap(_chain_job, jobs), chains, progress, "chains"))
    else:
        results = []
        for c, job in enumerate(jobs):
            bar = _bar(progress, warmup + draws, f"chain {c + 1}/{chains}")
            results.append(run_chain(*job, bar=bar))
            if bar is not None:
                bar.close()
    positions = np.stack([r[0] for r in results])
    stats = {k: np.stack([r[1][k] for r in results]) for k in results[0][1]}
    return positions, stats


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def _progress(iterable, total: int, progress: bool, desc: str):
    if not progress:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)
