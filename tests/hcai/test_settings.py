import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]


def _run_check(**env_overrides) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SECRET_KEY", "DEBUG", "CHANNEL_CREDENTIAL_KEYS"}
    }
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


PRODUCTION_SECRET = "x" * 20 + "a-long-random-production-secret-for-tests-0123456789"


def test_production_refuses_to_start_without_secret_key():
    result = _run_check(DJANGO_SETTINGS_MODULE="hcai.settings.production")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_production_settings_pass_the_deploy_check():
    result = _run_check(
        DJANGO_SETTINGS_MODULE="hcai.settings.production",
        SECRET_KEY=PRODUCTION_SECRET,
        ALLOWED_HOSTS="keys.example.com",
        CHANNEL_CREDENTIAL_KEYS=Fernet.generate_key().decode(),
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


GENERATE = (
    'generate one with python -c "from cryptography.fernet import Fernet; '
    'print(Fernet.generate_key().decode())"'
)


def test_production_refuses_to_start_without_channel_credential_keys():
    result = _run_check(
        DJANGO_SETTINGS_MODULE="hcai.settings.production",
        SECRET_KEY=PRODUCTION_SECRET,
        ALLOWED_HOSTS="keys.example.com",
    )
    assert result.returncode != 0
    assert result.stderr.splitlines()[-1] == (
        "django.core.exceptions.ImproperlyConfigured: CHANNEL_CREDENTIAL_KEYS is not set. "
        "Channel credentials are encrypted with it: set it to one or more Fernet keys, newest "
        "first, comma separated (" + GENERATE + ")."
    )


def test_a_malformed_channel_credential_key_stops_start_up_without_echoing_it():
    good, bad = Fernet.generate_key().decode(), "sk-not-a-fernet-key-0123456789"
    result = _run_check(
        DJANGO_SETTINGS_MODULE="hcai.settings.production",
        SECRET_KEY=PRODUCTION_SECRET,
        ALLOWED_HOSTS="keys.example.com",
        CHANNEL_CREDENTIAL_KEYS=f"{good},{bad}",
    )
    assert result.returncode != 0
    assert result.stderr.splitlines()[-1] == (
        "django.core.exceptions.ImproperlyConfigured: CHANNEL_CREDENTIAL_KEYS: key 2 of 2 is not "
        "a Fernet key (32 url-safe base64-encoded bytes); " + GENERATE + "."
    )
    assert good not in result.stderr and bad not in result.stderr


def test_a_copied_env_example_trusts_no_proxy():
    """.env.example as a .env: its values, under the production settings it names. A trusted
    range there would let anything in it pick the client IP that key IP restrictions and the
    sign-in limits see."""
    script = (
        "import os, environ\n"
        "environ.Env.read_env('.env.example', overwrite=True)\n"
        # The values the example leaves for the operator to fill in.
        "os.environ['SECRET_KEY'] = 'x' * 50\n"
        f"os.environ['CHANNEL_CREDENTIAL_KEYS'] = '{Fernet.generate_key().decode()}'\n"
        "import django\n"
        "django.setup()\n"
        "from django.conf import settings\n"
        "from core.client_ip import trusted_proxies\n"
        "print(settings.SETTINGS_MODULE, settings.TRUSTED_PROXIES, trusted_proxies())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hcai.settings.production [] ()\n"


def test_a_negative_usage_retention_stops_start_up():
    result = _run_check(DJANGO_SETTINGS_MODULE="hcai.settings.dev", USAGE_RETENTION_DAYS="-5")
    assert result.returncode != 0
    assert (
        "django.core.exceptions.ImproperlyConfigured: USAGE_RETENTION_DAYS must be 0 (keep "
        "everything) or more days." in result.stderr
    )
