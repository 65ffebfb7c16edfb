from django.db import migrations, models
from django.db.models.functions import Coalesce

from config.db_guards import earliest, fixed_once_in_use

GUARD = fixed_once_in_use("licensing_product", ["part_number"], label="product")


def mark_products_seats_depend_on(apps, schema_editor) -> None:
    """Set seats_requested_at of products whose lines already had seats requested or that have subscriptions."""
    Product = apps.get_model("licensing", "Product")
    OrderLine = apps.get_model("licensing", "OrderLine")
    Subscription = apps.get_model("redemption", "Subscription")
    in_use = OrderLine.objects.exclude(seats_requested_at=None).values("product_id")
    Product.objects.filter(
        models.Q(pk__in=in_use) | models.Q(pk__in=Subscription.objects.values("product_id"))
    ).update(
        seats_requested_at=Coalesce(
            earliest(OrderLine, "seats_requested_at", product_id="pk"),
            earliest(Subscription, "created_at", product_id="pk"),
        )
    )


class Migration(migrations.Migration):

    dependencies = [
        ('licensing', '0006_order_age_index'),
        ('redemption', '0009_provider_call_budget'),
    ]

    operations = [
        migrations.AddField(
            model_name='historicalproduct',
            name='seats_requested_at',
            field=models.DateTimeField(blank=True, editable=False, help_text='When seats of this product were first requested; from then on what they were bought under is fixed.', null=True),
        ),
        migrations.AddField(
            model_name='product',
            name='seats_requested_at',
            field=models.DateTimeField(blank=True, editable=False, help_text='When seats of this product were first requested; from then on what they were bought under is fixed.', null=True),
        ),
        migrations.RunPython(mark_products_seats_depend_on, migrations.RunPython.noop),
        migrations.RunPython(*GUARD),
    ]
