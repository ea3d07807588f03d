# %% [markdown]
# # An occupancy survey: where spring peepers call, apart from whether they were heard
#
# Frogs were listened for on 1-3 nights at 130 stops (unmarked's `pcru` data). Not hearing a frog is not the same
# as its absence, so the model separates occupancy (psi: is the site occupied?) from detection (p: was a calling
# frog heard on that night?), the latent occupancy summed out exactly.

# %%
import multilevel as mlv

df = mlv.datasets.load("pcru_occupancy")
model = mlv.Occupancy(occupancy="~ 1", detection="~ MinAfterSunset_scaled + Temperature_scaled",
                      data=df, site="site", response="y")
fit = model.fit()
fit.fixed_effects

# %% [markdown]
# psi at the intercept is about 0.82, as unmarked's vignette prints: more sites are occupied than the 96 where a
# frog was heard. The expected number of occupied sites among the 130 surveyed:

# %%
fit.n_occupied()

# %% [markdown]
# Detection falls steeply with temperature on the night of the survey:

# %%
from multilevel.occupancy_plots import probability_curve

probability_curve(fit, "Temperature_scaled", part="p")
