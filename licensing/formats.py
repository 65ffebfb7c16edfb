"""File formats for django-import-export: one sniffing reader for imports, neutralising writers for exports."""

from __future__ import annotations

import io

import tablib
from django.conf import settings
from import_export.formats import base_formats

from licensing.sheets import SheetError, is_blank, measure_sheet, neutralise, open_sheet, unpacked_size
from licensing.xlsx import refuse_unpacking

# A sheet checked in the page is held whole: past this many characters it goes to a worker instead.
PREVIEW_MAX_CHARS = 5_000_000
# Nor does the page read more than this to find out: a file that unpacks to more goes to a worker unread.
PREVIEW_MAX_UNPACKED_BYTES = 10 * 1024 * 1024


def too_big_for_the_page(stream) -> str:
    """Return why a sheet is to be checked by a worker rather than in the page ('' if it is not).

    The page reads no more of the file than it takes to tell: a sheet that unpacks to much is not read
    at all (a small workbook may unpack to hundreds of MB of empty rows), and counting stops past the
    page's limits. A file that is no sheet raises SheetError.
    """
    unpacked = unpacked_size(stream)
    # Refused at once, not after a wait for a worker: the zip directory already says too much.
    refuse_unpacking(unpacked)
    if unpacked > PREVIEW_MAX_UNPACKED_BYTES:
        return f"it unpacks to {unpacked / 1_048_576:.0f} MB"
    try:
        size = measure_sheet(stream, rows_over=settings.IMPORT_ASYNC_ROWS, chars_over=PREVIEW_MAX_CHARS)
    except SheetError:
        # Refused where the sheet opens (no sheet at all, no header): that is the page's answer.
        stream.seek(0)
        open_sheet(stream)
        # A row that cannot be read, within the page's limits: the page checks the rows before it.
        stream.seek(0)
        return ""
    if size.rows > settings.IMPORT_ASYNC_ROWS:
        return f"it has more than {settings.IMPORT_ASYNC_ROWS} rows"
    if size.more:
        return f"it holds more than {PREVIEW_MAX_CHARS:,} characters"
    return ""


class SheetDataset(tablib.Dataset):
    """A sheet's rows for the preview: read, even with no rows, so that the importer says what is wrong with it
    (a header naming none of the columns, no rows, a row that could not be read) rather than the library's
    "No valid data to import"."""

    def __bool__(self) -> bool:
        return True


class SheetFormat(base_formats.Format):
    """CSV (UTF-8 or Windows-1252, comma or semicolon) or XLSX, told apart by the file's content."""

    def __init__(self, encoding: str | None = None) -> None:
        # The encoding is found in the file itself; the library's choice is ignored.
        self.encoding = None

    def get_title(self) -> str:
        return "CSV or Excel (.xlsx)"

    def create_dataset(self, in_stream: bytes) -> tablib.Dataset:
        """Return the sheet's non-blank rows, each with its row number as the spreadsheet shows it.

        A row that cannot be read stops the reading: the rows before it are kept, to be checked as the
        command checks them, and the refusal goes with them (`reading_stop`), reported after them.
        """
        sheet = open_sheet(io.BytesIO(in_stream))
        dataset = SheetDataset(headers=sheet.header)
        width = len(sheet.header)
        numbers: list[int] = []
        chars = 0
        dataset.reading_stop = None
        try:
            for number, cells in sheet.rows:
                row = (list(cells) + [""] * width)[:width]
                if is_blank(row):
                    continue
                chars += sum(len(c) for c in row if isinstance(c, str))
                if chars > PREVIEW_MAX_CHARS:
                    raise SheetError(
                        f"The sheet holds more than {PREVIEW_MAX_CHARS} characters, too much to check in the page.",
                        row=number,
                    )
                dataset.append(row)
                numbers.append(number)
        except SheetError as exc:
            dataset.reading_stop = exc
        # Row numbers go with the rows: blank rows and gaps in a workbook are not stored as rows.
        dataset.row_numbers = numbers
        dataset.header_row = sheet.header_row
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
