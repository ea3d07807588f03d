# %% [markdown]
# # A Poisson GLMM with an offset: begging barn owl nestlings
#
# `Owls` counts the begging calls of nestlings in the 30 s before a parent arrived, at 27 nests. Larger broods
# call more, so the count is modelled per chick: `offset(log(BroodSize))` makes the linear predictor the log of
# calls per chick, and a random intercept per nest takes up what nests share. This is the glmmTMB paper's model.

# %%
import numpy as np

import multilevel as mlv

owls = mlv.datasets.load("Owls")
fit = mlv.Model("SiblingNegotiation ~ FoodTreatment * SexParent + offset(log(BroodSize)) + (1 | Nest)",
                owls, family="poisson").fit()
fit

# %% [markdown]
# The fixed effects are log rate ratios: food-satiated nestlings call about half as much as deprived ones.

# %%
ratio = np.exp(fit.fixed_effects["estimate"])
ratio.rename("rate ratio").to_frame()
