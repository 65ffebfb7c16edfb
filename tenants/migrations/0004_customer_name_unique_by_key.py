"""Two customers may not have the same name key; the database's own LOWER() no longer decides."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0003_customer_name_key"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="customer",
            name="customer_name_unique_ci",
        ),
        migrations.AddConstraint(
            model_name="customer",
            constraint=models.UniqueConstraint(
                fields=["name_key"],
                name="customer_name_unique_ci",
                violation_error_code="unique",
                violation_error_message="A customer with this name already exists (names ignore case).",
            ),
        ),
    ]
