"""File formats for django-import-export: one sniffing reader for imports, neutralising writers for exports."""

from __future__ import annotations

import io

import tablib
from import_export.formats import base_formats

from licensing.sheets import SheetError, neutralise, open_sheet


class SheetFormat(base_formats.Format):
    """CSV (UTF-8 or Windows-1252, comma or semicolon) or XLSX, told apart by the file's content."""

    def __init__(self, encoding: str | None = None) -> None:
        # The encoding is found in the file itself; the library's choice is ignored.
        self.encoding = None

    def get_title(self) -> str:
        return "CSV or Excel (.xlsx)"

    def create_dataset(self, in_stream: bytes) -> tablib.Dataset:
        sheet = open_sheet(io.BytesIO(in_stream))
        dataset = tablib.Dataset(headers=sheet.header)
        width = len(sheet.header)
        first = None
        blank_run: list[list] = []
        for number, cells in sheet.rows:
            if first is None:
                first = number
            row = (list(cells) + [""] * width)[:width]
            if all((not c.strip()) if isinstance(c, str) else c is None for c in row):
                # Kept only when a filled row follows, so that row numbers stay as the spreadsheet shows them.
                blank_run.append(row)
                continue
            for blank in blank_run:
                dataset.append(blank)
            blank_run = []
            dataset.append(row)
        if not len(dataset):
            raise SheetError("The sheet has a header but no rows.")
        dataset.first_row_number = first
        return dataset

    def get_extension(self) -> str:
        return "csv"

    def can_import(self) -> bool:
        return True


def neutralise_dataset(dataset: tablib.Dataset) -> tablib.Dataset:
    """Return a copy of `dataset` in which no cell can run as a spreadsheet formula."""
    safe = tablib.Dataset(headers=[neutralise(h) for h in dataset.headers or []])
    for row in dataset:
        safe.append([neutralise(v) for v in row])
    return safe


class SafeCSV(base_formats.CSV):
    """CSV whose formula-like cells are neutralised; the admin writes it as UTF-8 with a BOM."""

    def export_data(self, dataset, **kwargs):
        return super().export_data(neutralise_dataset(dataset), **kwargs)

    def can_import(self) -> bool:
        return False


class SafeXLSX(base_formats.XLSX):
    """XLSX whose formula-like cells are neutralised."""

    def export_data(self, dataset, **kwargs):
        return super().export_data(neutralise_dataset(dataset), **kwargs)

    def can_import(self) -> bool:
        return False
