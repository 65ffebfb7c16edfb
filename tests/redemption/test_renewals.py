"""Renewals: lifecycle after the term end (rule 8) and reminders before it (rule 9), over time."""

import smtplib
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.mail.backends.base import BaseEmailBackend
from django.utils import timezone

from licensing.models import OrderLine, Program
from redemption.models import AnniversaryReminder, RenewalReminder, RenewalSchedule, SeatAllocation, Subscription
from redemption.renewals import renewal_reminders_send, renewals_daily_run, renewals_tick
from tests.factories import (
    AgreementFactory,
    CustomerFactory,
    OrderFactory,
    OrderLineFactory,
    PartnerFactory,
    ProductFactory,
    SeatAllocationFactory,
    SubscriptionFactory,
    TenantFactory,
)

pytestmark = pytest.mark.django_db
START = date(2027, 1, 4)


class FailingBackend(BaseEmailBackend):
    """A mail server that refuses everything."""

    def send_messages(self, email_messages):
        raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")


def run_day(day: date):
    with time_machine.travel(datetime(day.year, day.month, day.day, 8, tzinfo=ZoneInfo("UTC")), tick=False):
        return renewals_daily_run(today=day)


def request_renewal(
    subscription: Subscription, status: str = SeatAllocation.Status.QUEUED, *, ends_on: date | None = None
) -> SeatAllocation:
    line = OrderLineFactory(
        order=OrderFactory(agreement=subscription.agreement),
        product=subscription.product,
        kind=OrderLine.Kind.RENEWAL,
        starts_on=subscription.term_end,
        ends_on=ends_on or subscription.term_end + timedelta(days=365),
    )
    at_provider = status in SeatAllocation.AT_PROVIDER or status == SeatAllocation.Status.REVERSED
    return SeatAllocationFactory(
        order_line=line,
        tenant=subscription.tenant,
        quantity=1,
        status=status,
        subscription=subscription if at_provider else None,
    )


def test_each_offset_goes_out_once_and_lifecycle_moves_on_the_right_days_over_a_year(mailoutbox):
    subscription = SubscriptionFactory(term_end=START + timedelta(days=100))
    mails_by_day, status_by_day = {}, {}
    for n in range(366):
        day = START + timedelta(days=n)
        before = len(mailoutbox)
        run_day(day)
        mails_by_day[day] = len(mailoutbox) - before
        subscription.refresh_from_db()
        status_by_day[day] = subscription.status

    end = subscription.term_end
    assert {day: count for day, count in mails_by_day.items() if count} == {
        end - timedelta(days=90): 1,
        end - timedelta(days=60): 1,
        end - timedelta(days=30): 1,
        end - timedelta(days=7): 1,
    }
    assert [message.to for message in mailoutbox] == [[subscription.agreement.customer.email]] * 4
    assert list(RenewalReminder.objects.order_by("-offset_days").values_list("offset_days", "status")) == [
        (90, "sent"),
        (60, "sent"),
        (30, "sent"),
        (7, "sent"),
    ]
    assert status_by_day[end] == "active"
    assert status_by_day[end + timedelta(days=1)] == "expired"
    assert status_by_day[end + timedelta(days=30)] == "expired"
    assert status_by_day[end + timedelta(days=31)] == "disabled"
    assert status_by_day[end + timedelta(days=120)] == "disabled"
    assert status_by_day[end + timedelta(days=121)] == "deprovisioned"
    reasons = list(
        subscription.history.filter(history_change_reason__isnull=False)
        .exclude(history_change_reason="")
        .order_by("history_date")
        .values_list("status", "history_change_reason")
    )
    assert [status for status, _ in reasons] == ["expired", "disabled", "deprovisioned"]
    assert all(end.isoformat() in reason for _, reason in reasons)


def test_missed_days_send_only_the_latest_offset_due(mailoutbox):
    subscription = SubscriptionFactory(term_end=START + timedelta(days=45))

    run_day(START)  # 45 days left: the 60-day reminder, never the stale 90-day one
    run_day(START + timedelta(days=20))  # 25 days left after a gap: the 30-day one only
    run_day(START + timedelta(days=20))

    assert list(RenewalReminder.objects.order_by("-offset_days").values_list("offset_days", flat=True)) == [60, 30]
    assert len(mailoutbox) == 2
    assert "in 25 days" in mailoutbox[1].body
    subscription.refresh_from_db()
    assert subscription.status == "active"


def test_no_reminder_for_a_subscription_whose_term_has_already_ended(mailoutbox):
    SubscriptionFactory(term_end=START - timedelta(days=1))
    run_day(START)
    assert mailoutbox == []


@pytest.mark.parametrize("status", ["awaiting_approval", "queued", "binding", "bound", "reversing", "reversal_failed"])
def test_no_reminder_once_a_renewal_is_requested(mailoutbox, status):
    subscription = SubscriptionFactory(term_end=START + timedelta(days=30))
    request_renewal(subscription, status)

    for n in range(31):
        run_day(START + timedelta(days=n))

    assert mailoutbox == []
    assert not RenewalReminder.objects.exists()


@pytest.mark.parametrize("status", ["failed", "rejected", "reversed"])
def test_reminders_go_out_when_the_renewal_request_fell_through(mailoutbox, status):
    subscription = SubscriptionFactory(term_end=START + timedelta(days=30))
    request_renewal(subscription, status)
    run_day(START)
    assert len(mailoutbox) == 1


def test_a_renewal_on_another_product_does_not_silence_the_reminder(mailoutbox):
    subscription = SubscriptionFactory(term_end=START + timedelta(days=30))
    other = SubscriptionFactory(
        tenant=subscription.tenant, agreement=subscription.agreement, term_end=subscription.term_end
    )
    request_renewal(other)
    run_day(START)
    assert len(mailoutbox) == 1
    assert subscription.product.part_number in mailoutbox[0].body
    assert other.product.part_number not in mailoutbox[0].body


def test_after_a_bound_renewal_the_next_term_gets_its_reminders(mailoutbox):
    subscription = SubscriptionFactory(term_end=START + timedelta(days=10))
    run_day(START)  # the 30-day reminder of this term
    request_renewal(subscription, SeatAllocation.Status.BOUND)
    # The binding service renews the term to the renewal line's end.
    Subscription.objects.filter(pk=subscription.pk).update(term_end=subscription.term_end + timedelta(days=365))
    new_end = subscription.term_end + timedelta(days=365)

    for n in range(1, 371):
        run_day(START + timedelta(days=n))

    assert list(
        RenewalReminder.objects.order_by("term_end", "-offset_days").values_list("term_end", "offset_days")
    ) == [
        (subscription.term_end, 30),
        (new_end, 90),
        (new_end, 60),
        (new_end, 30),
        (new_end, 7),
    ]
    assert len(mailoutbox) == 5


def test_one_mail_per_customer_per_day_to_the_customer_with_the_partner_copied(mailoutbox):
    partner = PartnerFactory(email="orders@reseller.example")
    customer = CustomerFactory(email="it@northwind.example", partner=partner, name="Northwind Traders")
    agreement = AgreementFactory(customer=customer)
    tenant_a = TenantFactory(customer=customer, default_domain="northwind.onmicrosoft.com")
    tenant_b = TenantFactory(customer=customer, default_domain="northwindlabs.onmicrosoft.com")
    e3 = ProductFactory(part_number="Q5Y-00003", description="O365 E3 ShrdSvr SNGL SubsVL OLP NL Annual Qlfd")
    SubscriptionFactory(
        tenant=tenant_a, agreement=agreement, product=e3, quantity=50, term_end=START + timedelta(days=6)
    )
    SubscriptionFactory(tenant=tenant_b, agreement=agreement, quantity=10, term_end=START + timedelta(days=58))
    SubscriptionFactory(tenant=tenant_b, agreement=agreement, quantity=5, term_end=START + timedelta(days=85))
    SubscriptionFactory(term_end=START + timedelta(days=20))  # another customer

    run_day(START)

    assert len(mailoutbox) == 2
    (northwind,) = [message for message in mailoutbox if message.to == ["it@northwind.example"]]
    assert northwind.cc == ["orders@reseller.example"]
    for text in ["Northwind Traders", "northwind.onmicrosoft.com", "northwindlabs.onmicrosoft.com", "Q5Y-00003"]:
        assert text in northwind.body
    assert str(START + timedelta(days=6)) in northwind.body
    assert "50" in northwind.body and "renewal order" in northwind.body
    html, mimetype = northwind.alternatives[0]
    assert mimetype == "text/html"
    assert "northwindlabs.onmicrosoft.com" in html and "Northwind Traders" in html
    assert RenewalReminder.objects.filter(customer=customer, status="sent").count() == 3


def test_a_customer_already_written_to_today_hears_about_newly_due_subscriptions_tomorrow(mailoutbox):
    first = SubscriptionFactory(term_end=START + timedelta(days=30))
    renewal_reminders_send(today=START)
    late = SubscriptionFactory(
        tenant=TenantFactory(customer=first.tenant.customer),
        agreement=first.agreement,
        term_end=START + timedelta(days=7),
    )
    renewal_reminders_send(today=START)
    assert len(mailoutbox) == 1

    renewal_reminders_send(today=START + timedelta(days=1))
    assert len(mailoutbox) == 2
    assert late.tenant.default_domain in mailoutbox[1].body
    assert RenewalReminder.objects.get(subscription=late).offset_days == 7


def test_running_twice_sends_nothing_twice(mailoutbox):
    SubscriptionFactory(term_end=START + timedelta(days=7))
    SubscriptionFactory(term_end=START + timedelta(days=60))
    first = renewal_reminders_send(today=START)
    second = renewal_reminders_send(today=START)
    assert (first.mails_sent, second.mails_sent) == (2, 0)
    assert len(mailoutbox) == 2


def test_a_failed_delivery_is_recorded_retried_and_not_marked_sent(mailoutbox, settings):
    subscription = SubscriptionFactory(term_end=START + timedelta(days=7))
    settings.EMAIL_BACKEND = "tests.redemption.test_renewals.FailingBackend"

    failed = renewal_reminders_send(today=START)

    reminder = RenewalReminder.objects.get(subscription=subscription)
    assert (failed.mails_sent, failed.mails_failed) == (0, 1)
    assert reminder.status == "failed" and reminder.sent_at is None
    assert "Connection unexpectedly closed" in reminder.last_error
    assert reminder.attempts == 1

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    with time_machine.travel(timezone.now() + timedelta(days=1), tick=False):
        retried = renewal_reminders_send(today=START + timedelta(days=1))

        reminder.refresh_from_db()
        assert retried.mails_sent == 1 and len(mailoutbox) == 1
        assert (reminder.status, reminder.attempts, reminder.last_error) == ("sent", 2, "")
        assert reminder.sent_at is not None
        assert renewal_reminders_send(today=START + timedelta(days=1)).mails_sent == 0


def test_a_mail_server_down_for_hours_at_the_sending_hour_loses_no_reminder(mailoutbox, settings):
    subscription = SubscriptionFactory(term_end=START + timedelta(days=7))
    settings.EMAIL_BACKEND = "tests.redemption.test_renewals.FailingBackend"
    opened = datetime(START.year, START.month, START.day, 7, tzinfo=ZoneInfo("UTC"))
    # Beat's tick every 10 minutes through a six-hour outage: each try waits twice as long as the last.
    for minutes in range(0, 6 * 60, 10):
        with time_machine.travel(opened + timedelta(minutes=minutes), tick=False):
            renewal_reminders_send(today=START, retry_only=minutes > 0)
    reminder = RenewalReminder.objects.get(subscription=subscription)
    assert reminder.status == "failed" and reminder.attempts < settings.RENEWAL_REMINDER_MAX_ATTEMPTS

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    for minutes in range(6 * 60, 11 * 60, 10):
        with time_machine.travel(opened + timedelta(minutes=minutes), tick=False):
            renewal_reminders_send(today=START, retry_only=True)

    reminder.refresh_from_db()
    assert (reminder.status, len(mailoutbox)) == ("sent", 1)


def test_a_failed_reminder_is_dropped_once_a_later_offset_is_due(mailoutbox, settings):
    subscription = SubscriptionFactory(term_end=START + timedelta(days=30))
    settings.EMAIL_BACKEND = "tests.redemption.test_renewals.FailingBackend"
    renewal_reminders_send(today=START)
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

    renewal_reminders_send(today=subscription.term_end - timedelta(days=7))

    assert len(mailoutbox) == 1
    assert "in 7 days" in mailoutbox[0].body
    assert dict(RenewalReminder.objects.values_list("offset_days", "status")) == {30: "failed", 7: "sent"}


def test_tick_runs_the_days_work_once_from_the_schedules_hour_and_retries_in_between(mailoutbox, settings):
    schedule = RenewalSchedule.load()
    schedule.send_hour = 7
    schedule.save()
    SubscriptionFactory(term_end=START + timedelta(days=7))
    utc = ZoneInfo("UTC")

    renewals_tick(now=datetime(2027, 1, 4, 6, 50, tzinfo=utc))
    assert mailoutbox == []
    renewals_tick(now=datetime(2027, 1, 4, 7, 0, tzinfo=utc))
    assert len(mailoutbox) == 1
    SubscriptionFactory(term_end=START + timedelta(days=30))
    renewals_tick(now=datetime(2027, 1, 4, 7, 10, tzinfo=utc))
    assert len(mailoutbox) == 1
    renewals_tick(now=datetime(2027, 1, 5, 7, 0, tzinfo=utc))
    assert len(mailoutbox) == 2


def test_offsets_edited_by_staff_take_effect(mailoutbox):
    schedule = RenewalSchedule.load()
    schedule.offsets = "45,14"
    schedule.save()
    subscription = SubscriptionFactory(term_end=START + timedelta(days=60))
    for n in range(61):
        run_day(START + timedelta(days=n))
    assert sorted(RenewalReminder.objects.values_list("offset_days", flat=True)) == [14, 45]
    assert [message.body.count(subscription.tenant.default_domain) for message in mailoutbox] == [1, 1]


def test_ovs_agreements_get_a_staff_reminder_of_the_anniversary_order_deadline(mailoutbox, settings):
    settings.RENEWAL_STAFF_EMAILS = ["desk@distributor.example"]
    # Anniversary on START + 65 days, so the order is due by START + 95 days.
    ovs = AgreementFactory(program=Program.OVS, starts_on=date(2026, 3, 10), number="V5590342")
    AgreementFactory(program=Program.OV, starts_on=date(2026, 3, 10))
    ordered = AgreementFactory(program=Program.OVS, starts_on=date(2026, 3, 10))
    OrderFactory(agreement=ordered, ordered_on=date(2027, 3, 1))
    anniversary, deadline = date(2027, 3, 10), date(2027, 4, 9)

    for n in range(100):
        run_day(START + timedelta(days=n))

    staff = [message for message in mailoutbox if message.to == ["desk@distributor.example"]]
    assert len(staff) == 4
    assert all("V5590342" in message.body and str(deadline) in message.body for message in staff)
    assert list(
        AnniversaryReminder.objects.order_by("-offset_days").values_list("agreement", "anniversary", "offset_days")
    ) == [(ovs.pk, anniversary, 90), (ovs.pk, anniversary, 60), (ovs.pk, anniversary, 30), (ovs.pk, anniversary, 7)]
    assert AnniversaryReminder.objects.get(offset_days=90).sent_at is not None


def test_a_days_run_costs_the_same_queries_for_many_customers_as_for_few(mailoutbox, django_assert_max_num_queries):
    def customers_due(count: int) -> None:
        for n in range(count):
            subscription = SubscriptionFactory(term_end=START + timedelta(days=7 + n % 50))
            SubscriptionFactory(
                tenant=subscription.tenant, agreement=subscription.agreement, term_end=subscription.term_end
            )
            SubscriptionFactory(term_end=START - timedelta(days=1 + n))  # ends: a lifecycle move

    customers_due(2)
    with django_assert_max_num_queries(40) as few:
        run_day(START)
    RenewalReminder.objects.all().delete()
    customers_due(30)
    with django_assert_max_num_queries(len(few.captured_queries)):
        run_day(START + timedelta(days=1))
    assert len(mailoutbox) == 2 + 32


def test_beat_runs_the_tick_task_which_sends_the_days_reminders(mailoutbox, settings):
    from redemption.tasks import renewals_tick as task

    entry = settings.CELERY_BEAT_SCHEDULE["renewals-tick"]
    assert entry["task"] == task.name
    SubscriptionFactory(term_end=START + timedelta(days=7))
    with time_machine.travel(datetime(2027, 1, 4, 23, 30, tzinfo=ZoneInfo("UTC")), tick=False):
        task.apply()
    assert len(mailoutbox) == 1


def bound_renewal(subscription: Subscription, *, renewed_from: date, ends_on: date) -> SeatAllocation:
    """A renewal the worker bound: its plan kept the term end it renewed from, its line the sheet's coverage."""
    allocation = request_renewal(subscription, SeatAllocation.Status.BOUND, ends_on=ends_on)
    SeatAllocation.objects.filter(pk=allocation.pk).update(previous_term_end=renewed_from, target_term_end=ends_on)
    return allocation


def test_a_renewal_bound_earlier_does_not_silence_the_term_it_started(mailoutbox):
    # Renewed from 2027-01-31 to a term ending 2028-01-30 (rule 7), while the sheet said coverage to 2028-01-31.
    subscription = SubscriptionFactory(term_end=date(2028, 1, 30))
    bound_renewal(subscription, renewed_from=date(2027, 1, 31), ends_on=date(2028, 1, 31))

    run_day(date(2028, 1, 30) - timedelta(days=30))

    assert len(mailoutbox) == 1
    assert RenewalReminder.objects.get().term_end == date(2028, 1, 30)


def test_seats_added_after_a_renewal_keep_the_reminders_of_the_blended_end(mailoutbox):
    # Renewed to 2028-04-30, then seats added blended the end to 2028-03-31 (rule 7).
    subscription = SubscriptionFactory(term_end=date(2028, 3, 31))
    bound_renewal(subscription, renewed_from=date(2027, 4, 30), ends_on=date(2028, 4, 30))

    run_day(date(2028, 3, 1))

    assert len(mailoutbox) == 1


def test_a_renewal_bound_for_the_term_ending_now_still_silences_it(mailoutbox):
    subscription = SubscriptionFactory(term_end=START + timedelta(days=20))
    bound_renewal(subscription, renewed_from=subscription.term_end, ends_on=subscription.term_end + timedelta(days=365))

    run_day(START)

    assert mailoutbox == []


def test_a_renewal_asked_for_another_tenant_does_not_silence_this_one(mailoutbox):
    subscription = SubscriptionFactory(term_end=START + timedelta(days=30))
    second = SubscriptionFactory(
        agreement=subscription.agreement,
        product=subscription.product,
        tenant=TenantFactory(customer=subscription.tenant.customer),
        term_end=subscription.term_end,
    )
    request_renewal(second, SeatAllocation.Status.AWAITING_APPROVAL)

    run_day(START)

    assert [r.subscription_id for r in RenewalReminder.objects.all()] == [subscription.pk]
    assert len(mailoutbox) == 1
