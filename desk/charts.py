"""The landing page's pictures: what is coming up for renewal, how binding went, how old the open work is.

Each is a bar chart drawn as plain SVG on the server (rectangles, text and links: no script, no style
element, so it needs nothing from the Content-Security-Policy), every bar linking to the list behind it.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from dateutil.relativedelta import relativedelta
from django.db.models import Count, F, Model, Sum
from django.db.models.functions import TruncHour, TruncMonth
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django.utils.http import urlencode

from licensing.models import OrderLine, Program
from redemption.models import SeatAllocation, Subscription

# One colour per series, readable on light and dark themes alike.
COLOURS = ["#417690", "#79aec8", "#c79a2e", "#ba2121", "#2e7d32"]


@dataclass
class Series:
    label: str
    colour: str
    values: list[int]
    urls: list[str]


@dataclass
class BarChart:
    title: str
    categories: list[str]
    series: list[Series] = field(default_factory=list)
    note: str = ""
    stacked: bool = True

    @property
    def total(self) -> int:
        return sum(sum(s.values) for s in self.series)

    def svg(self, width: int = 440, height: int = 190) -> str:
        """Draw the chart: stacked (or side-by-side) bars, the largest value on the axis, a legend."""
        left, bottom, top = 34, 34, 12
        plot_w, plot_h = width - left - 8, height - bottom - top
        slots = max(1, len(self.categories))
        per_slot = [sum(values) for values in zip(*(s.values for s in self.series), strict=True)] or [0]
        highest = max(per_slot if self.stacked else [max(s.values or [0]) for s in self.series] or [0]) or 1
        slot_w = plot_w / slots
        bar_w = slot_w * 0.7 / (1 if self.stacked else max(1, len(self.series)))
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
            f'role="img" aria-label="{escape(self.title)}">',
            f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end" fill="currentColor">{highest}</text>',
            f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 8}" y2="{top + plot_h}" stroke="#999"/>',
        ]
        for index, category in enumerate(self.categories):
            x0 = left + index * slot_w + slot_w * 0.15
            stacked_h = 0.0
            for number, series in enumerate(self.series):
                value = series.values[index]
                if not value:
                    continue
                bar_h = plot_h * value / highest
                x = x0 if self.stacked else x0 + number * bar_w
                y = top + plot_h - bar_h - (stacked_h if self.stacked else 0)
                if self.stacked:
                    stacked_h += bar_h
                tip = f"{category}: {value} {series.label}"
                parts.append(
                    f'<a href="{escape(series.urls[index])}"><rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                    f'height="{max(bar_h, 1):.1f}" fill="{series.colour}"><title>{escape(tip)}</title></rect></a>'
                )
            if index % max(1, slots // 12) == 0:
                parts.append(
                    f'<text x="{x0 + bar_w / 2:.1f}" y="{top + plot_h + 12}" font-size="9" text-anchor="middle" '
                    f'fill="currentColor">{escape(category)}</text>'
                )
        x = left
        for series in self.series:
            parts.append(f'<rect x="{x}" y="{height - 12}" width="9" height="9" fill="{series.colour}"/>')
            parts.append(
                f'<text x="{x + 12}" y="{height - 4}" font-size="10" fill="currentColor">{escape(series.label)}</text>'
            )
            x += 14 + 6 * len(series.label) + 10
        parts.append("</svg>")
        return "".join(parts)


def _url(name: str, **query) -> str:
    return reverse(name) + ("?" + urlencode(query) if query else "")


def renewals_by_month(today: date | None = None) -> BarChart:
    """Seats whose term ends in each of the next 12 months, by program."""
    today = today or timezone.localdate()
    first = today.replace(day=1)
    months = [first + relativedelta(months=n) for n in range(12)]
    end = months[-1] + relativedelta(months=1)
    rows = (
        Subscription.objects.filter(
            term_end__gte=first,
            term_end__lt=end,
            status__in=[Subscription.Status.ACTIVE, Subscription.Status.EXPIRED],
        )
        .annotate(month=TruncMonth("term_end"))
        .values("month", "agreement__program")
        .annotate(seats=Sum("quantity"))
    )
    seats = {(row["month"], row["agreement__program"]): row["seats"] for row in rows}
    chart = BarChart("Seats up for renewal, next 12 months", [f"{m:%b %y}" for m in months])
    for colour, (program, label) in zip(COLOURS, Program.choices, strict=False):
        chart.series.append(
            Series(
                label,
                colour,
                [seats.get((m, program), 0) for m in months],
                [
                    _url(
                        "admin:redemption_subscription_changelist",
                        term_end__range__gte=f"{m:%Y-%m-%d}",
                        term_end__range__lte=f"{m + relativedelta(months=1) - timedelta(days=1):%Y-%m-%d}",
                        agreement__program__exact=program,
                    )
                    for m in months
                ],
            )
        )
    return chart


def bindings_by_hour(now: datetime | None = None) -> BarChart:
    """Bindings bound and failed in each of the last 48 hours."""
    now = timezone.localtime(now or timezone.now()).replace(minute=0, second=0, microsecond=0)
    hours = [now - timedelta(hours=n) for n in range(47, -1, -1)]
    since = hours[0]
    bound = dict(
        SeatAllocation.objects.filter(bound_at__gte=since)
        .annotate(hour=TruncHour("bound_at"))
        .values_list("hour")
        .annotate(n=Count("id"))
        .values_list("hour", "n")
    )
    failed = dict(
        SeatAllocation.objects.filter(status__in=SeatAllocation.FAILURES, updated_at__gte=since)
        .annotate(hour=TruncHour("updated_at"))
        .values_list("hour")
        .annotate(n=Count("id"))
        .values_list("hour", "n")
    )
    bound = {timezone.localtime(hour): n for hour, n in bound.items()}
    failed = {timezone.localtime(hour): n for hour, n in failed.items()}
    allocations = "admin:redemption_seatallocation_changelist"
    failures = ",".join(sorted(SeatAllocation.FAILURES))

    def hour_of(field: str, hour: datetime, **query) -> str:
        # Each bar opens the allocations of its own hour.
        return _url(
            allocations,
            **query,
            **{f"{field}__gte": hour.isoformat(), f"{field}__lt": (hour + timedelta(hours=1)).isoformat()},
        )

    chart = BarChart("Bindings per hour, last 48 hours", [f"{h:%H:00}" for h in hours])
    chart.series = [
        Series(
            "bound",
            COLOURS[4],
            [bound.get(h, 0) for h in hours],
            [hour_of("bound_at", h, status__exact="bound") for h in hours],
        ),
        Series(
            "failed",
            COLOURS[3],
            [failed.get(h, 0) for h in hours],
            [hour_of("updated_at", h, status__in=failures) for h in hours],
        ),
    ]
    return chart


# Open work by how long ago it was ordered: (label, lower bound in days, upper bound in days or None).
AGE_BUCKETS = [("today", 0, 0), ("1-7 days", 1, 7), ("8-30 days", 8, 30), ("over 30 days", 31, None)]


def open_work_by_age(today: date | None = None) -> BarChart:
    """Order lines with seats not yet bound, by the age of their order."""
    today = today or timezone.localdate()
    unbound = OrderLine.objects.filter(seats_allocated__lt=F("quantity"))
    chart = BarChart("Open work by age", [label for label, _, _ in AGE_BUCKETS], stacked=False)
    values, urls = [], []
    for _, low, high in AGE_BUCKETS:
        rows = unbound.filter(order__ordered_on__lte=today - timedelta(days=low))
        query = {"unbound": "yes", "order__ordered_on__range__lte": f"{today - timedelta(days=low):%Y-%m-%d}"}
        if high is not None:
            rows = rows.filter(order__ordered_on__gte=today - timedelta(days=high))
            query["order__ordered_on__range__gte"] = f"{today - timedelta(days=high):%Y-%m-%d}"
        values.append(rows.count())
        urls.append(_url("admin:licensing_orderline_changelist", **query))
    chart.series = [Series("order lines", COLOURS[0], values, urls)]
    return chart


def landing_charts(*, visible: Callable[[type[Model]], bool] = lambda model: True) -> list[BarChart]:
    """The landing page's charts, those of the models `visible` allows (a person's view permissions)."""
    charts = [(Subscription, renewals_by_month), (SeatAllocation, bindings_by_hour), (OrderLine, open_work_by_age)]
    return [chart() for model, chart in charts if visible(model)]
