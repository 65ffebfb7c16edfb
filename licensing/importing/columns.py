"""The two sheets' columns: which are required, what each is read with, and what each may hold."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.backends.base.operations import BaseDatabaseOperations

from licensing import cells
from licensing.cells import Column
from licensing.models import Agreement, Order, OrderLine, Product
from tenants.models import Customer, Partner

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
    "Agreement Number": cells.agreement_number,
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
# The database column each sheet column is written to: a value that does not fit it is rejected with
# its row, in the preview, never by the database at confirm.
COLUMN_FIELDS = {
    "License Number": Order._meta.get_field("license_number"),
    "Line": OrderLine._meta.get_field("line_number"),
    "Agreement Number": Agreement._meta.get_field("number"),
    "Authorization Number": Agreement._meta.get_field("authorization_number"),
    "Reseller": Partner._meta.get_field("name"),
    "Reseller MPN ID": Partner._meta.get_field("mpn_id"),
    "Reseller Email": Partner._meta.get_field("email"),
    "Customer": Customer._meta.get_field("name"),
    "Customer Email": Customer._meta.get_field("email"),
    "Customer Country": Customer._meta.get_field("country"),
    "Part Number": Product._meta.get_field("part_number"),
    "Product": Product._meta.get_field("description"),
    "Quantity": OrderLine._meta.get_field("quantity"),
    "Tenant Domain": Order._meta.get_field("suggested_tenant_domain"),
    "PO Number": Order._meta.get_field("po_number"),
    "Online Services Manager Email": Agreement._meta.get_field("osm_email"),
}
MAX_LENGTHS = {label: f.max_length for label, f in COLUMN_FIELDS.items() if f.max_length}
# The portable ranges (PostgreSQL's): SQLite would store more, and the same sheet must import on both.
MAX_VALUES = {
    label: BaseDatabaseOperations.integer_field_ranges[f.get_internal_type()][1]
    for label, f in COLUMN_FIELDS.items()
    if f.get_internal_type() in BaseDatabaseOperations.integer_field_ranges
}
