"""The HTML report of a sleepstudy fit (REML and Bayes) in real headless Chromium: no console errors,
every image loaded, the tables hold the results' estimates; plus the page needs no network."""

from __future__ import annotations

import re
import shutil

import pytest

import multilevel as mlv
from multilevel.errors import MultilevelError
from multilevel.html_report import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def results():
    model = mlv.Model("Reaction ~ Days + (Days | Subject)", mlv.datasets.load("sleepstudy"))
    return model.fit(), model.sample(chains=2, draws=100, warmup=100, seed=3, progress=False)


@pytest.fixture(scope="module")
def page(results, tmp_path_factory):
    return report(list(results), tmp_path_factory.mktemp("report") / "sleepstudy.html")


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def cell_values(driver, table_id: str) -> dict[str, list[float]]:
    """Row key -> the full numbers (data-value) of a report table."""
    rows = driver.find_elements("css selector", f"#{table_id} tbody tr")
    out = {}
    for row in rows:
        cells = row.find_elements("css selector", "td[data-value]")
        out[row.get_attribute("data-key")] = [float(c.get_attribute("data-value")) for c in cells]
    return out


def test_report_in_chromium(results, page, browser, tmp_path):
    fit, post = results
    browser.get(page.as_uri())
    assert browser.title == "Multilevel model report"
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
    images = browser.find_elements("tag name", "img")
    assert len(images) >= 8  # caterpillar, variance bars, residuals, SD posteriors, trace, rank, PPC, Pareto k
    for img in images:
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0
    fixed = cell_values(browser, "fixed-reml")
    for term, row in fit.fixed_effects.iterrows():
        assert fixed[term][:2] == [row["estimate"], row["std_error"]]
    bayes = cell_values(browser, "fixed-bayes-nuts")
    for term, row in post.fixed_effects.iterrows():
        assert bayes[term] == [row["estimate"], row["std_error"], row["ci_lower"], row["ci_upper"]]
    shown = browser.find_element("css selector", "#fixed-reml tbody tr td[data-value]").text
    assert shown == f"{fit.fixed_effects['estimate'].iloc[0]:.4f}"
    varcomp = cell_values(browser, "varcomp-reml")
    for i, row in fit.variance_components.iterrows():
        expected = [row["variance"], row["sd"]] if row["term2"] == "" else [row["variance"], row["corr"]]
        assert varcomp[str(i)] == expected
    side = cell_values(browser, "compare-fixed")
    assert side["Days"] == [fit.fixed_effects.loc["Days", "estimate"], fit.fixed_effects.loc["Days", "std_error"],
                            post.fixed_effects.loc["Days", "estimate"], post.fixed_effects.loc["Days", "std_error"]]
    warnings_shown = [w.text for w in browser.find_elements("css selector", ".warning")]
    assert len(warnings_shown) == len(fit.warnings) + len(post.warnings)
    browser.set_window_size(390, 844)  # a phone: nothing wider than the screen but the scrolling tables
    overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    browser.set_window_size(1200, 900)
    assert browser.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_report_is_self_contained(page):
    html = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)  # nothing fetched from a network
    assert "@media print" in html and 'name="viewport"' in html
    assert html.count("data:image/png;base64,") == html.count("<img")


def test_report_never_overwrites_unless_forced(results, page):
    before = page.read_text()
    with pytest.raises(MultilevelError, match="already exists"):
        report(results[0], page)
    assert page.read_text() == before
    report(results[0], page, force=True)
    assert page.read_text() != before
