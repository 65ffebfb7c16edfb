"""The admin site: the landing page shows what needs a person now, and finds anything by its number."""

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path


class BackOfficeAdminSite(admin.AdminSite):
    site_header = "Office 365 Open back office"
    site_title = "O365 Open back office"
    index_title = "What needs you now"

    def get_urls(self):
        return [
            path("lookup/", self.admin_view(self.lookup_view), name="lookup"),
            path("orders/<int:order_id>/story/", self.admin_view(self.order_story_view), name="order_story"),
            *super().get_urls(),
        ]

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> TemplateResponse:
        from redemption.dashboard import attention_items

        extra_context = {**(extra_context or {}), "attention": attention_items()}
        return super().index(request, extra_context)

    def lookup_view(self, request: HttpRequest) -> TemplateResponse:
        """Find orders, agreements, partners, tenants and subscriptions by any number read out."""
        from redemption.selectors import lookup_anything

        query = request.GET.get("q", "").strip()
        context = {
            **self.each_context(request),
            "title": f"Look up “{query}”" if query else "Look up",
            "query": query,
            "hits": lookup_anything(query) if query else [],
        }
        return TemplateResponse(request, "admin/lookup.html", context)

    def order_story_view(self, request: HttpRequest, order_id: int) -> TemplateResponse:
        """Show an order, where its seats went, and who did what, in one page."""
        from licensing.models import Order
        from redemption.selectors import order_story

        if not request.user.has_perm("licensing.view_order"):
            raise PermissionDenied
        story = order_story(get_object_or_404(Order, pk=order_id))
        context = {
            **self.each_context(request),
            "title": f"Order {story.order.license_number}",
            "story": story,
            "opts": Order._meta,
        }
        return TemplateResponse(request, "admin/order_story.html", context)
