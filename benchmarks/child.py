"""Run a benchmark's child program in a fresh Python pinned to core 0, single-threaded, with its own compile cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_pinned(code: str, cache: str, **env) -> dict:
    """The JSON the child program prints last, from `python -c code` on core 0 with MULTILEVEL_CACHE=cache."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MULTILEVEL_CACHE=cache, **env)
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
