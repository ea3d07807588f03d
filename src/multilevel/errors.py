"""The package's own exception and warning types: every user-facing problem is one of these."""


class MultilevelError(ValueError):
    """Bad input or an impossible request; the message names the problem and the fix."""


class FormulaError(MultilevelError):
    """A formula that cannot be parsed; the message shows where."""


class UnseenLevelError(MultilevelError):
    """Model rows holding a level the coding was not learned with."""


class MultilevelWarning(UserWarning):
    """Numerical trouble the user must know about (boundary fits, convergence, sampler diagnostics)."""


def point_at(text: str, pos: int) -> str:
    """Render `text` with a caret under position `pos`, for error messages."""
    pos = max(0, min(pos, len(text)))
    return f"    {text}\n    {' ' * pos}^"


def emit(messages: list[str], stacklevel: int = 5) -> None:
    """Raise each message as a MultilevelWarning (fitting computes them once; results only store them)."""
    import warnings

    for message in messages:
        warnings.warn(message, MultilevelWarning, stacklevel=stacklevel)
