"""The HTTP client against a real local server that follows the provider API contract."""

import http.server
import json
import threading
import time
import uuid
from datetime import date

import pytest

from redemption.gateway.base import (
    OrderRequest,
    ProviderFinal,
    ProviderNotFound,
    ProviderThrottled,
    ProviderTransient,
    ProviderUnavailable,
    request_id_for,
)
from redemption.gateway.http import HttpGateway
from redemption.testing.provider_server import Fault, ProviderServer

TENANT = uuid.UUID("0f6f1c3e-8a52-4c4b-b3a4-0d8e7c1f2a11")
ORDER = OrderRequest(
    reference_customer_id=str(TENANT),
    offer_id="Q5Y-00003",
    quantity=25,
    commitment_end=date(2027, 11, 1),
    friendly_name="O365 E3",
    partner_id="4412345",
)


@pytest.fixture
def server():
    server = ProviderServer(token="secret").start()
    server.add_tenant(TENANT, "northwind.onmicrosoft.com", "Northwind Traders")
    yield server
    server.stop()


@pytest.fixture
def client(server):
    return HttpGateway(base_url=server.url, token="secret", timeout=0.5)


def test_identity_is_read_with_the_bearer_token_and_fresh_ids(server, client):
    identity = client.customer_identity(tenant_id=TENANT)
    assert (identity.tenant_id, identity.domain, identity.company_name) == (
        TENANT,
        "northwind.onmicrosoft.com",
        "Northwind Traders",
    )
    call = server.state.calls[-1]
    assert call["authorization"] == "Bearer secret"
    assert uuid.UUID(call["request_id"]) and uuid.UUID(call["correlation_id"])


def test_unknown_tenant_is_not_found(client):
    with pytest.raises(ProviderNotFound, match="404"):
        client.customer_identity(tenant_id=uuid.uuid4())


def test_wrong_token_is_a_final_error_with_the_providers_message(server):
    with pytest.raises(ProviderFinal, match="Missing or wrong bearer token"):
        HttpGateway(base_url=server.url, token="nope", timeout=0.5).customer_identity(tenant_id=TENANT)


def test_identity_read_retries_through_throttling_honouring_retry_after(server, client):
    server.inject(Fault("throttle", times=2, retry_after=0.2))
    assert client.customer_identity(tenant_id=TENANT).domain == "northwind.onmicrosoft.com"
    assert len(server.state.calls) == 3


def test_identity_read_gives_up_with_try_again_when_the_provider_stays_down(server, client):
    server.inject(Fault("throttle", times=5, retry_after=30))
    with pytest.raises(ProviderUnavailable, match="try again"):
        client.customer_identity(tenant_id=TENANT)


def test_throttled_write_reports_retry_after(server, client):
    server.inject(Fault("throttle", retry_after=7, method="POST"))
    with pytest.raises(ProviderThrottled) as throttled:
        client.order_create(tenant_id=TENANT, request_id=uuid.uuid4(), order=ORDER)
    assert throttled.value.retry_after == 7
    assert server.subscriptions_of(TENANT) == []


def test_5xx_is_transient(server, client):
    server.inject(Fault("error", status=503, method="POST", message="Service busy"))
    with pytest.raises(ProviderTransient, match="Service busy"):
        client.order_create(tenant_id=TENANT, request_id=uuid.uuid4(), order=ORDER)


def test_other_4xx_is_final_with_the_providers_message(server, client):
    server.inject(Fault("final", status=409, method="POST", message="Offer Q5Y-00003 is not sold in this market"))
    with pytest.raises(ProviderFinal, match="not sold in this market"):
        client.order_create(tenant_id=TENANT, request_id=uuid.uuid4(), order=ORDER)


def test_timeout_is_transient_and_the_retry_with_the_same_request_id_adds_nothing(server, client):
    request_id = request_id_for(uuid.uuid4(), "order:0")
    server.inject(Fault("delay", seconds=1.5, method="POST"))
    with pytest.raises(ProviderTransient, match="did not answer in time"):
        client.order_create(tenant_id=TENANT, request_id=request_id, order=ORDER)
    first = server.subscriptions_of(TENANT)
    again = client.order_create(tenant_id=TENANT, request_id=request_id, order=ORDER)
    assert [s["id"] for s in server.subscriptions_of(TENANT)] == [again.id] == [first[0]["id"]]


def test_dropped_connection_after_the_call_applied_replays_on_retry(server, client):
    request_id = request_id_for(uuid.uuid4(), "order:0")
    server.inject(Fault("drop_after_apply", method="POST"))
    with pytest.raises(ProviderTransient, match="connection to the provider failed"):
        client.order_create(tenant_id=TENANT, request_id=request_id, order=ORDER)
    subscription = client.order_create(tenant_id=TENANT, request_id=request_id, order=ORDER)
    assert len(server.subscriptions_of(TENANT)) == 1
    assert subscription.quantity == 25
    posts = [c for c in server.state.calls if c["method"] == "POST"]
    assert posts[0]["request_id"] == posts[1]["request_id"] == str(request_id)
    assert posts[0]["correlation_id"] != posts[1]["correlation_id"]


def test_patch_sets_absolute_values_and_a_replayed_request_id_is_not_applied_twice(server, client):
    sub_id = server.add_subscription(TENANT, offer_id="Q5Y-00003", quantity=10, end=date(2027, 6, 30))
    request_id = uuid.uuid4()
    client.subscription_patch(tenant_id=TENANT, subscription_id=sub_id, request_id=request_id, changes={"quantity": 15})
    server.add_subscription(TENANT, offer_id="Q5Y-00003", quantity=12, end=date(2027, 6, 30), sub_id=sub_id)
    replay = client.subscription_patch(
        tenant_id=TENANT, subscription_id=sub_id, request_id=request_id, changes={"quantity": 15}
    )
    assert replay.quantity == 15
    assert client.subscription_get(tenant_id=TENANT, subscription_id=sub_id).quantity == 12
    patched = client.subscription_patch(
        tenant_id=TENANT, subscription_id=sub_id, request_id=uuid.uuid4(), changes={"commitmentEndDate": "2028-01-31"}
    )
    assert patched.commitment_end == date(2028, 1, 31)
    assert [s.id for s in client.subscription_list(tenant_id=TENANT)] == [sub_id]


def test_connection_refused_is_transient():
    with pytest.raises(ProviderTransient):
        HttpGateway(base_url="http://127.0.0.1:9", token="x", timeout=0.5).order_create(
            tenant_id=TENANT, request_id=uuid.uuid4(), order=ORDER
        )


class _RecordingProxy(http.server.BaseHTTPRequestHandler):
    """A forward proxy that answers every request itself, with a customer, and records what it was asked."""

    asked: list[str] = []

    def do_GET(self):
        self.asked.append(self.path)
        body = json.dumps({"id": str(TENANT), "companyProfile": {"tenantId": str(TENANT), "domain": "via.proxy"}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


def test_calls_go_through_the_proxy_the_environment_names_unless_no_proxy_excludes_the_provider(server, monkeypatch):
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RecordingProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        proxied = HttpGateway(base_url=server.url, token="secret", timeout=0.5)
        assert proxied.customer_identity(tenant_id=TENANT).domain == "via.proxy"
        assert _RecordingProxy.asked == [f"{server.url}/v1/customers/{TENANT}"]

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        direct = HttpGateway(base_url=server.url, token="secret", timeout=0.5)
        assert direct.customer_identity(tenant_id=TENANT).domain == "northwind.onmicrosoft.com"
        assert len(_RecordingProxy.asked) == 1
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_subscriptions_are_listed_with_the_friendly_name_of_the_order_that_created_them(client):
    created = client.order_create(tenant_id=TENANT, request_id=uuid.uuid4(), order=ORDER)
    listed = {s.id: s for s in client.subscription_list(tenant_id=TENANT)}
    assert listed[created.id].friendly_name == "O365 E3"
    assert client.subscription_get(tenant_id=TENANT, subscription_id=created.id).friendly_name == "O365 E3"


def test_a_tenant_is_found_by_its_default_domain(client):
    identity = client.tenant_for_domain(domain="northwind.onmicrosoft.com")
    assert (identity.tenant_id, identity.company_name) == (TENANT, "Northwind Traders")
    with pytest.raises(ProviderNotFound):
        client.tenant_for_domain(domain="nobody.onmicrosoft.com")


@pytest.mark.parametrize(
    "body",
    [
        {"quantity": 15},  # no id
        {"id": "x", "quantity": "fifteen"},
        {"id": "x", "quantity": 15, "commitmentEndDate": "next June"},
        ["not", "an", "item"],
        b"<html>Gateway OK</html>",
        {"id": "x" * 256, "quantity": 15},
    ],
    ids=["no id", "quantity not a number", "date not a date", "not an object", "not JSON", "id too long to store"],
)
def test_a_change_answered_with_a_malformed_subscription_is_an_unknown_outcome_not_a_crash(server, client, body):
    sub_id = server.add_subscription(TENANT, offer_id="Q5Y-00003", quantity=10, end=date(2027, 6, 30))
    server.inject(Fault("garbled", method="PATCH", body=body))
    with pytest.raises(ProviderTransient, match="answered 200 with") as raised:
        client.subscription_patch(
            tenant_id=TENANT, subscription_id=sub_id, request_id=uuid.uuid4(), changes={"quantity": 15}
        )
    # The change went through: a transient error, so the worker looks it up before sending anything again.
    assert [s["quantity"] for s in server.subscriptions_of(TENANT)] == [15]
    assert len(str(raised.value)) < 500


@pytest.mark.parametrize("body", [{"items": None}, {"items": {"id": "x"}}, {"items": [{"quantity": 1}]}])
def test_a_malformed_subscription_list_is_transient(server, client, body):
    server.inject(Fault("garbled", method="GET", path_contains="/subscriptions", body=body))
    with pytest.raises(ProviderTransient, match="answered 200 with"):
        client.subscription_list(tenant_id=TENANT)


@pytest.mark.parametrize(
    "body",
    [{"id": str(TENANT), "companyProfile": ["northwind"]}, {"companyProfile": {"domain": "x"}}, {"tenantId": 7}],
    ids=["profile not an object", "no tenant id", "tenant id not a UUID"],
)
def test_an_identity_answer_that_cannot_be_read_is_a_clear_final_error(server, client, body):
    server.inject(Fault("garbled", method="GET", body=body))
    with pytest.raises(ProviderFinal, match="malformed"):
        client.customer_identity(tenant_id=TENANT)
    server.inject(Fault("garbled", method="GET", body=body))
    with pytest.raises(ProviderFinal, match="malformed"):
        client.tenant_for_domain(domain="northwind.onmicrosoft.com")


def test_a_subscription_id_is_sent_whole_however_long_and_whatever_it_holds(server, client):
    odd = "sub+" + "/".join(uuid.uuid4().hex for _ in range(3)) + "==?#x"
    server.add_subscription(TENANT, offer_id="Q5Y-00003", quantity=10, end=date(2027, 6, 30), sub_id=odd)
    patched = client.subscription_patch(
        tenant_id=TENANT, subscription_id=odd, request_id=uuid.uuid4(), changes={"quantity": 12}
    )
    assert patched.id == odd
    assert client.subscription_get(tenant_id=TENANT, subscription_id=odd).quantity == 12


def test_an_html_error_page_is_reported_by_its_words_not_its_markup(server, client):
    page = (
        b"<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title>"
        b"<style>body { width: 35em; margin: 0 auto; "
        + b"font-family: Tahoma, Verdana, Arial, sans-serif; }"
        * 10
        + b"</style></head><body><h1>An error occurred.</h1><p>The service is currently unavailable.&nbsp;"
        b"Please try again later.</p></body></html>"
    )
    server.inject(Fault("error", status=503, method="POST", body=page))
    with pytest.raises(ProviderTransient) as raised:
        client.order_create(tenant_id=TENANT, request_id=uuid.uuid4(), order=ORDER)
    assert str(raised.value) == (
        # The title repeats what the status line said: the page's words start at its body.
        "Provider answered 503: An error occurred. The service is currently unavailable. Please try again later."
    )


def test_an_answer_sent_a_little_at_a_time_is_given_up_after_the_timeout_not_waited_for(server, client):
    # Eight pieces 0.2 s apart: each read is quick, the answer takes 1.6 s against a timeout of 0.5 s.
    server.inject(Fault("trickle", method="POST", seconds=0.2))
    started = time.monotonic()
    with pytest.raises(ProviderTransient, match="did not answer in time"):
        client.order_create(tenant_id=TENANT, request_id=uuid.uuid4(), order=ORDER)
    assert time.monotonic() - started < 1.2
    # The order went through: an unknown outcome, which the worker looks up before sending it again.
    assert len(server.subscriptions_of(TENANT)) == 1


def test_an_answer_that_cannot_be_decoded_is_an_unknown_outcome_not_a_crash(server, client):
    sub_id = server.add_subscription(TENANT, offer_id="Q5Y-00003", quantity=10, end=date(2027, 6, 30))
    server.inject(Fault("garbled", method="PATCH", body=b"not gzip at all", headers={"Content-Encoding": "gzip"}))
    with pytest.raises(ProviderTransient, match="could not be read"):
        client.subscription_patch(
            tenant_id=TENANT, subscription_id=sub_id, request_id=uuid.uuid4(), changes={"quantity": 15}
        )
    assert [s["quantity"] for s in server.subscriptions_of(TENANT)] == [15]
