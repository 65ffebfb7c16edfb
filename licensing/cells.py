"""Reading one cell of a sheet: headers, dates, whole numbers, programs, order types, emails, domains."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import NamedTuple

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from licensing.models import OrderLine, Program
from tenants.validators import DEFAULT_DOMAIN_RE, normalize_domain


class CellError(ValueError):
    """A cell's value is not acceptable; the message says why."""


class RowError(NamedTuple):
    row: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}, column {self.column}: {self.message}"


@dataclass(frozen=True)
class Column:
    label: str
    required: bool = True


def header_key(name: str) -> str:
    """Return a header name as compared: no case, no spaces, no underscores, no BOM."""
    return "".join(str(name).replace("\ufeff", "").replace("_", " ").split()).lower()


def map_header(header: list[str], columns: tuple[Column, ...]) -> tuple[dict[str, int], list[RowError]]:
    """Return each known column's index in `header`, and an error per missing required column."""
    positions: dict[str, int] = {}
    wanted = {header_key(c.label): c.label for c in columns}
    for index, name in enumerate(header):
        label = wanted.get(header_key(name))
        if label and label not in positions:
            positions[label] = index
    errors = [
        RowError(1, c.label, "this required column is missing from the header")
        for c in columns
        if c.required and c.label not in positions
    ]
    return positions, errors


def text(value: str | date | None) -> str:
    if value is None:
        return ""
    if isinstance(value, date):
        return value.isoformat()
    return value.strip()


_EXCEL_WHOLE = re.compile(r"^(\d+)\.0+$")


def identifier(value: str | date | None) -> str:
    """Return an identifier as text; Excel's 60001234.0 is 60001234."""
    value = text(value)
    match = _EXCEL_WHOLE.match(value)
    return match.group(1) if match else value


@lru_cache(maxsize=4096)
def _parse_date(value: str) -> date:
    candidate = value.split("T")[0].split(" ")[0]
    if "-" in candidate:
        try:
            return date.fromisoformat(candidate)
        except ValueError:
            pass
    elif candidate.count("/") == 2:
        month, day, year = candidate.split("/")
        if month.isdigit() and day.isdigit() and year.isdigit() and len(year) == 4:
            try:
                return date(int(year), int(month), int(day))
            except ValueError:
                pass
    raise CellError(f"{value!r} is not a date: use YYYY-MM-DD or M/D/YYYY")


def a_date(value: str | date) -> date:
    if isinstance(value, date):
        return value
    return _parse_date(value)


def whole_number(value: str | date) -> int:
    """Return a positive whole number; 10.0 from Excel is 10."""
    raw = text(value)
    match = _EXCEL_WHOLE.match(raw)
    digits = match.group(1) if match else raw
    if not digits.isdigit() or not digits.isascii():
        raise CellError(f"{raw!r} is not a positive whole number")
    number = int(digits)
    if number <= 0:
        raise CellError(f"{raw!r} is not a positive whole number")
    return number


_PROGRAMS = {header_key(label): code for code, label in Program.choices} | {
    header_key(code): code for code in Program.values
}


def program(value: str | date) -> str:
    code = _PROGRAMS.get(header_key(text(value)))
    if code is None:
        raise CellError(
            f"{text(value)!r} is not a program: use Open License, Open Value, Open Value Subscription, OL, OV or OVS"
        )
    return code


_KINDS = {header_key(label): code for code, label in OrderLine.Kind.choices}


def order_type(value: str | date) -> str:
    code = _KINDS.get(header_key(text(value)))
    if code is None:
        raise CellError(f"{text(value)!r} is not an order type: use New, Additional or Renewal")
    return code


@lru_cache(maxsize=65536)
def email(value: str) -> str:
    value = value.strip()
    try:
        validate_email(value)
    except ValidationError:
        raise CellError(f"{value!r} is not a valid email address") from None
    return value


def tenant_domain(value: str | date) -> str:
    domain = normalize_domain(text(value))
    if not DEFAULT_DOMAIN_RE.match(domain):
        raise CellError(
            f"{text(value)!r} is not a tenant domain: expected name.onmicrosoft.com, "
            "with 1 to 27 lowercase letters and digits"
        )
    return domain


def name_key(value: str) -> str:
    """Return a name as compared: without regard to case and surrounding spaces."""
    return value.strip().lower()
