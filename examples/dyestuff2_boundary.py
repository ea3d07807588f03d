# %% [markdown]
# # Dyestuff2: a boundary fit, three ways out
#
# Simulated yields of six batches (lme4's `Dyestuff2`), where the batches differ less than the residual
# noise predicts. ML and REML put the between-batch SD at exactly 0 — a *singular* fit, flagged with a
# warning. The zero-avoiding prior (blme's) and the Bayesian fit keep it off the boundary.

# %%
import multilevel as mlv

model = mlv.Model("Yield ~ 1 + (1 | Batch)", data=mlv.datasets.load("Dyestuff2"))
model.fit()

# %% [markdown]
# All methods in one table, with an account of where and why they differ:

# %%
comparison = mlv.methods(model, include=["ML", "REML", "zero-avoiding", "Bayes"],
                         bayes={"chains": 2, "draws": 1000, "warmup": 500})
comparison

# %% [markdown]
# The posterior of the between-batch SD, with the frequentist estimates marked:

# %%
fits = [comparison.fits[name] for name in ("ML", "REML", "zero-avoiding")]
mlv.plots.variance_posteriors(comparison.fits["Bayes"], fits)
