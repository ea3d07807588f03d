"""HTML pieces shared by the report and the notebook displays: tables whose cells keep their full values, and
`result_html`, the compact block a result shows in Jupyter (`_repr_html_`) - title, a few lines, tables, warnings.

>>> import pandas as pd
>>> page = result_html("A fit", ["Formula: y ~ 1 + (1 | g)"], [("Estimates", pd.DataFrame({"estimate": [1.5]}))],
...                    ["boundary (singular) fit"])
>>> 'data-value="1.5"' in page and "boundary (singular) fit" in page
True
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

NOTEBOOK_CSS = """
.mlv-result{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;line-height:1.35;max-width:100%}
.mlv-result .mlv-title{font-weight:600;margin:.1rem 0 .2rem}
.mlv-result p{margin:.1rem 0;color:#444;font-size:.9em}
.mlv-result .mlv-caption{font-weight:600;margin-top:.5rem;color:inherit}
.mlv-result .scroll{overflow-x:auto;margin:.2rem 0 .4rem}
.mlv-result table{border-collapse:collapse;font-size:.85em;font-variant-numeric:tabular-nums;margin:0}
.mlv-result th,.mlv-result td{padding:.15rem .5rem;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}
.mlv-result th:first-child,.mlv-result td:first-child{text-align:left}
.mlv-result ul{margin:.2rem 0;padding-left:1.2rem;font-size:.9em}
.mlv-result .warning{background:#fff3f0;color:#222;border-left:4px solid #d9480f;padding:.3rem .6rem;margin:.3rem 0}
"""


def result_html(title: str, lines=(), tables=(), warnings=(), notes=()) -> str:
    """A result as a compact HTML block: `title`, `lines` of text, `tables` as (caption, DataFrame) pairs,
    `notes` as a bullet list and each of `warnings` highlighted."""
    out = [f'<div class="mlv-result"><style>{NOTEBOOK_CSS}</style><div class="mlv-title">{escape(title)}</div>']
    out += [f"<p>{escape(line)}</p>" for line in lines]
    for caption, frame in tables:
        if caption:
            out.append(f'<p class="mlv-caption">{escape(caption)}</p>')
        out.append(table(frame, index=frame.index.name is not None or not isinstance(frame.index, pd.RangeIndex)))
    if notes:
        out.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
    out += [f'<div class="warning"><strong>Warning:</strong> {escape(w)}</div>' for w in warnings]
    return "".join(out) + "</div>"


def table(frame: pd.DataFrame, table_id: str = "", index: bool = True) -> str:
    """An HTML table; each numeric cell keeps its full value in data-value, shown to 4 significant digits."""
    columns = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    rows = []
    for key, row in zip(frame.index, frame.itertuples(index=False)):
        cells = ([cell(key)] if index else []) + [cell(v) for v in row]
        rows.append(f'<tr data-key="{escape(str(key))}">{"".join(cells)}</tr>')
    ident = f' id="{table_id}"' if table_id else ""
    return f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def cell(value) -> str:
    """One table cell: text as it is, numbers shown short with the full value in data-value."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return "<td></td>" if value is pd.NA else f"<td>{escape(str(value))}</td>"
    if isinstance(value, (int, np.integer)):
        return f'<td data-value="{int(value)}">{int(value)}</td>'
    value = float(value)
    if np.isnan(value):
        return "<td></td>"
    text = "inf" if np.isinf(value) else f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.4f}"
    return f'<td data-value="{value!r}">{text}</td>'


def escape(text) -> str:
    """Text made safe for HTML (quotes included, for attributes)."""
    return html.escape(str(text), quote=True)
