# %% [markdown]
# # Radon: partial pooling and shrinkage
#
# Log radon in 919 Minnesota homes in 85 counties (Gelman & Hill 2007). Some counties have one or two homes:
# their own mean (no pooling) is noisy, the state mean (complete pooling) ignores them. The mixed model pools
# partially: each county's estimate moves toward the population by the share its data cannot support.

# %%
import multilevel as mlv

radon = mlv.datasets.load("radon")
fit = mlv.Model("log_radon ~ floor + (1 | county)", data=radon).fit()
fit

# %% [markdown]
# Per county: size, no-pooling and partially pooled intercepts, and the shrinkage (0 = own mean kept,
# 1 = pulled all the way to the population):

# %%
pooled = fit.pooling()
pooled.sort_values("n").head(8)

# %% [markdown]
# The classic picture: arrows from each county's own estimate to its partially pooled one, against county
# size. Small counties move most.

# %%
no_pooling = pooled.rename(columns={"no_pooling": "estimate"})[["level", "term", "estimate", "n"]]
partial = pooled.rename(columns={"partial_pooling": "estimate"})[["level", "term", "estimate"]]
mlv.plots.shrinkage(no_pooling, partial, "(Intercept)", population={"(Intercept)": pooled["population"].iloc[0]})
