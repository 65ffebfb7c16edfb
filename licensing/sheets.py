"""Reading and writing spreadsheets as staff really send them: CSV in any common dialect, or XLSX."""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import os
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import IO, Any

from django.conf import settings

XLSX_MAGIC = b"PK\x03\x04"
# Old binary Excel (.xls), PDF, gzip: clearly not a sheet we can read.
OTHER_BINARY_MAGIC = (b"\xd0\xcf\x11\xe0", b"%PDF", b"\x1f\x8b")
# A spreadsheet executes a cell that starts with one of these.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

Cell = str | date


class SheetError(Exception):
    """The file as a whole cannot be read as a sheet; the message says why, for a person."""


@dataclass
class Sheet:
    """A header and an iterator of (spreadsheet row number, cells); the header is row 1."""

    header: list[str]
    rows: Iterable[tuple[int, list[Cell]]]
    file_name: str = ""


def _limit_bytes() -> int:
    return settings.IMPORT_MAX_UPLOAD_BYTES


def check_size(size: int | None) -> None:
    """Refuse a file over the upload limit, from its size alone."""
    limit = _limit_bytes()
    if size is not None and size > limit:
        raise SheetError(
            f"The file is {size / 1_048_576:.1f} MB; the limit is {limit / 1_048_576:.1f} MB. "
            "Split it into smaller sheets."
        )


def _file_size(stream: IO[bytes]) -> int | None:
    try:
        position = stream.tell()
        stream.seek(0, os.SEEK_END)
        size = stream.tell()
        stream.seek(position)
    except (OSError, AttributeError, ValueError):
        return None
    return size


def open_sheet(stream: IO[bytes], *, file_name: str = "") -> Sheet:
    """Return the sheet in a binary file object, CSV or XLSX, refusing what is not a readable sheet."""
    check_size(_file_size(stream))
    stream.seek(0)
    head = stream.read(8192)
    stream.seek(0)
    if not head.strip():
        raise SheetError("The file is empty.")
    if head.startswith(XLSX_MAGIC):
        return _open_xlsx(stream, file_name)
    if head.startswith(OTHER_BINARY_MAGIC) or b"\x00" in head:
        raise SheetError("This file is not a sheet: upload a CSV file or an Excel workbook (.xlsx).")
    return _open_csv(stream, file_name)


def _detect_encoding(stream: IO[bytes]) -> str:
    """Return utf-8-sig when the whole file is valid UTF-8, else Windows-1252; reads in chunks."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        while chunk := stream.read(1 << 20):
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "cp1252"
    finally:
        stream.seek(0)
    return "utf-8-sig"


def _sniff_delimiter(sample: str) -> str:
    """Return ';' or ',' by which one the header line uses outside quotes."""
    counts = {",": 0, ";": 0}
    quoted = False
    for char in sample:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
        elif not quoted and char in "\r\n":
            break
    return ";" if counts[";"] > counts[","] else ","


def _is_blank(cells: list) -> bool:
    return all((c is None or (isinstance(c, str) and not c.strip())) for c in cells)


class _KeepOpenText(io.TextIOWrapper):
    """Text over a caller's binary file that leaves the file open: the caller closes what it opened."""

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.detach()


def _open_csv(stream: IO[bytes], file_name: str) -> Sheet:
    encoding = _detect_encoding(stream)
    text = _KeepOpenText(stream, encoding=encoding, newline="")
    sample = text.read(65536)
    text.seek(0)
    delimiter = _sniff_delimiter(sample.lstrip("\ufeff"))
    reader = csv.reader(text, delimiter=delimiter)
    try:
        header, header_row = None, 0
        for header_row, cells in enumerate(reader, start=1):  # noqa: B007
            if not _is_blank(cells):
                header = cells
                break
    except (csv.Error, UnicodeDecodeError) as exc:
        raise SheetError(f"This file is not a readable CSV sheet ({exc}).") from exc
    if header is None:
        raise SheetError("The file is empty.")
    if len(header) < 2:
        raise SheetError("This file is not a sheet: its first line has no columns separated by commas or semicolons.")

    def rows() -> Iterator[tuple[int, list[Cell]]]:
        max_rows = settings.IMPORT_MAX_ROWS
        try:
            for number, cells in enumerate(reader, start=header_row + 1):
                if number - header_row > max_rows:
                    raise SheetError(f"The sheet has more than {max_rows} rows; split it into smaller sheets.")
                yield number, cells
        except csv.Error as exc:
            raise SheetError(f"row {reader.line_num}: this line cannot be read as CSV ({exc}).") from exc
        except UnicodeDecodeError as exc:
            raise SheetError("The file mixes text encodings; save it again as UTF-8 CSV.") from exc

    return Sheet(header=[str(h) for h in header], rows=rows(), file_name=file_name)


def _xlsx_cell(value: Any) -> Cell:
    """Return an Excel cell as text or a date: 10.0 becomes "10", a date-time its date."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _open_xlsx(stream: IO[bytes], file_name: str) -> Sheet:
    import openpyxl
    import openpyxl.xml

    if not openpyxl.xml.DEFUSEDXML:  # pragma: no cover - defusedxml is a requirement
        raise SheetError("Excel files cannot be read safely here: defusedxml is not installed.")
    try:
        archive = zipfile.ZipFile(stream)
        inflated = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise SheetError("This file is not a readable Excel workbook (.xlsx).") from exc
    if inflated > settings.IMPORT_XLSX_MAX_UNCOMPRESSED_BYTES:
        raise SheetError(
            f"This workbook unpacks to {inflated / 1_048_576:.0f} MB, over the "
            f"{settings.IMPORT_XLSX_MAX_UNCOMPRESSED_BYTES / 1_048_576:.0f} MB limit; it is refused."
        )
    stream.seek(0)
    try:
        workbook = openpyxl.load_workbook(stream, read_only=True, data_only=True)
        worksheet = workbook.worksheets[0]
    except Exception as exc:
        raise SheetError("This file is not a readable Excel workbook (.xlsx).") from exc
    max_rows = settings.IMPORT_MAX_ROWS
    declared = worksheet.max_row
    if declared is not None and declared > max_rows + 1:
        workbook.close()
        raise SheetError(f"The sheet has {declared - 1} rows, over the limit of {max_rows}; split it.")
    values = worksheet.iter_rows(values_only=True)
    header, header_row = None, 0
    for header_row, cells in enumerate(values, start=1):  # noqa: B007
        if not _is_blank(list(cells)):
            header = [_xlsx_cell(c) for c in cells]
            break
    if header is None:
        workbook.close()
        raise SheetError("The file is empty.")

    def rows() -> Iterator[tuple[int, list[Cell]]]:
        try:
            for number, cells in enumerate(values, start=header_row + 1):
                if number - header_row > max_rows:
                    raise SheetError(f"The sheet has more than {max_rows} rows; split it into smaller sheets.")
                yield number, [_xlsx_cell(c) for c in cells]
        finally:
            workbook.close()

    return Sheet(header=[str(h) for h in header], rows=rows(), file_name=file_name)


def count_rows(stream: IO[bytes]) -> int:
    """Return the number of non-blank data rows of a sheet, reading it as a stream."""
    sheet = open_sheet(stream)
    total = sum(1 for _, cells in sheet.rows if not _is_blank(cells))
    stream.seek(0)
    return total


def neutralise(value: Any) -> Any:
    """Return a cell value a spreadsheet will show as text, never run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def write_sheet(path: str, header: list[str], rows: Iterable[list[Any]]) -> int:
    """Write a sheet to `path`, XLSX or CSV (UTF-8 with BOM) by its extension; return rows written."""
    count = 0
    if path.lower().endswith(".xlsx"):
        import openpyxl

        workbook = openpyxl.Workbook(write_only=True)
        worksheet = workbook.create_sheet()
        worksheet.append(header)
        for row in rows:
            worksheet.append([_xlsx_text(neutralise(v)) for v in row])
            count += 1
        workbook.save(path)
        return count
    with open(path, "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow([neutralise("" if v is None else v) for v in row])
            count += 1
    return count


def _xlsx_text(value: Any) -> Any:
    # openpyxl stores a string starting with "=" as a formula: neutralised strings never do.
    return "" if value is None else value
