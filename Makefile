# Two commands matter: `make run` and `make test`. Each sets itself up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.requirements-installed

.PHONY: run test lint bench bench-import venv migrate demo clean

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

## Admin web server, Celery worker and Celery beat together; Ctrl-C stops all three.
run: demo
	mkdir -p var
	$(BIN)/honcho --procfile Procfile start

## The test suite (PostgreSQL and Redis when DATABASE_URL and CELERY_BROKER_URL point at them).
test: venv
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check .
	$(PY) manage.py makemigrations --check --dry-run

## Order-sheet import benchmark on PostgreSQL (DATABASE_URL must point at a PostgreSQL server).
bench-import: venv
	$(PY) bench/bench_import.py

clean:
	rm -rf var db.sqlite3 db.sqlite3-shm db.sqlite3-wal
