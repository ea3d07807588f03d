# %% [markdown]
# # High School and Beyond: how much of maths achievement lies between schools?
#
# 7,185 pupils in 160 schools (Raudenbush & Bryk 2002). The intraclass correlation (ICC) of the empty model
# says what share of the variance in maths achievement is between schools; adding pupil and school
# predictors shows how much of it they explain.

# %%
import multilevel as mlv

hsb = mlv.datasets.load("Hsb82")
empty = mlv.Model("mAch ~ 1 + (1 | school)", data=hsb).fit()
empty.icc()

# %% [markdown]
# With pupils' socio-economic status centred within school (`cses`), the school mean SES and the sector,
# and a random slope of `cses`:

# %%
full = mlv.Model("mAch ~ cses * sector + meanses + (1 + cses | school)", data=hsb).fit()
full

# %%
full.icc()

# %% [markdown]
# Nakagawa & Schielzeth's R²: the share explained by the fixed effects alone (marginal) and with the school
# effects (conditional):

# %%
full.r2()
