"""The documentation site builds with warnings as errors, every gallery example executed (docs/docs-build.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_site_builds_strictly_with_every_example_run(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    examples = sorted(p.stem for p in (ROOT / "examples").glob("*.py"))
    assert len(examples) >= 8
    for name in examples:
        page = (tmp_path / "gallery" / name / "index.html").read_text(encoding="utf-8")
        assert "ran in" in page and "Traceback" not in page
    sleep = (tmp_path / "gallery" / "sleepstudy_slopes" / "index.html").read_text(encoding="utf-8")
    assert "Linear mixed model fit by REML" in sleep and 'data-value="25.59' in sleep  # the fit's block: sigma
    assert re.search(r'<img alt="figure" src="data:image/png;base64,', sleep)
    boundary = (tmp_path / "gallery" / "dyestuff2_boundary" / "index.html").read_text(encoding="utf-8")
    assert "boundary (singular) fit" in boundary
    api = (tmp_path / "api" / "index.html").read_text(encoding="utf-8")
    assert "MixedModelRegressor" in api and "LmmFit" in api
