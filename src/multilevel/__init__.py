"""multilevel: hierarchical linear models, fitted by ML/REML (as lme4) and by full Bayes (as brms).

>>> import multilevel as mlv
>>> model = mlv.Model("Reaction ~ Days + (Days | Subject)", mlv.datasets.load("sleepstudy"))
>>> fit = model.fit()
>>> round(fit.sigma, 3)
25.592
"""

from . import datasets, families
from .anova import anova
from .bootstrap import bootstrap
from .compare import compare
from .methods import methods
from .study import study
from .study_scenarios import SCENARIOS, study_data
from .errors import FormulaError, MultilevelError, MultilevelWarning
from .formula import Formula, RandomTerm, parse
from .model import Model
from .occupancy import Occupancy
from .io import load, save
from .priors import prior, priors

__all__ = [
    "bootstrap",
    "compare",
    "methods",
    "study",
    "study_data",
    "SCENARIOS",
    "load",
    "plots",
    "report",
    "save",
    "anova",
    "Formula",
    "FormulaError",
    "Model",
    "Occupancy",
    "MultilevelError",
    "MultilevelWarning",
    "RandomTerm",
    "datasets",
    "families",
    "parse",
    "prior",
    "priors",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    """Plots and the report load matplotlib: import them only when asked for (keeps `import multilevel` fast)."""
    import importlib

    if name == "plots":
        return importlib.import_module(".plots", __name__)
    if name == "report":
        return importlib.import_module(".html_report", __name__).report
    raise AttributeError(f"module 'multilevel' has no attribute {name!r}")
