# %% [markdown]
# # A repeated-sampling study: do the intervals cover?
#
# `mlv.study` simulates many data sets from a known truth on a model's design, fits each by several methods
# and scores them (bias, RMSE, interval coverage, share of boundary fits), each with its Monte Carlo SE.
# Here: six groups of five with a small between-group SD, where boundary fits are common. 200 replicates
# keep this page fast; docs/study.md has larger runs.

# %%
import multilevel as mlv

formula = "y ~ 1 + (1 | g)"
model = mlv.Model(formula, data=mlv.study_data(formula, groups=6, size=5, seed=1))
result = mlv.study(model, truth={"b_Intercept": 0.0, "sd_g__Intercept": 0.5, "sigma": 1.0},
                   methods=["ML", "REML", "zero-avoiding"], replicates=200, seed=2, progress=False)
result

# %%
mlv.plots.study_errors(result)
