"""Headless Debian Chromium (/usr/bin/chromium) driven by Playwright for browser tests.

Playwright's own browser download does not work on our machines, so the system Chromium is
launched through ``executable_path``, as root, with the flags that keep it from reaching out
(background networking, component updates, sync, QUIC) and a new empty profile directory.
Without Chromium or Playwright the test fails, naming the command that installs what is missing
(``make test`` and ``make e2e`` install Chromium first).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> None:
    """Fail, naming the install command, when the browser or Playwright is missing."""
    missing = []
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} (apt-get install chromium, or make chromium)")
    try:
        import playwright.sync_api  # noqa: F401, PLC0415
    except ImportError:
        missing.append("the playwright Python package (pip install -e '.[dev]')")
    if not missing:
        return
    pytest.fail("the browser test needs " + " and ".join(missing))


@contextmanager
def chromium(profile_dir: Path) -> Iterator[BrowserContext]:
    """A browser context of the system Chromium with a fresh profile in ``profile_dir``."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    profile_dir.mkdir(parents=True, exist_ok=False)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile_dir),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1360, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def outside(urls: list[str], host: str = "127.0.0.1") -> list[str]:
    """The URLs that leave ``host`` (data: and about: URLs stay on the page)."""
    return [
        u
        for u in urls
        if urlsplit(u).scheme not in ("data", "about") and urlsplit(u).hostname != host
    ]
