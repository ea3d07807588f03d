"""The `multilevel` command: fit, occupancy, compare, report, list data sets, run the demo.

User errors (missing file, bad formula, unknown column, an output that exists without --force) print one
line to stderr and exit with code 2; progress bars appear only when stderr is a terminal.
"""

from __future__ import annotations

import os
import sys
import warnings
from functools import wraps
from pathlib import Path

import click
import pandas as pd

from .data import EXACT_FLOATS
from .errors import MultilevelError
from .kinds import is_bayesian

USER_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C
METHODS = ("reml", "ml", "bayes", "all")


def _user_errors(command):
    """Turn MultilevelError and file errors into one line on stderr and exit code 2, Ctrl-C into one line and
    exit code 130 (no traceback)."""

    @wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly, as Unix tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            sys.exit(0)
        except (MultilevelError, OSError) as exc:
            message = str(exc).strip().splitlines()
            click.echo(f"error: {' '.join(line.strip() for line in message)}", err=True)
            sys.exit(USER_ERROR)
        except KeyboardInterrupt:  # outputs are written atomically, after the fits
            click.echo("interrupted: no output file is left half-written", err=True)
            sys.exit(INTERRUPTED)

    return run


def _show_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"warning: {message}", err=True)


@click.group()
@click.version_option(package_name="multilevel")
def main():
    """Hierarchical linear models: lme4-exact ML/REML fits and Bayesian fits, side by side."""
    warnings.showwarning = _show_warning
    warnings.filterwarnings("ignore", module="arviz_stats")  # ArviZ's Pareto-k note is shown in the report


# ---------------------------------------------------------------------------------------------- reading data
def read_data(path: str) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame ('NA' and empty cells are missing, as R writes them), or a
    shipped data set by name (see `multilevel datasets`)."""
    from . import datasets as shipped

    file = Path(path)
    if not file.is_file():
        if path.lower() in {n.lower() for n in shipped.list()}:
            return shipped.load(path)
        raise MultilevelError(f"no such data file: '{path}' (nor a shipped data set; see 'multilevel datasets')")
    suffix = file.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(file)
        if suffix in (".csv", ".txt", ".tsv"):
            return pd.read_csv(file, sep="\t" if suffix == ".tsv" else ",", na_values=["NA"], **EXACT_FLOATS)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MultilevelError(f"cannot read '{path}': {exc}") from None
    raise MultilevelError(f"'{path}': data must be a .csv, .tsv or .parquet file")


def _sampling_options(command):
    for option in reversed([
        click.option("--chains", default=4, show_default=True, help="Bayesian: number of chains."),
        click.option("--draws", default=1000, show_default=True, help="Bayesian: draws per chain after warmup."),
        click.option("--warmup", default=1000, show_default=True, help="Bayesian: warmup iterations per chain."),
        click.option("--seed", default=1, show_default=True, help="Bayesian: random seed."),
        click.option("--cores", default=1, show_default=True, help="Bayesian: processes to run chains in."),
    ]):
        command = option(command)
    return command


def _fit_all(model, method: str, sampling: dict, nagq: int | None = None) -> dict:
    """method tag ('reml', 'ml', 'bayes') -> result, for the requested method(s); nagq for GLMMs."""
    out = {}
    for tag in _tags(method, model.gaussian):
        if tag == "bayes":
            out[tag] = _whole(model.sample(progress=None, **sampling))
        else:
            out[tag] = model.fit(method=tag.upper(), **({} if nagq is None else {"nAGQ": nagq}))
    return out


def _whole(post):
    """The posterior of a full run; Ctrl-C (a partial posterior) stops the command, which writes nothing."""
    if post.partial:
        raise KeyboardInterrupt
    return post


def _tags(method: str, gaussian: bool = True) -> list[str]:
    """The result tags of a --method: 'all' is REML, ML and Bayes (ML and Bayes for a GLMM, which has no REML)."""
    if method != "all":
        return [method]
    return ["reml", "ml", "bayes"] if gaussian else ["ml", "bayes"]


def _save_paths(save: str, tags: list[str]) -> dict:
    """One result: the path as given. Several: '<stem>-<tag>.json' or '.nc' beside it."""
    if len(tags) == 1:
        return {tags[0]: save}
    base = Path(save)
    stem = base.with_suffix("") if base.suffix.lower() in (".json", ".nc") else base
    return {tag: f"{stem}-{tag}{'.nc' if tag == 'bayes' else '.json'}" for tag in tags}


def _outputs(save: str | None, tags: list[str], report_path: str | None, force: bool) -> dict:
    """The save path of each result tag; every output is checked writable before the (possibly long) fits."""
    from . import io

    outputs = _save_paths(save, tags) if save else {}
    for path in list(outputs.values()) + ([report_path] if report_path else []):
        io.check_writable(path, force)
    return outputs


def _show_and_write(results: dict, outputs: dict, report_path: str | None, force: bool, text, together=None) -> None:
    """Print each result (as `text(result)`) and, given `together` and several results, the table it makes of them
    (label -> result) side by side; save those given a path, and write the report if asked."""
    from . import io
    from .html_report import report
    from .plots import label

    for r in results.values():
        click.echo(f"== {label(r)} ==")
        click.echo(text(r))
        click.echo()
    if together is not None and len(results) > 1:
        click.echo("== side by side: estimate and standard error (posterior mean and SD) ==")
        click.echo(together({label(r): r for r in results.values()}).to_string())
        click.echo()
    for tag, path in outputs.items():
        io.save(results[tag], path, force=force)
        click.echo(f"saved {path}")
    if report_path:
        report(list(results.values()), report_path, force=force)
        click.echo(f"report {report_path}")


# ---------------------------------------------------------------------------------------------- commands
@main.command()
@click.argument("data")
@click.argument("formula")
@click.option("--method", type=click.Choice(METHODS, case_sensitive=False), default=None,
              help="reml (default), ml, bayes or all; binomial, Poisson and negative-binomial models: ml (default), "
                   "bayes or all.")
@click.option("--family", default="gaussian", show_default=True,
              help="Response family: gaussian, binomial, binomial(probit), poisson, negbinomial ...")
@click.option("--nagq", type=int, default=None, help="GLMMs: quadrature nodes (1 = Laplace, the default; 0 = fast).")
@_sampling_options
@click.option("--sampler", type=click.Choice(("auto", "nuts", "imh", "gibbs", "crossed-gibbs", "laplace"),
                                          case_sensitive=False),
              default="auto", show_default=True,
              help="Bayes: auto (IMH where its check passes, else NUTS), NUTS (exact), IMH (exact; GLMMs with one "
                   "scalar term), Gibbs, crossed-gibbs (Gaussian, scalar random terms: linear in the rows), or for "
                   "GLMMs the approximate Laplace-marginalised NUTS.")
@click.option("--report", "report_path", help="Write an HTML report here.")
@click.option("--save", help="Save the result: out.json (ML/REML) or out.nc (Bayes); with --method all, a stem.")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@_user_errors
def fit(data, formula, method, family, nagq, chains, draws, warmup, seed, cores, sampler, report_path, save, force):
    """Fit FORMULA (lme4/brms syntax) to DATA (.csv or .parquet) and print the results."""
    from .model import Model

    model = Model(formula, read_data(data), family=family)
    method = (method or ("reml" if model.gaussian else "ml")).lower()
    if not model.gaussian and method == "reml":
        raise MultilevelError(f"a {model.family.name} model has no REML fit: use --method ml, bayes or all")
    outputs = _outputs(save, _tags(method, model.gaussian), report_path, force)
    sampling = {"chains": chains, "draws": draws, "warmup": warmup, "seed": seed, "cores": cores,
                "sampler": sampler.lower()}
    results = _fit_all(model, method, sampling, nagq)
    _show_and_write(results, outputs, report_path, force, lambda r: repr(r) if is_bayesian(r) else r.summary())


@main.command("occupancy")
@click.argument("data")
@click.option("--occupancy", "occupancy_formula", default="~ 1", show_default=True,
              help="Occupancy (psi) formula of site covariates, e.g. '~ forest + (1 | region)'.")
@click.option("--detection", "detection_formula", default="~ 1", show_default=True,
              help="Detection (p) formula of survey covariates, e.g. '~ date + I(date**2)'.")
@click.option("--site", default="site", show_default=True, help="Column naming the site of each survey row.")
@click.option("--response", default="y", show_default=True, help="Column of detections (0/1; missing: visit not made).")
@click.option("--method", type=click.Choice(("ml", "bayes", "all"), case_sensitive=False), default="ml", show_default=True,
              help="ml (maximum likelihood), bayes (NUTS, spOccupancy's priors) or all (both).")
@click.option("--nagq", type=int, default=1, show_default=True,
              help="ML with a random intercept: quadrature nodes (1 = Laplace).")
@click.option("--sampler", type=click.Choice(("nuts", "gibbs"), case_sensitive=False), default="nuts", show_default=True,
              help="Bayes: NUTS (occupancy summed out) or Pólya-Gamma Gibbs (spOccupancy's sampler).")
@_sampling_options
@click.option("--report", "report_path", help="Write an HTML report here.")
@click.option("--save", help="Save the result: out.json (ML) or out.nc (Bayes); with --method all, a stem.")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@_user_errors
def occupancy_command(data, occupancy_formula, detection_formula, site, response, method, nagq, sampler, chains, draws,
                      warmup, seed, cores, report_path, save, force):
    """Fit a single-season occupancy model to DATA (one row per site x visit) and print the results."""
    from .html_report import occupancy_comparison
    from .occupancy import Occupancy

    model = Occupancy(occupancy_formula, detection_formula, read_data(data), site=site, response=response)
    tags = ["ml", "bayes"] if method.lower() == "all" else [method.lower()]
    outputs = _outputs(save, tags, report_path, force)
    results = {tag: _whole(model.sample(chains=chains, draws=draws, warmup=warmup, seed=seed, cores=cores, progress=None,
                                        sampler=sampler.lower()))
               if tag == "bayes" else model.fit(n_agq=nagq) for tag in tags}
    _show_and_write(results, outputs, report_path, force, repr, together=occupancy_comparison)


@main.command()
@click.argument("data")
@click.argument("formulas", nargs=-1, required=True)
@click.option("--method", type=click.Choice(("lrt", "loo"), case_sensitive=False), default="lrt", show_default=True,
              help="lrt: likelihood-ratio tests of nested ML fits (as lme4's anova); loo: PSIS-LOO of Bayesian fits.")
@click.option("--family", default="gaussian", show_default=True,
              help="Response family of every model: gaussian, binomial, binomial(probit), poisson, negbinomial ...")
@click.option("--nagq", type=int, default=None, help="GLMMs, lrt: quadrature nodes (1 = Laplace, the default).")
@_sampling_options
@_user_errors
def compare(data, formulas, method, family, nagq, chains, draws, warmup, seed, cores):
    """Compare two or more FORMULAS fitted to the same DATA."""
    from .model import Model

    if len(formulas) < 2:
        raise MultilevelError("compare needs two or more formulas")
    frame = read_data(data)
    models = [Model(f, frame, family=family) for f in formulas]
    names = [f"model{i + 1}" for i in range(len(models))]
    for name, f in zip(names, formulas):
        click.echo(f"{name}: {f}")
    if method.lower() == "lrt":
        from .anova import anova

        table = anova(*[m.fit(method="ML", **({} if nagq is None else {"nAGQ": nagq})) for m in models], names=names)
    else:
        import arviz_stats

        posts = [_whole(m.sample(chains=chains, draws=draws, warmup=warmup, seed=seed, cores=cores, progress=None))
                 for m in models]
        table = arviz_stats.compare({n: p.to_arviz() for n, p in zip(names, posts)})
    click.echo(table.to_string())


@main.command("study")
@click.argument("data")
@click.argument("formula")
@click.option("--truth", "truth", multiple=True, metavar="NAME=VALUE",
              help="A true parameter value by brms or lme4 name (repeat); none: the REML estimates on DATA.")
@click.option("--methods", default="ML,REML,zero-avoiding", show_default=True,
              help="Comma-separated methods of mlv.methods, plus 'Bayes median'.")
@click.option("--replicates", default=100, show_default=True, help="Data sets to simulate.")
@click.option("--seed", default=1, show_default=True, help="Random seed (the result does not depend on --cores).")
@click.option("--cores", default=1, show_default=True, help="Processes to run replicates in.")
@click.option("--progress/--no-progress", default=None, help="A progress bar on stderr (default: if it is a terminal).")
@click.option("--save", help="Save the study as .json (reload with multilevel.load); after Ctrl-C, the finished replicates.")
@click.option("--csv", "csv_path", help="Write the scores table as CSV.")
@click.option("--report", "report_path", help="Write an HTML report of the study here.")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@_user_errors
def study_command(data, formula, truth, methods, replicates, seed, cores, progress, save, csv_path, report_path, force):
    """Simulate REPLICATES data sets on DATA's design from a known truth, fit every method, score them."""
    from .io import check_writable
    from .model import Model
    from .study import study
    from .html_report import report

    for path in [p for p in (save, csv_path, report_path) if p]:
        check_writable(path, force)
    values = dict(_name_value(item) for item in truth) or None
    result = study(Model(formula, read_data(data)), values, [m.strip() for m in methods.split(",")], replicates=replicates,
                   seed=seed, cores=cores, progress=progress)
    click.echo(repr(result))
    if save:
        result.save(save, force=force)
        click.echo(f"saved {save}")
    if csv_path:
        result.table.to_csv(csv_path, index=False)
        click.echo(f"table {csv_path}")
    if report_path:
        report({"study": result}, report_path, force=force)
        click.echo(f"report {report_path}")


def _name_value(item: str) -> tuple[str, float]:
    """'sd_g__Intercept=0.5' -> ('sd_g__Intercept', 0.5)."""
    name, sep, value = item.partition("=")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise MultilevelError(f"--truth takes NAME=VALUE with a number, e.g. sigma=1, not {item!r}") from None


@main.command("report")
@click.argument("saved", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="The HTML file to write.")
@click.option("--title", help="Title of the report.")
@click.option("--force", is_flag=True, help="Overwrite an existing report.")
@_user_errors
def report_command(saved, output, title, force):
    """Write one HTML report of SAVED results (.json fits and .nc posteriors)."""
    from .io import check_writable, load
    from .html_report import report

    check_writable(output, force)
    results = [load(path) for path in saved]
    report(results, output, title=title, force=force)
    click.echo(f"report {output}")


@main.command()
@_user_errors
def datasets():
    """List the shipped data sets (each name can stand for DATA, e.g. 'multilevel fit sleepstudy ...')."""
    from . import datasets as shipped

    for name in shipped.list():
        frame = shipped.load(name)
        click.echo(f"{name:<14} {frame.shape[0]:>7} rows  {', '.join(map(str, frame.columns))}")


@main.command()
@click.option("--report", "report_path", help="Also write an HTML report of the REML fit here.")
@click.option("--force", is_flag=True, help="Overwrite an existing report.")
@_user_errors
def demo(report_path, force):
    """Fit sleepstudy by REML and print the result (the README's first example)."""
    from . import datasets as shipped
    from .io import check_writable
    from .model import Model
    from .html_report import report

    if report_path:
        check_writable(report_path, force)
    model = Model("Reaction ~ 1 + Days + (1 + Days | Subject)", shipped.load("sleepstudy"))
    result = model.fit()
    click.echo(result.summary())
    if report_path:
        report(result, report_path, force=force)
        click.echo(f"report {report_path}")


if __name__ == "__main__":
    main()
