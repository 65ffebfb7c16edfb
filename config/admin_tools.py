"""Shared admin behaviour: doors that pass through the rows' own guards, search that stays on
indexes with a million rows, cheap counts.

Django's admin ORs every search field into one WHERE clause; once those fields sit on different
joined tables PostgreSQL can no longer use an index and scans the whole changelist table. Here each
search field is resolved from its own table first (an indexed lookup on a small table), and the
changelist is filtered by the foreign keys that lead there, so every branch of the OR is an indexed
lookup on the changelist's own table.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.contrib.admin.widgets import AutocompleteSelect
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import IntegrityError, connections
from django.db.models import Model, ProtectedError, Q
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpResponseRedirect
from django.urls import reverse
from django.utils.functional import cached_property
from simple_history.admin import SimpleHistoryAdmin

from config.history import REASON_LENGTH, reason_text

# Unfiltered lists of more rows than this show PostgreSQL's estimate instead of counting every row.
ESTIMATE_ABOVE = 200_000

# Beyond this many matches on a related table, filter with a subquery instead of a list of ids.
ID_LIST_LIMIT = 5000

LOOKUPS = {"=": "exact", "^": "istartswith", "@": "search"}


# The largest id PostgreSQL's bigint holds: a longer number in an address names no row.
ID_MAX = 2**63 - 1


def row_id(value) -> int | None:
    """Return an id typed in an address or a form as a number, or None where it cannot name a row ("²", "abc")."""
    text = str(value if value is not None else "").strip()
    if not (text.isascii() and text.isdigit()) or int(text) > ID_MAX:
        return None
    return int(text)


def address_id(object_id, what: str) -> int:
    """Return the id in an admin address, or answer 404 where it cannot name a row ("abc")."""
    value = row_id(unquote(str(object_id)))
    if value is None:
        raise Http404(f"No {what} has this number.")
    return value


def _term_for(model: type[Model], path: list[str], term: str):
    """Return `term` converted for the field at the end of `path`, or None where it cannot match."""
    field = model._meta.get_field(path[0])
    if len(path) > 1:
        return _term_for(field.related_model, path[1:], term)
    try:
        value = field.to_python(term)
        # What the database would refuse for this column (a name searched in an address column) cannot match.
        field.get_db_prep_value(value, connections[model.objects.db], prepared=False)
    except (ValidationError, ValueError, TypeError):
        return None
    return value


def _ids(queryset, column: str = "pk"):
    ids = list(queryset.values_list(column, flat=True).distinct()[: ID_LIST_LIMIT + 1])
    return queryset.values(column) if len(ids) > ID_LIST_LIMIT else ids


def search_condition(model: type[Model], path: list[str], lookup: str, value) -> Q:
    """Build a condition on `model` for `path__lookup=value`, resolving related tables to ids first."""
    if len(path) == 1:
        return Q(**{f"{path[0]}__{lookup}": value})
    field = model._meta.get_field(path[0])
    related = field.related_model
    matching = related._default_manager.filter(search_condition(related, path[1:], lookup, value))
    if field.many_to_one or (field.one_to_one and not field.auto_created):
        return Q(**{f"{field.attname}__in": _ids(matching)})
    # A reverse relation (e.g. a customer's tenants): keep the rows the matching related rows point to.
    return Q(pk__in=_ids(matching, field.field.attname))


class IndexedSearchMixin:
    """Resolve `search_fields` table by table (see the module docstring); the whole term is one value."""

    def get_search_results(self, request, queryset, search_term: str):
        term = search_term.strip()
        if not term:
            return queryset, False
        condition = Q()
        for spec in self.get_search_fields(request):
            lookup = LOOKUPS.get(spec[0], "icontains")
            path = (spec[1:] if spec[0] in LOOKUPS else spec).split("__")
            value = _term_for(queryset.model, path, term)
            if value is None:
                continue
            condition |= search_condition(queryset.model, path, lookup, value)
        if not condition:
            return queryset.none(), False
        return queryset.filter(condition), False


class EstimatedCountPaginator(Paginator):
    """Count an unfiltered list of a big table from PostgreSQL's statistics, not a full scan."""

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if getattr(queryset, "query", None) is not None and not queryset.query.where:
            connection = connections[queryset.db]
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                        [queryset.model._meta.db_table],
                    )
                    row = cursor.fetchone()
                if row and row[0] > ESTIMATE_ABOVE:
                    return row[0]
        return super().count


class BackOfficeListMixin(IndexedSearchMixin):
    """Defaults every list in the back office shares: indexed search, no full count on big tables."""

    paginator = EstimatedCountPaginator

    show_full_result_count = False
    list_per_page = 50
    # What the list is for, as staff call it ("Work queue"); by default the records' plural name.
    list_title = ""

    def list_title_for(self, request) -> str:
        return self.list_title or self.model._meta.verbose_name_plural.capitalize()

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {"title": self.list_title_for(request), **(extra_context or {})})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # The record's own name, not "Change order line".
        obj = self.get_object(request, object_id)
        title = {"title": str(obj)} if obj is not None else {}
        return super().change_view(request, object_id, form_url, {**title, **(extra_context or {})})


def refusal_text(exc: Exception) -> str:
    """Return what a refused write says, in the words of the rule that refused it."""
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages)
    if isinstance(exc, ProtectedError):
        return "other records depend on it: " + ", ".join(str(obj) for obj in list(exc.protected_objects)[:5])
    # A database rule (constraint or trigger) refused it: its message names the rule.
    return str(exc).splitlines()[0]


class GuardedDoorsMixin:
    """Every change form, delete page and bulk delete passes through the rows' own guards (config.guards).

    Fields a row has fixed are shown read-only with the row's one-line reason; a delete the row
    refuses is listed as protected, with its reason, and never offered; a write a guard refuses
    after the form was checked (someone bound seats meanwhile) says why, and nothing is saved.
    """

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields += [name for name in getattr(obj, "identity_fields", ()) if name not in fields]
        if obj is not None and getattr(obj, "fixed_reason", None) and obj.fixed_reason():
            fields += [name for name in obj.fixed_fields if name not in fields]
        return fields

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        reason = obj.fixed_reason() if obj is not None and hasattr(obj, "fixed_reason") else ""
        if not reason or not fieldsets:
            return fieldsets
        (name, options), *rest = fieldsets
        return [(name, {**options, "description": reason}), *rest]

    def get_deleted_objects(self, objs, request):
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        refusals = [obj.deletion_refusal(fresh=False) for obj in objs if hasattr(obj, "deletion_refusal")]
        protected = [*[r for r in refusals if r], *protected]
        if protected:
            # Nothing is deleted while anything is protected: say why, not which permissions are missing.
            perms_needed = set()
        return deleted, counts, perms_needed, protected

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except (ValidationError, IntegrityError, ProtectedError) as exc:
            # The whole save ran in one transaction, which is rolled back: nothing was written.
            self.message_user(request, f"Nothing was saved: {refusal_text(exc)}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except (ValidationError, IntegrityError, ProtectedError) as exc:
            self.message_user(request, f"Nothing was deleted: {refusal_text(exc)}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def response_action(self, request, queryset):
        try:
            return super().response_action(request, queryset)
        except (ValidationError, IntegrityError, ProtectedError) as exc:
            self.message_user(request, f"Nothing was changed: {refusal_text(exc)}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


def posted_action(request) -> str:
    """Return the name of the action a changelist POST runs, picked as Django's admin picks it ("" for none)."""
    post = request.POST
    if request.method != "POST" or "_save" in post:
        return ""
    if "index" not in post and helpers.ACTION_CHECKBOX_NAME not in post:
        return ""
    try:
        index = int(post.get("index", 0))
    except ValueError:
        index = 0
    try:
        return post.getlist("action")[index]
    except IndexError:
        return ""


class ActionPermissionMixin:
    """An action posted by someone without its permission is refused (403) before anything runs.

    Django leaves such an action out of the list, so a hand-made POST naming it would only be told
    "No action selected"; the service behind the action refuses it as well.
    """

    def changelist_view(self, request, extra_context=None):
        name = posted_action(request)
        if name:
            actions = {action[1]: action for action in self._get_base_actions()}
            if name in actions and not self._filter_actions_by_permissions(request, [actions[name]]):
                raise PermissionDenied
            if not _selection_valid(self.model, request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME)):
                self.message_user(
                    request, "The selection names no rows of this list: reload it and select again.", messages.ERROR
                )
                return HttpResponseRedirect(request.get_full_path())
        return super().changelist_view(request, extra_context)


def _selection_valid(model, selected: list[str]) -> bool:
    """Whether every value a list's action was posted with is one of its primary keys' form (a hand-made POST)."""
    try:
        for value in selected:
            model._meta.pk.to_python(value)
    except ValidationError:
        return False
    return True


class HistoryVersionsReadOnlyMixin:
    """History pages show history: an old version is displayed read-only and is never saved back.

    django-simple-history's version page saves the old version, every column of it, for anyone who
    may view the object; here it only shows it. A record changes on its own page, where its rules apply.
    """

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        if self.get_object(request, unquote(object_id)) is None or row_id(version_id) is None:
            raise Http404("No such version of this record.")
        if request.method not in ("GET", "HEAD"):
            if not self.has_change_permission(request, self.get_object(request, unquote(object_id))):
                # Someone who may not change the record is refused outright, as on its own page.
                raise PermissionDenied
            self.message_user(
                request,
                "An old version cannot be restored here: change the record on its own page, where its rules apply.",
                messages.ERROR,
            )
            opts = self.model._meta
            return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_history", args=[object_id]))
        request.history_version_read_only = True
        return super().history_form_view(request, object_id, version_id, extra_context)

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if getattr(request, "history_version_read_only", False):
            fields += [f.name for f in self.model._meta.concrete_fields if not f.primary_key and f.name not in fields]
        return fields

    def revert_disabled(self, request, obj=None) -> bool:
        return True


class SafeAutocompleteSelect(AutocompleteSelect):
    """Django's autocomplete box; a posted value that cannot be a key ("abc") is left out when the form is
    drawn again with its error ("Select a valid choice"), instead of failing the page's look-up."""

    def optgroups(self, name, value, attr=None):
        return super().optgroups(name, [v for v in value if _can_be_key(self.field.target_field, v)], attr)


def _can_be_key(field, value) -> bool:
    if field.get_internal_type() in {"AutoField", "BigAutoField", "IntegerField", "BigIntegerField"}:
        return row_id(value) is not None
    try:
        field.to_python(value)
    except (ValidationError, ValueError, TypeError):
        return False
    return True


class SafeAutocompleteMixin:
    """Every autocomplete field of an admin page or inline uses SafeAutocompleteSelect."""

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if "widget" not in kwargs and db_field.name in self.get_autocomplete_fields(request):
            kwargs["widget"] = SafeAutocompleteSelect(db_field, self.admin_site, using=kwargs.get("using"))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class GuardedInlineFormSet(BaseInlineFormSet):
    """An inline whose rows refuse to be deleted while seats depend on them, with the row's reason."""

    def clean(self) -> None:
        super().clean()
        refusals = [
            form.instance.deletion_refusal()
            for form in self.deleted_forms
            if hasattr(form.instance, "deletion_refusal")
        ]
        if any(refusals):
            # Deleted rows are not validated one by one: the refusal is the inline's own error.
            raise ValidationError([refusal for refusal in refusals if refusal])


class GuardedInline(SafeAutocompleteMixin, admin.TabularInline):
    """An inline that goes through the same row guards as the object's own page."""

    formset = GuardedInlineFormSet


class ChangeReasonMixin:
    """Rule 12 at the admin's own doors: a change form asks why, and the reason goes into the history of
    the record and of every row its inlines add, change or delete.

    An addition is recorded as made in the admin, a deletion likewise (the delete page confirms it).
    """

    # An admin whose form asks for its own reason (the reminder schedule) sets this off.
    asks_why = True

    def _asks_why(self, request, obj) -> bool:
        return self.asks_why and obj is not None and self.has_change_permission(request, obj)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if self._asks_why(request, obj):
            kwargs["form"] = type(f"{self.form.__name__}WithReason", (self.form,), {**WHY_FIELD})
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request, obj=None):
        fieldsets = list(super().get_fieldsets(request, obj))
        if self._asks_why(request, obj):
            fieldsets.append(("Why", {"fields": ["change_reason"]}))
        return fieldsets

    def save_model(self, request, obj, form, change):
        obj._change_reason = form.cleaned_data.get("change_reason") or "Added in the admin"
        super().save_model(request, obj, form, change)

    def save_formset(self, request, form, formset, change):
        reason = form.cleaned_data.get("change_reason") or "Added in the admin"
        for inline_form in formset.forms:
            inline_form.instance._change_reason = reason
        super().save_formset(request, form, formset, change)

    def delete_model(self, request, obj):
        obj._change_reason = "Deleted in the admin"
        super().delete_model(request, obj)


def _clean_change_reason(form) -> str:
    reason = reason_text(form.cleaned_data.get("change_reason"))
    if not reason:
        raise ValidationError("Say why: the reason is kept with the change.", code="reason_required")
    return reason[:REASON_LENGTH]


WHY_FIELD = {
    "change_reason": forms.CharField(
        label="Why",
        max_length=REASON_LENGTH,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Kept in the history with who made the change and when.",
    ),
    "clean_change_reason": _clean_change_reason,
}


class BackOfficeModelAdmin(
    ChangeReasonMixin,
    SafeAutocompleteMixin,
    ActionPermissionMixin,
    BackOfficeListMixin,
    GuardedDoorsMixin,
    HistoryVersionsReadOnlyMixin,
    SimpleHistoryAdmin,
):
    """A back-office list whose objects keep their history."""


class BackOfficeListAdmin(
    SafeAutocompleteMixin, ActionPermissionMixin, BackOfficeListMixin, GuardedDoorsMixin, admin.ModelAdmin
):
    """A back-office list of records without a history of their own (proxies, delivery logs)."""


class ReadOnlyAdminMixin:
    """A list that people read but never edit: the records change only through services."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
