"""The provisioning sandbox: the provider API's behaviour with no network, state in the database."""

import random
import time
import uuid
from datetime import date

from django.conf import settings
from django.db import IntegrityError, transaction

from redemption.gateway.base import (
    INLINE_READ_BUDGET_SECONDS,
    UNAVAILABLE_MESSAGE,
    OrderRequest,
    ProviderFinal,
    ProviderNotFound,
    ProviderSubscription,
    ProviderTransient,
    ProviderUnavailable,
    TenantIdentity,
    subscription_from_item,
)
from redemption.gateway.budget import WAIT_MAX_SECONDS, BudgetHeldBack, CallBudget, budget_get
from redemption.gateway.sandbox_models import SandboxRequest, SandboxSubscription, SandboxTenant


def sandbox_tenant_add(*, tenant_id: uuid.UUID, domain: str, company_name: str) -> SandboxTenant:
    """Make the sandbox provider know a tenant (demo data and tests)."""
    tenant, _ = SandboxTenant.objects.update_or_create(
        tenant_id=tenant_id, defaults={"domain": domain, "company_name": company_name}
    )
    return tenant


# Tenants the sandbox makes up for domains of imported order sheets get stable IDs in this namespace.
SANDBOX_TENANTS = uuid.UUID("3b0c2f4e-7d1a-4f6e-9a2b-5c8d0e1f2a3b")


def sandbox_tenant_for_imported_domain(domain: str) -> SandboxTenant | None:
    """Make the sandbox know a tenant for a *.onmicrosoft.com domain an imported order sheet named.

    So the demo's net-new flow works for a customer imported a minute ago; any other domain stays
    unknown, as it would be at the provider.
    """
    from licensing.models import Order

    order = (
        Order.objects.filter(suggested_tenant_domain=domain)
        .select_related("agreement__customer")
        .order_by("pk")
        .first()
    )
    if order is None or not domain.endswith(".onmicrosoft.com"):
        return None
    tenant, _ = SandboxTenant.objects.get_or_create(
        tenant_id=uuid.uuid5(SANDBOX_TENANTS, domain),
        defaults={"domain": domain, "company_name": order.agreement.customer.name},
    )
    return tenant


class SandboxGateway:
    """Answer like the provider would, optionally slowly or unreliably (SANDBOX_LATENCY_MS, SANDBOX_FAILURE_RATE)."""

    def __init__(
        self, *, latency_ms: int | None = None, failure_rate: float | None = None, budget: CallBudget | None = None
    ) -> None:
        self.latency = (settings.SANDBOX_LATENCY_MS if latency_ms is None else latency_ms) / 1000
        self.failure_rate = settings.SANDBOX_FAILURE_RATE if failure_rate is None else failure_rate
        # Pretend calls spend the installation's budget like real ones, so demos behave as production does.
        self.budget = budget or budget_get()

    def _wait(self, max_wait: float = WAIT_MAX_SECONDS) -> None:
        self.budget.take(max_wait=max_wait)
        if self.latency:
            time.sleep(self.latency)

    def _maybe_fail(self, when: str) -> None:
        # Half the injected failures happen before the call is applied, half after: the caller cannot tell.
        if self.failure_rate and random.random() < self.failure_rate / 2:
            raise ProviderTransient(f"Sandbox: injected failure {when} the call was applied (connection dropped).")

    def customer_identity(self, *, tenant_id: uuid.UUID) -> TenantIdentity:
        self._read_wait()
        tenant = SandboxTenant.objects.filter(tenant_id=tenant_id).first()
        if tenant is None:
            raise ProviderNotFound(f"Provider answered 404: no customer with tenant ID {tenant_id}.")
        return TenantIdentity(tenant_id=tenant.tenant_id, domain=tenant.domain, company_name=tenant.company_name)

    def tenant_for_domain(self, *, domain: str) -> TenantIdentity:
        self._read_wait()
        tenant = SandboxTenant.objects.filter(domain=domain).first() or sandbox_tenant_for_imported_domain(domain)
        if tenant is None:
            raise ProviderNotFound(f"Provider answered 404: no tenant has the default domain {domain}.")
        return TenantIdentity(tenant_id=tenant.tenant_id, domain=tenant.domain, company_name=tenant.company_name)

    def _read_wait(self) -> None:
        """Wait for a read a person waits for: retried inline, then ProviderUnavailable."""
        deadline = time.monotonic() + INLINE_READ_BUDGET_SECONDS
        delay = 0.5
        while True:
            try:
                self._wait(max_wait=max(0.0, deadline - time.monotonic() - 0.5))
                self._maybe_fail("before")
                break
            except BudgetHeldBack as exc:
                raise ProviderUnavailable(f"{UNAVAILABLE_MESSAGE} ({exc.message})") from exc
            except ProviderTransient as exc:
                if time.monotonic() + delay >= deadline:
                    raise ProviderUnavailable(f"{UNAVAILABLE_MESSAGE} ({exc.message})") from exc
                time.sleep(delay)
                delay *= 2

    def _write(self, request_id: uuid.UUID, apply) -> dict:
        """Apply a write once per MS-RequestId; a repeat gets the first answer."""
        self._wait()
        self._maybe_fail("before")
        stored = SandboxRequest.objects.filter(request_id=request_id).first()
        if stored is None:
            try:
                with transaction.atomic():
                    status_code, body = apply()
                    SandboxRequest.objects.create(request_id=request_id, status_code=status_code, body=body)
            except IntegrityError:
                # The same request ran concurrently and committed first: answer as it did.
                pass
            stored = SandboxRequest.objects.get(request_id=request_id)
        self._maybe_fail("after")
        if stored.status_code == 404:
            raise ProviderNotFound(f"Provider answered 404: {stored.body.get('description')}")
        if stored.status_code >= 400:
            raise ProviderFinal(f"Provider answered {stored.status_code}: {stored.body.get('description')}")
        return stored.body

    def order_create(self, *, tenant_id: uuid.UUID, request_id: uuid.UUID, order: OrderRequest) -> ProviderSubscription:
        def apply() -> tuple[int, dict]:
            tenant = SandboxTenant.objects.filter(tenant_id=tenant_id).first()
            if tenant is None:
                return 404, {"code": 404, "description": f"No customer with tenant ID {tenant_id}."}
            if order.quantity <= 0:
                return 400, {"code": 400, "description": "quantity must be a positive number of seats."}
            subscription = SandboxSubscription.objects.create(
                id=str(uuid.uuid4()),
                tenant=tenant,
                offer_id=order.offer_id,
                quantity=order.quantity,
                commitment_end=order.commitment_end,
                friendly_name=order.friendly_name,
                partner_id=order.partner_id,
            )
            line = {"lineItemNumber": 0, "offerId": order.offer_id, "quantity": order.quantity}
            return 201, {
                "id": str(uuid.uuid4()),
                "status": "completed",
                "lineItems": [{**line, "subscriptionId": subscription.id}],
            }

        body = self._write(request_id, apply)
        item = body["lineItems"][0]
        return ProviderSubscription(
            id=item["subscriptionId"],
            offer_id=item["offerId"],
            quantity=item["quantity"],
            status="active",
            commitment_end=order.commitment_end,
            friendly_name=order.friendly_name,
        )

    def subscription_list(self, *, tenant_id: uuid.UUID) -> list[ProviderSubscription]:
        self._wait()
        if not SandboxTenant.objects.filter(tenant_id=tenant_id).exists():
            raise ProviderNotFound(f"Provider answered 404: no customer with tenant ID {tenant_id}.")
        return [subscription_from_item(s.as_item()) for s in SandboxSubscription.objects.filter(tenant_id=tenant_id)]

    def subscription_get(self, *, tenant_id: uuid.UUID, subscription_id: str) -> ProviderSubscription:
        self._wait()
        subscription = SandboxSubscription.objects.filter(tenant_id=tenant_id, id=subscription_id).first()
        if subscription is None:
            raise ProviderNotFound(f"Provider answered 404: no subscription {subscription_id} on {tenant_id}.")
        return subscription_from_item(subscription.as_item())

    def subscription_patch(
        self, *, tenant_id: uuid.UUID, subscription_id: str, request_id: uuid.UUID, changes: dict
    ) -> ProviderSubscription:
        def apply() -> tuple[int, dict]:
            subscription = (
                SandboxSubscription.objects.select_for_update().filter(tenant_id=tenant_id, id=subscription_id).first()
            )
            if subscription is None:
                return 404, {"code": 404, "description": f"No subscription {subscription_id} on {tenant_id}."}
            error = patch_error(changes)
            if error:
                return 400, {"code": 400, "description": error}
            if "quantity" in changes:
                subscription.quantity = changes["quantity"]
            if "commitmentEndDate" in changes:
                subscription.commitment_end = date.fromisoformat(changes["commitmentEndDate"])
            if "status" in changes:
                subscription.status = changes["status"]
            subscription.save()
            return 200, subscription.as_item()

        return subscription_from_item(self._write(request_id, apply))


def patch_error(changes: dict) -> str:
    """Return why a PATCH body breaks the contract, or an empty string."""
    if not changes or set(changes) - {"quantity", "commitmentEndDate", "status"}:
        return "A PATCH sets quantity, commitmentEndDate or status."
    quantity = changes.get("quantity", 1)
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity <= 0:
        return "quantity must be a positive whole number."
    if "commitmentEndDate" in changes:
        try:
            date.fromisoformat(str(changes["commitmentEndDate"]))
        except ValueError:
            return "commitmentEndDate must be YYYY-MM-DD."
    if changes.get("status", "active") not in {"active", "suspended"}:
        return "status must be active or suspended."
    return ""
