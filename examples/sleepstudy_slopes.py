# %% [markdown]
# # Sleep deprivation: varying intercepts and slopes
#
# Reaction times of 18 subjects over ten days of sleep restriction (Belenky et al. 2003). Each subject gets
# their own baseline and their own slope, correlated: `(1 + Days | Subject)`, as in lme4's first example.

# %%
import multilevel as mlv

df = mlv.datasets.load("sleepstudy")
model = mlv.Model("Reaction ~ 1 + Days + (1 + Days | Subject)", data=df)
fit = model.fit()  # REML, as lme4's default
fit

# %% [markdown]
# The same numbers as lme4's `summary(lmer(...))` (`tests/test_lmm_reference.py` checks them against lme4's
# output). Each subject's slope is the population slope plus its conditional mode, shrunk toward the
# population by how little its own data say:

# %%
effects = fit.group_effects
effects[effects["term"] == "Days"].head()

# %% [markdown]
# Group effects with 95 % intervals, one panel per coefficient:

# %%
mlv.plots.caterpillar(fit)

# %% [markdown]
# Profile-likelihood intervals for every parameter (as lme4's `confint`), and the share of the variance
# between subjects at Day 0:

# %%
fit.confint(method="profile")

# %%
fit.icc()
