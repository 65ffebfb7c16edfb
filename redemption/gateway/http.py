"""The provisioning gateway over HTTP, exactly as DOMAIN.md's provider API describes it."""

import email.utils
import html
import json as jsonlib
import logging
import random
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit
from urllib.request import getproxies, proxy_bypass

import urllib3
from urllib3.exceptions import DecodeError, HTTPError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from redemption.gateway.base import (
    INLINE_READ_BUDGET_SECONDS,
    UNAVAILABLE_MESSAGE,
    OrderRequest,
    ProviderFinal,
    ProviderNotFound,
    ProviderSubscription,
    ProviderThrottled,
    ProviderTransient,
    ProviderUnavailable,
    TenantIdentity,
    order_body,
    provider_id,
    subscription_from_item,
)
from redemption.gateway.budget import WAIT_MAX_SECONDS, BudgetHeldBack, CallBudget, budget_local

logger = logging.getLogger(__name__)

# The largest answer read: a provider's answers are a few kilobytes (a tenant's subscriptions, one item).
ANSWER_MAX_BYTES = 5_000_000
# Retry-After when a 429 forgets to say how long.
DEFAULT_RETRY_AFTER = 5.0


def retry_after_seconds(value: str | None) -> float:
    """Parse Retry-After: a number of seconds or an HTTP date."""
    if not value:
        return DEFAULT_RETRY_AFTER
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True)
class Answer:
    """The provider's answer, read whole (and decoded) within the call's time."""

    status_code: int
    reason_phrase: str
    headers: urllib3.HTTPHeaderDict
    content: bytes

    def json(self) -> object:
        return jsonlib.loads(self.content)

    @property
    def text(self) -> str:
        charset = re.search(r"charset=\"?([\w.:-]+)", self.headers.get("Content-Type", ""))
        try:
            return self.content.decode(charset.group(1) if charset else "utf-8", errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")


def provider_message(response: Answer) -> str:
    """Return the provider's own explanation of a refusal, as a person should read it."""
    text = ""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        for candidate in (
            data.get("description"),
            data.get("message"),
            error.get("message") if isinstance(error, dict) else error,
            data.get("detail"),
        ):
            if isinstance(candidate, str) and candidate.strip():
                text = candidate.strip()
                break
    if not text:
        text = _readable(response.text)[:500] or response.reason_phrase
    return f"Provider answered {response.status_code}: {text}"


def _readable(body: str) -> str:
    """Return a body as a person reads it: an HTML error page's words, without its markup, styles or scripts."""
    if "<" not in body:
        return body.strip()
    text = re.sub(r"(?is)<(head|style|script)\b.*?</\1\s*>|<!--.*?-->|<[^>]*>", " ", body)
    return " ".join(html.unescape(text).split())


def subscription_read(item: object, status: int = 200) -> ProviderSubscription:
    """Read one subscription of an answer; a malformed one is an unknown outcome (ProviderTransient), not a crash.

    A write answered this way may well have been applied: the worker looks it up before sending it again.
    """
    try:
        if not isinstance(item, dict):
            raise TypeError("not an object")
        return subscription_from_item(item)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProviderTransient(
            f"The provider answered {status} with a subscription that cannot be read "
            f"({exc.__class__.__name__}: {exc}): {str(item)[:200]}"
        ) from exc


def connection_pool(base_url: str, *, timeout: float) -> urllib3.PoolManager:
    """Return kept-alive connections to the provider, through the proxy the environment names for it.

    Shared safely by a web server's threads. Nothing is retried or redirected behind the caller's back:
    a write is sent again only after it is looked up. Certificates are checked against the system's
    trust store (SSL_CERT_FILE and SSL_CERT_DIR apply); HTTPS_PROXY, HTTP_PROXY and NO_PROXY as usual.
    """
    parts = urlsplit(base_url)
    proxy = getproxies().get(parts.scheme)
    options = {"maxsize": 8, "retries": False, "timeout": timeout}
    if proxy and not proxy_bypass(parts.hostname or ""):
        return urllib3.ProxyManager(proxy, **options)
    return urllib3.PoolManager(**options)


class HttpGateway:
    """Talk to the provider API over HTTP with a bearer token and per-call request IDs."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        timeout: float,
        budget: CallBudget | None = None,
    ):
        self.timeout = timeout
        # Every call takes a slot of the installation's budget first (gateway_get passes it in).
        self.budget = budget or budget_local()
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self.pool = connection_pool(self.base_url, timeout=timeout)

    def _call(
        self,
        method: str,
        path: str,
        *,
        request_id: uuid.UUID,
        json: dict | None = None,
        timeout: float | None = None,
        max_wait: float = WAIT_MAX_SECONDS,
    ) -> dict:
        self.budget.take(max_wait=max_wait)
        headers = {"MS-RequestId": str(request_id), "MS-CorrelationId": str(uuid.uuid4())}
        try:
            answer = self._send(method, path, json=json, headers=headers, timeout=timeout or self.timeout)
        except (Urllib3Timeout, TimeoutError) as exc:
            # urllib3's own, or the socket's where urllib3 passes it on as it is.
            raise ProviderTransient(f"The provider did not answer in time ({exc.__class__.__name__}).") from exc
        except DecodeError as exc:
            # An answer that cannot be decoded (a Content-Encoding it does not follow), and the like.
            raise ProviderTransient(
                f"The provider's answer could not be read ({exc.__class__.__name__}: {exc})."
            ) from exc
        except (HTTPError, OSError) as exc:
            raise ProviderTransient(
                f"The connection to the provider failed ({exc.__class__.__name__}: {exc})."
            ) from exc
        status = answer.status_code
        if status == 429:
            retry_after = retry_after_seconds(answer.headers.get("Retry-After"))
            # The provider throttles the partner, not this process: every caller waits.
            self.budget.pause(seconds=retry_after)
            raise ProviderThrottled("The provider is throttling requests.", retry_after)
        if status >= 500:
            raise ProviderTransient(provider_message(answer))
        if status == 404:
            raise ProviderNotFound(provider_message(answer))
        if status >= 400:
            raise ProviderFinal(provider_message(answer), status)
        try:
            data = answer.json()
        except ValueError as exc:
            raise ProviderTransient(f"The provider answered {status} with a body that is not JSON.") from exc
        if not isinstance(data, dict):
            raise ProviderTransient(f"The provider answered {status} with unexpected JSON.")
        return data

    def _send(self, method: str, path: str, *, json: dict | None, headers: dict, timeout: float) -> Answer:
        """Make one call and read its whole answer within `timeout` seconds, and at most ANSWER_MAX_BYTES.

        A socket timeout bounds each read, not the call: an answer sent a little at a time would
        otherwise hold a worker (and the subscription's lock) or a person waiting for as long as it lasts.
        """
        deadline = time.monotonic() + timeout
        body = None
        headers = {**self.headers, **headers}
        if json is not None:
            body = jsonlib.dumps(json, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        response = self.pool.request(
            method,
            self.base_url + path,
            body=body,
            headers=headers,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            preload_content=False,
            redirect=False,
        )
        complete = False
        try:
            content = bytearray()
            # Decoded (gzip and the like) as it comes: the limit is on what is held, however it was sent.
            while chunk := response.read1(65536):
                content += chunk
                if len(content) > ANSWER_MAX_BYTES:
                    raise ProviderTransient(
                        f"The provider's answer is over {ANSWER_MAX_BYTES:,} bytes: it was not read."
                    )
                if time.monotonic() > deadline:
                    raise ProviderTransient(
                        f"The provider did not answer in time (its answer took over {timeout:g} s)."
                    )
            complete = True
        finally:
            if not complete:
                # Half read: the connection cannot carry another call.
                response.close()
            response.release_conn()
        return Answer(response.status, response.reason or "", response.headers, bytes(content))

    def _read_inline(self, path: str) -> dict:
        """GET while a person waits: retry within about ten seconds, honouring Retry-After."""
        deadline = time.monotonic() + INLINE_READ_BUDGET_SECONDS
        request_id = uuid.uuid4()
        delay = 0.5
        while True:
            remaining = deadline - time.monotonic()
            try:
                return self._call(
                    "GET",
                    path,
                    request_id=request_id,
                    timeout=max(0.5, min(self.timeout, remaining)),
                    max_wait=max(0.0, remaining - 0.5),
                )
            except BudgetHeldBack as exc:
                # No slot comes soon enough for the person waiting.
                wait, last = remaining, exc
            except ProviderThrottled as exc:
                # The budget now holds every call until Retry-After has passed: the next try waits there.
                wait, last = exc.retry_after, exc
            except ProviderTransient as exc:
                wait = delay * random.uniform(0.5, 1.5)
                delay *= 2
                last = exc
            remaining = deadline - time.monotonic()
            if wait >= remaining:
                logger.warning("provider read %s gave up: %s", path, last.message)
                raise ProviderUnavailable(f"{UNAVAILABLE_MESSAGE} ({last.message})") from last
            if not isinstance(last, ProviderThrottled):
                time.sleep(wait)

    def customer_identity(self, *, tenant_id: uuid.UUID) -> TenantIdentity:
        data = self._read_inline(f"/v1/customers/{tenant_id}")
        profile = data.get("companyProfile") or {}
        try:
            return TenantIdentity(
                tenant_id=uuid.UUID(str(profile.get("tenantId") or data["id"])),
                domain=str(profile.get("domain", "")).strip().lower(),
                company_name=str(profile.get("companyName", "")),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ProviderFinal(f"The provider's answer about tenant {tenant_id} is malformed: {exc}") from exc

    def tenant_for_domain(self, *, domain: str) -> TenantIdentity:
        data = self._read_inline(f"/v1/domains/{quote(domain, safe='')}")
        try:
            return TenantIdentity(
                tenant_id=uuid.UUID(str(data["tenantId"])),
                domain=str(data.get("domain", domain)).strip().lower(),
                company_name=str(data.get("companyName", "")),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ProviderFinal(f"The provider's answer about domain {domain} is malformed: {exc}") from exc

    def order_create(self, *, tenant_id: uuid.UUID, request_id: uuid.UUID, order: OrderRequest) -> ProviderSubscription:
        data = self._call("POST", f"/v1/customers/{tenant_id}/orders", request_id=request_id, json=order_body(order))
        items = data.get("lineItems") or []
        if not items or not isinstance(items[0], dict) or not items[0].get("subscriptionId"):
            # The order may well have been applied: an unknown outcome, which the worker looks up.
            raise ProviderTransient(f"The provider's answer to the order names no subscription: {str(data)[:300]}")
        item = items[0]
        try:
            quantity = int(item.get("quantity", order.quantity))
            subscription_id = provider_id(item["subscriptionId"])
        except (TypeError, ValueError) as exc:
            raise ProviderTransient(
                f"The provider answered 201 with an order that cannot be read: {str(data)[:300]}"
            ) from exc
        return ProviderSubscription(
            id=subscription_id,
            offer_id=str(item.get("offerId", order.offer_id)),
            quantity=quantity,
            status="active",
            commitment_end=order.commitment_end,
            friendly_name=order.friendly_name,
        )

    def subscription_list(self, *, tenant_id: uuid.UUID) -> list[ProviderSubscription]:
        data = self._call("GET", f"/v1/customers/{tenant_id}/subscriptions", request_id=uuid.uuid4())
        items = data.get("items")
        if not isinstance(items, list):
            raise ProviderTransient(
                f"The provider answered 200 with a subscription list that cannot be read: {str(data)[:300]}"
            )
        return [subscription_read(item) for item in items]

    def subscription_get(self, *, tenant_id: uuid.UUID, subscription_id: str) -> ProviderSubscription:
        data = self._call(
            "GET", f"/v1/customers/{tenant_id}/subscriptions/{quote(subscription_id, safe='')}", request_id=uuid.uuid4()
        )
        return subscription_read(data)

    def subscription_patch(
        self, *, tenant_id: uuid.UUID, subscription_id: str, request_id: uuid.UUID, changes: dict
    ) -> ProviderSubscription:
        data = self._call(
            "PATCH",
            f"/v1/customers/{tenant_id}/subscriptions/{quote(subscription_id, safe='')}",
            request_id=request_id,
            json=changes,
        )
        return subscription_read(data)
