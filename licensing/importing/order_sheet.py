"""The order sheet: one row per order line, creating or updating everything it names."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from simple_history.utils import bulk_update_with_history

from licensing import cells
from licensing.bulk import insert_with_history
from licensing.importing.base import (
    NEW,
    UNCHANGED,
    UPDATED,
    Conflict,
    Rec,
    SheetImporter,
    distinct_records,
    same_ref,
)
from licensing.importing.columns import ORDER_LEVEL, ORDER_SHEET_COLUMNS
from licensing.importing.order_level import OrderLevel
from licensing.models import Agreement, Order, OrderLine, Product, Program
from licensing.sheets import Sheet
from tenants.models import Tenant


class OrderSheetImporter(SheetImporter):
    """One row per order line: creates or updates partner, customer, agreement, product, order and line."""

    kind = "order_sheet"
    columns = ORDER_SHEET_COLUMNS
    blank_ok = ORDER_LEVEL

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # License number -> {line: (content digest, first row)}: the same line twice must say the same
        # thing. Held for the batch's orders only; earlier batches' lines come back from the file state.
        self.lines_seen: dict[str, dict[int, tuple[int, int]]] = {}
        self.tenants: dict[str, tuple[str, str] | None] = {}
        # Tenant domains we do not hold yet -> (customer key, customer name, first row) naming them.
        self.tenant_claims: dict[str, tuple[str, str, int]] = {}
        self.order_level = OrderLevel(file_state=self.file_state, batch_size=self.batch_size)
        # The batch's rows -> {column: the row stating the value a blank cell was given}.
        self.stated_rows: dict[int, dict[str, int]] = {}

    def rows_to_check(self, sheet: Sheet) -> Iterable[tuple[int, list]]:
        """Read the file once for its orders' order-level values, then return its rows again to check."""
        first_pass = self.progress and (lambda read: self.progress(read, first_pass=True))
        self.order_level.collect(sheet.rows, self.plan, progress=first_pass)
        return sheet.rows_again()

    def stated_at(self, row: int, column: str) -> int:
        return self.stated_rows.get(row, {}).get(column, row)

    def process_batch(self, parsed: list[tuple[int, dict[str, Any]]]) -> None:
        self.stated_rows = self.order_level.fill(parsed, self.error)
        self._restore(parsed)
        self._require_authorization(parsed)

        self.load_partners({p["Reseller MPN ID"] for _, p in parsed})
        self.load_customers({cells.name_key(p["Customer"]) for _, p in parsed if p["Customer"]})
        self.load_agreements({p["Agreement Number"] for _, p in parsed if p["Agreement Number"]})
        self._load_products({p["Part Number"] for _, p in parsed})
        self._load_tenants({p["Tenant Domain"] for _, p in parsed if p["Tenant Domain"]})
        existing_lines = self._load_orders({p["License Number"] for _, p in parsed})

        touched: dict[str, list[Rec]] = {"partner": [], "customer": [], "agreement": [], "product": [], "order": []}
        new_lines: list[tuple[Rec, dict[str, Any], Rec]] = []
        changed_lines: list[tuple[int, int, dict[str, Any], Rec]] = []
        for number, p in parsed:
            try:
                outcome = self._row(number, p, touched, existing_lines, new_lines, changed_lines)
            except Conflict:
                continue
            if outcome:
                self.outcome(number, outcome)

        if self.writing:
            self.write_parents(
                distinct_records(touched["partner"]),
                distinct_records(touched["customer"]),
                distinct_records(touched["agreement"]),
            )
            products = distinct_records(touched["product"])
            self._create(
                Product,
                [r for r in products if r.id is None],
                lambda r: Product(part_number=r["key"], description=r["description"]),
            )
            self._update(Product, products, {"description": "description"})
            orders = distinct_records(touched["order"])
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

    def _restore(self, parsed: list[tuple[int, dict[str, Any]]]) -> None:
        """Bring back what earlier batches of the file said about the batch's orders, lines and records."""
        licenses = {p["License Number"] for _, p in parsed}
        loaded = self.file_state.load(f"order:{license_number}" for license_number in licenses)
        orders = {key.split(":", 1)[1]: state for key, state in loaded.items()}
        if self.records_spilled:
            domains = {p["Tenant Domain"] for _, p in parsed if p["Tenant Domain"]} - self.tenant_claims.keys()
            for key, claim in self.file_state.load(f"tenant:{domain}" for domain in domains).items():
                self.tenant_claims[key.split(":", 1)[1]] = tuple(claim)
        # An order met in an earlier batch may have been put in another agreement than the batch's rows name.
        stated = {state["order"]["agreement"] for state in orders.values() if state["order"]} - {None}
        self.restore_records(
            {
                "partner": {p["Reseller MPN ID"] for _, p in parsed},
                "customer": {cells.name_key(p["Customer"]) for _, p in parsed if p["Customer"]},
                "agreement": {p["Agreement Number"] for _, p in parsed if p["Agreement Number"]} | stated,
                "product": {p["Part Number"] for _, p in parsed},
            }
        )
        # An agreement the file named only by restating what the database holds was not kept: read it again.
        self.load_agreements(stated)
        for license_number, state in orders.items():
            self.lines_seen[license_number] = {int(line): (seen[0], seen[1]) for line, seen in state["lines"].items()}
            if state["order"] is not None:
                self.orders[license_number] = self._order_from_state(license_number, state["order"])

    def _spill(self) -> None:
        """Keep what this batch's rows said about their orders, lines and records in the file state, not in memory."""
        states: dict[str, Any] = {}
        for license_number in self.lines_seen.keys() | self.orders.keys():
            order = self.orders.get(license_number)
            stated = order is not None and (order.new or order.seen)
            states[f"order:{license_number}"] = {
                "order": self._order_state(order) if stated else None,
                "lines": self.lines_seen.get(license_number, {}),
            }
        self.spill_records(also_held=len(self.tenant_claims) + len(self.tenants))
        if self.records_spilled:
            # Tenant domains wait in the file state with the records, and what the database says of them is
            # read again by the batches that name them.
            states.update({f"tenant:{domain}": list(claim) for domain, claim in self.tenant_claims.items()})
            self.tenant_claims.clear()
            self.tenants.clear()
        self.file_state.save(states)
        self.orders.clear()
        self.lines_seen.clear()

    @staticmethod
    def _order_state(rec: Rec) -> dict[str, Any]:
        values = rec.values
        agreement = values["agreement"]
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
        rec = Rec(state["id"], values, new=state["new"])
        rec.seen = state["seen"]
        return rec

    def _require_authorization(self, parsed: list[tuple[int, dict[str, Any]]]) -> None:
        """Refuse an Open License row without its Authorization Number, which OL alone requires."""
        for number, p in list(parsed):
            if p["Program"] == Program.OL and not p["Authorization Number"]:
                self.error(number, "Authorization Number", "a value is required for an Open License (OL) order")
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
            t["default_domain"]: (t["customer__name_key"], t["customer__name"])
            for t in Tenant.objects.filter(default_domain__in=missing).values(
                "default_domain", "customer__name", "customer__name_key"
            )
        }
        for domain in missing:
            self.tenants[domain] = found.get(domain)

    def _load_orders(self, licenses: set[str]) -> dict[tuple[int, int], dict[str, Any]]:
        """Load the batch's orders we hold, and every line of them, keyed by (order id, line number)."""
        missing = licenses - self.orders.keys()
        for o in Order.objects.filter(license_number__in=missing).values(
            "id",
            "license_number",
            "agreement_id",
            "ordered_on",
            "po_number",
            "suggested_tenant_domain",
            "seats_requested_at",
        ):
            self.orders[o["license_number"]] = Rec(
                o["id"],
                {
                    "key": o["license_number"],
                    "agreement": o["agreement_id"],
                    "ordered_on": o["ordered_on"],
                    "po_number": o["po_number"],
                    "suggested_tenant_domain": o["suggested_tenant_domain"],
                    # Seats were requested: its agreement is fixed (Order.fixed_fields).
                    "has_bound": o["seats_requested_at"] is not None,
                    "label": o["license_number"],
                },
            )
        ids = {self.orders[n].id: self.orders[n] for n in licenses if n in self.orders and self.orders[n].id}
        lines = {}
        for line in OrderLine.objects.filter(order_id__in=ids).values(
            "id",
            "order_id",
            "line_number",
            "product_id",
            "quantity",
            "kind",
            "starts_on",
            "ends_on",
            "seats_allocated",
            "seats_requested_at",
        ):
            lines[(line["order_id"], line["line_number"])] = line
            if line["seats_requested_at"] is not None:
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

        partner, partner_changed = self.partner_for(number, p)
        changed |= partner_changed
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
                    "dates_from_orders": True,
                    "osm_email": "",
                    "label": agreement_number,
                },
                new=True,
            )
            agreement.seen["partner"] = number
        else:
            if agreement.values.get("dates_from_orders") and p["Order Date"] < agreement["starts_on"]:
                # Introduced by order sheets (this one or earlier ones): it starts on its earliest order date,
                # whichever file brought that date first.
                for name, value in (
                    ("starts_on", p["Order Date"]),
                    ("ends_on", Agreement.term_end_for(p["Program"], p["Order Date"])),
                ):
                    agreement.values[name] = value
                    if agreement.id is not None:
                        agreement.change(name)
                        changed = True
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
            order.seen.update(
                agreement=self.stated_at(number, "Agreement Number"), ordered_on=self.stated_at(number, "Order Date")
            )
            if p["PO Number"]:
                order.seen["po_number"] = self.stated_at(number, "PO Number")
            if domain:
                order.seen["suggested_tenant_domain"] = self.stated_at(number, "Tenant Domain")
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
            if existing["seats_requested_at"] is not None:
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
                    f"line {line_number} of license {license_number} already has seats requested or bound "
                    f"({existing['seats_allocated']} held); it cannot be changed by an import",
                )
                return None
            changed_lines.append((number, existing["id"], wanted, product))
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
            wanted = {line_id: (number, values, product) for number, line_id, values, product in changed_lines}
            # Locked, as a binding request locks a line: seats requested since the line was checked (at the
            # same moment) refuse the change here, rather than change a line whose seats are in use.
            objs = list(OrderLine.objects.select_for_update().filter(pk__in=wanted).order_by("pk"))
            requested = [obj for obj in objs if obj.seats_requested_at is not None]
            for obj in requested:
                self.error(
                    wanted[obj.pk][0],
                    "Line",
                    f"seats of line {obj.line_number} were requested while this file was being imported "
                    f"({obj.seats_allocated} held): it cannot be changed by an import. Nothing was written; "
                    "import the file again to see what still applies.",
                )
            if requested:
                return
            for obj in objs:
                _, values, product = wanted[obj.pk]
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
