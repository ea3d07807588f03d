"""`MixedModelRegressor` in scikit-learn: its estimator checks, pipelines, grid search and grouped cross-validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from multilevel.sklearn import MixedModelRegressor

FORMULA = "Reaction ~ Days + (Days | Subject)"


class CoarseGroups(MixedModelRegressor):
    """The estimator on scikit-learn's random test arrays, which hold no grouping column: g is three groups of
    interleaved bands of x0 (contiguous bands can leave a check's class-label response constant within every
    group, which the model rightly refuses). Everything else, input checks included, is the estimator's own."""

    def _frame(self, X):
        frame = super()._frame(X)
        frame["g"] = np.floor(7 * frame["x0"]) % 3
        return frame


# Checks that do not apply to a formula-based estimator, and why.
NOT_APPLICABLE = {
    "check_regressors_train": "its response depends on one of ten random columns; the formula uses x0 only, so the "
    "R^2 > 0.5 it asks for depends on which column the generator chose, not on the estimator",
}


@parametrize_with_checks([CoarseGroups("y ~ x0 + (1 | g)")], expected_failed_checks=lambda est: NOT_APPLICABLE)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def xy(sleep):
    return sleep[["Days", "Subject"]], sleep["Reaction"]


def test_predicts_known_groups_as_the_fit_and_new_groups_at_the_population_level(xy):
    X, y = xy
    est = MixedModelRegressor(FORMULA).fit(X, y)
    np.testing.assert_allclose(est.predict(X), est.fit_.fitted(), rtol=1e-12)
    new = pd.DataFrame({"Days": [0.0, 5.0], "Subject": ["new-1", "new-2"]})
    beta = est.fit_.fixed_effects["estimate"]
    np.testing.assert_allclose(est.predict(new), beta["(Intercept)"] + beta["Days"] * new["Days"], rtol=1e-12)
    fixed_only = clone(est).set_params(include_groups=False).fit(X, y)
    np.testing.assert_allclose(fixed_only.predict(X), beta["(Intercept)"] + beta["Days"] * X["Days"], rtol=1e-12)
    assert est.score(X, y) > fixed_only.score(X, y)


def test_params_clone_and_refusals(xy):
    X, y = xy
    est = MixedModelRegressor(FORMULA, method="ML")
    assert est.get_params() == {"formula": FORMULA, "method": "ML", "prior": None, "include_groups": True}
    copy = clone(est).set_params(prior="zero-avoiding")
    assert copy.get_params()["prior"] == "zero-avoiding" and est.get_params()["prior"] is None
    assert copy.fit(X, y).fit_.prior == "zero-avoiding" and not hasattr(est, "fit_")
    with pytest.raises(ValueError, match="response column 'Reaction'"):
        est.fit(X.assign(Reaction=y), y)
    with pytest.raises(ValueError, match="plain name"):
        MixedModelRegressor("log(Reaction) ~ Days + (1 | Subject)").fit(X, y)


def with_days_squared(X: pd.DataFrame) -> pd.DataFrame:
    return X.assign(Days2=X["Days"] ** 2)


def test_pipeline_and_grid_search_over_formulas(xy, sleep):
    X, y = xy
    pipe = make_pipeline(FunctionTransformer(with_days_squared), MixedModelRegressor(FORMULA))
    grid = GridSearchCV(
        pipe,
        {"mixedmodelregressor__formula": ["Reaction ~ Days + (1 | Subject)", FORMULA,
                                          "Reaction ~ Days + Days2 + (Days | Subject)"]},
        cv=GroupKFold(n_splits=3),
    )
    grid.fit(X, y, groups=sleep["Subject"])
    assert grid.cv_results_["mean_test_score"].shape == (3,)
    assert grid.best_params_["mixedmodelregressor__formula"] in grid.param_grid["mixedmodelregressor__formula"]
    assert np.isfinite(grid.score(X, y))


def test_grouped_cross_validation_equals_a_hand_rolled_loop(xy, sleep):
    X, y = xy
    folds = GroupKFold(n_splits=6)
    scores = cross_val_score(MixedModelRegressor(FORMULA), X, y, groups=sleep["Subject"], cv=folds)
    by_hand = []
    for train, test in folds.split(X, y, groups=sleep["Subject"]):
        est = MixedModelRegressor(FORMULA).fit(X.iloc[train], y.iloc[train])
        by_hand.append(r2_score(y.iloc[test], est.predict(X.iloc[test])))
    assert len(scores) == 6
    assert scores.mean() == pytest.approx(np.mean(by_hand), rel=1e-12)


def test_docstring_example():
    import doctest

    import multilevel.sklearn

    assert doctest.testmod(multilevel.sklearn).failed == 0
