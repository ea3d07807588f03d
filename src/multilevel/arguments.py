"""Checks of user arguments shared by every entry point: a bad value raises our error naming the argument and
the fix, never a numpy or pandas traceback from deep inside."""

from __future__ import annotations

import numpy as np

from .errors import MultilevelError


def check_level(value, name: str = "level") -> float:
    """A probability strictly between 0 and 1 (an interval's coverage); 95 is refused with the hint 0.95."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not 0 < value < 1:
        hint = f" (for {value:g} % write {value / 100:g})" if ok and 1 < value < 100 else ""
        raise MultilevelError(f"{name} must be a probability between 0 and 1, e.g. 0.95, got {value!r}{hint}")
    return float(value)


def check_count(value, name: str, low: int = 1) -> int:
    """A whole number >= low (draws, chains, simulations); floats such as 2.5 or 10.0 and booleans are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise MultilevelError(f"{name} must be a whole number >= {low}, got {value!r}")
    return int(value)


def check_flag(value, name: str) -> bool:
    """True or False (numpy's too); anything else, such as the text "no", which would count as true, is refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise MultilevelError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_seed(value, name: str = "seed", generators: bool = True):
    """None, a whole number from 0 to 2**63 - 1, or (if `generators`) a numpy Generator/SeedSequence."""
    if value is None or (generators and isinstance(value, (np.random.Generator, np.random.SeedSequence))):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < 2**63:
        raise MultilevelError(f"{name} must be a whole number from 0 to 2**63 - 1 (or None), got {value!r}")
    return int(value)


def check_column_name(value, name: str, example: str):
    """One column's name (a string, or a whole number for integer-labelled columns): a list, None or a float where a
    name is expected is refused, with the fix."""
    if isinstance(value, bool) or not isinstance(value, (str, int, np.integer)):
        hint = f" (one column: {name}={value[0]!r})" if isinstance(value, (list, tuple)) and len(value) == 1 else ""
        raise MultilevelError(f"{name} must be the name of one column of the data, a string such as {name}='{example}', "
                              f"not {type(value).__name__} {value!r}{hint}")
    return value


def check_formula_text(value, name: str, example: str) -> str:
    """A formula given as a string (such as `example`); anything else is refused, naming the argument."""
    if not isinstance(value, str):
        raise MultilevelError(f"the {name} formula must be a string such as '{example}', not {type(value).__name__} {value!r}")
    return value
