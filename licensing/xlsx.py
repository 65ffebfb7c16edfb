"""Reading the first visible worksheet of an Excel workbook (.xlsx) as a stream, one row at a time.

Rows are parsed as their XML arrives (licensing.xlsx_parts) and handed on a piece at a time: a
cell's text is counted as it comes and refused past the limit, as is a value beyond the last column
a sheet may have. Values come out as openpyxl's read-only mode gives them: numbers as text ("10",
not "10.0"), dates as dates.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from datetime import date, datetime
from typing import IO, Any

from django.conf import settings
from openpyxl.utils.cell import column_index_from_string
from openpyxl.utils.datetime import MAC_EPOCH, WINDOWS_EPOCH, from_excel, from_ISO8601

from licensing.sheets import (
    MAX_COLUMNS,
    Cell,
    ExcelError,
    Sheet,
    SheetError,
    UncalculatedFormula,
    beyond_columns,
    column_name,
    is_blank,
    no_header,
    too_long,
    too_many_rows,
)
from licensing.xlsx_parts import (
    NOT_A_WORKBOOK,
    Part,
    SharedStrings,
    StylesPart,
    WorkbookPart,
    check_directory,
    feed_part,
    mb,
    read_part,
    relationships,
    unescaped,
)


def _xlsx_cell(value: Any) -> Cell:
    """Return an Excel value as text or a date: 10.0 becomes "10", a date-time its date."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


class _SheetRows(Part):
    """The first visible worksheet: its rows with a value, as (row number, cells), gathered in `done` as parsed."""

    def __init__(self, strings: SharedStrings | None, styles: StylesPart, epoch: datetime) -> None:
        super().__init__()
        self.strings = strings
        self.dates, self.durations = styles.date_styles()
        self.padded = styles.padded_styles()
        self.epoch = epoch
        self.cell_limit = settings.IMPORT_MAX_CELL_CHARS
        self.header: list[Any] = []
        self.done: list[tuple[int, list[Cell]]] = []
        self.row = 0
        self.values: dict[int, Cell] = {}
        self.column = -1
        self.kind = "n"
        self.style: str | None = None
        self.text: str | None = None
        self.collecting = False
        self.in_cell = False
        self.formula = False
        self.phonetic = 0

    def _refuse(self, message: str, column: int | None = None) -> SheetError:
        name = column_name(self.header, column) if column is not None else None
        return SheetError(message, row=self.row, column=name)

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        self.events += 1
        name = tag.rpartition(":")[2]
        if name == "c":
            ref = attrs.get("r")
            if ref:
                try:
                    self.column = column_index_from_string(ref.rstrip("0123456789")) - 1
                except ValueError:
                    raise self._refuse(f"a cell has the reference {ref[:20]!r}, which is no column") from None
            else:
                self.column += 1
            self.kind = attrs.get("t", "n")
            self.style = attrs.get("s")
            self.text = None
            self.formula = False
            self.in_cell = True
        elif name == "f" and self.in_cell:
            self.formula = True
        elif (name == "v" or (name == "t" and not self.phonetic)) and self.in_cell:
            self.collecting = True
            if self.text is None:
                self.text = ""
        elif name == "row":
            ref = attrs.get("r")
            try:
                number = int(ref) if ref else self.row + 1
            except ValueError:
                raise self._refuse(f"a row is numbered {ref[:20]!r}, which is no row number") from None
            if number <= self.row:
                raise SheetError(f"row {number} comes after row {self.row}: the workbook is damaged.", row=number)
            self.row = number
            self.values = {}
            self.column = -1
        elif name == "rPh":
            self.phonetic += 1

    def data(self, text: str) -> None:
        self.events += 1
        if self.collecting:
            if len(self.text) + len(text) > self.cell_limit:
                raise self._refuse(too_long(self.cell_limit), self.column)
            self.text += text

    def end(self, tag: str) -> None:
        name = tag.rpartition(":")[2]
        if name == "c":
            self.in_cell = False
            if self.formula and not self.text and self.column < MAX_COLUMNS:
                # Its value is unknown, not blank: the row's check refuses it rather than take it for empty.
                self.values[self.column] = UncalculatedFormula("=")
            elif self.text is not None:
                value = self._value(self.text)
                blank = isinstance(value, str) and not value.strip()
                if self.column >= MAX_COLUMNS and not blank:
                    raise self._refuse(beyond_columns(self.column))
                if value != "" and self.column < MAX_COLUMNS:
                    self.values[self.column] = value
        elif name == "v" or name == "t":
            self.collecting = False
        elif name == "row":
            if self.values:
                cells: list[Cell] = [""] * (max(self.values) + 1)
                for index, value in self.values.items():
                    cells[index] = value
                if not self.header and not is_blank(cells):
                    # Known from here on, so that a refusal names a column by its header.
                    self.header = cells
                self.done.append((self.row, cells))
        elif name == "rPh":
            self.phonetic -= 1

    def _value(self, text: str) -> Cell:
        kind = self.kind
        if kind == "s":
            try:
                value = self.strings.get(int(text)) if self.strings is not None else ""
            except (ValueError, IndexError):
                raise self._refuse("this cell refers to a text the workbook does not hold", self.column) from None
            if value is None:
                raise self._refuse(too_long(self.cell_limit), self.column)
            return value
        if kind in ("inlineStr", "str"):
            return unescaped(text)
        if kind == "e":
            return ExcelError(text)
        if kind == "b":
            return str(text.strip() in ("1", "true"))
        try:
            if kind == "d":
                return _xlsx_cell(from_ISO8601(text))
            number = float(text) if ("." in text or "e" in text or "E" in text) else int(text)
            if self.style in self.dates:
                return _xlsx_cell(from_excel(number, self.epoch, timedelta=self.style in self.durations))
            if self.style in self.padded and float(number).is_integer() and number >= 0:
                return str(int(number)).zfill(self.padded[self.style])
            return _xlsx_cell(number)
        except (ValueError, OverflowError, TypeError):
            # Not a number, or a date no calendar has: the text, for the column's own check to name.
            return text


def _archive(stream: IO[bytes]) -> tuple[zipfile.ZipFile, int]:
    """Return the workbook's zip and what its parts unpack to, as its directory says (nothing unpacked yet).

    A part that unpacks to more than the directory says is refused as it unpacks.
    """
    try:
        check_directory(stream)
        archive = zipfile.ZipFile(stream)
        return archive, sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        # NotImplementedError: a zip feature zipfile does not read (a version it does not know).
        raise SheetError(NOT_A_WORKBOOK) from exc


def refuse_unpacking(inflated: int) -> None:
    """Refuse a workbook whose zip directory says it unpacks past the limit (nothing unpacked yet)."""
    limit = settings.IMPORT_XLSX_MAX_UNCOMPRESSED_BYTES
    if inflated > limit:
        raise SheetError(f"This workbook unpacks to {mb(inflated)}, over the {mb(limit)} limit; it is refused.")


def unpacked_bytes(stream: IO[bytes]) -> int:
    """Return how many bytes reading the workbook unpacks at most, from its zip directory alone."""
    return _archive(stream)[1]


def open_xlsx(stream: IO[bytes], file_name: str) -> Sheet:
    """Return the first visible worksheet of a workbook, read as a stream."""
    archive, inflated = _archive(stream)
    refuse_unpacking(inflated)

    document = next((t for kind, t in relationships(archive, "").values() if kind == "officeDocument"), None)
    document = document or "xl/workbook.xml"
    if document not in archive.NameToInfo:
        raise SheetError(NOT_A_WORKBOOK)
    workbook = WorkbookPart()
    read_part(archive, document, workbook)
    targets = relationships(archive, document)
    sheet_part = next(
        (targets[rel][1] for rel in workbook.sheets if rel in targets and targets[rel][0] == "worksheet"), None
    )
    if sheet_part is None or sheet_part not in archive.NameToInfo:
        raise SheetError("This workbook has no visible worksheet.")
    parts = {kind: target for kind, target in targets.values() if target in archive.NameToInfo}
    strings = None
    if "sharedStrings" in parts:
        # A workbook may hold as much text as a CSV we accept, and no more.
        strings = SharedStrings(settings.IMPORT_MAX_CELL_CHARS, settings.IMPORT_MAX_UPLOAD_BYTES)
        read_part(archive, parts["sharedStrings"], strings)
    styles = StylesPart()
    if "styles" in parts:
        read_part(archive, parts["styles"], styles)
    reader = _SheetRows(strings, styles, MAC_EPOCH if workbook.date1904 else WINDOWS_EPOCH)
    return _sheet(feed_part(archive, sheet_part, reader), reader, file_name)


def _sheet(feed: Iterator[None], reader: _SheetRows, file_name: str) -> Sheet:
    def taken() -> list[tuple[int, list[Cell]]]:
        rows, reader.done = reader.done, []
        return rows

    def parsed() -> Iterator[tuple[int, list[Cell]]]:
        try:
            for _ in feed:
                yield from taken()
        except SheetError:
            # A piece is parsed whole: the rows it completed before the refusal are read first.
            yield from taken()
            raise

    rows = parsed()
    header, header_row = None, 0
    max_rows = settings.IMPORT_MAX_ROWS
    for header_row, cells in rows:
        if not is_blank(cells):
            header = cells
            break
        if header_row > max_rows:
            raise SheetError(no_header(max_rows), row=header_row)
    if header is None:
        raise SheetError("The file is empty.")

    def data_rows() -> Iterator[tuple[int, list[Cell]]]:
        # Rows that hold a value are counted, not row numbers, nor the <dimension> a workbook declares:
        # one formatted empty cell at row 1,048,576 makes neither a sheet of a million rows.
        held = 0
        for number, cells in rows:
            if not is_blank(cells):
                held += 1
                if held > max_rows:
                    raise SheetError(too_many_rows(max_rows), row=number)
            yield number, cells

    return Sheet(header=[str(h) for h in header], rows=data_rows(), file_name=file_name, header_row=header_row)
