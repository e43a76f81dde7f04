"""Headless Chromium for the dashboard's browser tests and benchmark: Debian's package (installed by
scripts/setup.sh), driven by Playwright. Never `playwright install`: it downloads a browser.

The flags keep Chromium off the network: without the background-networking ones it keeps dialling
Google's hosts, which this project's machines must never do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "launch"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def launch(playwright: Any) -> Any:
    """A headless Chromium browser from a `sync_playwright()` handle."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
