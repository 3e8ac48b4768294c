"""The dashboard in a real browser: ``workbench app`` serving the tiny model, headless Chromium
(Debian's, through Selenium) running the steer flow, a screenshot, and no Streamlit exception.

Chromium and its driver are installed by ``tests/browser_setup.py`` when missing (as root);
without them the test is skipped with the reason, except in CI, where it fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.browser_setup import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS, ensure_chromium, in_ci

pytestmark = pytest.mark.browser

PROMPT = "I went up to my friend and said"
SAMPLES = 4  # the app's default


@pytest.fixture(scope="module")
def chromium() -> None:
    reason = ensure_chromium()
    if reason is not None:
        if in_ci():
            pytest.fail(f"headless Chromium is required in CI: {reason}")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _workbench() -> list[str]:
    script = Path(sys.executable).with_name("workbench")
    return [str(script)] if script.exists() else [sys.executable, "-m", "workbench.cli"]


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`workbench app` exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"the app did not answer on port {port} within {timeout} s:\n{log.read_text()}")


@pytest.fixture
def app_url(tiny_model_dir: Path, tmp_path: Path) -> Iterator[str]:
    """``workbench app --port P`` on the tiny model; stopped (with its server) afterwards."""
    port = _free_port()
    env = {
        **os.environ,
        "WORKBENCH_APP_MODEL": str(tiny_model_dir),
        "WORKBENCH_APP_DIR": str(tmp_path / "work"),
        "HF_HUB_OFFLINE": "1",
    }
    log = tmp_path / "app.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*_workbench(), "app", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops streamlit too
        )
    try:
        _wait_healthy(port, proc, log, timeout=45)
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_steer_flow_in_headless_chromium(chromium: None, app_url: str, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_window_size(1400, 2600)  # tall enough to show both columns in one shot
        wait = WebDriverWait(driver, 60)
        driver.get(f"{app_url}/steer")
        prompt = wait.until(
            ec.element_to_be_clickable((By.CSS_SELECTOR, 'input[aria-label="Prompt"]'))
        )
        prompt.send_keys(Keys.CONTROL, "a")
        prompt.send_keys(PROMPT, Keys.ENTER)
        button = wait.until(
            ec.element_to_be_clickable((By.XPATH, "//button[.//p[normalize-space()='Steer']]"))
        )
        button.click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".wb-steered")) == SAMPLES)
        plain = driver.find_elements(By.CSS_SELECTOR, ".wb-unsteered")
        steered = driver.find_elements(By.CSS_SELECTOR, ".wb-steered")
        assert len(plain) == len(steered) == SAMPLES
        assert all(box.text.startswith(PROMPT) for box in plain + steered)
        # The two columns sit side by side: steered boxes are to the right of unsteered ones.
        assert steered[0].location["x"] > plain[0].location["x"] + 200
        assert abs(steered[0].location["y"] - plain[0].location["y"]) < 5
        # The coloured passage and the rest of the page render after the columns.
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".wb-passage"))
        wait.until(
            lambda d: d.find_elements(By.XPATH, "//h3[normalize-space()='Keep this vector']")
        )
        shot = tmp_path / "steer.png"
        assert driver.save_screenshot(str(shot))
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
        assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
        print(f"screenshot: {shot}")
    finally:
        driver.quit()
