"""Set-based import of order sheets and agreement sheets: checked per batch, written in bulk.

Rows are read as a stream and handled in batches: every lookup is one query per batch, every write
one bulk statement per model per batch, with its history written in bulk too. What earlier rows said
is remembered, so a dry run sees exactly what the real run would do without writing: each batch
holds the records its rows name, and between batches what the file said of partners, customers,
agreements, products, orders, their lines and tenant domains waits in a temporary table
(licensing.filestate), so memory stays flat however many of them a file names. An order sheet is read
twice: a first pass notes each order's order-level values, wherever in the file its lines state them
(licensing.importing.order_level), so that a line leaving them blank takes them whatever batch it is in.
"""

from licensing.importing.agreements import AgreementsImporter
from licensing.importing.base import SheetImporter
from licensing.importing.order_sheet import OrderSheetImporter
from licensing.importing.report import ImportReport

__all__ = ["AgreementsImporter", "ImportReport", "OrderSheetImporter", "SheetImporter"]
