"""bench/c1.py, the benchmark's concurrency-1 latency client, against small local servers."""

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench import c1

C1 = Path(__file__).resolve().parents[2] / "bench" / "c1.py"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the relay
    disable_nagle_algorithm = True  # headers and body are written separately
    status = 200
    seen: list[tuple[str, dict, bytes]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        self.seen.append((self.path, dict(self.headers), body))
        answer = b'{"ok": true}'
        self.send_response(self.status)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Handler.seen = []
    Handler.status = 200
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_one_connection_one_request_at_a_time_and_a_consistent_summary(server):
    result = c1.run(server + "/v1/messages", b'{"a": 1}', {"x-test": "yes"}, 0.3, 5.0)

    assert result["requests"] > 10
    assert result["requests"] == len(Handler.seen)
    assert result["errors"] == result["status_errors"] == 0
    path, headers, body = Handler.seen[0]
    assert (path, headers["x-test"], body) == ("/v1/messages", "yes", b'{"a": 1}')
    assert result["p50_us"] <= result["p90_us"] <= result["p99_us"] <= result["max_us"]
    # One connection in a closed loop: the mean latency fits in the time per request.
    assert result["mean_us"] <= result["cycle_us"]


def test_raw_adds_every_latency_and_pooled_runs_summarize_as_one(server):
    first = c1.run(server + "/v1/messages", b"{}", {}, 0.2, 5.0, raw=True)
    second = c1.run(server + "/v1/messages", b"{}", {}, 0.2, 5.0, raw=True)

    assert len(first["latencies_us"]) == first["requests"]
    assert "latencies_us" not in c1.run(server + "/v1/messages", b"{}", {}, 0.1, 5.0)
    pooled = c1.summarize(
        first["latencies_us"] + second["latencies_us"],
        first["duration_us"] + second["duration_us"],
        1,
        2,
    )
    assert pooled["requests"] == first["requests"] + second["requests"]
    assert (pooled["status_errors"], pooled["errors"]) == (1, 2)
    assert pooled["max_us"] == max(first["max_us"], second["max_us"])
    assert pooled["mean_us"] <= pooled["cycle_us"]


def test_summarize_takes_nearest_ranks():
    summary = c1.summarize(list(range(1000, 0, -1)), 2000, 0, 0)

    assert (summary["p50_us"], summary["p90_us"], summary["p99_us"]) == (500, 900, 990)
    assert (summary["p999_us"], summary["max_us"], summary["mean_us"]) == (999, 1000, 500.5)
    assert summary["cycle_us"] == 2.0
    assert c1.summarize([], 10, 0, 3)["p99_us"] == 0
    # 0.7 x 10 is 7.000000000000001 in floating point: still rank 7, not 8.
    assert c1.nearest_rank(list(range(1, 11)), 0.7) == 7


def test_error_statuses_are_counted(server):
    Handler.status = 503

    result = c1.run(server + "/v1/messages", b"{}", {}, 0.2, 5.0)

    assert result["requests"] > 0
    assert result["status_errors"] == result["requests"]


def test_a_server_that_hangs_up_is_an_error_and_the_client_reconnects():
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def serve():
        while len(accepted) < 3:
            connection, _ = listener.accept()
            accepted.append(connection)
            connection.recv(65536)
            connection.close()  # no answer at all

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1/messages"
    with pytest.raises(OSError):
        # After three hang-ups the listener stops accepting: the reconnect finally fails.
        listener_closer = threading.Timer(0.5, listener.close)
        listener_closer.start()
        c1.run(url, b"{}", {}, 5.0, 0.5)
    assert len(accepted) >= 3


def run_cli(*args, env=None):
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, str(C1), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=30,
    )


def test_the_program_prints_one_json_summary(server):
    finished = run_cli(
        server + "/v1/messages",
        "--seconds=0.2",
        "--header=content-type: application/json",
        env={"BENCH_BODY": '{"model": "m"}', "BENCH_KEY": "sk-hc-test"},
    )

    assert finished.returncode == 0, finished.stderr
    summary = json.loads(finished.stdout)
    assert summary["requests"] == len(Handler.seen) > 0
    assert Handler.seen[0][1]["x-api-key"] == "sk-hc-test"
    assert "sk-hc-test" not in finished.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--seconds=0"], {"BENCH_BODY": "{}"}, "--seconds must be more than 0"),
        (["--seconds=1", "--header=no colon"], {"BENCH_BODY": "{}"}, "--header must be"),
        (["--seconds=1"], {"BENCH_BODY": ""}, "BENCH_BODY (in the environment) must hold"),
        (["--seconds=x"], {"BENCH_BODY": "{}"}, "argument --seconds: invalid float value"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(server, args, env, message):
    finished = run_cli(server + "/v1/messages", *args, env=env)

    assert finished.returncode == 2
    assert message in finished.stderr
    assert Handler.seen == []  # nothing was sent


def test_a_url_that_is_not_plain_http_is_refused():
    finished = run_cli(
        "https://example.invalid/v1/messages", "--seconds=1", env={"BENCH_BODY": "{}"}
    )

    assert finished.returncode == 2
    assert "the URL must be http://host:port/path" in finished.stderr


def test_an_unreachable_server_is_a_clear_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    finished = run_cli(
        f"http://127.0.0.1:{port}/v1/messages", "--seconds=1", env={"BENCH_BODY": "{}"}
    )

    assert finished.returncode == 1
    assert f"c1.py: cannot reach http://127.0.0.1:{port}/v1/messages" in finished.stderr
