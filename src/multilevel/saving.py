"""Saving results without pickle: frequentist fits as JSON, Bayesian fits as netCDF (ArviZ's DataTree), each
with the model's data and formula beside the numbers, so `multilevel.io.load` reopens a result that every
check, comparison and plot accepts — and a file from someone else is only data.

A fit's file holds theta (exact decimal), the optimiser's report, the data and the tables; loading
refits nothing: it recomputes the closed-form values at the stored theta, the same numbers bit for bit. A GLMM's
file adds its family, beta (and NB size) and the Hessian-based covariances; loading recomputes the conditional
modes at the stored theta and beta by PIRLS. An occupancy fit's file holds its two formulas, the visits' data,
the estimates and their covariance; an occupancy posterior's adds P(z = 1 | y) per draw and site to the DataTree.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import MultilevelError
from .kinds import Bayesian, Generalized, OccupancyResult, Study, require_result
from .partitioned import PartitionedDesign
from .scaling import term_scales

FORMAT = "multilevel"
VERSION = 2  # fits: 2 carries theta, the optimiser's report and the data (version 1 files still load)
POSTERIOR_VERSION = 1
OCCUPANCY_VERSION = 1  # occupancy fits (JSON) and posteriors (netCDF)
FIT_SUFFIXES = (".json",)
POSTERIOR_SUFFIXES = (".nc",)


def save(result, path, force: bool = False) -> None:
    """Write a fit to ``.json`` or a posterior to ``.nc``; an existing file is kept unless ``force=True``.
    The file is written beside the target and renamed into place, so a failure never leaves half a file."""
    require_result(result, "save's result")
    if isinstance(result, Study):
        return result.save(path, force=force)
    if isinstance(getattr(result, "design", None), PartitionedDesign):
        raise MultilevelError(
            "a result of partitioned data (Dask, Parquet) cannot be saved: the file holds the data rows, from which "
            "loading rebuilds the model. Save its tables instead (fit.to_frame() or posterior.summary(), e.g. .to_csv(...)), or fit a "
            "subsample in memory"
        )
    path = Path(path)
    bayesian = isinstance(result, Bayesian)
    suffixes = POSTERIOR_SUFFIXES if bayesian else FIT_SUFFIXES
    if path.suffix.lower() not in suffixes:
        kind = "a Bayesian result" if bayesian else "a frequentist fit"
        raise MultilevelError(f"{kind} is saved as {' or '.join(suffixes)}, not '{path.suffix or path.name}': rename the file")
    check_writable(path, force)
    occupancy = isinstance(result, OccupancyResult)
    if bayesian:
        tree = _occupancy_tree(result) if occupancy else _posterior_tree(result)
        write_atomically(path, lambda tmp: tree.to_netcdf(tmp, engine="h5netcdf"))
    else:
        record = occupancy_fit_record(result) if occupancy else fit_record(result)
        write_atomically(path, lambda tmp: tmp.write_text(json.dumps(record, indent=1, allow_nan=False)))


def save_record(record: dict, path, force: bool = False) -> None:
    """Write a plain record (a study's, say) as JSON, atomically as `save`; ``force`` overwrites."""
    path = Path(path)
    if path.suffix.lower() not in FIT_SUFFIXES:
        raise MultilevelError(f"this result is saved as .json, not '{path.suffix or path.name}': rename the file")
    check_writable(path, force)
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(record, indent=1, allow_nan=False)))


def write_atomically(path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` to a hidden file of its own beside `path`, renamed over it only when complete (removed on any
    error, Ctrl-C included), so `path` is either the old file or the whole new one."""
    path = Path(path)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)  # unique: writers may race
    os.close(handle)
    partial = Path(name)
    try:
        write(partial)
        os.chmod(partial, _file_mode(path))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _file_mode(path: Path) -> int:
    """The permissions the file gets: an overwritten file's own, else those of a new file under the umask (mkstemp's
    hidden file is private, 0600: a report renamed from it could not be read by anyone else)."""
    if path.exists():
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def check_writable(path, force: bool) -> None:
    """Refuse to overwrite an existing file unless asked; refuse a missing directory."""
    path = Path(path)
    if path.is_dir():
        raise MultilevelError(f"'{path}' is a folder: give a file name in it (e.g. '{path / 'report.html'}'); a folder is "
                              "never overwritten, not even with force=True (--force)")
    if path.exists() and not force:
        raise MultilevelError(f"'{path}' already exists: choose another name or overwrite it with force=True (--force)")
    if not path.parent.is_dir():
        raise MultilevelError(f"the folder '{path.parent}' does not exist: create it first")


def plain(values) -> list:
    """numpy values as JSON-safe Python values (NaN -> None)."""
    out = np.asarray(values).tolist()
    return [None if isinstance(v, float) and math.isnan(v) else v for v in out]


def encode_column(values: pd.Series) -> tuple[np.ndarray, dict]:
    """A data column as plain values and the attributes that restore its type: categoricals as codes with
    their levels and ordered flag, booleans as 0/1, numbers as they are, anything else as text."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        attrs = {"levels": json.dumps(plain(values.cat.categories)), "ordered": int(values.cat.ordered)}
        return values.cat.codes.to_numpy(np.int32), attrs
    if values.dtype.kind == "b":
        return values.to_numpy(np.int8), {"bool": 1}
    if values.dtype.kind in "iuf":
        return values.to_numpy(), {}
    return values.astype(str).to_numpy(str), {}


def fit_record(fit) -> dict:
    """Everything a fit's file holds, as JSON-ready values (a GLMM's also its family, beta and covariances)."""
    d = fit.design
    info = fit.info
    record = {
        "format": FORMAT, "version": VERSION, "kind": "fit", "formula": str(d.formula),
        "loglik": fit.loglik, "aic": fit.aic, "bic": fit.bic, "objective": fit.objective,
        "deviance": fit.deviance, "nobs": int(fit.nobs),
        "n_params": int(fit.n_params), "converged": bool(fit.converged), "is_singular": fit.is_singular,
        "warnings": list(fit.warnings), "fixed_names": list(d.fixed_names), "n_dropped": int(d.n_dropped),
        **weights_and_offset(d),
        "aliased": list(d.aliased),
        "blocks": [
            {"group": b.group, "coef_names": list(b.coef_names), "levels": plain(b.levels), "codes": np.asarray(b.codes).tolist()}
            for b in d.blocks
        ],
        "theta": plain(fit.theta),
        "term_scales": term_scales(fit.held.terms, len(d.blocks)),  # what theta's terms are held in (`scaling.random_columns`)
        "optimizer": {"fun": _finite_or_none(info.fun), "evaluations": int(info.evaluations), "message": info.message,
                      "warnings": list(info.warnings)},
        "data": [_column_record(name, d.frame[name]) for name in d.frame.columns],
        "fixed_effects": _frame_record(fit.fixed_effects),
        "variance_components": _frame_record(fit.variance_components),
        "group_effects": _frame_record(fit.group_effects),
        "fitted": plain(fit.fitted()),
    }
    if isinstance(fit, Generalized):
        record["glmm"] = _family_record(fit.model) | {
            "nAGQ": int(fit.nAGQ),
            "information": fit.information_kind, "beta": plain(fit.beta), "held_beta": plain(fit.mode.beta), "x": plain(info.x),
            "size": fit.nb_theta if fit.size_estimated else None, "vcov": [plain(r) for r in np.asarray(fit.vcov)],
            "parameter_covariance": None if fit.parameter_covariance is None else [plain(r) for r in fit.parameter_covariance],
            "log_size_se": _finite_or_none(fit.log_size_se),
        }
    else:
        record.update({"method": fit.method, "prior": fit.prior, "sigma": fit.sigma,
                       "penalized_objective": fit.penalized_objective, "residuals": plain(fit.residuals())})
    return record


def weights_and_offset(design) -> dict:
    """The columns holding the weights and the offset (a name the user gave, or '(weights)'/'(offset)' for values):
    a reload must use them as the fit did."""
    return {"weights": design.coding.weights, "offset": design.coding.offset}


def _finite_or_none(x: float):
    return float(x) if np.isfinite(x) else None


def _column_record(name, values: pd.Series) -> dict:
    data, attrs = encode_column(values)
    return {"name": str(name), "dtype": str(data.dtype), "values": plain(data), "attrs": attrs}


def _frame_record(frame: pd.DataFrame) -> dict:
    """A DataFrame as {index name, index, column -> values}, floats kept exactly (JSON's repr round-trips)."""
    return {
        "index_name": frame.index.name,
        "index": plain(frame.index) if frame.index.name else None,
        "columns": {str(c): plain(frame[c]) for c in frame.columns},
        "dtypes": {str(c): frame[c].dtype.kind for c in frame.columns},
    }


def _posterior_tree(post):
    """ArviZ's DataTree of the posterior, plus the model's data (constant_data) and what rebuilds it (attrs)."""
    import xarray as xr

    tree = post.to_arviz(log_likelihood=True)
    tree["constant_data"] = xr.DataTree(_data_set(post.design.frame))
    tree.attrs.update({
        "multilevel_format": FORMAT, "multilevel_version": POSTERIOR_VERSION, "formula": str(post.design.formula),
        "sampler": post.sampler, "seed": int(post.seed), "seconds": float(post.seconds),
        "priors": json.dumps(_priors_record(post.priors)), "warnings": json.dumps(list(post.warnings)),
        "finished": json.dumps(post.finished), "family": json.dumps(_family_record(post.model)),
        "columns": json.dumps(weights_and_offset(post.design)),
    })
    if post.held is not None:  # the coefficients predictions are formed of (`centring.held_draws`)
        held = xr.Dataset({"beta": (("chain", "draw", "coefficient"), post.held_beta)},
                          attrs={"scaling": json.dumps(post.held.record())})
        tree["held_coefficients"] = xr.DataTree(held)
    if post.importance_check is not None:
        table = post.importance_check
        tree.attrs["importance_check"] = json.dumps({"rows": {str(k): [_finite_or_none(v) for v in row]
                                                               for k, row in table.iterrows()},
                                                     "attrs": {k: _finite_or_none(v) for k, v in table.attrs.items()}})
    return tree


def _data_set(frame: pd.DataFrame):
    """The model's data as an xarray Dataset over 'row' (column types in each variable's attrs)."""
    import xarray as xr

    variables = {}
    for i, column in enumerate(frame.columns):
        data, attrs = encode_column(frame[column])
        variables[f"col{i}"] = xr.DataArray(data, dims=["row"], attrs={"column": str(column)} | attrs)
    return xr.Dataset(variables)


def _family_record(model) -> dict | None:
    """A GLMM's family as plain values (name, link, a size fixed by the user); None for a Gaussian model."""
    if model.gaussian:
        return None
    family = model.family
    return {"family": family.name, "link": family.link.name, "dispersion": family.dispersion}


def _priors_record(ps) -> dict:
    def one(p):
        return None if p is None else [p.family, list(p.params)]

    return {
        "intercept": one(ps.intercept), "b": {k: one(v) for k, v in ps.b.items()},
        "sd": [[i, c, one(p)] for (i, c), p in ps.sd.items()], "cor": [[i, one(p)] for i, p in ps.cor.items()],
        "sigma": one(ps.sigma), "shape": one(ps.shape),
    }


def occupancy_model_record(model) -> dict:
    """What rebuilds an occupancy model besides its data: the two formulas and the site and response columns."""
    return {"occupancy": model.occupancy_formula, "detection": model.detection_formula, "site": model.site,
            "response": model.response}


def occupancy_fit_record(fit) -> dict:
    """An occupancy ML fit's file: model, data (the visits made), estimates and their covariance; loading
    recomputes every table from these. The coefficient table is kept too, for readers of the file."""
    return {
        "format": FORMAT, "version": OCCUPANCY_VERSION, "kind": "occupancy fit", **occupancy_model_record(fit.model),
        "data": [_column_record(name, fit.model.data[name]) for name in fit.model.data.columns],
        "params": plain(fit.params), "vcov": [plain(row) for row in fit.vcov], "loglik": fit.loglik,
        "converged": bool(fit.converged), "message": fit.message,
        "sigma": None if fit.sigma is None else float(fit.sigma), "sigma_se": _finite_or_none(fit.sigma_se),
        "nAGQ": int(fit.nAGQ), "warnings": list(fit.warnings), "fixed_effects": _frame_record(fit.fixed_effects),
        "held": None if fit.held is None else {"params": plain(fit.held.params), "vcov": [plain(r) for r in fit.held.vcov]},
    }


def _occupancy_tree(post):
    """An occupancy posterior's DataTree (`to_arviz`), plus the model's data, P(z = 1 | y, draw) per site
    (`conditional_occupancy`) and what rebuilds the model (attrs)."""
    import xarray as xr

    tree = post.to_arviz()
    tree["constant_data"] = xr.DataTree(_data_set(post.model.data))
    tree["conditional_occupancy"] = xr.DataTree(xr.Dataset({"w": (("chain", "draw", "site"), post.w)}))
    if post.held is not None:  # the draws of the held columns' coefficients, which predictions are formed of
        tree["held_coefficients"] = xr.DataTree(xr.Dataset({"draws": (("chain", "draw", "coefficient"), post.held[1])}))
    tree.attrs.update({
        "multilevel_format": FORMAT, "multilevel_version": OCCUPANCY_VERSION, "kind": "occupancy posterior",
        **occupancy_model_record(post.model), "sampler": post.sampler, "seed": int(post.seed),
        "seconds": float(post.seconds), "prior_variance": float(post.prior_variance),
        "warnings": json.dumps(list(post.warnings)), "finished": json.dumps(post.finished),
    })
    return tree
