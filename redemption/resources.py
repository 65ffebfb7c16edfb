"""Export of subscriptions: where seats live, one row per subscription."""

from import_export import fields

from licensing.resources import SafeExportResource
from redemption.models import Subscription


class SubscriptionResource(SafeExportResource):
    provider_subscription_id = fields.Field("provider_subscription_id", "Subscription ID")
    tenant_domain = fields.Field("tenant__default_domain", "Tenant Domain")
    tenant_id = fields.Field("tenant__tenant_id", "Tenant ID")
    customer = fields.Field("tenant__customer__name", "Customer")
    program = fields.Field(column_name="Program")
    agreement_number = fields.Field("agreement__number", "Agreement Number")
    part_number = fields.Field("product__part_number", "Part Number")
    product = fields.Field("product__description", "Product")
    quantity = fields.Field("quantity", "Quantity")
    term_end = fields.Field("term_end", "Term End")
    status = fields.Field(column_name="Status")

    class Meta:
        model = Subscription
        name = "Subscriptions"
        fields = (
            "provider_subscription_id",
            "tenant_domain",
            "tenant_id",
            "customer",
            "program",
            "agreement_number",
            "part_number",
            "product",
            "quantity",
            "term_end",
            "status",
        )
        export_order = fields
        chunk_size = 2000

    def filter_export(self, queryset, **kwargs):
        return queryset.select_related("tenant__customer", "agreement", "product")

    def dehydrate_program(self, subscription: Subscription) -> str:
        return subscription.agreement.get_program_display()

    def dehydrate_status(self, subscription: Subscription) -> str:
        return subscription.get_status_display()
