"""Bring the roles' permissions up to date with the renewals desk and reminder schedule."""

from django.db import migrations


def sync_roles(apps, schema_editor):
    from redemption.roles import roles_sync

    roles_sync(apps)


class Migration(migrations.Migration):
    dependencies = [("redemption", "0004_renewal_reminders")]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
