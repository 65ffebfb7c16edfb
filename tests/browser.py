"""Playwright with Debian's Chromium, for the browser tests."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))

requires_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)",
)


@contextmanager
def chromium_page() -> Iterator:
    """Yield a fresh Playwright page in headless Chromium."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls the tests make around it are safe.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with _chromium(sync_playwright) as page:
            try:
                yield page
            finally:
                _close_connections()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def _close_connections() -> None:
    # ORM calls made while the event loop runs keep their connections in that context, out of reach
    # of the test's own cleanup: close them here, unless one holds the test's transaction.
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close()


@contextmanager
def _chromium(sync_playwright) -> Iterator:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()


def authenticator_for(user):
    """Give the user a confirmed authenticator app (as if set up on their phone) and return it."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    return TOTPDevice.objects.create(user=user, name="Phone", confirmed=True)


def authenticator_code(device) -> str:
    """Return the code the authenticator app shows now."""
    import time

    from django_otp.oath import TOTP

    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time()
    return f"{totp.token():0{device.digits}d}"


def admin_login(page, base_url: str, username: str, password: str, device=None) -> None:
    """Log into the admin through its login form, with the authenticator's code when the user has one."""
    page.goto(f"{base_url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    if device is not None:
        page.fill("#id_otp_token", authenticator_code(device))
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
