# %% [markdown]
# # Eight schools: a meta-analysis with known standard errors
#
# Effects of coaching programmes in eight schools, each with a known standard error (Rubin 1981). brms's
# syntax for known SEs, `y | se(sigma)`, fixes the residual SDs; the model estimates the population effect
# and the SD between schools. With eight groups that SD is poorly determined, so this is a job for the
# Bayesian fit, which averages over it.

# %%
import multilevel as mlv

schools = mlv.datasets.load("eight_schools")
model = mlv.Model("y | se(sigma) ~ 1 + (1 | school)", data=schools)
post = model.sample(chains=4, draws=1000, warmup=1000, seed=8, progress=False)
post

# %% [markdown]
# Each school's effect (population effect plus its group effect) is pulled toward the population mean,
# most for the schools with the largest standard errors:

# %%
effects = post.group_effects
effects.assign(school_effect=effects["estimate"] + post.fixed_effects.loc["(Intercept)", "estimate"]).round(2)

# %%
mlv.plots.variance_posteriors(post)
