"""Set-based import of order sheets and agreement sheets: checked per batch, written in bulk.

Rows are read as a stream and handled in batches: every lookup is one query per batch, every write
one bulk statement per model per batch, with its history written in bulk too. What earlier rows said
is remembered, so a dry run sees exactly what the real run would do without writing: partners,
customers, agreements and products in memory (a sheet names few of them, however long it is), orders
and their lines, which grow with the file, in a temporary table between batches (licensing.filestate).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from django.db import DatabaseError
from django.db.models.functions import Lower
from django.utils import timezone
from simple_history.utils import bulk_update_with_history

from licensing import cells
from licensing.bulk import insert_with_history
from licensing.cells import CellError, Column, RowError
from licensing.filestate import FileState
from licensing.models import Agreement, Order, OrderLine, Product, Program
from licensing.sheets import Sheet
from tenants.models import Customer, Partner, Tenant

NEW, UPDATED, UNCHANGED = "new", "update", "skip"

ORDER_SHEET_COLUMNS = (
    Column("License Number"),
    Column("Line"),
    Column("Order Date"),
    Column("Program"),
    Column("Agreement Number"),
    Column("Authorization Number", required=False),
    Column("Reseller"),
    Column("Reseller MPN ID"),
    Column("Customer"),
    Column("Customer Email"),
    Column("Part Number"),
    Column("Product"),
    Column("Quantity"),
    Column("Order Type"),
    Column("Start Date"),
    Column("End Date"),
    Column("Tenant Domain", required=False),
    Column("PO Number", required=False),
    Column("Reseller Email", required=False),
)
# Repeated on each line of an order; a blank on one line takes the order's value from another line.
ORDER_LEVEL = ("Order Date", "Program", "Agreement Number", "Reseller", "Customer", "PO Number", "Tenant Domain")

AGREEMENTS_COLUMNS = (
    Column("Program"),
    Column("Agreement Number"),
    Column("Authorization Number", required=False),
    Column("Customer"),
    Column("Customer Email"),
    Column("Customer Country", required=False),
    Column("Reseller"),
    Column("Reseller MPN ID"),
    Column("Reseller Email", required=False),
    Column("Online Services Manager Email", required=False),
    Column("Start Date"),
    Column("End Date"),
)

PARSERS: dict[str, Callable[[Any], Any]] = {
    "License Number": cells.identifier,
    "Line": cells.whole_number,
    "Order Date": cells.a_date,
    "Program": cells.program,
    "Agreement Number": cells.identifier,
    "Authorization Number": cells.identifier,
    "Reseller": cells.text,
    "Reseller MPN ID": cells.identifier,
    "Customer": cells.text,
    "Customer Email": cells.email,
    "Customer Country": cells.text,
    "Part Number": cells.identifier,
    "Product": cells.text,
    "Quantity": cells.whole_number,
    "Order Type": cells.order_type,
    "Start Date": cells.a_date,
    "End Date": cells.a_date,
    "Tenant Domain": cells.tenant_domain,
    "PO Number": cells.identifier,
    "Reseller Email": cells.email,
    "Online Services Manager Email": cells.email,
}
MAX_LENGTHS = {
    "License Number": 32,
    "Agreement Number": 32,
    "Authorization Number": 32,
    "Reseller": 255,
    "Reseller MPN ID": 32,
    "Customer": 255,
    "Customer Country": 100,
    "Part Number": 32,
    "Product": 255,
    "PO Number": 64,
}


@dataclass
class ImportReport:
    """What an import found: counts of rows by outcome, and every rejected cell."""

    kind: str
    file_name: str = ""
    dry_run: bool = False
    rows_total: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)
    # Row number -> outcome, kept only when asked (the admin's preview).
    row_outcomes: dict[int, str] | None = None
    job_id: int | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        return f"{self.rows_total} rows: {self.new} new, {self.updated} updated, {self.unchanged} unchanged"


class Rec:
    """A record met in the file: its values as the file left them, where they were first stated."""

    __slots__ = ("changes", "id", "new", "seen", "values")

    def __init__(self, id: int | None, values: dict[str, Any], new: bool = False) -> None:
        self.id = id
        self.values = values
        self.new = new
        self.seen: dict[str, int] = {}
        self.changes: set[str] = set()

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


class Conflict(Exception):
    pass


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

    def __init__(
        self,
        *,
        acting_user=None,
        change_reason: str = "",
        dry_run: bool = False,
        batch_size: int = 2000,
        keep_row_outcomes: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.acting_user = acting_user
        self.change_reason = change_reason[:100]
        self.dry_run = dry_run
        self.batch_size = batch_size
        self.progress = progress
        self.report = ImportReport(kind=self.kind, dry_run=dry_run, row_outcomes={} if keep_row_outcomes else None)
        self.now = timezone.now()
        self.partners: dict[str, Rec] = {}
        self.customers: dict[str, Rec] = {}
        self.agreements: dict[str, Rec] = {}
        self.products: dict[str, Rec] = {}
        self.orders: dict[str, Rec] = {}
        self.positions: dict[str, int] = {}

    # --- the run -------------------------------------------------------------------------------

    def run(self, sheet: Sheet) -> ImportReport:
        self.report.file_name = sheet.file_name
        self.positions, header_errors = cells.map_header(sheet.header, self.columns)
        if header_errors:
            self.report.errors.extend(header_errors)
            return self.report
        for batch in self._batches(sheet.rows):
            self.report.rows_total += len(batch)
            self.process_batch(batch)
            if self.progress:
                self.progress(self.report.rows_total)
        if self.report.rows_total == 0:
            self.report.errors.append(RowError(2, "-", "the sheet has a header but no rows"))
        self.report.errors.sort(key=lambda e: e.row)
        return self.report

    def _batches(self, rows) -> Iterator[list[tuple[int, list]]]:
        batch: list[tuple[int, list]] = []
        for number, values in rows:
            if all((not v.strip()) if isinstance(v, str) else v is None for v in values):
                continue
            batch.append((number, values))
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    @property
    def writing(self) -> bool:
        return not self.dry_run and not self.report.errors

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
        self.report.errors.append(RowError(row, column, message))

    def parse(self, number: int, values: list, blank_ok: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """Return a row's cells by column, parsed, or None after reporting every bad cell."""
        parsed: dict[str, Any] = {}
        ok = True
        for column in self.columns:
            index = self.positions.get(column.label)
            raw = values[index] if index is not None and index < len(values) else ""
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                if column.required and column.label not in blank_ok:
                    self.error(number, column.label, "a value is required")
                    ok = False
                parsed[column.label] = None
                continue
            try:
                value = PARSERS[column.label](raw)
            except CellError as exc:
                self.error(number, column.label, str(exc))
                ok = False
                continue
            limit = MAX_LENGTHS.get(column.label)
            if limit and isinstance(value, str) and len(value) > limit:
                self.error(number, column.label, f"longer than {limit} characters")
                ok = False
                continue
            parsed[column.label] = value
        if ok and parsed.get("Start Date") and parsed.get("End Date") and parsed["End Date"] <= parsed["Start Date"]:
            self.error(number, "End Date", "the end date must be after the start date")
            ok = False
        return parsed if ok else None

    def state(self, rec: Rec, name: str, value: Any, row: int, column: str) -> bool:
        """Set a record's value as the file states it; return True when that changes what we hold."""
        current = rec.values.get(name)
        first = rec.seen.get(name)
        if first is not None:
            if value != current:
                message = f"{_display(value)!r} differs from row {first}, which says {_display(current)!r}"
                self.error(row, column, message)
                raise Conflict
            return False
        rec.seen[name] = row
        if value == current:
            return False
        rec.values[name] = value
        if rec.id is not None:
            rec.changes.add(name)
            return True
        return False

    def state_ref(self, rec: Rec, name: str, target: Rec, row: int, column: str) -> bool:
        """State a reference to another record, which may not be written yet."""
        current = rec.values.get(name)
        first = rec.seen.get(name)
        if first is not None:
            if not same_ref(current, target):
                self.error(row, column, f"{_display(target)!r} differs from row {first}")
                raise Conflict
            return False
        rec.seen[name] = row
        if same_ref(current, target):
            return False
        rec.values[name] = target
        if rec.id is not None:
            rec.changes.add(name)
            return True
        return False

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
        for c in (
            Customer.objects.annotate(key=Lower("name"))
            .filter(key__in=missing)
            .values("id", "key", "name", "email", "country", "partner_id")
        ):
            self.customers[cells.name_key(c["name"])] = Rec(
                c["id"], {"name": c["name"], "email": c["email"], "country": c["country"], "label": c["name"]}
            )

    def load_agreements(self, numbers: set[str]) -> None:
        missing = numbers - self.agreements.keys()
        for a in Agreement.objects.filter(number__in=missing).values(
            "id",
            "number",
            "program",
            "authorization_number",
            "starts_on",
            "ends_on",
            "osm_email",
            "partner_id",
            "customer_id",
            "customer__name",
        ):
            self.agreements[a["number"]] = Rec(
                a["id"],
                {
                    "program": a["program"],
                    "customer_key": cells.name_key(a["customer__name"]),
                    "customer_name": a["customer__name"],
                    "customer": a["customer_id"],
                    "partner": a["partner_id"],
                    "authorization_number": a["authorization_number"],
                    "starts_on": a["starts_on"],
                    "ends_on": a["ends_on"],
                    "osm_email": a["osm_email"],
                    "label": a["number"],
                },
            )

    def partner_for(self, row: int, p: dict[str, Any]) -> Rec:
        mpn = p["Reseller MPN ID"]
        rec = self.partners.get(mpn)
        if rec is None:
            rec = self.partners[mpn] = Rec(
                None,
                {"key": mpn, "name": p["Reseller"], "email": p["Reseller Email"] or "", "label": f"MPN {mpn}"},
                new=True,
            )
            rec.seen["name"] = row
        elif cells.name_key(rec["name"]) != cells.name_key(p["Reseller"]):
            where = f"row {rec.seen['name']} says" if "name" in rec.seen else "we hold it as"
            message = f"MPN ID {mpn} belongs to {rec['name']!r} ({where}), not {p['Reseller']!r}"
            self.error(row, "Reseller MPN ID", message)
            raise Conflict
        else:
            rec.seen.setdefault("name", row)
        if p["Reseller Email"]:
            self.state(rec, "email", p["Reseller Email"], row, "Reseller Email")
        return rec

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
        if rec["customer_key"] != customer_key:
            self.error(
                row,
                "Agreement Number",
                f"agreement {number} belongs to customer {rec['customer_name']!r}, not to this row's customer",
            )
            raise Conflict
        if rec["program"] != program:
            held, given = Program(rec["program"]).label, Program(program).label
            self.error(row, "Program", f"agreement {number} is held as {held}, not {given}")
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
            rec.changes.clear()
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
                name=r["name"].strip(), email=r["email"], country=r["country"], partner_id=r["partner"].id
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
                "osm_email": "osm_email",
            },
        )

    def process_batch(self, batch: list[tuple[int, list]]) -> None:
        raise NotImplementedError


def same_ref(current: Any, target: Rec) -> bool:
    """Return whether a held reference (a record or a row id) points at `target`."""
    return current is target or (target.id is not None and current == target.id)


def _unique(recs) -> list[Rec]:
    return list({id(r): r for r in recs}.values())


class OrderSheetImporter(SheetImporter):
    """One row per order line: creates or updates partner, customer, agreement, product, order and line."""

    kind = "order_sheet"
    columns = ORDER_SHEET_COLUMNS

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # License number -> {line: (content digest, first row)}: the same line twice must say the same
        # thing. Held for the batch's orders only; earlier batches' lines come back from the file state.
        self.lines_seen: dict[str, dict[int, tuple[int, int]]] = {}
        self.tenants: dict[str, tuple[str, str] | None] = {}
        # Tenant domains we do not hold yet -> (customer key, customer name, first row) naming them.
        self.tenant_claims: dict[str, tuple[str, str, int]] = {}
        # Orders outnumber every other record of a sheet: between batches they wait in the database.
        self.file_state = FileState()

    def run(self, sheet: Sheet) -> ImportReport:
        self.file_state.open()
        try:
            report = super().run(sheet)
        except Exception:
            # After a database error the transaction is rolled back, and the table with it.
            with contextlib.suppress(DatabaseError):
                self.file_state.close()
            raise
        self.file_state.close()
        return report

    def process_batch(self, batch: list[tuple[int, list]]) -> None:
        parsed: list[tuple[int, dict[str, Any]]] = []
        for number, values in batch:
            p = self.parse(number, values, blank_ok=ORDER_LEVEL)
            if p is not None:
                parsed.append((number, p))
        self._restore({p["License Number"] for _, p in parsed})
        self._fill_order_level(parsed)

        self.load_partners({p["Reseller MPN ID"] for _, p in parsed})
        self.load_customers({cells.name_key(p["Customer"]) for _, p in parsed if p["Customer"]})
        self.load_agreements({p["Agreement Number"] for _, p in parsed if p["Agreement Number"]})
        self._load_products({p["Part Number"] for _, p in parsed})
        self._load_tenants({p["Tenant Domain"] for _, p in parsed if p["Tenant Domain"]})
        existing_lines = self._load_orders({p["License Number"] for _, p in parsed})

        touched: dict[str, list[Rec]] = {"partner": [], "customer": [], "agreement": [], "product": [], "order": []}
        new_lines: list[tuple[Rec, dict[str, Any], Rec]] = []
        changed_lines: list[tuple[int, dict[str, Any], Rec]] = []
        for number, p in parsed:
            try:
                outcome = self._row(number, p, touched, existing_lines, new_lines, changed_lines)
            except Conflict:
                continue
            if outcome:
                self.outcome(number, outcome)

        if self.writing:
            self.write_parents(_unique(touched["partner"]), _unique(touched["customer"]), _unique(touched["agreement"]))
            products = _unique(touched["product"])
            self._create(
                Product,
                [r for r in products if r.id is None],
                lambda r: Product(part_number=r["key"], description=r["description"]),
            )
            self._update(Product, products, {"description": "description"})
            orders = _unique(touched["order"])
            self._create(
                Order,
                [r for r in orders if r.id is None],
                lambda r: Order(
                    license_number=r["key"],
                    agreement_id=r["agreement"].id,
                    ordered_on=r["ordered_on"],
                    po_number=r["po_number"],
                    suggested_tenant_domain=r["suggested_tenant_domain"],
                ),
            )
            self._update(
                Order,
                orders,
                {
                    "agreement": "agreement_id",
                    "ordered_on": "ordered_on",
                    "po_number": "po_number",
                    "suggested_tenant_domain": "suggested_tenant_domain",
                },
            )
            self._write_lines(new_lines, changed_lines)
        self._spill()

    def _restore(self, licenses: set[str]) -> None:
        """Bring back what earlier batches of the file said about these orders and their lines."""
        for license_number, state in self.file_state.load(licenses).items():
            self.lines_seen[license_number] = {int(line): (seen[0], seen[1]) for line, seen in state["lines"].items()}
            if state["order"] is not None:
                self.orders[license_number] = self._order_from_state(license_number, state["order"])

    def _spill(self) -> None:
        """Keep what this batch's rows said about their orders and lines in the file state, not in memory."""
        states = {}
        for license_number in self.lines_seen.keys() | self.orders.keys():
            order = self.orders.get(license_number)
            stated = order is not None and (order.new or order.seen)
            states[license_number] = {
                "order": self._order_state(order) if stated else None,
                "lines": self.lines_seen.get(license_number, {}),
            }
        self.file_state.save(states)
        self.orders.clear()
        self.lines_seen.clear()

    @staticmethod
    def _order_state(rec: Rec) -> dict[str, Any]:
        values = rec.values
        agreement = values["agreement"]
        stated = {c: values["file_" + c] for c in ORDER_LEVEL if "file_" + c in values}
        if isinstance(stated.get("Order Date"), date):
            stated["Order Date"] = stated["Order Date"].isoformat()
        return {
            "id": rec.id,
            "new": rec.new,
            "seen": rec.seen,
            # An agreement met in the file is named by its number (it may not be written yet).
            "agreement": agreement["label"] if isinstance(agreement, Rec) else None,
            "agreement_id": None if isinstance(agreement, Rec) else agreement,
            "ordered_on": values["ordered_on"].isoformat(),
            "po_number": values["po_number"],
            "suggested_tenant_domain": values["suggested_tenant_domain"],
            "has_bound": values["has_bound"],
            "file": stated,
        }

    def _order_from_state(self, license_number: str, state: dict[str, Any]) -> Rec:
        # Agreements met in the file stay in memory for the whole run: the same record, by identity.
        agreement = self.agreements[state["agreement"]] if state["agreement"] is not None else state["agreement_id"]
        values = {
            "key": license_number,
            "agreement": agreement,
            "ordered_on": date.fromisoformat(state["ordered_on"]),
            "po_number": state["po_number"],
            "suggested_tenant_domain": state["suggested_tenant_domain"],
            "has_bound": state["has_bound"],
            "label": license_number,
        }
        for column, value in state["file"].items():
            values["file_" + column] = date.fromisoformat(value) if column == "Order Date" and value else value
        rec = Rec(state["id"], values, new=state["new"])
        rec.seen = state["seen"]
        return rec

    def _fill_order_level(self, parsed: list[tuple[int, dict[str, Any]]]) -> None:
        """Give a blank order-level cell the value another line of the same order states."""
        stated: dict[str, dict[str, Any]] = {}
        for _, p in parsed:
            values = stated.setdefault(p["License Number"], {})
            for column in ORDER_LEVEL:
                if p[column] is not None and column not in values:
                    values[column] = p[column]
        for number, p in list(parsed):
            values = stated[p["License Number"]]
            order = self.orders.get(p["License Number"])
            for column in ORDER_LEVEL:
                if p[column] is None:
                    p[column] = values.get(column)
                    if p[column] is None and order is not None:
                        p[column] = order.values.get("file_" + column)
            missing = [c for c in ORDER_LEVEL if p[c] is None and c not in ("PO Number", "Tenant Domain")]
            for column in missing:
                self.error(number, column, "a value is required")
            if missing:
                parsed.remove((number, p))

    def _load_products(self, parts: set[str]) -> None:
        missing = parts - self.products.keys()
        for pr in Product.objects.filter(part_number__in=missing).values("id", "part_number", "description"):
            self.products[pr["part_number"]] = Rec(
                pr["id"], {"key": pr["part_number"], "description": pr["description"], "label": pr["part_number"]}
            )

    def _load_tenants(self, domains: set[str]) -> None:
        missing = domains - self.tenants.keys()
        if not missing:
            return
        found = {
            t["default_domain"]: (cells.name_key(t["customer__name"]), t["customer__name"])
            for t in Tenant.objects.filter(default_domain__in=missing).values("default_domain", "customer__name")
        }
        for domain in missing:
            self.tenants[domain] = found.get(domain)

    def _load_orders(self, licenses: set[str]) -> dict[tuple[int, int], dict[str, Any]]:
        """Load the batch's orders we hold, and every line of them, keyed by (order id, line number)."""
        missing = licenses - self.orders.keys()
        for o in Order.objects.filter(license_number__in=missing).values(
            "id", "license_number", "agreement_id", "ordered_on", "po_number", "suggested_tenant_domain"
        ):
            self.orders[o["license_number"]] = Rec(
                o["id"],
                {
                    "key": o["license_number"],
                    "agreement": o["agreement_id"],
                    "ordered_on": o["ordered_on"],
                    "po_number": o["po_number"],
                    "suggested_tenant_domain": o["suggested_tenant_domain"],
                    "has_bound": False,
                    "label": o["license_number"],
                },
            )
        ids = {self.orders[n].id: self.orders[n] for n in licenses if n in self.orders and self.orders[n].id}
        lines = {}
        for line in OrderLine.objects.filter(order_id__in=ids).values(
            "id", "order_id", "line_number", "product_id", "quantity", "kind", "starts_on", "ends_on", "seats_allocated"
        ):
            lines[(line["order_id"], line["line_number"])] = line
            if line["seats_allocated"]:
                ids[line["order_id"]].values["has_bound"] = True
        return lines

    def _row(self, number, p, touched, existing_lines, new_lines, changed_lines) -> str | None:
        license_number, line_number = p["License Number"], p["Line"]
        content = hash(tuple(p.items()))
        lines = self.lines_seen.setdefault(license_number, {})
        seen = lines.get(line_number)
        if seen is not None:
            if seen[0] != content:
                self.error(
                    number,
                    "Line",
                    f"line {line_number} of license {license_number} is also on row {seen[1]} with different content",
                )
                return None
            return UNCHANGED
        lines[line_number] = (content, number)

        changed = False
        customer_key = cells.name_key(p["Customer"])
        domain = p["Tenant Domain"]
        if domain:
            owner = self.tenants.get(domain)
            if owner is not None and owner[0] != customer_key:
                self.error(
                    number, "Tenant Domain", f"tenant {domain} belongs to customer {owner[1]!r}, not {p['Customer']!r}"
                )
                raise Conflict
            claim = self.tenant_claims.setdefault(domain, (customer_key, p["Customer"], number))
            if claim[0] != customer_key:
                message = f"tenant {domain} is given for customer {claim[1]!r} on row {claim[2]}"
                self.error(number, "Tenant Domain", message)
                raise Conflict

        partner = self.partner_for(number, p)
        agreement_number = p["Agreement Number"]
        agreement = self.agreements.get(agreement_number)
        if agreement is not None:
            self.check_agreement_identity(number, agreement_number, agreement, p["Program"], customer_key)
        customer, customer_changed = self.customer_for(number, p, partner)
        changed |= customer_changed
        if agreement is None:
            starts_on = p["Order Date"]
            agreement = self.agreements[agreement_number] = Rec(
                None,
                {
                    "program": p["Program"],
                    "customer_key": customer_key,
                    "customer_name": p["Customer"],
                    "customer": customer,
                    "partner": partner,
                    "authorization_number": p["Authorization Number"] or "",
                    "starts_on": starts_on,
                    "ends_on": Agreement.term_end_for(p["Program"], starts_on),
                    "osm_email": "",
                    "label": agreement_number,
                },
                new=True,
            )
            agreement.seen["partner"] = number
        else:
            if agreement.new and p["Order Date"] < agreement["starts_on"]:
                # Introduced by this sheet: it starts on its earliest order date.
                for name, value in (
                    ("starts_on", p["Order Date"]),
                    ("ends_on", Agreement.term_end_for(p["Program"], p["Order Date"])),
                ):
                    agreement.values[name] = value
                    if agreement.id is not None:
                        agreement.changes.add(name)
            changed |= self.state_ref(agreement, "partner", partner, number, "Reseller MPN ID")
            if p["Authorization Number"]:
                changed |= self.state(
                    agreement, "authorization_number", p["Authorization Number"], number, "Authorization Number"
                )

        product = self.products.get(p["Part Number"])
        if product is None:
            product = self.products[p["Part Number"]] = Rec(
                None, {"key": p["Part Number"], "description": p["Product"], "label": p["Part Number"]}, new=True
            )
            product.seen["description"] = number
        else:
            changed |= self.state(product, "description", p["Product"], number, "Product")

        order = self.orders.get(license_number)
        if order is None:
            order = self.orders[license_number] = Rec(
                None,
                {
                    "key": license_number,
                    "agreement": agreement,
                    "ordered_on": p["Order Date"],
                    "po_number": p["PO Number"] or "",
                    "suggested_tenant_domain": domain or "",
                    "has_bound": False,
                    "label": license_number,
                },
                new=True,
            )
            order.seen.update(agreement=number, ordered_on=number)
            if p["PO Number"]:
                order.seen["po_number"] = number
            if domain:
                order.seen["suggested_tenant_domain"] = number
        else:
            if order["has_bound"] and "agreement" not in order.seen and not same_ref(order["agreement"], agreement):
                self.error(
                    number,
                    "Agreement Number",
                    f"order {license_number} has seats bound: it cannot move to agreement {agreement_number}",
                )
                raise Conflict
            changed |= self.state_ref(order, "agreement", agreement, number, "Agreement Number")
            changed |= self.state(order, "ordered_on", p["Order Date"], number, "Order Date")
            if p["PO Number"]:
                changed |= self.state(order, "po_number", p["PO Number"], number, "PO Number")
            if domain:
                changed |= self.state(order, "suggested_tenant_domain", domain, number, "Tenant Domain")
        for column in ORDER_LEVEL:
            order.values.setdefault("file_" + column, p[column])

        touched["partner"].append(partner)
        touched["customer"].append(customer)
        touched["agreement"].append(agreement)
        touched["product"].append(product)
        touched["order"].append(order)

        existing = existing_lines.get((order.id, line_number)) if order.id is not None else None
        if existing is None:
            new_lines.append((order, p, product))
            return NEW
        wanted = {
            "product_id": product.id,
            "quantity": p["Quantity"],
            "kind": p["Order Type"],
            "starts_on": p["Start Date"],
            "ends_on": p["End Date"],
        }
        differing = [name for name, value in wanted.items() if existing[name] != value]
        if differing:
            if existing["seats_allocated"]:
                column = {
                    "product_id": "Part Number",
                    "quantity": "Quantity",
                    "kind": "Order Type",
                    "starts_on": "Start Date",
                    "ends_on": "End Date",
                }[differing[0]]
                self.error(
                    number,
                    column,
                    f"line {line_number} of license {license_number} already has {existing['seats_allocated']} "
                    "seat(s) bound; it cannot be changed by an import",
                )
                return None
            changed_lines.append((existing["id"], wanted, product))
            return UPDATED
        return UPDATED if changed else UNCHANGED

    def _write_lines(self, new_lines, changed_lines) -> None:
        if new_lines:
            objs = [
                OrderLine(
                    order_id=order.id,
                    line_number=p["Line"],
                    product_id=product.id,
                    quantity=p["Quantity"],
                    kind=p["Order Type"],
                    starts_on=p["Start Date"],
                    ends_on=p["End Date"],
                )
                for order, p, product in new_lines
            ]
            insert_with_history(OrderLine, objs, user=self.acting_user, reason=self.change_reason, when=self.now)
        if changed_lines:
            wanted = {line_id: (values, product) for line_id, values, product in changed_lines}
            objs = list(OrderLine.objects.filter(pk__in=wanted))
            for obj in objs:
                values, product = wanted[obj.pk]
                values["product_id"] = product.id
                for name, value in values.items():
                    setattr(obj, name, value)
                obj.updated_at = self.now
            bulk_update_with_history(
                objs,
                OrderLine,
                ["product", "quantity", "kind", "starts_on", "ends_on", "updated_at"],
                default_user=self.acting_user,
                default_change_reason=self.change_reason,
                default_date=self.now,
            )


class AgreementsImporter(SheetImporter):
    """One row per agreement: creates or updates partner, customer and agreement."""

    kind = "agreements"
    columns = AGREEMENTS_COLUMNS

    def process_batch(self, batch: list[tuple[int, list]]) -> None:
        parsed = [(n, p) for n, v in batch if (p := self.parse(n, v)) is not None]
        self.load_partners({p["Reseller MPN ID"] for _, p in parsed})
        self.load_customers({cells.name_key(p["Customer"]) for _, p in parsed})
        self.load_agreements({p["Agreement Number"] for _, p in parsed})
        partners, customers, agreements = [], [], []
        for number, p in parsed:
            try:
                outcome, recs = self._row(number, p)
            except Conflict:
                continue
            self.outcome(number, outcome)
            partners.append(recs[0])
            customers.append(recs[1])
            agreements.append(recs[2])
        if self.writing:
            self.write_parents(_unique(partners), _unique(customers), _unique(agreements))

    def _row(self, number: int, p: dict[str, Any]) -> tuple[str, tuple[Rec, Rec, Rec]]:
        customer_key = cells.name_key(p["Customer"])
        agreement_number = p["Agreement Number"]
        agreement = self.agreements.get(agreement_number)
        if agreement is not None:
            self.check_agreement_identity(number, agreement_number, agreement, p["Program"], customer_key)
        partner = self.partner_for(number, p)
        customer, changed = self.customer_for(number, p, partner)
        values = {
            "authorization_number": p["Authorization Number"] or "",
            "starts_on": p["Start Date"],
            "ends_on": p["End Date"],
            "osm_email": p["Online Services Manager Email"] or "",
        }
        if agreement is None:
            agreement = self.agreements[agreement_number] = Rec(
                None,
                {
                    "program": p["Program"],
                    "customer_key": customer_key,
                    "customer_name": p["Customer"],
                    "customer": customer,
                    "partner": partner,
                    "label": agreement_number,
                    **values,
                },
                new=True,
            )
            agreement.seen.update(dict.fromkeys([*values, "partner"], number))
            return NEW, (partner, customer, agreement)
        columns = {
            "authorization_number": "Authorization Number",
            "starts_on": "Start Date",
            "ends_on": "End Date",
            "osm_email": "Online Services Manager Email",
        }
        for name, value in values.items():
            changed |= self.state(agreement, name, value, number, columns[name])
        changed |= self.state_ref(agreement, "partner", partner, number, "Reseller MPN ID")
        return (UPDATED if changed else UNCHANGED), (partner, customer, agreement)
