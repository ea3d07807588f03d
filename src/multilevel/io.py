"""Saving and loading results without pickle: frequentist fits as JSON, Bayesian fits as netCDF (ArviZ's
DataTree with the model's data and formula beside the draws), so a file from someone else is only data.
Writing lives in `multilevel.saving` (results call it); this module reads, and rebuilds real results.

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
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from . import families
from .errors import MultilevelError
from .glmm import restore_glmm
from .lmm import fit_at
from .model import Model
from .names import fixed_name, variance_names
from .occupancy import Occupancy
from .occupancy_fit import OccupancyFit
from .occupancy_posterior import OccupancyPosterior
from .optimize import OptimumInfo
from .posterior import Posterior
from .priors import Prior, PriorSet
from .saved_fit import SavedFit
from .scaling import Scaling, random_columns, term_scales
from .stored_formula import check_stored_formula
from .study_result import StudyResult
from .saving import (FIT_SUFFIXES, FORMAT, OCCUPANCY_VERSION, POSTERIOR_SUFFIXES, POSTERIOR_VERSION, VERSION,
                     check_writable, save)

__all__ = ["load", "save", "check_writable"]


def load(path):
    """Read a result written by `save`: an `LmmFit`, `GlmmFit` or `OccupancyFit` from JSON (a `SavedFit` from
    files of version 1, which hold no data; a `StudyResult` from a study's file), a `Posterior` or
    `OccupancyPosterior` from netCDF."""
    path = Path(path)
    if not path.is_file():
        raise MultilevelError(f"no such file: '{path}'")
    suffix = path.suffix.lower()
    if suffix in FIT_SUFFIXES:
        return _load_fit(path)
    if suffix in POSTERIOR_SUFFIXES:
        return _load_posterior(path)
    raise MultilevelError(f"'{path}' is not a saved result: expected a .json (fit) or .nc (posterior) file")


# ---------------------------------------------------------------------------------------------- frequentist
def _load_fit(path: Path):
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MultilevelError(f"'{path}' is not a saved fit (not valid JSON: {exc})") from None
    if isinstance(record, dict) and record.get("format") == FORMAT and record.get("kind") == "study":
        return StudyResult.from_record(record)
    if isinstance(record, dict) and record.get("format") == FORMAT and record.get("kind") == "occupancy fit":
        _check_version(path, record.get("version", 0), OCCUPANCY_VERSION)
        with _damaged(path, "occupancy fit"):
            return _occupancy_fit(record)
    if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("kind") != "fit":
        raise MultilevelError(f"'{path}' is JSON but not a fit saved by multilevel")
    _check_version(path, record.get("version", 0), VERSION)
    with _damaged(path, "fit"):
        return SavedFit(record) if "data" not in record else _rebuilt_fit(record)


def _check_version(path: Path, version, newest: int) -> None:
    if not isinstance(version, int) or version > newest:
        raise MultilevelError(f"'{path}' was written by a newer multilevel (format {version!r}): upgrade")


@contextmanager
def _damaged(path: Path, kind: str):
    """Any structural failure while reading a file (a missing key, a wrong type or shape) in our words."""
    try:
        yield
    except MultilevelError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OSError) as exc:
        raise MultilevelError(f"'{path}' is a damaged or altered {kind} file ({type(exc).__name__}: {exc})") from None


def _rebuilt_fit(record: dict):
    """The fit at its stored theta on its stored data: the closed-form values recomputed, nothing re-optimised."""
    frame = _frame(record["data"])
    model = _model(record["formula"], frame, _family(record.get("glmm")),
                   {k: record[k] for k in ("weights", "offset")} if "weights" in record else None)
    model.design = replace(model.design, n_dropped=int(record["n_dropped"]))
    opt = record["optimizer"]
    theta = np.asarray(record["theta"], dtype=float)
    if theta.shape != (model.engine.n_theta,):
        raise MultilevelError(f"the saved fit's theta has {theta.size} values but its formula needs {model.engine.n_theta}")
    scales = term_scales(random_columns(model.design.blocks), len(model.design.blocks))
    if record.get("term_scales", [None] * len(scales)) != scales:
        raise MultilevelError(f"the saved fit's theta refers to random-slope covariates held at scales "
                              f"{record.get('term_scales', 'as given')}, but this version holds them at {scales}: the "
                              "file is damaged or was written by an older multilevel (refit the model from its data)")
    info = OptimumInfo(theta, np.nan if opt["fun"] is None else opt["fun"], opt["evaluations"], opt["message"],
                       warnings=list(opt["warnings"]))
    if "glmm" in record:
        fit = _rebuilt_glmm(model, record["glmm"], theta, info, float(record["objective"]))
    else:
        fit = fit_at(model, record["method"], record["prior"], info, warn=False)
    fit.warnings = list(record["warnings"])
    return fit


def _matrix(rows) -> np.ndarray | None:
    """A saved matrix (rows of numbers, None for NaN) as floats; None stays None."""
    return None if rows is None else np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float)


def _rebuilt_glmm(model: Model, g: dict, theta: np.ndarray, info: OptimumInfo, objective: float):
    """A GLMM fit at its stored theta, beta and NB size, with its stored covariances (NaN for a saved null)."""
    beta = np.asarray(g["beta"], dtype=float)
    held_beta = np.asarray(g["held_beta"], dtype=float) if "held_beta" in g else None  # files before it: from beta
    if beta.shape != (model.design.p,):
        raise MultilevelError(f"the saved fit has {beta.size} fixed effects but its formula and data give {model.design.p}")
    if held_beta is not None and held_beta.shape != beta.shape:
        raise MultilevelError(f"the saved fit's held coefficients are {held_beta.size} for {beta.size} fixed effects: the "
                              "file is damaged or altered")
    info.x = np.asarray(g["x"], dtype=float)
    size = None if g["size"] is None else float(g["size"])
    return restore_glmm(model, int(g["nAGQ"]), str(g["information"]), theta, beta, size, info, objective,
                        _matrix(g["vcov"]), _matrix(g["parameter_covariance"]),
                        np.nan if g["log_size_se"] is None else float(g["log_size_se"]), held_beta)


def _occupancy_model(spec: dict, frame: pd.DataFrame) -> Occupancy:
    """The occupancy model of a saved result: its two formulas checked as data (never code), then rebuilt."""
    for part in ("occupancy", "detection"):
        check_stored_formula(spec[part], frame.columns)
    return Occupancy(spec["occupancy"], spec["detection"], frame, site=str(spec["site"]), response=str(spec["response"]))


def _occupancy_fit(record: dict) -> OccupancyFit:
    """An occupancy fit at its stored estimates and covariance: every table recomputed, nothing re-optimised."""
    model = _occupancy_model(record, _frame(record["data"]))
    k = len(model.parameter_names)
    params, vcov = np.asarray(record["params"], dtype=float), _matrix(record["vcov"])
    if params.shape != (k,) or vcov.shape != (k, k) or (record["sigma"] is None) != (model.random is None):
        raise MultilevelError(f"the saved occupancy fit's estimates do not match its formulas ({k} coefficients"
                              f"{', a random intercept' if model.random else ''}): the file is damaged or altered")
    sigma = None if record["sigma"] is None else float(record["sigma"])
    warnings = [str(w) for w in record["warnings"]]
    failed = [] if record["converged"] else warnings or ["saved as not converged"]  # what made the fit not converge
    info = OptimumInfo(params, -2 * float(record["loglik"]), 0, str(record["message"]), warnings=failed)
    fit = OccupancyFit(model, params, vcov, float(record["loglik"]), info, sigma=sigma, sigma_se=np.nan if record["sigma_se"] is None else float(record["sigma_se"]),
                       n_agq=int(record["nAGQ"]))
    if record.get("held") is not None:  # the coefficients of the columns it was fitted in (files before: none)
        held = model.held_model()[0]
        fit.held = OccupancyFit(held, np.asarray(record["held"]["params"], dtype=float), _matrix(record["held"]["vcov"]),
                                fit.loglik, info, sigma=sigma, sigma_se=fit.sigma_se, n_agq=fit.nAGQ)
        if fit.held.params.shape != (k,) or fit.held.vcov.shape != (k, k) or held is model:
            raise MultilevelError("the saved occupancy fit's held coefficients do not match its data: the file is damaged "
                                  "or altered")
    fit.warnings = warnings
    return fit


def _frame(columns: list) -> pd.DataFrame:
    """A saved data table (see `saving._column_record`) as a DataFrame of plain types."""
    return pd.DataFrame({str(c["name"]): _decode(_column(c), c["attrs"]) for c in columns})


def _model(formula: str, frame: pd.DataFrame, family=None, columns: dict | None = None) -> Model:
    """The model of a saved result, from its formula (checked to hold nothing but columns, operators and
    whitelisted transforms: never code), data, the columns of weights and offset (files before they were saved:
    only values given as arrays, saved as '(weights)'/'(offset)') and family."""
    check_stored_formula(formula, frame.columns)
    if columns is None:
        columns = {k: f"({k})" if f"({k})" in frame else None for k in ("weights", "offset")}
    for what in ("weights", "offset"):
        if columns.get(what) is not None and columns[what] not in frame.columns:
            raise MultilevelError(f"the saved {what} column {columns[what]!r} is not in the file's data: the file is "
                                  "damaged or altered")
    return Model(formula, frame, weights=columns.get("weights"), offset=columns.get("offset"), family=family)


def _family(g: dict | None):
    """A saved GLMM's family (name, link, a size fixed by the user), built from plain values; None: Gaussian."""
    if g is None:
        return None
    family = families.parse(f"{g['family']}({g['link']})")
    return family if g["dispersion"] is None else family.with_dispersion(float(g["dispersion"]))


def _column(record: dict) -> np.ndarray:
    """A saved column's values as an array of a plain type (numbers, booleans, text; never objects)."""
    dtype = np.dtype(record["dtype"])
    if dtype.kind not in "biufU":
        raise MultilevelError(f"column '{record['name']}' has type '{dtype}', which multilevel never writes")
    return np.asarray(record["values"], dtype=dtype) if record["values"] else np.zeros(0, dtype)


def _decode(values: np.ndarray, attrs: dict):
    """A saved column back to its type (see `saving.encode_column`)."""
    if "levels" in attrs:
        return pd.Categorical.from_codes(values, categories=json.loads(attrs["levels"]), ordered=bool(attrs["ordered"]))
    if attrs.get("bool"):
        return values.astype(bool)
    return values


# ---------------------------------------------------------------------------------------------- Bayesian
def _priors_from(record: dict) -> PriorSet:
    def one(x):
        return None if x is None else Prior(x[0], tuple(x[1]))

    return PriorSet(
        one(record["intercept"]), {k: one(v) for k, v in record["b"].items()},
        {(i, c): one(p) for i, c, p in record["sd"]}, {i: one(p) for i, p in record["cor"]}, one(record["sigma"]),
        one(record.get("shape")),
    )


def _load_posterior(path: Path) -> Posterior | OccupancyPosterior:
    import xarray as xr

    try:
        tree = xr.open_datatree(path, engine="h5netcdf")
    except (OSError, ValueError) as exc:
        raise MultilevelError(f"'{path}' is not a readable netCDF file ({exc})") from None
    with tree, _damaged(path, "posterior"):
        attrs = dict(tree.attrs)
        if attrs.get("multilevel_format") != FORMAT or "constant_data" not in tree.children:
            raise MultilevelError(f"'{path}' is netCDF but not a posterior saved by multilevel")
        occupancy = attrs.get("kind") == "occupancy posterior"
        if int(attrs.get("multilevel_version", 0)) > (OCCUPANCY_VERSION if occupancy else POSTERIOR_VERSION):
            raise MultilevelError(f"'{path}' was written by a newer multilevel: upgrade")
        names = ["constant_data", "posterior", "sample_stats"] + (["log_likelihood", "conditional_occupancy"] if occupancy else [])
        names += ["held_coefficients"] * ("held_coefficients" in tree.children)
        groups = {name: tree[name].to_dataset().load() for name in names}
    data = groups["constant_data"]
    stats = {k: v.values for k, v in groups["sample_stats"].data_vars.items()}
    with _damaged(path, "posterior"):
        frame = pd.DataFrame({data[v].attrs["column"]: _decode(data[v].values, data[v].attrs) for v in data.data_vars})
        if occupancy:
            return _occupancy_posterior(attrs, frame, groups, stats)
        return _posterior(attrs, frame, groups["posterior"], stats, groups.get("held_coefficients"))


def _occupancy_posterior(attrs: dict, frame: pd.DataFrame, groups: dict, stats: dict) -> OccupancyPosterior:
    """The occupancy posterior of a saved file, its arrays checked against its own formulas and data."""
    model = _occupancy_model(attrs, frame)
    posterior = groups["posterior"]
    expected = {*model.parameter_names, "z"} | ({model.sd_name, f"r_{model.random[0].group}"} if model.random else set())
    if set(posterior.data_vars) != expected:
        raise MultilevelError(f"the saved draws are of {sorted(posterior.data_vars)} but the file's formulas have "
                              f"{sorted(expected)}: the file is damaged or altered")
    draws = np.stack([posterior[n].values for n in model.parameter_names], axis=-1)
    sd = posterior[model.sd_name].values if model.random else None
    b = posterior[f"r_{model.random[0].group}"].values if model.random else None
    z, w, site_ll = posterior["z"].values, groups["conditional_occupancy"]["w"].values, groups["log_likelihood"]["y"].values
    per_site = draws.shape[:2] + (len(model.sites),)
    if z.shape != per_site or w.shape != per_site or site_ll.shape != per_site or (
            b is not None and b.shape != draws.shape[:2] + (model.random[1].m,)):
        raise MultilevelError(f"the saved draws per site have shapes {z.shape}, {w.shape}, {site_ll.shape} but the file's "
                              f"formulas and data need {per_site}: the file is damaged or altered")
    post = OccupancyPosterior(model, draws, sd, b, z, w, site_ll, stats, int(attrs["seed"]), float(attrs["seconds"]),
                              float(attrs["prior_variance"]), str(attrs["sampler"]))
    post.warnings = [str(x) for x in json.loads(attrs["warnings"])]
    post.finished = _finished(attrs)
    if "held_coefficients" in groups:  # the draws of the held columns' coefficients (files before them: none)
        held, held_draws = model.held_model(scaled=False)[0], groups["held_coefficients"]["draws"].values
        if held is model or held_draws.shape != draws.shape or not np.all(np.isfinite(held_draws)):
            raise MultilevelError("the saved occupancy posterior's held coefficients do not match its data: the file is "
                                  "damaged or altered")
        post.held = (held, held_draws)
    return post


def _finished(attrs: dict) -> list[int] | None:
    """The draws per chain of an interrupted run (None for a full one, and in files from before the mark)."""
    finished = json.loads(attrs.get("finished", "null"))
    if finished is not None and not (isinstance(finished, list) and all(type(c) is int and c >= 0 for c in finished)):
        raise MultilevelError(f"the saved 'finished' mark {finished!r} is not a list of draw counts: the file is damaged or altered")
    return finished


def _posterior(attrs: dict, frame: pd.DataFrame, posterior, stats: dict, held=None) -> Posterior:
    """The posterior of a saved file, its arrays checked against its own formula (`held`: the held coefficients'
    draws, which files before them lack)."""
    model = _model(attrs["formula"], frame, _family(json.loads(attrs.get("family", "null"))),
                   json.loads(attrs["columns"]) if "columns" in attrs else None)
    d = model.design
    beta = np.stack([posterior[fixed_name(n)].values for n in d.fixed_names], axis=-1)
    sds, corrs = [], []
    for block in d.blocks:
        sd_names, cor_entries = variance_names(block)
        sds.append(np.stack([posterior[n].values for n in sd_names], axis=-1))
        corr = np.broadcast_to(np.eye(block.k), beta.shape[:2] + (block.k, block.k)).copy()
        for a, c, name in cor_entries:
            corr[..., a, c] = corr[..., c, a] = posterior[name].values
        corrs.append(corr)
    b = [posterior[v].values for v in posterior.data_vars if v.startswith("r_")]
    expected = [beta.shape[:2] + (block.m, block.k) for block in d.blocks]
    if [x.shape for x in b] != expected:
        raise MultilevelError(f"the saved group effects have shapes {[x.shape for x in b]} but the file's formula and "
                              f"data need {expected}: the file is damaged or altered")
    sigma = posterior["sigma"].values if "sigma" in posterior else None
    shape = posterior["shape"].values if "shape" in posterior else None
    post = Posterior(model, beta, sds, corrs, sigma, b, stats, _priors_from(json.loads(attrs["priors"])),
                     int(attrs["seed"]), float(attrs["seconds"]), str(attrs["sampler"]), json.loads(attrs["warnings"]),
                     shape=shape, finished=_finished(attrs), held=_held_draws(held, beta.shape))
    post.importance_check = _importance_check(attrs)
    return post


def _held_draws(held, shape: tuple) -> tuple[np.ndarray, Scaling] | None:
    """A posterior's held coefficients and their columns' scaling (None for a file without them), checked."""
    if held is None:
        return None
    beta = held["beta"].values
    if beta.shape != shape or not np.all(np.isfinite(beta)):
        raise MultilevelError(f"the saved held coefficients (shape {beta.shape}, for draws of shape {shape}) are not finite "
                              "draws of that shape: the file is damaged or altered")
    return beta, Scaling.from_record(json.loads(held.attrs["scaling"]), shape[-1])


def _importance_check(attrs: dict) -> pd.DataFrame | None:
    """A Laplace posterior's importance-sampling check table (None if the file has none)."""
    if "importance_check" not in attrs:
        return None
    record = json.loads(attrs["importance_check"])
    rows = {k: [np.nan if v is None else float(v) for v in row] for k, row in record["rows"].items()}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["bias", "mcse"]).rename_axis("parameter")
    table.attrs.update({k: np.nan if v is None else v for k, v in record["attrs"].items()})
    return table
