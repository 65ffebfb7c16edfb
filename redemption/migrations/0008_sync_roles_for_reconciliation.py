"""Let both roles see drift, corrections and reconciliation runs."""

from django.db import migrations


def sync_roles(apps, schema_editor):
    from redemption.roles import roles_sync

    roles_sync(apps)


class Migration(migrations.Migration):
    dependencies = [("redemption", "0007_reconciliation")]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
