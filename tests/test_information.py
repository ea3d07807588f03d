"""LOO/WAIC against brms, DIC against its closed form, the group-marginal likelihood against a dense density."""

import warnings

import numpy as np
import pytest
from conftest import reference
from scipy import stats
from scipy.special import logsumexp

import multilevel as mlv
from multilevel.information import dic, group_marginal_log_likelihood, loo, waic


def test_dic_of_a_normal_mean_has_one_effective_parameter():
    """Flat prior, known sigma: the posterior of mu is N(ybar, sigma²/n), so p_D = p_V = 1 exactly in the limit."""
    rng = np.random.default_rng(0)
    y, sigma = rng.normal(3.0, 2.0, 50), 2.0
    mu = rng.normal(y.mean(), sigma / np.sqrt(y.size), 400_000)
    ll = stats.norm.logpdf(y[None, :], mu[:, None], sigma)
    result = dic(ll, stats.norm.logpdf(y, mu.mean(), sigma))
    assert result["p_d"] == pytest.approx(1.0, abs=0.02)
    assert result["p_v"] == pytest.approx(1.0, abs=0.02)
    assert result["dic"] == pytest.approx(result["deviance_at_mean"] + 2 * result["p_d"])


@pytest.fixture(scope="module")
def sleep_post():
    model = mlv.Model("Reaction ~ Days + (Days | Subject)", mlv.datasets.load("sleepstudy"))
    return model.sample(chains=2, draws=200, warmup=200, seed=3, progress=False)


def test_group_marginal_likelihood_equals_the_dense_multivariate_normal(sleep_post):
    ll = group_marginal_log_likelihood(sleep_post)
    design, block = sleep_post.design, sleep_post.design.blocks[0]
    for c, d, g in [(0, 0, 0), (1, 57, 5), (0, 199, 17)]:
        rows = block.codes == g
        sd, corr = sleep_post.sd[0][c, d], sleep_post.corr[0][c, d]
        Z = block.Z[rows]
        V = Z @ (np.outer(sd, sd) * corr) @ Z.T + sleep_post.sigma[c, d] ** 2 * np.eye(rows.sum())
        expected = stats.multivariate_normal(design.X[rows] @ sleep_post.beta[c, d], V).logpdf(design.y[rows])
        assert ll[c, d, g] == pytest.approx(expected, rel=1e-10)


def test_group_marginal_with_known_standard_errors_is_normal_with_summed_variances():
    """Eight schools: one row per school, y_j ~ N(mu, tau² + se_j²) once the school effect is integrated out."""
    post = mlv.Model("y | se(sigma) ~ 1 + (1 | school)", mlv.datasets.load("eight_schools")).sample(
        chains=1, draws=50, warmup=100, seed=1, progress=False
    )
    d = post.design
    ll = group_marginal_log_likelihood(post)[0]
    tau, mu = post.sd[0][0, :, 0], post.beta[0, :, 0]
    expected = stats.norm.logpdf(d.y[None, :], mu[:, None], np.sqrt(tau[:, None] ** 2 + d.se[None, :] ** 2))
    order = np.argsort(d.blocks[0].codes)  # one row per level: rows in level order
    np.testing.assert_allclose(ll, expected[:, order], rtol=1e-10)


def test_marginal_loo_scores_groups(sleep_post):
    result = loo(sleep_post, kind="marginal")
    assert result.n_data_points == 18 and np.isfinite(result.elpd)


BRMS = [
    ("sleepstudy_slopes_brms", "Reaction ~ 1 + Days + (1 + Days | Subject)", "sleepstudy"),
    ("radon_intercept_brms", "log_radon ~ floor + (1 | county)", "radon"),
    ("hsb82_null_brms", "mAch ~ 1 + (1 | school)", "Hsb82"),
    ("eight_schools_brms", "y | se(sigma) ~ 1 + (1 | school)", "eight_schools"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,formula,data", BRMS, ids=[b[0] for b in BRMS])
def test_loo_and_waic_match_brms(name, formula, data):
    ref = reference(name)
    post = mlv.Model(formula, mlv.datasets.load(data)).sample(chains=4, draws=1000, warmup=1000, seed=1, progress=False)
    ll = post.log_likelihood()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = loo(post, log_lik=ll)
    k = np.asarray(result.pareto_k)
    warned = any("Pareto k" in str(w.message) for w in caught)
    assert warned == bool(np.any(k > result.good_k))  # the user is told exactly when PSIS is unreliable
    if ref["loo"]["pareto_k_max"] > 1.0:  # far past the threshold in brms's run: ours must flag it too
        assert warned
    assert result.elpd == pytest.approx(ref["loo"]["elpd_loo"]["estimate"], abs=1.0)
    if name == "sleepstudy_slopes_brms":
        pytest.xfail(
            "brms's elpd_waic for sleepstudy (-859.349) is 0.595 above the value without Monte Carlo error, "
            "-859.944 +- 0.008 (p_waic 32.85; group effects and slope integrated in closed form given the variance "
            "parameters and alpha, those importance-sampled without our sampler: test_waic_estimators_agree_with_the_"
            "rao_blackwellised_value), so no estimator can match it to 0.5. Our plain estimator is unbiased: -859.93 "
            "(SD 0.09) from 40,000 draws; at brms's 4 x 1,000 draws its SD is 0.22, larger for brms's less efficient "
            "draws, so brms's value is its own Monte Carlo error (2-3 SD)"
        )
    assert waic(ll)["elpd_waic"] == pytest.approx(ref["waic"]["elpd_waic"]["estimate"], abs=0.5)


# ---------------------------------------------------------------------------------------------------------------
# Rao-Blackwellised WAIC: a verification device for the pointwise-draws estimator. Given phi = (SDs, correlations,
# sigma, centred intercept alpha) -- the collapsed sampler's coordinates -- the other coefficients (flat prior) and
# the group effects are jointly Gaussian, so each linear predictor eta_i ~ N(m_i, v_i) and, with r_i the residual
# variance, E[p(y_i|.)|phi] = N(y_i; m_i, r_i + v_i), E[log p|phi] = c_i - (d_i² + v_i) / 2r_i and
# Var[log p|phi] = (2 v_i² + 4 d_i² v_i) / 4r_i² (d_i = y_i - m_i). Averaging these over draws of phi only gives
# lppd_i and p_waic_i (law of total variance) with the group-effect noise removed.

def _conditional_linear_predictor(design, alpha, sd, corr, sigma):
    """Mean m and variance v of every linear predictor given phi (draws x rows), and the residual variance r.
    One grouping factor; non-intercept coefficients centred (as brms) under a flat prior."""
    (blk,) = design.blocks
    n, m, D = design.nobs, blk.m, alpha.shape[0]
    keep = [j for j, name in enumerate(design.fixed_names) if name != "(Intercept)"]
    Xc = design.X[:, keep] - design.X[:, keep].mean(axis=0)
    Z, g = blk.Z, blk.codes
    r = np.broadcast_to(design.se**2, (D, n)) if sigma is None else np.repeat(sigma[:, None] ** 2, n, axis=1)
    W, e = 1.0 / r, design.y[None, :] - alpha[:, None]
    group_sum = np.zeros((m, n))
    group_sum[g, np.arange(n)] = 1.0

    def per_group(a):  # (D, n, ...) summed over each group's rows -> (D, m, ...)
        return np.moveaxis(np.tensordot(group_sum, a, axes=(1, 1)), 0, 1)

    cov = sd[:, :, None] * corr * sd[:, None, :]
    Q = per_group(W[:, :, None, None] * (Z[:, :, None] * Z[:, None, :])) + np.linalg.inv(cov)[:, None]  # per group precision
    Qi = np.linalg.inv(Q)
    h = per_group((W * e)[:, :, None] * Z)
    v = np.einsum("na,dnab,nb->dn", Z, Qi[:, g], Z)
    if keep:  # eliminate the groups, then the coefficients: S = X'WX - sum_g Q_gx' Q_g^-1 Q_gx
        Qgx = per_group(W[:, :, None, None] * (Z[:, :, None] * Xc[:, None, :]))
        H = Qi @ Qgx
        S_inv = np.linalg.inv(np.einsum("dn,na,nb->dab", W, Xc, Xc) - np.einsum("dgka,dgkb->dab", Qgx, H))
        beta = np.einsum("dab,db->da", S_inv, np.einsum("dn,na->da", W * e, Xc) - np.einsum("dgka,dgk->da", H, h))
        h = h - np.einsum("dgka,da->dgk", Qgx, beta)
        u = Xc[None] - np.einsum("dnka,nk->dna", H[:, g], Z)
        v = v + np.einsum("dna,dab,dnb->dn", u, S_inv, u)
        alpha = alpha[:, None] + beta @ Xc.T
    else:
        alpha = alpha[:, None]
    mean = alpha + np.einsum("nk,dnk->dn", Z, np.einsum("dgab,dgb->dga", Qi, h)[:, g])
    return mean, v, r


def rao_blackwell_waic(post, chunk=2000):
    """elpd_waic and p_waic of the conditional (brms) log-likelihood with the group effects and slopes integrated
    out exactly given each draw of phi; returns (elpd_waic, p_waic)."""
    design = post.design
    assert design.offset is None and design.weights is None
    assert all(p.family == "flat" for p in post.priors.b.values())
    keep = [j for j, name in enumerate(design.fixed_names) if name != "(Intercept)"]
    beta = post.beta.reshape(-1, design.p)
    alpha = beta[:, design.fixed_names.index("(Intercept)")] + beta[:, keep] @ design.X[:, keep].mean(axis=0)
    sd, corr = post.sd[0].reshape(len(beta), -1), post.corr[0].reshape(len(beta), *post.corr[0].shape[-2:])
    sigma = None if post.sigma is None else post.sigma.reshape(-1)
    log_mean_p, e_log, v_log = [], [], []
    for s in range(0, len(beta), chunk):
        sl = slice(s, s + chunk)
        m, v, r = _conditional_linear_predictor(design, alpha[sl], sd[sl], corr[sl], None if sigma is None else sigma[sl])
        d2 = (design.y - m) ** 2
        log_mean_p.append(stats.norm.logpdf(design.y, m, np.sqrt(r + v)))
        e_log.append(-0.5 * np.log(2 * np.pi * r) - (d2 + v) / (2 * r))
        v_log.append((2 * v * v + 4 * d2 * v) / (4 * r * r))
    log_mean_p, e_log, v_log = (np.concatenate(x) for x in (log_mean_p, e_log, v_log))
    lppd = logsumexp(log_mean_p, axis=0) - np.log(len(beta))
    p = e_log.var(axis=0, ddof=1) + v_log.mean(axis=0)
    return float(np.sum(lppd - p)), float(np.sum(p))


def test_rao_blackwell_moments_equal_the_dense_joint_gaussian(sleep_post):
    """The blocked elimination against the dense joint Gaussian of (slope, 36 group effects) given phi."""
    design, block = sleep_post.design, sleep_post.design.blocks[0]
    c, d = 1, 123
    beta, sd, corr, sigma = sleep_post.beta[c, d], sleep_post.sd[0][c, d], sleep_post.corr[0][c, d], sleep_post.sigma[c, d]
    xc = design.X[:, 1] - design.X[:, 1].mean()
    alpha = beta[0] + beta[1] * design.X[:, 1].mean()
    m, v, _ = _conditional_linear_predictor(design, np.array([alpha]), sd[None], corr[None], np.array([sigma]))
    Z = np.zeros((design.nobs, block.m * 2))
    for i, g in enumerate(block.codes):
        Z[i, 2 * g : 2 * g + 2] = block.Z[i]
    A = np.column_stack([xc, Z])
    prior = np.zeros((A.shape[1],) * 2)
    prior[1:, 1:] = np.kron(np.eye(block.m), np.linalg.inv(np.outer(sd, sd) * corr))
    Q = A.T @ A / sigma**2 + prior
    np.testing.assert_allclose(m[0], alpha + A @ np.linalg.solve(Q, A.T @ (design.y - alpha)) / sigma**2, rtol=1e-10)
    np.testing.assert_allclose(v[0], np.diag(A @ np.linalg.solve(Q, A.T)), rtol=1e-9)


# elpd_waic without sampler noise: self-normalised importance sampling of phi (multivariate t around the Laplace
# approximation of the collapsed density, written independently in numpy), Rao-Blackwellised as above; 8 x 100,000
# proposals, ESS 63 %: -859.9445 +- 0.0078, p_waic 32.849. Our NUTS + Rao-Blackwell, 2 x 100,000 draws: -859.950 +- 0.033
# and -859.922 +- 0.021. The same device reproduces the quadrature values: eight schools -30.6815 +- 0.0013 (exact
# -30.6807), Hsb82 -23445.0053 +- 0.0007 (exact -23445.007; quadrature grid error ~1e-3).
SLEEPSTUDY_ELPD_WAIC = -859.944


@pytest.mark.slow
def test_waic_estimators_agree_with_the_rao_blackwellised_value():
    """Sleepstudy: our plain estimator (the one compared with brms) and the Rao-Blackwellised one on the same 40,000
    draws, against the sampler-free value. Monte Carlo SDs at 40,000 draws (6 seeds; batch means agree): plain 0.09,
    Rao-Blackwellised 0.03-0.045; tolerances ~4 SD. Eight schools against quadrature, at 20,000 draws (10 seeds):
    SD 0.010 Rao-Blackwellised, 0.015 plain."""
    post = mlv.Model("Reaction ~ 1 + Days + (1 + Days | Subject)", mlv.datasets.load("sleepstudy")).sample(
        chains=4, draws=10_000, warmup=1000, seed=7, progress=False
    )
    rb_elpd, rb_p = rao_blackwell_waic(post)
    plain = waic(post.log_likelihood())
    assert rb_elpd == pytest.approx(SLEEPSTUDY_ELPD_WAIC, abs=0.2)
    assert plain["elpd_waic"] == pytest.approx(SLEEPSTUDY_ELPD_WAIC, abs=0.35)
    assert plain["p_waic"] == pytest.approx(rb_p, abs=0.3)
    post = mlv.Model("y | se(sigma) ~ 1 + (1 | school)", mlv.datasets.load("eight_schools")).sample(
        chains=4, draws=5000, warmup=1000, seed=7, progress=False
    )
    exact = reference("eight_schools_brms_exact")["waic_exact"]
    rb_elpd, rb_p = rao_blackwell_waic(post)
    assert rb_elpd == pytest.approx(exact["elpd_waic"], abs=0.05)
    assert rb_p == pytest.approx(exact["p_waic"], abs=0.05)
    assert waic(post.log_likelihood())["elpd_waic"] == pytest.approx(exact["elpd_waic"], abs=0.08)
