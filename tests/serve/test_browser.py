"""The page in a real browser: headless Chromium from the distribution's packages (never downloaded), driven by
Selenium, runs the whole flow as a user would, and the downloaded probabilities.csv is compared with what
``gsrcl predict`` writes for the same inputs. With GSRCL_SCREENSHOT=1, a screenshot of the results replaces docs/serve.png."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from gsrcl.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists()
                                                else None)
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "serve.png"  # written with GSRCL_SCREENSHOT=1

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                 reason="chromium and chromium-driver are not installed (.ci/run installs them)")]


@pytest.fixture()
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a test dependency")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,1500", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def _until(condition, timeout: float = 120, what: str = "the page"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_the_whole_flow_in_a_browser(server, browser, pbmc68k_query_file, tiny_refdir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    find = browser.find_element
    browser.get(server.url + "/")
    _until(lambda: len(find(By.ID, "reference").find_elements(By.TAG_NAME, "option")) == 2, what="references")
    Select(find(By.ID, "reference")).select_by_value("pbmc68k_gsrcl")
    assert "gsrcl" in find(By.ID, "reference-info").text and "cell types" in find(By.ID, "reference-info").text
    find(By.ID, "file").send_keys(str(pbmc68k_query_file))
    find(By.ID, "upload").click()

    report = _until(lambda: find(By.ID, "verify-report").is_displayed() and find(By.ID, "verify-report"),
                    what="the verify report")
    text = report.text
    assert "Cells" in text and "210" in text and "Reference genes matched" in text and " of " in text
    assert "uploaded query.h5ad" in find(By.ID, "upload-text").text

    p = find(By.ID, "p")
    p.clear()
    p.send_keys("0.6")
    find(By.ID, "start").click()
    _until(lambda: find(By.ID, "results").is_displayed(), what="the results")
    _until(lambda: "of 210" in find(By.ID, "page-info").text, what="the cells table")
    assert "done" in find(By.ID, "stage").text and "100%" in find(By.ID, "stage").text
    counts = {r.find_elements(By.TAG_NAME, "td")[0].text: int(r.find_elements(By.TAG_NAME, "td")[1].text)
              for r in find(By.ID, "counts").find_elements(By.CSS_SELECTOR, "tbody tr")}
    assert sum(counts.values()) == 210 and "Unassigned" in counts

    find(By.CSS_SELECTOR, "th[data-sort='conf_score']").click()  # sorted by confidence, highest first
    _until(lambda: "sorted-desc" in find(By.CSS_SELECTOR, "th[data-sort='conf_score']").get_attribute("class"),
           what="sorting")
    rows = find(By.ID, "cells").find_elements(By.CSS_SELECTOR, "tbody tr")
    conf = [float(r.find_elements(By.TAG_NAME, "td")[2].text) for r in rows]
    assert len(rows) == 50 and conf == sorted(conf, reverse=True)
    find(By.ID, "next").click()
    _until(lambda: find(By.ID, "page-info").text.startswith("cells 51-100"), what="the next page")
    _until(lambda: find(By.ID, "tsne").get_attribute("naturalWidth") not in (None, "0"), what="the t-SNE")
    browser.find_element(By.ID, "step-verify").location_once_scrolled_into_view
    browser.save_screenshot(str(SCREENSHOT if os.environ.get("GSRCL_SCREENSHOT") == "1" else tmp_path / "page.png"))

    find(By.CSS_SELECTOR, "#downloads a[data-file='probabilities.csv']").click()
    downloaded = _until(lambda: (browser.downloads / "probabilities.csv").is_file()
                        and not list(browser.downloads.glob("*.crdownload"))
                        and browser.downloads / "probabilities.csv", what="the download")
    out = tmp_path / "cli"
    assert main(["predict", "-i", str(pbmc68k_query_file), "-r", "pbmc68k_gsrcl", "-mp", str(tiny_refdir), "-p", "0.6",
                 "-o", str(out), "-q"]) == 0
    assert downloaded.read_bytes() == (out / "probabilities.csv").read_bytes()
