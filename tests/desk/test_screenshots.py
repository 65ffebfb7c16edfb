"""The README's screenshots (docs/*.png), taken from the demo desk in Chromium at 1440x900.

Run on purpose: `DOCS_SCREENSHOTS=1 .venv/bin/pytest tests/desk/test_screenshots.py`.
"""

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
from django.urls import reverse

from licensing.models import OrderLine
from redemption.demo import demo_data_load
from tests.browser import admin_login, authenticator_for, chromium_page, requires_chromium

DOCS = Path(__file__).resolve().parents[2] / "docs"
pytestmark = [
    pytest.mark.browser,
    requires_chromium,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.environ.get("DOCS_SCREENSHOTS"), reason="takes the README's screenshots on purpose only"),
]
DEMO_DAY = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def test_take_the_readme_screenshots(live_server, make_user, eager_celery):
    with time_machine.travel(DEMO_DAY, tick=True):
        demo_data_load(today=DEMO_DAY.date(), with_logins=False)
        phone = authenticator_for(make_user("clerk", role=None, password="o365-demo-pass"))
        with chromium_page() as page:
            page.set_viewport_size({"width": 1440, "height": 900})
            admin_login(page, live_server.url, "clerk", "o365-demo-pass", device=phone)
            page.screenshot(path=DOCS / "landing-page.png", full_page=True)
            page.goto(live_server.url + reverse("admin:licensing_orderline_changelist") + "?unbound=yes")
            page.screenshot(path=DOCS / "work-queue.png", full_page=True)
            renewals = OrderLine.objects.exclude(kind="new").filter(seats_allocated=0).values_list("pk", flat=True)
            page.goto(live_server.url + reverse("admin:desk_bulk_bind") + "?lines=" + ",".join(map(str, renewals)))
            page.click("#bulk-bind-form input[type=submit]")
            page.wait_for_selector("#batch-state >> text=All bound.")
            page.screenshot(path=DOCS / "batch-page.png", full_page=True)
