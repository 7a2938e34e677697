"""The system Chromium, driven through Playwright's Python API, and what a page told us.

One place decides how the suite starts a browser: always the Debian Chromium at
``/usr/bin/chromium`` (never a browser Playwright would download), headless, with the
flags that keep it from calling home (background networking, component updates, sync)
and that let it run in a container (``--no-sandbox``, ``--disable-gpu``). Phases use the
async API inside :func:`readiness.core.aio.run` — a Jupyter kernel already runs an event
loop, where Playwright's sync API refuses to start — and tests may use the sync one.

:func:`guard_context` confines a browser context to the hosts a phase may reach: any
other request is aborted before it leaves the machine and listed, so a page that tries
to load a third-party script is evidence, not traffic. :func:`set_cookie_lines` reads the
``Set-Cookie`` lines of a response for cookie audits (values are dropped by
:func:`readiness.probe.oidc.parse_set_cookie` before anything is kept).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import Browser, BrowserContext, Response, Route, async_playwright
from playwright.sync_api import Browser as SyncBrowser
from playwright.sync_api import sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run")


class BrowserUnavailable(RuntimeError):
    """Chromium cannot be started; the message says what to install."""


def launch_options(executable: Path = CHROMIUM) -> dict[str, Any]:
    """Keyword arguments for ``playwright.chromium.launch``: the system binary, headless, quiet."""
    if not executable.exists():
        raise BrowserUnavailable(f"Chromium not found at {executable}; install the Debian package 'chromium' "
                                 "(make setup)")
    return {"executable_path": str(executable), "args": list(CHROMIUM_ARGS), "headless": True}


@contextlib.asynccontextmanager
async def chromium(executable: Path = CHROMIUM) -> AsyncIterator[Browser]:
    """The system Chromium (async API), closed on exit whatever happened."""
    options = launch_options(executable)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(**options)
        try:
            yield browser
        finally:
            await browser.close()


@contextlib.contextmanager
def chromium_sync(executable: Path = CHROMIUM) -> Iterator[SyncBrowser]:
    """The system Chromium (sync API), for code that runs outside any event loop (tests)."""
    options = launch_options(executable)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**options)
        try:
            yield browser
        finally:
            browser.close()


async def guard_context(context: BrowserContext, allowed_hosts: Collection[str]) -> list[str]:
    """Abort every request of ``context`` to a host outside ``allowed_hosts``.

    Returns the list the refused URLs (scheme, host and path only) are appended to. Data
    and blob URLs never leave the browser and pass.
    """
    allowed = {h.lower() for h in allowed_hosts}
    blocked: list[str] = []

    async def handle(route: Route) -> None:
        parts = urlsplit(route.request.url)
        if parts.scheme in ("data", "blob") or (parts.hostname or "").lower() in allowed:
            await route.continue_()
            return
        blocked.append(f"{parts.scheme}://{parts.netloc}{parts.path}")
        await route.abort("blockedbyclient")

    await context.route("**/*", handle)
    return blocked


async def set_cookie_lines(response: Response) -> list[str]:
    """Every ``Set-Cookie`` line of a response, as sent (one entry per header line)."""
    return [h["value"] for h in await response.headers_array() if h["name"].lower() == "set-cookie"]


def strip_query(url: str) -> str:
    """``scheme://host/path`` of a URL: query strings carry codes and states, never logged."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
