# %% [markdown]
# # A binomial GLMM: contagious bovine pleuropneumonia in herds
#
# `cbpp` records, for 15 herds over 4 periods, how many of the animals were newly infected. The counts are
# binomial, so the model is a logistic regression with a random intercept per herd, fitted as glmer fits it:
# the herd effects integrated out by the Laplace approximation (`nAGQ=1`, the default) or by adaptive
# Gauss-Hermite quadrature (`nAGQ=25`). The response is lme4's `cbind(successes, failures)`.

# %%
import multilevel as mlv

cbpp = mlv.datasets.load("cbpp")
model = mlv.Model("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")
fit = model.fit()
fit

# %% [markdown]
# `fit.loglik` is on the absolute scale, so `-2 * fit.loglik` is the deviance glmer prints for the Laplace fit
# (184.05). With 25 quadrature nodes the integral over the herd effects is exact for practical purposes:

# %%
agq = model.fit(nAGQ=25)
print(f"-2 log-likelihood: Laplace {-2 * fit.loglik:.4f}, 25-node quadrature {-2 * agq.loglik:.4f}")
print(f"between-herd SD:   Laplace {fit.variance_components['sd'].iloc[0]:.4f}, "
      f"quadrature {agq.variance_components['sd'].iloc[0]:.4f}")

# %% [markdown]
# Predictions on the probability scale, for a known herd and for a new one (its effect unknown, set to 0):

# %%
import pandas as pd

new = pd.DataFrame({"period": pd.Categorical(["1", "4"], categories=cbpp["period"].cat.categories),
                    "herd": pd.Categorical(["1", "new"]), "size": [10, 10], "incidence": [0, 0]})
fit.predict(new, type="response")
