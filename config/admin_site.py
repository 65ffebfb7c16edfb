"""The admin site: the landing page shows what needs a person now."""

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse


class BackOfficeAdminSite(admin.AdminSite):
    site_header = "Office 365 Open back office"
    site_title = "O365 Open back office"
    index_title = "What needs you now"

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> TemplateResponse:
        from redemption.dashboard import attention_items

        extra_context = {**(extra_context or {}), "attention": attention_items()}
        return super().index(request, extra_context)
