"""Renewals from outside the scheduler: the command by hand, and two runs at the same moment."""

import threading
from datetime import date, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from redemption.models import RenewalReminder
from redemption.renewals import renewal_reminders_send
from tests.conftest import requires_postgres
from tests.factories import CustomerFactory, SubscriptionFactory, TenantFactory

START = date(2027, 1, 4)


@pytest.mark.django_db
def test_command_dry_run_lists_what_would_be_sent_and_sends_nothing(mailoutbox, capsys):
    subscription = SubscriptionFactory(term_end=START + timedelta(days=7))

    call_command("send_renewal_reminders", "--dry-run", "--date", START.isoformat())

    out = capsys.readouterr().out
    assert "1 mail(s) would be sent" in out
    assert subscription.agreement.customer.email in out
    assert subscription.tenant.default_domain in out and "7-day reminder" in out
    assert mailoutbox == []
    assert not RenewalReminder.objects.exists()


@pytest.mark.django_db
def test_command_date_runs_as_of_that_day(mailoutbox, capsys):
    subscription = SubscriptionFactory(term_end=START + timedelta(days=200))

    call_command("send_renewal_reminders", "--date", START.isoformat())
    assert mailoutbox == []
    call_command("send_renewal_reminders", "--date", (subscription.term_end - timedelta(days=60)).isoformat())

    assert len(mailoutbox) == 1
    assert "1 mail(s) sent" in capsys.readouterr().out
    assert RenewalReminder.objects.get().offset_days == 60


def test_command_refuses_a_date_it_cannot_read():
    with pytest.raises(CommandError, match="YYYY-MM-DD"):
        call_command("send_renewal_reminders", "--date", "31/12/2027")


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_two_runs_at_the_same_moment_send_nothing_twice(mailoutbox):
    for n in range(40):
        customer = CustomerFactory()
        for offset in (3, 25, 55, 80):
            SubscriptionFactory(
                tenant=TenantFactory(customer=customer), term_end=START + timedelta(days=offset + n % 3)
            )
    barrier = threading.Barrier(2)
    results, errors = [], []

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(renewal_reminders_send(today=START))
        except Exception as exc:  # reported below; a thread cannot fail the test itself
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sum(result.mails_sent for result in results) == 40
    assert sum(result.reminders_sent for result in results) == 160
    recipients = [message.to[0] for message in mailoutbox]
    assert len(recipients) == len(set(recipients)) == 40
    assert RenewalReminder.objects.filter(status="sent").count() == 160
