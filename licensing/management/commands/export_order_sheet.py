from django.core.management.base import BaseCommand, CommandParser

from licensing.models import OrderLine
from licensing.resources import OrderSheetResource
from licensing.sheets import write_sheet


class Command(BaseCommand):
    help = "Export every order line as an order sheet: XLSX or CSV (UTF-8 with BOM) by the file's extension."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="where to write: a .csv or .xlsx file")

    def handle(self, *args, path: str, **options) -> None:
        resource = OrderSheetResource()
        queryset = resource.filter_export(OrderLine.objects.order_by("order__license_number", "line_number"))
        rows = (resource.export_resource(line) for line in queryset.iterator(chunk_size=2000))
        count = write_sheet(path, resource.get_export_headers(), rows)
        self.stdout.write(self.style.SUCCESS(f"Wrote {count} order lines to {path}."))
