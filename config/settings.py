"""Settings for the Office 365 Open back office, read from the environment."""

from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import crontab
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# With no environment at all the project runs as a single-machine demo.
DEBUG = env.bool("DEBUG", default=True)

# Keys that are public knowledge: this file's development default and the .env.example placeholder.
DEVELOPMENT_SECRET_KEYS = {"dev-only-insecure-key-never-used-with-debug-off", "change-me-to-50-random-characters"}
SECRET_KEY_MIN_LENGTH = 50

# make run's demo logins sign in without a phone; never in production.
DEMO_SKIP_2FA = env.bool("DEMO_SKIP_2FA", default=False)

if DEBUG:
    SECRET_KEY = env("SECRET_KEY", default="dev-only-insecure-key-never-used-with-debug-off")
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
else:
    SECRET_KEY = env("SECRET_KEY", default="")
    if not SECRET_KEY:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    if SECRET_KEY in DEVELOPMENT_SECRET_KEYS:
        raise ImproperlyConfigured("SECRET_KEY is a development value known to anyone: set a secret one.")
    if len(SECRET_KEY) < SECRET_KEY_MIN_LENGTH:
        raise ImproperlyConfigured(
            f"SECRET_KEY is {len(SECRET_KEY)} characters long; with DEBUG off it must have at least "
            f"{SECRET_KEY_MIN_LENGTH} random characters."
        )
    if DEMO_SKIP_2FA:
        raise ImproperlyConfigured("DEMO_SKIP_2FA is for make run's demo only: unset it when DEBUG is off.")
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off.")

INSTALLED_APPS = [
    "desk.apps.BackOfficeAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "simple_history",
    "import_export",
    "rangefilter",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "tenants",
    "licensing",
    "redemption",
    "desk.apps.DeskConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

# --- Staff sign-in (desk) ---
# django-axes checks every sign-in first: failures lock the account (per user name and per address).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
LOGIN_LOCKOUT_MINUTES = env.int("LOGIN_LOCKOUT_MINUTES", default=30)
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# A sign-in clears that user's own failures only (desk.services.sign_in_failures_clear): axes' reset
# would also clear every other account's failures from the same address.
AXES_RESET_ON_SUCCESS = False
AXES_LOCKOUT_CALLABLE = "desk.sign_in.locked_out"
AXES_USERNAME_CALLABLE = "desk.sign_in.attempted_username"
# The desk has its own list of locked accounts, with an unlock that records who and why.
AXES_ENABLE_ADMIN = False
AXES_VERBOSE = False
# Two-factor sign-in (TOTP): required for supervisors and superusers, for everyone with STAFF_2FA_REQUIRED.
STAFF_2FA_REQUIRED = env.bool("STAFF_2FA_REQUIRED", default=False)
OTP_TOTP_ISSUER = "O365 Open back office"
# A session ends after this many minutes without a request.
SESSION_IDLE_MINUTES = env.int("SESSION_IDLE_MINUTES", default=60)
SESSION_COOKIE_AGE = SESSION_IDLE_MINUTES * 60
SESSION_SAVE_EVERY_REQUEST = True

# Content-Security-Policy: the desk's own scripts and styles only; inline ones need the page's nonce.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# History pages show history: an old version is never saved back over the record (config.admin_tools).
SIMPLE_HISTORY_REVERT_DISABLED = True
# Rule 12's "why" whole: a reason a person wrote is kept as written (config.history.REASON_LENGTH at most).
SIMPLE_HISTORY_HISTORY_CHANGE_REASON_USE_TEXT_FIELD = True

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
# A connection kept between requests or tasks is checked before its first use in each of them.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
USING_SQLITE = DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
if USING_SQLITE:
    # Web, worker and beat share one file: wait for locks instead of failing, take the write
    # lock up front so that select_for_update-style sections serialise.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif env.bool("DB_SERVER_SIDE_BINDING", default=True):
    # PostgreSQL binds the parameters and plans a statement once per connection (prepared from its
    # second use): a binding's statements cost a fraction of the CPU. Off behind a PgBouncer in
    # transaction mode without max_prepared_statements.
    DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=2)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True
# Dates to the day and times to the minute, everywhere (config/formats).
FORMAT_MODULE_PATH = ["config.formats"]

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

LOGIN_URL = "admin:login"

# Email: console in the embedded default; smtp+tls://user:pass@host:587 in production.
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="Office 365 Open desk <o365-desk@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# Production hardening: only the environment differs between development and production.
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Celery: the database is the source of truth; the broker only carries wake-up calls.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://")
USING_FILESYSTEM_BROKER = CELERY_BROKER_URL.startswith("filesystem://")
if USING_FILESYSTEM_BROKER:
    _broker_dir = VAR_DIR / "broker"
    # kombu's filesystem transport expects its folders to exist.
    for _folder in ("queue", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # Its exchange tables too (kombu's default is a "control" folder wherever the process runs).
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Redis keeps no copy of the messages being worked on (kombu's "ack emulation": two more round
        # trips per task in the worker's main loop, which every pool process waits behind). The worker
        # holds them: a pool process that dies has its task put back at once (late acknowledgement,
        # CELERY_TASK_REJECT_ON_WORKER_LOST), a worker that stops puts back what it held. What a host
        # that died outright held is found again in the database by the sweeps, as after a flushed broker.
        "ack_emulation": False,
        "socket_connect_timeout": 5,
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A request that saves work must not hang on a dead broker: a couple of quick tries, then the sweep.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
# Celery's Django fixup would otherwise close the database connection around every task, whatever
# CONN_MAX_AGE says; config/celery.py applies CONN_MAX_AGE and the health check per task instead.
CELERY_DB_REUSE_MAX = 1000
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE_FILENAME = env.str("CELERY_BEAT_SCHEDULE_FILENAME", default=str(VAR_DIR / "celerybeat-schedule"))
# Beat opens its schedule file without making its folder: a fresh checkout has no var/ yet.
Path(CELERY_BEAT_SCHEDULE_FILENAME).parent.mkdir(parents=True, exist_ok=True)
# SQLite takes one writer at a time: the embedded default runs one task at a time.
CELERY_WORKER_CONCURRENCY = 1 if USING_SQLITE else env.int("CELERY_WORKER_CONCURRENCY", default=4)
CELERY_BEAT_SCHEDULE: dict = {}

# Provisioning API (see the README): sandbox by default, HTTP client against PROVIDER_URL.
PROVIDER_BACKEND = env.str("PROVIDER_BACKEND", default="sandbox")
PROVIDER_URL = env.str("PROVIDER_URL", default="")
PROVIDER_TOKEN = env.str("PROVIDER_TOKEN", default="")
PROVIDER_TIMEOUT = env.float("PROVIDER_TIMEOUT", default=10.0)
if PROVIDER_BACKEND not in {"sandbox", "http"}:
    raise ImproperlyConfigured("PROVIDER_BACKEND must be 'sandbox' or 'http'.")
if PROVIDER_BACKEND == "http" and not PROVIDER_URL:
    raise ImproperlyConfigured("PROVIDER_URL must be set when PROVIDER_BACKEND is 'http'.")
# One budget of provider calls per second for the whole installation (all workers on all hosts);
# 0 is no limit. BURST: calls allowed at once after a quiet spell (1 spreads them evenly).
PROVIDER_RATE_LIMIT = env.float("PROVIDER_RATE_LIMIT", default=0.0)
PROVIDER_RATE_BURST = env.int("PROVIDER_RATE_BURST", default=1)
if PROVIDER_RATE_LIMIT < 0 or PROVIDER_RATE_BURST < 1:
    raise ImproperlyConfigured("PROVIDER_RATE_LIMIT is 0 (no limit) or more; PROVIDER_RATE_BURST is 1 or more.")

# Reconciliation with the provider (drift): nightly at RECONCILE_HOUR (TIME_ZONE); an order line with
# seats still unbound this many days after its order date is reported.
RECONCILE_HOUR = env.int("RECONCILE_HOUR", default=2)
RECONCILE_UNBOUND_DAYS = env.int("RECONCILE_UNBOUND_DAYS", default=14)
if not 0 <= RECONCILE_HOUR <= 23 or RECONCILE_UNBOUND_DAYS < 1:
    raise ImproperlyConfigured("RECONCILE_HOUR is 0-23 and RECONCILE_UNBOUND_DAYS at least 1.")

# Binding rules.
BINDING_APPROVAL_THRESHOLD = env.int("BINDING_APPROVAL_THRESHOLD", default=100)
BINDING_MAX_ATTEMPTS = env.int("BINDING_MAX_ATTEMPTS", default=8)
BINDING_SWEEP_SECONDS = env.int("BINDING_SWEEP_SECONDS", default=60)
BINDING_STALE_SECONDS = env.int("BINDING_STALE_SECONDS", default=120)
BINDING_REVERSAL_DAYS = env.int("BINDING_REVERSAL_DAYS", default=7)

# Subscriptions whose term ends within this many days count as "ending soon".
EXPIRING_SOON_DAYS = env.int("EXPIRING_SOON_DAYS", default=30)

# Renewals (rules 8 and 9). Offsets and hour seed the renewal reminder schedule, which staff then
# edit in the admin (Redemption > Renewal reminder schedule); the database row wins once it exists.
RENEWAL_REMINDER_OFFSETS = env.list("RENEWAL_REMINDER_OFFSETS", cast=int, default=[90, 60, 30, 7])
RENEWAL_REMINDER_HOUR = env.int("RENEWAL_REMINDER_HOUR", default=7)
if not 0 <= RENEWAL_REMINDER_HOUR <= 23 or not RENEWAL_REMINDER_OFFSETS or min(RENEWAL_REMINDER_OFFSETS) < 1:
    raise ImproperlyConfigured(
        "RENEWAL_REMINDER_HOUR is 0-23 and RENEWAL_REMINDER_OFFSETS positive days, e.g. 90,60,30,7."
    )
# Beat checks this often whether the day's run is due (from the schedule's hour) and retries failed mail.
RENEWAL_TICK_MINUTES = env.int("RENEWAL_TICK_MINUTES", default=10)
# A failed reminder is retried until it is sent, stops being due, or fails this often: on the next tick,
# then waiting twice as long after each try, at most 4 hours (10 tries span about a day).
RENEWAL_REMINDER_MAX_ATTEMPTS = env.int("RENEWAL_REMINDER_MAX_ATTEMPTS", default=10)
# Delivery results are written after every this many mails: a crash leaves at most this many unconfirmed.
RENEWAL_REMINDER_BATCH_SIZE = env.int("RENEWAL_REMINDER_BATCH_SIZE", default=5000)
# Who receives the staff reminders of OVS anniversary-order deadlines (default: the desk's own address).
RENEWAL_STAFF_EMAILS = env.list("RENEWAL_STAFF_EMAILS", default=[DEFAULT_FROM_EMAIL])
CELERY_BEAT_SCHEDULE["renewals-tick"] = {
    "task": "redemption.renewals_tick",
    "schedule": crontab(minute=f"*/{RENEWAL_TICK_MINUTES}"),
}

# Order-sheet and agreement imports. Files above IMPORT_ASYNC_ROWS data rows (or too big to read in a
# page: licensing.formats) are checked and imported by a worker; uploads above IMPORT_MAX_UPLOAD_BYTES
# are refused before they are read.
IMPORT_ASYNC_ROWS = env.int("IMPORT_ASYNC_ROWS", default=1000)
IMPORT_MAX_UPLOAD_BYTES = env.int("IMPORT_MAX_UPLOAD_BYTES", default=50 * 1024 * 1024)
IMPORT_MAX_ROWS = env.int("IMPORT_MAX_ROWS", default=500_000)
# An XLSX is a zip: refuse one that inflates beyond this (an "XLSX bomb").
IMPORT_XLSX_MAX_UNCOMPRESSED_BYTES = env.int("IMPORT_XLSX_MAX_UNCOMPRESSED_BYTES", default=300 * 1024 * 1024)
IMPORT_BATCH_SIZE = env.int("IMPORT_BATCH_SIZE", default=2000)
if DATABASES["default"].get("OPTIONS", {}).get("server_side_binding") and not 1 <= IMPORT_BATCH_SIZE <= 3000:
    # A batch's history rows are one INSERT: past 3,000 rows it would bind more than PostgreSQL's
    # 65,535 parameters, and the import would fail half way.
    raise ImproperlyConfigured(
        f"IMPORT_BATCH_SIZE={IMPORT_BATCH_SIZE}: with DB_SERVER_SIDE_BINDING on, a batch is 1 to 3000 rows."
    )
# No cell of a sheet may be longer than this (characters); longer ones are refused while reading.
IMPORT_MAX_CELL_CHARS = env.int("IMPORT_MAX_CELL_CHARS", default=1000)
# Errors listed for one file; past this, "and N more".
IMPORT_MAX_ERRORS = env.int("IMPORT_MAX_ERRORS", default=200)
# A job waiting this long for a worker is queued again (its message was lost); one running this long
# is taken to have lost its worker and runs again (an import is one transaction: nothing was written).
IMPORT_SWEEP_AFTER_SECONDS = env.int("IMPORT_SWEEP_AFTER_SECONDS", default=120)
IMPORT_STALE_SECONDS = env.int("IMPORT_STALE_SECONDS", default=1800)
CELERY_BEAT_SCHEDULE["licensing-import-job-sweep"] = {
    "task": "licensing.tasks.import_job_sweep_task",
    "schedule": 60.0,
}
# Uploaded files waiting for a worker.
IMPORT_FILES_DIR = env.path("IMPORT_FILES_DIR", default=str(VAR_DIR / "imports"))
# django-import-export: never rely on its own formula escaping alone (it strips a leading "=" only);
# every export goes through licensing.formats, which neutralises formula-like cells.
IMPORT_EXPORT_SKIP_ADMIN_LOG = True
IMPORT_EXPORT_IMPORT_PERMISSION_CODE = "add"
IMPORT_EXPORT_EXPORT_PERMISSION_CODE = "view"
IMPORT_EXPORT_TMP_STORAGE_CLASS = "import_export.tmp_storages.TempFolderStorage"

# Cross-process scratch values such as an import's progress: Redis when the broker is Redis.
if CELERY_BROKER_URL.startswith("redis://"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CELERY_BROKER_URL}}
else:
    _cache = {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(VAR_DIR / "cache")}
    CACHES = {"default": _cache}

# Demo logins are only ever created in development.
DEMO_PASSWORD = env.str("DEMO_PASSWORD", default="o365-demo-pass")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # urllib3 logs every new connection and retry: the provider calls are in the history already.
    "loggers": {"urllib3": {"level": "WARNING"}},
}

# Provisioning sandbox (PROVIDER_BACKEND=sandbox): pretend latency and transient failures for demos.
SANDBOX_LATENCY_MS = env.int("SANDBOX_LATENCY_MS", default=0)
SANDBOX_FAILURE_RATE = env.float("SANDBOX_FAILURE_RATE", default=0.0)

# Reconciliation with the provider, nightly (RECONCILE_HOUR); a run that stopped is resumed by it.
CELERY_BEAT_SCHEDULE["redemption-reconcile-nightly"] = {
    "task": "redemption.reconciliation.tasks.reconciliation_nightly_task",
    "schedule": crontab(hour=RECONCILE_HOUR, minute=0),
}
# The sweep re-enqueues bindings whose broker message was lost and recovers those a dead worker left.
CELERY_BEAT_SCHEDULE["redemption-allocation-sweep"] = {
    "task": "redemption.tasks.allocation_sweep_task",
    "schedule": float(BINDING_SWEEP_SECONDS),
}
# ...and approved corrections whose message was lost (a flushed broker, a worker host that died).
CELERY_BEAT_SCHEDULE["redemption-correction-sweep"] = {
    "task": "redemption.reconciliation.tasks.correction_sweep_task",
    "schedule": float(BINDING_SWEEP_SECONDS),
}
