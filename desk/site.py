"""The desk: the admin site whose landing page shows what needs a person now and finds anything by its number.

Signing in takes the password and, where the user has or needs one, the second factor (desk.services).
"""

from django.contrib import admin
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.http import urlencode
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect

from desk import services, views
from desk.forms import StaffLoginForm


class BackOfficeAdminSite(admin.AdminSite):
    site_header = "Office 365 Open back office"
    site_title = "O365 Open back office"
    index_title = "What needs you now"
    login_form = StaffLoginForm

    def has_permission(self, request: HttpRequest) -> bool:
        """Staff who signed in completely: with their authenticator's code where they have or need one."""
        return super().has_permission(request) and services.second_factor_satisfied(request.user)

    @method_decorator(never_cache)
    def login(self, request: HttpRequest, extra_context: dict | None = None):
        if request.method == "GET" and services.needs_two_factor_setup(request.user):
            # Signed in with the password, but the second factor is still to be set up.
            wanted = request.GET.get(REDIRECT_FIELD_NAME) or reverse("admin:index")
            return HttpResponseRedirect(f"{reverse('admin:two_factor_setup')}?{urlencode({'next': wanted})}")
        if request.method == "GET" and self.has_permission(request):
            return HttpResponseRedirect(reverse("admin:index", current_app=self.name))
        context = {
            **self.each_context(request),
            "title": "Log in",
            "subtitle": None,
            "app_path": request.get_full_path(),
            "username": request.user.get_username(),
        }
        if REDIRECT_FIELD_NAME not in request.GET and REDIRECT_FIELD_NAME not in request.POST:
            context[REDIRECT_FIELD_NAME] = reverse("admin:index", current_app=self.name)
        context.update(extra_context or {})
        request.current_app = self.name
        return views.StaffLoginView.as_view(
            extra_context=context, authentication_form=self.login_form, template_name="admin/login.html"
        )(request)

    def get_urls(self):
        setup = never_cache(csrf_protect(lambda request: views.two_factor_setup_view(self, request)))
        return [
            path("two-factor/", setup, name="two_factor_setup"),
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
