"""Test settings: the dev defaults, a fast password hasher, and no .env surprises."""

import os
import tempfile

from .dev import *  # noqa: F403
from .dev import DATABASES

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Sent email stays in django.core.mail.outbox, whatever EMAIL_URL says.
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

# Live servers' threads outlive their tests; without persistent connections they hold none
# open, and the test database can be dropped at the end of the run.
DATABASES["default"]["CONN_MAX_AGE"] = 0

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A test database file, not the shared in-memory one: the relay and the live servers answer
    # from their own threads and connections, and SQLite's shared-cache memory database refuses
    # a reader while another connection writes ("table is locked") instead of waiting. One file
    # per process, so parallel runs in one checkout never meet.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"hcai-test-{os.getpid()}.sqlite3")
    }

# Usage records the relay could not hand to Redis, per test process, outside the checkout.
RELAY_SPOOL_DIR = os.path.join(tempfile.gettempdir(), f"hcai-spool-{os.getpid()}")
