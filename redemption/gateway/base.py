"""The provisioning gateway: one interface to the provider, whatever carries the calls."""

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Protocol

# The longest subscription ID the provider may give that we store whole (the contract sets no format).
PROVIDER_ID_MAX_LENGTH = 255


class ProviderError(Exception):
    """Something went wrong talking to the provider."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProviderTransient(ProviderError):
    """A 5xx, a timeout or a broken connection: the same call may succeed later."""


class ProviderThrottled(ProviderTransient):
    """A 429: wait `retry_after` seconds, then try again."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderUnavailable(ProviderTransient):
    """A read a person waits for failed for about ten seconds: they should try again later."""


class ProviderFinal(ProviderError):
    """A 4xx other than 429: the provider refused, repeating the call will not help."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


class ProviderNotFound(ProviderFinal):
    """A 404: the provider does not know the tenant or subscription."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 404)


@dataclass(frozen=True)
class TenantIdentity:
    tenant_id: uuid.UUID
    domain: str
    company_name: str


@dataclass(frozen=True)
class ProviderSubscription:
    id: str
    offer_id: str
    quantity: int
    status: str
    commitment_end: date | None
    # The friendlyName of the order line that created it (ours carry the allocation's key).
    friendly_name: str = ""


@dataclass(frozen=True)
class OrderRequest:
    """One line of new seats: what `POST .../orders` carries."""

    reference_customer_id: str
    offer_id: str
    quantity: int
    commitment_end: date
    friendly_name: str
    partner_id: str


# Reads a person waits for are retried inline within this many seconds (DOMAIN.md).
INLINE_READ_BUDGET_SECONDS = 10.0
UNAVAILABLE_MESSAGE = "The provider is unavailable right now and nothing was saved: try again in a minute."


class ProvisioningGateway(Protocol):
    def customer_identity(self, *, tenant_id: uuid.UUID) -> TenantIdentity:
        """Return the tenant as the provider reports it (retried inline, then ProviderUnavailable)."""

    def tenant_for_domain(self, *, domain: str) -> TenantIdentity:
        """Return the tenant whose default domain this is (retried inline, then ProviderUnavailable)."""

    def order_create(self, *, tenant_id: uuid.UUID, request_id: uuid.UUID, order: OrderRequest) -> ProviderSubscription:
        """Order new seats: the provider creates one subscription."""

    def subscription_list(self, *, tenant_id: uuid.UUID) -> list[ProviderSubscription]:
        """Return the tenant's subscriptions."""

    def subscription_get(self, *, tenant_id: uuid.UUID, subscription_id: str) -> ProviderSubscription:
        """Return one subscription."""

    def subscription_patch(
        self, *, tenant_id: uuid.UUID, subscription_id: str, request_id: uuid.UUID, changes: dict
    ) -> ProviderSubscription:
        """Set absolute values (quantity, commitmentEndDate or status) on a subscription."""


def request_id_for(idempotency_key: uuid.UUID, step: str) -> uuid.UUID:
    """Return the MS-RequestId of one step of one allocation: the same on every retry (rule 6)."""
    return uuid.uuid5(idempotency_key, step)


def provider_id(value) -> str:
    """Return a subscription ID of the provider's as text; refuse one too long to be stored whole."""
    text = str(value)
    if not text or len(text) > PROVIDER_ID_MAX_LENGTH:
        raise ValueError(f"a subscription ID must be 1 to {PROVIDER_ID_MAX_LENGTH} characters, not {len(text)}")
    return text


def subscription_from_item(item: dict) -> ProviderSubscription:
    """Build a ProviderSubscription from the provider's JSON item."""
    end = item.get("commitmentEndDate")
    return ProviderSubscription(
        id=provider_id(item["id"]),
        offer_id=str(item.get("offerId", "")),
        quantity=int(item.get("quantity", 0)),
        status=str(item.get("status", "")),
        commitment_end=date.fromisoformat(end[:10]) if end else None,
        friendly_name=str(item.get("friendlyName") or ""),
    )


def order_body(order: OrderRequest) -> dict:
    """Return the JSON body of `POST /v1/customers/{tenant_id}/orders`."""
    return {
        "referenceCustomerId": order.reference_customer_id,
        "lineItems": [
            {
                "lineItemNumber": 0,
                "offerId": order.offer_id,
                "quantity": order.quantity,
                "commitmentEndDate": order.commitment_end.isoformat(),
                "friendlyName": order.friendly_name,
                "partnerIdOnRecord": order.partner_id,
            }
        ],
    }
