"""Staff sign-in: who needs a second factor, setting one up, lockouts and unlocks, each recorded."""

from base64 import b32encode

import segno
from axes.models import AccessAttempt
from axes.utils import reset
from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice

from config.history import reason_text
from desk.models import SignInEvent

DEVICE_NAME = "Authenticator app"


def two_factor_required(user) -> bool:
    """Supervisors and superusers sign in with a second factor; everyone does with STAFF_2FA_REQUIRED."""
    if settings.DEMO_SKIP_2FA or not user.is_authenticated:
        return False
    return settings.STAFF_2FA_REQUIRED or user.is_superuser or user.has_perm("redemption.supervisor")


def sign_in_device(user) -> TOTPDevice | None:
    """Return the user's confirmed authenticator, if they set one up."""
    if not user.is_authenticated:
        return None
    return TOTPDevice.objects.filter(user=user, confirmed=True).order_by("id").first()


def second_factor_satisfied(user) -> bool:
    """Whether this signed-in user may work: verified with their authenticator, or needing none."""
    if settings.DEMO_SKIP_2FA:
        return True
    if getattr(user, "is_verified", None) and user.is_verified():
        return True
    return not two_factor_required(user) and sign_in_device(user) is None


def needs_two_factor_setup(user) -> bool:
    """Whether a signed-in staff user must set up an authenticator before anything else."""
    return bool(user.is_authenticated and user.is_staff and two_factor_required(user) and sign_in_device(user) is None)


def code_refusal(device: TOTPDevice, token: str) -> str:
    """Return why the authenticator's code is refused, or "" when it is the right one (it is then used up)."""
    allowed, _ = device.verify_is_allowed()
    if not allowed:
        # django-otp waits longer after each wrong code in a row: guessing takes forever.
        return "Too many wrong codes in a row: wait a few seconds, then enter the code the app shows now."
    token = (token or "").replace(" ", "")
    if not token:
        return "Enter the 6-digit code your authenticator app shows."
    if not device.verify_token(token):
        return "That code is not right or has expired: enter the one your app shows now."
    return ""


def two_factor_setup_start(*, user) -> TOTPDevice:
    """Return the authenticator being set up for the user (a new secret until it is confirmed)."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("-id").first()
    return device or TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=False)


def two_factor_setup_refusal(user) -> str:
    """Return why this session may not set up an authenticator ('' if it may).

    Replacing one takes a session signed in with it: a session opened with the password alone before the
    user set theirs up (a stolen cookie, a password known then) must not swap it for its own.
    """
    if sign_in_device(user) is not None and not (getattr(user, "is_verified", None) and user.is_verified()):
        return (
            "Two-factor sign-in is already set up for your account: sign in again with its code to replace it, "
            "or ask an administrator to remove it if the phone is lost."
        )
    return ""


def two_factor_setup_confirm(*, request: HttpRequest, device: TOTPDevice, token: str, password: str) -> None:
    """Confirm the authenticator with a code it shows now and the user's password; the session counts as
    verified from then on."""
    if device.user_id != request.user.pk or device.confirmed or two_factor_setup_refusal(request.user):
        raise PermissionDenied
    if not request.user.check_password(password or ""):
        # Counted as a failed sign-in: guessing the password here ends in the same lockout.
        user_login_failed.send(sender=__name__, credentials={"username": request.user.get_username()}, request=request)
        raise ValidationError("That is not your password.", code="invalid_password")
    refusal = code_refusal(device, token)
    if refusal:
        raise ValidationError(f"{refusal} (If it keeps failing, check the phone's clock.)", code="invalid_token")
    with transaction.atomic():
        # One authenticator per person: a new one replaces the old.
        TOTPDevice.objects.filter(user=device.user, confirmed=True).delete()
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        SignInEvent.objects.create(
            kind=SignInEvent.Kind.TWO_FACTOR_ENABLED, username=device.user.get_username(), by=device.user
        )
    otp_login(request, device)


def authenticator_secret(device: TOTPDevice) -> str:
    """Return the secret as people type it into an app: base32, in groups of four."""
    secret = b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def authenticator_qr_svg(device: TOTPDevice) -> str:
    """Return the otpauth:// QR code as inline SVG (no script, no style: fine under the CSP)."""
    return segno.make(device.config_url, error="m").svg_inline(scale=4, dark="#000", light="#fff")


def lockout_record(sender, request=None, username: str = "", ip_address: str | None = None, **kwargs) -> None:
    """Record a lockout django-axes announced, once: it announces it again at every refused attempt."""
    since = timezone.now() - settings.AXES_COOLOFF_TIME
    same = {"username": username} if username else {"ip_address": ip_address or None}
    recent = SignInEvent.objects.filter(**same, at__gte=since)
    last = recent.filter(kind__in=[SignInEvent.Kind.LOCKED_OUT, SignInEvent.Kind.UNLOCKED]).first()
    if last is not None and last.kind == SignInEvent.Kind.LOCKED_OUT:
        return
    SignInEvent.objects.create(
        kind=SignInEvent.Kind.LOCKED_OUT,
        username=username or "",
        ip_address=ip_address or None,
        reason=f"{settings.LOGIN_FAILURE_LIMIT} failed sign-ins; locked for {settings.LOGIN_LOCKOUT_MINUTES} minutes",
    )


def sign_in_failures_clear(sender, request=None, user=None, **kwargs) -> None:
    """A sign-in clears the failed attempts recorded under that user's name, and no one else's.

    django-axes' own reset (AXES_RESET_ON_SUCCESS) clears every attempt matching the user name or the
    address: anyone with a working login could then guess another account's password without limit.
    """
    if user is not None:
        AccessAttempt.objects.filter(username=user.get_username()).delete()


def can_unlock(user) -> bool:
    return bool(user.is_active and (user.is_superuser or user.has_perm("redemption.supervisor")))


def account_unlock(*, attempt: AccessAttempt, acting_user, reason: str) -> int:
    """Clear the failed sign-ins of an account (and its address) so it can sign in again; recorded."""
    reason = reason_text(reason)
    if not can_unlock(acting_user):
        raise ValidationError("Only a supervisor or an administrator can unlock an account.", code="not_supervisor")
    if not reason:
        raise ValidationError("Say why the account is unlocked.", code="reason_required")
    with transaction.atomic():
        cleared = reset(username=attempt.username, ip=attempt.ip_address, ip_or_username=True)
        SignInEvent.objects.create(
            kind=SignInEvent.Kind.UNLOCKED,
            username=attempt.username or "",
            ip_address=attempt.ip_address or None,
            by=acting_user,
            reason=reason,
        )
    return cleared
