"""Shared test fixtures: real PostgreSQL, real Redis, real Celery workers, real web servers.

Servers are the machine's own (PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379); each
test session uses its own database name, its own Redis db number and its own queue name, and
cleans up after itself. Where a server is absent the test skips with the reason, unless
``KSEG_REQUIRE_SERVICES=1`` (set by CI), which turns such skips into failures.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT.parent / "shared" / "images"
PG_HOST = os.environ.get("KSEG_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("KSEG_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("KSEG_TEST_PG_USER", "postgres")
REDIS_HOST = os.environ.get("KSEG_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("KSEG_TEST_REDIS_PORT", "6379"))
REDIS_DB = int(os.environ.get("KSEG_TEST_REDIS_DB", "13"))
REQUIRE_SERVICES = os.environ.get("KSEG_REQUIRE_SERVICES", "") == "1"
RUN_ID = uuid.uuid4().hex[:8]


def need(reason: str) -> None:
    """Skip for a missing server, or fail when CI requires every server."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required server unavailable (KSEG_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    waited = what or getattr(predicate, "__name__", "a condition")
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {waited}: {last!r}")


# ---------------------------------------------------------------- servers


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    if not port_open(PG_HOST, PG_PORT):
        need(f"PostgreSQL is not listening on {PG_HOST}:{PG_PORT}")
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres"


def _pg_exec(admin_url: str, sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def pg_database(pg_admin_url: str) -> Callable[[str], str]:
    """A factory of fresh, migrated PostgreSQL databases, all dropped at session end."""
    created: list[str] = []

    def make(tag: str = "db") -> str:
        from kseg.shared.store.db import migrate

        name = f"kseg_test_{RUN_ID}_{tag}_{len(created)}"
        _pg_exec(pg_admin_url, f'CREATE DATABASE "{name}"')
        created.append(name)
        url = pg_admin_url.rsplit("/", 1)[0] + f"/{name}"
        migrate(url)
        return url

    yield make  # type: ignore[misc]
    from kseg.shared.store.db import dispose_all

    dispose_all()
    for name in created:
        with contextlib.suppress(Exception):
            _pg_exec(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url(pg_database: Callable[[str], str]) -> str:
    """One migrated PostgreSQL database for the session."""
    return pg_database("main")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    if not port_open(REDIS_HOST, REDIS_PORT):
        need(f"Redis is not listening on {REDIS_HOST}:{REDIS_PORT}")
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
    yield url
    _redis_cleanup(url)


def _redis_cleanup(url: str) -> None:
    """Delete what this session's queues and workers left behind (and nothing else): its
    queues, their bindings, and the unacked messages of the workers it killed."""
    try:
        import redis
    except ImportError:
        return
    client = redis.Redis.from_url(url)
    mark = RUN_ID.encode()
    try:
        for key in client.scan_iter(match=f"*{RUN_ID}*"):
            client.delete(key)
        for key in client.scan_iter(match="_kombu.binding.*"):
            for member in client.smembers(key):
                if mark in member:
                    client.srem(key, member)  # Redis drops a set with its last member
        # kombu's expiry bookkeeping for binding sets now gone (emptied above, or earlier:
        # say, the pidbox's, when its last worker went before the cleanup ran).
        for name in client.zrange("_kombu.binding_deadlines", 0, -1):
            if not client.exists(b"_kombu.binding." + name):
                client.zrem("_kombu.binding_deadlines", name)
        for tag, payload in client.hscan_iter("unacked"):
            if mark in payload:
                client.hdel("unacked", tag)
                client.zrem("unacked_index", tag)
    finally:
        client.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A private redis-server on a free port, stopped and started by the test, by pid."""
    binary = shutil.which("redis-server")
    if binary is None:
        need("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    state: dict[str, Any] = {"port": port, "proc": None}

    def start() -> None:
        state["proc"] = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: port_open("127.0.0.1", port, 0.2), 15, what="redis-server to listen")

    def stop() -> None:
        proc = state["proc"]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)  # a crash: whatever it held is gone
            proc.wait(10)
        state["proc"] = None

    state.update(start=start, stop=stop, url=f"redis://127.0.0.1:{port}/0")
    start()
    yield state
    stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    from kseg.shared.store.db import migrate

    url = f"sqlite:///{tmp_path / 'instance' / 'kseg.db'}"
    migrate(url)
    return url


# ---------------------------------------------------------------- settings and processes


def service_env(
    database_url: str, broker_url: str, instance_dir: Path, **extra: Any
) -> dict[str, str]:
    """Environment for a kseg process under test: its own queue, fast sweeps and heartbeats."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSEG_", "CELERY_"))}
    env.update(
        {
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": broker_url,
            "KSEG_INSTANCE_DIR": str(instance_dir),
            "KSEG_QUEUE": f"kseg-test-{RUN_ID}-{uuid.uuid4().hex[:6]}",
            "KSEG_WORKER_CONCURRENCY": "2",
            "KSEG_HEARTBEAT_INTERVAL": "0.5",
            "KSEG_HEARTBEAT_STALE_AFTER": "5",
            "KSEG_QUEUED_STALE_AFTER": "3",
            "KSEG_SWEEP_INTERVAL": "1",
            "KSEG_BROKER_POLLING_INTERVAL": "0.05",
            # Not a line per request in the test output; tests of the access log turn it on.
            "KSEG_ACCESS_LOG": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({key: str(value) for key, value in extra.items()})
    return env


def settings_from(env: dict[str, str]) -> Any:
    """:class:`shared.settings.Settings` as a process with ``env`` would read them."""
    from kseg.shared.settings import load_settings

    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass
class Proc:
    """A child process started by a test and ended by pid."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, grace: float = 2.0) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


def start_process(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
    log_file = log_path.open("wb")
    popen = subprocess.Popen(
        args,
        env=env,
        cwd=str(ROOT),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: stop() ends the pool children too
    )
    log_file.close()
    return Proc(name, popen, log_path)


def start_worker(env: dict[str, str], log_dir: Path) -> Proc:
    """A real Celery worker (prefork pool), started as ``kseg worker`` starts it."""
    from kseg.shared.cli.processes import worker_command

    # Unique (several workers per test) and marked with the session, for the Redis cleanup.
    name = ["-n", f"test-{RUN_ID}-{uuid.uuid4().hex[:6]}@%h"]
    return start_process("worker", worker_command(settings_from(env)) + name, env, log_dir)


def start_beat(env: dict[str, str], log_dir: Path) -> Proc:
    """Celery beat, started as ``kseg beat`` starts it."""
    from kseg.shared.cli.processes import beat_command

    return start_process("beat", beat_command(settings_from(env)), env, log_dir)


# ---------------------------------------------------------------- live web app


@dataclass
class LiveServer:
    """The Flask app served by a real WSGI server on a free port, in a thread."""

    app: Any
    base_url: str
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()  # the port is free (and refuses connections) at once
        self.thread.join(10)


def serve_app(app: Any, port: int | None = None) -> LiveServer:
    """Serve ``app`` on ``port`` (default: a free one)."""
    from werkzeug.serving import make_server

    port = port or free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return LiveServer(app, f"http://127.0.0.1:{port}", server, thread)


@dataclass
class Stack:
    """A running service for integration tests: web (in-process), worker, beat (subprocesses)."""

    backend: str
    env: dict[str, str]
    settings: Any
    app: Any
    base_url: str
    token: str
    log_dir: Path
    processes: list[Proc] = field(default_factory=list)
    server: LiveServer | None = None

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def url(self, path: str) -> str:
        return self.base_url + path

    def new_token(self, owner: str) -> str:
        from kseg.shared.store.auth import create_token
        from kseg.shared.store.db import session_scope

        with session_scope(self.settings.database_url) as session:
            return create_token(session, owner, "test")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} (pid {p.pid})\n{p.log()[-4000:]}" for p in self.processes)

    def stop(self, grace: float = 0.5) -> None:
        # SIGTERM to all first, then wait: their shutdown graces overlap instead of adding up.
        # A short grace: a worker's warm shutdown on the embedded broker waits out its ~2 s
        # poll, and nothing a test checks comes after its stack stops (CI has 15 minutes).
        for proc in self.processes:
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.processes:
            proc.stop(grace=max(0.0, deadline - time.monotonic()))
        if self.server is not None:
            self.server.stop()


def build_stack(
    backend: str,
    database_url: str,
    broker_url: str,
    tmp: Path,
    *,
    workers: int = 1,
    beat: bool = True,
    **extra_env: Any,
) -> Stack:
    from kseg.shared.store.auth import create_token
    from kseg.shared.store.db import session_scope
    from kseg.web import create_app

    instance = tmp / "instance"
    env = service_env(database_url, broker_url, instance, **extra_env)
    settings = settings_from(env)
    with session_scope(database_url) as session:
        token = create_token(session, f"owner-{uuid.uuid4().hex[:6]}", "test")
    app = create_app({"TESTING": True}, settings=settings)
    server = serve_app(app)
    stack = Stack(backend, env, settings, app, server.base_url, token, tmp / "logs", server=server)
    for _ in range(workers):
        stack.processes.append(start_worker(env, stack.log_dir))
    if beat:
        stack.processes.append(start_beat(env, stack.log_dir))
    return stack


@pytest.fixture(params=["postgres-redis", "sqlite-embedded"])
def stack(
    request: pytest.FixtureRequest, tmp_path: Path, pg_database: Callable[[str], str]
) -> Iterator[Stack]:
    """The whole service, once on PostgreSQL + Redis and once on the embedded default."""
    if request.param == "postgres-redis":
        redis = request.getfixturevalue("redis_url")
        database_url = pg_database("stack")
        broker_url = redis
    else:
        database_url = f"sqlite:///{tmp_path / 'instance' / 'kseg.db'}"
        broker_url = "filesystem://"
        from kseg.shared.store.db import migrate

        migrate(database_url)
    built = build_stack(request.param, database_url, broker_url, tmp_path)
    try:
        yield built
    finally:
        built.stop()
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(built.logs())


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def baby_bytes() -> bytes:
    return (IMAGES / "baby.jpg").read_bytes()
