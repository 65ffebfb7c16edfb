"""Rows that guard their own state, whichever door writes them (admin form, inline, import, shell).

A model mixes in `GuardedRow` (before `models.Model`) and declares:

- `in_use_field`: the timestamp the binding services set when seats were first requested against the
  row; from then on seats depend on it;
- `fixed_fields`: what may not change once the row is in use (a tenant's identity, an order's agreement);
- `service_fields`: columns only the services write (counters, flags, a confirmed identity). A save
  that does not name them keeps what is stored, so a form opened before a binding cannot undo it;
- `watched_fields`: further stored values `extra_guard_errors` compares with (a line's quantity);
- `identity_fields`: what never changes once the row exists, in use or not (an agreement's customer),
  refused with `identity_message`.

Forms see a refusal as field errors from `clean_fields()`, with nothing written; every other caller
gets `RowGuardError` from `save()`, which checks under the row's lock. `delete()` is refused while
the row is in use. On PostgreSQL a trigger holds the same rule for writes that bypass the ORM.
"""

from datetime import datetime
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import router, transaction
from django.utils import timezone


class RowGuardError(ValidationError):
    """A change or a delete that the row's own rules refuse; the message says why in plain words."""


def local_day(moment: datetime) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d}"


class GuardedRow:
    in_use_field: str = "seats_requested_at"
    fixed_fields: tuple[str, ...] = ()
    service_fields: tuple[str, ...] = ()
    watched_fields: tuple[str, ...] = ()
    identity_fields: tuple[str, ...] = ()

    # --- what a model says about itself ---------------------------------------------------------

    def fixed_message(self, since: datetime) -> str:
        """Return the one-line reason the fixed fields cannot change (the model words it)."""
        raise NotImplementedError

    def identity_message(self, stored: dict[str, Any]) -> str:
        """Return why the identity fields never change (the model words it, naming what is stored)."""
        raise NotImplementedError

    def extra_guard_errors(self, stored: dict[str, Any]) -> dict[str, str]:
        """Return further refusals of this change, by field (e.g. a quantity below the seats bound)."""
        return {}

    def fields_written_with(self, stored: dict[str, Any], writing: set[str]) -> list[str]:
        """Return service fields this save must also write (e.g. clearing a confirmed identity)."""
        return []

    # --- the guard --------------------------------------------------------------------------------

    @property
    def in_use_since(self) -> datetime | None:
        return getattr(self, self.in_use_field)

    def fixed_reason(self) -> str:
        """Return why the fixed fields are read-only now, or "" while they may change."""
        since = self.in_use_since
        return self.fixed_message(since) if since else ""

    def deletion_refusal(self, *, fresh: bool = True) -> str:
        """Return why this row cannot be deleted now, or "" (`fresh`: read the stored row, not this instance)."""
        if self.pk is None:
            return ""
        if fresh:
            stored = self._stored(lock=False)
            since = stored and stored[self._attname(self.in_use_field)]
        else:
            since = self.in_use_since
        if not since:
            return ""
        return f"{self._meta.verbose_name.capitalize()} {self} cannot be deleted. {self.fixed_message(since)}"

    def guard_errors(self, stored: dict[str, Any] | None = None) -> dict[str, str]:
        """Return the refusals of saving this instance over the stored row, by field name."""
        if self._state.adding or self.pk is None:
            return {}
        stored = stored if stored is not None else self._stored(lock=False)
        if stored is None:
            return {}
        errors = dict(self.extra_guard_errors(stored))
        for name in self._changed(stored, self.identity_fields):
            errors.setdefault(name, self.identity_message(stored))
        since = stored[self._attname(self.in_use_field)]
        if since:
            for name in self._changed(stored, self.fixed_fields):
                errors.setdefault(name, self.fixed_message(since))
        return errors

    def clean_fields(self, exclude=None) -> None:
        errors: dict = {}
        try:
            super().clean_fields(exclude=exclude)
        except ValidationError as exc:
            errors = exc.update_error_dict(errors)
        for name, message in self.guard_errors().items():
            if name in errors:
                continue
            # A field the form does not show cannot carry an error of its own.
            key = NON_FIELD_ERRORS if exclude and name in exclude else name
            errors.setdefault(key, []).append(message)
        if errors:
            raise ValidationError(errors)

    def save(self, *args, **kwargs) -> None:
        if self._state.adding or self.pk is None:
            return super().save(*args, **kwargs)
        with transaction.atomic(using=kwargs.get("using") or router.db_for_write(type(self), instance=self)):
            stored = self._stored(lock=True)
            if stored is None:
                return super().save(*args, **kwargs)
            update_fields = kwargs.get("update_fields")
            errors = self.guard_errors(stored)
            if update_fields is not None:
                errors = {name: message for name, message in errors.items() if name in update_fields}
            if errors:
                raise RowGuardError(errors)
            if update_fields is None:
                # Keep what the services stored; the rest of the row is written as usual.
                for name in self.service_fields:
                    setattr(self, self._attname(name), stored[self._attname(name)])
                writing = {f.name for f in self._meta.concrete_fields if not f.primary_key} - set(self.service_fields)
            else:
                writing = set(update_fields)
            extra = self.fields_written_with(stored, writing)
            if update_fields is None or extra:
                kwargs["update_fields"] = sorted(writing | set(extra))
            return super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        refusal = self.deletion_refusal()
        if refusal:
            raise RowGuardError(refusal)
        return super().delete(*args, **kwargs)

    # --- helpers ----------------------------------------------------------------------------------

    def _attname(self, name: str) -> str:
        return self._meta.get_field(name).attname

    def _stored(self, *, lock: bool) -> dict[str, Any] | None:
        names = {self.in_use_field, *self.fixed_fields, *self.service_fields, *self.watched_fields}
        names |= set(self.identity_fields)
        rows = type(self)._base_manager.filter(pk=self.pk)
        if lock:
            rows = rows.select_for_update()
        return rows.values(*sorted(self._attname(name) for name in names)).first()

    def _changed(self, stored: dict[str, Any], names) -> list[str]:
        changed = []
        for name in names:
            field = self._meta.get_field(name)
            try:
                value = field.to_python(getattr(self, field.attname))
            except ValidationError:
                changed.append(name)
                continue
            if value != stored[field.attname]:
                changed.append(name)
        return changed


class ServiceOnlyRow:
    """A row only the services write: they create it, then change it field by field; it is never deleted.

    The admin shows such rows read-only; this refuses a whole-row save of an existing row (a form,
    a history revert) or a delete from any other door, with `service_only_message` as the reason.
    """

    service_only_message: str = "This record changes only through the services."

    def deletion_refusal(self, *, fresh: bool = True) -> str:
        return self.service_only_message if self.pk is not None else ""

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding and self.pk is not None and kwargs.get("update_fields") is None:
            raise RowGuardError(self.service_only_message)
        return super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise RowGuardError(self.service_only_message)
