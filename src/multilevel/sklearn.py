"""`MixedModelRegressor`: a mixed model as a scikit-learn regressor, for pipelines, grid searches and
cross-validation (with `GroupKFold` whole groups are held out, so scores are for new groups).

X is a DataFrame holding the columns the formula names (a 2-D array works too: its columns are then called
x0, x1, ...); y is the response, named by the formula's left-hand side. Predictions use the fitted groups'
effects; rows of groups not seen in fitting get the population-level prediction.

>>> import multilevel as mlv
>>> from multilevel.sklearn import MixedModelRegressor
>>> df = mlv.datasets.load("sleepstudy")
>>> X, y = df[["Days", "Subject"]], df["Reaction"]
>>> est = MixedModelRegressor("Reaction ~ Days + (Days | Subject)").fit(X, y)
>>> round(est.score(X, y), 3)
0.826
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from .formula import parse
from .model import Model


class MixedModelRegressor(RegressorMixin, BaseEstimator):
    """A linear mixed model `formula` fitted by `method` ("REML" or "ML", with `prior` None or "zero-avoiding");
    ``include_groups=False`` predicts from the fixed effects alone.

    Fitted attributes: `fit_` (the `LmmFit`), `n_features_in_`, `feature_names_in_` (DataFrame input).
    """

    def __init__(self, formula: str, method: str = "REML", prior: str | None = None, include_groups: bool = True):
        self.formula = formula
        self.method = method
        self.prior = prior
        self.include_groups = include_groups

    def fit(self, X, y):
        """Fit the formula to the columns of X with y as its response."""
        response = parse(self.formula).response
        if not response.isidentifier():
            raise ValueError(f"the formula's response must be a plain name for y, not {response!r}: transform y instead")
        X, y = self._validated(X, y, reset=True)
        data = self._frame(X)
        if response in data.columns:
            raise ValueError(f"X holds the response column {response!r}: pass it as y only")
        data[response] = y
        self.fit_ = Model(self.formula, data).fit(method=self.method, prior=self.prior)
        return self

    def predict(self, X) -> np.ndarray:
        """Predictions for the rows of X: fixed part plus the effects of known groups (unseen groups: none)."""
        check_is_fitted(self, "fit_")
        X = self._validated(X)
        return np.asarray(self.fit_.predict(self._frame(X), include_groups=self.include_groups), dtype=float)

    def _validated(self, X, y=None, reset: bool = False):
        """scikit-learn's input checks (shape, missing values, feature count and names); a DataFrame with string
        column names comes back as given, other input as an array."""
        named = isinstance(X, pd.DataFrame) and all(isinstance(c, str) for c in X.columns)
        if reset:
            array, y = validate_data(self, X, y, dtype=None, ensure_min_samples=2, y_numeric=True)
            return (X if named else array), np.asarray(y, dtype=float)
        array = validate_data(self, X, reset=False, dtype=None)
        return X if named else array

    def _frame(self, X) -> pd.DataFrame:
        """The rows as the model reads them: a DataFrame's own columns, or an array's as x0, x1, ..."""
        if isinstance(X, pd.DataFrame):
            return X.copy()
        return pd.DataFrame(np.asarray(X, dtype=float), columns=[f"x{j}" for j in range(X.shape[1])])
