"""Reading one cell of a sheet: headers, dates, whole numbers, programs, order types, emails, domains."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import NamedTuple

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from openpyxl.utils.cell import get_column_letter

from licensing.models import OrderLine, Program
from licensing.sheets import SHOWN_CHARS, unneutralise
from tenants.names import name_key as tenants_name_key
from tenants.validators import DEFAULT_DOMAIN_RE, normalize_domain


class CellError(ValueError):
    """A cell's value is not acceptable; the message says why."""


class RowError(NamedTuple):
    """A rejected cell; a row of None is the file as a whole."""

    row: int | None
    column: str
    message: str

    def __str__(self) -> str:
        if self.row is None:
            return self.message
        if self.column == "-":
            return f"row {self.row}: {self.message}"
        return f"row {self.row}, column {self.column}: {self.message}"


def shown(value: str) -> str:
    """Return a value as a message quotes it, cut short when long."""
    if len(value) > SHOWN_CHARS:
        return repr(value[:SHOWN_CHARS]) + f"… ({len(value)} characters)"
    return repr(value)


@dataclass(frozen=True)
class Column:
    label: str
    required: bool = True


def header_key(name: str) -> str:
    """Return a header name as compared: no case, no spaces, no underscores, no BOM."""
    return "".join(str(name).replace("\ufeff", "").replace("_", " ").split()).lower()


def header_has(header: list[str], label: str) -> bool:
    """Whether a header names this column (as map_header compares names)."""
    return header_key(label) in {header_key(name) for name in header}


def map_header(
    header: list[str], columns: tuple[Column, ...], *, row: int = 1
) -> tuple[dict[str, int], list[RowError]]:
    """Return each known column's index in `header` (on spreadsheet row `row`), and an error per missing or
    repeated column."""
    positions: dict[str, int] = {}
    wanted = {header_key(c.label): c.label for c in columns}
    first: dict[str, int] = {}
    errors = []
    for index, name in enumerate(header):
        key = header_key(name)
        if not key:
            continue
        if key in first:
            # Which of the two the file means is anyone's guess: neither is taken.
            errors.append(
                RowError(
                    row,
                    wanted.get(key, name.strip()[:SHOWN_CHARS]),
                    f"the header names this column twice, in columns {get_column_letter(first[key] + 1)} and "
                    f"{get_column_letter(index + 1)}; keep one",
                )
            )
            continue
        first[key] = index
        label = wanted.get(key)
        if label:
            positions[label] = index
    required = [c.label for c in columns if c.required]
    missing = [label for label in required if label not in positions]
    if len(missing) * 2 > len(required):
        # Most are missing: the row taken for the header is not one (a title above it, another file).
        named = f"only {len(required) - len(missing)}" if len(missing) < len(required) else "none"
        errors.append(
            RowError(
                row,
                "-",
                f"this row, the first that is not blank, is taken as the header, but it names {named} of the "
                f"{len(required)} columns this sheet needs (missing: {', '.join(missing)}). Is this the right file, "
                "with the header as its first row (no title above it) on its first visible worksheet?",
            )
        )
        return positions, errors
    errors += [RowError(row, label, "this required column is missing from the header") for label in missing]
    return positions, errors


def text(value: str | date | None) -> str:
    """Return a cell as text, trimmed, and as it was before an export neutralised it ("'-5" is "-5")."""
    if value is None:
        return ""
    if isinstance(value, date):
        return value.isoformat()
    return unneutralise(value.strip()).strip()


# A whole number written with a decimal part of zeros, as a program exporting numbers writes it (10.0,
# 10.00). Three zeros or more are not taken for that: "1.000" is one thousand in a sheet from Excel in
# most of Europe, one in the rest of the world.
_EXCEL_WHOLE = re.compile(r"^(\d+)\.0{1,2}$")
_THOUSANDS = re.compile(r"^\d{1,3}([.,]\d{3})+$")


def identifier(value: str | date | None) -> str:
    """Return an identifier as text; Excel's 60001234.0 is 60001234."""
    value = text(value)
    match = _EXCEL_WHOLE.match(value)
    return match.group(1) if match else value


def agreement_number(value: str | date | None) -> str:
    """Return an agreement number as held: in capitals ("v1000001" is V1000001), Excel's 1000001.0 is 1000001."""
    return identifier(value).upper()


# Outside these a date is a typo, and an agreement's end computed from it may not exist.
FIRST_DATE, LAST_DATE = date(1900, 1, 1), date(2999, 12, 31)


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
    raise CellError(f"{shown(value)} is not a date: use YYYY-MM-DD or M/D/YYYY")


def a_date(value: str | date) -> date:
    parsed = value if isinstance(value, date) else _parse_date(text(value))
    if not FIRST_DATE <= parsed <= LAST_DATE:
        raise CellError(f"{parsed.isoformat()} is not a plausible date: dates run from 1900 to 2999")
    return parsed


def whole_number(value: str | date) -> int:
    """Return a positive whole number; 10.0 from Excel is 10."""
    raw = text(value)
    match = _EXCEL_WHOLE.match(raw)
    digits = match.group(1) if match else raw
    if _THOUSANDS.match(raw):
        raise CellError(
            f"{shown(raw)} could be read two ways (a thousands separator or decimals): write the number "
            "without separators"
        )
    if not digits.isdigit() or not digits.isascii():
        raise CellError(f"{shown(raw)} is not a positive whole number")
    number = int(digits)
    if number <= 0:
        raise CellError(f"{shown(raw)} is not a positive whole number")
    return number


_PROGRAMS = {header_key(label): code for code, label in Program.choices} | {
    header_key(code): code for code in Program.values
}


def program(value: str | date) -> str:
    code = _PROGRAMS.get(header_key(text(value)))
    if code is None:
        raise CellError(
            f"{shown(text(value))} is not a program: "
            "use Open License, Open Value, Open Value Subscription, OL, OV or OVS"
        )
    return code


_KINDS = {header_key(label): code for code, label in OrderLine.Kind.choices}


def order_type(value: str | date) -> str:
    code = _KINDS.get(header_key(text(value)))
    if code is None:
        raise CellError(f"{shown(text(value))} is not an order type: use New, Additional or Renewal")
    return code


def email(value: str | date) -> str:
    return _email(text(value))


@lru_cache(maxsize=65536)
def _email(value: str) -> str:
    try:
        validate_email(value)
    except ValidationError:
        raise CellError(f"{shown(value)} is not a valid email address") from None
    return value


def tenant_domain(value: str | date) -> str:
    domain = normalize_domain(text(value))
    if not DEFAULT_DOMAIN_RE.match(domain):
        raise CellError(
            f"{shown(text(value))} is not a tenant domain: expected name.onmicrosoft.com, "
            "with 1 to 27 lowercase letters and digits"
        )
    return domain


def name_key(value: str) -> str:
    """Return a name as compared: without regard to case and surrounding spaces."""
    return tenants_name_key(value)
