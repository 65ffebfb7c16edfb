"""Provisioning gateway, chosen by PROVIDER_BACKEND: the sandbox or the HTTP client."""

from functools import lru_cache

from django.conf import settings

from redemption.gateway.base import (
    ProviderError,
    ProviderFinal,
    ProviderNotFound,
    ProviderThrottled,
    ProviderTransient,
    ProviderUnavailable,
    ProvisioningGateway,
    request_id_for,
)

__all__ = [
    "ProviderError",
    "ProviderFinal",
    "ProviderNotFound",
    "ProviderThrottled",
    "ProviderTransient",
    "ProviderUnavailable",
    "ProvisioningGateway",
    "gateway_get",
    "request_id_for",
]


@lru_cache(maxsize=4)
def _http_gateway(url: str, token: str, timeout: float) -> ProvisioningGateway:
    from redemption.gateway.http import HttpGateway

    return HttpGateway(base_url=url, token=token, timeout=timeout)


def gateway_get() -> ProvisioningGateway:
    """Return the gateway the settings choose; the HTTP one keeps its connection pool per process."""
    if settings.PROVIDER_BACKEND == "http":
        return _http_gateway(settings.PROVIDER_URL, settings.PROVIDER_TOKEN, settings.PROVIDER_TIMEOUT)
    from redemption.gateway.sandbox import SandboxGateway

    return SandboxGateway()
