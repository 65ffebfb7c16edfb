from datetime import date

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from licensing.models import Order
from redemption.demo import demo_data_load
from redemption.models import SeatAllocation
from redemption.selectors import lookup_anything, order_story
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def desk():
    return demo_data_load(today=date(2026, 11, 24), with_logins=False)


@pytest.mark.parametrize(
    ("read_out", "kind", "label"),
    [
        ("61234567", "Order", "61234567"),
        (" 61234567 ", "Order", "61234567"),
        ("V4412871", "Agreement", "Open Value V4412871"),
        ("87213456AB", "Agreement", "Open License 87213456"),
        ("4412345", "Partner", "Contoso Reseller Ltd"),
        ("adventureworks.onmicrosoft.com", "Tenant", "adventureworks.onmicrosoft.com"),
        ("AdventureWorks", "Tenant", "adventureworks.onmicrosoft.com"),
        ("PO-4567", "Order", "61234567"),
        ("northwind", "Customer", "Northwind Traders"),
        ("contoso", "Partner", "Contoso Reseller Ltd"),
    ],
)
def test_lookup_finds_what_a_partner_reads_out(desk, read_out, kind, label):
    hits = lookup_anything(read_out)
    assert (kind, label) in {(hit.kind, hit.label) for hit in hits}


def test_lookup_by_tenant_id(desk):
    tenant = Tenant.objects.get(default_domain="tailspintoys.onmicrosoft.com")
    hits = lookup_anything(str(tenant.tenant_id).upper())
    assert (hits[0].kind, hits[0].label) == ("Tenant", "tailspintoys.onmicrosoft.com")
    # Then the orders whose seats went there, each with its whole story.
    bound_here = Order.objects.filter(lines__allocations__tenant=tenant).distinct()
    assert bound_here.exists()
    assert {hit.label for hit in hits[1:]} == {order.license_number for order in bound_here}
    assert all(hit.kind == "Order" and hit.story_url for hit in hits[1:])


def test_lookup_of_an_agreement_number_lists_its_orders_with_their_stories(desk):
    from licensing.models import Agreement

    agreement = Agreement.objects.filter(orders__isnull=False).distinct().first()
    hits = lookup_anything(agreement.number)
    orders = [hit for hit in hits if hit.kind == "Order"]
    assert {hit.label for hit in orders} == set(agreement.orders.values_list("license_number", flat=True))
    assert all(hit.story_url for hit in orders)


def test_lookup_of_an_authorization_number_lists_the_agreements_orders_too(desk):
    from licensing.models import Agreement

    agreement = Agreement.objects.exclude(authorization_number="").filter(orders__isnull=False).distinct().first()
    hits = lookup_anything(agreement.authorization_number.lower())
    orders = [hit for hit in hits if hit.kind == "Order"]
    assert {hit.label for hit in orders} == set(agreement.orders.values_list("license_number", flat=True))
    # The agreement is named once in each order's line, not twice.
    assert all(hit.detail.count(str(agreement)) == 1 for hit in orders)


def test_lookup_of_an_unknown_number_finds_nothing(desk):
    assert lookup_anything("99999999") == []
    assert lookup_anything("   ") == []


def test_lookup_page_links_to_the_whole_story(client, superuser, desk):
    client.force_login(superuser)
    response = client.get(reverse("admin:lookup"), {"q": "61234567"})
    assert response.status_code == 200
    order = Order.objects.get(license_number="61234567")
    assert reverse("admin:order_story", args=[order.pk]) in response.text
    assert "Nothing matches" in client.get(reverse("admin:lookup"), {"q": "nope-123"}).text


def test_order_story_shows_lines_seats_and_who_did_what(client, superuser, desk):
    order = Order.objects.get(license_number="61000000")
    allocation = SeatAllocation.objects.get(order_line__order=order)
    allocation._history_user = superuser
    allocation._change_reason = "customer asked to undo"
    allocation.transition_to(SeatAllocation.Status.REVERSING)
    allocation.reversal_requested_by = superuser
    allocation.save(update_fields=["status", "reversal_requested_by"])
    allocation.transition_to(SeatAllocation.Status.REVERSED)
    allocation.save(update_fields=["status"])

    story = order_story(order)
    assert [line.line_number for line in story.lines] == [1]
    assert story.lines[0].story_allocations == [allocation]
    reversal = story.events[-1]
    assert reversal.who == str(superuser)
    assert reversal.why == "customer asked to undo"
    assert "status: Reversing → Reversed" in reversal.changes

    client.force_login(superuser)
    change_page = client.get(reverse("admin:licensing_order_change", args=[order.pk]))
    assert reverse("admin:order_story", args=[order.pk]) in change_page.text
    page = client.get(reverse("admin:order_story", args=[order.pk]))
    assert page.status_code == 200
    assert "adventureworks.onmicrosoft.com" in page.text
    assert "customer asked to undo" in page.text
    # Who asked for the seats and who reversed them are not the same person, and the story says so.
    assert f"requested by {allocation.requested_by}" in page.text
    assert f"reversed by {superuser}" in page.text


def test_order_story_needs_view_permission(client, make_user, desk):
    order = Order.objects.first()
    client.force_login(_staff_without_perms(make_user))
    assert client.get(reverse("admin:order_story", args=[order.pk])).status_code == 403


def _staff_without_perms(make_user):
    user = make_user("nobody", role="Order processor")
    user.groups.clear()
    return user


def test_lookup_page_shows_only_what_the_person_may_view(client, make_user, desk):
    nobody = make_user("nobody", role="Order processor")
    nobody.groups.clear()  # staff, but not one view permission
    client.force_login(nobody)
    for read_out in ("61234567", "northwind", "V4412871", "adventureworks.onmicrosoft.com"):
        response = client.get(reverse("admin:lookup"), {"q": read_out})
        assert response.status_code == 200
        assert "Nothing matches" in response.text, read_out
    order = Order.objects.get(license_number="61234567")
    order_url = reverse("admin:licensing_order_change", args=[order.pk])
    assert order_url not in client.get(reverse("admin:lookup"), {"q": "61234567"}).text

    nobody.user_permissions.set(Permission.objects.filter(codename="view_order"))
    client.force_login(nobody)
    page = client.get(reverse("admin:lookup"), {"q": "northwind"}).text
    assert "Nothing matches" in page  # customers are not theirs to see
    assert order_url in client.get(reverse("admin:lookup"), {"q": "61234567"}).text


def test_lookup_asks_only_for_the_models_allowed(desk):
    hits = lookup_anything("61234567", visible=lambda model: model is not Order)
    assert hits == []
    assert [hit.kind for hit in lookup_anything("61234567", visible=lambda model: model is Order)] == ["Order"]


def test_order_story_shows_bindings_only_to_who_may_view_them(client, make_user, desk):
    from django.contrib.auth.models import Permission

    order = Order.objects.get(license_number="61000000")
    orders_only = _staff_without_perms(make_user)
    orders_only.user_permissions.add(Permission.objects.get(codename="view_order"))
    client.force_login(orders_only)

    page = client.get(reverse("admin:order_story", args=[order.pk]))

    assert page.status_code == 200 and "61000000" in page.text
    # Which tenant got the seats, who asked, the provider's subscription: the bindings' own pages ask more.
    assert "adventureworks.onmicrosoft.com" not in page.text
    assert not order_story(order, user=orders_only).lines[0].story_allocations
    # Withheld is not the same as nothing: the line's seats were requested and bound.
    assert "not yet requested" not in page.text and "None yet." not in page.text
    assert "not shown: seeing bindings needs its own permission" in page.text
    assert "Not shown: seeing subscriptions needs its own permission." in page.text
    customer = order.agreement.customer
    assert customer.email not in page.text
    assert reverse("admin:tenants_customer_change", args=[customer.pk]) not in page.text


def test_hand_made_requests_get_answers_not_error_pages(client, superuser, desk):
    client.force_login(superuser)
    # A NUL in the look-up, a job number that is no number, an action on a selection that names no row.
    assert client.get(reverse("admin:lookup"), {"q": "61000000\x00"}).status_code == 200
    assert client.get("/admin/licensing/importjob/abc/change/").status_code == 404
    listed = reverse("admin:licensing_orderline_changelist")
    answer = client.post(listed, {"action": "bind_selected_lines", "_selected_action": ["abc"]}, follow=True)
    assert answer.status_code == 200 and "The selection names no rows of this list" in answer.text


def test_an_agreement_number_read_out_in_lower_case_is_found(client, superuser, desk):
    from licensing.models import Agreement

    agreement = Agreement.objects.filter(number__regex=r"[A-Z]").first()
    client.force_login(superuser)
    page = client.get(reverse("admin:lookup"), {"q": agreement.number.lower()})
    assert str(agreement) in page.text
