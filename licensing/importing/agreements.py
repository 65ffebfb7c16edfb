"""The agreements sheet: one row per Open agreement."""

from __future__ import annotations

from typing import Any

from licensing import cells
from licensing.importing.base import (
    NEW,
    UNCHANGED,
    UPDATED,
    Conflict,
    Rec,
    SheetImporter,
    distinct_records,
)
from licensing.importing.columns import AGREEMENTS_COLUMNS

# Optional columns whose blank keeps the agreement's value, as a blank Customer Country keeps the customer's.
OPTIONAL_KEPT = frozenset({"authorization_number", "osm_email"})


class AgreementsImporter(SheetImporter):
    """One row per agreement: creates or updates partner, customer and agreement."""

    kind = "agreements"
    columns = AGREEMENTS_COLUMNS
    # An order sheet has every column this one requires: its coverage dates would become agreement dates.
    other_sheet = (
        "an order sheet",
        "as an order sheet",
        ("License Number", "Line", "Part Number", "Quantity", "Order Type"),
    )

    def process_batch(self, parsed: list[tuple[int, dict[str, Any]]]) -> None:
        named = {
            "partner": {p["Reseller MPN ID"] for _, p in parsed},
            "customer": {cells.name_key(p["Customer"]) for _, p in parsed},
            "agreement": {p["Agreement Number"] for _, p in parsed},
        }
        # What earlier batches said first, then what the database holds of the rest.
        self.restore_records(named)
        self.load_partners(named["partner"])
        self.load_customers(named["customer"])
        self.load_agreements(named["agreement"])
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
            self.write_parents(distinct_records(partners), distinct_records(customers), distinct_records(agreements))
        self.spill_records()

    def _row(self, number: int, p: dict[str, Any]) -> tuple[str, tuple[Rec, Rec, Rec]]:
        customer_key = cells.name_key(p["Customer"])
        agreement_number = p["Agreement Number"]
        agreement = self.agreements.get(agreement_number)
        if agreement is not None:
            self.check_agreement_identity(number, agreement_number, agreement, p["Program"], customer_key)
        partner, partner_changed = self.partner_for(number, p)
        customer, changed = self.customer_for(number, p, partner)
        changed |= partner_changed
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
            if not value and name in OPTIONAL_KEPT:
                # A blank optional cell (or a sheet without the column) says nothing: what we hold stays.
                continue
            changed |= self.state(agreement, name, value, number, columns[name])
        if agreement.values.get("dates_from_orders"):
            # The agreements sheet's dates are the agreement's own: order dates no longer move them.
            agreement.values["dates_from_orders"] = False
            if agreement.id is not None:
                agreement.change("dates_from_orders")
                changed = True
        changed |= self.state_ref(agreement, "partner", partner, number, "Reseller MPN ID")
        return (UPDATED if changed else UNCHANGED), (partner, customer, agreement)
