# Two commands matter: `make run` and `make test`. Each sets itself up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.requirements-installed

.PHONY: run test lint bench bench-admin bench-binding bench-scale bench-renewals bench-import bench-reconcile venv migrate demo clean

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is needed" if sys.version_info < (3, 11) else 0)'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

migrate: venv
	$(PY) manage.py migrate --noinput

demo: migrate
	$(PY) manage.py seed_demo
	# The demo's subscriptions ending in 6, 20, 58 and 85 days get their reminders (console mail) now.
	$(PY) manage.py send_renewal_reminders
	# The logins once more, last, where they are seen (loading again changes nothing).
	$(PY) manage.py seed_demo

## Admin web server, Celery worker and Celery beat together; Ctrl-C stops all three.
## The demo logins sign in without an authenticator app (DEMO_SKIP_2FA; refused with DEBUG off).
run: export DEMO_SKIP_2FA ?= true
run: demo
	mkdir -p var
	$(BIN)/honcho --procfile Procfile start

## The test suite (PostgreSQL and Redis when DATABASE_URL and CELERY_BROKER_URL point at them).
test: venv
	$(BIN)/pytest

## Every benchmark, one after the other (PostgreSQL and Redis on this machine; scratch databases).
bench: bench-admin bench-import bench-binding bench-scale bench-renewals bench-reconcile

## Binding throughput: 2,000 allocations, HTTP provider answering after 50 ms, a 4-process worker on Redis.
BENCH_BINDING_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/o365_bench_binding
BENCH_BINDING_BROKER_URL ?= redis://127.0.0.1:6379/4
bench-binding: venv
	DATABASE_URL=$(BENCH_BINDING_DATABASE_URL) CELERY_BROKER_URL=$(BENCH_BINDING_BROKER_URL) \
	  $(PY) manage.py bench_binding --count 2000 --latency-ms 50 --concurrency 4

## Binding at scale: 1, 2, 4, 8 worker processes and two hosts of 4 at 50 ms, then the provider limiting to 40/s.
BENCH_SCALE_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/o365_bench_scale
BENCH_SCALE_BROKER_URL ?= redis://127.0.0.1:6379/7
bench-scale: venv
	DATABASE_URL=$(BENCH_SCALE_DATABASE_URL) CELERY_BROKER_URL=$(BENCH_SCALE_BROKER_URL) \
	  $(PY) manage.py bench_scale --latency-ms 50 --rate-limit 40

lint: venv
	$(BIN)/ruff check .
	$(PY) manage.py makemigrations --check --dry-run

## Order-sheet import benchmark on PostgreSQL (DATABASE_URL must point at a PostgreSQL server).
bench-import: venv
	DATABASE_URL=$${DATABASE_URL:-$(BENCH_DB_URL)/o365} $(PY) bench/bench_import.py

## Reconciliation of 10,000 tenants (30,000 subscriptions) against a provider answering after 20 ms.
bench-reconcile: venv
	DATABASE_URL=$${DATABASE_URL:-$(BENCH_DB_URL)/o365} $(PY) bench/bench_reconcile.py

clean:
	rm -rf var db.sqlite3 db.sqlite3-shm db.sqlite3-wal

BENCH_DB_URL ?= postgres://postgres@127.0.0.1:5432

## Admin changelists over a million rows (PostgreSQL scratch database o365_bench_admin).
bench-admin: venv
	psql "$(BENCH_DB_URL)/postgres" -qc 'DROP DATABASE IF EXISTS o365_bench_admin' -c 'CREATE DATABASE o365_bench_admin'
	DATABASE_URL=$(BENCH_DB_URL)/o365_bench_admin $(PY) manage.py migrate --noinput -v0
	DATABASE_URL=$(BENCH_DB_URL)/o365_bench_admin $(PY) manage.py bench_admin --rows $${ROWS:-1000000}
	psql "$(BENCH_DB_URL)/postgres" -qc 'DROP DATABASE o365_bench_admin'

## Daily renewal run over 100,000 and 1,000,000 subscriptions on PostgreSQL (dedicated, dropped after).
bench-renewals: venv
	$(PY) bench/renewals.py
