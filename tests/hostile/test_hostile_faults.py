"""Ctrl-C during a long sample(): the run stops within a second or two, with or without a terminal, in one
process or several, and returns the draws finished by then, marked partial (a second Ctrl-C raises); no
worker process outlives it, and saving the partial posterior keeps the mark. The CLI exits 130 with one line
and no file is left half-written. Cutting chains into segments never changes the draws."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import multilevel as mlv
from multilevel import chains, nuts

LONG = """
import json, sys, time, warnings
import arviz_stats.base  # imported by the diagnostics at the end of any sample(); cold, ~2 s that are not stopping
import numpy as np
import multilevel as mlv
model = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff"))
if __name__ == "__main__":
    print("ready", flush=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = model.sample(chains=2, warmup=1000, draws={draws}, seed=1, cores={cores}, sampler="{sampler}",
                            progress=True)
    returned = time.time()
    post.save(sys.argv[1])
    back = mlv.load(sys.argv[1])
    same = all(np.array_equal(a, b) for a, b in [(post.beta, back.beta), (post.sigma, back.sigma)]
               + list(zip(post.sd, back.sd)) + list(zip(post.b, back.b)))
    print(json.dumps({{"returned": returned, "partial": post.partial, "finished": post.finished,
                      "shape": list(post.beta.shape), "warnings": [str(w.message) for w in caught],
                      "saved_partial": back.partial, "saved_finished": back.finished,
                      "saved_warnings": back.warnings, "same_draws": same}}), flush=True)
"""


def descendants(pid: int) -> set[int]:
    """The processes below `pid` (from /proc), children and theirs."""
    parents = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """The CPU time a process has used (user + system), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def interrupt_while_sampling(script, saved, chains_sampling: int, timeout: float = 300.0) -> tuple[dict, float, set[int]]:
    """Run the script (no terminal: pipes), send SIGINT once the progress bars say the first `chains_sampling`
    chains are past warmup, and return its report, how long sample() took to return after the signal, and its
    processes at that time."""
    proc = subprocess.Popen([sys.executable, str(script), str(saved)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdout.readline()
        wanted = {f"chain {c + 1} sampling".encode() for c in range(chains_sampling)}
        tail, deadline = b"", time.time() + timeout
        while wanted and time.time() < deadline and proc.poll() is None:
            tail = tail[-100:] + os.read(proc.stderr.fileno(), 4096)
            wanted = {w for w in wanted if w not in tail}
        assert not wanted, tail[-2000:]
        time.sleep(0.5)
        workers = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGINT)  # the parent only, as `kill -INT` does; workers get nothing from a terminal
        sent = time.time()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()[-3000:]
    report = json.loads(out.decode().strip().splitlines()[-1])
    return report, report["returned"] - sent, workers


@pytest.mark.slow
@pytest.mark.parametrize("sampler,cores", [("nuts", 1), ("nuts", 2), ("gibbs", 1), ("gibbs", 2)])
def test_ctrl_c_returns_the_finished_draws_marked_partial(tmp_path, sampler, cores):
    """A chain length of 2,000,037 (a prime: no even segments) that would run for hours."""
    script = tmp_path / "long.py"
    draws = 2_000_037
    script.write_text(LONG.format(draws=draws, cores=cores, sampler=sampler))
    report, seconds, workers = interrupt_while_sampling(script, tmp_path / "post.nc", chains_sampling=cores)
    assert seconds < 2.0, f"took {seconds:.1f} s to return"
    deadline = time.time() + 5.0  # the interpreter has exited; its helpers (multiprocessing's tracker) follow
    while [pid for pid in workers if alive(pid)] and time.time() < deadline:
        time.sleep(0.1)
    assert not [command(pid) for pid in workers if alive(pid)], "a process of the run outlived it"
    finished = report["finished"]
    assert report["partial"] and len(finished) == 2 and all(0 <= n < draws for n in finished), finished
    if cores == 1:  # the chains run one after the other: the first was stopped, the second never began
        assert finished[0] > 0 and finished[1] == 0
    else:  # workers hand back what they have
        assert min(finished) > 0, finished
    kept, n = report["shape"][:2]  # the cut keeping the most draws in equal-length chains
    assert n * kept == max(m * sum(c >= m for c in finished) for m in finished) and kept == sum(c >= n for c in finished)
    message = [w for w in report["warnings"] if "interrupted (Ctrl-C)" in w]
    assert len(message) == 1 and ", ".join(map(str, finished)) in message[0]
    assert report["saved_partial"] and report["saved_finished"] == finished and report["same_draws"]
    assert any("interrupted (Ctrl-C)" in w for w in report["saved_warnings"])


@pytest.mark.slow
def test_cli_ctrl_c_exits_130_and_writes_nothing(tmp_path):
    command = shutil.which("multilevel")
    if command is None:
        pytest.skip("the package is not installed")
    mlv.datasets.load("Dyestuff").to_csv(tmp_path / "d.csv", index=False)
    args = [command, "fit", "d.csv", "Yield ~ 1 + (1 | Batch)", "--method", "all", "--draws", "2000037",
            "--save", "out", "--report", "r.html"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.time() + 300.0
    while cpu_seconds(proc.pid) < 10.0 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)  # 10 s of its own CPU (imports, two fits, compiling): sampling, however loaded the machine
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


class StopAfter:
    """A progress reporter that asks the run to stop (as Ctrl-C does) once chain 0 has done `steps` steps."""

    def __init__(self, steps: int):
        self.steps = steps

    def __call__(self, chain: int, done: int) -> None:
        if chain == 0 and done >= self.steps:
            chains._STOP.set()

    def close(self) -> None:
        pass


@pytest.mark.parametrize("sampler,cores", [("nuts", 1), ("gibbs", 1), ("gibbs", 2)])
def test_stopped_draws_are_the_first_draws_of_the_full_run(tmp_path, sampler, cores):
    """Every step's random numbers are fixed by (seed, chain, step), so a stopped chain holds exactly the first
    draws of the uninterrupted run; the partial posterior saves and reopens with its mark. In worker processes the
    reports reach the parent every 0.1 s: the chains are long enough there that the stop comes mid-chain."""
    model = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff"))
    draws = 300 if cores == 1 else 30_000
    args = dict(chains=2, warmup=100, draws=draws, seed=5, sampler=sampler)
    full = model.sample(**args, progress=False)
    with pytest.warns(mlv.MultilevelWarning, match=r"interrupted \(Ctrl-C\)"):
        part = model.sample(**args, cores=cores, progress=StopAfter(220))
    assert part.partial and not full.partial and len(part.finished) == 2
    kept, n = part.beta.shape[:2]
    assert 0 < n < draws and n in part.finished
    rows = [c for c, done in enumerate(part.finished) if done >= n]
    assert len(rows) == kept
    for a, b in [(part.beta, full.beta), (part.sigma, full.sigma), (part.sd[0], full.sd[0]), (part.b[0], full.b[0])]:
        np.testing.assert_array_equal(a, b[rows, :n])
    part.save(tmp_path / "p.nc")
    back = mlv.load(tmp_path / "p.nc")
    assert back.partial and back.finished == part.finished and back.warnings == part.warnings
    np.testing.assert_array_equal(back.beta, part.beta)
    assert "PARTIAL" in repr(back)


@pytest.mark.parametrize("sampler,cores", [("gibbs", 1), ("gibbs", 2), ("nuts", 1)])
def test_a_stopped_occupancy_run_keeps_the_first_draws(sampler, cores):
    """Occupancy chains poll the stop as the other samplers do: the kept draws (z and the site log-likelihoods too)
    are the first draws of the full run, marked partial, with the interruption warning. A Gibbs chain's sweeps do
    not depend on its length, so its full run is only as long as the kept draws."""
    df = mlv.datasets.load("pcru_occupancy")
    model = mlv.Occupancy("~ 1", "~ Temperature_scaled", df)
    args = dict(chains=2, warmup=100, seed=5, sampler=sampler)
    draws = 300 if sampler == "nuts" else 30_000
    with pytest.warns(mlv.MultilevelWarning, match=r"interrupted \(Ctrl-C\)"):
        part = model.sample(**args, draws=draws, cores=cores, progress=StopAfter(220))
    assert part.partial and len(part.finished) == 2 and 0 < part.n_draws < draws
    if cores == 1:  # the second chain never began
        assert part.finished[1] == 0 and part.n_chains == 1
    rows = [c for c, done in enumerate(part.finished) if done >= part.n_draws]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mlv.MultilevelWarning)  # few draws: ESS warnings
        full = model.sample(**args, draws=draws if sampler == "nuts" else part.n_draws)
    for a, b in [(part.draws, full.draws), (part.z, full.z), (part.site_loglik, full.site_loglik)]:
        np.testing.assert_array_equal(a, b[rows, : part.n_draws])


def test_a_stop_before_any_draw_raises_keyboard_interrupt():
    model = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff"))
    with pytest.raises(KeyboardInterrupt):
        model.sample(chains=2, warmup=100, draws=300, seed=5, sampler="gibbs", progress=StopAfter(50))


@pytest.mark.parametrize("finished,kept,n", [
    ([1000, 437, 0, 0], [1000], 1000),  # one whole chain holds more than two cut to 437
    ([500, 480], [500, 480], 480),
    ([300, 300, 300], [300, 300, 300], 300),
    ([600, 300, 0], [600, 300], 300),  # a tie: more chains
])
def test_the_cut_keeps_the_most_draws_in_equal_chains(finished, kept, n):
    results, length, marked = chains.kept_chains(finished, lambda r: r, 1000)
    assert (results, length) == (kept, n)
    assert marked == (None if min(finished) == 1000 else finished)


def test_the_cut_refuses_to_keep_nothing():
    with pytest.raises(KeyboardInterrupt):
        chains.kept_chains([None, 0], lambda r: r, 1000)


def _report_sigint(queue) -> None:
    """In a spawned process: whether SIGINT arrived blocked, then ignore it (as `chains._worker_init` does)."""
    queue.put(signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    queue.put("alive")


def test_a_worker_started_while_sigint_is_held_survives_a_ctrl_c_and_the_parent_still_gets_it():
    """A terminal's Ctrl-C reaches every process of the group; a worker still starting (importing) must not die
    of it with a traceback (seen under load with cores=2), and the parent must not lose it."""
    import multiprocessing as mp

    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    with pytest.raises(KeyboardInterrupt):
        with chains._sigint_held():
            worker = context.Process(target=_report_sigint, args=(queue,))
            worker.start()
            os.kill(worker.pid, signal.SIGINT)  # while it starts
            os.kill(os.getpid(), signal.SIGINT)  # held, delivered when the block ends
    assert queue.get() is True and queue.get() == "alive"
    worker.join(timeout=30)
    assert worker.exitcode == 0
