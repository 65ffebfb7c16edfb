"""Rule 12 in one place: every state change a service makes is saved with who made it and why."""

import unicodedata

from django.db.models import Model

# The history keeps the reason as text; this bounds what one change's reason may take.
REASON_LENGTH = 2000


def reason_text(reason: str | None) -> str:
    """Return a reason a person typed as it will be kept: without characters nobody sees (zero-width spaces,
    direction marks and other format or control characters, line breaks and tabs aside) around or inside it,
    and trimmed. A reason of nothing visible is an empty one.
    """
    visible = "".join(ch for ch in reason or "" if ch in "\n\t" or unicodedata.category(ch) not in ("Cf", "Cc"))
    return visible.strip()


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
