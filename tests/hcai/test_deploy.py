"""deploy/: the environment file the systemd units read, deploy/manage, and what the units and
the environment file must agree on. (deploy/nginx/hcai.conf runs in tests/proxy/test_nginx.py.)"""

import configparser
import os
import re
import secrets
import subprocess

from cryptography.fernet import Fernet
from django.conf import settings

from hcai import workers

DEPLOY = settings.BASE_DIR / "deploy"
ENV_EXAMPLE = DEPLOY / "hcai.env.example"
UNITS = ("hcai-web", "hcai-worker", "hcai-beat")


def _variables(path) -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if line and not line.startswith("#")
    )


def _unit(name: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str
    unit.read(DEPLOY / "systemd" / f"{name}.service")
    return unit


def test_the_environment_file_sets_only_documented_variables():
    documented = set(
        re.findall(
            r"^#? ?([A-Z][A-Z0-9_]+)=",
            (settings.BASE_DIR / ".env.example").read_text(),
            re.MULTILINE,
        )
    )
    assert set(_variables(ENV_EXAMPLE)) - documented == set()


def test_deploy_manage_runs_manage_py_with_the_environment_file(tmp_path):
    """The file as an operator fills it in, read by the shell as deploy/manage reads it: the
    production settings it names, its quoted value whole, and a clean deploy check."""
    text = ENV_EXAMPLE.read_text()
    for blank, value in {
        "SECRET_KEY=": "SECRET_KEY=" + secrets.token_urlsafe(50),
        "CHANNEL_CREDENTIAL_KEYS=": "CHANNEL_CREDENTIAL_KEYS=" + Fernet.generate_key().decode(),
        "HCAI_VAR_DIR=/var/lib/hcai": f"HCAI_VAR_DIR={tmp_path / 'var'}",
    }.items():
        assert f"\n{blank}\n" in text
        text = text.replace(f"\n{blank}\n", f"\n{value}\n")
    environment_file = tmp_path / "hcai.env"
    environment_file.write_text(text)
    script = (
        "from django.conf import settings\n"
        "from django.core.management import call_command\n"
        "print(settings.SETTINGS_MODULE, settings.TRUSTED_PROXIES, settings.DEFAULT_FROM_EMAIL)\n"
        "call_command('check', deploy=True, fail_level='WARNING')\n"
    )

    result = subprocess.run(
        [DEPLOY / "manage", "shell", "-c", script],
        # The test run's own settings module, database and Redis are overridden by the file.
        env={**os.environ, "HCAI_ENV_FILE": str(environment_file)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert (
        "hcai.settings.production ['127.0.0.1/32'] HCAI Keys <keys@example.com>"
        in result.stdout.splitlines()
    )
    assert "System check identified no issues" in result.stdout


def test_the_web_unit_outwaits_the_grace_it_gives_streams():
    grace = int(_variables(ENV_EXAMPLE)["GRACEFUL_TIMEOUT"])
    web = _unit("hcai-web")["Service"]
    assert web["ExecStart"].endswith(" -c gunicorn.conf.py")
    assert web["KillMode"] == "mixed"  # SIGTERM to gunicorn's master only, which drains
    timeout = int(web["TimeoutStopSec"])
    assert timeout > grace + workers.SHUTDOWN_CLEANUP_SECONDS


def test_every_unit_reads_the_file_deploy_manage_reads():
    manage = (DEPLOY / "manage").read_text()
    for name in UNITS:
        service = _unit(name)["Service"]
        assert service["EnvironmentFile"] == "/etc/hcai/hcai.env"
        assert "${HCAI_ENV_FILE:-/etc/hcai/hcai.env}" in manage
