"""A local HTTP server that follows the provider API contract, for tests and benchmarks.

Run it alone with `python -m redemption.testing.provider_server --port 9000 --latency-ms 50`.
Faults are scripted per call: throttling, 5xx, slow answers and a connection dropped after the call
was applied. A repeated MS-RequestId on a write gets the first answer without applying it again.
With a rate limit (`--rate-limit 40`) it throttles as a provider does: a token bucket of
`--rate-burst` calls refilled at the limit, and a 429 with Retry-After (whole seconds) beyond it.
Every call is logged with the moment it arrived (time.monotonic) and the status it was answered with.
"""

import argparse
import contextlib
import json
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

CUSTOMER_RE = re.compile(r"^/v1/customers/(?P<tenant>[^/]+)$")
DOMAIN_RE = re.compile(r"^/v1/domains/(?P<domain>[^/]+)$")
ORDERS_RE = re.compile(r"^/v1/customers/(?P<tenant>[^/]+)/orders$")
SUBSCRIPTIONS_RE = re.compile(r"^/v1/customers/(?P<tenant>[^/]+)/subscriptions$")
SUBSCRIPTION_RE = re.compile(r"^/v1/customers/(?P<tenant>[^/]+)/subscriptions/(?P<sub>[^/]+)$")


@dataclass
class Fault:
    """What to do to the next `times` calls matching `method` (and `path_contains`)."""

    # "throttle", "error", "delay", "drop_after_apply", "drop_before_apply", "final",
    # "garbled" (the call is applied, then answered 200 with `body` instead of what it did);
    # "error" answers `status` with `body` when one is given; "trickle" sends the answer in pieces `seconds` apart
    kind: str
    times: int = 1
    method: str = ""
    path_contains: str = ""
    retry_after: float = 1
    status: int = 503
    seconds: float = 0.0
    message: str = "Injected failure"
    body: object = None
    headers: dict | None = None


class Subscriptions(dict):
    """Subscriptions by ID (each item names its tenant), indexed by tenant as a provider looks them up.

    Tests change the state behind the application's back (set, delete): the index follows both.
    """

    def __init__(self) -> None:
        super().__init__()
        self.by_tenant: dict[str, dict[str, dict]] = {}

    def __setitem__(self, sub_id: str, item: dict) -> None:
        self.pop(sub_id, None)
        super().__setitem__(sub_id, item)
        self.by_tenant.setdefault(item["tenant"], {})[sub_id] = item

    def __delitem__(self, sub_id: str) -> None:
        self.pop(sub_id)

    def pop(self, sub_id: str, *default):
        item = super().pop(sub_id, *default)
        if isinstance(item, dict):
            self.by_tenant.get(item["tenant"], {}).pop(sub_id, None)
        return item

    def of_tenant(self, tenant: str) -> list[dict]:
        return list(self.by_tenant.get(tenant, {}).values())


@dataclass
class ProviderState:
    tenants: dict[str, dict] = field(default_factory=dict)
    subscriptions: Subscriptions = field(default_factory=Subscriptions)  # id -> item + tenant
    answers: dict[str, tuple[int, dict]] = field(default_factory=dict)  # MS-RequestId -> first answer
    calls: list[dict] = field(default_factory=list)  # each with "at" (monotonic) and "status" once answered
    applied_writes: int = 0
    in_flight: int = 0  # calls arrived and not answered yet
    most_in_flight: int = 0


class ProviderServer:
    """The provider, in-process: start(), point PROVIDER_URL at .url, inspect .state, stop()."""

    def __init__(
        self,
        *,
        token: str = "",
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: float = 0.0,
        rate_burst: int = 1,
    ):
        self.token = token
        self.latency = latency
        self.state = ProviderState()
        self.faults: list[Fault] = []
        self.lock = threading.Lock()
        self.rate_limit_set(rate_limit, burst=rate_burst)
        self.httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self.httpd.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "ProviderServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_tenant(self, tenant_id, domain: str, company_name: str) -> None:
        with self.lock:
            self.state.tenants[str(tenant_id)] = {"domain": domain, "companyName": company_name}

    def add_subscription(self, tenant_id, *, offer_id: str, quantity: int, end: date, sub_id: str | None = None) -> str:
        sub_id = sub_id or str(uuid.uuid4())
        with self.lock:
            self.state.subscriptions[sub_id] = {
                "id": sub_id,
                "tenant": str(tenant_id),
                "offerId": offer_id,
                "quantity": quantity,
                "status": "active",
                "commitmentEndDate": end.isoformat(),
            }
        return sub_id

    def rate_limit_set(self, rate: float, *, burst: int = 1) -> None:
        """Throttle beyond `rate` calls per second (0: never), allowing `burst` at once after a quiet spell."""
        with self.lock:
            self.rate_limit = rate
            self.rate_burst = burst
            self.tokens = float(burst)
            self.refilled = time.monotonic()

    def _admit(self, now: float) -> float:
        """Take a token for a call arriving now: 0, or (refused) the seconds until a token is free."""
        with self.lock:
            if not self.rate_limit:
                return 0.0
            self.tokens = min(self.rate_burst, self.tokens + (now - self.refilled) * self.rate_limit)
            self.refilled = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate_limit

    def inject(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    def subscriptions_of(self, tenant_id) -> list[dict]:
        with self.lock:
            return [dict(s) for s in self.state.subscriptions.of_tenant(str(tenant_id))]

    def total_quantity(self) -> int:
        with self.lock:
            return sum(s["quantity"] for s in self.state.subscriptions.values() if s["status"] == "active")

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.method and fault.method != method:
                    continue
                if fault.path_contains and fault.path_contains not in path:
                    continue
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    # --- the API -------------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        """Answer one authorised call; writes hold the lock so each is applied atomically."""
        with self.lock:
            if match := CUSTOMER_RE.match(path):
                if method != "GET":
                    return 405, {"code": 405, "description": "Method not allowed."}
                tenant = self.state.tenants.get(match["tenant"])
                if tenant is None:
                    return 404, {"code": 404, "description": f"No customer with tenant ID {match['tenant']}."}
                return 200, {"id": match["tenant"], "companyProfile": {"tenantId": match["tenant"], **tenant}}
            if match := DOMAIN_RE.match(path):
                if method != "GET":
                    return 405, {"code": 405, "description": "Method not allowed."}
                domain = unquote(match["domain"]).lower()
                found = next((tid for tid, t in self.state.tenants.items() if t["domain"] == domain), None)
                if found is None:
                    return 404, {"code": 404, "description": f"No tenant has the default domain {domain}."}
                tenant = self.state.tenants[found]
                return 200, {"tenantId": found, "domain": domain, "companyName": tenant["companyName"]}
            if match := ORDERS_RE.match(path):
                if method != "POST":
                    return 405, {"code": 405, "description": "Method not allowed."}
                return self._order(match["tenant"], body or {})
            if match := SUBSCRIPTIONS_RE.match(path):
                if match["tenant"] not in self.state.tenants:
                    return 404, {"code": 404, "description": f"No customer with tenant ID {match['tenant']}."}
                items = [self._item(s) for s in self.state.subscriptions.of_tenant(match["tenant"])]
                return 200, {"totalCount": len(items), "items": items}
            if match := SUBSCRIPTION_RE.match(path):
                sub = self.state.subscriptions.get(unquote(match["sub"]))
                if sub is None or sub["tenant"] != match["tenant"]:
                    return 404, {"code": 404, "description": f"No subscription {match['sub']}."}
                if method == "GET":
                    return 200, self._item(sub)
                if method == "PATCH":
                    return self._patch(sub, body or {})
                return 405, {"code": 405, "description": "Method not allowed."}
        return 404, {"code": 404, "description": f"No such resource {path}."}

    @staticmethod
    def _item(sub: dict) -> dict:
        return {k: sub.get(k, "") for k in ("id", "offerId", "quantity", "status", "commitmentEndDate", "friendlyName")}

    def _order(self, tenant_id: str, body: dict) -> tuple[int, dict]:
        if tenant_id not in self.state.tenants:
            return 404, {"code": 404, "description": f"No customer with tenant ID {tenant_id}."}
        items = body.get("lineItems")
        if not isinstance(items, list) or not items:
            return 400, {"code": 400, "description": "lineItems is required."}
        answered = []
        for item in items:
            quantity = item.get("quantity")
            if not isinstance(quantity, int) or quantity <= 0 or not item.get("offerId"):
                return 400, {"code": 400, "description": "Each line item needs an offerId and a positive quantity."}
            try:
                end = date.fromisoformat(item["commitmentEndDate"]).isoformat()
            except (KeyError, TypeError, ValueError):
                return 400, {"code": 400, "description": "commitmentEndDate must be YYYY-MM-DD."}
        for item in items:
            sub_id = str(uuid.uuid4())
            self.state.subscriptions[sub_id] = {
                "id": sub_id,
                "tenant": tenant_id,
                "offerId": item["offerId"],
                "quantity": item["quantity"],
                "status": "active",
                "commitmentEndDate": end,
                "friendlyName": str(item.get("friendlyName") or ""),
            }
            answered.append(
                {
                    "lineItemNumber": item.get("lineItemNumber", 0),
                    "offerId": item["offerId"],
                    "quantity": item["quantity"],
                    "subscriptionId": sub_id,
                }
            )
        self.state.applied_writes += 1
        return 201, {"id": str(uuid.uuid4()), "status": "completed", "lineItems": answered}

    def _patch(self, sub: dict, body: dict) -> tuple[int, dict]:
        if not body or set(body) - {"quantity", "commitmentEndDate", "status"}:
            return 400, {"code": 400, "description": "A PATCH sets quantity, commitmentEndDate or status."}
        if "quantity" in body and (not isinstance(body["quantity"], int) or body["quantity"] <= 0):
            return 400, {"code": 400, "description": "quantity must be a positive whole number."}
        if "status" in body and body["status"] not in {"active", "suspended"}:
            return 400, {"code": 400, "description": "status must be active or suspended."}
        if "commitmentEndDate" in body:
            try:
                date.fromisoformat(body["commitmentEndDate"])
            except (TypeError, ValueError):
                return 400, {"code": 400, "description": "commitmentEndDate must be YYYY-MM-DD."}
        sub.update(body)
        self.state.applied_writes += 1
        return 200, self._item(sub)

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            counted = False  # this call counts among those in flight
            # Headers and body go out in two writes: with Nagle's algorithm the body would wait for the
            # client's delayed ACK (40 ms on Linux), more than most of the latency being simulated.
            disable_nagle_algorithm = True

            def log_message(self, format, *args) -> None:  # quiet: tests read state, not logs
                pass

            def parse_request(self) -> bool:
                # The request line has just been read: the latency counts from here, so the answer
                # comes `latency` after the request did, this server's own reading included.
                self.received = time.monotonic()
                return super().parse_request()

            def _send(self, status: int, body: object, headers: dict | None = None, trickle: float = 0) -> None:
                self.logged["status"] = status
                # Answered from here on: the client may send its next call as soon as these bytes reach it.
                self._answered()
                # Bytes go as they are (a garbled answer need not be JSON).
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if not trickle:
                    self.wfile.write(payload)
                    return
                # The answer in eight pieces, `trickle` seconds apart (each read of the client is quick).
                step = max(1, math.ceil(len(payload) / 8))
                try:
                    for start in range(0, len(payload), step):
                        self.wfile.write(payload[start : start + step])
                        self.wfile.flush()
                        time.sleep(trickle)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up waiting

            def _drop(self) -> None:
                # Close without a byte of answer: the client sees a broken connection.
                self.close_connection = True

            def _serve(self, method: str) -> None:
                with server.lock:
                    server.state.in_flight += 1
                    server.state.most_in_flight = max(server.state.most_in_flight, server.state.in_flight)
                self.counted = True
                try:
                    self._answer(method)
                finally:
                    self._answered()

            def _answered(self) -> None:
                if self.counted:
                    self.counted = False
                    with server.lock:
                        server.state.in_flight -= 1

            def _answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                request_id = self.headers.get("MS-RequestId", "")
                arrived = time.monotonic()
                self.logged = {
                    "method": method,
                    "path": path,
                    "request_id": request_id,
                    "correlation_id": self.headers.get("MS-CorrelationId", ""),
                    "authorization": self.headers.get("Authorization", ""),
                    "at": arrived,
                    "status": None,
                }
                with server.lock:
                    server.state.calls.append(self.logged)
                # Throttling is decided on arrival and answered at once, as a provider's gateway does.
                throttled_for = server._admit(arrived)
                if throttled_for:
                    return self._send(
                        429,
                        {"code": 429, "description": "Rate limit is exceeded."},
                        {"Retry-After": str(max(1, math.ceil(throttled_for)))},
                    )
                if server.latency:
                    time.sleep(max(0.0, self.received + server.latency - time.monotonic()))
                if self.headers.get("Authorization") != f"Bearer {server.token}":
                    return self._send(401, {"code": 401, "description": "Missing or wrong bearer token."})
                try:
                    uuid.UUID(request_id)
                except ValueError:
                    return self._send(400, {"code": 400, "description": "MS-RequestId must be a UUID."})
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    return self._send(400, {"code": 400, "description": "The body is not JSON."})
                fault = server._take_fault(method, path)
                if fault and fault.kind == "throttle":
                    return self._send(
                        429, {"code": 429, "description": "Too many requests."}, {"Retry-After": str(fault.retry_after)}
                    )
                if fault and fault.kind == "error":
                    error = {"code": fault.status, "description": fault.message}
                    return self._send(fault.status, error if fault.body is None else fault.body)
                if fault and fault.kind == "final":
                    return self._send(fault.status, {"code": fault.status, "description": fault.message})
                if fault and fault.kind == "drop_before_apply":
                    return self._drop()
                write = method in {"POST", "PATCH"}
                with server.lock:
                    replay = server.state.answers.get(request_id) if write else None
                if replay is not None:
                    status, answer = replay
                else:
                    status, answer = server.handle(method, path, body)
                    if write and status < 500:
                        with server.lock:
                            server.state.answers.setdefault(request_id, (status, answer))
                if fault and fault.kind == "delay":
                    time.sleep(fault.seconds)
                if fault and fault.kind == "drop_after_apply":
                    return self._drop()
                if fault and fault.kind == "garbled":
                    return self._send(200, fault.body, fault.headers)
                if fault and fault.kind == "trickle":
                    return self._send(status, answer, trickle=fault.seconds)
                return self._send(status, answer)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

        return Handler


def busiest_second(calls: list[dict]) -> int:
    """Return the most calls that arrived within any one second."""
    arrived = sorted(call["at"] for call in calls)
    most, first = 0, 0
    for last, at in enumerate(arrived):
        while at - arrived[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--token", default="")
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--rate-limit", type=float, default=0.0, help="calls per second before 429s (0: none)")
    parser.add_argument("--rate-burst", type=int, default=1, help="calls allowed at once after a quiet spell")
    parser.add_argument("--tenant", action="append", default=[], help="TENANT_ID,domain,Company name (repeatable)")
    args = parser.parse_args()
    server = ProviderServer(
        token=args.token,
        latency=args.latency_ms / 1000,
        host=args.host,
        port=args.port,
        rate_limit=args.rate_limit,
        rate_burst=args.rate_burst,
    )
    for spec in args.tenant:
        tenant_id, domain, name = spec.split(",", 2)
        server.add_tenant(tenant_id, domain, name)
    print(f"Provider API listening on {server.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.httpd.serve_forever()


if __name__ == "__main__":
    main()
