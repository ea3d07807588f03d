# %% [markdown]
# # Data in Parquet files, fitted through Dask
#
# `Model(formula, data=...)` accepts a Dask DataFrame or a folder of Parquet files: the rows stay in their
# partitions and only the cross-products, sums over rows, are brought together (docs/scale.md). This
# example writes a small data set as four Parquet files and fits it; the result equals the in-memory fit.

# %%
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

import multilevel as mlv

rng = np.random.default_rng(3)
groups = np.repeat(np.arange(40), 25)
x = rng.normal(size=groups.size)
y = 1 + 0.5 * x + rng.normal(0, 0.8, 40)[groups] + rng.normal(0, 0.3, 40)[groups] * x + rng.normal(size=groups.size)
frame = pd.DataFrame({"y": y, "x": x, "g": [f"g{i}" for i in groups]})

folder = Path(tempfile.mkdtemp()) / "rows"
folder.mkdir()
for i, rows in enumerate(np.array_split(np.arange(len(frame)), 4)):
    frame.iloc[rows].to_parquet(folder / f"part-{i}.parquet")
print(sorted(p.name for p in folder.iterdir()))

# %%
fit = mlv.Model("y ~ x + (1 + x | g)", data=str(folder)).fit()
fit

# %% [markdown]
# The same model on the rows in memory gives the same estimates:

# %%
in_memory = mlv.Model("y ~ x + (1 + x | g)", data=frame).fit()
print("largest difference in the fixed effects:",
      float(np.max(np.abs(fit.fixed_effects["estimate"] - in_memory.fixed_effects["estimate"]))))
