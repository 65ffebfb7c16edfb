"""Rule 12 in one place: every state change a service makes is saved with who made it and why."""

from django.db.models import Model

# django-simple-history keeps the reason in a 100-character column.
REASON_LENGTH = 100


def save_with_history(obj: Model, *, acting_user, reason: str, fields: list[str] | None = None) -> None:
    """Save `obj` (only `fields`, when given) with its history row naming who and why."""
    obj._history_user = acting_user
    obj._change_reason = reason[:REASON_LENGTH]
    if fields is None:
        obj.save()
    else:
        # auto_now only fills updated_at when it is among the fields written.
        names = {field.name for field in obj._meta.concrete_fields}
        extra = ["updated_at"] if "updated_at" in names and "updated_at" not in fields else []
        obj.save(update_fields=[*fields, *extra])
