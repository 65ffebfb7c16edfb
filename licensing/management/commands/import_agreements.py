from licensing.management.commands._sheet_import import SheetImportCommand
from licensing.models import ImportJob


class Command(SheetImportCommand):
    help = "Import an agreements sheet (CSV or XLSX): all of it, or nothing when any row is rejected."
    kind = ImportJob.Kind.AGREEMENTS
