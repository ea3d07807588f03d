"""Ctrl-C during a long sample(): the run stops within a second or two, with or without a terminal, in one
process or several; KeyboardInterrupt reaches the caller (the CLI exits 130 with one line) and no file is left
half-written. Cutting chains into segments never changes the draws."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import multilevel as mlv
from multilevel import nuts

LONG = """
import sys, time
import multilevel as mlv
model = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff"))
if __name__ == "__main__":
    print("ready", flush=True)
    try:
        model.sample(chains=2, warmup=1000, draws={draws}, seed=1, cores={cores}, sampler="{sampler}", progress={progress})
    except KeyboardInterrupt:
        print("stopped at", time.time(), flush=True)
        raise
    print("finished", flush=True)
"""


def interrupt_after(script, wait: float) -> tuple[subprocess.CompletedProcess, float]:
    """Run the script (no terminal: pipes), send SIGINT `wait` s after its first line, and return its result and
    how long sample() took to raise KeyboardInterrupt after the signal (the interpreter's exit comes after)."""
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.readline()
    time.sleep(wait)
    os.kill(proc.pid, signal.SIGINT)  # the parent only, as `kill -INT` does; workers get nothing from a terminal
    sent = time.time()
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    stopped = [float(line.split()[-1]) for line in out.splitlines() if line.startswith("stopped at")]
    return subprocess.CompletedProcess(script, proc.returncode, out, err), (stopped[0] - sent if stopped else np.inf)


@pytest.mark.slow
@pytest.mark.parametrize("sampler,cores,progress,wait", [
    ("nuts", 1, True, 8.0),  # a prime chain length (1000 + 2,000,037 steps) with bars: one segment, 90 s and more
    ("nuts", 1, False, 8.0),
    ("gibbs", 1, False, 3.0),
    ("gibbs", 2, False, 6.0),  # worker processes stopped by the parent
])
def test_ctrl_c_stops_sampling_within_two_seconds(tmp_path, sampler, cores, progress, wait):
    script = tmp_path / "long.py"
    script.write_text(LONG.format(draws=2_000_037, cores=cores, sampler=sampler, progress=progress))
    run, seconds = interrupt_after(script, wait)
    assert "finished" not in run.stdout and "KeyboardInterrupt" in run.stderr and run.returncode != 0
    assert seconds < 2.0, f"took {seconds:.1f} s to stop"


@pytest.mark.slow
def test_cli_ctrl_c_exits_130_and_writes_nothing(tmp_path):
    command = shutil.which("multilevel")
    if command is None:
        pytest.skip("the package is not installed")
    mlv.datasets.load("Dyestuff").to_csv(tmp_path / "d.csv", index=False)
    args = [command, "fit", "d.csv", "Yield ~ 1 + (1 | Batch)", "--method", "all", "--draws", "2000037",
            "--save", "out", "--report", "r.html"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    time.sleep(10.0)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and err.strip().endswith("interrupted: no output file is left half-written")
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]


def draws_with(monkeypatch, length_of) -> np.ndarray:
    monkeypatch.setattr(nuts, "segment_length", length_of)
    model = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff"))
    post = model.sample(chains=1, warmup=100, draws=101, seed=3, progress=False)
    return np.concatenate([post.beta.ravel(), post.sigma.ravel(), post.stats["lp"].ravel()])


def test_segments_do_not_change_the_draws(monkeypatch):
    """201 steps (a prime) in the default segments and in segments of 7, the last running past the end."""
    default = draws_with(monkeypatch, nuts.segment_length)
    sevens = draws_with(monkeypatch, lambda total: 7)
    np.testing.assert_array_equal(default, sevens)
