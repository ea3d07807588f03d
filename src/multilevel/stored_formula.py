"""What a formula read from a file may contain: a file is data, never code.

Formula terms are evaluated by formulaic as Python expressions, so a formula inside a saved result (or any
text from someone else) could run code on the reader's machine. Before a loaded formula is evaluated, every
token must be one of: a column of the saved data, a number, an operator of the formula language, a
transform from a short whitelist (called), R's contrast names, or a keyword argument name. Anything else —
attribute access outside ``np.<whitelisted>``, strings, subscripts, dunder names — is refused.

>>> check_stored_formula("Reaction ~ Days + I(Days^2) + (Days | Subject)", ["Reaction", "Days", "Subject"])
>>> check_stored_formula("y ~ __import__('os').system('x')", ["y"])
Traceback (most recent call last):
...
multilevel.errors.MultilevelError: the formula stored in this file contains '__import__', which is not a column of its data or an allowed transform: a loaded file is never evaluated as code
"""

from __future__ import annotations

import re

from .errors import MultilevelError

TRANSFORMS = frozenset({
    "I", "C", "log", "log2", "log10", "log1p", "exp", "expm1", "sqrt", "abs", "center", "scale", "standardize",
    "poly", "offset", "cbind", "trials", "se", "weights",
    "np.log", "np.log2", "np.log10", "np.log1p", "np.exp", "np.expm1", "np.sqrt", "np.abs", "np.square",
})
CONSTANTS = frozenset({"contr.poly", "contr.treatment", "contr.sum", "contr.helmert", "True", "False"})
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_TOKEN = re.compile(rf"\s+|`[^`]*`|{_NUMBER}|(?:[^\W\d]|\.)[\w.]*|\*\*|\|\||[~+\-*/:^|(),=]")


def check_stored_formula(text: str, columns) -> None:
    """Refuse a stored formula holding anything but columns, numbers, operators and whitelisted transforms."""
    if not isinstance(text, str):
        raise MultilevelError("the formula stored in this file is not text: the file is damaged or not from multilevel")
    cols = {str(c) for c in columns}
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise _refusal(text[pos])
        token, pos = match.group(), match.end()
        if re.fullmatch(_NUMBER, token):
            continue
        if token.startswith("`"):
            _check_name(token[1:-1], cols, None, "")
        elif token[0].isalpha() or token[0] in "._":
            _check_name(token, cols, _next_char(text, pos), text[pos:].lstrip()[:2])


def _next_char(text: str, pos: int) -> str:
    rest = text[pos:].lstrip()
    return rest[:1]


def _check_name(name: str, cols: set[str], following: str | None, ahead: str) -> None:
    if "__" in name:
        raise _refusal(name)
    if following == "(":  # only whitelisted transforms are called, whatever the data's column names are
        if name in TRANSFORMS:
            return
        raise _refusal(name)
    if name in cols or name in CONSTANTS:
        return
    if following == "=" and ahead != "==" and "." not in name:  # a keyword argument, e.g. poly(x, degree=2)
        return
    raise _refusal(name)


def _refusal(what: str) -> MultilevelError:
    return MultilevelError(
        f"the formula stored in this file contains '{what}', which is not a column of its data or an allowed "
        "transform: a loaded file is never evaluated as code"
    )
