"""The benchmarks' results files: benchmarks/results/<name>.json, a partial run updating its own rows only."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def update(name: str, rows: dict) -> Path:
    """Write `rows` into results/<name>.json; rows of models not run this time are kept."""
    out = RESULTS / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    kept = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps(kept | rows, indent=2))
    return out
