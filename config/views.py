"""Operational endpoints."""

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from config.celery import app as celery_app


def _database_state() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure means "not usable", reported, never raised
        return f"error: {exc.__class__.__name__}: {exc}"
    return "ok"


def _broker_state() -> str:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
            _ = conn.default_channel  # opens a channel: a live socket, not just a parsed URL
    except Exception as exc:
        return f"error: {exc.__class__.__name__}: {exc}"
    return "ok"


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Answer with the state of the database and the broker; 503 when either is down.

    Anyone may ask whether the service is up and which part is failing; why it fails (hosts,
    ports, names) is told only to signed-in staff.
    """
    checks = {"database": _database_state(), "broker": _broker_state()}
    failing = [name for name, state in checks.items() if state != "ok"]
    body: dict = {"status": "error" if failing else "ok", "failing": failing}
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        body["details"] = checks
    return JsonResponse(body, status=503 if failing else 200)
