from django.db import migrations

from config.db_guards import fixed_once_in_use

LINE_FIXED = ["order_id", "product_id", "kind", "line_number"]
# Once seats of a line are requested its quantity may go down to the seats held, never up: more seats
# than the order bought could then be bound. The same rule as OrderLine's guard, for writes outside the ORM.
RAISED, _ = fixed_once_in_use("licensing_orderline", LINE_FIXED, label="order line", never_raised=["quantity"])
BEFORE, _ = fixed_once_in_use("licensing_orderline", LINE_FIXED, label="order line")


class Migration(migrations.Migration):
    dependencies = [
        ("licensing", "0008_agreement_dates_from_orders"),
    ]

    operations = [migrations.RunPython(RAISED, BEFORE)]
