"""Families and links checked against mathematics: inverses, finite differences, scipy.stats densities."""

import numpy as np
import pytest
from scipy import stats

from multilevel import families as F
from multilevel.errors import MultilevelError

ETA = np.linspace(-3, 3, 13)
ALL = [
    F.Gaussian(sigma=1.7),
    F.Gaussian(link="log", sigma=0.5),
    F.Binomial(),
    F.Binomial("probit"),
    F.Binomial("cloglog"),
    F.Poisson(),
    F.NegativeBinomial(2.5),
]


@pytest.mark.parametrize("name", ["identity", "log", "logit", "probit", "cloglog"])
def test_link_inverse_and_derivatives(name):
    link = F.Link(name)
    mu = link.linkinv(ETA)
    # cloglog at eta = 3 has 1 - mu = 2e-9: the round trip keeps only ~8 digits there
    np.testing.assert_allclose(link.linkfun(mu), ETA, rtol=1e-8, atol=1e-10)
    h = 1e-5
    np.testing.assert_allclose(link.mu_eta(ETA), (link.linkinv(ETA + h) - link.linkinv(ETA - h)) / (2 * h),
                               rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(link.mu_eta2(ETA), (link.mu_eta(ETA + h) - link.mu_eta(ETA - h)) / (2 * h),
                               rtol=1e-6, atol=1e-10)


def _responses(fam, rng):
    mu = fam.link.linkinv(ETA)
    w = np.full(ETA.shape, 7.0) if fam.name == "binomial" else np.linspace(0.5, 2, ETA.size)
    return fam.simulate(mu, w, rng), w


@pytest.mark.parametrize("fam", ALL, ids=repr)
def test_score_and_observed_information_are_derivatives_of_loglik(fam):
    y, w = _responses(fam, np.random.default_rng(1))
    h = 1e-5

    def ll(eta):
        return fam.loglik(y, fam.link.linkinv(eta), w)

    np.testing.assert_allclose(fam.score(y, ETA, w), (ll(ETA + h) - ll(ETA - h)) / (2 * h), rtol=1e-6, atol=1e-8)
    second = (ll(ETA + h) - 2 * ll(ETA) + ll(ETA - h)) / h**2
    np.testing.assert_allclose(fam.observed_information(y, ETA, w), -second, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fam", ALL, ids=repr)
def test_expected_information_is_mean_of_observed(fam):
    mu = fam.link.linkinv(ETA)
    w = np.full(ETA.shape, 3.0)
    # the observed information is linear in y: at y = E(y) = mu it is the expected information
    np.testing.assert_allclose(fam.observed_information(mu, ETA, w), fam.expected_information(ETA, w), rtol=1e-10)


def test_loglik_matches_scipy_stats():
    mu = np.array([0.2, 0.5, 0.9])
    n = np.array([10.0, 4.0, 1.0])
    k = np.array([3.0, 4.0, 0.0])
    np.testing.assert_allclose(F.Binomial().loglik(k / n, mu, n), stats.binom.logpmf(k, n, mu), rtol=1e-12)
    counts, lam = np.array([0.0, 3.0, 12.0]), np.array([0.5, 2.0, 10.0])
    np.testing.assert_allclose(F.Poisson().loglik(counts, lam), stats.poisson.logpmf(counts, lam), rtol=1e-12)
    theta = 1.7
    np.testing.assert_allclose(F.NegativeBinomial(theta).loglik(counts, lam),
                               stats.nbinom.logpmf(counts, theta, theta / (theta + lam)), rtol=1e-12)
    y = np.array([0.3, -1.0, 2.0])
    np.testing.assert_allclose(F.Gaussian(sigma=2.0).loglik(y, lam, n), stats.norm.logpdf(y, lam, 2.0 / np.sqrt(n)),
                               rtol=1e-12)


def test_loglik_splits_into_kernel_and_normaliser():
    """The mu-free normaliser (summed once by PIRLS) plus the kernel is scipy's log-probability."""
    counts, lam, n = np.array([0.0, 3.0, 12.0]), np.array([0.5, 2.0, 10.0]), np.array([12.0, 4.0, 20.0])
    cases = [(F.Binomial(), counts / n, lam / 21, n, stats.binom.logpmf(counts, n, lam / 21)),
             (F.Poisson(), counts, lam, None, stats.poisson.logpmf(counts, lam)),
             (F.NegativeBinomial(1.7), counts, lam, None, stats.nbinom.logpmf(counts, 1.7, 1.7 / (1.7 + lam)))]
    for fam, y, mu, w, expected in cases:
        np.testing.assert_allclose(fam.loglik_kernel(y, mu, w) + fam.log_normaliser(y, w), expected, rtol=1e-12)


@pytest.mark.parametrize("fam", ALL, ids=repr)
def test_deviance_is_twice_loglik_gap_to_saturated(fam):
    y, w = _responses(fam, np.random.default_rng(2))
    mu = fam.link.linkinv(ETA)
    r = fam.deviance_residuals(y, mu, w)
    scale = fam.dispersion**2 if fam.name == "gaussian" else 1.0
    gap = 2 * (fam.saturated_loglik(y, w) - fam.loglik(y, mu, w)) * scale
    np.testing.assert_allclose(r**2, gap, rtol=1e-9, atol=1e-10)
    assert np.all(np.sign(r) == np.sign(y - mu))


@pytest.mark.parametrize("fam", [F.Binomial(), F.Poisson(), F.NegativeBinomial(3.0)], ids=repr)
def test_simulation_has_the_family_mean_and_variance(fam):
    mu = np.full(200_000, 0.3 if fam.name == "binomial" else 4.0)
    w = np.full(mu.size, 5.0) if fam.name == "binomial" else None
    y = fam.simulate(mu, w, rng=3)
    var = fam.variance(mu[0]) / (5.0 if fam.name == "binomial" else 1.0)
    assert abs(y.mean() - mu[0]) < 4 * np.sqrt(var / mu.size)
    assert abs(y.var() / var - 1) < 0.02


def test_working_response_is_a_fisher_scoring_step():
    fam, y = F.Poisson(), np.array([0.0, 2.0, 5.0])
    eta = np.log(np.array([1.0, 1.5, 6.0]))
    w, z = fam.working(y, eta)
    np.testing.assert_allclose(w * (z - eta), fam.score(y, eta), rtol=1e-12)


@pytest.mark.parametrize(
    "text, cls, link",
    [("binomial", F.Binomial, "logit"), ("binomial(probit)", F.Binomial, "probit"),
     ('binomial(link = "cloglog")', F.Binomial, "cloglog"), ("poisson", F.Poisson, "log"),
     ("negbinomial", F.NegativeBinomial, "log"), ("nbinom2", F.NegativeBinomial, "log"),
     ("gaussian", F.Gaussian, "identity"), (None, F.Gaussian, "identity")],
)
def test_parse_r_style_strings(text, cls, link):
    fam = F.parse(text)
    assert isinstance(fam, cls) and fam.link.name == link


@pytest.mark.parametrize("text", ["binomal", "poisson(logit)", "binomial(log)", 3])
def test_parse_refuses_unknown(text):
    with pytest.raises(MultilevelError):
        F.parse(text)


def test_bad_responses_are_refused_naming_rows():
    with pytest.raises(MultilevelError, match="negative"):
        F.Poisson().check_response(np.array([1.0, -2.0]))
    with pytest.raises(MultilevelError, match="count"):
        F.NegativeBinomial().check_response(np.array([1.5, 2.0]))
    with pytest.raises(MultilevelError, match=r"\[0, 1\].*row 2: 1.2"):
        F.Binomial().check_response(np.array([0.5, 1.2]))
    with pytest.raises(MultilevelError, match="successes"):
        F.Binomial().check_response(np.array([0.5, 0.3]), np.array([2.0, 2.0]))


def test_canonical_links():
    assert F.Binomial().canonical and F.Poisson().canonical and F.Gaussian().canonical
    assert not F.Binomial("probit").canonical and not F.NegativeBinomial(1.0).canonical


def test_canonical_shortcuts_equal_the_general_formulas():
    """For logit and log links the score, information, kernel and the information's slope written with eta equal the
    general formulas (mu, d mu / d eta, V(mu)); beyond the clamps the general ones are used."""
    eta = np.linspace(-6, 6, 25)
    for fam, y, w in ((F.Binomial(), np.linspace(0, 1, 25), np.full(25, 4.0)), (F.Poisson(), np.arange(25.0), None)):
        mu, d1, v = fam.link.linkinv(eta), fam.link.mu_eta(eta), fam.variance(fam.link.linkinv(eta))
        ones = np.ones(25) if w is None else w
        score, info = fam.score_and_information(y, eta, w)
        np.testing.assert_allclose(score, ones * (y - mu) * d1 / v, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(info, ones * d1**2 / v, rtol=1e-13)
        np.testing.assert_allclose(fam.kernel_at(y, eta, w), fam.loglik_kernel(y, mu, w), rtol=1e-13, atol=1e-13)
        h = 1e-6
        numeric = (fam.information(y, eta + h, w) - fam.information(y, eta - h, w)) / (2 * h)
        np.testing.assert_allclose(fam.information_slope(y, eta, w), numeric, rtol=1e-7, atol=1e-9)
    assert F.Binomial().information_slope(np.zeros(2), np.array([0.0, 40.0])) is None
    assert F.Binomial("probit").information_slope(np.zeros(3), np.zeros(3)) is None


@pytest.mark.parametrize("kind", ["observed", "expected"])
def test_negative_binomial_exact_partials_are_the_derivatives(kind):
    """The negative binomial's information slope in eta and its partials in log(theta) at fixed eta (log-likelihood,
    score, information) equal central differences of the general formulas."""
    rng = np.random.default_rng(0)
    y, eta, w = rng.poisson(3, 40).astype(float), rng.normal(1, 0.7, 40), rng.integers(1, 3, 40).astype(float)
    fam, h = F.NegativeBinomial(2.5), 1e-6
    numeric = (fam.information(y, eta + h, w, kind) - fam.information(y, eta - h, w, kind)) / (2 * h)
    np.testing.assert_allclose(fam.information_slope(y, eta, w, kind), numeric, rtol=1e-7, atol=1e-9)
    up, down = F.NegativeBinomial(2.5 * np.exp(h)), F.NegativeBinomial(2.5 * np.exp(-h))
    mu = np.exp(eta)
    expected = [(up.loglik(y, mu, w) - down.loglik(y, mu, w)) / (2 * h),
                (up.score(y, eta, w) - down.score(y, eta, w)) / (2 * h),
                (up.information(y, eta, w, kind) - down.information(y, eta, w, kind)) / (2 * h)]
    for exact, numeric in zip(fam.size_partials(y, eta, w, kind), expected):
        np.testing.assert_allclose(exact, numeric, rtol=1e-7, atol=1e-8)
