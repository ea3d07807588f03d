"""How sparse is the items x items Schur complement of a crossed design? (issue 14: whether a sparse Cholesky pays)

    PYTHONPATH=src python benchmarks/crossed_fill.py /tmp/grow_3e6 /tmp/grow_1e7

For `y ~ x + (1 | user) + (1 | item)` the engine eliminates the users (one scalar a level, no fill among them),
leaving S = the items block minus B diag(M) B' over the items: entry (i, j) is non-zero exactly when some user
rated both items. A minimum-degree ordering (AMD, CHOLMOD's default) eliminates the users first too (their degree,
about 20, is far below the items' 500), so S's pattern is the least fill of that ordering; eliminating an item
before its users joins all of its users, far worse. Prints S's non-zeros in its lower triangle and their share of
the triangle; results to benchmarks/results/scale.json under 'schur fill <folder>'.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import update  # noqa: E402

COLUMNS = 2_000  # items whose column of S is formed at a time


def schur_fill(folder: Path) -> dict:
    """Users, items, distinct (user, item) pairs, and the lower triangle's non-zeros of the items' Schur complement."""
    table = pq.read_table(folder, columns=["user", "item"])
    user, item = table["user"].to_numpy(), table["item"].to_numpy()
    users, items = int(user.max()) + 1, int(item.max()) + 1
    U = sp.csr_matrix((np.ones(len(user), dtype=np.float32), (user, item)), shape=(users, items))
    U.sum_duplicates()
    U.data[:] = 1.0
    Ut = U.T.tocsr()
    lower = 0
    for start in range(0, items, COLUMNS):
        block = (Ut @ U[:, start : start + COLUMNS]).tocoo()  # S's columns start.., every row
        lower += int(np.sum(block.row >= block.col + start))
    return {"rows": len(user), "users": users, "items": items, "user_item_pairs": int(U.nnz),
            "schur_lower_nonzeros": lower, "schur_lower_share": lower / (items * (items + 1) / 2)}


def main() -> None:
    rows = {}
    for folder in map(Path, sys.argv[1:]):
        out = schur_fill(folder)
        print(f"{folder}: {out['rows']:,} rows, {out['users']:,} users x {out['items']:,} items, "
              f"{out['schur_lower_nonzeros']:,} non-zeros in S's lower triangle: {out['schur_lower_share']:.1%} dense")
        rows[f"schur fill {folder.name}"] = out
    print(update("scale", rows))


if __name__ == "__main__":
    main()
