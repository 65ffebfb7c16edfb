"""django-import-export resources: the order sheet and the agreements sheet, in and out.

Imports hand the whole dataset to the set-based services (the same code the commands run), and
turn the report into the library's result for the admin's preview. Exports write the sheets' own
columns, so that an exported sheet imports back unchanged, with formula-like cells neutralised.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import tablib
from django.core.exceptions import ValidationError
from import_export import fields, resources
from import_export.results import Result, RowResult

from licensing.importing import ImportReport
from licensing.models import Agreement, ImportJob, Order, OrderLine
from licensing.services import sheet_import
from licensing.sheets import Sheet, neutralise

# A preview shows this much of a cell: the page never echoes a long cell back.
PREVIEW_CELL_CHARS = 200


class SafeExportResource(resources.ModelResource):
    """Neutralise every exported cell that a spreadsheet would run as a formula."""

    def export_field(self, field, instance, **kwargs):
        return neutralise(super().export_field(field, instance, **kwargs))

    def get_export_headers(self, selected_fields=None):
        return [neutralise(h) for h in super().get_export_headers(selected_fields)]


class SheetImportResource(SafeExportResource):
    """Import through the set-based services: the whole file applies, or nothing does."""

    kind = ""

    def import_data(self, dataset: tablib.Dataset, dry_run: bool = False, **kwargs) -> Result:
        numbers = getattr(dataset, "row_numbers", None) or range(2, 2 + len(dataset))
        headers = [str(h or "") for h in dataset.headers or []]
        stop = getattr(dataset, "reading_stop", None)

        def rows():
            yield from zip(numbers, (list(row) for row in dataset), strict=True)
            if stop is not None:
                raise stop  # where the file could not be read further, as when the command reads it

        sheet = Sheet(
            header=headers,
            rows=rows(),
            file_name=kwargs.get("file_name") or "",
            again=rows,
            header_row=getattr(dataset, "header_row", 1),
        )
        report = sheet_import(
            kind=self.kind, sheet=sheet, acting_user=kwargs.get("user"), dry_run=dry_run, keep_row_outcomes=True
        )
        return report_result(report, dataset, headers, numbers)


def _preview(value: Any) -> Any:
    """Return a cell as a preview shows it, cut short when long."""
    if isinstance(value, str) and len(value) > PREVIEW_CELL_CHARS:
        return value[:PREVIEW_CELL_CHARS] + f"… ({len(value)} characters)"
    return value


def report_result(report: ImportReport, dataset: tablib.Dataset, headers: list[str], numbers: Sequence[int]) -> Result:
    """Return the library's result for a report: one preview row per sheet row, errors by row and column."""
    result = Result()
    result.report = report
    result.diff_headers = [_preview(h) for h in headers]
    result.total_rows = report.rows_total
    index_of = {number: index for index, number in enumerate(numbers)}
    errors_by_row: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for error in report.errors:
        errors_by_row[error.row or 0][error.column].append(error.message)
    for row_number, by_column in sorted(errors_by_row.items()):
        index = index_of.get(row_number)
        values = dataset[index] if index is not None else headers if row_number == 1 else ()
        result.append_invalid_row(
            row_number,
            dict(zip(result.diff_headers, map(_preview, values), strict=False)),
            ValidationError(dict(by_column)),
        )
        result.totals[RowResult.IMPORT_TYPE_INVALID] += 1
    for row_number, outcome in (report.row_outcomes or {}).items():
        row_result = RowResult()
        row_result.import_type = outcome
        row_result.number = row_number
        row_result.diff = [_preview(v) for v in dataset[index_of[row_number]]]
        result.append_row_result(row_result)
        result.increment_row_result_total(row_result)
    return result


def _program_label(code: str) -> str:
    return Agreement(program=code).get_program_display()


class OrderSheetResource(SheetImportResource):
    """The order sheet: one row per order line."""

    kind = ImportJob.Kind.ORDER_SHEET

    license_number = fields.Field("order__license_number", "License Number")
    line = fields.Field("line_number", "Line")
    order_date = fields.Field("order__ordered_on", "Order Date")
    program = fields.Field(column_name="Program")
    agreement_number = fields.Field("order__agreement__number", "Agreement Number")
    authorization_number = fields.Field("order__agreement__authorization_number", "Authorization Number")
    reseller = fields.Field("order__agreement__partner__name", "Reseller")
    reseller_mpn_id = fields.Field("order__agreement__partner__mpn_id", "Reseller MPN ID")
    customer = fields.Field("order__agreement__customer__name", "Customer")
    customer_email = fields.Field("order__agreement__customer__email", "Customer Email")
    part_number = fields.Field("product__part_number", "Part Number")
    product = fields.Field("product__description", "Product")
    quantity = fields.Field("quantity", "Quantity")
    order_type = fields.Field(column_name="Order Type")
    start_date = fields.Field("starts_on", "Start Date")
    end_date = fields.Field("ends_on", "End Date")
    tenant_domain = fields.Field("order__suggested_tenant_domain", "Tenant Domain")
    po_number = fields.Field("order__po_number", "PO Number")
    reseller_email = fields.Field("order__agreement__partner__email", "Reseller Email")

    class Meta:
        model = OrderLine
        name = "Order sheet (one row per order line)"
        fields = (
            "license_number",
            "line",
            "order_date",
            "program",
            "agreement_number",
            "authorization_number",
            "reseller",
            "reseller_mpn_id",
            "customer",
            "customer_email",
            "part_number",
            "product",
            "quantity",
            "order_type",
            "start_date",
            "end_date",
            "tenant_domain",
            "po_number",
            "reseller_email",
        )
        export_order = fields
        chunk_size = 2000

    def filter_export(self, queryset, **kwargs):
        if queryset.model is Order:
            # From the orders page: the lines of the orders shown.
            queryset = OrderLine.objects.filter(order__in=queryset.values("pk")).order_by("order_id", "line_number")
        return queryset.select_related("order__agreement__customer", "order__agreement__partner", "product")

    def dehydrate_program(self, line: OrderLine) -> str:
        return _program_label(line.order.agreement.program)

    def dehydrate_order_type(self, line: OrderLine) -> str:
        return line.get_kind_display()


class AgreementSheetResource(SheetImportResource):
    """The agreements sheet: one row per agreement."""

    kind = ImportJob.Kind.AGREEMENTS

    program = fields.Field(column_name="Program")
    agreement_number = fields.Field("number", "Agreement Number")
    authorization_number = fields.Field("authorization_number", "Authorization Number")
    customer = fields.Field("customer__name", "Customer")
    customer_email = fields.Field("customer__email", "Customer Email")
    customer_country = fields.Field("customer__country", "Customer Country")
    reseller = fields.Field("partner__name", "Reseller")
    reseller_mpn_id = fields.Field("partner__mpn_id", "Reseller MPN ID")
    reseller_email = fields.Field("partner__email", "Reseller Email")
    osm_email = fields.Field("osm_email", "Online Services Manager Email")
    start_date = fields.Field("starts_on", "Start Date")
    end_date = fields.Field("ends_on", "End Date")

    class Meta:
        model = Agreement
        name = "Agreements sheet (one row per agreement)"
        fields = (
            "program",
            "agreement_number",
            "authorization_number",
            "customer",
            "customer_email",
            "customer_country",
            "reseller",
            "reseller_mpn_id",
            "reseller_email",
            "osm_email",
            "start_date",
            "end_date",
        )
        export_order = fields
        chunk_size = 2000

    def filter_export(self, queryset, **kwargs):
        return queryset.select_related("customer", "partner")

    def dehydrate_program(self, agreement: Agreement) -> str:
        return agreement.get_program_display()


class OrderResource(SafeExportResource):
    """Orders, one row each, for export."""

    license_number = fields.Field("license_number", "License Number")
    order_date = fields.Field("ordered_on", "Order Date")
    program = fields.Field(column_name="Program")
    agreement_number = fields.Field("agreement__number", "Agreement Number")
    customer = fields.Field("agreement__customer__name", "Customer")
    reseller = fields.Field("agreement__partner__name", "Reseller")
    reseller_mpn_id = fields.Field("agreement__partner__mpn_id", "Reseller MPN ID")
    po_number = fields.Field("po_number", "PO Number")
    tenant_domain = fields.Field("suggested_tenant_domain", "Tenant Domain")

    class Meta:
        model = Order
        name = "Orders (one row per order)"
        fields = (
            "license_number",
            "order_date",
            "program",
            "agreement_number",
            "customer",
            "reseller",
            "reseller_mpn_id",
            "po_number",
            "tenant_domain",
        )
        export_order = fields
        chunk_size = 2000

    def filter_export(self, queryset, **kwargs):
        return queryset.select_related("agreement__customer", "agreement__partner")

    def dehydrate_program(self, order: Order) -> str:
        return order.agreement.get_program_display()
