from django.contrib import admin

from config.admin_tools import BackOfficeModelAdmin
from tenants.models import Customer, Partner, Tenant


class TenantInline(admin.TabularInline):
    model = Tenant
    fields = ["default_domain", "tenant_id", "display_name", "verified_at"]
    readonly_fields = ["verified_at"]
    extra = 0
    show_change_link = True


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
    readonly_fields = ["verified_at", "verified_by", "verified_tenant_id", "verified_domain", "verified_display_name"]
    list_filter = [("verified_at", admin.EmptyFieldListFilter)]
    ordering = ["default_domain"]

    def get_readonly_fields(self, request, obj=None):
        # The tenant ID and default domain are the tenant's identity: fixed once recorded.
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields = ["tenant_id", "default_domain", "customer", *fields]
        return fields
