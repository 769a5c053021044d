"""scripts/quickstart, run for real with stand-ins for the programs it starts (pip, manage.py,
celery, uvicorn), which record their arguments and the DEBUG they were given; and the pages a
visitor then sees with the quickstart's settings."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied
from django.test import RequestFactory
from django.views import defaults

ROOT = Path(__file__).resolve().parents[2]

STAND_IN = """#!/usr/bin/env bash
log="$(dirname "$0")/../../calls.log"
if [ "$(basename "$0")" = uvicorn ]; then
  # The worker was started in the background: let it log its start before the script's exit
  # stops it, as the real server runs until Ctrl-C.
  for _ in $(seq 100); do grep -q '^celery ' "$log" && break; sleep 0.1; done
fi
echo "$(basename "$0") DEBUG=${DEBUG-unset} $*" >> "$log"
"""


def run_quickstart(tmp_path: Path, **env_overrides: str) -> list[str]:
    """The script in a copy of the checkout's layout whose .venv/bin holds stand-ins."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "quickstart", tmp_path / "scripts" / "quickstart")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for program in ("python", "celery", "uvicorn"):
        (bin_dir / program).write_text(STAND_IN)
        (bin_dir / program).chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key not in {"DEBUG", "PORT"}}
    env.update(env_overrides)
    result = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "quickstart")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return (tmp_path / "calls.log").read_text().splitlines()


def test_quickstart_runs_with_debug_off_and_uvicorn_ignoring_forwarded_headers(tmp_path):
    calls = run_quickstart(tmp_path)
    assert calls == (
        [
            "python DEBUG=0 -m pip install --quiet --upgrade pip",
            "python DEBUG=0 -m pip install --quiet -r requirements/base.txt "
            "-c requirements/constraints.txt",
            "python DEBUG=0 manage.py compile_catalogues",
            "python DEBUG=0 manage.py migrate --noinput",
            "python DEBUG=0 manage.py seed_demo --force",
            "celery DEBUG=0 -A hcai worker -B --pool=solo --loglevel=INFO",
            "uvicorn DEBUG=0 hcai.asgi:application --host 127.0.0.1 --port 8000 "
            "--no-access-log --no-proxy-headers",
        ]
    )


def test_quickstart_turns_debug_on_only_when_asked(tmp_path):
    calls = run_quickstart(tmp_path, DEBUG="1")
    assert [call.split()[1] for call in calls] == ["DEBUG=1"] * 7


@pytest.mark.parametrize(("value", "shown"), [(None, "True"), ("0", "False"), ("1", "True")])
def test_the_quickstart_settings_read_debug_from_the_environment(value, shown):
    env = {key: val for key, val in os.environ.items() if key != "DEBUG"}
    env["DJANGO_SETTINGS_MODULE"] = "hcai.settings.dev"
    if value is not None:
        env["DEBUG"] = value
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; "
            "print(settings.DEBUG, settings.ALLOWED_HOSTS, settings.WHITENOISE_USE_FINDERS)",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{shown} ['localhost', '127.0.0.1', '[::1]'] True\n"


# --- the project's error pages (DEBUG is off in tests, as in the quickstart) -----------------


def test_an_unknown_url_gets_the_projects_404_page(client, member):
    client.force_login(member)
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "<h1>Not found</h1>" in page
    assert "There is nothing here, or it belongs to a team you are not in." in page
    assert '<a class="brand" href="/">' in page
    assert "URLconf" not in page
    assert "no/such/page" not in page


@pytest.mark.django_db
def test_a_refusal_gets_the_projects_403_page_without_its_internal_reason(member):
    request = RequestFactory().get("/somewhere/")
    request.user = member
    response = defaults.permission_denied(request, PermissionDenied("internal: rule 42"))
    assert response.status_code == 403
    page = response.content.decode()
    assert "<h1>Not allowed</h1>" in page
    assert "rule 42" not in page
    assert "<title>Not allowed · HCAI Keys</title>" in page


def test_a_crash_gets_the_projects_500_page():
    response = defaults.server_error(RequestFactory().get("/boom/"))
    assert response.status_code == 500
    page = response.content.decode()
    assert "<title>Something went wrong · HCAI Keys</title>" in page
    assert "<h1>Something went wrong</h1>" in page
    assert 'href="/static/portal/portal.css"' in page
    assert "Traceback" not in page
