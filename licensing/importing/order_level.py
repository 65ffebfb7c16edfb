"""An order's order-level values, as any line of the whole file states them, or as we hold the order.

Order-level columns repeat on each line of an order, and a line may leave them blank. Before any row is
checked, a first pass over the file notes, per license number, the first value each order-level column
is given and the row giving it. What it notes waits in the file state (licensing.filestate), written a
batch of rows at a time, so memory stays flat however many orders a file names. A blank cell then takes
the value another line of the file states, wherever that line is, or else the value of the order we hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date
from typing import Any

from licensing.cells import CellError
from licensing.filestate import FileState
from licensing.importing.columns import ORDER_LEVEL
from licensing.models import Order
from licensing.sheets import Cell, SheetError, UncalculatedFormula, excel_error, is_blank

# Order-level columns every line of an order may leave blank: the order then keeps what we hold.
OPTIONAL = ("PO Number", "Tenant Domain")
REQUIRED = tuple(column for column in ORDER_LEVEL if column not in OPTIONAL)
_KEY = "level:"


class OrderLevel:
    """Each order's order-level values, the first the file states for each column, with the row stating it."""

    def __init__(self, *, file_state: FileState, batch_size: int) -> None:
        self.file_state = file_state
        self.batch_size = batch_size

    def collect(
        self, rows: Iterable[tuple[int, list[Cell]]], plan: list[tuple], progress: Callable[[int], None] | None = None
    ) -> None:
        """Read the file once, noting each order's first stated value of each order-level column.

        `progress` hears the rows read so far after each batch.
        """
        readers = {
            label: (index, parser, longest)
            for label, index, _, parser, longest, _ in plan
            if index is not None and (label == "License Number" or label in ORDER_LEVEL)
        }
        columns = [column for column in ORDER_LEVEL if column in readers]
        found: dict[str, dict[str, tuple[Any, int]]] = {}
        read = read_before = 0
        try:
            for number, values in rows:
                if is_blank(values):
                    continue
                read += 1
                license_number = _value(values, *readers["License Number"])
                if license_number is not None:
                    stated = found.setdefault(license_number, {})
                    for column in columns:
                        if column not in stated:
                            value = _value(values, *readers[column])
                            if value is not None:
                                stated[column] = (value, number)
                if read >= self.batch_size:
                    self._save(found)
                    found, read, read_before = {}, 0, read_before + read
                    if progress:
                        progress(read_before)
        except SheetError:
            # The file cannot be read past this row: the second pass stops at the same place and says so,
            # after checking the rows before it.
            pass
        self._save(found)
        if progress and read:
            progress(read_before + read)

    def _save(self, found: dict[str, dict[str, tuple[Any, int]]]) -> None:
        """Add what a batch of rows states to what earlier rows stated; an earlier row's value stays first."""
        if not found:
            return
        held = self.file_state.load(_KEY + license_number for license_number in found)
        states = {}
        for license_number, stated in found.items():
            key = _KEY + license_number
            state = held.get(key, {})
            added = {
                column: [value.isoformat() if isinstance(value, date) else value, row]
                for column, (value, row) in stated.items()
                if column not in state
            }
            if added:
                states[key] = state | added
        self.file_state.save(states)

    def fill(
        self, parsed: list[tuple[int, dict[str, Any]]], error: Callable[[int, str, str], None]
    ) -> dict[int, dict[str, int]]:
        """Give each blank order-level cell of a batch its order's value; refuse a row still lacking one it needs.

        The value is the one a line of the file states, else, for a required column, the held order's (a
        blank optional cell leaves the held order as it is). Return, by row, the row that states each value
        a row was given from another line of the file.
        """
        blank = {p["License Number"] for _, p in parsed if any(p[column] is None for column in ORDER_LEVEL)}
        if not blank:
            return {}
        loaded = self.file_state.load(_KEY + license_number for license_number in blank)
        stated = {key.removeprefix(_KEY): state for key, state in loaded.items()}
        lacking = {n for n in blank if any(column not in stated.get(n, ()) for column in REQUIRED)}
        held = _held_orders(lacking) if lacking else {}
        sources: dict[int, dict[str, int]] = {}
        kept = []
        for number, p in parsed:
            license_number = p["License Number"]
            if license_number in blank:
                from_file, from_db = stated.get(license_number, {}), held.get(license_number)
                for column in ORDER_LEVEL:
                    if p[column] is not None:
                        continue
                    if column in from_file:
                        value, row = from_file[column]
                        p[column] = date.fromisoformat(value) if column == "Order Date" else value
                        sources.setdefault(number, {})[column] = row
                    elif from_db is not None and column in REQUIRED:
                        p[column] = _held_value(from_db, column, p)
                missing = [column for column in REQUIRED if p[column] is None]
                for column in missing:
                    error(number, column, "a value is required")
                if missing:
                    continue
            kept.append((number, p))
        parsed[:] = kept
        return sources


def _value(values: list[Cell], index: int, parser: Callable[[Any], Any], longest: int | None) -> Any:
    """Return a cell's value, or None when it is blank or not a value its column takes (the check says why)."""
    raw = values[index] if index < len(values) else ""
    if raw is None or (isinstance(raw, str) and not raw.strip()) or excel_error(raw) is not None:
        return None
    if isinstance(raw, UncalculatedFormula):
        return None
    try:
        value = parser(raw)
    except CellError:
        return None
    if longest is not None and isinstance(value, str) and len(value) > longest:
        return None
    return value


def _held_orders(license_numbers: set[str]) -> dict[str, dict[str, Any]]:
    """Return the required order-level values of the orders we hold, by license number, as a sheet states them."""
    held = {}
    for o in Order.objects.filter(license_number__in=license_numbers).values(
        "license_number",
        "ordered_on",
        "agreement__number",
        "agreement__program",
        "agreement__customer__name",
        "agreement__partner__name",
        "agreement__partner__mpn_id",
    ):
        held[o["license_number"]] = {
            "Order Date": o["ordered_on"],
            "Program": o["agreement__program"],
            "Agreement Number": o["agreement__number"],
            "Reseller": o["agreement__partner__name"],
            "Reseller MPN ID": o["agreement__partner__mpn_id"],
            "Customer": o["agreement__customer__name"],
        }
    return held


def _held_value(order: dict[str, Any], column: str, p: dict[str, Any]) -> Any:
    if column == "Reseller" and p["Reseller MPN ID"] != order["Reseller MPN ID"]:
        # The held order's partner has another MPN ID: its name is no name for this row's partner.
        return None
    return order[column]
