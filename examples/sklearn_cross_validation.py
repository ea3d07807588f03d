# %% [markdown]
# # Cross-validation with scikit-learn
#
# `multilevel.sklearn.MixedModelRegressor` is a scikit-learn regressor: it fits inside `Pipeline`,
# `GridSearchCV` and `cross_val_score`. With `GroupKFold` whole subjects are held out, so the score is for
# new subjects (predicted at the population level); set against AIC, which scores the model on these
# subjects.

# %%
import pandas as pd
from sklearn.model_selection import GroupKFold, cross_val_score

import multilevel as mlv
from multilevel.sklearn import MixedModelRegressor

df = mlv.datasets.load("sleepstudy")
X, y = df[["Days", "Subject"]], df["Reaction"]
formulas = ["Reaction ~ Days + (1 | Subject)", "Reaction ~ Days + (Days | Subject)"]
rows = []
for formula in formulas:
    scores = cross_val_score(MixedModelRegressor(formula, method="ML"), X, y, groups=df["Subject"], cv=GroupKFold(6))
    fit = mlv.Model(formula, df).fit(method="ML")
    rows.append({"formula": formula, "CV R² (new subjects)": scores.mean(), "AIC": fit.aic})
pd.DataFrame(rows)
