"""LOO/WAIC against brms, DIC against its closed form, the group-marginal likelihood against a dense density."""

import warnings

import numpy as np
import pytest
from conftest import reference
from scipy import optimize, stats
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
            "brms's elpd_waic for sleepstudy (-859.349) is 0.586 above the value without Monte Carlo error, "
            "-859.935 +- 0.011 (p_waic 32.85; group effects and slope integrated in closed form given the variance "
            "parameters and alpha, those importance-sampled with brms's priors and no sampler, the device checked "
            "against eight schools' quadrature: test_waic_estimators_agree_with_the_rao_blackwellised_value), so no "
            "estimator can match it to 0.5. Our plain estimator is unbiased: -859.92 (SD 0.06, 6 seeds) from 40,000 "
            "draws; at brms's 4 x 1,000 draws its SD is 0.22, larger for brms's less efficient draws, so brms's value "
            "is its own Monte Carlo error (2-3 SD)"
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
    """Mean m and variance v of every linear predictor given phi (draws x rows), the residual variance r, and
    log p(y | phi) (per draw). One grouping factor; non-intercept coefficients centred (as brms) under a flat prior."""
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
    # -2 log p(y | phi), the group effects and the flat-prior coefficients integrated out:
    # (n - p) log 2 pi + log|R| + m log|cov| + log|Q| + e'We - h'Q^-1 h over the joint precision Q of (coefficients, b)
    minus2 = (n - len(keep)) * np.log(2 * np.pi) + np.log(r).sum(axis=1) + m * np.linalg.slogdet(cov)[1]
    minus2 = minus2 + np.linalg.slogdet(Q)[1].sum(axis=1) + (W * e * e).sum(axis=1)
    minus2 = minus2 - np.einsum("dga,dga->d", h, np.einsum("dgab,dgb->dga", Qi, h))
    if keep:  # eliminate the groups, then the coefficients: S = X'WX - sum_g Q_gx' Q_g^-1 Q_gx
        Qgx = per_group(W[:, :, None, None] * (Z[:, :, None] * Xc[:, None, :]))
        H = Qi @ Qgx
        S = np.einsum("dn,na,nb->dab", W, Xc, Xc) - np.einsum("dgka,dgkb->dab", Qgx, H)
        S_inv = np.linalg.inv(S)
        h_rest = np.einsum("dn,na->da", W * e, Xc) - np.einsum("dgka,dgk->da", H, h)
        beta = np.einsum("dab,db->da", S_inv, h_rest)
        minus2 = minus2 + np.linalg.slogdet(S)[1] - np.einsum("da,da->d", h_rest, beta)
        h = h - np.einsum("dgka,da->dgk", Qgx, beta)
        u = Xc[None] - np.einsum("dnka,nk->dna", H[:, g], Z)
        v = v + np.einsum("dna,dab,dnb->dn", u, S_inv, u)
        alpha = alpha[:, None] + beta @ Xc.T
    else:
        alpha = alpha[:, None]
    mean = alpha + np.einsum("nk,dnk->dn", Z, np.einsum("dgab,dgb->dga", Qi, h)[:, g])
    return mean, v, r, -0.5 * minus2


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
        sigma_sl = None if sigma is None else sigma[sl]
        m, v, r, _ = _conditional_linear_predictor(design, alpha[sl], sd[sl], corr[sl], sigma_sl)
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
    m, v, _, log_ml = _conditional_linear_predictor(design, np.array([alpha]), sd[None], corr[None], np.array([sigma]))
    Z = np.zeros((design.nobs, block.m * 2))
    for i, g in enumerate(block.codes):
        Z[i, 2 * g : 2 * g + 2] = block.Z[i]
    A = np.column_stack([xc, Z])
    prior = np.zeros((A.shape[1],) * 2)
    prior[1:, 1:] = np.kron(np.eye(block.m), np.linalg.inv(np.outer(sd, sd) * corr))
    Q = A.T @ A / sigma**2 + prior
    np.testing.assert_allclose(m[0], alpha + A @ np.linalg.solve(Q, A.T @ (design.y - alpha)) / sigma**2, rtol=1e-10)
    np.testing.assert_allclose(v[0], np.diag(A @ np.linalg.solve(Q, A.T)), rtol=1e-9)
    # log p(y | phi): the slope's flat prior integrated (a constant density 1) is the dense normal y ~ N(alpha, V)
    # times (2 pi)^(1/2) |xc' V^-1 xc|^(-1/2) exp((xc' V^-1 (y - alpha))^2 / (2 xc' V^-1 xc))
    V = Z @ np.kron(np.eye(block.m), np.outer(sd, sd) * corr) @ Z.T + sigma**2 * np.eye(design.nobs)
    Vi_x, e = np.linalg.solve(V, xc), design.y - alpha
    expected = (stats.multivariate_normal(np.full(design.nobs, alpha), V).logpdf(design.y) + 0.5 * np.log(2 * np.pi)
                - 0.5 * np.log(xc @ Vi_x) + 0.5 * (Vi_x @ e) ** 2 / (xc @ Vi_x))
    assert log_ml[0] == pytest.approx(expected, rel=1e-10)


# elpd_waic without a sampler: self-normalised importance sampling of phi = (log SDs, atanh rho, log sigma, alpha)
# from a multivariate t fitted at the mode of log p(y | phi) + log prior(phi) (the density above, with brms's priors
# read from the reference file's prior_summary), each proposal Rao-Blackwellised as in rao_blackwell_waic.

def _brms_priors(name):
    """brms's priors from a reference file's prior_summary: {'Intercept'|'sd'|'sigma': (df, loc, scale), 'L': eta}.
    Only what the device handles: flat population-level slopes, student-t on Intercept/sd/sigma, LKJ on L."""
    out = {}
    for row in reference(name)["prior_summary"]["rows"]:
        prior, cls = row["prior"], row["class"]
        if cls == "b":
            assert prior in ("", "(flat)")
        elif prior.startswith("student_t("):
            out[cls] = tuple(float(a) for a in prior[len("student_t(") : -1].split(","))
        elif prior.startswith("lkj_corr_cholesky("):
            out[cls] = float(prior[len("lkj_corr_cholesky(") : -1])
        else:
            assert prior == "", prior
    return out


def _log_posterior_phi(design, priors, phi):
    """log p(phi | y) + const on the unconstrained scale, and the unpacked (alpha, sd, corr, sigma); phi (D, dim)."""
    k = design.blocks[0].k
    assert k <= 2
    sd = np.exp(phi[:, :k])
    # |atanh rho| > 8 (1 - rho² < 5e-7; tanh rounds to 1 past 19) carries no posterior mass: weight zero there
    outside = np.abs(phi[:, k]) > 8 if k == 2 else np.zeros(len(phi), bool)
    rho = np.tanh(np.clip(phi[:, k], -8, 8)) if k == 2 else np.zeros(len(phi))
    corr = np.broadcast_to(np.eye(k), (len(phi), k, k)).copy()
    if k == 2:
        corr[:, 0, 1] = corr[:, 1, 0] = rho
    sigma = None if design.se is not None else np.exp(phi[:, -2])
    alpha = phi[:, -1]
    *moments, log_ml = _conditional_linear_predictor(design, alpha, sd, corr, sigma)
    df, loc, scale = priors["Intercept"]
    lp = log_ml + stats.t.logpdf(alpha, df, loc, scale)
    df, loc, scale = priors["sd"]  # half-t (its constant 2 cancels), with the Jacobian of exp
    lp = lp + (stats.t.logpdf(sd, df, loc, scale) + phi[:, :k]).sum(axis=1)
    if k == 2:  # LKJ(eta) for a 2 x 2 correlation is (1 - rho²)^(eta - 1); Jacobian of tanh 1 - rho²
        lp = lp + priors["L"] * np.log1p(-(rho**2))
    if sigma is not None:
        df, loc, scale = priors["sigma"]
        lp = lp + stats.t.logpdf(sigma, df, loc, scale) + phi[:, -2]
    return np.where(outside, -np.inf, lp), moments


def importance_sampled_waic(design, priors, proposals, batches=8, seed=0, chunk=2000, df=4, inflate=1.3):
    """elpd_waic and p_waic of the conditional log-likelihood with no Markov chain: proposals of phi from a
    multivariate t (df, covariance inflate² x the inverse Hessian at the mode), self-normalised weights, and given
    each phi the group effects and slopes integrated exactly (log E[p(y_i|.)|phi], E[log p|phi], Var[log p|phi]).
    The estimate pools all proposals; its Monte Carlo SE is the SD of the `batches` independent batch estimates
    / sqrt(batches). Returns dict(elpd_waic, p_waic, se_elpd, se_p, ess) (ess: mean per batch, as a fraction)."""
    assert design.offset is None and design.weights is None and len(design.blocks) == 1
    k = design.blocks[0].k
    dim = k + (k == 2) + (design.se is None) + 1
    f = lambda x: -_log_posterior_phi(design, priors, x[None])[0][0]
    spread = np.log(design.y.std())
    x0 = np.concatenate([np.full(k, spread - 1), np.zeros(int(k == 2)), [spread] if design.se is None else [],
                         [design.y.mean()]])
    mode = optimize.minimize(f, x0, method="BFGS").x
    mode = optimize.minimize(f, mode, method="Nelder-Mead", options=dict(xatol=1e-8, fatol=1e-10, maxiter=20_000)).x
    h, E = 1e-3 * np.maximum(1.0, np.abs(mode)), np.eye(dim)
    H = np.array([[(f(mode + h[a] * E[a] + h[b] * E[b]) - f(mode + h[a] * E[a] - h[b] * E[b])
                    - f(mode - h[a] * E[a] + h[b] * E[b]) + f(mode - h[a] * E[a] - h[b] * E[b])) / (4 * h[a] * h[b])
                   for b in range(dim)] for a in range(dim)])
    proposal = stats.multivariate_t(mode, np.linalg.inv(H) * inflate**2 * (df - 2) / df, df=df)
    log_w0 = -f(mode) - proposal.logpdf(mode)  # a fixed shift: the unnormalised weights stay finite
    _, (m0, v0, r0) = _log_posterior_phi(design, priors, mode[None])
    shift = (-0.5 * np.log(2 * np.pi * r0) - ((design.y - m0) ** 2 + v0) / (2 * r0))[0]  # centres E[log p|phi]
    rng = np.random.default_rng(seed)
    per = -(-proposals // batches)
    sums = np.zeros((batches, 5, design.nobs))  # per batch: sum w, sum w p, sum w c, sum w c², sum w Var (c centred)
    ess = []
    for b in range(batches):
        log_w_all = []
        for s in range(0, per, chunk):
            phi = proposal.rvs(min(chunk, per - s), random_state=rng).reshape(-1, dim)
            lp, (m, v, r) = _log_posterior_phi(design, priors, phi)
            log_w = lp - proposal.logpdf(phi) - log_w0
            log_w_all.append(log_w)
            w = np.exp(log_w)[:, None]
            d2 = (design.y - m) ** 2
            c = -0.5 * np.log(2 * np.pi * r) - (d2 + v) / (2 * r) - shift
            p_mean = np.exp(-0.5 * np.log(2 * np.pi * (r + v)) - d2 / (2 * (r + v)))
            sums[b] += [np.broadcast_to(w, m.shape).sum(0), (w * p_mean).sum(0), (w * c).sum(0), (w * c * c).sum(0),
                        (w * (2 * v * v + 4 * d2 * v) / (4 * r * r)).sum(0)]
        log_w_all = np.concatenate(log_w_all)
        ess.append(np.exp(2 * logsumexp(log_w_all) - logsumexp(2 * log_w_all)) / len(log_w_all))

    def summary(t):
        mean = t[1:] / t[0]
        p = mean[2] - mean[1] ** 2 + mean[3]
        return np.array([np.sum(np.log(mean[0]) - p), np.sum(p)])

    per_batch = np.array([summary(t) for t in sums])
    (elpd, p), se = summary(sums.sum(axis=0)), per_batch.std(axis=0, ddof=1) / np.sqrt(batches)
    return dict(elpd_waic=float(elpd), p_waic=float(p), se_elpd=float(se[0]), se_p=float(se[1]),
                ess=float(np.mean(ess)))


SLEEP = ("sleepstudy_slopes_brms", "Reaction ~ 1 + Days + (1 + Days | Subject)", "sleepstudy")
EIGHT = ("eight_schools_brms", "y | se(sigma) ~ 1 + (1 | school)", "eight_schools")


@pytest.mark.slow
def test_waic_estimators_agree_with_the_rao_blackwellised_value():
    """The sampler-free device (importance_sampled_waic, brms's priors) is first checked against eight schools'
    quadrature (reference waic_exact), then gives sleepstudy's elpd_waic, against which our plain estimator (the one
    compared with brms) and the Rao-Blackwellised one on the same 40,000 NUTS draws are tested.
    Measured Monte Carlo SDs (spread over seeds, matching the batch SEs the device reports):
      device, eight schools, 800,000 proposals: 0.0012 (elpd and p; 4 seeds at 800k, 6 at 400k); ESS 50 %;
      device, sleepstudy, 400,000 proposals: 0.012 (5 seeds: -859.936 -859.962 -859.937 -859.940 -859.955); ESS 63 %;
      NUTS 40,000 draws, sleepstudy (6 seeds; batch means agree): plain 0.09, Rao-Blackwellised 0.03-0.045;
        re-measured with the sampler as of this test (seeds 1-6): plain -859.923 (SD 0.055), RB -859.925 (SD 0.050);
      NUTS 20,000 draws, eight schools (10 seeds): Rao-Blackwellised 0.010, plain 0.015.
    Tolerances ~4 SD (the device's SD included); against quadrature also its grid error, ~1e-3.
    Run time on one core (taskset): ~33 s idle -- device 1.5 s (eight schools) + 13-15 s (sleepstudy), sampling and
    RB ~15 s -- and 49 s wall on a loaded machine."""
    name, formula, data = EIGHT
    exact = reference("eight_schools_brms_exact")["waic_exact"]
    assert reference("eight_schools_brms_exact")["same_model_as"].endswith(f"{name}.json")
    model = mlv.Model(formula, mlv.datasets.load(data))
    device = importance_sampled_waic(model.design, _brms_priors(name), 800_000, batches=16, seed=0)
    assert device["se_elpd"] < 0.003 and device["se_p"] < 0.003
    assert device["elpd_waic"] == pytest.approx(exact["elpd_waic"], abs=0.006)
    assert device["p_waic"] == pytest.approx(exact["p_waic"], abs=0.006)
    post = model.sample(chains=4, draws=5000, warmup=1000, seed=7, progress=False)
    rb_elpd, rb_p = rao_blackwell_waic(post)
    assert rb_elpd == pytest.approx(exact["elpd_waic"], abs=0.05)
    assert rb_p == pytest.approx(exact["p_waic"], abs=0.05)
    assert waic(post.log_likelihood())["elpd_waic"] == pytest.approx(exact["elpd_waic"], abs=0.08)

    name, formula, data = SLEEP
    model = mlv.Model(formula, mlv.datasets.load(data))
    device = importance_sampled_waic(model.design, _brms_priors(name), 400_000, batches=16, seed=0)
    assert device["se_elpd"] < 0.02  # a tenth of the tightest tolerance below
    post = model.sample(chains=4, draws=10_000, warmup=1000, seed=7, progress=False)
    rb_elpd, rb_p = rao_blackwell_waic(post)
    plain = waic(post.log_likelihood())
    assert rb_elpd == pytest.approx(device["elpd_waic"], abs=0.2)
    assert plain["elpd_waic"] == pytest.approx(device["elpd_waic"], abs=0.35)
    assert plain["p_waic"] == pytest.approx(rb_p, abs=0.3)
