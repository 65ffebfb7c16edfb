"""Renewals: the lifecycle after a term ends (rule 8) and the reminders before it ends (rule 9).

Everything here is set-based: one statement per lifecycle transition and per reminder claim, whatever
the number of subscriptions, so that a daily run costs the same number of queries at any size.

A reminder is sent at most once per (subscription, term end, offset): a run first *claims* the
reminders it will send by inserting their rows (the unique constraint turns a second run's insert of
the same reminder into nothing), sends the mail, then records the outcome. A failed delivery is marked
failed and claimed again by a later run; a run that dies between sending and recording leaves its rows
"sending", which no run sends again: at most once wins over at least once.

A renewal is *requested for this term* when a seat allocation on a `renewal` order line of the same
agreement and product is awaiting approval, queued, binding or bound, and that line's coverage ends
after the subscription's current term end (it buys time beyond this term). Once a renewal is bound the
term end moves to the new term's end, the line no longer reaches beyond it, and the next term's
reminders go out as usual.
"""

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import groupby
from operator import attrgetter

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import connection, transaction
from django.db.models import Case, DateField, DateTimeField, Exists, F, IntegerField, OuterRef, Q, Value, When
from django.db.models.fields import UUIDField
from django.template.loader import render_to_string
from django.utils import timezone

from licensing.models import PROGRAM_TERM_YEARS, Agreement, Order, OrderLine, Program
from redemption.models import (
    AnniversaryReminder,
    RenewalReminder,
    RenewalSchedule,
    SeatAllocation,
    Subscription,
)
from redemption.statements import bulk_batch_rows

logger = logging.getLogger(__name__)

# Rule 8: expired for 30 days after the term end, then disabled for 90 days, then deprovisioned.
EXPIRED_DAYS = 30
DISABLED_DAYS = 90
# OVS: the anniversary order is due within 30 days of each anniversary.
ANNIVERSARY_ORDER_DAYS = 30
# Rows locked and historised per lifecycle statement; an ordinary day moves far fewer.
LIFECYCLE_BATCH = 10_000
# A renewal on its way to the provider; one bound (or being reversed: still in effect until the reversal
# is done) renewed the term that ended at its previous_term_end.
RENEWAL_ON_ITS_WAY = [
    SeatAllocation.Status.AWAITING_APPROVAL,
    SeatAllocation.Status.QUEUED,
    SeatAllocation.Status.BINDING,
]
RENEWAL_IN_EFFECT = [
    SeatAllocation.Status.BOUND,
    SeatAllocation.Status.REVERSING,
    SeatAllocation.Status.REVERSAL_FAILED,
]
LIFECYCLE_STATUSES = [Subscription.Status.ACTIVE, Subscription.Status.EXPIRED, Subscription.Status.DISABLED]


# --- Lifecycle (rule 8) -------------------------------------------------------------------------


@dataclass
class LifecycleResult:
    today: date
    moved: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.moved.values())


def _lifecycle_steps(today: date) -> list[tuple[str, list[str], Q, str]]:
    """Return (target status, statuses it is reached from, term-end filter, reason) in the order to apply."""
    # Reasons stay under simple_history's 100-character change-reason column.
    expired_since = today - timedelta(days=EXPIRED_DAYS)  # term ends before this: no longer merely expired
    disabled_since = expired_since - timedelta(days=DISABLED_DAYS)  # before this: deprovisioned
    S = Subscription.Status
    # The furthest move first, so that a subscription missed for a while jumps straight to where it belongs.
    return [
        (
            S.DEPROVISIONED,
            [S.ACTIVE, S.EXPIRED, S.DISABLED],
            Q(term_end__lt=disabled_since),
            "Deprovisioned: term ended {term_end}, 30 expired and 90 disabled days over.",
        ),
        (
            S.DISABLED,
            [S.ACTIVE, S.EXPIRED],
            Q(term_end__lt=expired_since, term_end__gte=disabled_since),
            "Disabled (admins only) for 90 days: term ended {term_end}, 30 expired days over.",
        ),
        (
            S.EXPIRED,
            [S.ACTIVE],
            Q(term_end__lt=today, term_end__gte=expired_since),
            "Expired (users keep access) for 30 days: term ended {term_end}.",
        ),
    ]


def subscription_lifecycle_advance(*, today: date, dry_run: bool = False) -> LifecycleResult:
    """Move subscriptions whose term has ended to expired, disabled or deprovisioned as of `today`."""
    result = LifecycleResult(today=today)
    for status, sources, window, reason in _lifecycle_steps(today):
        candidates = Subscription.objects.filter(window, status__in=sources)
        if dry_run:
            result.moved[status] = candidates.count()
            continue
        moved, last_id = 0, 0
        while True:
            with transaction.atomic():
                # Locked so that a renewal being bound at this moment either lands first (and the row
                # no longer matches) or waits for this move and then brings the subscription back.
                batch = list(candidates.filter(pk__gt=last_id).select_for_update().order_by("pk")[:LIFECYCLE_BATCH])
                if not batch:
                    break
                now = timezone.now()
                Subscription.objects.filter(pk__in=[row.pk for row in batch]).update(status=status, updated_at=now)
                for row in batch:
                    row.status, row.updated_at = status, now
                    row._change_reason = reason.format(term_end=row.term_end.isoformat())
                Subscription.history.bulk_history_create(batch, update=True, default_date=now)
            moved += len(batch)
            last_id = batch[-1].pk
            if len(batch) < LIFECYCLE_BATCH:
                break
        result.moved[status] = moved
        if moved:
            logger.info("Renewals %s: %d subscription(s) now %s.", today, moved, status)
    return result


# --- Which reminder is due (rule 9) -------------------------------------------------------------


def renewal_requested(prefix: str = "") -> Exists:
    """Return a condition true when a renewal is requested for the outer subscription's current term.

    The renewal is of the same subscription (agreement, product and tenant): waiting for approval, queued
    or being bound, or bound for the term that ends now. A renewal bound earlier started the current term
    (its previous end is not this one): the current term gets its own reminders.
    """
    term_end = OuterRef(f"{prefix}term_end")
    return Exists(
        SeatAllocation.objects.filter(
            Q(status__in=RENEWAL_ON_ITS_WAY)
            | Q(status__in=RENEWAL_IN_EFFECT)
            & (
                Q(previous_term_end=term_end)
                # Bound before its plan was kept: its line's coverage says which term it renews.
                | Q(previous_term_end__isnull=True, order_line__ends_on__gt=term_end)
            ),
            order_line__kind=OrderLine.Kind.RENEWAL,
            order_line__order__agreement_id=OuterRef(f"{prefix}agreement_id"),
            order_line__product_id=OuterRef(f"{prefix}product_id"),
            tenant_id=OuterRef(f"{prefix}tenant_id"),
        )
    )


def due_offset(*, today: date, offsets: Iterable[int], field_name: str) -> Case:
    """Return the smallest offset that is >= the days left until `field_name` (None when none is)."""
    whens = [
        When(**{f"{field_name}__lte": today + timedelta(days=offset)}, then=Value(offset)) for offset in sorted(offsets)
    ]
    return Case(*whens, default=Value(None), output_field=IntegerField())


def current_offset_q(*, today: date, offsets: Iterable[int], field_name: str) -> Q:
    """Return a filter: the row's offset is still the due one for the end date in `field_name`."""
    condition, lower = Q(), None
    for offset in sorted(offsets):
        bounds = {f"{field_name}__lte": today + timedelta(days=offset)}
        if lower is not None:
            bounds[f"{field_name}__gt"] = lower
        condition |= Q(offset_days=offset, **bounds)
        lower = today + timedelta(days=offset)
    return condition


def _due_subscriptions(*, today: date, offsets: list[int]):
    """Return active subscriptions with a reminder due today and not yet claimed, annotated `due_offset`."""
    return (
        Subscription.objects.filter(
            status=Subscription.Status.ACTIVE,
            term_end__gte=today,
            term_end__lte=today + timedelta(days=max(offsets)),
        )
        .annotate(due_offset=due_offset(today=today, offsets=offsets, field_name="term_end"))
        .exclude(renewal_requested())
        .exclude(
            Exists(
                RenewalReminder.objects.filter(
                    subscription_id=OuterRef("pk"), term_end=OuterRef("term_end"), offset_days=OuterRef("due_offset")
                )
            )
        )
        # One mail per customer per day: a customer already written to today waits for tomorrow's run,
        # which then sends the latest offset due.
        .exclude(Exists(RenewalReminder.objects.filter(customer_id=OuterRef("agreement__customer_id"), run_on=today)))
        .order_by()
    )


# A failed reminder waits longer after each failed try (a tick, then twice that, ...), up to this: tries
# spread over most of a day, so that a mail server down for hours loses no reminder.
RETRY_WAIT_CAP = timedelta(hours=4)


def retry_waited(*, now: datetime | None) -> Q:
    """Return a filter: the failed reminder has waited long enough since its last try (None: do not wait)."""
    if now is None:
        return Q()
    tick = timedelta(minutes=settings.RENEWAL_TICK_MINUTES)
    # Each try is a little under its wait after the last, so that the tick that comes on time takes it.
    condition = Q(attempts=0)
    for attempts in range(1, settings.RENEWAL_REMINDER_MAX_ATTEMPTS + 1):
        wait = min(RETRY_WAIT_CAP, tick * 2 ** min(attempts - 1, 16)) - tick / 2
        condition |= Q(attempts=attempts, claimed_at__lte=now - wait)
    return condition


def _retryable_reminders(*, today: date, offsets: list[int], now: datetime | None = None):
    """Return failed reminders that are still the due one for a subscription nobody has renewed, and whose
    wait since their last try (retry_waited) is over."""
    still_due = Subscription.objects.filter(
        pk=OuterRef("subscription_id"), status=Subscription.Status.ACTIVE, term_end=OuterRef("term_end")
    ).exclude(renewal_requested())
    return RenewalReminder.objects.filter(
        current_offset_q(today=today, offsets=offsets, field_name="term_end"),
        Exists(still_due),
        retry_waited(now=now),
        status=RenewalReminder.Status.FAILED,
        attempts__lt=settings.RENEWAL_REMINDER_MAX_ATTEMPTS,
        term_end__gte=today,
    )


def _claim_new_reminders(*, today: date, offsets: list[int], token: uuid.UUID, now: datetime) -> None:
    """Insert a claimed row for every due reminder in one statement; rows another run holds are skipped."""
    columns = [
        ("subscription_id", F("pk")),
        ("customer_id", F("agreement__customer_id")),
        ("term_end", F("term_end")),
        ("offset_days", F("due_offset")),
        ("status", Value(RenewalReminder.Status.SENDING)),
        ("run_on", Value(today, output_field=DateField())),
        ("claim_token", Value(token, output_field=UUIDField())),
        ("claimed_at", Value(now, output_field=DateTimeField())),
        ("created_at", Value(now, output_field=DateTimeField())),
        ("attempts", Value(0, output_field=IntegerField())),
        ("last_error", Value("")),
    ]
    select = _due_subscriptions(today=today, offsets=offsets).annotate(
        **{f"claim_{name}": expression for name, expression in columns}
    )
    select = select.values_list(*[f"claim_{name}" for name, _ in columns])
    sql, params = select.query.sql_with_params()
    table = connection.ops.quote_name(RenewalReminder._meta.db_table)
    names = ", ".join(connection.ops.quote_name(name) for name, _ in columns)
    with connection.cursor() as cursor:
        # The unique constraint is the lock: a reminder another run inserted first is not ours to send.
        cursor.execute(f"INSERT INTO {table} ({names}) {sql} ON CONFLICT DO NOTHING", params)


# --- Sending --------------------------------------------------------------------------------------


@dataclass
class PlannedMail:
    """One mail a run sends (or, in a dry run, would send)."""

    kind: str  # "customer" or "anniversary"
    to: list[str]
    cc: list[str]
    subject: str
    lines: list[str]


@dataclass
class ReminderRunResult:
    today: date
    dry_run: bool = False
    mails_sent: int = 0
    mails_failed: int = 0
    reminders_sent: int = 0
    reminders_failed: int = 0
    planned: list[PlannedMail] = field(default_factory=list)


def _subscription_line(reminder: RenewalReminder, today: date) -> dict:
    subscription = reminder.subscription
    return {
        "tenant_domain": subscription.tenant.default_domain,
        "part_number": subscription.product.part_number,
        "product": subscription.product.description,
        "seats": subscription.quantity,
        "term_end": reminder.term_end,
        "days_left": (reminder.term_end - today).days,
        "offset_days": reminder.offset_days,
        "agreement": str(subscription.agreement),
    }


def _customer_mail(reminders: list[RenewalReminder], today: date) -> EmailMultiAlternatives:
    """Build the one mail that tells a customer about all its subscriptions due today."""
    customer = reminders[0].customer
    agreements = [reminder.subscription.agreement for reminder in reminders]
    partners = {agreement.partner_id: agreement.partner for agreement in agreements}
    context = {
        "customer": customer,
        "partners": list(partners.values()),
        "lines": [_subscription_line(reminder, today) for reminder in reminders],
        "today": today,
    }
    subject = " ".join(render_to_string("redemption/email/renewal_reminder_subject.txt", context).split())
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string("redemption/email/renewal_reminder.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[customer.email],
        cc=sorted({partner.email for partner in partners.values() if partner.email}),
    )
    message.attach_alternative(render_to_string("redemption/email/renewal_reminder.html", context), "text/html")
    return message


def _anniversary_mail(reminders: list[AnniversaryReminder], today: date) -> EmailMultiAlternatives:
    """Build the staff mail listing the OVS anniversary orders due."""
    lines = [
        {
            "agreement": reminder.agreement,
            "customer": reminder.agreement.customer,
            "partner": reminder.agreement.partner,
            "anniversary": reminder.anniversary,
            "deadline": reminder.deadline,
            "days_left": (reminder.deadline - today).days,
        }
        for reminder in reminders
    ]
    context = {"lines": lines, "today": today}
    subject = " ".join(render_to_string("redemption/email/anniversary_reminder_subject.txt", context).split())
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string("redemption/email/anniversary_reminder.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=list(settings.RENEWAL_STAFF_EMAILS),
    )
    message.attach_alternative(render_to_string("redemption/email/anniversary_reminder.html", context), "text/html")
    return message


def _plan(message: EmailMultiAlternatives, kind: str) -> PlannedMail:
    return PlannedMail(kind=kind, to=list(message.to), cc=list(message.cc), subject=message.subject, lines=[])


class _Outcomes:
    """Collect delivery outcomes and write them in a few statements per batch of mails."""

    def __init__(self, model, token: uuid.UUID, group_field: str, result: ReminderRunResult) -> None:
        self.model, self.token, self.group_field, self.result = model, token, group_field, result
        self.sent: list[int] = []
        self.failed: dict[str, list[int]] = {}
        self.pending = 0

    def record(self, group_key: int, count: int, error: str | None) -> None:
        if error is None:
            self.sent.append(group_key)
            self.result.mails_sent += 1
            self.result.reminders_sent += count
        else:
            self.failed.setdefault(error, []).append(group_key)
            self.result.mails_failed += 1
            self.result.reminders_failed += count
        self.pending += 1
        if self.pending >= settings.RENEWAL_REMINDER_BATCH_SIZE:
            self.flush()

    def flush(self) -> None:
        mine = self.model.objects.filter(claim_token=self.token, status=self.model.Status.SENDING)
        now = timezone.now()
        if self.sent:
            mine.filter(**{f"{self.group_field}__in": self.sent}).update(
                status=self.model.Status.SENT, sent_at=now, attempts=F("attempts") + 1, last_error=""
            )
        for error, keys in self.failed.items():
            mine.filter(**{f"{self.group_field}__in": keys}).update(
                status=self.model.Status.FAILED, attempts=F("attempts") + 1, last_error=error[:2000]
            )
        self.sent, self.failed, self.pending = [], {}, 0


def _deliver(mail_connection, message: EmailMultiAlternatives) -> str | None:
    """Send one mail; return None when the backend took it, else the reason it did not."""
    try:
        mail_connection.send_messages([message])
    except Exception as exc:  # any delivery failure is recorded against the reminder and retried
        logger.warning("Renewal reminder to %s failed: %s", ", ".join(message.to), exc)
        try:
            mail_connection.close()
        except Exception:  # a broken connection may fail to close too; the next send reopens it
            logger.debug("Closing the mail connection failed too.", exc_info=True)
        return f"{exc.__class__.__name__}: {exc}"
    return None


def _iterate(queryset):
    # Stream on PostgreSQL (a server-side cursor); SQLite would see its own writes mid-read, so load first.
    return queryset.iterator(chunk_size=2000) if connection.vendor == "postgresql" else list(queryset)


def _send_customer_reminders(*, today: date, token: uuid.UUID, result: ReminderRunResult, mail_connection) -> None:
    claimed = (
        RenewalReminder.objects.filter(claim_token=token, status=RenewalReminder.Status.SENDING)
        .select_related(
            "customer__partner", "subscription__tenant", "subscription__product", "subscription__agreement__partner"
        )
        .order_by("customer_id", "term_end", "subscription_id")
    )
    outcomes = _Outcomes(RenewalReminder, token, "customer_id", result)
    for customer_id, group in groupby(_iterate(claimed), key=attrgetter("customer_id")):
        reminders = list(group)
        outcomes.record(customer_id, len(reminders), _deliver(mail_connection, _customer_mail(reminders, today)))
    outcomes.flush()


# --- OVS anniversary orders -----------------------------------------------------------------------


def _anniversary_candidates(*, today: date, offsets: list[int]) -> list[AnniversaryReminder]:
    """Return unsaved reminders for OVS anniversary-order deadlines due today and not yet claimed."""
    horizon = today + timedelta(days=max(offsets))
    max_years = PROGRAM_TERM_YEARS[Program.OVS]
    # Deadline = starts_on + N years + 30 days; select agreements whose N-th deadline falls in the window.
    windows = Q()
    for years in range(1, max_years):
        windows |= Q(
            starts_on__gte=today - timedelta(days=ANNIVERSARY_ORDER_DAYS) - relativedelta(years=years),
            starts_on__lte=horizon - timedelta(days=ANNIVERSARY_ORDER_DAYS) - relativedelta(years=years),
        )
    agreements = list(Agreement.objects.filter(windows, program=Program.OVS, ends_on__gt=today).order_by("pk"))
    if not agreements:
        return []
    agreement_ids = Agreement.objects.filter(windows, program=Program.OVS, ends_on__gt=today).values("pk")
    orders: dict[int, list[date]] = {}
    earliest = today - timedelta(days=2 * ANNIVERSARY_ORDER_DAYS + max(offsets))
    for agreement_id, ordered_on in Order.objects.filter(
        agreement_id__in=agreement_ids, ordered_on__gte=earliest
    ).values_list("agreement_id", "ordered_on"):
        orders.setdefault(agreement_id, []).append(ordered_on)
    claimed = set(
        AnniversaryReminder.objects.filter(agreement_id__in=agreement_ids, deadline__gte=today).values_list(
            "agreement_id", "anniversary", "offset_days"
        )
    )
    due = []
    for agreement in agreements:
        for years in range(1, max_years):
            anniversary = agreement.starts_on + relativedelta(years=years)
            deadline = anniversary + timedelta(days=ANNIVERSARY_ORDER_DAYS)
            if anniversary >= agreement.ends_on or not today <= deadline <= horizon:
                continue
            window = (anniversary - timedelta(days=ANNIVERSARY_ORDER_DAYS), deadline)
            if any(window[0] <= ordered_on <= window[1] for ordered_on in orders.get(agreement.pk, [])):
                continue  # the anniversary order is in
            offset = min(offset for offset in offsets if offset >= (deadline - today).days)
            if (agreement.pk, anniversary, offset) in claimed:
                continue
            due.append(
                AnniversaryReminder(agreement=agreement, anniversary=anniversary, deadline=deadline, offset_days=offset)
            )
    return due


def _send_anniversary_reminders(
    *,
    today: date,
    offsets: list[int],
    token: uuid.UUID,
    now: datetime,
    result: ReminderRunResult,
    mail_connection,
    claim_new: bool,
) -> None:
    due = _anniversary_candidates(today=today, offsets=offsets) if claim_new else []
    for reminder in due:
        reminder.status, reminder.run_on, reminder.claim_token = AnniversaryReminder.Status.SENDING, today, token
        reminder.claimed_at = now
    if due:
        AnniversaryReminder.objects.bulk_create(
            due, ignore_conflicts=True, batch_size=bulk_batch_rows(AnniversaryReminder)
        )
    AnniversaryReminder.objects.filter(
        current_offset_q(today=today, offsets=offsets, field_name="deadline"),
        retry_waited(now=now),
        status=AnniversaryReminder.Status.FAILED,
        attempts__lt=settings.RENEWAL_REMINDER_MAX_ATTEMPTS,
        deadline__gte=today,
    ).update(status=AnniversaryReminder.Status.SENDING, claim_token=token, claimed_at=now, run_on=today)
    claimed = list(
        AnniversaryReminder.objects.filter(claim_token=token, status=AnniversaryReminder.Status.SENDING)
        .select_related("agreement__customer", "agreement__partner")
        .order_by("deadline", "agreement_id")
    )
    if not claimed:
        return
    outcomes = _Outcomes(AnniversaryReminder, token, "claim_token", result)
    outcomes.record(token, len(claimed), _deliver(mail_connection, _anniversary_mail(claimed, today)))
    outcomes.flush()


def _dry_run(*, today: date, offsets: list[int], result: ReminderRunResult) -> ReminderRunResult:
    due = list(
        _due_subscriptions(today=today, offsets=offsets).select_related(
            "agreement__customer", "agreement__partner", "tenant", "product"
        )
    )
    retry = list(
        _retryable_reminders(today=today, offsets=offsets).select_related(
            "customer__partner", "subscription__tenant", "subscription__product", "subscription__agreement__partner"
        )
    )
    reminders = [
        RenewalReminder(
            subscription=subscription,
            customer=subscription.agreement.customer,
            term_end=subscription.term_end,
            offset_days=subscription.due_offset,
        )
        for subscription in due
    ] + retry
    reminders.sort(key=lambda reminder: (reminder.customer_id, reminder.term_end, reminder.subscription_id))
    for _, group in groupby(reminders, key=attrgetter("customer_id")):
        group = list(group)
        plan = _plan(_customer_mail(group, today), "customer")
        plan.lines = [
            f"{line['part_number']} x{line['seats']} on {line['tenant_domain']}, term ends {line['term_end']} "
            f"({line['days_left']} days, {line['offset_days']}-day reminder)"
            for line in (_subscription_line(reminder, today) for reminder in group)
        ]
        result.planned.append(plan)
    anniversaries = _anniversary_candidates(today=today, offsets=offsets)
    if anniversaries:
        plan = _plan(_anniversary_mail(anniversaries, today), "anniversary")
        plan.lines = [
            f"{reminder.agreement}: anniversary {reminder.anniversary}, order due by {reminder.deadline}"
            for reminder in anniversaries
        ]
        result.planned.append(plan)
    return result


def renewal_reminders_send(*, today: date, dry_run: bool = False, retry_only: bool = False) -> ReminderRunResult:
    """Send the renewal reminders due on `today` (rule 9), one mail per customer, and retry failed ones."""
    schedule = RenewalSchedule.load()
    offsets = schedule.offset_days
    result = ReminderRunResult(today=today, dry_run=dry_run)
    if dry_run:
        return _dry_run(today=today, offsets=offsets, result=result)
    token, now = uuid.uuid4(), timezone.now()
    if not retry_only:
        _claim_new_reminders(today=today, offsets=offsets, token=token, now=now)
    # Claimed only while still failed: a run that claimed it a moment earlier has changed its status.
    _retryable_reminders(today=today, offsets=offsets, now=now).update(
        status=RenewalReminder.Status.SENDING, claim_token=token, claimed_at=now, run_on=today
    )
    mail_connection = get_connection()
    try:
        _send_customer_reminders(today=today, token=token, result=result, mail_connection=mail_connection)
        _send_anniversary_reminders(
            today=today,
            offsets=offsets,
            token=token,
            now=now,
            result=result,
            mail_connection=mail_connection,
            claim_new=not retry_only,
        )
    finally:
        mail_connection.close()
    if result.mails_sent or result.mails_failed:
        logger.info(
            "Renewal reminders %s: %d mail(s) sent for %d reminder(s), %d failed.",
            today,
            result.mails_sent,
            result.reminders_sent,
            result.mails_failed,
        )
    return result


# --- The daily run --------------------------------------------------------------------------------


@dataclass
class DailyRunResult:
    today: date
    lifecycle: LifecycleResult
    reminders: ReminderRunResult


def renewals_daily_run(*, today: date, dry_run: bool = False) -> DailyRunResult:
    """Run the day's renewal work: move ended subscriptions along (rule 8), then send reminders (rule 9)."""
    lifecycle = subscription_lifecycle_advance(today=today, dry_run=dry_run)
    reminders = renewal_reminders_send(today=today, dry_run=dry_run)
    return DailyRunResult(today=today, lifecycle=lifecycle, reminders=reminders)


def renewals_tick(*, now: datetime) -> DailyRunResult | ReminderRunResult:
    """Run the day's renewal work once the schedule's hour has come, else retry failed reminders only."""
    schedule = RenewalSchedule.load()
    local = timezone.localtime(now)
    today = local.date()
    if local.hour >= schedule.send_hour:
        # A conditional update claims the day: one tick, on one worker, runs it.
        claimed = (
            RenewalSchedule.objects.filter(pk=schedule.pk)
            .filter(Q(last_run_on__isnull=True) | Q(last_run_on__lt=today))
            .update(last_run_on=today)
        )
        if claimed:
            return renewals_daily_run(today=today)
    return renewal_reminders_send(today=today, retry_only=True)
