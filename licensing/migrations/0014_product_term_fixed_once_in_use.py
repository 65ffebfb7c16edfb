from django.db import migrations

from config.db_guards import fixed_once_in_use

# A renewal's or added seats' end date comes from the product's term: once seats are requested, it is fixed too.
FORWARD, _ = fixed_once_in_use("licensing_product", ["part_number", "term_months"], label="product")
BACKWARD, _ = fixed_once_in_use("licensing_product", ["part_number"], label="product")


class Migration(migrations.Migration):
    dependencies = [
        ("licensing", "0013_orderline_coverage_fixed_once_in_use"),
    ]

    operations = [migrations.RunPython(FORWARD, BACKWARD)]
