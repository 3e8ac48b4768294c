"""The dashboard in a real browser: ``workbench app`` serving the tiny model, headless Chromium
(Debian's, through Selenium) driving it as a newcomer would.

One server and one browser serve the whole module (each test opens its page afresh, which starts
a new Streamlit session). The tests after the first pin what issue 18 found: a broken candidate
sent without a word, a capture that overwrote another store, an invalid layer silently replaced,
a failed model switch that took over the session, a mislabelled overshoot plot, and a failed run
that wiped the good one before it.

Chromium and its driver are installed by ``tests/browser_setup.py`` when missing (as root);
without them the tests are skipped with the reason, except in CI, where they fail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.app.browser_setup import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS, ensure_chromium, in_ci
from workbench.activations.capture import capture
from workbench.model.load import load_model

pytestmark = pytest.mark.browser

PROMPT = "I went up to my friend and said"
SAMPLES = 4  # the app's default
WAIT_S = 60


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


@pytest.fixture(scope="module")
def workspace(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace root with one store of the tiny model's activations already captured."""
    root = tmp_path_factory.mktemp("browser-root")
    docs = [f"Document {i} is about topic {i % 3} and little else." for i in range(12)]
    capture(
        load_model(str(tiny_model_dir)),
        docs,
        [2],
        max_tokens=16,
        out=root / "work" / "stores" / "tiny-general-resid_pre-L2",
        progress_bar=False,
    )
    return root


@pytest.fixture(scope="module")
def app_url(tiny_model_dir: Path, workspace: Path) -> Iterator[str]:
    """``workbench app --root R --port P`` on the tiny model; stopped (with its server) after."""
    port = _free_port()
    env = {**os.environ, "WORKBENCH_APP_MODEL": str(tiny_model_dir), "HF_HUB_OFFLINE": "1"}
    env.pop("WORKBENCH_APP_DIR", None)
    log = workspace / "app.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*_workbench(), "app", "--port", str(port), "--root", str(workspace)]
            + ["--workdir", "work"],
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


@pytest.fixture(scope="module")
def driver(chromium: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    d = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    d.set_window_size(1400, 2600)  # tall enough to show both columns in one shot
    try:
        yield d
    finally:
        d.quit()


# --------------------------------------------------------------------------- helpers


def _by() -> Any:
    from selenium.webdriver.common.by import By

    return By


def _until(driver: Any, cond: Callable[[Any], Any], timeout: float = WAIT_S) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(cond)


def _idle(driver: Any) -> None:
    """Wait until Streamlit has finished the current rerun (no 'Running' status). On a loaded
    machine the rerun may start late, so first give the status a moment to appear."""
    from selenium.common.exceptions import TimeoutException

    status = '[data-testid="stStatusWidget"]'
    with contextlib.suppress(TimeoutException):
        _until(driver, lambda d: d.find_elements(_by().CSS_SELECTOR, status), timeout=1.0)
    _until(driver, lambda d: not d.find_elements(_by().CSS_SELECTOR, status))


def _open(driver: Any, url: str) -> None:
    driver.get(url)
    _until(driver, lambda d: d.find_elements(_by().CSS_SELECTOR, "h1"))
    _idle(driver)


def _input(driver: Any, label: str) -> Any:
    from selenium.webdriver.support import expected_conditions as ec

    return _until(
        driver, ec.element_to_be_clickable((_by().CSS_SELECTOR, f'input[aria-label="{label}"]'))
    )


def _type(driver: Any, label: str, text: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    box = _input(driver, label)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
    ActionChains(driver).click(box).key_down(Keys.CONTROL).send_keys("a").key_up(
        Keys.CONTROL
    ).perform()
    chain = ActionChains(driver).send_keys(Keys.DELETE).send_keys(text).send_keys(Keys.ENTER)
    chain.perform()
    _idle(driver)


def _button(driver: Any, text: str) -> Any:
    xpath = f"//button[.//p[normalize-space()='{text}']]"
    return _until(driver, lambda d: d.find_element(_by().XPATH, xpath))


def _click(driver: Any, text: str) -> None:
    button = _button(driver, text)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    button.click()
    _idle(driver)


def _page_text(driver: Any) -> str:
    return str(driver.find_element(_by().CSS_SELECTOR, "section.main, .main, body").text)


def _no_exception(driver: Any) -> None:
    assert not driver.find_elements(_by().CSS_SELECTOR, '[data-testid="stException"]')


# --------------------------------------------------------------------------- tests


def test_steer_flow_in_headless_chromium(driver: Any, app_url: str, tmp_path: Path) -> None:
    By = _by()
    _open(driver, f"{app_url}/steer")
    _type(driver, "Prompt", PROMPT)
    _click(driver, "Steer")
    _until(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".wb-steered")) == SAMPLES)
    plain = driver.find_elements(By.CSS_SELECTOR, ".wb-unsteered")
    steered = driver.find_elements(By.CSS_SELECTOR, ".wb-steered")
    assert len(plain) == len(steered) == SAMPLES
    assert all(box.text.startswith(PROMPT) for box in plain + steered)
    # The two columns sit side by side: steered boxes are to the right of unsteered ones.
    assert steered[0].location["x"] > plain[0].location["x"] + 200
    assert abs(steered[0].location["y"] - plain[0].location["y"]) < 5
    # The coloured passage and the rest of the page render after the columns.
    _until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".wb-passage"))
    _until(
        driver, lambda d: d.find_elements(By.XPATH, "//h3[normalize-space()='Keep this vector']")
    )
    shot = tmp_path / "steer.png"
    assert driver.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    _no_exception(driver)


def test_a_component_goes_to_steering_in_norm_units_under_its_one_name(
    driver: Any, app_url: str
) -> None:
    """Item 1: a card's Steer button sent the direction at raw 5.0 as `pca+0@2`, while the
    candidates table called it `c000pos` and sent candidates in norm units."""
    By = _by()
    _open(driver, f"{app_url}/decompose")
    _click(driver, "Fit")
    _click(driver, "Steer +0")
    _until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, 'input[aria-label="Prompt"]'))
    _idle(driver)
    checked = [
        r.text
        for r in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stRadio"] label')
        if r.find_elements(By.CSS_SELECTOR, "input:checked")
    ]
    assert "norm" in checked, checked
    assert "c000pos" in _page_text(driver)
    _no_exception(driver)


def test_capture_never_overwrites_a_store_by_default(driver: Any, app_url: str) -> None:
    """Item 2: the store folder kept the first corpus's name and Replace was ticked, so
    capturing `happy` overwrote the `general` store."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.keys import Keys

    By = _by()
    _open(driver, f"{app_url}/model_and_data")
    before = _input(driver, "Store folder").get_attribute("value")
    replace = _until(
        driver,
        lambda d: d.find_element(
            By.XPATH,
            "//div[@data-testid='stCheckbox'][contains(normalize-space(.), 'Replace')]//input",
        ),
    )
    assert not replace.is_selected(), "Replace is ticked by default"
    assert "general" in before
    corpus = driver.find_element(
        By.XPATH, "//div[@data-testid='stSelectbox'][.//label[.//p='Built-in corpus']]//input"
    )
    corpus.click()
    corpus.send_keys("happy")
    corpus.send_keys(Keys.ENTER)
    _idle(driver)
    with contextlib.suppress(TimeoutException):  # a loaded machine may start the rerun late
        _until(driver, lambda d: "happy" in _input(d, "Store folder").get_attribute("value"))
    after = _input(driver, "Store folder").get_attribute("value")
    assert "happy" in after and "general" not in after, after
    _no_exception(driver)


def test_an_invalid_layer_disables_steer_and_says_why(driver: Any, app_url: str) -> None:
    """Item 3: layer 99 stayed in the field while Steer ran at the last valid layer."""
    _open(driver, f"{app_url}/steer")
    _type(driver, "Layer", "99")
    time.sleep(1.0)  # the rerun that reads the field
    _idle(driver)
    assert not _button(driver, "Steer").is_enabled(), "Steer runs with layer 99 in the field"
    assert "layer 99" in _page_text(driver).lower()
    _no_exception(driver)


def test_a_model_that_fails_to_load_leaves_the_session_model(driver: Any, app_url: str) -> None:
    """Item 4: a failed switch became the session model and every page showed only its error."""
    By = _by()
    _open(driver, f"{app_url}/model_and_data")
    _type(driver, "…or a model name or path", "/no/such/model")
    _click(driver, "Use this model")
    _until(driver, lambda d: "model path not found" in _page_text(d))
    link = driver.find_element(By.CSS_SELECTOR, 'a[data-testid="stSidebarNavLink"][href$="/steer"]')
    driver.execute_script("arguments[0].click();", link)  # in-app navigation keeps the session
    _idle(driver)
    _until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, 'input[aria-label="Prompt"]'), 20)
    assert "model path not found" not in _page_text(driver)
    _no_exception(driver)


def test_overshoot_plot_says_what_it_shows(driver: Any, app_url: str) -> None:
    """Item 5: the caption said "minus unsteered" under absolute curves; a missing onset or
    best showed "—" with no reason."""
    By = _by()
    _open(driver, f"{app_url}/overshoot")
    _type(driver, "Coefficients (0 is added)", "0, 4")
    _click(driver, "Run sweep")
    _until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot"), 120)
    _idle(driver)
    text = _page_text(driver)
    assert "minus unsteered" not in text
    titles = [t.text for t in driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .g-ytitle")]
    assert any("absolute" in t for t in titles), titles
    values = [m.text for m in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]')]
    if any("—" in v for v in values):
        assert "Why no " in text, values
    _no_exception(driver)


def test_a_failed_run_keeps_the_good_one(driver: Any, app_url: str) -> None:
    """Item 9: a run that failed (here: a vector file that is not there) wiped the completions
    of the good run before it."""
    By = _by()
    _open(driver, f"{app_url}/steer")
    _click(driver, "Steer")
    _until(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".wb-steered")) == SAMPLES)
    driver.find_element(By.XPATH, "//label[.//p[normalize-space()='Saved file']]").click()
    _idle(driver)
    _type(driver, "Vector file (.safetensors)", "nowhere.safetensors")
    _click(driver, "Steer")
    _until(driver, lambda d: "vector file not found" in _page_text(d))
    assert len(driver.find_elements(By.CSS_SELECTOR, ".wb-steered")) == SAMPLES
    _no_exception(driver)


def test_a_reload_keeps_the_session(driver: Any, app_url: str) -> None:
    """Issue 16: a page reload (a new Streamlit session) forgot every result."""
    By = _by()
    _open(driver, f"{app_url}/steer")
    _click(driver, "Steer")
    _until(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".wb-steered")) == SAMPLES)
    driver.refresh()
    _until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "h1"))
    _idle(driver)
    _until(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".wb-steered")) == SAMPLES)
    _no_exception(driver)
