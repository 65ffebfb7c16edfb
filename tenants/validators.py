"""Validators for the identifiers staff and partners type."""

import re

from django.core.exceptions import ValidationError

ONMICROSOFT_SUFFIX = ".onmicrosoft.com"
DEFAULT_DOMAIN_RE = re.compile(r"^[a-z0-9]{1,27}\.onmicrosoft\.com$")
# The same rule, for database CHECK constraints.
DEFAULT_DOMAIN_REGEX = r"^[a-z0-9]{1,27}\.onmicrosoft\.com$"


def normalize_domain(value: str) -> str:
    """Return a typed tenant domain trimmed and lowercased, as Microsoft stores it."""
    return (value or "").strip().lower()


def validate_default_domain(value: str) -> None:
    """Refuse anything but `name.onmicrosoft.com` with 1-27 lowercase letters and digits."""
    if not DEFAULT_DOMAIN_RE.match(value or ""):
        raise ValidationError(
            "%(value)s is not a default tenant domain: expected name.onmicrosoft.com, where name "
            "is 1 to 27 lowercase letters and digits.",
            code="invalid_default_domain",
            params={"value": value},
        )
