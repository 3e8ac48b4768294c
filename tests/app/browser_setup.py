"""Headless Chromium for the browser test: Debian's ``chromium`` and ``chromium-driver``.

Playwright's own browser download does not work here, so the browser test drives Debian's
Chromium through Selenium. :func:`ensure_chromium` installs the two packages with apt when they
are missing and we are root (or have password-less sudo); otherwise it says why it cannot, and
the test skips with that reason, except in CI (``CI=true``), where a missing browser fails.

Run ``python tests/browser_setup.py`` to install them by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PACKAGES = ("chromium", "chromium-driver")
INSTALL_TIMEOUT_S = 900

# Flags for a quiet, sandbox-free headless browser inside a container.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1100",
)


def in_ci() -> bool:
    """True when running under CI (``CI=true`` or ``CI=1``)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def installed() -> bool:
    return CHROMIUM.exists() and CHROMEDRIVER.exists()


def _privilege_prefix() -> list[str] | None:
    """``[]`` as root, ``["sudo", "-n"]`` with password-less sudo, else None."""
    if os.geteuid() == 0:
        return []
    sudo = shutil.which("sudo")
    if sudo and subprocess.run([sudo, "-n", "true"], capture_output=True).returncode == 0:
        return [sudo, "-n"]
    return None


def ensure_chromium() -> str | None:
    """Install Chromium and its driver if missing; None when ready, else why they are not."""
    if installed():
        return None
    apt = shutil.which("apt-get")
    if apt is None:
        return f"{CHROMIUM} or {CHROMEDRIVER} missing and there is no apt-get to install them"
    prefix = _privilege_prefix()
    if prefix is None:
        return (
            f"{CHROMIUM} or {CHROMEDRIVER} missing and installing needs root: run "
            f"`apt-get install -y {' '.join(PACKAGES)}` as root"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = [
        [*prefix, apt, "update"],
        [*prefix, apt, "install", "-y", "--no-install-recommends", *PACKAGES],
    ]
    for cmd in steps:
        try:
            done = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            return f"`{' '.join(cmd)}` took longer than {INSTALL_TIMEOUT_S} s"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            return f"`{' '.join(cmd)}` failed: {tail[0]}"
    if not installed():
        return f"apt installed {' '.join(PACKAGES)} but {CHROMIUM} or {CHROMEDRIVER} is missing"
    return None


if __name__ == "__main__":
    reason = ensure_chromium()
    print("chromium ready" if reason is None else f"not installed: {reason}")
    raise SystemExit(0 if reason is None else 1)
