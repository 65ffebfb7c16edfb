"""Set-based import of order sheets and agreement sheets: checked per batch, written in bulk.

Rows are read as a stream and handled in batches: every lookup is one query per batch, every write
one bulk statement per model per batch, with its history written in bulk too. What earlier rows said
is remembered, so a dry run sees exactly what the real run would do without writing: partners,
customers, agreements and products in memory (a sheet names few of them, however long it is), orders
and their lines, which grow with the file, in a temporary table between batches (licensing.filestate).
"""

from licensing.importing.agreements import AgreementsImporter
from licensing.importing.base import SheetImporter
from licensing.importing.order_sheet import OrderSheetImporter
from licensing.importing.report import ImportReport

__all__ = ["AgreementsImporter", "ImportReport", "OrderSheetImporter", "SheetImporter"]
