"""Debian's nginx in front of the app, configured by the very file the deployment guide ships
(deploy/nginx/hcai.conf): a stream passes event by event, an IP restriction sees the client's
address nginx forwards, and a client's own X-Forwarded-For does not get past it.

nginx serves the file's HTTPS server block with a self-signed certificate made here; only the
listen ports (127.0.0.1, no IPv6), the app's address, the certificate and the log paths are
replaced. Clients connect from 127.0.0.2 as well as 127.0.0.1, so the address the app learns
from X-Forwarded-For differs from nginx's own (127.0.0.1, its socket peer, TRUSTED_PROXIES).
Behind nginx: the production command (gunicorn with gunicorn.conf.py) when the tests run on
PostgreSQL and Redis, which a second process can share; on the embedded default, the tests'
in-process uvicorn (relay_server, which leaves X-Forwarded-For to the app as gunicorn.conf.py
does).
"""

import http.client
import json
import os
import pwd
import re
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection as database

from keys import services

from .. import certificates
from .conftest import Response, usage_events
from .test_checkpoints import PROJECT, _free_port, _start_gunicorn
from .test_forwarding import MESSAGE, STREAM, read_held_stream
from .test_gate import assert_anthropic_error, ip_message

NGINX = Path("/usr/sbin/nginx")
CONF = PROJECT / "deploy" / "nginx" / "hcai.conf"
PROXY = "127.0.0.1"  # nginx's address: what the app sees as the socket peer
CLIENT = "127.0.0.2"  # a client that is not the proxy

# The test's nginx.conf around the shipped file: everything it writes (pid, logs, temporary
# files) inside the test's folder, so no root and no /var are needed. Run as root (CI), its
# workers keep root's identity too, rather than nobody's, who could not write that folder.
MAIN_CONF = """\
user {user};
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{
    worker_connections 64;
}}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {folder}/hcai.conf;
}}
"""


def render_site(
    *, app: str, https_port: int, http_port: int, folder: Path, changes: dict[str, str]
) -> str:
    """deploy/nginx/hcai.conf with the test's ports, app address, certificate and logs, and
    any other `changes` a test makes (shipped text: replacement)."""
    text = CONF.read_text()
    replacements = {
        "server 127.0.0.1:8000;": f"server {app};",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen [::]:80;": "",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        "listen [::]:443 ssl http2;": "",
        "/etc/letsencrypt/live/keys.example.com/fullchain.pem": str(folder / "cert.pem"),
        "/etc/letsencrypt/live/keys.example.com/privkey.pem": str(folder / "key.pem"),
        "/var/log/nginx/": f"{folder}/",
        **changes,
    }
    for shipped, replacement in replacements.items():
        assert shipped in text, f"{CONF} no longer has {shipped!r}: update render_site"
        text = text.replace(shipped, replacement)
    return text


def _wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((PROXY, port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"nginx exited with {process.returncode}:\n{log.read_text()}")
            assert time.monotonic() < deadline, f"nginx did not start:\n{log.read_text()}"
            time.sleep(0.05)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM (nginx: fast shutdown; gunicorn: graceful), then SIGKILL, to nginx's whole
    process group (its workers) when it leads one."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        process.wait(5)


@dataclass
class Front:
    """nginx serving HTTPS on 127.0.0.1:`port`."""

    port: int
    tls: ssl.SSLContext

    def call(
        self, plaintext: str, *, source: str, body: dict | None = None, headers: dict | None = None
    ) -> Response:
        client = self.connect(source)
        try:
            client.request(
                "POST",
                "/v1/messages",
                json.dumps(body or MESSAGE),
                {"x-api-key": plaintext, "content-type": "application/json", **(headers or {})},
            )
            response = client.getresponse()
            return Response(
                response.status,
                {name.lower(): value for name, value in response.getheaders()},
                response.read(),
            )
        finally:
            client.close()

    def connect(self, source: str) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            PROXY, self.port, context=self.tls, timeout=30, source_address=(source, 0)
        )


@pytest.fixture(autouse=True)
def _nginx_installed():
    if not os.access(NGINX, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail(f"{NGINX} is missing: .ci/install-packages should have installed it.")
        pytest.skip(f"{NGINX} is missing: run .ci/install-packages (apt-get install nginx-light).")


@pytest.fixture
def app_address(relay, settings, tmp_path):
    """Where nginx finds the app, which believes X-Forwarded-For from nginx's address only."""
    settings.TRUSTED_PROXIES = [f"{PROXY}/32"]
    if not (settings.REDIS is not None and database.vendor == "postgresql"):
        yield relay.url.removeprefix("http://")
        return
    port = _free_port()
    master = _start_gunicorn(
        port, tmp_path / "app", TRUSTED_PROXIES=f"{PROXY}/32", GRACEFUL_TIMEOUT="5"
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        relay.primary.release.set()  # no held stream keeps a worker from stopping
        _stop(master)


@pytest.fixture
def front(request, app_address, tmp_path):
    """nginx with the shipped site; a test may change lines of it (indirect parameter)."""
    folder = tmp_path / "nginx"
    folder.mkdir()
    # Its own authority: the client trusts this one certificate and nothing else.
    certificates.authority(PROXY, ips=[PROXY]).write(folder / "cert.pem", folder / "key.pem")
    https_port, http_port = _free_port(), _free_port()
    (folder / "hcai.conf").write_text(
        render_site(
            app=app_address,
            https_port=https_port,
            http_port=http_port,
            folder=folder,
            changes=getattr(request, "param", {}),
        )
    )
    user = pwd.getpwuid(os.geteuid()).pw_name
    (folder / "nginx.conf").write_text(MAIN_CONF.format(user=user, folder=folder))
    log = folder / "stderr.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        _wait_for_port(https_port, process, log)
        yield Front(https_port, ssl.create_default_context(cafile=folder / "cert.pem"))
    finally:
        _stop(process)


@pytest.mark.parametrize(
    "front",
    [{}, {"proxy_buffering off;": "proxy_buffering on;"}],
    ids=["as-shipped", "buffering-on"],
    indirect=True,
)
def test_a_stream_arrives_through_nginx_event_by_event(relay, front):
    """The upstream holds its stream after the first text until the test releases it: that
    text must already have come through nginx. With nginx's buffering turned back on too:
    the relay's X-Accel-Buffering: no keeps the stream unbuffered."""
    relay.primary.hold_after_first_delta = True
    client = front.connect(CLIENT)
    try:
        client.request(
            "POST",
            "/v1/messages",
            json.dumps(STREAM),
            {"x-api-key": relay.plaintext, "content-type": "application/json"},
        )
        response = client.getresponse()
        assert response.status == 200
        assert response.getheader("content-type").startswith("text/event-stream")
        received = read_held_stream(response, relay.primary)
    finally:
        client.close()

    assert relay.primary.finished_streams == 1
    assert received[0].startswith(b"event: message_start")
    assert received[-1].endswith(b'message_stop"}')


def test_an_ip_restriction_sees_the_client_address_nginx_forwards(relay, member, front):
    services.api_key_update(key=relay.key, actor=member, allowed_ips=CLIENT)

    allowed = front.call(relay.plaintext, source=CLIENT)
    refused = front.call(relay.plaintext, source=PROXY)

    assert allowed.status == 200, allowed.body
    [event] = usage_events(key=relay.key)
    assert event.client_ip == CLIENT
    # The app's socket peer is nginx (127.0.0.1), yet that address is refused: the client's
    # address came from X-Forwarded-For.
    assert_anthropic_error(refused, 403, "permission_error", ip_message(PROXY))
    # nginx's request id reached the app, which answers with it.
    assert re.fullmatch("[0-9a-f]{32}", refused.headers["request-id"])

    services.api_key_update(key=relay.key, actor=member, allowed_ips=PROXY)

    assert front.call(relay.plaintext, source=PROXY).status == 200
    refused = front.call(relay.plaintext, source=CLIENT)
    assert_anthropic_error(refused, 403, "permission_error", ip_message(CLIENT))


def test_a_clients_own_forwarded_for_does_not_pass_the_restriction(relay, member, front):
    """Also from nginx's own address, which the app trusts: nginx replaces the header instead
    of appending to it, so the app never sees what the client wrote."""
    services.api_key_update(key=relay.key, actor=member, allowed_ips="10.9.9.9")

    for forwarded_for in ("10.9.9.9", f"10.9.9.9, {PROXY}", f"10.9.9.9, {CLIENT}"):
        for source in (CLIENT, PROXY):
            response = front.call(
                relay.plaintext, source=source, headers={"x-forwarded-for": forwarded_for}
            )
            assert_anthropic_error(response, 403, "permission_error", ip_message(source))
    assert relay.primary.requests == []


def test_a_body_over_the_relays_limit_gets_the_relays_answer_not_nginxs(relay, front):
    """client_max_body_size lets a body just over RELAY_MAX_BODY_BYTES through, so the client
    gets the relay's JSON 413, which the SDKs read, rather than nginx's HTML page."""
    limit = settings.RELAY_MAX_BODY_BYTES
    padding = "x" * (limit - len(json.dumps({**MESSAGE, "metadata": {"pad": ""}})) + 1)

    response = front.call(
        relay.plaintext, source=CLIENT, body={**MESSAGE, "metadata": {"pad": padding}}
    )

    assert response.headers["content-type"] == "application/json"
    assert_anthropic_error(
        response,
        413,
        "request_too_large",
        "The request body is larger than this relay's limit of 32 MiB.",
    )
