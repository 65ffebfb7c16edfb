"""Shared admin behaviour: search that stays on indexes with a million rows, cheap counts.

Django's admin ORs every search field into one WHERE clause; once those fields sit on different
joined tables PostgreSQL can no longer use an index and scans the whole changelist table. Here each
search field is resolved from its own table first (an indexed lookup on a small table), and the
changelist is filtered by the foreign keys that lead there, so every branch of the OR is an indexed
lookup on the changelist's own table.
"""

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Model, Q
from django.utils.functional import cached_property
from simple_history.admin import SimpleHistoryAdmin

# Unfiltered lists of more rows than this show PostgreSQL's estimate instead of counting every row.
ESTIMATE_ABOVE = 200_000

# Beyond this many matches on a related table, filter with a subquery instead of a list of ids.
ID_LIST_LIMIT = 5000

LOOKUPS = {"=": "exact", "^": "istartswith", "@": "search"}


def _term_for(model: type[Model], path: list[str], term: str):
    """Return `term` converted for the field at the end of `path`, or None where it cannot match."""
    field = model._meta.get_field(path[0])
    if len(path) > 1:
        return _term_for(field.related_model, path[1:], term)
    try:
        return field.to_python(term)
    except ValidationError:
        return None


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


class BackOfficeModelAdmin(BackOfficeListMixin, SimpleHistoryAdmin):
    """A back-office list whose objects keep their history."""


class BackOfficeListAdmin(BackOfficeListMixin, admin.ModelAdmin):
    """A back-office list of records without a history of their own (proxies, delivery logs)."""


class ReadOnlyAdminMixin:
    """A list that people read but never edit: the records change only through services."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
