"""Let both roles see the renewals desk and reminders, and supervisors edit the reminder schedule."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEW = [
    "view_renewalsubscription",
    "view_renewalreminder",
    "view_anniversaryreminder",
    "view_renewalschedule",
]
ROLES = {"Order processor": VIEW, "Supervisor": [*VIEW, "change_renewalschedule"]}


def grant(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        perms = Permission.objects.filter(content_type__app_label="redemption", codename__in=codenames)
        missing = set(codenames) - set(perms.values_list("codename", flat=True))
        if missing:
            raise RuntimeError(f"Permissions missing for role {name}: {sorted(missing)}")
        group.permissions.add(*perms)


def revoke(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    perms = Permission.objects.filter(content_type__app_label="redemption", codename__in=ROLES["Supervisor"])
    for group in apps.get_model("auth", "Group").objects.filter(name__in=ROLES):
        group.permissions.remove(*perms)


class Migration(migrations.Migration):
    dependencies = [("redemption", "0003_renewal_reminders")]

    operations = [migrations.RunPython(grant, revoke)]
