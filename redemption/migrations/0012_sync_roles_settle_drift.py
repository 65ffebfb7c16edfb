"""Let order processors settle drift (explain it, ask for a push): the change_drift permission."""

from django.db import migrations


def sync_roles(apps, schema_editor):
    from redemption.roles import roles_sync

    roles_sync(apps)


class Migration(migrations.Migration):
    dependencies = [("redemption", "0011_provider_subscription_id_255")]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
