"""Create the two staff roles with their model permissions."""

from django.db import migrations


def create_roles(apps, schema_editor):
    from redemption.roles import roles_sync

    roles_sync(apps)


def remove_roles(apps, schema_editor):
    from redemption.roles import ROLES

    apps.get_model("auth", "Group").objects.filter(name__in=list(ROLES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("redemption", "0001_initial"),
        ("licensing", "0001_initial"),
        ("tenants", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
