"""Binding lines of several orders and customers on one screen, and the page that follows them."""

import pytest
from django.urls import reverse

from licensing.models import OrderLine
from redemption import binding, services
from redemption.models import SeatAllocation
from tests.admin_forms import confirmation
from tests.desk.conftest import customer_with_seats
from tests.factories import OrderFactory, OrderLineFactory, ProductFactory

pytestmark = pytest.mark.django_db


def open_bulk_screen(client, lines):
    """Select the lines in the work queue and open the one-confirmation screen: (its URL, its page)."""
    opened = client.post(
        reverse("admin:licensing_orderline_changelist"),
        {"action": "bind_selected_lines", "_selected_action": [line.pk for line in lines], "index": "0"},
    )
    return opened.url, client.get(opened.url)


def test_lines_of_several_orders_and_customers_are_bound_with_one_confirmation(client, processor, three_orders):
    client.force_login(processor)
    lines, (one, two, three) = three_orders["lines"], three_orders["orders"]
    url, screen = open_bulk_screen(client, lines)
    text = screen.content.decode()
    assert text.index("Litware") < text.index("Northwind Traders")  # grouped by customer
    assert {g.order for c in screen.context["plan"] for g in c.orders} == {one, two, three}
    choices = {
        f"tenant_{two.pk}": three_orders["northwind"].pk,
        f"confirm_{two.pk}": "northwind.onmicrosoft.com",
        f"tenant_{three.pk}": three_orders["litware"].pk,
        f"confirm_{three.pk}": "wrong.onmicrosoft.com",
    }
    refused = client.post(url, {"lines": screen.context["lines"], **choices, **confirmation(screen)})
    assert "is not this tenant&#x27;s default domain" in refused.content.decode()
    assert not SeatAllocation.objects.exists()  # one confirmation: all or nothing
    choices[f"confirm_{three.pk}"] = "Litware.onmicrosoft.com "
    done = client.post(url, {"lines": screen.context["lines"], **choices, **confirmation(screen)})
    batch_url = done.url
    assert SeatAllocation.objects.count() == 4
    state = client.get(batch_url + "status.json").json()
    assert state["total"] == 4 and state["counts"]["queued"] == 4 and not state["finished"]
    for allocation in SeatAllocation.objects.order_by("pk"):
        binding.allocation_bind(allocation_id=allocation.pk)
    state = client.get(batch_url + "status.json").json()
    assert state["counts"]["bound"] == 4 and state["finished"]
    assert "All bound." in client.get(batch_url).content.decode()


def test_the_orders_list_opens_the_same_screen_for_the_selected_orders(client, processor, three_orders):
    client.force_login(processor)
    one, two, _ = three_orders["orders"]
    opened = client.post(
        reverse("admin:licensing_order_changelist"),
        {"action": "bind_selected_orders", "_selected_action": [one.pk, two.pk], "index": "0"},
    )
    plan = client.get(opened.url).context["plan"]
    assert sorted(len(g.rows) for c in plan for g in c.orders) == [1, 2]


def test_someone_who_cannot_request_bindings_cannot_open_a_batch_screen(client, three_orders, make_user):
    viewer = make_user("viewer", role=None)
    viewer.is_superuser = False
    viewer.save()
    client.force_login(viewer)
    assert client.get(reverse("admin:desk_bulk_bind"), {"lines": "1"}).status_code == 403


def test_a_tenant_of_another_customer_posted_for_an_order_is_refused_not_replaced(client, processor, three_orders):
    client.force_login(processor)
    lines, (_, two, three) = three_orders["lines"], three_orders["orders"]
    url, screen = open_bulk_screen(client, lines)
    # Northwind's order posted with Litware's tenant, its domain typed to match.
    forged = {
        f"tenant_{two.pk}": three_orders["litware"].pk,
        f"confirm_{two.pk}": "litware.onmicrosoft.com",
        f"tenant_{three.pk}": three_orders["litware"].pk,
        f"confirm_{three.pk}": "litware.onmicrosoft.com",
    }
    refused = client.post(url, {"lines": screen.context["lines"], **forged, **confirmation(screen)})
    assert refused.status_code == 200
    assert f"Order {two}: the tenant chosen is not one of Northwind Traders" in refused.content.decode()
    assert not SeatAllocation.objects.exists()


def test_a_batch_waiting_for_a_supervisor_is_followed_until_it_is_decided():
    from desk.batch_pages import batch_summary

    waiting = batch_summary([{"status": "bound"}, {"status": "awaiting_approval"}])
    assert (waiting["finished"], waiting["waiting_only"]) == (False, True)
    done = batch_summary([{"status": "bound"}, {"status": "failed"}])
    assert (done["finished"], done["waiting_only"]) == (True, False)


def test_recording_a_tenant_from_the_screen_comes_back_to_it_with_the_resellers_domain_typed_in(client, processor):
    from html import unescape
    from urllib.parse import parse_qs, urlsplit

    from redemption.gateway.sandbox import sandbox_tenant_add
    from tests.factories import OrderFactory, OrderLineFactory

    line = OrderLineFactory(order=OrderFactory(suggested_tenant_domain="oldorderco.onmicrosoft.com"), quantity=3)
    sandbox_tenant_add(
        tenant_id="5d1c0f5e-9e7e-4b52-8f6a-1a2b3c4d5e6f", domain="oldorderco.onmicrosoft.com", company_name="Old Co"
    )
    client.force_login(processor)
    screen_url, screen = open_bulk_screen(client, [line])
    page = screen.content.decode()
    record = unescape(page.split('">record one</a>')[0].rsplit('<a href="', 1)[1])
    query = parse_qs(urlsplit(record).query)
    assert query["domain"] == ["oldorderco.onmicrosoft.com"] and query["next"] == [screen_url]

    done = client.post(record, {"domain": "oldorderco.onmicrosoft.com", "confirm_domain": "oldorderco.onmicrosoft.com"})

    assert done.url.startswith(screen_url + "&tenant=")
    back = client.get(done.url).content.decode()
    assert "selected>oldorderco.onmicrosoft.com" in back


def bound_then_reversed(allocation: SeatAllocation, supervisor) -> None:
    """The worker binds it; a supervisor reverses it; the worker reverses it: its seats are free again."""
    binding.allocation_bind(allocation_id=allocation.pk)
    services.allocation_reverse(
        allocation=SeatAllocation.objects.get(pk=allocation.pk), acting_user=supervisor, reason="Wrong tenant"
    )
    binding.allocation_bind(allocation_id=allocation.pk)
    assert SeatAllocation.objects.get(pk=allocation.pk).status == SeatAllocation.Status.REVERSED


def test_the_screen_sent_again_after_its_seats_came_back_asks_for_nothing(client, processor, supervisor, three_orders):
    client.force_login(processor)
    three, line = three_orders["orders"][2], three_orders["lines"][3]
    url, screen = open_bulk_screen(client, [line])
    form = {
        "lines": screen.context["lines"],
        f"tenant_{three.pk}": three_orders["litware"].pk,
        f"confirm_{three.pk}": "litware.onmicrosoft.com",
        **confirmation(screen),
    }
    first = client.post(url, form)
    bound_then_reversed(SeatAllocation.objects.get(), supervisor)

    again = client.post(url, form, follow=True)

    assert SeatAllocation.objects.count() == 1
    line.refresh_from_db()
    assert line.seats_left == line.quantity  # the seats a supervisor took back stay free
    assert again.redirect_chain[-1][0] == first.url  # the page that already follows that binding
    assert "This form was already sent" in again.content.decode()


def test_an_orders_page_sent_again_after_its_seats_came_back_asks_for_nothing(client, processor, supervisor):
    *_, agreement = customer_with_seats("Fabrikam", "fabrikam.onmicrosoft.com", ProductFactory())
    order = OrderFactory(agreement=agreement)
    line = OrderLineFactory(
        order=order, product=agreement.subscriptions.get().product, kind=OrderLine.Kind.ADDITIONAL, quantity=5
    )
    client.force_login(processor)
    url = reverse("admin:licensing_order_bind", args=[order.pk])
    form = confirmation(client.get(url))
    client.post(url, form)
    bound_then_reversed(SeatAllocation.objects.get(), supervisor)

    again = client.post(url, form, follow=True)

    assert SeatAllocation.objects.count() == 1
    line.refresh_from_db()
    assert line.seats_left == 5
    assert "This form was already sent" in again.content.decode()


def test_an_orders_page_confirms_only_what_it_showed(client, processor):
    *_, agreement = customer_with_seats("Fabrikam", "fabrikam.onmicrosoft.com", ProductFactory())
    product = agreement.subscriptions.get().product
    order = OrderFactory(agreement=agreement)
    OrderLineFactory(order=order, product=product, kind=OrderLine.Kind.ADDITIONAL, quantity=5)
    client.force_login(processor)
    url = reverse("admin:licensing_order_bind", args=[order.pk])
    form = confirmation(client.get(url))
    # Meanwhile another line of the order comes in (an import): the page showed only the first.
    OrderLineFactory(order=order, product=product, kind=OrderLine.Kind.ADDITIONAL, quantity=7, line_number=2)

    changed = client.post(url, form)
    incomplete = client.post(url, {"shown": form["shown"]})

    assert not SeatAllocation.objects.exists()
    assert "changed since this page was shown" in changed.content.decode()
    assert f"{order} line 2" in changed.content.decode()  # the page as it is now, to confirm again
    assert "This form is incomplete or out of date" in incomplete.content.decode()
    done = client.post(url, confirmation(changed))
    assert done.status_code == 302 and SeatAllocation.objects.count() == 2


def test_every_line_refused_is_named_at_once(client, processor, three_orders):
    client.force_login(processor)
    lines = three_orders["lines"]
    url, screen = open_bulk_screen(client, lines)
    # The new seats of orders two and three: their tenants proposed, neither confirmed by typing its domain.
    refused = client.post(url, {"lines": screen.context["lines"], **confirmation(screen)})

    page = refused.content.decode()
    for line, domain in ((lines[2], "northwind.onmicrosoft.com"), (lines[3], "litware.onmicrosoft.com")):
        assert f"{line}: Type the tenant&#x27;s default domain ({domain}) to confirm" in page
    assert not SeatAllocation.objects.exists()


def test_every_order_without_a_tenant_is_marked(client, processor):
    from tests.factories import CustomerFactory

    product = ProductFactory()
    orders = [OrderFactory(agreement__customer=CustomerFactory()) for _ in range(2)]
    lines = [OrderLineFactory(order=order, product=product, kind=OrderLine.Kind.NEW) for order in orders]
    client.force_login(processor)
    url, screen = open_bulk_screen(client, lines)

    refused = client.post(url, {"lines": screen.context["lines"], **confirmation(screen)})

    page = refused.content.decode()
    for order in orders:
        assert page.count(f"Order {order}: choose the tenant for its new seats.") == 2  # listed, and by the order
    assert not SeatAllocation.objects.exists()


def test_an_orders_page_with_new_seats_leads_to_the_screen_binding_all_its_lines(client, processor, three_orders):
    one, two = three_orders["orders"][:2]
    client.force_login(processor)
    # Order two's only line is new seats: its page binds nothing by itself, and says where it is done.
    page = client.get(reverse("admin:licensing_order_bind", args=[two.pk]))
    agreement_page = client.get(reverse("admin:licensing_agreement_bind", args=[one.agreement_id]))

    new_line = three_orders["lines"][2]
    assert page.context["one_screen"] == reverse("admin:desk_bulk_bind") + f"?lines={new_line.pk}"
    opened = client.get(page.context["one_screen"])
    assert [row["line"] for c in opened.context["plan"] for g in c.orders for row in g.rows] == [new_line]
    assert "Bind all 3 line(s) on one screen" in agreement_page.content.decode()
    assert client.get(reverse("admin:licensing_order_bind", args=[one.pk])).context["one_screen"] == ""


def test_a_bind_form_sent_twice_in_a_row_leads_to_the_page_following_its_bindings(client, processor, three_orders):
    client.force_login(processor)
    one, three = three_orders["orders"][0], three_orders["orders"][2]
    url = reverse("admin:licensing_order_bind", args=[one.pk])
    form = confirmation(client.get(url))
    first = client.post(url, form)
    again = client.post(url, form, follow=True)

    bulk_url, screen = open_bulk_screen(client, [three_orders["lines"][3]])
    bulk = {
        "lines": screen.context["lines"],
        f"tenant_{three.pk}": three_orders["litware"].pk,
        f"confirm_{three.pk}": "litware.onmicrosoft.com",
        **confirmation(screen),
    }
    bulk_first = client.post(bulk_url, bulk)
    bulk_again = client.post(bulk_url, bulk, follow=True)

    assert again.redirect_chain[-1][0] == first.url and bulk_again.redirect_chain[-1][0] == bulk_first.url
    assert "This form was already sent" in again.content.decode()
    assert "This form was already sent" in bulk_again.content.decode()
    assert SeatAllocation.objects.count() == 3
