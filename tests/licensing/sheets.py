"""Build order sheets and agreements sheets as staff send them."""

from __future__ import annotations

import csv
import io

import openpyxl

ORDER_HEADER = [
    "License Number", "Line", "Order Date", "Program", "Agreement Number", "Authorization Number", "Reseller",
    "Reseller MPN ID", "Customer", "Customer Email", "Part Number", "Product", "Quantity", "Order Type",
    "Start Date", "End Date", "Tenant Domain", "PO Number", "Reseller Email",
]  # fmt: skip
AGREEMENT_HEADER = [
    "Program", "Agreement Number", "Authorization Number", "Customer", "Customer Email", "Customer Country",
    "Reseller", "Reseller MPN ID", "Reseller Email", "Online Services Manager Email", "Start Date", "End Date",
]  # fmt: skip


def order_row(**overrides) -> dict:
    row = {
        "License Number": "60000001",
        "Line": "1",
        "Order Date": "2026-11-01",
        "Program": "Open Value",
        "Agreement Number": "V1000001",
        "Authorization Number": "",
        "Reseller": "Contoso Reseller Ltd",
        "Reseller MPN ID": "4412345",
        "Customer": "Société Générale Café",
        "Customer Email": "it@societe.example",
        "Part Number": "Q5Y-00001",
        "Product": "O365 E3, ShrdSvr\nAnnual",
        "Quantity": "10",
        "Order Type": "New",
        "Start Date": "2026-11-01",
        "End Date": "2027-10-31",
        "Tenant Domain": "",
        "PO Number": "PO-1",
        "Reseller Email": "orders@contoso.example",
    }
    row.update(overrides)
    return row


def agreement_row(**overrides) -> dict:
    row = {
        "Program": "OV",
        "Agreement Number": "V2000001",
        "Authorization Number": "",
        "Customer": "Northwind Traders",
        "Customer Email": "it@northwind.example",
        "Customer Country": "US",
        "Reseller": "Contoso Reseller Ltd",
        "Reseller MPN ID": "4412345",
        "Reseller Email": "orders@contoso.example",
        "Online Services Manager Email": "admin@northwind.example",
        "Start Date": "2026-01-01",
        "End Date": "2028-12-31",
    }
    row.update(overrides)
    return row


def csv_bytes(rows: list[dict], *, header=None, encoding="utf-8", delimiter=",", extra_lines: str = "") -> bytes:
    header = header or list(rows[0].keys())
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(_canonical(h, row), "") for h in header])
    return (out.getvalue() + extra_lines).encode(encoding)


def _canonical(name: str, row: dict) -> str:
    wanted = "".join(name.split()).lower()
    for key in row:
        if "".join(key.split()).lower() == wanted:
            return key
    return name


def xlsx_bytes(rows: list[list], header: list[str]) -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()
