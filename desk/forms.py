"""Sign-in forms: the password, then the authenticator's code where the user has one."""

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.signals import user_login_failed

from desk.services import code_refusal, sign_in_device

CODE_WIDGET = forms.TextInput(
    attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "pattern": "[0-9 ]*", "size": 8}
)


class StaffLoginForm(AdminAuthenticationForm):
    """The admin's sign-in, plus the 6-digit code of the user's authenticator when they have one."""

    otp_token = forms.CharField(
        label="Authentication code",
        required=False,
        max_length=10,
        widget=CODE_WIDGET,
        help_text="The 6 digits your authenticator app shows, if you set up two-factor sign-in.",
    )

    # One answer for a wrong password and a wrong or missing code: a page that said "now the code" would tell
    # whoever guessed the password of an account with an authenticator that the guess was right.
    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "invalid_login": (
            "Please enter the correct username and password for a staff account, and the code your authenticator "
            "shows if you set up two-factor sign-in. Note that both fields may be case-sensitive."
        ),
    }

    def clean(self):
        cleaned = super().clean()
        user = self.get_user()
        self.otp_device = device = sign_in_device(user)
        if device is None:
            return cleaned
        refusal = code_refusal(device, cleaned.get("otp_token") or "")
        if refusal:
            # A wrong code counts as a failed sign-in: guessing codes ends in a lockout like guessing passwords.
            user_login_failed.send(sender=__name__, credentials={"username": user.get_username()}, request=self.request)
            raise self.get_invalid_login_error()
        return cleaned


class AuthenticatorSetupForm(forms.Form):
    """A new authenticator's first code, and the password: a session alone does not change how one signs in."""

    password = forms.CharField(label="Your password", strip=False, widget=forms.PasswordInput)
    token = forms.CharField(label="Code from the app", max_length=10, widget=CODE_WIDGET)


class UnlockForm(forms.Form):
    reason = forms.CharField(label="Why", widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))
