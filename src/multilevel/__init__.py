"""multilevel: hierarchical linear models, fitted by ML/REML (as lme4) and by full Bayes (as brms)."""

from . import datasets
from .errors import FormulaError, MultilevelError, MultilevelWarning
from .formula import Formula, RandomTerm, parse

__all__ = ["Formula", "FormulaError", "MultilevelError", "MultilevelWarning", "RandomTerm", "datasets", "parse"]
__version__ = "0.1.0"
from .model import Model  # noqa: E402

__all__ += ["Model"]
