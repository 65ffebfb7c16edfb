"""The renewals desk in the admin: what is lapsing, each subscription's reminders, the schedule."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from licensing.models import Program
from redemption.models import RenewalSchedule, Subscription
from redemption.renewals import renewal_reminders_send
from tests.factories import AgreementFactory, PartnerFactory, SubscriptionFactory, TenantFactory

pytestmark = pytest.mark.django_db
CHANGELIST = "admin:redemption_renewalsubscription_changelist"


def subscription(days_left: int, status: str = "active", **kwargs) -> Subscription:
    row = SubscriptionFactory(term_end=timezone.localdate() + timedelta(days=days_left), **kwargs)
    Subscription.objects.filter(pk=row.pk).update(status=status)
    return row


def listed(response) -> set[int]:
    return {row.pk for row in response.context["cl"].result_list}


def test_renewals_view_lists_what_ends_within_90_days_expired_and_disabled(client, processor):
    soon, later, far = subscription(10), subscription(75), subscription(200)
    expired, disabled = subscription(-5, "expired"), subscription(-50, "disabled")
    gone = subscription(-200, "deprovisioned")
    client.force_login(processor)

    everything = client.get(reverse(CHANGELIST))
    within30 = client.get(reverse(CHANGELIST), {"window": "within30"})
    only_expired = client.get(reverse(CHANGELIST), {"window": "expired"})
    only_disabled = client.get(reverse(CHANGELIST), {"window": "disabled"})

    assert listed(everything) == {soon.pk, later.pk, expired.pk, disabled.pk}
    assert far.pk not in listed(everything) and gone.pk not in listed(everything)
    assert listed(within30) == {soon.pk}
    assert listed(only_expired) == {expired.pk}
    assert listed(only_disabled) == {disabled.pk}


def test_renewals_view_filters_by_partner_and_program(client, processor):
    partner = PartnerFactory()
    tenant = TenantFactory(customer__partner=partner)
    ours = subscription(20, tenant=tenant, agreement=AgreementFactory(customer=tenant.customer, program=Program.OVS))
    theirs = subscription(20)
    client.force_login(processor)

    by_partner = client.get(reverse(CHANGELIST), {"agreement__partner__id__exact": partner.pk})
    by_program = client.get(reverse(CHANGELIST), {"agreement__program__exact": "ovs"})

    assert listed(by_partner) == {ours.pk}
    assert listed(by_program) == {ours.pk}
    assert theirs.pk not in listed(by_program)


def test_renewals_changelist_queries_do_not_grow_with_rows(client, superuser, django_assert_max_num_queries):
    for days in range(40):
        subscription(days)
    client.force_login(superuser)
    with django_assert_max_num_queries(12):
        response = client.get(reverse(CHANGELIST))
    assert len(listed(response)) == 40


def test_each_subscription_shows_its_reminder_history(client, processor, mailoutbox):
    row = subscription(7)
    renewal_reminders_send(today=timezone.localdate())
    client.force_login(processor)

    response = client.get(reverse("admin:redemption_renewalsubscription_change", args=[row.pk]))

    assert response.status_code == 200
    content = response.content.decode()
    assert "reminder history" in content.lower()
    assert "Sent" in content and str(row.term_end.year) in content
    # Who the reminders go to, as they were sent: the customer, the partner of record copied.
    customer, partner = row.agreement.customer, row.agreement.partner
    assert customer.name in content and customer.email in content
    assert f"copy to {partner.email}" in content


def test_renewals_list_shows_the_last_reminder_sent_this_term(client, processor, mailoutbox):
    reminded, quiet = subscription(7), subscription(-5, "expired")
    renewal_reminders_send(today=timezone.localdate())
    # A reminder of the previous term is not this term's.
    earlier = reminded.renewal_reminders.get()
    earlier.pk, earlier.subscription, earlier.customer = None, quiet, quiet.agreement.customer
    earlier.term_end = quiet.term_end - timedelta(days=365)
    earlier.save()
    client.force_login(processor)

    page = client.get(reverse(CHANGELIST))

    rows = {row.pk: row for row in page.context["cl"].result_list}
    assert rows[reminded.pk].reminded_offset == 7 and rows[quiet.pk].reminded_offset is None
    content = page.content.decode()
    assert f"7 days before, sent {timezone.localdate():%Y-%m-%d}" in content
    assert "none yet this term" in content


def test_supervisor_edits_the_schedule_and_an_order_processor_only_sees_it(client, supervisor, processor):
    url = reverse("admin:redemption_renewalschedule_change", args=[RenewalSchedule.load().pk])
    client.force_login(supervisor)
    assert client.get(reverse("admin:redemption_renewalschedule_changelist")).url == url

    unexplained = client.post(url, {"offsets": "120, 45,7", "send_hour": "6"})
    assert unexplained.status_code == 200 and RenewalSchedule.load().offsets != "120, 45,7"
    response = client.post(url, {"offsets": "120, 45,7", "send_hour": "6", "reason": "Partners asked for 120 days"})
    assert response.status_code == 302
    schedule = RenewalSchedule.load()
    assert (schedule.offset_days, schedule.send_hour) == ([120, 45, 7], 6)
    changed = schedule.history.latest("history_date")
    assert (changed.history_user, changed.history_change_reason) == (
        supervisor,
        "Schedule changed: Partners asked for 120 days",
    )

    refused = client.post(url, {"offsets": "90,abc", "send_hour": "25", "reason": "typo"})
    assert refused.status_code == 200
    assert "whole numbers of days" in refused.content.decode()
    assert RenewalSchedule.load().offsets == "120, 45,7"

    client.force_login(processor)
    assert client.get(url).status_code == 200
    client.post(url, {"offsets": "30", "send_hour": "1", "reason": "not mine to change"})
    assert RenewalSchedule.load().offsets == "120, 45,7"


def test_renewals_export_holds_exactly_the_filtered_view(client, superuser):
    import csv
    import io

    soon = subscription(10, tenant__customer__name="=Soon Ltd")
    subscription(75)
    subscription(200)
    client.force_login(superuser)

    response = client.post(
        reverse("admin:redemption_renewalsubscription_export") + "?window=within30", {"format": "0", "resource": "0"}
    )

    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert [row["Tenant Domain"] for row in rows] == [soon.tenant.default_domain]
    assert rows[0]["Customer"] == "'=Soon Ltd"


def test_each_subscription_shows_the_renewal_order_already_in_hand(client, processor):
    from licensing.models import OrderLine
    from tests.factories import OrderFactory, OrderLineFactory

    waiting, without = subscription(20), subscription(25)
    order = OrderFactory(agreement=waiting.agreement, license_number="61999001")
    OrderLineFactory(order=order, product=waiting.product, kind=OrderLine.Kind.RENEWAL, quantity=10)
    client.force_login(processor)
    page = client.get(reverse(CHANGELIST))
    rows = {row.pk: row for row in page.context["cl"].result_list}
    assert rows[waiting.pk].renewal_license == "61999001" and rows[without.pk].renewal_order_id is None
    assert reverse("admin:licensing_order_bind", args=[order.pk]) in page.content.decode()
