"""In a real browser at 1440x900: no admin or desk page scrolls sideways, nor any box in it, nor logs an error."""

from datetime import UTC, datetime

import pytest
import time_machine
from django.contrib import admin
from django.urls import reverse

from desk.models import BindingBatch
from licensing.models import Order, OrderLine
from redemption.demo import demo_data_load
from redemption.models import SeatAllocation
from tests.browser import admin_login, authenticator_for, chromium_page, requires_chromium
from tests.licensing.sheets import csv_bytes, order_row

pytestmark = [pytest.mark.browser, requires_chromium, pytest.mark.django_db(transaction=True)]
PASSWORD = "pw-for-tests-123"
DEMO_DAY = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
# Every box that could scroll sideways, and the page itself; [] when everything fits.
WIDER_THAN_ITS_BOX = """() => {
  const wide = [];
  const page = document.documentElement;
  if (page.scrollWidth > page.clientWidth) wide.push(`page ${page.scrollWidth} > ${page.clientWidth}`);
  for (const el of document.querySelectorAll("body *")) {
    const overflow = getComputedStyle(el).overflowX;
    if ((overflow === "auto" || overflow === "scroll") && el.scrollWidth > el.clientWidth + 1) {
      wide.push(`${el.tagName.toLowerCase()}#${el.id}.${el.className} ${el.scrollWidth} > ${el.clientWidth}`);
    }
  }
  return wide;
}"""


def _pages(batch_id: int) -> list[str]:
    """Every list, change and history page of our models, and the desk's own pages."""
    pages = [reverse("admin:index"), reverse("admin:lookup") + "?q=61234567"]
    for model in admin.site._registry:
        if model._meta.app_label not in {"tenants", "licensing", "redemption", "desk"}:
            continue
        info = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        pages.append(reverse(f"{info}_changelist"))
        obj = model._default_manager.order_by("pk").first()
        if obj is not None:
            pages += [reverse(f"{info}_change", args=[obj.pk]), reverse(f"{info}_history", args=[obj.pk])]
    order = Order.objects.get(license_number="61234567")
    new_line = OrderLine.objects.filter(kind="new", seats_allocated=0).first()
    allocation = SeatAllocation.objects.first()
    lines = ",".join(str(pk) for pk in OrderLine.objects.filter(seats_allocated=0).values_list("pk", flat=True))
    return [
        *pages,
        reverse("admin:licensing_orderline_changelist") + "?unbound=yes",
        reverse("admin:licensing_orderline_changelist") + "?unbound=yes&group=order",
        reverse("admin:order_story", args=[order.pk]),
        reverse("admin:licensing_order_bind", args=[order.pk]),
        reverse("admin:licensing_orderline_bind", args=[new_line.pk]),
        reverse("admin:desk_bulk_bind") + f"?lines={lines}",
        reverse("admin:desk_batch", args=[batch_id]),
        reverse("admin:redemption_seatallocation_status", args=[allocation.pk]),
        reverse("admin:redemption_seatallocation_changelist") + "?status__exact=awaiting_approval",
        reverse("admin:two_factor_setup"),
    ]


def test_no_page_scrolls_sideways_at_1440_by_900_or_logs_an_error(live_server, make_user, tmp_path):
    with time_machine.travel(DEMO_DAY, tick=True):
        demo_data_load(today=DEMO_DAY.date(), with_logins=False)
        root = make_user("root", role=None, password=PASSWORD)
        phone = authenticator_for(root)
        batch = BindingBatch.objects.create(created_by=root)
        batch.allocations.set(SeatAllocation.objects.all()[:3])
        sheet = tmp_path / "orders.csv"
        sheet.write_bytes(csv_bytes([order_row(), order_row(Line="2", Quantity="3")]))
        pages = _pages(batch.pk)
        problems: dict[str, list[str]] = {}
        with chromium_page() as page:
            page.set_viewport_size({"width": 1440, "height": 900})
            errors: list[str] = []
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            admin_login(page, live_server.url, "root", PASSWORD, device=phone)
            for path in pages:
                errors.clear()
                page.goto(live_server.url + path)
                page.wait_for_selector("#content")
                wide = page.evaluate(WIDER_THAN_ITS_BOX)
                if wide or errors:
                    problems[path] = wide + errors
            page.goto(f"{live_server.url}/admin/licensing/order/import/")
            page.set_input_files("#id_import_file", str(sheet))
            page.click("input[type=submit]")
            page.wait_for_selector("table.import-preview")
            wide = page.evaluate(WIDER_THAN_ITS_BOX)
            if wide:
                problems["import preview"] = wide
    assert not problems, "\n".join(f"{path}: {found}" for path, found in problems.items())
