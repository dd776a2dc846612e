"""``kseg up``: the whole service in one command. It migrates, starts web, worker, beat and
the webhook sender as child processes, restarts one that dies (with a backoff, giving up on
one that keeps dying), prints the banner (URL, token, sign-in link) once web and worker
answer, and stops them all on Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from kseg.shared.cli.processes import (
    beat_command,
    cmd_migrate,
    fail,
    safe_url,
    web_command,
    webhooks_command,
    worker_command,
)
from kseg.shared.cli.tokens import sign_in_link
from kseg.shared.settings import Settings, get_settings

STOP_GRACE_SECONDS = 5.0


def _default_token(settings: Settings) -> str:
    """The token ``up`` prints: ``KSEG_API_TOKEN``, or one kept under ``instance/``."""
    from kseg.shared.store.auth import DEFAULT_OWNER, create_token, ensure_token, owner_for_token
    from kseg.shared.store.db import session_scope

    with session_scope(settings.database_url) as session:
        if settings.api_token:
            ensure_token(session, DEFAULT_OWNER, settings.api_token)
            return settings.api_token
        path = settings.api_token_file
        if path.exists():
            token = path.read_text().strip()
            if token and owner_for_token(session, token) is not None:
                return token
        token = create_token(session, DEFAULT_OWNER, "kseg up")
    _write_private(path, token)
    return token


def _write_private(path: Any, text: str) -> None:
    """``text`` and a newline into ``path``, readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    path.chmod(0o600)


def _this_command() -> str:
    """How the user can run ``kseg`` again: ``kseg`` where that is on the PATH, else the
    path this one was started by (``.venv/bin/kseg`` under ``make run``)."""
    import shutil

    argv0 = sys.argv[0]
    if os.path.basename(argv0) != "kseg":
        return "kseg"
    on_path = shutil.which("kseg")
    if on_path and os.path.realpath(on_path) == os.path.realpath(argv0):
        return "kseg"
    return os.path.relpath(argv0)


#: ``kseg up`` restarts a child that exits: after 1 s, then 2, 4, … up to 30 s between tries.
RESTART_FIRST_DELAY = 1.0
RESTART_MAX_DELAY = 30.0
#: A child that stayed up this long (s) before exiting is restarted after the first delay again.
RESTART_STABLE_AFTER = 60.0
#: ``kseg up`` gives up (and stops the rest) at this many exits of one child within the window.
GIVE_UP_CRASHES = 5
GIVE_UP_WINDOW = 120.0

#: What to look at when a child keeps dying, besides its log above.
_CHECK = {
    "web": "that nothing else listens on KSEG_HOST:KSEG_PORT and that the database "
    "(DATABASE_URL) answers",
    "worker": "that the broker (CELERY_BROKER_URL) and the database (DATABASE_URL) answer, and "
    "the memory (the kernel's OOM killer shows as SIGKILL)",
    "beat": "that the broker (CELERY_BROKER_URL) and the database (DATABASE_URL) answer, and "
    "that KSEG_INSTANCE_DIR is writable (beat keeps its schedule there)",
    "webhooks": "that the broker (CELERY_BROKER_URL) and the database (DATABASE_URL) answer",
}


@dataclass
class Backoff:
    """When to restart one child after it exits, or whether to give up: bookkeeping only,
    no processes (times are ``time.monotonic()`` seconds)."""

    streak: int = 0  # exits in a row without a stable run: sets the delay
    crashes: list[float] = field(default_factory=list)  # exit times within the window

    def crashed(self, up_for: float, now: float) -> float | None:
        """Record an exit after ``up_for`` seconds up; the delay before restarting, or None
        to give up (``GIVE_UP_CRASHES`` exits within ``GIVE_UP_WINDOW`` seconds)."""
        if up_for >= RESTART_STABLE_AFTER:
            self.streak = 0
        self.crashes = [t for t in self.crashes if now - t < GIVE_UP_WINDOW] + [now]
        if len(self.crashes) >= GIVE_UP_CRASHES:
            return None
        delay = min(RESTART_MAX_DELAY, RESTART_FIRST_DELAY * 2**self.streak)
        self.streak += 1
        return delay


def describe_exit(returncode: int) -> str:
    """``killed by SIGKILL`` or ``status 1``: how a child ended, from ``Popen.returncode``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"status {returncode}"


class Supervisor:
    """Starts web, worker and beat and restarts one that exits, with exponential backoff
    (``Backoff``); gives up on a child that keeps exiting. ``stop()`` (Ctrl-C) stops all of
    them, escalating to SIGKILL after a grace period so nothing is left behind."""

    def __init__(self) -> None:
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.argv: dict[str, list[str]] = {}
        self.env: dict[str, dict[str, str] | None] = {}
        self.started_at: dict[str, float] = {}
        self.backoff: dict[str, Backoff] = {}
        self.restart_at: dict[str, float] = {}  # children waiting out their delay

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Start child ``name`` (``env``: its environment; default: this one's)."""
        self.argv[name] = argv
        self.env[name] = env
        self.backoff[name] = Backoff()
        self._spawn(name)

    def _spawn(self, name: str) -> None:
        proc = subprocess.Popen(self.argv[name], env=self.env.get(name), start_new_session=True)
        self.children[name] = proc
        self.started_at[name] = time.monotonic()
        print(f"kseg: started {name} (pid {proc.pid})", file=sys.stderr, flush=True)

    def dead(self) -> list[str]:
        return [name for name, proc in self.children.items() if proc.poll() is not None]

    def check(self) -> str | None:
        """Restart the children whose delay has passed and note those that exited; the name
        of a child to give up on (after saying so on stderr), else None."""
        now = time.monotonic()
        for name, proc in list(self.children.items()):
            if name in self.restart_at:
                if now >= self.restart_at[name]:
                    del self.restart_at[name]
                    self._spawn(name)
                continue
            if proc.poll() is None:
                continue
            # Its group too: a SIGKILLed worker's pool processes outlive it, and must not run
            # beside the next worker's pool.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            how = describe_exit(proc.returncode)
            delay = self.backoff[name].crashed(now - self.started_at[name], now)
            if delay is None:
                print(
                    f"kseg: error: {name} exited {GIVE_UP_CRASHES} times within "
                    f"{GIVE_UP_WINDOW:g} s (last: {how}); giving up. See its log above, check "
                    f"{_CHECK.get(name, 'its settings')}, or run `kseg {name}` alone to see it "
                    "fail. Stopping the rest.",
                    file=sys.stderr,
                    flush=True,
                )
                return name
            crashes = len(self.backoff[name].crashes)
            print(
                f"kseg: {name} exited ({how}); restarting in {delay:g} s "
                f"(crash {crashes} of {GIVE_UP_CRASHES})",
                file=sys.stderr,
                flush=True,
            )
            self.restart_at[name] = now + delay
        return None

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                # The leader only: Celery's own shutdown stops its pool.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.children.values():
            remaining = max(0.0, deadline - time.monotonic())
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(remaining)
        for proc in self.children.values():
            # The whole group: a worker's pool children too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def _wait_ready(settings: Settings, supervisor: Supervisor, stopping: dict[str, bool]) -> bool:
    """Wait until the web server answers and a worker heart-beats (``/readyz?workers=1``),
    at most ``UP_READY_TIMEOUT`` s: the children's start-up lines then come before the
    banner, not after it. False when not ready in time (or stopping, or a child died)."""
    import urllib.error
    import urllib.request

    url = f"{settings.listen_url()}/readyz?workers=1"
    deadline = time.monotonic() + UP_READY_TIMEOUT
    while time.monotonic() < deadline and not stopping["flag"] and not supervisor.dead():
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except (OSError, urllib.error.HTTPError):
            time.sleep(0.2)
    return False


#: How long ``kseg up`` waits for web and worker before it prints the banner anyway (s).
UP_READY_TIMEOUT = 60.0


def _up_env(settings: Settings, access_log: str | None) -> tuple[dict[str, str], str]:
    """The web child's environment and where its access log goes, in words: the file
    ``instance/access.log`` unless ``--access-log`` or ``KSEG_ACCESS_LOG`` says otherwise."""
    from pathlib import Path

    from kseg.shared.settings import access_log_setting

    env = dict(os.environ)
    given = access_log if access_log is not None else os.environ.get("KSEG_ACCESS_LOG")
    where = access_log_setting(given)
    if where is False:
        env["KSEG_ACCESS_LOG"] = "0"
        return env, "off"
    if where == "stdout":
        env["KSEG_ACCESS_LOG"] = "stdout"
        return env, "stdout"
    path = settings.instance_dir / "access.log" if where is None else Path(where).expanduser()
    env["KSEG_ACCESS_LOG"] = str(path)
    return env, _short_path(path)


def _short_path(path: Any) -> str:
    """``path`` relative to the working directory when it lies below it."""
    from pathlib import Path

    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def banner(
    *,
    url: str,
    database: str,
    broker: str,
    access_log: str,
    token: str,
    link: str | None,
    command: str,
    ready: bool,
) -> str:
    """What ``kseg up`` prints once web and worker are up: where, how to sign in and to
    submit; the last lines of its output until something happens."""
    lines = [
        "",
        f"kseg is running at {url}",
        f"  database:   {database}",
        f"  broker:     {broker}",
        f"  access log: {access_log}",
        *(
            []
            if ready
            else ["  note: no worker answered yet; jobs wait until one does (see the log above)"]
        ),
        f"  API token (default owner): {token}",
        *(
            [f"  sign in:    {link}   (works once; `{command} login-link` makes another)"]
            if link
            else []
        ),
        f"  account:    {url}/account   (create and revoke API tokens)",
        f"  try: curl -H 'Authorization: Bearer {token}' -F file=@photo.jpg -F k=16 "
        f"{url}/api/v1/jobs",
        f"   or: {command} submit photo.jpg -k 16   (from this folder: no token needed)",
        "Press Ctrl-C to stop.",
        "",
    ]
    return "\n".join(lines)


def cmd_up(args: argparse.Namespace) -> int:
    settings = get_settings()
    if cmd_migrate(args) != 0:
        return 1
    try:
        token = _default_token(settings)
    except ValueError as exc:  # KSEG_API_TOKEN unusable: say why before starting anything
        return fail(f"KSEG_API_TOKEN: {exc}")
    url = settings.listen_url()
    # Beside the token: `kseg submit` run here finds this service on whatever port it is.
    _write_private(settings.api_url_file, url)
    verbose = bool(getattr(args, "verbose", False))
    web_env, access_log = _up_env(settings, getattr(args, "access_log", None))
    supervisor = Supervisor()
    stopping = {"flag": False}

    def on_signal(signum: int, _frame: Any) -> None:
        stopping["flag"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    supervisor.start("web", web_command(settings), web_env)
    supervisor.start("worker", worker_command(settings, quiet=not verbose))
    supervisor.start("beat", beat_command(settings, quiet=not verbose))
    supervisor.start("webhooks", webhooks_command(settings, quiet=not verbose))
    # The banner comes last, once web and worker are up, so their start-up lines do not bury
    # it (nor, unless asked for, the access log: that goes to a file).
    ready = _wait_ready(settings, supervisor, stopping)
    broker = "embedded (filesystem)" if settings.embedded_broker else safe_url(settings.broker_url)
    link = None
    with contextlib.suppress(Exception):
        link = sign_in_link(settings, url)
    if not stopping["flag"]:
        print(
            banner(
                url=url,
                database=safe_url(settings.database_url),
                broker=broker,
                access_log=access_log,
                token=token,
                link=link,
                command=_this_command(),
                ready=ready,
            ),
            flush=True,
        )
    code = 0
    try:
        # No restart once stopping: the flag is checked before each round.
        while not stopping["flag"]:
            if supervisor.check() is not None:
                code = 1
                break
            time.sleep(0.2)
    finally:
        print("kseg: stopping web, worker, beat and webhooks…", file=sys.stderr, flush=True)
        supervisor.stop()
    return code
