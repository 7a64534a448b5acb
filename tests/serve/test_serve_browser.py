"""`lenet serve`'s page in a real browser: Debian's chromium and chromedriver, headless,
driven by selenium, against a real `lenet serve` subprocess on a free port.

Without the browser the test skips, except under CI (env CI set), where it fails:
.ci/run installs chromium and chromium-driver. With LENET_SCREENSHOT=FILE.png it saves
the page as it looks after the upload (the docs' picture: docs/serve-page.png), and
LENET_SERVE_RUN=RUN serves that run instead of the small synthetic one, e.g.

    LENET_SERVE_RUN=runs/fast LENET_SCREENSHOT=docs/serve-page.png \\
        .venv/bin/python -m pytest tests/serve/test_serve_browser.py
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from serving import Server, confident_test_image, png

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def browser():
    """A headless chromium through selenium, or a skip (a failure under CI)."""
    binary = next((shutil.which(name) for name in CHROMIUM if shutil.which(name)), None)
    driver_path = shutil.which("chromedriver")
    missing = [name for name, found in (("chromium", binary), ("chromedriver", driver_path))
               if not found]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service as DriverService
    except ImportError:
        missing.append("selenium")
    if missing:
        message = (f"{', '.join(missing)} not installed (apt-get install chromium "
                   "chromium-driver; pip install selenium)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,860"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=DriverService(driver_path), options=options)


@pytest.mark.slow
def test_draw_upload_and_pick_in_a_real_browser(served_run, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    run_dir = Path(os.environ.get("LENET_SERVE_RUN") or served_run)
    image, label = confident_test_image(run_dir)
    upload = tmp_path / f"test-image-{label.replace('/', '-')}.png"
    upload.write_bytes(png(image))
    server = Server(run_dir)
    driver = browser()
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(server.url + "/")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))

        def maps() -> int:
            return len(driver.find_elements(By.CSS_SELECTOR, "#layer1 img.map, "
                                                              "#layer2 img.map"))

        # A stroke drawn with the mouse: probabilities and 6 + 16 maps, live.
        pad = driver.find_element(By.ID, "pad")
        stroke = ActionChains(driver).move_to_element_with_offset(pad, -60, -80).click_and_hold()
        for _ in range(8):
            stroke.move_by_offset(12, 18)
        stroke.release().perform()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#top li")) == 5
                   and maps() == 22)
        bars = driver.find_elements(By.CSS_SELECTOR, "#top li .pct")
        assert all(b.text.endswith("%") for b in bars)
        assert driver.find_element(By.ID, "ood").text
        assert driver.find_element(By.ID, "seen").get_attribute("src").startswith("data:image")

        # Undo and clear are buttons (keyboard-usable); the canvas is empty afterwards.
        driver.find_element(By.ID, "undo").click()
        wait.until(lambda d: maps() == 0)

        # An uploaded test image is classified as its label.
        driver.find_element(By.ID, "file").send_keys(str(upload))
        wait.until(lambda d: upload.name in d.find_element(By.ID, "status").text)
        top = driver.find_element(By.CSS_SELECTOR, "#top li .name").text
        assert top == label, driver.find_element(By.ID, "status").text
        wait.until(lambda d: maps() == 22)
        screenshot = os.environ.get("LENET_SCREENSHOT")
        if screenshot:
            driver.save_screenshot(screenshot)

        # A random test image, from the run's own test split.
        driver.find_element(By.ID, "random").click()
        wait.until(lambda d: "test image #" in d.find_element(By.ID, "status").text)
        assert maps() == 22

        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
        assert server.alive()
    finally:
        driver.quit()
        log = server.stop()
    assert '"POST /v1/predict" 200' in log and '"POST /v1/activations" 200' in log
    assert " 500 " not in log
