"""Keep each customer's name as compared (tenants.names.name_key) in the database."""

from collections import defaultdict

from django.db import migrations, models

from tenants.names import name_key


def fill_name_keys(apps, schema_editor) -> None:
    """Give every customer its name key; stop, naming them, when two customers have the same name."""
    Customer = apps.get_model("tenants", "Customer")
    by_key = defaultdict(list)
    for pk, name in Customer.objects.order_by("pk").values_list("pk", "name").iterator(chunk_size=2000):
        by_key[name_key(name)].append((pk, name))
    same = [names for names in by_key.values() if len(names) > 1]
    if same:
        listed = "; ".join(" and ".join(f"{name!r} (id {pk})" for pk, name in names) for names in same[:20])
        raise RuntimeError(
            f"{len(same)} groups of customers have the same name when case and surrounding spaces are ignored: "
            f"{listed}. Rename or merge them, then migrate again."
        )
    batch = []
    for key, ((pk, _name),) in by_key.items():
        batch.append(Customer(pk=pk, name_key=key))
        if len(batch) == 2000:
            Customer.objects.bulk_update(batch, ["name_key"])
            batch = []
    Customer.objects.bulk_update(batch, ["name_key"])


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0002_seats_requested_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="customer",
            name="name_key",
            field=models.CharField(default="", editable=False, max_length=765),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="historicalcustomer",
            name="name_key",
            field=models.CharField(default="", editable=False, max_length=765),
            preserve_default=False,
        ),
        migrations.RunPython(fill_name_keys, migrations.RunPython.noop),
    ]
