"""What the browser tests share: a logged-in admin page in Debian's chromium, driven by
Playwright (never a downloaded browser)."""

import os
import shutil

import pytest
from django.db import connections

# Playwright's own server-side code talks to the page from another thread than Django's
# async-unsafe check expects; the test itself touches the database only between steps.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


@pytest.fixture
def page(live_server, admin_user):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", "password")
        page.click("input[type=submit]")
        yield page
        # Queries the test made while Playwright ran opened a connection in Playwright's
        # context (Django keys connections by context), which pytest-django does not close:
        # it stayed open to the end of the run, and the test database could not be dropped.
        # Closed here, inside that context (after the `with`, it is another one: tried).
        connections.close_all()
        browser.close()
