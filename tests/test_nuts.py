"""The NUTS driver: segmented chains, per-chain progress, processes."""

import subprocess
import sys

import numpy as np
import pytest

import multilevel as mlv
from multilevel import chains, collapsed, nuts


@pytest.mark.parametrize("total", [2000, 600, 1009, 97, 51, 200003])
def test_segments_cut_any_chain_finely(total):
    """A prime length is cut as finely as any other (one segment of 200003 steps took 10-20 s to see Ctrl-C)."""
    length = nuts.segment_length(total)
    count = -(-total // length)
    assert count * length >= total > (count - 1) * length
    assert length <= min(-(-total // nuts.SEGMENTS), nuts.MAX_SEGMENT)


class RecordingBars(chains.ChainBars):
    """The real bars, recording what each chain reported."""

    calls: list = []

    def __call__(self, chain, done):
        super().__call__(chain, done)
        RecordingBars.calls.append((chain, done, self.bars[chain].desc))


@pytest.mark.parametrize("sampler,label", [("nuts", "chain"), ("gibbs", "gibbs chain")])
@pytest.mark.parametrize("cores", [1, 2])
def test_one_progress_bar_per_chain(monkeypatch, cores, sampler, label):
    RecordingBars.calls = []
    monkeypatch.setattr(chains, "ChainBars", RecordingBars)
    model = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff"))
    model.sample(chains=2, draws=100, warmup=100, seed=1, progress=True, cores=cores, sampler=sampler)
    for chain in (0, 1):
        done = [d for c, d, _ in RecordingBars.calls if c == chain]
        assert done == sorted(done) and done[-1] == 200
        # every segment's report reaches the bar, from worker processes too
        assert len(done) >= -(-200 // nuts.segment_length(200))
    descriptions = {desc.rstrip(": ") for _, _, desc in RecordingBars.calls}
    assert {f"{label} {c} {phase}" for c in (1, 2) for phase in ("warmup", "sampling")} <= descriptions


SCRIPT = """
import multilevel as mlv
model = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff"))
model.sample(chains=2, draws=50, warmup=50, seed=1, cores=2, progress=False, sampler="{sampler}")
"""


@pytest.mark.parametrize("sampler", ["nuts", "gibbs"])
def test_a_script_without_a_main_guard_gets_a_clear_error(tmp_path, sampler):
    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT.format(sampler=sampler))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "if __name__ == \"__main__\"" in run.stderr and "cores=1" in run.stderr


@pytest.mark.parametrize("kwargs,words", [
    (dict(chains=0), "chains"),
    (dict(draws=2.5), "draws"),
    (dict(warmup=10), "warmup=10"),
    (dict(cores=0), "cores"),
    (dict(seed=-1), "seed"),
    (dict(seed=2**64), "seed"),
    (dict(seed="1"), "seed"),
    (dict(sampler="hmc"), "sampler"),
])
def test_bad_sampling_arguments_are_named(kwargs, words):
    model = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff"))
    with pytest.raises(mlv.MultilevelError, match=words):
        model.sample(progress=False, **kwargs)


def test_small_models_compile_fast_large_ones_optimised():
    def data(r, m0, k0, fill):
        return {"C22": np.zeros((r, r)), "B": np.zeros((r, m0, k0)), "fill_vals": np.zeros(fill)}

    assert nuts.compile_options(collapsed, data(3, 85, 1, 3)) == nuts.FAST_COMPILE  # radon
    assert nuts.compile_options(collapsed, data(123, 1721, 2, 10_000)) == {}  # egsingle's 3-level growth model


def test_sampling_pauses_the_cycle_collector_and_restores_it(monkeypatch):
    import contextlib
    import gc

    from multilevel import bayes

    seen = {"run_chain": [], "inside run_chain": []}
    real_chain, real_setup = nuts.run_chain, nuts.setup_jax

    def spy_chain(*args, **kwargs):
        seen["run_chain"].append(gc.isenabled())
        return real_chain(*args, **kwargs)

    def spy_setup():
        seen["inside run_chain"].append(gc.isenabled())
        real_setup()

    monkeypatch.setattr(nuts, "run_chain", spy_chain)
    monkeypatch.setattr(nuts, "setup_jax", spy_setup)
    model = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff"))
    assert gc.isenabled()
    model.sample(chains=1, draws=100, warmup=100, seed=1, progress=False)
    assert seen == {"run_chain": [False], "inside run_chain": [False]} and gc.isenabled()
    # run_chain pauses it itself, as it must in a worker process, where sample()'s pause does not reach
    monkeypatch.setattr(bayes, "gc_paused", contextlib.nullcontext)
    model.sample(chains=1, draws=100, warmup=100, seed=1, progress=False)
    assert seen == {"run_chain": [False, True], "inside run_chain": [False, False]} and gc.isenabled()
    gc.disable()  # a user who turned it off keeps it off
    try:
        model.sample(chains=1, draws=100, warmup=100, seed=1, progress=False)
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(ZeroDivisionError), chains.gc_paused():
        1 / 0
    assert gc.isenabled()  # restored after an error too


def report_every_step(chain, steps, report=None):
    """A stand-in chain that reports after every step and returns at once (run in worker processes)."""
    for done in range(1, steps + 1):
        report(chain, done)
    return chain


def test_every_report_from_a_worker_reaches_its_bar(monkeypatch):
    RecordingBars.calls = []
    monkeypatch.setattr(chains, "ChainBars", RecordingBars)
    results = chains.run(report_every_step, [(0, 300), (1, 300)], cores=2, warmup=100, draws=200, progress=True)
    assert results == [0, 1]
    for chain in (0, 1):
        assert [d for c, d, _ in RecordingBars.calls if c == chain] == list(range(1, 301))
