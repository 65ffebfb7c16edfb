from django.db import migrations

from config.db_guards import fixed_once_in_use

BEFORE_FIXED = ["order_id", "product_id", "kind", "line_number"]
# A binding's end date is its line's coverage end: once seats are requested, the dates are fixed too.
LINE_FIXED = [*BEFORE_FIXED, "starts_on", "ends_on"]
FORWARD, _ = fixed_once_in_use("licensing_orderline", LINE_FIXED, label="order line", never_raised=["quantity"])
BACKWARD, _ = fixed_once_in_use("licensing_orderline", BEFORE_FIXED, label="order line", never_raised=["quantity"])


class Migration(migrations.Migration):
    dependencies = [
        ("licensing", "0012_importjob_confirmed_by"),
    ]

    operations = [migrations.RunPython(FORWARD, BACKWARD)]
