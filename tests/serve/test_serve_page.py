"""The clinicians' page in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium): SynthEye
images in (file input and drag and drop), biomarker fields from the schema checked in the page, the streamed
report out, grounded numbers highlighted by source with their value on hover, server errors shown at the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from grok.serve.app import create_app
from serve_helpers import GROUNDED_CASE, GroundedEngine, LiveServer, browser_binaries, chromium, fill_case

pytestmark = pytest.mark.skipif(
    browser_binaries() is None,
    reason="headless Chromium is not installed: run `make web-test-tools` (apt-get install chromium chromium-driver, "
    "as root)",
)
CASE = GROUNDED_CASE


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


def _wait(driver, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def test_the_page_turns_two_images_and_a_row_into_a_report(browser, engine, serve_settings, eye_images, tmp_path):
    from selenium.webdriver.common.by import By

    with LiveServer(create_app(engine, serve_settings())) as live:
        browser.get(f"{live.url}/")
        fill_case(browser, *eye_images, {**CASE, "sbp_mmhg": "400"})
        button = browser.find_element(By.ID, "generate")
        error = browser.find_element(By.ID, "error-biomarkers-sbp_mmhg")
        assert "between 60 and 280 mmHg" in error.text and not button.is_enabled()  # checked in the page first
        units = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".field .unit")}
        assert {"mmHg", "years", "mmol/mol"} <= units
        fill_case(browser, *eye_images, CASE)
        assert error.text == "" and button.is_enabled()
        button.click()
        note = browser.find_element(By.ID, "grounding-note")
        _wait(browser, lambda d: "grounded" in note.text)  # the final report event arrived (a grounded export)
        assert browser.find_element(By.ID, "result").is_displayed()
        assert browser.find_element(By.ID, "result-oct").get_attribute("src").startswith("data:image/png")
        assert browser.find_element(By.ID, "result-cfp").is_displayed()
        assert browser.find_element(By.ID, "conclusion").text  # a label, or "not stated"
        assert not browser.find_element(By.ID, "progress").is_displayed()
        browser.save_screenshot(str(tmp_path / "page_report.png"))
    assert (tmp_path / "page_report.png").stat().st_size > 10_000


def test_grounded_numbers_are_highlighted_by_source_with_the_value_on_hover(
    browser, engine, serve_settings, eye_images, tmp_path
):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    app = create_app(GroundedEngine(engine, word_delay_s=0.05), serve_settings())
    with LiveServer(app) as live:
        browser.get(f"{live.url}/")
        fill_case(browser, *eye_images, CASE)
        browser.find_element(By.ID, "generate").click()
        progress = browser.find_element(By.ID, "progress")
        _wait(browser, lambda d: progress.is_displayed() and d.find_element(By.ID, "report").text)  # streaming
        assert "Generating" in progress.text
        marks = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#report mark.q"))
        by_source = {}
        for mark in marks:
            by_source.setdefault(mark.get_attribute("data-source"), []).append(mark.text)
        assert by_source == {"readout": ["≈342"], "knowledge_base": ["215", "300"], "input": ["150"]}
        ActionChains(browser).move_to_element(marks[0]).perform()
        tooltip = browser.find_element(By.ID, "tooltip")
        _wait(browser, lambda d: tooltip.is_displayed(), timeout=10)
        assert "central subfield macular thickness (CST): 342 µm" in tooltip.text
        assert "estimated from the image (read-out 339.2 µm)" in tooltip.text and "high" in tooltip.text
        ActionChains(browser).move_to_element(marks[-1]).perform()
        _wait(browser, lambda d: "measured (input)" in tooltip.text, timeout=10)
        assert browser.find_element(By.ID, "legend").is_displayed()
        findings = [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#findings li")]
        assert "centre-involving macular thickening" in findings
        assert browser.find_element(By.ID, "conclusion").text == "age-related macular degeneration"
        _wait(browser, lambda d: not progress.is_displayed())
        browser.save_screenshot(str(tmp_path / "page_grounded.png"))
    assert (tmp_path / "page_grounded.png").stat().st_size > 10_000


def test_a_server_refusal_is_shown_at_the_field(browser, engine, serve_settings, eye_images, tmp_path: Path):
    from selenium.webdriver.common.by import By

    fake = tmp_path / "not_an_image.png"
    fake.write_text("plain text, not pixels")
    with LiveServer(create_app(engine, serve_settings())) as live:
        browser.get(f"{live.url}/")
        fill_case(browser, fake, eye_images[1], CASE)
        browser.find_element(By.ID, "generate").click()
        error = browser.find_element(By.ID, "error-images-oct")
        _wait(browser, lambda d: error.text)
        assert error.text.startswith("images.oct: not an image")
        assert not browser.find_element(By.ID, "result").is_displayed()
