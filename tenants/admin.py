from django.contrib import admin

from config.admin_tools import BackOfficeModelAdmin, GuardedInline
from tenants.models import VERIFIED_FIELDS, Customer, Partner, Tenant


class TenantInline(GuardedInline):
    """The customer's tenants. Who a tenant is (tenant ID, default domain) is edited on its own page,
    and only until seats are requested for it; new tenants are recorded through the binding flow or
    the tenant page, where the provider confirms them."""

    model = Tenant
    fields = ["default_domain", "tenant_id", "display_name", "verified_at", "seats_requested_at"]
    readonly_fields = ["default_domain", "tenant_id", "verified_at", "seats_requested_at"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Partner)
class PartnerAdmin(BackOfficeModelAdmin):
    list_display = ["name", "mpn_id", "email", "created_at"]
    search_fields = ["mpn_id", "name", "email"]
    ordering = ["name"]


@admin.register(Customer)
class CustomerAdmin(BackOfficeModelAdmin):
    list_display = ["name", "email", "country", "partner"]
    list_select_related = ["partner"]
    search_fields = ["name", "email", "partner__mpn_id", "tenants__default_domain"]
    autocomplete_fields = ["partner"]
    inlines = [TenantInline]
    ordering = ["name"]


@admin.register(Tenant)
class TenantAdmin(BackOfficeModelAdmin):
    list_display = ["default_domain", "tenant_id", "display_name", "customer", "verified_at"]
    list_select_related = ["customer"]
    search_fields = ["default_domain", "=tenant_id", "display_name", "customer__name", "=customer__partner__mpn_id"]
    autocomplete_fields = ["customer"]
    # Who the tenant is becomes read-only (with the reason) once seats are requested for it. Who verified it
    # is named, not linked: the user's own page is for whoever may view users.
    readonly_fields = [
        *(f if f != "verified_by" else "verified_by_name" for f in VERIFIED_FIELDS),
        "seats_requested_at",
    ]
    list_filter = [("verified_at", admin.EmptyFieldListFilter)]
    ordering = ["default_domain"]

    @admin.display(description="verified by")
    def verified_by_name(self, tenant: Tenant) -> str:
        return tenant.verified_by.get_username() if tenant.verified_by else "-"
