"""The parts of an Excel workbook, each read as a stream with every size that could explode checked.

A workbook is a zip of XML parts. Each part is unpacked and parsed a piece at a time by expat, with
handlers and no tree: no part may unpack to more than the limit, whatever the zip says of it; a
token too long to be real is refused; whitespace between elements is never kept. The text cells
share (the shared strings) is kept as one block of UTF-8, not as objects, and a string over the cell
limit is only counted, never built.
"""

from __future__ import annotations

import os
import posixpath
import re
import struct
import zipfile
import zlib
from array import array
from collections.abc import Iterator
from typing import IO, Any
from xml.parsers import expat

from django.conf import settings
from openpyxl.styles.numbers import BUILTIN_FORMATS, is_date_format, is_timedelta_format

from licensing.sheets import SheetError

CHUNK = 64 * 1024
# A workbook has a few dozen parts; a zip listing more is built to exhaust memory before it is read.
MAX_PARTS = 10_000
MAX_DIRECTORY_BYTES = MAX_PARTS * 512
# Only the first visible sheet is read; the others are only counted.
MAX_SHEETS = 100
# Excel itself allows about 65,000 cell formats.
MAX_STYLES = 65_536
# Expat holds a start tag, a comment or an attribute whole until it ends: no real one is this long.
MAX_SILENT_BYTES = 1 << 20
NOT_A_WORKBOOK = "This file is not a readable Excel workbook (.xlsx)."


def mb(size: int) -> str:
    return f"{size / 1_048_576:.0f} MB"


def local_name(tag: str) -> str:
    return tag.rpartition(":")[2]


def _refuse_doctype(*args: Any) -> None:
    # A workbook never declares a DTD: refusing one rules out entity expansion and external entities.
    raise SheetError("This workbook declares a DTD, which no Excel workbook does; it is refused.")


class Part:
    """What a parse keeps of one XML part; counts events so that a token too long to be real is noticed."""

    row: int | None = None

    def __init__(self) -> None:
        self.events = 0

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        self.events += 1

    def end(self, tag: str) -> None:
        pass

    def data(self, text: str) -> None:
        self.events += 1


def feed_part(archive: zipfile.ZipFile, name: str, part: Part) -> Iterator[None]:
    """Parse one part a piece at a time, yielding after each piece; refuse a part that unpacks too far."""
    limit = settings.IMPORT_XLSX_MAX_UNCOMPRESSED_BYTES
    parser = expat.ParserCreate()
    # Text comes in pieces of up to a chunk, however many lines it has.
    parser.buffer_text = True
    parser.buffer_size = CHUNK
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.StartElementHandler = part.start
    parser.EndElementHandler = part.end
    parser.CharacterDataHandler = part.data
    unpacked = silent = 0
    try:
        with archive.open(name) as stream:
            while chunk := stream.read(CHUNK):
                # Counted as unpacked: the sizes a zip declares are whatever its author wrote.
                unpacked += len(chunk)
                if unpacked > limit:
                    raise SheetError(
                        f"A part of this workbook ({name}) unpacks to more than {mb(limit)}, the limit; it is refused."
                    )
                events = part.events
                parser.Parse(chunk, False)
                silent = silent + len(chunk) if part.events == events else 0
                if silent > MAX_SILENT_BYTES:
                    raise SheetError(
                        f"A part of this workbook ({name}) holds a tag or comment longer than {mb(MAX_SILENT_BYTES)}, "
                        "which no spreadsheet writes; it is refused.",
                        row=part.row or None,
                    )
                yield
        parser.Parse(b"", True)
    except expat.ExpatError as exc:
        raise SheetError(
            f"This workbook is damaged: its part {name} is not well-formed XML ({expat.ErrorString(exc.code)}).",
            row=part.row or None,
        ) from exc
    except (
        zipfile.BadZipFile,
        zlib.error,
        KeyError,
        ValueError,
        EOFError,
        OSError,
        RuntimeError,
        NotImplementedError,
    ) as exc:
        # A damaged zip, a compression or encryption zipfile cannot read, a number that is none.
        raise SheetError(NOT_A_WORKBOOK, row=part.row or None) from exc


def read_part(archive: zipfile.ZipFile, name: str, part: Part) -> None:
    """Parse a whole part, keeping what `part` keeps of it."""
    for _ in feed_part(archive, name, part):
        pass


class Relationships(Part):
    """A part's relationships: id -> (kind, target), the kind being the end of the type's URI."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: dict[str, tuple[str, str]] = {}

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        self.events += 1
        if local_name(tag) == "Relationship":
            if len(self.targets) >= MAX_PARTS:
                raise SheetError(f"This workbook lists more than {MAX_PARTS} relationships; it is refused.")
            kind = attrs.get("Type", "").rpartition("/")[2]
            self.targets[attrs.get("Id", "")] = (kind, attrs.get("Target", ""))


def relationships(archive: zipfile.ZipFile, part_name: str) -> dict[str, tuple[str, str]]:
    """Return the relationships of a part, with targets as paths inside the archive."""
    folder, base = posixpath.split(part_name)
    rels_name = posixpath.join(folder, "_rels", base + ".rels")
    if rels_name not in archive.NameToInfo:
        return {}
    rels = Relationships()
    read_part(archive, rels_name, rels)
    resolved = {}
    for rel_id, (kind, target) in rels.targets.items():
        path = target.lstrip("/") if target.startswith("/") else posixpath.join(folder, target)
        resolved[rel_id] = (kind, posixpath.normpath(path))
    return resolved


class WorkbookPart(Part):
    """The workbook part: its visible sheets' relationship ids, in order, and its date system."""

    def __init__(self) -> None:
        super().__init__()
        self.sheets: list[str] = []
        self.count = 0
        self.date1904 = False

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        self.events += 1
        name = local_name(tag)
        if name == "sheet":
            self.count += 1
            if self.count > MAX_SHEETS:
                raise SheetError(
                    f"This workbook has more than {MAX_SHEETS} sheets; an import reads the first visible sheet of "
                    f"a workbook of at most {MAX_SHEETS}."
                )
            # A hidden sheet (lists for drop-downs, an old copy) is not the one the clerk sees and works on.
            if attrs.get("state", "visible") == "visible":
                self.sheets.append(next((v for k, v in attrs.items() if k.endswith(":id")), ""))
        elif name == "workbookPr":
            self.date1904 = attrs.get("date1904", "").lower() in ("1", "true")


# Built-in formats ECMA-376 leaves to the locale: in Chinese, Japanese and Korean Excel these are dates
# (27-31, 36, 50-58; 32-35 are times of day). A workbook uses them without defining them.
EAST_ASIAN_DATE_FORMATS = frozenset({27, 28, 29, 30, 31, 36, *range(50, 59)})


class StylesPart(Part):
    """The styles part: the number format of each cell format, to tell dates from numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.formats: dict[int, str] = {}
        self.cell_formats: list[int] = []
        self.in_cell_xfs = False

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        self.events += 1
        name = local_name(tag)
        if name == "numFmt" and len(self.formats) < MAX_STYLES:
            self.formats[int(attrs.get("numFmtId", "0"))] = attrs.get("formatCode", "")
        elif name == "cellXfs":
            self.in_cell_xfs = True
        elif name == "xf" and self.in_cell_xfs:
            if len(self.cell_formats) >= MAX_STYLES:
                raise SheetError(f"This workbook has more than {MAX_STYLES} cell styles; it is refused.")
            self.cell_formats.append(int(attrs.get("numFmtId", "0")))

    def end(self, tag: str) -> None:
        if local_name(tag) == "cellXfs":
            self.in_cell_xfs = False

    def padded_styles(self) -> dict[str, int]:
        """Return the style indexes of whole numbers shown with leading zeros ("0000000000"), with their width.

        Excel keeps 0080000102 so formatted as the number 80000102: read as the sheet shows it, an order
        or agreement number keeps its zeros.
        """
        padded = {}
        for index, format_id in enumerate(self.cell_formats):
            code = self.formats.get(format_id, "")
            if len(code) > 1 and set(code) == {"0"}:
                padded[str(index)] = len(code)
        return padded

    def date_styles(self) -> tuple[frozenset[str], frozenset[str]]:
        """Return the style indexes (as cells write them) of dates and of durations."""
        dates, durations = set(), set()
        for index, format_id in enumerate(self.cell_formats):
            code = self.formats[format_id] if format_id in self.formats else BUILTIN_FORMATS.get(format_id)
            if is_date_format(code) or (format_id in EAST_ASIAN_DATE_FORMATS and format_id not in self.formats):
                dates.add(str(index))
            if is_timedelta_format(code):
                durations.add(str(index))
        return frozenset(dates), frozenset(durations)


# Excel writes a character XML cannot carry (a carriage return, a control character) as _xHHHH_, and
# a text that itself looks like one with its underscore escaped (_x005F_).
ESCAPED = re.compile(r"_x([0-9A-Fa-f]{4})_")


def unescaped(text: str) -> str:
    """Return a cell's text as Excel shows it: every _xHHHH_ the character it stands for."""
    return ESCAPED.sub(lambda match: chr(int(match[1], 16)), text) if "_x" in text else text


class SharedStrings(Part):
    """The shared strings: one block of UTF-8 and where each string ends; too-long ones are only marked."""

    def __init__(self, cell_limit: int, budget: int) -> None:
        super().__init__()
        self.cell_limit = cell_limit
        self.budget = budget
        self.text = bytearray()
        self.ends = array("Q")
        self.too_long: set[int] = set()
        self.pieces: list[str] = []
        self.length = 0
        self.collecting = False
        self.phonetic = 0

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        self.events += 1
        name = local_name(tag)
        if name == "si":
            self.pieces, self.length = [], 0
        elif name == "t":
            self.collecting = not self.phonetic
        elif name == "rPh":
            self.phonetic += 1

    def data(self, text: str) -> None:
        self.events += 1
        if self.collecting:
            self.length += len(text)
            # Past the limit the string is only counted: it is never built.
            if self.length <= self.cell_limit:
                self.pieces.append(text)

    def end(self, tag: str) -> None:
        name = local_name(tag)
        if name == "t":
            self.collecting = False
        elif name == "rPh":
            self.phonetic -= 1
        elif name == "si":
            if self.length > self.cell_limit:
                self.too_long.add(len(self.ends))
            else:
                self.text += unescaped("".join(self.pieces)).encode()
            self.ends.append(len(self.text))
            if len(self.text) + 8 * len(self.ends) > self.budget:
                raise SheetError(
                    f"This workbook holds more than {mb(self.budget)} of text, more than a sheet may hold; "
                    "split it into smaller sheets."
                )

    def get(self, index: int) -> str | None:
        """Return shared string `index`, or None when it is over the cell limit."""
        if index in self.too_long:
            return None
        start = self.ends[index - 1] if index else 0
        return self.text[start : self.ends[index]].decode()


def check_directory(stream: IO[bytes]) -> None:
    """Refuse a zip whose table of contents lists more parts than a workbook has, before zipfile reads it."""
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    tail_size = min(size, 22 + 65_535 + 20)
    stream.seek(size - tail_size)
    tail = stream.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return
    entries, directory = struct.unpack("<HI", tail[at + 10 : at + 16])
    if (entries == 0xFFFF or directory == 0xFFFFFFFF) and at >= 20 and tail[at - 20 : at - 16] == b"PK\x06\x07":
        # ZIP64: the real counts are in a record the locator points at.
        stream.seek(struct.unpack("<Q", tail[at - 12 : at - 4])[0])
        record = stream.read(56)
        if record[:4] == b"PK\x06\x06":
            entries, directory = struct.unpack("<QQ", record[32:48])
    stream.seek(0)
    if entries > MAX_PARTS or directory > MAX_DIRECTORY_BYTES:
        raise SheetError(f"This workbook lists more than {MAX_PARTS} parts, more than any workbook has; it is refused.")
