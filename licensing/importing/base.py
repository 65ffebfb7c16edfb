"""What both sheet importers share: row records, the batch loop, lookups and bulk writes with history."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from typing import Any

from django.db import DatabaseError, reset_queries
from django.db.models.functions import Upper
from django.utils import timezone
from simple_history.utils import bulk_update_with_history

from licensing import cells
from licensing.bulk import insert_with_history
from licensing.cells import CellError, Column, RowError
from licensing.filestate import FileState
from licensing.importing.columns import MAX_LENGTHS, MAX_VALUES, PARSERS
from licensing.importing.report import ImportReport
from licensing.models import Agreement, Program
from licensing.sheets import Sheet, UncalculatedFormula, excel_error
from tenants.models import Customer, Partner

NEW, UPDATED, UNCHANGED = "new", "update", "skip"
# Records (partners, customers, agreements, products) held in memory from one batch to the next. A
# sheet names a few thousand at most; one that names more has them wait in the file state instead.
RECORDS_HELD_MAX = 10_000


class Rec:
    """A record met in the file: its values as the file left them, where they were first stated."""

    __slots__ = ("changes", "id", "new", "seen", "values")

    def __init__(self, id: int | None, values: dict[str, Any], new: bool = False) -> None:
        self.id = id
        self.values = values
        self.new = new
        self.seen: dict[str, int] = {}
        # The names of stored values this file changes. A tuple, empty for most records: a file can name
        # hundreds of thousands of them, and an empty set costs 216 bytes each.
        self.changes: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def change(self, name: str) -> None:
        """Note that the file changes this stored value."""
        if name not in self.changes:
            self.changes = (*self.changes, name)


class Conflict(Exception):
    pass


# Email addresses are compared without regard to case: IT@x.example and it@x.example reach the same mailbox.
EMAIL_FIELDS = frozenset({"email", "osm_email"})


def _same(name: str, value: Any, current: Any) -> bool:
    """Whether a value the file states is the one already held (or stated by an earlier row)."""
    if name in EMAIL_FIELDS and isinstance(value, str) and isinstance(current, str):
        return value.casefold() == current.casefold()
    return value == current


def _display(value: Any) -> str:
    if isinstance(value, Rec):
        return str(value.values.get("label", ""))
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


class SheetImporter:
    """Shared machinery: batches, record caches, bulk writes with history."""

    kind = ""
    columns: tuple[Column, ...] = ()
    # Required columns a row may leave blank, its value coming from elsewhere.
    blank_ok: tuple[str, ...] = ()
    # Columns of the other sheet that this one never has: a file with two of them is the other sheet,
    # uploaded in the wrong place, and is refused before its look-alike columns are read.
    other_sheet: tuple[str, str, tuple[str, ...]] | None = None

    def __init__(
        self,
        *,
        acting_user=None,
        change_reason: str = "",
        dry_run: bool = False,
        batch_size: int = 2000,
        keep_row_outcomes: bool = False,
        progress: Callable[..., None] | None = None,
    ) -> None:
        self.acting_user = acting_user
        self.change_reason = change_reason[:100]
        self.dry_run = dry_run
        self.batch_size = batch_size
        self.progress = progress
        self.report = ImportReport(kind=self.kind, dry_run=dry_run, row_outcomes={} if keep_row_outcomes else None)
        self.now = timezone.now()
        # The records met so far, by kind and key. Beyond RECORDS_HELD_MAX, what the file said of them waits
        # in the file state (licensing.filestate) between batches: memory stays flat however many a file names.
        self.partners: dict[str, Rec] = {}
        self.customers: dict[str, Rec] = {}
        self.agreements: dict[str, Rec] = {}
        self.products: dict[str, Rec] = {}
        self.orders: dict[str, Rec] = {}
        self.file_state = FileState()
        self.records_spilled = False
        self.positions: dict[str, int] = {}
        # Per column, once per file rather than per cell: label, index, required, parser, longest, largest.
        self.plan: list[tuple[str, int | None, bool, Callable[[Any], Any], int | None, int | None]] = []

    # --- the run -------------------------------------------------------------------------------

    def run(self, sheet: Sheet) -> ImportReport:
        self.file_state.open()
        try:
            report = self._run(sheet)
        except Exception:
            # After a database error the transaction is rolled back, and the table with it.
            with contextlib.suppress(DatabaseError):
                self.file_state.close()
            raise
        self.file_state.close()
        return report

    def _run(self, sheet: Sheet) -> ImportReport:
        self.report.file_name = sheet.file_name
        self.positions, header_errors = cells.map_header(sheet.header, self.columns, row=sheet.header_row)
        if self.other_sheet:
            name, where, columns = self.other_sheet
            found = [label for label in columns if cells.header_has(sheet.header, label)]
            if len(found) >= 2:
                header_errors = [
                    RowError(
                        sheet.header_row,
                        "-",
                        f"this is {name} (its header has {', '.join(found)}): import it {where}; nothing was imported",
                    )
                ]
        if header_errors:
            for error in header_errors:
                self.report.add_error(error)
            self.report.finish()
            return self.report
        self.plan = [
            (
                c.label,
                self.positions.get(c.label),
                c.required and c.label not in self.blank_ok,
                PARSERS[c.label],
                MAX_LENGTHS.get(c.label),
                MAX_VALUES.get(c.label),
            )
            for c in self.columns
        ]
        for batch in self._batches(self.rows_to_check(sheet)):
            self.process_batch(batch)
            # With DEBUG on, Django keeps the SQL of the connection's last 9,000 queries, and a batch's
            # statements carry thousands of values each: kept, they would grow with the file.
            reset_queries()
            if self.progress:
                self.progress(self.report.rows_total)
        if self.report.rows_total == 0:
            self.report.add_error(RowError(sheet.header_row + 1, "-", "the sheet has a header but no rows"))
        self.report.finish()
        return self.report

    def rows_to_check(self, sheet: Sheet) -> Iterable[tuple[int, list]]:
        """Return the rows to check and import, in one pass over the file."""
        return sheet.rows

    def _batches(self, rows) -> Iterator[list[tuple[int, dict[str, Any]]]]:
        """Return the parsed rows in batches of batch_size rows read.

        Rows are parsed as they are read, so that a batch holds values that fit their columns, never
        the cells of the file.
        """
        batch: list[tuple[int, dict[str, Any]]] = []
        read = 0
        for number, values in rows:
            if all((not v.strip()) if isinstance(v, str) else v is None for v in values):
                continue
            self.report.rows_total += 1
            read += 1
            parsed = self.parse(number, values)
            if parsed is not None:
                batch.append((number, parsed))
            if read >= self.batch_size:
                yield batch
                batch, read = [], 0
        if read:
            yield batch

    @property
    def writing(self) -> bool:
        return not self.dry_run and self.report.ok

    def outcome(self, row: int, outcome: str) -> None:
        if outcome == NEW:
            self.report.new += 1
        elif outcome == UPDATED:
            self.report.updated += 1
        else:
            self.report.unchanged += 1
        if self.report.row_outcomes is not None:
            self.report.row_outcomes[row] = outcome

    def error(self, row: int, column: str, message: str) -> None:
        self.report.add_error(RowError(row, column, message))

    def parse(self, number: int, values: list) -> dict[str, Any] | None:
        """Return a row's cells by column, parsed, or None after reporting every bad cell."""
        parsed: dict[str, Any] = {}
        ok = True
        width = len(values)
        for label, index, required, parser, longest, largest in self.plan:
            raw = values[index] if index is not None and index < width else ""
            if isinstance(raw, UncalculatedFormula):
                self.error(number, label, UncalculatedFormula.MESSAGE)
                ok = False
                continue
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                if required:
                    self.error(number, label, "a value is required")
                    ok = False
                parsed[label] = None
                continue
            code = excel_error(raw)
            if code is not None:
                self.error(number, label, f"the cell holds the Excel error {code}")
                ok = False
                continue
            try:
                value = parser(raw)
            except CellError as exc:
                self.error(number, label, str(exc))
                ok = False
                continue
            if longest is not None and isinstance(value, str) and len(value) > longest:
                self.error(number, label, f"{len(value)} characters, longer than the {longest} it may have")
                ok = False
                continue
            if largest is not None and value > largest:
                self.error(number, label, f"{value} is more than {largest}, the largest this column can hold")
                ok = False
                continue
            parsed[label] = value
        if ok and parsed.get("Start Date") and parsed.get("End Date") and parsed["End Date"] <= parsed["Start Date"]:
            self.error(number, "End Date", "the end date must be after the start date")
            ok = False
        return parsed if ok else None

    def stated_at(self, row: int, column: str) -> int:
        """Return the row that states a cell's value: the row itself, unless its value came from another row."""
        return row

    def state(self, rec: Rec, name: str, value: Any, row: int, column: str) -> bool:
        """Set a record's value as the file states it; return True when that changes what we hold."""
        current = rec.values.get(name)
        first = rec.seen.get(name)
        if first is not None:
            if not _same(name, value, current):
                message = f"{_display(value)!r} differs from row {first}, which says {_display(current)!r}"
                self.error(row, column, message)
                raise Conflict
            return False
        rec.seen[name] = self.stated_at(row, column)
        if _same(name, value, current):
            return False
        rec.values[name] = value
        if rec.id is not None:
            rec.change(name)
            return True
        return False

    def state_ref(self, rec: Rec, name: str, target: Rec, row: int, column: str) -> bool:
        """State a reference to another record, which may not be written yet."""
        current = rec.values.get(name)
        first = rec.seen.get(name)
        if first is not None:
            if not same_ref(current, target):
                message = f"{_display(target)!r} differs from row {first}, which says {_display(current)!r}"
                self.error(row, column, message)
                raise Conflict
            return False
        rec.seen[name] = self.stated_at(row, column)
        if same_ref(current, target):
            return False
        rec.values[name] = target
        if rec.id is not None:
            rec.change(name)
            return True
        return False

    # --- what earlier batches said, kept in the file state ------------------------------------

    def _record_maps(self) -> dict[str, dict[str, Rec]]:
        # In the order their references point: agreements to customers and partners, customers to partners.
        return {
            "agreement": self.agreements,
            "customer": self.customers,
            "partner": self.partners,
            "product": self.products,
        }

    def restore_records(self, wanted: dict[str, Iterable[str]]) -> None:
        """Bring back what earlier batches said of these records, and of the records they refer to."""
        if not self.records_spilled:
            return  # every record met so far is still held
        maps = self._record_maps()
        pending = {kind: set(wanted.get(kind, ())) for kind in maps}
        restored: list[Rec] = []
        for kind, held in maps.items():
            keys = pending[kind] - held.keys()
            for stored_key, state in self.file_state.load(f"{kind}:{key}" for key in keys).items():
                rec = Rec(state["id"], state["values"], new=state["new"])
                rec.seen = state["seen"]
                rec.changes = tuple(state["changes"])
                held[stored_key.split(":", 1)[1]] = rec
                restored.append(rec)
                for value in rec.values.values():
                    if isinstance(value, dict) and "ref" in value:
                        pending[value["ref"][0]].add(value["ref"][1])
        for rec in restored:
            for name, value in rec.values.items():
                if isinstance(value, dict) and "ref" in value:
                    rec.values[name] = maps[value["ref"][0]][value["ref"][1]]
                elif isinstance(value, dict):
                    rec.values[name] = date.fromisoformat(value["date"])

    def spill_records(self, *, also_held: int = 0) -> None:
        """Once more records are held than RECORDS_HELD_MAX, keep what the file said of them in the file state.

        `also_held`: what else the importer holds for the file and keeps with them (tenant domains).
        """
        maps = self._record_maps()
        if sum(len(held) for held in maps.values()) + also_held <= RECORDS_HELD_MAX:
            return
        self.records_spilled = True
        refs = {id(rec): [kind, key] for kind, held in maps.items() for key, rec in held.items()}
        referred = {id(v) for held in maps.values() for rec in held.values() for v in rec.values.values()}
        states = {}
        for kind, held in maps.items():
            for key, rec in held.items():
                if not (rec.new or rec.seen or id(rec) in referred):
                    continue  # read from the database and not stated by the file: read again when met
                values = {}
                for name, value in rec.values.items():
                    if isinstance(value, Rec):
                        value = {"ref": refs[id(value)]}
                    elif isinstance(value, date):
                        value = {"date": value.isoformat()}
                    values[name] = value
                states[f"{kind}:{key}"] = {
                    "id": rec.id,
                    "new": rec.new,
                    "seen": rec.seen,
                    "changes": list(rec.changes),
                    "values": values,
                }
            held.clear()
        self.file_state.save(states)

    # --- lookups, one query per batch per model ------------------------------------------------

    def load_partners(self, mpn_ids: set[str]) -> None:
        missing = mpn_ids - self.partners.keys()
        for p in Partner.objects.filter(mpn_id__in=missing).values("id", "mpn_id", "name", "email"):
            self.partners[p["mpn_id"]] = Rec(
                p["id"],
                {"key": p["mpn_id"], "name": p["name"], "email": p["email"], "label": f"MPN {p['mpn_id']}"},
            )

    def load_customers(self, keys: set[str]) -> None:
        missing = keys - self.customers.keys()
        if not missing:
            return
        for c in Customer.objects.filter(name_key__in=missing).values(
            "id", "name_key", "name", "email", "country", "partner_id"
        ):
            self.customers[c["name_key"]] = Rec(
                c["id"], {"name": c["name"], "email": c["email"], "country": c["country"], "label": c["name"]}
            )

    def load_agreements(self, numbers: set[str]) -> None:
        missing = numbers - self.agreements.keys()
        # Numbers come in capitals (cells.agreement_number); one held as typed in another case is the same.
        held = Agreement.objects.annotate(number_upper=Upper("number")).filter(number_upper__in=missing)
        for a in held.values(
            "id",
            "number",
            "program",
            "authorization_number",
            "starts_on",
            "ends_on",
            "dates_from_orders",
            "osm_email",
            "partner_id",
            "customer_id",
            "customer__name",
            "customer__name_key",
        ):
            self.agreements[a["number"].upper()] = Rec(
                a["id"],
                {
                    "program": a["program"],
                    "customer_key": a["customer__name_key"],
                    "customer_name": a["customer__name"],
                    "customer": a["customer_id"],
                    "partner": a["partner_id"],
                    "authorization_number": a["authorization_number"],
                    "starts_on": a["starts_on"],
                    "ends_on": a["ends_on"],
                    "dates_from_orders": a["dates_from_orders"],
                    "osm_email": a["osm_email"],
                    "label": a["number"],
                },
            )

    def partner_for(self, row: int, p: dict[str, Any]) -> tuple[Rec, bool]:
        """Return the row's partner, and whether the row changes what we hold of it."""
        mpn = p["Reseller MPN ID"]
        rec = self.partners.get(mpn)
        if rec is None:
            rec = self.partners[mpn] = Rec(
                None,
                {"key": mpn, "name": p["Reseller"], "email": p["Reseller Email"] or "", "label": f"MPN {mpn}"},
                new=True,
            )
            rec.seen["name"] = self.stated_at(row, "Reseller")
        elif cells.name_key(rec["name"]) != cells.name_key(p["Reseller"]):
            where = f"as row {rec.seen['name']} says" if "name" in rec.seen else "as we hold it"
            message = f"MPN ID {mpn} belongs to {rec['name']!r} ({where}), not {p['Reseller']!r}"
            self.error(row, "Reseller MPN ID", message)
            raise Conflict
        else:
            rec.seen.setdefault("name", self.stated_at(row, "Reseller"))
        changed = False
        if p["Reseller Email"]:
            changed = self.state(rec, "email", p["Reseller Email"], row, "Reseller Email")
        return rec, changed

    def customer_for(self, row: int, p: dict[str, Any], partner: Rec) -> tuple[Rec, bool]:
        key = cells.name_key(p["Customer"])
        rec = self.customers.get(key)
        changed = False
        if rec is None:
            rec = self.customers[key] = Rec(
                None,
                {
                    "name": p["Customer"],
                    "email": p["Customer Email"],
                    "country": p.get("Customer Country") or "",
                    "partner": partner,
                    "label": p["Customer"],
                },
                new=True,
            )
            rec.seen["email"] = row
        else:
            changed |= self.state(rec, "email", p["Customer Email"], row, "Customer Email")
        if p.get("Customer Country"):
            changed |= self.state(rec, "country", p["Customer Country"], row, "Customer Country")
        return rec, changed

    def check_agreement_identity(self, row: int, number: str, rec: Rec, program: str, customer_key: str) -> None:
        # An agreement this file brings is named by the row that brought it; one we hold, as held.
        first = min(rec.seen.values(), default=None) if rec.new else None
        where = f" in row {first} of this file" if first is not None else ""
        if rec["customer_key"] != customer_key:
            owner = "is for" if first is not None else "belongs to"
            self.error(
                row,
                "Agreement Number",
                f"agreement {number} {owner} customer {rec['customer_name']!r}{where}, not to this row's customer",
            )
            raise Conflict
        if rec["program"] != program:
            held, given = Program(rec["program"]).label, Program(program).label
            stated = f"is {held}{where}" if first is not None else f"is held as {held}"
            self.error(row, "Program", f"agreement {number} {stated}, not {given}")
            raise Conflict

    # --- bulk writes ---------------------------------------------------------------------------

    def _create(self, model, recs: list[Rec], build: Callable[[Rec], Any]) -> None:
        if not recs:
            return
        objs = [build(r) for r in recs]
        insert_with_history(model, objs, user=self.acting_user, reason=self.change_reason, when=self.now)
        for rec, obj in zip(recs, objs, strict=True):
            rec.id = obj.pk

    def _update(self, model, recs: list[Rec], attnames: dict[str, str]) -> None:
        """Write the changed values of existing records; history rows carry the whole new state."""
        recs = [r for r in recs if r.changes]
        if not recs:
            return
        by_id = {r.id: r for r in recs}
        objs = list(model.objects.filter(pk__in=by_id))
        fields: set[str] = {"updated_at"}
        for obj in objs:
            rec = by_id[obj.pk]
            for name in rec.changes:
                value = rec.values[name]
                setattr(obj, attnames[name], value.id if isinstance(value, Rec) else value)
                fields.add(attnames[name].removesuffix("_id"))
            obj.updated_at = self.now
            rec.changes = ()
        bulk_update_with_history(
            objs,
            model,
            sorted(fields),
            default_user=self.acting_user,
            default_change_reason=self.change_reason,
            default_date=self.now,
        )

    def write_parents(self, partners: list[Rec], customers: list[Rec], agreements: list[Rec]) -> None:
        self._create(
            Partner,
            [r for r in partners if r.id is None],
            lambda r: Partner(name=r["name"].strip(), mpn_id=r["key"], email=r["email"]),
        )
        self._update(Partner, partners, {"email": "email"})
        self._create(
            Customer,
            [r for r in customers if r.id is None],
            lambda r: Customer(
                name=r["name"].strip(),
                name_key=cells.name_key(r["name"]),
                email=r["email"],
                country=r["country"],
                partner_id=r["partner"].id,
            ),
        )
        self._update(Customer, customers, {"email": "email", "country": "country"})
        self._create(
            Agreement,
            [r for r in agreements if r.id is None],
            lambda r: Agreement(
                program=r["program"],
                number=r["label"],
                authorization_number=r["authorization_number"],
                customer_id=r["customer"].id,
                partner_id=r["partner"].id,
                starts_on=r["starts_on"],
                ends_on=r["ends_on"],
                dates_from_orders=r.values.get("dates_from_orders", False),
                osm_email=r["osm_email"],
            ),
        )
        self._update(
            Agreement,
            agreements,
            {
                "partner": "partner_id",
                "authorization_number": "authorization_number",
                "starts_on": "starts_on",
                "ends_on": "ends_on",
                "dates_from_orders": "dates_from_orders",
                "osm_email": "osm_email",
            },
        )

    def process_batch(self, parsed: list[tuple[int, dict[str, Any]]]) -> None:
        """Check, and unless it is a dry run or a row was rejected, write one batch of parsed rows."""
        raise NotImplementedError


def same_ref(current: Any, target: Rec) -> bool:
    """Return whether a held reference (a record or a row id) points at `target`."""
    return current is target or (target.id is not None and current == target.id)


def distinct_records(recs) -> list[Rec]:
    return list({id(r): r for r in recs}.values())
