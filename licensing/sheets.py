"""Reading and writing spreadsheets as staff really send them: CSV in any common dialect, or XLSX.

Every size that could explode is checked while the file is read, never after it: the upload's bytes,
each row's characters and columns, each cell's characters, the number of rows (and, in a workbook,
each part's unpacked bytes and the text it shares between cells: licensing.xlsx). Memory stays
bounded whatever the file holds.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import IO, Any, NamedTuple

from django.conf import settings
from openpyxl.utils.cell import get_column_letter

XLSX_MAGIC = b"PK\x03\x04"
# Old binary Excel (.xls), PDF, gzip: clearly not a sheet we can read.
OTHER_BINARY_MAGIC = (b"\xd0\xcf\x11\xe0", b"%PDF", b"\x1f\x8b")
# Excel's "Unicode Text" and some exports: UTF-16, which is full of zero bytes.
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# A spreadsheet executes a cell that starts with one of these.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# Excel allows 16,384 columns and an order sheet has 19: a value beyond this column is refused as read.
MAX_COLUMNS = 256
# A cell quoted in CSV, with every quote in it doubled, takes at most twice its length and three more.
CSV_CHARS_PER_CELL = 2
# A cell or header a message names is cut to this: a preview never echoes a long cell back.
SHOWN_CHARS = 60

Cell = str | date
# What a cell shows when its formula failed. A CSV saved from Excel holds them as text, and a workbook as
# error cells (or as text, for the newer ones): either way the cell has no value to import.
EXCEL_ERRORS = frozenset(
    {
        "#N/A", "#REF!", "#VALUE!", "#DIV/0!", "#NAME?", "#NULL!", "#NUM!", "#GETTING_DATA", "#SPILL!", "#CALC!",
        "#FIELD!", "#BLOCKED!", "#CONNECT!", "#BUSY!", "#UNKNOWN!", "#EXTERNAL!", "#PYTHON!",
    }
)  # fmt: skip


class ExcelError(str):
    """A workbook cell whose type is an error (t="e"), whatever error its text names."""


class UncalculatedFormula(str):
    """A workbook cell holding a formula and no value: the program that wrote it never calculated it."""

    MESSAGE = (
        "the cell holds a formula with no calculated value (the workbook was not saved by Excel): open it in "
        "Excel and save it again"
    )


def excel_error(value: object) -> str | None:
    """Return the Excel error a cell holds ("#N/A"), or None for any other value."""
    if isinstance(value, ExcelError):
        return value.strip()[:SHOWN_CHARS] or None
    if isinstance(value, str) and "#" in value:
        code = value.strip().upper()
        if code in EXCEL_ERRORS:
            return code
    return None


class SheetError(Exception):
    """The file cannot be read as a sheet, as a whole or from one row on; the message says why, for a person."""

    def __init__(self, message: str, *, row: int | None = None, column: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.row = row
        self.column = column

    def __str__(self) -> str:
        if self.row is None:
            return self.message
        where = f"row {self.row}, column {self.column}" if self.column else f"row {self.row}"
        return f"{where}: {self.message}"


@dataclass
class Sheet:
    """A header and an iterator of (spreadsheet row number, cells); the header is the first row that is not blank."""

    header: list[str]
    rows: Iterable[tuple[int, list[Cell]]]
    file_name: str = ""
    # The header's row as the spreadsheet numbers it (blank rows above it count).
    header_row: int = 1
    # The rows read once more from the first, for a second pass over the file.
    again: Callable[[], Iterable[tuple[int, list[Cell]]]] | None = None

    def rows_again(self) -> Iterable[tuple[int, list[Cell]]]:
        """Return the rows once more, from the first; rows held in a list are simply read again."""
        if self.again is not None:
            return self.again()
        if iter(self.rows) is self.rows:
            raise ValueError("This sheet's rows can be read only once.")
        return self.rows


class SheetSize(NamedTuple):
    rows: int  # rows that hold a value, below the header
    chars: int  # characters of text in them
    more: bool = False  # measuring stopped at a bound it was given: the sheet holds more than this


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


def column_name(header: list[Any], index: int) -> str:
    """Return how a message names a column: its header, cut short, or its letter."""
    name = header[index].strip() if index < len(header) and isinstance(header[index], str) else ""
    if name:
        return name if len(name) <= SHOWN_CHARS else name[:SHOWN_CHARS] + "…"
    return get_column_letter(index + 1) if index < 18_278 else f"#{index + 1}"


def too_many_rows(limit: int) -> str:
    return f"The sheet has more than {limit} rows; split it into smaller sheets."


def no_header(limit: int) -> str:
    return f"the first {limit} rows are blank: the sheet has no header."


def too_long(limit: int) -> str:
    return f"this cell is longer than {limit} characters, the most a cell may hold"


def beyond_columns(index: int) -> str:
    return f"a value in column {column_name([], index)}, beyond the {MAX_COLUMNS} columns a sheet may have"


def open_sheet(stream: IO[bytes], *, file_name: str = "") -> Sheet:
    """Return the sheet in a binary file object, CSV or XLSX, refusing what is not a readable sheet.

    The sheet's rows can be read again (Sheet.rows_again) while the file stays open: from its start.
    """
    sheet = _open_sheet(stream, file_name)
    sheet.again = lambda: _open_sheet(stream, file_name).rows
    return sheet


def _open_sheet(stream: IO[bytes], file_name: str) -> Sheet:
    check_size(_file_size(stream))
    stream.seek(0)
    head = stream.read(8192)
    stream.seek(0)
    if not head.strip():
        raise SheetError("The file is empty.")
    if head.startswith(XLSX_MAGIC):
        from licensing.xlsx import open_xlsx

        return open_xlsx(stream, file_name)
    if head.startswith(UTF16_BOMS):
        raise SheetError('This file is saved as UTF-16 ("Unicode Text"): save it as "CSV UTF-8" and upload it again.')
    # A stray zero byte in a text file is named by its row; a binary file has them from its first line on,
    # or many of them.
    first_line = head.split(b"\n", 1)[0]
    if head.startswith(OTHER_BINARY_MAGIC) or b"\x00" in first_line or head.count(b"\x00") * 16 > len(head):
        raise SheetError("This file is not a sheet: upload a CSV file or an Excel workbook (.xlsx).")
    return _open_csv(stream, file_name)


# A multi-byte UTF-8 character: in a file that is not UTF-8 throughout, it says the file mixes encodings.
_UTF8_CHARACTER = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}|\xed[\x80-\x9f][\x80-\xbf]"
    rb"|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2}"
)
# Bytes the chosen encoding could not read, kept by errors="surrogateescape" so that their row is named.
_UNDECODED = re.compile("[\udc80-\udcff]")
UTF8, CP1252, MIXED = "utf-8-sig", "cp1252", "mixed"


def _inspect_text(stream: IO[bytes]) -> tuple[str, bool]:
    """Return the file's encoding (UTF-8, Windows-1252, or the two mixed) and whether it holds a zero byte.

    Windows-1252 only when nothing in the file is UTF-8: a file with some rows in each is refused, as
    reading it either way garbles half of it. Reads in chunks.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    valid, utf8_seen, nul = True, False, False
    try:
        while chunk := stream.read(1 << 20):
            nul = nul or b"\x00" in chunk
            if valid:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    valid = False
            if not utf8_seen and not chunk.isascii():
                utf8_seen = _UTF8_CHARACTER.search(chunk) is not None
        if valid:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                valid = False
    finally:
        stream.seek(0)
    if valid:
        return UTF8, nul
    return (MIXED if utf8_seen else CP1252), nul


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


def is_blank(cells: list) -> bool:
    return all((c is None or (isinstance(c, str) and not c.strip())) for c in cells)


class _KeepOpenText(io.TextIOWrapper):
    """Text over a caller's binary file that leaves the file open: the caller closes what it opened."""

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.detach()


class _Lines:
    """A CSV file's lines for the csv module, each checked before the module sees it.

    The module reads lines until a row is complete; the reader says which row that is, so a refusal
    names the row as a spreadsheet shows it, whatever the quoted line breaks inside it.
    """

    def __init__(self, text: IO[str], *, cell_chars: int, nul: bool, undecoded: str) -> None:
        self.text = text
        self.nul = nul
        self.undecoded = undecoded
        # A row longer than this has a cell over the limit, or more columns than a sheet may have.
        self.limit = MAX_COLUMNS * (CSV_CHARS_PER_CELL * cell_chars + 3)
        self.row = 1
        self.chars = 0

    def next_row(self, row: int) -> None:
        self.row, self.chars = row, 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self.text.readline(self.limit - self.chars + 1)
        if not line:
            raise StopIteration
        self.chars += len(line)
        if self.chars > self.limit:
            raise SheetError(
                f"this row is longer than {self.limit} characters: a cell in it is far over the limit, "
                'or a quote (") opened in it is never closed',
                row=self.row,
            )
        if self.nul and "\x00" in line:
            raise SheetError(
                "this row holds a NUL character (a zero byte), which no sheet may hold; the file may be damaged: "
                "save it again from the spreadsheet",
                row=self.row,
            )
        if self.undecoded and _UNDECODED.search(line):
            raise SheetError(self.undecoded, row=self.row)
        return line


_NOT_UTF8 = (
    "this row is not valid UTF-8 while other rows are: the file mixes two text encodings (UTF-8 and Windows-1252). "
    'Save it again as "CSV UTF-8" and upload it again'
)
_NOT_CP1252 = 'this row holds bytes that are text in neither UTF-8 nor Windows-1252: save the file again as "CSV UTF-8"'


def check_cells(number: int, cells: list[str], header: list[str], limit: int) -> None:
    """Refuse a row with a value beyond the last column a sheet may have, or with a cell over the length limit."""
    if len(cells) > MAX_COLUMNS and not is_blank(cells[MAX_COLUMNS:]):
        index = next(i for i in range(MAX_COLUMNS, len(cells)) if cells[i].strip())
        raise SheetError(beyond_columns(index), row=number)
    if cells and max(map(len, cells)) > limit:
        index = next(i for i, cell in enumerate(cells) if len(cell) > limit)
        raise SheetError(too_long(limit), row=number, column=column_name(header, index))


def _csv_error(exc: csv.Error, row: int, limit: int) -> SheetError:
    if "field larger than field limit" in str(exc):
        return SheetError(
            f"a cell of this row is longer than {limit} characters, the most a cell may hold, "
            'or a quote (") opened in it is never closed',
            row=row,
        )
    return SheetError(f"this line cannot be read as CSV ({exc}).", row=row)


def _open_csv(stream: IO[bytes], file_name: str) -> Sheet:
    encoding, nul = _inspect_text(stream)
    text = _KeepOpenText(stream, encoding=CP1252 if encoding == CP1252 else UTF8, errors="surrogateescape", newline="")
    sample = text.read(65536)
    text.seek(0)
    delimiter = _sniff_delimiter(sample.lstrip("\ufeff"))
    limit = settings.IMPORT_MAX_CELL_CHARS
    undecoded = {UTF8: "", CP1252: _NOT_CP1252, MIXED: _NOT_UTF8}[encoding]
    lines = _Lines(text, cell_chars=limit, nul=nul, undecoded=undecoded)
    reader = csv.reader(lines, delimiter=delimiter)
    header, header_row = None, 0
    try:
        for header_row, cells in enumerate(reader, start=1):
            if not is_blank(cells):
                header = cells
                break
            if header_row > settings.IMPORT_MAX_ROWS:
                raise SheetError(no_header(settings.IMPORT_MAX_ROWS), row=header_row)
            lines.next_row(header_row + 1)
    except csv.Error as exc:
        raise _csv_error(exc, lines.row, limit) from exc
    if header is None:
        raise SheetError("The file is empty.")
    check_cells(header_row, header, header, limit)
    if len(header) < 2:
        raise SheetError("This file is not a sheet: its first line has no columns separated by commas or semicolons.")
    lines.next_row(header_row + 1)

    def rows() -> Iterator[tuple[int, list[Cell]]]:
        max_rows = settings.IMPORT_MAX_ROWS
        try:
            for number, cells in enumerate(reader, start=header_row + 1):
                # No cell is longer than its row: most rows need no look at their cells.
                if lines.chars > limit or len(cells) > MAX_COLUMNS:
                    check_cells(number, cells, header, limit)
                lines.next_row(number + 1)
                if number - header_row > max_rows:
                    raise SheetError(too_many_rows(max_rows), row=number)
                yield number, cells
        except csv.Error as exc:
            raise _csv_error(exc, lines.row, limit) from exc

    return Sheet(header=[str(h) for h in header], rows=rows(), file_name=file_name, header_row=header_row)


def measure_sheet(
    stream: IO[bytes],
    *,
    rows_over: int | None = None,
    chars_over: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SheetSize:
    """Return how many non-blank data rows a sheet has and how many characters they hold, reading it as a stream.

    Past `rows_over` rows or `chars_over` characters it stops reading (`more`); `progress` hears the
    rows counted so far, every PROGRESS_ROWS of them.
    """
    sheet = open_sheet(stream)
    rows = chars = 0
    for _, cells in sheet.rows:
        if is_blank(cells):
            continue
        rows += 1
        chars += sum(len(c) for c in cells if isinstance(c, str))
        if (rows_over is not None and rows > rows_over) or (chars_over is not None and chars > chars_over):
            stream.seek(0)
            return SheetSize(rows, chars, more=True)
        if progress is not None and rows % PROGRESS_ROWS == 0:
            progress(rows)
    stream.seek(0)
    return SheetSize(rows, chars)


PROGRESS_ROWS = 1000


def unpacked_size(stream: IO[bytes]) -> int:
    """Return how many bytes reading the sheet takes at most: a CSV's size, or a workbook's parts unpacked.

    Nothing is parsed (a workbook's zip directory says it); a file that is no sheet is left to open_sheet.
    """
    stream.seek(0)
    head = stream.read(len(XLSX_MAGIC))
    stream.seek(0)
    if head == XLSX_MAGIC:
        from licensing.xlsx import unpacked_bytes

        try:
            return unpacked_bytes(stream)
        except SheetError:
            pass
        finally:
            stream.seek(0)
    return _file_size(stream) or 0


def neutralise(value: Any) -> Any:
    """Return a cell value a spreadsheet will show as text, never run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def unneutralise(value: str) -> str:
    """Return a text cell without the one quote neutralise() put before a formula's first character."""
    if value.startswith("'") and value[1:].startswith(FORMULA_PREFIXES):
        return value[1:]
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
