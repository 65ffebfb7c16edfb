"""Staff sign-in screens: the sign-in itself, setting up the authenticator, unlocking an account."""

from django.conf import settings
from django.contrib import messages
from django.contrib.admin import ModelAdmin
from django.contrib.auth import logout
from django.contrib.auth.views import LoginView, redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, resolve_url
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django_otp import login as otp_login

from desk import services
from desk.forms import AuthenticatorSetupForm, UnlockForm
from desk.models import LockedAccount


def _next_url(request: HttpRequest) -> str:
    wanted = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(wanted, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return wanted
    return reverse("admin:index")


class StaffLoginView(LoginView):
    """Sign in with the password and, where the user has an authenticator, its code."""

    def form_valid(self, form) -> HttpResponse:
        response = super().form_valid(form)
        if form.otp_device is not None:
            otp_login(self.request, form.otp_device)
        elif services.needs_two_factor_setup(form.get_user()):
            setup = reverse("admin:two_factor_setup")
            return HttpResponseRedirect(f"{setup}?{urlencode({'next': self.get_success_url()})}")
        return response


def attempted_username(request: HttpRequest, credentials: dict | None = None) -> str:
    """Return the user name a sign-in attempt is recorded and locked under (django-axes' AXES_USERNAME_CALLABLE).

    As typed, cut to the longest a user name can be: a longer one is no user's, and would not fit the record.
    """
    typed = (credentials or {}).get("username") or request.POST.get("username") or ""
    return str(typed)[:USERNAME_MAX_LENGTH]


USERNAME_MAX_LENGTH = 150


def locked_out(request: HttpRequest, original_response=None, credentials: dict | None = None) -> HttpResponse:
    """Say that sign-in is locked, for how long, and who can lift it (django-axes' lockout page)."""
    from django.contrib import admin

    context = {
        **admin.site.each_context(request),
        "title": "Sign-in locked",
        "username": (credentials or {}).get("username") or request.POST.get("username", ""),
        "failure_limit": settings.LOGIN_FAILURE_LIMIT,
        "minutes": settings.LOGIN_LOCKOUT_MINUTES,
    }
    return TemplateResponse(request, "admin/locked_out.html", context, status=429).render()


def sign_out_view(request: HttpRequest) -> HttpResponse:
    """Sign out whoever is signed in, complete or not (a supervisor without their phone), and go to the sign-in page."""
    logout(request)
    return HttpResponseRedirect(reverse("admin:login"))


def two_factor_setup_view(admin_site, request: HttpRequest) -> HttpResponse:
    """Set up the authenticator app: scan the code (or type the secret), then confirm with a code it shows."""
    user = request.user
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return redirect_to_login(request.get_full_path(), resolve_url("admin:login"))
    refusal = services.two_factor_setup_refusal(user)
    if refusal:
        messages.error(request, refusal)
        return redirect_to_login(request.get_full_path(), resolve_url("admin:login"))
    device = services.two_factor_setup_start(user=user)
    form = AuthenticatorSetupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.two_factor_setup_confirm(
                request=request,
                device=device,
                token=form.cleaned_data["token"],
                password=form.cleaned_data["password"],
            )
        except ValidationError as exc:
            form.add_error("password" if exc.code == "invalid_password" else "token", exc)
        else:
            messages.success(request, "Two-factor sign-in is set up: from now on you sign in with a code from the app.")
            return HttpResponseRedirect(_next_url(request))
    context = {
        **admin_site.each_context(request),
        "title": "Two-factor sign-in",
        "form": form,
        "qr_svg": services.authenticator_qr_svg(device),
        "secret": services.authenticator_secret(device),
        "required": services.two_factor_required(user),
        "has_device": services.sign_in_device(user) is not None,
        "next": _next_url(request),
    }
    return TemplateResponse(request, "admin/desk/two_factor_setup.html", context)


def unlock_view(model_admin: ModelAdmin, request: HttpRequest, pk: int) -> HttpResponse:
    """Unlock an account (and its address) after failed sign-ins, with a reason."""
    if not services.can_unlock(request.user):
        raise PermissionDenied
    attempt = get_object_or_404(LockedAccount, pk=pk)
    form = UnlockForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.account_unlock(attempt=attempt, acting_user=request.user, reason=form.cleaned_data["reason"])
        except ValidationError as exc:
            form.add_error("reason", exc)
        else:
            model_admin.message_user(request, f"{attempt.username or attempt.ip_address} can sign in again.")
            return HttpResponseRedirect(reverse("admin:desk_lockedaccount_changelist"))
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Unlock {attempt.username or attempt.ip_address}?",
        "opts": model_admin.model._meta,
        "attempt": attempt,
        "form": form,
    }
    return TemplateResponse(request, "admin/desk/unlock.html", context)
