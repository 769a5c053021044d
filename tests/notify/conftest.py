import hashlib
import hmac
import http.server
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from rest_framework.test import APIClient

from keys import services as keys_services
from notify import services
from notify.models import Webhook

from .. import certificates
from ..factories import UserFactory, grant
from .usage import ingest


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 (a free port) that records every request and answers
    each with the next of `answers` (status, body), the last one repeated."""

    url: str
    requests: list[Received] = field(default_factory=list)
    answers: list[tuple[int, bytes]] = field(default_factory=lambda: [(200, b"ok")])

    def answer(self) -> tuple[int, bytes]:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def verify(secret: str, received: Received) -> bool:
    """What a receiver does: recompute X-HCAI-Signature over the raw body it got."""
    parts = dict(item.split("=", 1) for item in received.headers["X-HCAI-Signature"].split(","))
    expected = hmac.new(
        secret.encode(), parts["t"].encode() + b"." + received.body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


@pytest.fixture
def receiver():
    state: Receiver

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            state.requests.append(Received(self.path, dict(self.headers), self.rfile.read(length)))
            status, body = state.answer()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            if 300 <= status < 400:
                self.send_header("Location", "http://169.254.169.254/")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = Receiver(url=f"http://127.0.0.1:{server.server_port}/hooks/hcai?token=t0p")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def silent_receiver():
    """A socket that accepts connections and never answers: the timeout path. Yields its URL and
    the list of connections it accepted."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/slow", accepted
    stop.set()
    thread.join(5)
    for connection in accepted:
        connection.close()
    listener.close()


@pytest.fixture
def make_webhook(team, lead) -> Callable[..., tuple[Webhook, str]]:
    """make_webhook(url, event_types=["*"]): a webhook of `team` made by `lead` through the
    service; returns (webhook, secret)."""

    def make(url: str, event_types: list[str] | None = None, **kwargs):
        return services.webhook_create(
            actor=kwargs.get("actor", lead),
            team=kwargs.get("team", team),
            url=url,
            event_types=event_types or ["*"],
        )

    return make


@pytest.fixture
def staff(db):
    """Staff holding every permission of the notify app, as an operator would."""
    return grant(UserFactory(username="staff", is_staff=True), "notify.*", "keys.*")


@pytest.fixture
def api():
    """api(user): an API client sending a fresh API token of `user`, as in tests/keys/api."""

    def client_for(user) -> APIClient:
        client = APIClient()
        issued = keys_services.api_token_create(user=user, name="tests", actor=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {issued.plaintext}")
        return client

    return client_for


@pytest.fixture
def tls_receiver(tmp_path):
    """An https server on 127.0.0.1 with a self-signed certificate for hooks.example.test.
    Yields (port, the server names clients asked for in SNI, the requests it answered)."""
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificates.self_signed("hooks.example.test", dns=["hooks.example.test"]).write(
        cert_file, key_file
    )
    server_names: list[str | None] = []
    answered: list[str] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    context.sni_callback = lambda sock, server_name, ctx: server_names.append(server_name)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            answered.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    class TLSServer(http.server.ThreadingHTTPServer):
        def get_request(self):
            connection, address = super().get_request()
            return context.wrap_socket(connection, server_side=True), address

        def handle_error(self, request, client_address):
            pass  # the client refusing the certificate ends the handshake

    server = TLSServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port, server_names, answered
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def settle(django_capture_on_commit_callbacks):
    """Ingest records (as the relay records them, then the real write-and-settle) and run what
    waits for the commit: the fold's usage_settled signal and its receivers."""

    def run(*records):
        with django_capture_on_commit_callbacks(execute=True):
            return ingest(list(records))

    return run
