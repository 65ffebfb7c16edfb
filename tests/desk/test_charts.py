"""The landing page's pictures: present, with data, each bar opening the list behind it."""

import re
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from desk import charts
from redemption.demo import demo_data_load
from redemption.models import SeatAllocation
from tests.desk.conftest import bound_at
from tests.factories import SeatAllocationFactory

pytestmark = pytest.mark.django_db
DAY = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


@pytest.fixture
def desk(time_machine):
    time_machine.move_to(DAY)
    return demo_data_load(today=DAY.date(), with_logins=False)


def links(svg: str) -> list[str]:
    return [unescape(href) for href in re.findall(r'<a href="([^"]+)"', svg)]


def test_renewals_by_month_counts_the_seats_ending_in_each_month_and_links_to_them(desk, client, superuser):
    chart = charts.renewals_by_month()
    assert len(chart.categories) == 12 and chart.total > 0
    client.force_login(superuser)
    for series in chart.series:
        for value, url in zip(series.values, series.urls, strict=True):
            if value:
                listed = client.get(url).context["cl"].result_list
                assert sum(s.quantity for s in listed) == value, url


def test_bindings_per_hour_show_bound_and_failed_of_the_last_48_hours(desk, time_machine):
    SeatAllocationFactory(status=SeatAllocation.Status.FAILED, last_error="403")
    bound = SeatAllocationFactory(status=SeatAllocation.Status.QUEUED)
    SeatAllocation.objects.filter(pk=bound.pk).update(bound_at=DAY - timedelta(hours=3))
    chart = charts.bindings_by_hour()
    assert len(chart.categories) == 48
    assert {series.label: sum(series.values) for series in chart.series} == {"bound": 1, "failed": 1}


def test_each_hours_bar_opens_the_allocations_of_that_hour(desk, client, superuser):
    for hours_ago in (3, 3, 5):
        bound_at(DAY - timedelta(hours=hours_ago))
    SeatAllocationFactory(status=SeatAllocation.Status.FAILED, last_error="403")
    client.force_login(superuser)
    for series in charts.bindings_by_hour().series:
        for value, url in zip(series.values, series.urls, strict=True):
            assert client.get(url).context["cl"].result_count == value, url


def test_open_work_by_age_links_to_the_work_queue_of_that_age(desk, client, superuser):
    chart = charts.open_work_by_age()
    client.force_login(superuser)
    values, urls = chart.series[0].values, chart.series[0].urls
    assert sum(values) > 0
    for value, url in zip(values, urls, strict=True):
        assert client.get(url).context["cl"].result_count == value, url


def test_the_landing_page_draws_the_three_pictures_with_links(desk, client, superuser):
    client.force_login(superuser)
    page = client.get(reverse("admin:index")).content.decode()
    figures = re.findall(r'<figure class="chart">(.*?)</figure>', page, re.S)
    assert len(figures) == 3
    assert all("<svg" in figure for figure in figures)
    assert any(link.startswith("/admin/redemption/subscription/") for link in links(figures[0]))
    assert any(link.startswith("/admin/licensing/orderline/") for link in links(figures[2]))


def test_the_landing_page_counts_and_draws_only_what_the_person_may_view(desk, client, make_user):
    nobody = make_user("nobody", role="Order processor")
    nobody.groups.clear()  # staff, but not one view permission
    client.force_login(nobody)
    page = client.get(reverse("admin:index")).text
    for shown in ("Failed bindings", "Order lines with seats not yet bound", "Subscriptions ending", "<figure"):
        assert shown not in page

    nobody.user_permissions.set(Permission.objects.filter(codename="view_seatallocation"))
    client.force_login(nobody)
    page = client.get(reverse("admin:index")).text
    assert "Failed bindings" in page and "Bindings waiting for a supervisor" in page
    assert "Order lines with seats not yet bound" not in page and "Subscriptions ending" not in page
    assert page.count("<figure") == 1 and charts.bindings_by_hour().title in page
