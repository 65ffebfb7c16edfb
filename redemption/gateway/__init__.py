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
from redemption.gateway.budget import BudgetHeldBack, CallBudget, budget_get

__all__ = [
    "BudgetHeldBack",
    "CallBudget",
    "ProviderError",
    "ProviderFinal",
    "ProviderNotFound",
    "ProviderThrottled",
    "ProviderTransient",
    "ProviderUnavailable",
    "ProvisioningGateway",
    "budget_get",
    "gateway_get",
    "request_id_for",
]


@lru_cache(maxsize=4)
def _http_gateway(url: str, token: str, timeout: float, budget: CallBudget) -> ProvisioningGateway:
    from redemption.gateway.http import HttpGateway

    return HttpGateway(base_url=url, token=token, timeout=timeout, budget=budget)


def gateway_get() -> ProvisioningGateway:
    """Return the gateway the settings choose, spending the installation's call budget.

    The HTTP one keeps its connection pool per process.
    """
    from redemption.pipeline import gated

    budget = budget_get()
    if settings.PROVIDER_BACKEND == "http":
        return gated(_http_gateway(settings.PROVIDER_URL, settings.PROVIDER_TOKEN, settings.PROVIDER_TIMEOUT, budget))
    from redemption.gateway.sandbox import SandboxGateway

    return gated(SandboxGateway(budget=budget))
