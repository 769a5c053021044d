"""Settings shared by every environment, read from the environment with django-environ.

Every variable is listed with its meaning in `.env.example`. Defaults are the embedded ones
(SQLite, local-memory cache, a file-system Celery broker) so that a laptop runs the whole
thing with nothing installed; production overrides them in `production.py`.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from core.redis_config import redis_config

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    env.read_env(BASE_DIR / ".env")

# Where the embedded defaults keep their files (SQLite database, Celery broker folders).
VAR_DIR = Path(env.str("HCAI_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DEBUG", default=False)
# No default here: dev.py and test.py supply one, production.py must get it from the
# environment, so a missing secret fails at start-up instead of running with a known one.
SECRET_KEY = env.str("SECRET_KEY", default="")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# What the portal prints as ANTHROPIC_BASE_URL in the setup lines users paste into their shell.
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")

# Email, for team invitations: EMAIL_URL as django-environ reads it (smtp+tls://user:password@
# host:587, or consolemail:// to print messages on stdout, the default, so a laptop needs no
# mail server).
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="HCAI Keys <noreply@localhost>")

# CIDRs of reverse proxies whose X-Forwarded-For header is believed. Empty: the socket peer
# is always the client, so nobody can spoof an address past an IP restriction.
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])

# The relay (/v1/*): the largest request body it reads. Claude Code's first request is about
# 115 KB and long sessions grow to megabytes; anything past this is refused with a 413.
RELAY_MAX_BODY_BYTES = env.int("RELAY_MAX_BODY_BYTES", default=32 * 1024 * 1024)
# Where the relay keeps usage records that Redis could not take, until it can (proxy.spool):
# a served request is billed even through a Redis outage. Local to each host.
RELAY_SPOOL_DIR = env.str("RELAY_SPOOL_DIR", default=str(VAR_DIR / "spool"))
# The channels' circuit breaker (proxy.breaker): a channel failing this many times in a row
# (no connection, a timeout, a 5xx) is skipped for the cool-down, then tried by one request.
CHANNEL_FAILURES_TO_OPEN = env.int("CHANNEL_FAILURES_TO_OPEN", default=5)
CHANNEL_COOLDOWN_SECONDS = env.float("CHANNEL_COOLDOWN_SECONDS", default=30.0)

# Channel credentials (vendors' API keys) are encrypted in the database with these Fernet keys,
# newest first: the first encrypts, any decrypts (core.credentials). No default here: dev.py
# (and so test.py) supplies one, and every process refuses to start without a valid list.
CHANNEL_CREDENTIAL_KEYS = env.list("CHANNEL_CREDENTIAL_KEYS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "core",
    "keys",
    "billing",
    "proxy",
    "notify",
]

MIDDLEWARE = [
    "core.middleware.RequestIdMiddleware",
    "core.api.middleware.ApiNoStoreMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # After sessions, before CommonMiddleware: Accept-Language (or the language cookie) picks
    # the language; keys.middleware then applies a signed-in user's saved choice.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "keys.middleware.UserLanguageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "hcai.urls"
WSGI_APPLICATION = "hcai.wsgi.application"
ASGI_APPLICATION = "hcai.asgi.application"

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

# Database: DATABASE_URL (PostgreSQL via psycopg 3 in production), a SQLite file otherwise.
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The relay writes usage from worker threads while the portal and the Celery worker write
    # too. A
    # transaction that reads first and writes later fails at once ("database is locked") when
    # another connection is writing; IMMEDIATE takes the write lock up front and waits for it
    # (up to `timeout` seconds), and WAL lets readers go on while one connection writes.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis in production (shared by every worker and host: key state, rate-limit counters, quota
# totals, the usage stream, Celery's broker): one server (REDIS_URL), a primary watched by
# Sentinel (REDIS_SENTINELS + REDIS_SENTINEL_SERVICE) or a Cluster (REDIS_CLUSTER_NODES); see
# core.redis_config and the README. REDIS is the one answer to "is Redis configured": None on
# the embedded default (local memory, enough for a single-process laptop run).
REDIS_URL = env.str("REDIS_URL", default="")
REDIS = redis_config(
    url=REDIS_URL,
    sentinels=env.str("REDIS_SENTINELS", default=""),
    service=env.str("REDIS_SENTINEL_SERVICE", default=""),
    sentinel_password=env.str("REDIS_SENTINEL_PASSWORD", default=""),
    cluster_nodes=env.str("REDIS_CLUSTER_NODES", default=""),
)
# Redis holds usage not yet in the database (the stream), so production's must keep an
# append-only file; /readyz reports the host unready when it does not (production default).
REDIS_REQUIRE_APPEND_ONLY = env.bool("REDIS_REQUIRE_APPEND_ONLY", default=False)
if REDIS is not None:
    CACHES = {"default": REDIS.django_cache()}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "hcai",
            "KEY_PREFIX": "hcai",
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# The portal's own sign-in page; after signing in people land on their key list.
LOGIN_URL = "keys:login"
LOGIN_REDIRECT_URL = "keys:home"
LOGOUT_REDIRECT_URL = "keys:login"
# Failed sign-ins allowed per client IP and per username (django-ratelimit syntax: 5/15m is
# five per 15 minutes). Both counters live in the shared cache, so every worker sees them.
LOGIN_FAILURES_PER_IP = env.str("LOGIN_FAILURES_PER_IP", default="20/15m")
LOGIN_FAILURES_PER_USERNAME = env.str("LOGIN_FAILURES_PER_USERNAME", default="5/15m")

# The portal speaks English (the source strings) and Simplified Chinese (locale/zh_Hans, compiled
# by `manage.py compile_catalogues`). The language is the signed-in user's saved choice, else
# the language cookie (the header's switch, signed out), else Accept-Language, else English;
# URLs stay the same in every language. The relay (/v1/*) always answers in English.
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True
# Every date and time shown with Django's default format names its zone (hcai/formats).
FORMAT_MODULE_PATH = ["hcai.formats"]

STATIC_URL = "static/"
# collectstatic's target, served by WhiteNoise (no CDN, no separate static server).
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]

# Celery: the broker is Redis in production; on the embedded default a file-system transport
# in VAR_DIR, so the quickstart runs the periodic tasks without a broker server
# (`celery -A hcai worker -B --pool=solo`: one process, beat embedded).
# CELERY_BROKER_URL set explicitly wins (and its transport options are then the operator's);
# otherwise the broker is settings.REDIS (through Sentinel: kombu's sentinel:// transport).
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
if not CELERY_BROKER_URL and REDIS is None:
    CELERY_BROKER_URL = "filesystem://"
elif not CELERY_BROKER_URL:
    _broker = REDIS.celery_broker()
    CELERY_BROKER_URL = _broker["broker_url"]
    if "broker_transport_options" in _broker:
        CELERY_BROKER_TRANSPORT_OPTIONS = _broker["broker_transport_options"]
    if "broker_use_ssl" in _broker:
        CELERY_BROKER_USE_SSL = _broker["broker_use_ssl"]
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = VAR_DIR / "celery-broker"
    # The transport does not create its folders; without them the worker fails at start-up.
    (_broker_dir / "processed").mkdir(parents=True, exist_ok=True)
    (_broker_dir / "control").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir / "processed"),
        # Exchange tables; kombu's default is ./control, wherever the worker was started.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
    # kombu's filesystem transport, writing each message whole before a worker can see it.
    CELERY_BROKER_TRANSPORT = "core.broker:Transport"
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Beat keeps its last-run times here rather than in whatever directory it was started from.
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
SETTLE_USAGE_EVERY_SECONDS = env.float("SETTLE_USAGE_EVERY_SECONDS", default=10.0)
EXPIRE_KEYS_EVERY_SECONDS = env.float("EXPIRE_KEYS_EVERY_SECONDS", default=60.0)
# Usage events (a row per relayed request) are kept this many days, then deleted hourly in
# batches; the daily rollups stay for ever. 0 keeps every event.
USAGE_RETENTION_DAYS = env.int("USAGE_RETENTION_DAYS", default=400)
if USAGE_RETENTION_DAYS < 0:
    raise ImproperlyConfigured("USAGE_RETENTION_DAYS must be 0 (keep everything) or more days.")
PRUNE_USAGE_EVERY_SECONDS = env.float("PRUNE_USAGE_EVERY_SECONDS", default=3600.0)
# Each run expires when the next is due: after an outage the queue holds no backlog of
# identical runs, since one run catches up on everything anyway.
CELERY_BEAT_SCHEDULE = {
    "settle-usage": {
        "task": "billing.tasks.settle_usage",
        "schedule": SETTLE_USAGE_EVERY_SECONDS,
        "options": {"expires": SETTLE_USAGE_EVERY_SECONDS},
    },
    "expire-keys": {
        "task": "keys.tasks.expire_keys",
        "schedule": EXPIRE_KEYS_EVERY_SECONDS,
        "options": {"expires": EXPIRE_KEYS_EVERY_SECONDS},
    },
    "prune-usage": {
        "task": "billing.tasks.prune_usage",
        "schedule": PRUNE_USAGE_EVERY_SECONDS,
        "options": {"expires": PRUNE_USAGE_EVERY_SECONDS},
    },
}
# Notifications (notify.tasks.notify_due): expiring keys and key changes become events, and
# due deliveries (new ones and retries) are tried. A failed delivery's first retry is due 30 s
# later, so this must run at least that often; on the embedded default the worker's embedded
# beat runs it like every other periodic task.
NOTIFY_DUE_EVERY_SECONDS = env.float("NOTIFY_DUE_EVERY_SECONDS", default=15.0)
CELERY_BEAT_SCHEDULE["notify-due"] = {
    "task": "notify.tasks.notify_due",
    "schedule": NOTIFY_DUE_EVERY_SECONDS,
    "options": {"expires": NOTIFY_DUE_EVERY_SECONDS},
}
if REDIS is not None:
    # With Redis the relay appends usage to a Redis stream instead of writing the database on
    # the request path; this moves it into UsageEvent rows (embedded: written directly).
    INGEST_USAGE_EVERY_SECONDS = env.float("INGEST_USAGE_EVERY_SECONDS", default=2.0)
    # Usage entries a worker took and has not written for this long (it died or stalled
    # mid-batch) are taken over by another ingesting worker.
    USAGE_CLAIM_IDLE_SECONDS = env.float("USAGE_CLAIM_IDLE_SECONDS", default=60.0)
    # /readyz fails when the oldest usage not yet ingested has waited longer than this.
    READYZ_MAX_INGEST_LAG_SECONDS = env.float("READYZ_MAX_INGEST_LAG_SECONDS", default=300.0)
    CELERY_BEAT_SCHEDULE["ingest-usage"] = {
        "task": "billing.tasks.ingest_usage",
        "schedule": INGEST_USAGE_EVERY_SECONDS,
        "options": {"expires": INGEST_USAGE_EVERY_SECONDS},
    }
    # The relay counts refused requests per key and minute in Redis; this moves each closed
    # minute into RefusalCount rows (embedded: the relay's writer writes them).
    COLLECT_REFUSALS_EVERY_SECONDS = env.float("COLLECT_REFUSALS_EVERY_SECONDS", default=5.0)
    CELERY_BEAT_SCHEDULE["collect-refusals"] = {
        "task": "billing.tasks.collect_refusals",
        "schedule": COLLECT_REFUSALS_EVERY_SECONDS,
        "options": {"expires": COLLECT_REFUSALS_EVERY_SECONDS},
    }

# REST API (/api/v1/): personal access tokens ("Authorization: Token hcat_…") or the portal's
# session with its CSRF token; per-token rate limits counted in the shared cache.
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "keys.api.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON only: the one body format the schema documents and the fuzz run exercises. Numbers
    # keep their literal, so an amount is read as sent, not as a binary float.
    "DEFAULT_PARSER_CLASSES": ["core.api.parsers.JSONParser"],
    "DEFAULT_THROTTLE_CLASSES": ["keys.api.throttles.ApiTokenRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_token": env.str("API_RATE_LIMIT", default="600/min")},
    "DEFAULT_PAGINATION_CLASS": "core.api.pagination.ApiPagination",
    "EXCEPTION_HANDLER": "core.api.exceptions.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "HCAI Keys API",
    "VERSION": "1.0.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_INCLUDE_SCHEMA": False,
    # Request bodies get their own components, so read-only fields never appear as inputs.
    "COMPONENT_SPLIT_REQUEST": True,
    # A key's trail keeps the enum name it had before the one audit trail came; the team's
    # trail names every action of it.
    "ENUM_NAME_OVERRIDES": {
        "ActionEnum": "keys.api.serializers.KEY_EVENT_ACTIONS",
        "AuditActionEnum": "keys.models.AuditEvent.Action",
        # A delivery's status is named apart from a key's, which keeps its name.
        "StatusEnum": "keys.models.ApiKey.Status",
        "DeliveryStatusEnum": "notify.models.Delivery.Status",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.api.schema.add_error_responses",
    ],
}

# Logs: one line per event, with the request id, on stderr. The redaction filter is a second
# line of defence: code never logs a key, and anything shaped like one is masked anyway.
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "core.logging.RequestIdFilter"},
        "redact": {"()": "core.logging.RedactSecretsFilter"},
    },
    "formatters": {
        "line": {
            "format": "%(asctime)s %(levelname)s %(name)s request_id=%(request_id)s %(message)s",
        },
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "line",
            "filters": ["request_id", "redact"],
        },
    },
    "root": {"handlers": ["stderr"], "level": LOG_LEVEL},
}

# GET /metrics (Prometheus): with a token, scrapers send "Authorization: Bearer <token>";
# without one, only a scraper on the same host (loopback) is answered.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# Webhooks (notify.addresses): off, a team's webhook may only reach public addresses, never
# loopback, private or link-local ones (the cloud metadata service). Dev and test turn it on.
WEBHOOKS_ALLOW_PRIVATE = env.bool("WEBHOOKS_ALLOW_PRIVATE", default=False)
