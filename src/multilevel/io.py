"""Saving and loading results without pickle: frequentist fits as JSON, Bayesian fits as netCDF (ArviZ's
DataTree with the model's data and formula beside the draws), so a file from someone else is only data.

>>> import tempfile, pathlib, multilevel as mlv
>>> from multilevel.io import load, save
>>> fit = mlv.Model("Yield ~ 1 + (1 | Batch)", mlv.datasets.load("Dyestuff")).fit()
>>> path = pathlib.Path(tempfile.mkdtemp()) / "dyestuff.json"
>>> save(fit, path)
>>> load(path).sigma == fit.sigma
True
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from .errors import MultilevelError
from .tables import callable_table

FORMAT = "multilevel"
VERSION = 1
FIT_SUFFIXES = (".json",)
POSTERIOR_SUFFIXES = (".nc",)


# ---------------------------------------------------------------------------------------------- public
def save(result, path, force: bool = False) -> None:
    """Write a fit to ``.json`` or a posterior to ``.nc``; an existing file is kept unless ``force=True``."""
    path = Path(path)
    bayesian = hasattr(result, "sampler")
    suffixes = POSTERIOR_SUFFIXES if bayesian else FIT_SUFFIXES
    if path.suffix.lower() not in suffixes:
        kind = "a Bayesian result" if bayesian else "a frequentist fit"
        raise MultilevelError(f"{kind} is saved as {' or '.join(suffixes)}, not '{path.suffix or path.name}': rename the file")
    check_writable(path, force)
    if bayesian:
        _posterior_tree(result).to_netcdf(path, engine="h5netcdf")
    else:
        path.write_text(json.dumps(_fit_record(result), indent=1, allow_nan=False))


def load(path):
    """Read a result written by `save`: a `SavedFit` from JSON, a `Posterior` from netCDF."""
    path = Path(path)
    if not path.is_file():
        raise MultilevelError(f"no such file: '{path}'")
    suffix = path.suffix.lower()
    if suffix in FIT_SUFFIXES:
        return _load_fit(path)
    if suffix in POSTERIOR_SUFFIXES:
        return _load_posterior(path)
    raise MultilevelError(f"'{path}' is not a saved result: expected a .json (fit) or .nc (posterior) file")


def check_writable(path, force: bool) -> None:
    """Refuse to overwrite an existing file unless asked; refuse a missing directory."""
    path = Path(path)
    if path.exists() and not force:
        raise MultilevelError(f"'{path}' already exists: choose another name or overwrite it with force=True (--force)")
    if not path.parent.is_dir():
        raise MultilevelError(f"the folder '{path.parent}' does not exist: create it first")


# ---------------------------------------------------------------------------------------------- frequentist
class SavedFit:
    """A frequentist fit read back from JSON: its tables, scalars, fitted values and residuals.

    It has the reading side of `LmmFit` (summary, tables, fitted, residuals) but no model to refit or
    predict with: rebuild the `Model` from the data for that.
    """

    def __init__(self, record: dict):
        self.method, self.prior = record["method"], record["prior"]
        self.reml = self.method == "REML"
        for name in ("sigma", "loglik", "aic", "bic", "objective", "deviance", "penalized_objective", "nobs",
                     "n_params", "converged", "is_singular", "warnings"):
            setattr(self, name, record[name])
        self.fixed_effects = _frame_from(record["fixed_effects"])
        self.variance_components = _frame_from(record["variance_components"])
        self.group_effects = callable_table(_frame_from(record["group_effects"]))
        self._fitted = np.asarray(record["fitted"], float)
        self._residuals = np.asarray(record["residuals"], float)
        blocks = [
            SimpleNamespace(group=b["group"], coef_names=b["coef_names"], levels=np.asarray(b["levels"]),
                            codes=np.asarray(b["codes"], int), m=len(b["levels"]), k=len(b["coef_names"]))
            for b in record["blocks"]
        ]
        self.design = SimpleNamespace(
            formula=record["formula"], fixed_names=record["fixed_names"], nobs=record["nobs"], blocks=blocks,
            n_dropped=record["n_dropped"], aliased=record["aliased"], y=self._fitted + self._residuals,
            n_levels={b.group: b.m for b in blocks},
        )
        self.model = SimpleNamespace(design=self.design, n_levels=self.design.n_levels)

    def fitted(self) -> np.ndarray:
        return self._fitted.copy()

    def residuals(self) -> np.ndarray:
        return self._residuals.copy()

    def summary(self) -> str:
        from .summary import lmm_summary

        return lmm_summary(self)

    def __repr__(self) -> str:
        return self.summary()


def _fit_record(fit) -> dict:
    d = fit.design
    return {
        "format": FORMAT, "version": VERSION, "kind": "fit", "formula": str(d.formula),
        "method": fit.method, "prior": fit.prior,
        "sigma": fit.sigma, "loglik": fit.loglik, "aic": fit.aic, "bic": fit.bic, "objective": fit.objective,
        "deviance": fit.deviance, "penalized_objective": fit.penalized_objective, "nobs": fit.nobs,
        "n_params": fit.n_params, "converged": bool(fit.converged), "is_singular": fit.is_singular,
        "warnings": list(fit.warnings), "fixed_names": list(d.fixed_names), "n_dropped": int(d.n_dropped),
        "aliased": list(d.aliased),
        "blocks": [
            {"group": b.group, "coef_names": list(b.coef_names), "levels": _plain(b.levels), "codes": np.asarray(b.codes).tolist()}
            for b in d.blocks
        ],
        "fixed_effects": _frame_record(fit.fixed_effects),
        "variance_components": _frame_record(fit.variance_components),
        "group_effects": _frame_record(fit.group_effects),
        "fitted": _plain(fit.fitted()),
        "residuals": _plain(fit.residuals()),
    }


def _load_fit(path: Path) -> SavedFit:
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MultilevelError(f"'{path}' is not a saved fit (not valid JSON: {exc})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("kind") != "fit":
        raise MultilevelError(f"'{path}' is JSON but not a fit saved by multilevel")
    if record.get("version", 0) > VERSION:
        raise MultilevelError(f"'{path}' was written by a newer multilevel (format {record['version']}): upgrade")
    return SavedFit(record)


def _plain(values) -> list:
    """numpy values as JSON-safe Python values (NaN -> None)."""
    out = np.asarray(values).tolist()
    return [None if isinstance(v, float) and math.isnan(v) else v for v in out]


def _frame_record(frame: pd.DataFrame) -> dict:
    """A DataFrame as {index name, index, column -> values}, floats kept exactly (JSON's repr round-trips)."""
    return {
        "index_name": frame.index.name,
        "index": _plain(frame.index) if frame.index.name else None,
        "columns": {str(c): _plain(frame[c]) for c in frame.columns},
        "dtypes": {str(c): frame[c].dtype.kind for c in frame.columns},
    }


def _frame_from(record: dict) -> pd.DataFrame:
    frame = pd.DataFrame({c: v for c, v in record["columns"].items()})
    for column, kind in record["dtypes"].items():
        if kind == "f":
            frame[column] = frame[column].astype(float)
    if record["index_name"]:
        frame.index = pd.Index(record["index"], name=record["index_name"])
    return frame


# ---------------------------------------------------------------------------------------------- Bayesian
def _posterior_tree(post):
    """ArviZ's DataTree of the posterior, plus the model's data (constant_data) and what rebuilds it (attrs)."""
    import xarray as xr

    tree = post.to_arviz(log_likelihood=True)
    tree["constant_data"] = xr.DataTree(_data_set(post.design.frame))
    tree.attrs.update({
        "multilevel_format": FORMAT, "multilevel_version": VERSION, "formula": str(post.design.formula),
        "sampler": post.sampler, "seed": int(post.seed), "seconds": float(post.seconds),
        "priors": json.dumps(_priors_record(post.priors)), "warnings": json.dumps(list(post.warnings)),
    })
    return tree


def _data_set(frame: pd.DataFrame):
    """The model's data as an xarray Dataset over 'row': categoricals as codes with their levels in attrs."""
    import xarray as xr

    variables = {}
    for i, column in enumerate(frame.columns):
        values = frame[column]
        attrs = {"column": str(column)}
        if isinstance(values.dtype, pd.CategoricalDtype):
            attrs |= {"levels": json.dumps(_plain(values.cat.categories)), "ordered": int(values.cat.ordered)}
            data = values.cat.codes.to_numpy(np.int32)
        elif values.dtype.kind == "b":
            attrs["bool"] = 1
            data = values.to_numpy(np.int8)
        elif values.dtype.kind in "iuf":
            data = values.to_numpy()
        else:
            data = values.astype(str).to_numpy(str)
        variables[f"col{i}"] = xr.DataArray(data, dims=["row"], attrs=attrs)
    return xr.Dataset(variables)


def _frame_from_data_set(ds) -> pd.DataFrame:
    columns = {}
    for name in ds.data_vars:
        var = ds[name]
        values = var.values
        if "levels" in var.attrs:
            levels = json.loads(var.attrs["levels"])
            values = pd.Categorical.from_codes(values, categories=levels, ordered=bool(var.attrs["ordered"]))
        elif var.attrs.get("bool"):
            values = values.astype(bool)
        columns[var.attrs["column"]] = values
    return pd.DataFrame(columns)


def _priors_record(ps) -> dict:
    def one(p):
        return None if p is None else [p.family, list(p.params)]

    return {
        "intercept": one(ps.intercept), "b": {k: one(v) for k, v in ps.b.items()},
        "sd": [[i, c, one(p)] for (i, c), p in ps.sd.items()], "cor": [[i, one(p)] for i, p in ps.cor.items()],
        "sigma": one(ps.sigma),
    }


def _priors_from(record: dict):
    from .priors import Prior, PriorSet

    def one(x):
        return None if x is None else Prior(x[0], tuple(x[1]))

    return PriorSet(
        one(record["intercept"]), {k: one(v) for k, v in record["b"].items()},
        {(i, c): one(p) for i, c, p in record["sd"]}, {i: one(p) for i, p in record["cor"]}, one(record["sigma"]),
    )


def _load_posterior(path: Path):
    import xarray as xr

    from .model import Model
    from .posterior import Posterior, brms_coef

    try:
        tree = xr.open_datatree(path, engine="h5netcdf")
    except (OSError, ValueError) as exc:
        raise MultilevelError(f"'{path}' is not a readable netCDF file ({exc})") from None
    with tree:
        attrs = dict(tree.attrs)
        if attrs.get("multilevel_format") != FORMAT or "constant_data" not in tree.children:
            raise MultilevelError(f"'{path}' is netCDF but not a posterior saved by multilevel")
        frame = _frame_from_data_set(tree["constant_data"].to_dataset().load())
        posterior = tree["posterior"].to_dataset().load()
        stats = {k: v.values for k, v in tree["sample_stats"].to_dataset().load().data_vars.items()}
    model = Model(attrs["formula"], frame, weights="(weights)" if "(weights)" in frame else None,
                  offset="(offset)" if "(offset)" in frame else None)
    d = model.design
    beta = np.stack([posterior[f"b_{brms_coef(n)}"].values for n in d.fixed_names], axis=-1)
    sds, corrs = [], []
    for block in d.blocks:
        names = [brms_coef(c) for c in block.coef_names]
        sds.append(np.stack([posterior[f"sd_{block.group}__{n}"].values for n in names], axis=-1))
        corr = np.broadcast_to(np.eye(block.k), beta.shape[:2] + (block.k, block.k)).copy()
        for a in range(block.k):
            for c in range(a + 1, block.k):
                corr[..., a, c] = corr[..., c, a] = posterior[f"cor_{block.group}__{names[a]}__{names[c]}"].values
        corrs.append(corr)
    group_vars = [v for v in posterior.data_vars if v.startswith("r_")]
    b = [posterior[v].values for v in group_vars]
    sigma = posterior["sigma"].values if "sigma" in posterior else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the saved warnings are restored below, not raised twice
        post = Posterior(model, beta, sds, corrs, sigma, b, stats, _priors_from(json.loads(attrs["priors"])),
                         int(attrs["seed"]), float(attrs["seconds"]), str(attrs["sampler"]))
    post.warnings = json.loads(attrs["warnings"])
    return post
