"""The real web server (``kseg web``) under slow and stalled clients, and what it refuses.

A client that announces a 10 MB upload and then stalls must hold a socket, not the service:
with 50 of them, ``/healthz`` answers in under a second and a job submitted through the API
succeeds — on the embedded default and with the server settings of ``docker-compose.yml``
(its ``.env.example``) on PostgreSQL + Redis. Requests the server refuses before the app
(headers over its limit, control characters, a broken request line) get the JSON error body.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    IMAGES,
    ROOT,
    Stack,
    free_port,
    service_env,
    settings_from,
    start_process,
    start_worker,
    wait_for,
)
from tests.service.test_e2e import submit, wait_done

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STALLED = 50


def compose_server_settings() -> dict[str, str]:
    """The web server's settings a ``docker compose up`` runs with: ``.env.example``'s
    ``KSEG_WEB_*`` lines and the ``x-app`` anchor's ``KSEG_HOST``."""
    env = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"(KSEG_WEB_\w+)=(.*)", line.strip())
        if match:
            env[match[1]] = match[2]
    compose = (ROOT / "docker-compose.yml").read_text()
    host = re.search(r'KSEG_HOST: "([^"]+)"', compose)
    assert host and env, "docker-compose.yml / .env.example no longer say how web is served"
    env["KSEG_HOST"] = host[1]
    return env


def start_web(kind: str, request: pytest.FixtureRequest, tmp_path: Path, **extra: str) -> Stack:
    """``kseg web`` (as ``kseg up`` and compose start it) and a worker: ``embedded-default`` or
    ``compose-settings`` (PostgreSQL + Redis); the Stack's URL is the real server's."""
    from kseg.shared.cli.processes import web_command
    from kseg.shared.store.auth import create_token
    from kseg.shared.store.db import migrate, session_scope

    if kind == "embedded-default":
        database_url = f"sqlite:///{tmp_path / 'instance' / 'kseg.db'}"
        broker_url = "filesystem://"
        migrate(database_url)
        server = {}
    else:
        database_url = request.getfixturevalue("pg_database")("slow")
        broker_url = request.getfixturevalue("redis_url")
        server = compose_server_settings()
    port = free_port()
    env = service_env(
        database_url, broker_url, tmp_path / "instance", **server, KSEG_PORT=port, **extra
    )
    for key in [k for k in env if k.startswith("KSEG_WEB_") and k not in server and k not in extra]:
        del env[key]  # the defaults, as on a fresh machine
    settings = settings_from(env)
    with session_scope(database_url) as session:
        token = create_token(session, "slow-clients", "test")
    stack = Stack(kind, env, settings, None, f"http://127.0.0.1:{port}", token, tmp_path / "logs")
    stack.processes.append(start_process("web", web_command(settings), env, stack.log_dir))
    stack.processes.append(start_worker(env, stack.log_dir))

    def answers() -> bool:
        with contextlib.suppress(OSError), urllib.request.urlopen(stack.url("/healthz"), timeout=1):
            return True
        assert stack.processes[0].alive(), stack.logs()
        return False

    wait_for(answers, 60, interval=0.1, what="kseg web to answer")
    return stack


@pytest.fixture(params=["embedded-default", "compose-settings"])
def web(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    stack = start_web(request.param, request, tmp_path)
    try:
        yield stack
    finally:
        stack.stop()


def stall(port: int, n: int) -> list[socket.socket]:
    """``n`` uploads that announce 10 MB, send the first kilobyte, and stall."""
    head = (
        b"POST /api/v1/jobs HTTP/1.1\r\nHost: kseg\r\nContent-Length: 10000000\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n" + b"x" * 1024
    )
    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(head)
        socks.append(sock)
    return socks


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_stalled_uploads_do_not_stall_the_service(web: Stack) -> None:
    socks = stall(web.settings.port, STALLED)
    try:

        def healthz() -> None:
            with urllib.request.urlopen(web.url("/healthz"), timeout=5) as resp:
                assert resp.status == 200

        times = [timed(healthz) for _ in range(5)]
        assert max(times) < 1.0, times
        job = submit(web, (IMAGES / "baby.jpg").read_bytes(), "baby.jpg", k=4)
        assert wait_done(web, job["id"], timeout=90)["status"] == "succeeded"
        assert timed(healthz) < 1.0
    finally:
        for sock in socks:
            sock.close()


def raw(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as is; the status, headers and body of the answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    got = b""
    try:
        with contextlib.suppress(OSError):  # the server may close before reading it all
            sock.sendall(data)
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                got += chunk
    finally:
        sock.close()
    head, _, body = got.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines and lines[0].startswith("HTTP/"), got[:300]
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        pytest.param(
            b"GET /api/v1/jobs?" + b"a" * 270_000 + b" HTTP/1.1\r\nHost: k\r\n\r\n",
            431,
            "headers_too_large",
            id="request-line-over-the-limit",
        ),
        pytest.param(
            b"GET /api/v1/jobs HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer "
            + b"a" * 100_000
            + b"\r\nConnection: close\r\n\r\n",
            401,
            "invalid_token",
            id="100-KB-authorization",
        ),
        pytest.param(
            b"GET /api/v1/jobs HTTP/1.1\r\nHost: k\r\nX-Odd: a\x01b\r\nConnection: close\r\n\r\n",
            400,
            "bad_request",
            id="control-character-in-a-header",
        ),
        pytest.param(b"NOT HTTP AT ALL\r\n\r\n", 400, "bad_request", id="broken-request-line"),
    ],
)
@pytest.mark.parametrize("web", ["embedded-default"], indirect=True)
def test_what_the_server_refuses_is_json(web: Stack, data: bytes, status: int, code: str) -> None:
    got, headers, body = raw(web.settings.port, data)
    assert got == status, body[:300]
    assert headers["content-type"].startswith("application/json"), headers
    assert json.loads(body)["error"]["code"] == code


def test_a_stalled_connection_is_closed_after_the_channel_timeout(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    stack = start_web("embedded-default", request, tmp_path, KSEG_WEB_CHANNEL_TIMEOUT="2")
    try:
        (sock,) = stall(stack.settings.port, 1)
        sock.settimeout(0.5)

        def closed() -> bool:
            try:
                return sock.recv(1024) == b""
            except TimeoutError:
                return False
            except OSError:
                return True

        wait_for(closed, 30, interval=0.1, what="the server to close the stalled connection")
    finally:
        stack.stop()
