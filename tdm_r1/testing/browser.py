"""Headless Chromium for the browser tests: where it is, and what a machine without it is told.

The browser tests (the report page, the labelling app driven by Selenium) need Debian's
``chromium`` and ``chromium-driver``; ``.ci/run`` installs them. Elsewhere they skip, and the
test session ends with :data:`BROWSER_SKIP_REASON`'s install line (``tests/conftest.py``).
"""

from __future__ import annotations

import shutil

BROWSER_SKIP_REASON = (
    "needs headless Chromium: `sudo apt-get install chromium chromium-driver` (Debian/Ubuntu; "
    ".ci/run installs them)"
)


def chromium_binary() -> str | None:
    """The Chromium executable on PATH, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromedriver() -> str | None:
    """The chromedriver executable on PATH, or None."""
    return shutil.which("chromedriver")
