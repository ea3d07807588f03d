"""multilevel: hierarchical linear models, fitted by ML/REML (as lme4) and by full Bayes (as brms).

>>> import multilevel as mlv
>>> model = mlv.Model("Reaction ~ Days + (Days | Subject)", mlv.datasets.load("sleepstudy"))
>>> fit = model.fit()
>>> round(fit.sigma, 3)
25.592
"""

from . import datasets
from .anova import anova
from .errors import FormulaError, MultilevelError, MultilevelWarning
from .formula import Formula, RandomTerm, parse
from .model import Model
from .priors import prior, priors

__all__ = [
    "anova",
    "Formula",
    "FormulaError",
    "Model",
    "MultilevelError",
    "MultilevelWarning",
    "RandomTerm",
    "datasets",
    "parse",
    "prior",
    "priors",
]
__version__ = "0.1.0"
