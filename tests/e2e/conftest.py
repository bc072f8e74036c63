"""The browser tests' chromium (tests/support/browser.py), one per module."""

from tests.support.browser import chromium_browser  # noqa: F401 (the `browser` fixture)
