"""Create the two staff roles with their model permissions."""

from django.contrib.auth.management import create_permissions
from django.db import migrations



# Order processors keep partners, customers, tenants, agreements and orders, and request bindings.
ORDER_PROCESSOR = [
    *[f"{action}_{model}" for model in ("partner", "customer", "tenant") for action in ("view", "add", "change")],
    *[f"{action}_{model}" for model in ("agreement", "product", "order", "orderline")
      for action in ("view", "add", "change")],
    "view_subscription",
    "view_seatallocation",
    "add_seatallocation",
]
# Supervisors can do all that, and approve, reject and reverse bindings.
SUPERVISOR = [*ORDER_PROCESSOR, "change_seatallocation", "supervisor"]


def create_roles(apps, schema_editor):
    # Permissions are normally created after all migrations; the roles need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in (("Order processor", ORDER_PROCESSOR), ("Supervisor", SUPERVISOR)):
        group, _ = Group.objects.get_or_create(name=name)
        perms = Permission.objects.filter(
            content_type__app_label__in=["tenants", "licensing", "redemption"], codename__in=codenames
        )
        missing = set(codenames) - set(perms.values_list("codename", flat=True))
        if missing:
            raise RuntimeError(f"Permissions missing for role {name}: {sorted(missing)}")
        group.permissions.add(*perms)


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=["Order processor", "Supervisor"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("redemption", "0001_initial"),
        ("licensing", "0001_initial"),
        ("tenants", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
