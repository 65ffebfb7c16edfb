"""The work queue grouped by order on request: a heading opens each order, its lines listed under it."""

import re
from html import unescape

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def listed(page) -> list[str]:
    """The rows of the work queue as read: "order <number>" for a heading, else the line's number."""
    rows = []
    body = page.content.decode().split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S):
        head = re.search(r'<th colspan="\d+" scope="rowgroup"><a href="[^"]+">(\d+)</a>', row)
        rows.append(f"order {head[1]}" if head else unescape(re.sub(r"<[^>]+>", " ", row)).split()[0])
    return rows


def test_grouped_by_order_each_order_gets_one_heading_over_its_own_lines(client, processor, three_orders):
    one, two, three = (order.license_number for order in three_orders["orders"])
    lines = {line.pk: line for line in three_orders["lines"]}
    client.force_login(processor)
    queue = reverse("admin:licensing_orderline_changelist")
    # Sorted by product, the two lines of the first order are apart (E3 renewal ... E5 ... E3 addition).
    by_product = {"unbound": "yes", "o": "6.-1"}
    assert listed(client.get(queue, by_product)) == [one, two, three, one]
    page = client.get(queue, {**by_product, "group": "order"})

    rows = listed(page)
    heads = [row for row in rows if row.startswith("order ")]
    assert sorted(heads) == sorted(f"order {number}" for number in (one, two, three))
    # Under each heading, exactly that order's lines.
    current, under = None, {}
    for row in rows:
        if row.startswith("order "):
            current = row.removeprefix("order ")
            under[current] = []
        else:
            under[current].append(row)
    by_order = {}
    for line in lines.values():
        by_order.setdefault(line.order.license_number, []).append(str(line).split()[0])
    assert {number: sorted(rows) for number, rows in under.items()} == {
        number: sorted(rows) for number, rows in by_order.items()
    }
    assert "2 lines" in page.content.decode()


def test_without_grouping_the_queue_has_no_headings(client, processor, three_orders):
    client.force_login(processor)
    page = client.get(reverse("admin:licensing_orderline_changelist"), {"unbound": "yes"})
    assert 'scope="rowgroup"' not in page.content.decode()
    assert len([row for row in listed(page) if not row.startswith("order ")]) == 4


def test_the_age_filter_counts_days_since_the_order_as_the_age_column_does(client, processor, time_machine):
    from datetime import date, timedelta

    from tests.factories import OrderFactory, OrderLineFactory

    time_machine.move_to(date(2026, 12, 7))
    for days in (0, 5, 67):
        order = OrderFactory(ordered_on=date(2026, 12, 7) - timedelta(days=days), license_number=f"6100{days:04d}")
        OrderLineFactory(order=order, quantity=3)
    client.force_login(processor)
    queue = reverse("admin:licensing_orderline_changelist")

    def ages(value: str) -> list[str]:
        page = client.get(queue, {"age": value}).content.decode()
        return sorted(re.findall(r'<td class="field-age">(\d+ d)</td>', page))

    assert ages("1d") == ["0 d"]
    assert ages("7d") == ["0 d", "5 d"]
    assert ages("older30d") == ["67 d"]
