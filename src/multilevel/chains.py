"""Running a sampler's chains (or bootstrap refits): one after another or in worker processes, with a
progress bar per chain.

Both samplers (and the bootstrap) hand over a module-level function `run_chain(*job, report=None)` that calls
`report(chain, steps_done)` as it goes; in worker processes the reports reach the parent's bars through
a queue. A chain's draws depend only on its job (seed, chain index), never on where it ran.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing as mp
import pickle
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from .errors import MultilevelError

_QUEUE = None  # in a worker process: where chain progress goes
_STOP = threading.Event()  # set by Ctrl-C during a stoppable run; in a worker process, the parent's shared event
_SHARED: tuple = ()  # in a worker process: the arguments every job takes
IN_FLIGHT = 2  # jobs handed to the pool per worker process at a time: one running, one waiting
GRACE = 3.0  # seconds worker processes get to hand back their finished draws after Ctrl-C, before they are ended


class ChainBars:
    """One tqdm bar per chain, labelled warmup or sampling."""

    def __init__(self, chains: int, warmup: int, draws: int, label: str = "chain"):
        from tqdm.auto import tqdm

        self.warmup, self.label = warmup, label
        self.bars = [tqdm(total=warmup + draws, desc=f"{label} {c + 1} warmup", unit="it", position=c, leave=False)
                     for c in range(chains)]

    def __call__(self, chain: int, done: int) -> None:
        bar = self.bars[chain]
        if done > self.warmup and bar.n <= self.warmup:
            bar.set_description(f"{self.label} {chain + 1} sampling", refresh=False)
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self.bars:
            bar.close()


def run(run_chain, jobs: list[tuple], cores: int, warmup: int, draws: int, progress, label: str = "chain",
        interruptible: bool = False, stoppable: bool = False, shared: tuple = ()) -> list:
    """run_chain(*shared, *job, report=...) for every job, in min(cores, len(jobs)) processes when cores > 1.

    `progress` is a bool (one bar per chain) or a reporter of one's own (called as report(job, done), with a
    close()). With `interruptible`, Ctrl-C returns the finished jobs' results and None for the others. With
    `stoppable`, Ctrl-C asks the running jobs to stop (they poll `stop_requested()` and return what they have
    finished), starts no others (None for them) and returns; a second Ctrl-C raises KeyboardInterrupt.
    `shared`: arguments every job takes (a model, say), sent to each worker process once, not with every job."""
    bars = progress if callable(progress) else ChainBars(len(jobs), warmup, draws, label) if progress else None
    results = [None] * len(jobs)
    try:
        with _stop_on_interrupt(stoppable):
            if cores > 1 and len(jobs) > 1:
                return _in_processes(run_chain, jobs, min(cores, len(jobs)), bars, interruptible, shared)
            for i, job in enumerate(jobs):
                if stop_requested():
                    break
                results[i] = run_chain(*shared, *job, report=bars)
            return results
    except KeyboardInterrupt:
        if not interruptible:
            raise
        return results
    finally:
        if bars is not None:
            bars.close()


def stop_requested() -> bool:
    """True once Ctrl-C has asked a stoppable run (`run(..., stoppable=True)`) to end: a job polling it then
    returns the work it has finished."""
    return _STOP.is_set()


@contextmanager
def _stop_on_interrupt(stoppable: bool):
    """While the block runs, the first Ctrl-C sets the stop flag instead of raising (the second raises); only
    with `stoppable`, in the main thread, and where Python's own handler is in place (a handler or an ignored
    SIGINT set by the program is left alone)."""
    _STOP.clear()
    own = (stoppable and threading.current_thread() is threading.main_thread()
           and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if not own:
        yield
        return

    def handler(signum, frame):
        if _STOP.is_set():
            raise KeyboardInterrupt
        _STOP.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def kept_chains(results: list, count, draws: int) -> tuple[list, int, list[int] | None]:
    """The chains a stopped run keeps: (their results, the draws each keeps, the draws every chain finished, or
    None when all finished all `draws`). `count(result)` is a result's draws (None: 0). The cut keeps the most
    draws in equal-length chains (more chains on a tie); none at all raises KeyboardInterrupt."""
    finished = [0 if r is None else count(r) for r in results]
    best = max((n * sum(c >= n for c in finished), sum(c >= n for c in finished), n) for n in set(finished))
    if best[2] == 0:
        raise KeyboardInterrupt("sampling was interrupted before any chain finished its warmup")
    kept = [r for r, done in zip(results, finished) if done >= best[2]]
    return kept, best[2], (None if min(finished) == draws else finished)


@contextmanager
def gc_paused():
    """Python's cycle collector off for the block (restored after): tracing a sampler with JAX and importing
    JAX and ArviZ make millions of short-lived objects, and collecting them was 10-15 % of a first NUTS fit
    (radon: 2.8 -> 2.4 s, docs/bayes.md); reference counting still frees nearly all of them. Only for
    blocks whose garbage is bounded (the NUTS call: tracing once, then ~20 segment calls per chain)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def _sigint_held():
    """SIGINT blocked in this thread for the block, then delivered: a worker process started in it inherits the
    block (through exec), so a terminal's Ctrl-C, sent to the whole process group, waits in a worker still
    importing the package until `_worker_init` ignores it (otherwise it dies printing a traceback)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _worker_init(queue, stop, shared: bytes) -> None:
    """A worker's progress queue, stop event and shared arguments; it ignores SIGINT (a terminal sends it to
    every process): the parent decides, asking the worker to stop through the event or ending it."""
    global _QUEUE, _STOP, _SHARED
    _QUEUE, _STOP, _SHARED = queue, stop, pickle.loads(shared)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _report(chain: int, done: int) -> None:
    _QUEUE.put((chain, done))


def _job(payload: bytes):
    """Worker entry point: one job (pickled by cloudpickle, so closures such as a user's statistic travel),
    its progress sent to the parent's queue."""
    run_chain, job = pickle.loads(payload)
    return run_chain(*_SHARED, *job, report=None if _QUEUE is None else _report)


def _stop(pool) -> None:
    """End a pool's worker processes at once (an interrupted sampler must not run on in the background)."""
    for process in list((pool._processes or {}).values()):  # no public call before Python 3.14's terminate_workers
        process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def _in_processes(run_chain, jobs: list, processes: int, bars, interruptible: bool = False, shared: tuple = ()) -> list:
    """Chains in spawned worker processes; their progress reaches the parent's bars through a pipe.

    Jobs are handed out as workers free up, IN_FLIGHT per process at a time (so a worker never waits for
    the next, and thousands of small jobs cost no memory). A SimpleQueue writes each report into the pipe
    before `put` returns (a Queue hands it to a feeder thread), so a chain's reports are all readable once its
    result is in. On Ctrl-C the workers are stopped at once; with `interruptible` the finished jobs' results
    are returned (None for the others), else the interrupt goes on to the caller. A stop request
    (`stop_requested()`, set by Ctrl-C in a stoppable run) is passed to the workers, which get GRACE seconds
    to return what they have.
    """
    import cloudpickle

    context = mp.get_context("spawn")
    progress = context.SimpleQueue() if bars is not None else None
    stop = context.Event()
    pool = ProcessPoolExecutor(processes, mp_context=context, initializer=_worker_init,
                               initargs=(progress, stop, cloudpickle.dumps(shared)))
    results, todo, running = [None] * len(jobs), iter(range(len(jobs))), {}
    try:
        while True:
            for i in itertools.islice(todo, IN_FLIGHT * processes - len(running)):
                with _sigint_held():  # a submit may start a worker process
                    running[pool.submit(_job, cloudpickle.dumps((run_chain, jobs[i])))] = i
            if not running:
                break
            done = wait(running, timeout=0.1, return_when=FIRST_COMPLETED).done  # short waits: Ctrl-C seen within 0.1 s
            _drain(progress, bars)
            for future in done:
                results[running.pop(future)] = future.result()
            if stop_requested():
                return _stopped(pool, running, results, stop, progress, bars)
    except BrokenProcessPool:
        _stop(pool)
        if stop_requested():  # a worker met the Ctrl-C before it could ignore it
            return _collect(running, results)
        raise MultilevelError(
            "the worker processes for cores > 1 died before finishing; in a script, start sampling under "
            "'if __name__ == \"__main__\":' (worker processes re-import the script), or use cores=1"
        ) from None
    except KeyboardInterrupt:
        _stop(pool)
        if not interruptible:
            raise
        return _collect(running, results)
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown()
    return results


def _stopped(pool, running: dict, results: list, stop, progress, bars) -> list:
    """After a stop request: the jobs not started are cancelled, the running ones asked to stop and given GRACE
    seconds to return what they have; then the pool is ended. Each job's result, or None."""
    for future in running:
        future.cancel()
    stop.set()
    wait(running, timeout=GRACE)
    _drain(progress, bars)
    _stop(pool)
    return _collect(running, results)


def _collect(running: dict, results: list) -> list:
    """`results` with each still-running job's result filled in where it finished (None where not)."""
    for future, i in running.items():
        results[i] = _finished(future)
    return results


def _finished(future):
    """A future's result if it ran to completion, else None (cancelled, interrupted or its worker gone)."""
    if future.cancelled() or future.exception() is not None:
        return None
    return future.result()


def _drain(progress, bars) -> None:
    """Show every progress report waiting in the pipe."""
    while progress is not None and not progress.empty():
        bars(*progress.get())
