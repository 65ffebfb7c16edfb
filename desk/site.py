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
from django.views.decorators.http import require_POST

from desk import batch_pages, services, sign_in
from desk.charts import landing_charts
from desk.forms import StaffLoginForm
from licensing.models import Order
from redemption.dashboard import attention_items
from redemption.selectors import lookup_anything, may_view, order_story


class BackOfficeAdminSite(admin.AdminSite):
    site_header = "Office 365 Open back office"
    site_title = "O365 Open back office"
    index_title = "What needs you now"
    login_form = StaffLoginForm
    # The landing page and the breadcrumbs lead everywhere; without the side menu every list fits 1440 px.
    enable_nav_sidebar = False

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
        return sign_in.StaffLoginView.as_view(
            extra_context=context, authentication_form=self.login_form, template_name="admin/login.html"
        )(request)

    def get_urls(self):
        setup = never_cache(csrf_protect(lambda request: sign_in.two_factor_setup_view(self, request)))
        # Django's own log-out page is for complete sign-ins; someone stopped at the setup leaves this way.
        leave = never_cache(csrf_protect(require_POST(sign_in.sign_out_view)))
        return [
            path("two-factor/", setup, name="two_factor_setup"),
            path("two-factor/sign-out/", leave, name="two_factor_sign_out"),
            path(
                "bind/",
                self.admin_view(lambda request: batch_pages.bulk_bind_view(self, request)),
                name="desk_bulk_bind",
            ),
            path(
                "batches/<int:pk>/",
                self.admin_view(lambda request, pk: batch_pages.batch_view(self, request, pk)),
                name="desk_batch",
            ),
            path(
                "batches/<int:pk>/status.json",
                self.admin_view(batch_pages.batch_status_view),
                name="desk_batch_status",
            ),
            path("lookup/", self.admin_view(self.lookup_view), name="lookup"),
            path("orders/<int:order_id>/story/", self.admin_view(self.order_story_view), name="order_story"),
            *super().get_urls(),
        ]

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> TemplateResponse:
        # Counts and charts of what the person may see; the throttling notice is everyone's.
        visible = may_view(request.user)
        extra_context = {
            **(extra_context or {}),
            "attention": attention_items(visible=visible),
            "charts": landing_charts(visible=visible),
        }
        return super().index(request, extra_context)

    def lookup_view(self, request: HttpRequest) -> TemplateResponse:
        """Find orders, agreements, partners, tenants and subscriptions by any number read out."""
        query = request.GET.get("q", "").strip()
        context = {
            **self.each_context(request),
            "title": f"Look up “{query}”" if query else "Look up",
            "query": query,
            # Only what the person may see: a staff account without view permissions finds nothing.
            "hits": lookup_anything(query, visible=may_view(request.user)) if query else [],
        }
        return TemplateResponse(request, "admin/lookup.html", context)

    def order_story_view(self, request: HttpRequest, order_id: int) -> TemplateResponse:
        """Show an order, where its seats went, and who did what, in one page."""
        if not request.user.has_perm("licensing.view_order"):
            raise PermissionDenied
        story = order_story(get_object_or_404(Order, pk=order_id), user=request.user)
        context = {
            **self.each_context(request),
            "title": f"Order {story.order.license_number}",
            "story": story,
            "opts": Order._meta,
        }
        return TemplateResponse(request, "admin/order_story.html", context)
