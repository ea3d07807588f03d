# %% [markdown]
# # InstEval: crossed random effects, 73,421 ratings
#
# Lecture ratings at ETH Zürich (lme4's `InstEval`): 2,972 students (`s`) rate 1,128 lecturers (`d`); every
# student rates several lecturers and every lecturer is rated by many students, so the two factors are
# crossed, not nested. The full data set is fitted here (about two seconds): the engine eliminates the
# student block, which is diagonal, and factors a dense lecturer block (docs/performance.md).

# %%
import time

import multilevel as mlv

inst = mlv.datasets.load("InstEval")
start = time.perf_counter()
fit = mlv.Model("y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)", data=inst).fit()
print(f"fitted in {time.perf_counter() - start:.1f} s")
fit

# %% [markdown]
# Where the variance lives: most of it within students and lecturers (the residual); between lecturers
# more than between students.

# %%
fit.variance_decomposition()

# %%
mlv.plots.variance_decomposition(fit)
