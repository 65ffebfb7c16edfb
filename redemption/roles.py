"""The two staff roles and their model permissions."""

from django.apps import apps as global_apps

ORDER_PROCESSOR = "Order processor"
SUPERVISOR = "Supervisor"

# Order processors keep partners, customers, tenants, agreements and orders, request bindings, and settle
# drift by explaining it or asking for our value to be pushed (change_drift).
ORDER_PROCESSOR_PERMISSIONS = [
    *[f"{action}_{model}" for model in ("partner", "customer", "tenant") for action in ("view", "add", "change")],
    *[
        f"{action}_{model}"
        for model in ("agreement", "product", "order", "orderline")
        for action in ("view", "add", "change")
    ],
    "view_subscription",
    "view_seatallocation",
    "add_seatallocation",
    "view_renewalsubscription",
    "view_renewalreminder",
    "view_anniversaryreminder",
    "view_renewalschedule",
    "view_drift",
    "change_drift",
    "view_providercorrection",
    "view_reconciliationrun",
]
# Supervisors can do all that, approve, reject and reverse bindings, and set the reminder schedule.
SUPERVISOR_PERMISSIONS = [*ORDER_PROCESSOR_PERMISSIONS, "change_seatallocation", "supervisor", "change_renewalschedule"]

ROLES = {ORDER_PROCESSOR: ORDER_PROCESSOR_PERMISSIONS, SUPERVISOR: SUPERVISOR_PERMISSIONS}


def roles_sync(apps=global_apps) -> None:
    """Create the roles, or bring their permissions up to date; safe to run any number of times.

    A migration early in the history sees only the models that exist by then: it grants what exists,
    and a later migration that adds models runs this again.
    """
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after all migrations; the roles need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(
            Permission.objects.filter(
                content_type__app_label__in=["tenants", "licensing", "redemption"], codename__in=codenames
            )
        )
