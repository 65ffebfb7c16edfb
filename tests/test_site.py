"""The site as operations see it: health, settings safety, demo data."""

import os
import secrets
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from django.apps import apps
from django.core.management import call_command

from config.celery import app as celery_app
from redemption.demo import demo_data_load

ROOT = Path(__file__).resolve().parent.parent


def _point_celery_at(monkeypatch, url: str) -> None:
    # Celery prefers the CELERY_BROKER_URL environment variable over its configuration.
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    monkeypatch.setattr(celery_app.conf, "broker_url", url)


def test_healthz_reports_database_and_broker(client, db, settings, tmp_path, monkeypatch):
    _point_celery_at(monkeypatch, "memory://")
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "failing": []}


def test_healthz_names_a_stopped_broker_and_tells_why_only_to_staff(client, db, monkeypatch, processor):
    # Nothing listens on port 1: the broker is down.
    _point_celery_at(monkeypatch, "redis://127.0.0.1:1/0")
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "error", "failing": ["broker"]}
    assert "127.0.0.1" not in response.text
    client.force_login(processor)
    details = client.get("/healthz").json()["details"]
    assert details["database"] == "ok"
    assert details["broker"].startswith("error:")


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_debug_off_refuses_to_start_without_secret_key():
    result = _manage("check", env={"DEBUG": "off", "ALLOWED_HOSTS": "desk.example.com"})
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("x", "must have at least 50 random characters"),
        ("a" * 49, "must have at least 50 random characters"),
        ("dev-only-insecure-key-never-used-with-debug-off", "a development value known to anyone"),
        ("change-me-to-50-random-characters", "a development value known to anyone"),
    ],
)
def test_debug_off_refuses_a_weak_or_known_secret_key(key, says):
    result = _manage("check", env={"DEBUG": "off", "SECRET_KEY": key, "ALLOWED_HOSTS": "desk.example.com"})
    assert result.returncode != 0
    assert says in result.stderr


def test_debug_off_refuses_to_start_with_the_demo_two_factor_bypass():
    env = {"DEBUG": "off", "SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": "x.example", "DEMO_SKIP_2FA": "on"}
    result = _manage("check", env=env)
    assert result.returncode != 0
    assert "DEMO_SKIP_2FA is for make run's demo only" in result.stderr


def test_debug_off_refuses_to_start_without_allowed_hosts():
    result = _manage("check", env={"DEBUG": "off", "SECRET_KEY": secrets.token_urlsafe(50)})
    assert result.returncode != 0
    assert "ALLOWED_HOSTS must be set when DEBUG is off" in result.stderr


def test_deploy_check_passes_in_production_configuration():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env={"DEBUG": "off", "SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": "desk.example.com"},
    )
    assert result.returncode == 0, result.stderr + result.stdout


def _snapshot() -> dict[str, list[tuple]]:
    """Every row of every domain model, as values, excluding timestamps."""
    state = {}
    for label in ("tenants", "licensing", "redemption"):
        for model in apps.get_app_config(label).get_models():
            if model.__name__.startswith("Historical"):
                continue
            fields = [f.attname for f in model._meta.concrete_fields if f.name not in {"created_at", "updated_at"}]
            state[model.__name__] = sorted(model.objects.values_list(*fields), key=repr)
    return state


@pytest.mark.django_db
def test_demo_data_loaded_twice_gives_the_same_data():
    first = demo_data_load(today=date(2026, 11, 24))
    before = _snapshot()
    second = demo_data_load(today=date(2026, 11, 24))
    assert sum(first.created.values()) > 0
    assert sum(second.created.values()) == 0
    assert _snapshot() == before
    assert before["Tenant"] and before["Subscription"] and before["Agreement"]


@pytest.mark.django_db
def test_demo_data_covers_the_desk_and_prints_the_logins(capsys, settings, django_user_model):
    settings.DEBUG = True
    call_command("seed_demo")
    from licensing.models import Agreement, OrderLine
    from tenants.models import Customer

    assert set(Agreement.objects.values_list("program", flat=True)) == {"ol", "ov", "ovs"}
    assert set(OrderLine.objects.values_list("kind", flat=True)) == {"new", "additional", "renewal"}
    tenant_counts = {c.tenants.count() for c in Customer.objects.all()}
    assert {1, 2} <= tenant_counts
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8000/admin/" in out
    for username in ("admin", "clerk", "supervisor"):
        assert username in out
        assert django_user_model.objects.get(username=username).check_password(settings.DEMO_PASSWORD)


@pytest.mark.django_db
def test_demo_logins_are_never_created_with_debug_off(capsys, settings, django_user_model):
    settings.DEBUG = False
    call_command("seed_demo")
    assert "no demo logins" in capsys.readouterr().out
    assert not django_user_model.objects.filter(is_active=True).exists()


PG_URL = "postgres://postgres@127.0.0.1:5432/o365_settings_check"


@pytest.mark.parametrize(("setting", "bound_by_server"), [(None, "True"), ("off", "None")])
def test_postgresql_binds_parameters_on_the_server_unless_turned_off(setting, bound_by_server):
    env = {"DATABASE_URL": PG_URL, **({"DB_SERVER_SIDE_BINDING": setting} if setting else {})}
    shown = (
        "from django.conf import settings; print(settings.DATABASES['default']['OPTIONS'].get('server_side_binding'))"
    )
    result = _manage("shell", "-c", shown, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == bound_by_server


def test_an_import_batch_too_big_to_bind_in_one_statement_is_refused_at_start():
    result = _manage("check", env={"DATABASE_URL": PG_URL, "IMPORT_BATCH_SIZE": "5000"})
    assert result.returncode != 0
    assert "IMPORT_BATCH_SIZE=5000: with DB_SERVER_SIDE_BINDING on, a batch is 1 to 3000 rows." in result.stderr
    assert _manage("check", env={"DATABASE_URL": PG_URL, "IMPORT_BATCH_SIZE": "3000"}).returncode == 0


def test_beat_finds_the_folder_of_its_schedule_on_a_fresh_host(tmp_path):
    # A fresh checkout has no var/: beat opens its schedule file there without making the folder.
    schedule = tmp_path / "not-yet" / "celerybeat-schedule"
    result = _manage("check", env={"CELERY_BEAT_SCHEDULE_FILENAME": str(schedule)})
    assert result.returncode == 0, result.stderr
    assert schedule.parent.is_dir()
