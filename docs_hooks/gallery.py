"""MkDocs hook: runs every script in examples/ at build time and adds it to the site as a page, so the worked
examples cannot rot (an error in one fails the build).

Scripts are in the percent format that Jupyter (through jupytext), VS Code and Spyder open as notebooks:
``# %%`` starts a code cell, ``# %% [markdown]`` a text cell written as comments. As in a notebook, a cell
shows what it prints, the package's warnings, and the value of its last expression: a figure as a PNG, an
object with ``_repr_html_`` (results, DataFrames) as its HTML, anything else as text.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import html
import io
import time
import warnings
from pathlib import Path

from mkdocs.structure.files import File

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def on_files(files, config):
    """Execute each example and add its page (gallery/<name>.md) and the gallery's index."""
    rows = []
    for script in sorted(EXAMPLES.glob("*.py")):
        title, page, seconds = render(script)
        files.append(File.generated(config, f"gallery/{script.stem}.md", content=page))
        rows.append(f"| [{title}]({script.stem}.md) | `examples/{script.name}` | {seconds:.1f} s |")
    index = [
        "# Gallery",
        "",
        "Worked examples, executed every time the site is built (the times are those of the last build, one "
        "core). Each is a script in `examples/`, in the percent format that Jupyter (jupytext), VS Code and "
        "Spyder open as a notebook; run one with `python examples/<name>.py`.",
        "",
        "| example | script | run time |",
        "|---|---|---|",
        *rows,
    ]
    files.append(File.generated(config, "gallery/index.md", content="\n".join(index) + "\n"))
    return files


def cells(text: str) -> list[tuple[str, str, int]]:
    """The script's cells as (kind, source, lines before it in the file); kind is "code" or "markdown", whose
    comment marks are removed."""
    out = []
    for number, line in enumerate(text.splitlines()):
        if line.startswith("# %%"):
            out.append(("markdown" if "[markdown]" in line else "code", [], number + 1))
        elif out:
            out[-1][1].append(_uncomment(line) if out[-1][0] == "markdown" else line)
    return [(kind, "\n".join(lines).rstrip(), start) for kind, lines, start in out]


def _uncomment(line: str) -> str:
    return line[2:] if line.startswith("# ") else line.lstrip("#")


def render(script: Path) -> tuple[str, str, float]:
    """Run the script cell by cell in one namespace: its title, its page's Markdown and the seconds it took."""
    from multilevel.errors import MultilevelWarning

    namespace = {"__name__": "__main__", "__file__": str(script)}
    parts, title = [], script.stem
    start = time.perf_counter()
    for kind, source, offset in cells(script.read_text(encoding="utf-8")):
        if kind == "markdown":
            title = source.strip().splitlines()[0].lstrip("# ") if title == script.stem else title
            parts.append(source.strip())
            continue
        parts.append(f"```python\n{source.strip()}\n```")
        printed, caught, value = run_cell(source, offset, namespace, script)
        if printed:
            parts.append(f"```text\n{printed.rstrip()}\n```")
        shown = "" if value is None else display(value)
        messages = dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, MultilevelWarning))
        parts += [f'!!! warning "Warning"\n    {m}' for m in messages if html.escape(m) not in shown]  # not twice
        if shown:
            parts.append(shown)
    seconds = time.perf_counter() - start
    source = f"*Source: `examples/{script.name}`; ran in {seconds:.1f} s when this page was built.*"
    return title, "\n\n".join([*parts, source]) + "\n", seconds


def run_cell(source: str, offset: int, namespace: dict, script: Path):
    """Execute one cell (its line numbers shifted by `offset`, for tracebacks): what it printed, the warnings
    raised, the value of a final expression (or None)."""
    tree = ast.increment_lineno(ast.parse(source, filename=str(script)), offset)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(tree, str(script), "exec"), namespace)
        value = eval(compile(ast.Expression(last.value), str(script), "eval"), namespace) if last else None
    return printed.getvalue(), caught, value


def display(value) -> str:
    """A cell's value as the page shows it: figure as an embedded PNG, rich HTML, or text."""
    if hasattr(value, "savefig"):
        buffer = io.BytesIO()
        value.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        return f'<img alt="figure" src="data:image/png;base64,{data}">'
    if hasattr(value, "_repr_html_"):
        return '<div class="cell-output">' + value._repr_html_().replace("\n", " ") + "</div>"
    return f"```text\n{value!r}\n```"
