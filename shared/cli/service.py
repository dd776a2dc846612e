"""The ``kseg`` command: run the service (``up``, ``web``, ``worker``, ``beat``), manage it
(``migrate``, ``token create|list|revoke``), use a running one (``submit``, ``fetch``) and
segment one image without any service (``segment``).

The service commands start their servers as child processes (waitress, celery), so this
module imports neither Flask nor Celery.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

from kseg.shared.settings import Settings, get_settings

STOP_GRACE_SECONDS = 5.0


def _fail(message: str, code: int = 1) -> int:
    print(f"kseg: error: {message}", file=sys.stderr)
    return code


def _require_migrated(settings: Settings) -> int | None:
    from kseg.shared.store.db import NotMigratedError, ensure_migrated

    try:
        ensure_migrated(settings.database_url)
    except NotMigratedError as exc:
        return _fail(str(exc))
    except Exception as exc:  # database unreachable: say which and how to fix it
        return _fail(
            f"cannot reach the database ({type(exc).__name__}: {exc}); "
            "check DATABASE_URL and that the server is running"
        )
    return None


# ---------------------------------------------------------------- child process commands


def web_command(settings: Settings) -> list[str]:
    """The web server: waitress in one process with ``KSEG_WEB_THREADS`` threads, reading each
    request whole before a thread serves it, so slow clients cannot take it down
    (``kseg.web.serve`` says why; the README why not gunicorn)."""
    return [sys.executable, "-m", "kseg.web.serve"]


def worker_command(
    settings: Settings, queues: tuple[str, ...] | None = None, *, quiet: bool = False
) -> list[str]:
    """``celery worker`` taking the classes of work ``queues`` (default: the settings'),
    interactive first when it takes both. ``quiet`` (under ``kseg up``): no banner, and only
    warnings and errors in its log."""
    from kseg.shared.messaging.celery_config import queue_name

    names = ",".join(queue_name(settings, cls) for cls in queues or settings.worker_queues)
    return _celery(
        "worker",
        "-Q",
        names,
        f"--concurrency={settings.worker_concurrency}",
        "--without-gossip",
        "--without-mingle",
        quiet=quiet,
    )


def webhooks_command(settings: Settings, *, quiet: bool = False) -> list[str]:
    """The webhook sender: a Celery worker on the webhooks queue only, whose
    ``KSEG_WEBHOOK_CONCURRENCY`` threads wait on receivers (I/O, not CPU), so no worker that
    segments ever waits on a slow receiver."""
    from kseg.shared.messaging.celery_config import WEBHOOKS, queue_name

    return _celery(
        "worker",
        "-Q",
        queue_name(settings, WEBHOOKS),
        "--pool=threads",
        f"--concurrency={settings.webhook_concurrency}",
        "--without-gossip",
        "--without-mingle",
        "-n",
        "webhooks@%h",
        quiet=quiet,
    )


def beat_command(settings: Settings, *, quiet: bool = False) -> list[str]:
    settings.instance_dir.mkdir(parents=True, exist_ok=True)
    return _celery("beat", "-s", str(settings.instance_dir / "celerybeat-schedule"), quiet=quiet)


def _celery(command: str, *args: str, quiet: bool = False) -> list[str]:
    """``celery -A kseg.worker.celery_app COMMAND --loglevel=INFO ARGS`` in this Python;
    ``quiet``: ``celery --quiet`` (no banner) and ``--loglevel=WARNING``."""
    level = "WARNING" if quiet else "INFO"
    return [
        sys.executable, "-m", "celery", "-A", "kseg.worker.celery_app",
        *(["--quiet"] if quiet else []), command, f"--loglevel={level}", *args,
    ]  # fmt: skip


def _exec(argv: list[str]) -> int:
    os.execv(argv[0], argv)
    return 0  # not reached


def cmd_web(args: argparse.Namespace) -> int:
    settings = get_settings()
    if (code := _require_migrated(settings)) is not None:
        return code
    if args.dev:
        return _exec(
            [
                sys.executable,
                "-m",
                "flask",
                "--app",
                "kseg.web:create_app",
                "run",
                "--debug",
                "--host",
                settings.host,
                "--port",
                str(settings.port),
            ]
        )
    return _exec(web_command(settings))


def cmd_worker(args: argparse.Namespace) -> int:
    from kseg.shared.settings import parse_queues

    settings = get_settings()
    queues = settings.worker_queues
    if args.queues:
        try:
            queues = parse_queues(args.queues)
        except ValueError as exc:
            return _fail(f"--queues: {exc}", 2)
        os.environ["KSEG_WORKER_QUEUES"] = ",".join(queues)  # for the worker's heartbeat
    if (code := _require_migrated(settings)) is not None:
        return code
    return _exec(worker_command(settings, queues))


def cmd_webhooks(_args: argparse.Namespace) -> int:
    settings = get_settings()
    if (code := _require_migrated(settings)) is not None:
        return code
    return _exec(webhooks_command(settings))


def cmd_beat(_args: argparse.Namespace) -> int:
    settings = get_settings()
    if (code := _require_migrated(settings)) is not None:
        return code
    return _exec(beat_command(settings))


def cmd_migrate(_args: argparse.Namespace) -> int:
    from kseg.shared.store.db import current_revision, get_engine, migrate

    settings = get_settings()
    try:
        migrate(settings.database_url)
    except Exception as exc:
        return _fail(f"migration failed: {type(exc).__name__}: {exc}")
    revision = current_revision(get_engine(settings.database_url))
    print(f"kseg: database {_safe_url(settings.database_url)} is at revision {revision}")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from kseg.shared.store.auth import create_token
    from kseg.shared.store.db import session_scope

    settings = get_settings()
    if (code := _require_migrated(settings)) is not None:
        return code
    with session_scope(settings.database_url) as session:
        token = create_token(session, args.name, args.label or args.name)
    print(token)
    print(
        f"kseg: token for owner {args.name!r}; it is shown only now. "
        f"Use it as: Authorization: Bearer <token>",
        file=sys.stderr,
    )
    return 0


def _when(instant: datetime | None) -> str:
    return "-" if instant is None else instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def cmd_token_list(args: argparse.Namespace) -> int:
    from kseg.shared.cli.tables import format_table
    from kseg.shared.store.auth import list_tokens
    from kseg.shared.store.db import session_scope

    settings = get_settings()
    if (code := _require_migrated(settings)) is not None:
        return code
    with session_scope(settings.database_url) as session:
        tokens = list_tokens(session, args.owner, include_revoked=args.all)
    if not tokens:
        whose = f" for owner {args.owner!r}" if args.owner else ""
        hint = "" if args.all else " (--all also lists revoked ones)"
        print(
            f"kseg: no tokens{whose}{hint}; create one with `kseg token create NAME`",
            file=sys.stderr,
        )
        return 0
    rows = [("ID", "OWNER", "LABEL", "KIND", "CREATED (UTC)", "LAST USED", "STATUS")]
    rows += [
        (
            token.id[:8],
            token.owner,
            token.label,
            "sign-in link" if token.one_time else "token",
            _when(token.created_at),
            _when(token.last_used_at),
            token.status,
        )
        for token in tokens
    ]
    print(format_table(rows))
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from kseg.shared.store.auth import TokenLookupError, revoke_token
    from kseg.shared.store.db import session_scope

    settings = get_settings()
    if (code := _require_migrated(settings)) is not None:
        return code
    try:
        with session_scope(settings.database_url) as session:
            token, revoked_now = revoke_token(session, args.token)
    except TokenLookupError as exc:
        return _fail(str(exc))
    what = f"token {token.id[:8]} (owner {token.owner!r}, label {token.label!r})"
    if revoked_now:
        print(f"kseg: revoked {what}; requests bearing it now answer 401")
    else:
        print(f"kseg: {what} was already revoked on {_when(token.revoked_at)} UTC")
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# ---------------------------------------------------------------- up


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


def sign_in_link(settings: Settings, base_url: str, owner: str | None = None) -> str:
    """A fresh one-time sign-in link to the pages at ``base_url`` for ``owner`` (default: the
    default owner), minted in the database of ``settings``; it works once."""
    from kseg.shared.store.auth import DEFAULT_OWNER, create_token
    from kseg.shared.store.db import session_scope

    with session_scope(settings.database_url) as session:
        token = create_token(session, owner or DEFAULT_OWNER, "sign-in link", one_time=True)
    return f"{base_url.rstrip('/')}/login/{token}"


def _owner_exists(settings: Settings, name: str) -> bool:
    from sqlalchemy import select

    from kseg.shared.store.db import session_scope
    from kseg.shared.store.models import Owner

    with session_scope(settings.database_url) as session:
        return session.scalar(select(Owner.id).where(Owner.name == name)) is not None


def cmd_login_link(args: argparse.Namespace) -> int:
    """``kseg login-link``: a fresh one-time sign-in link, e.g. after signing out."""
    settings = get_settings()
    if (code := _require_migrated(settings)) is not None:
        return code
    if args.owner and not _owner_exists(settings, args.owner):
        return _fail(
            f"no owner {args.owner!r}; `kseg token list --all` shows the owners, "
            f"`kseg token create {args.owner}` makes one"
        )
    base = args.url or settings.service_url()
    print(sign_in_link(settings, base, args.owner))
    whose = f"owner {args.owner!r}" if args.owner else "the default owner"
    print(
        f"kseg: a one-time sign-in link for {whose}; it works once (run `kseg login-link` "
        "again for another)",
        file=sys.stderr,
    )
    return 0


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
        return _fail(f"KSEG_API_TOKEN: {exc}")
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
    broker = "embedded (filesystem)" if settings.embedded_broker else _safe_url(settings.broker_url)
    link = None
    with contextlib.suppress(Exception):
        link = sign_in_link(settings, url)
    if not stopping["flag"]:
        print(
            banner(
                url=url,
                database=_safe_url(settings.database_url),
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


# ---------------------------------------------------------------- segment


def cmd_segment(args: argparse.Namespace) -> int:
    from kseg.shared.cli.segment import run_segment

    return int(run_segment(args))


class _Parser(argparse.ArgumentParser):
    """One line on stderr for a usage error, naming where help is (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        print(f"kseg: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kseg",
        description="Segment images by K-Means colour clustering: as a service, or one image "
        "at a time.",
        epilog="Settings come from the environment (DATABASE_URL, CELERY_BROKER_URL, KSEG_HOST, "
        "KSEG_PORT, KSEG_API_TOKEN, …; see the README). Unset, kseg runs on SQLite under "
        "./instance and a broker that needs no server.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "up",
        help="migrate, then run web + worker + beat + webhooks until Ctrl-C, restarting one "
        "that exits",
        description="Migrate the database, then run web, worker, beat and the webhook sender "
        "until Ctrl-C, "
        "restarting one that exits. Once web and a worker answer it prints where the service "
        "is, a token and a one-time sign-in link: its last lines until something happens. The "
        "web access log goes to instance/access.log; the URL is kept in instance/api_url "
        "beside the token (instance/api_token), where `kseg submit` run here finds them.",
    )
    p.add_argument(
        "--access-log",
        metavar="WHERE",
        default=None,
        help="where the web access log goes: stdout, off, or a file (default: "
        "KSEG_ACCESS_LOG if set, else instance/access.log)",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="the worker's and beat's banners and INFO lines too (a line per task); by "
        "default they log warnings and errors only",
    )
    p.set_defaults(func=cmd_up)
    p = sub.add_parser(
        "login-link",
        help="print a fresh one-time sign-in link for the web pages",
        description="Mint a one-time sign-in link in this service's database (as `kseg up` "
        "prints one) and print it: for signing in again after signing out, or on another "
        "browser. Each link works once.",
    )
    p.add_argument(
        "--owner", metavar="NAME", default=None, help="whose link (default: the default owner)"
    )
    p.add_argument(
        "--url",
        metavar="URL",
        default=None,
        help="the service's address in the link (default: KSEG_URL, else KSEG_HOST/KSEG_PORT, "
        "else the URL `kseg up` saved in instance/api_url, else http://127.0.0.1:8000)",
    )
    p.set_defaults(func=cmd_login_link)
    p = sub.add_parser("web", help="run the web server (waitress)")
    p.add_argument("--dev", action="store_true", help="Flask's debug server instead")
    p.set_defaults(func=cmd_web)
    p = sub.add_parser(
        "worker",
        help="run a Celery worker",
        description="Run a Celery worker of KSEG_WORKER_CONCURRENCY processes. A free process "
        "takes waiting interactive jobs (submitted one by one) before batch jobs (made by "
        "gallery runs). Run workers for one class only to keep capacity apart, e.g. one "
        "`kseg worker --queues interactive` beside `kseg worker --queues batch`.",
    )
    p.add_argument(
        "--queues",
        metavar="LIST",
        help="classes of work to take, comma-separated: interactive, batch "
        "(default: KSEG_WORKER_QUEUES, else both)",
    )
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser("beat", help="run Celery beat (the sweeper and schedules)")
    p.set_defaults(func=cmd_beat)
    p = sub.add_parser(
        "webhooks",
        help="run the webhook sender (a worker of threads on the webhooks queue)",
        description="Send webhook deliveries: a Celery worker of KSEG_WEBHOOK_CONCURRENCY "
        "threads reading only the webhooks queue, so that segmentation workers never wait on "
        "a slow receiver. `kseg up` runs one.",
    )
    p.set_defaults(func=cmd_webhooks)
    p = sub.add_parser("migrate", help="bring the database schema up to date")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("token", help="manage API tokens")
    token_sub = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    t = token_sub.add_parser(
        "create", help="create an owner (if new) and a token for it; prints the token"
    )
    t.add_argument("name", metavar="NAME", help="owner name, e.g. alice")
    t.add_argument("--label", help="a label for the token (default: the owner name)")
    t.set_defaults(func=cmd_token_create)
    t = token_sub.add_parser(
        "list",
        help="list tokens (never the tokens themselves): id, owner, label, last use",
        description="List API tokens, oldest first. The ID column is what `kseg token revoke` "
        "takes. Tokens are never shown again after `kseg token create`; only their hashes "
        "are stored.",
    )
    t.add_argument("owner", metavar="OWNER", nargs="?", help="only this owner's tokens")
    t.add_argument(
        "--all", action="store_true", help="also list revoked tokens and used sign-in links"
    )
    t.set_defaults(func=cmd_token_list)
    t = token_sub.add_parser(
        "revoke",
        help="revoke a token: requests bearing it answer 401 from now on",
        description="Revoke an API token or an unused sign-in link. Give the ID that "
        "`kseg token list` shows (or any unique prefix of at least 4 characters), or the "
        "token itself, e.g. one that leaked.",
    )
    t.add_argument("token", metavar="ID|TOKEN", help="token id (prefix) or the token itself")
    t.set_defaults(func=cmd_token_revoke)

    from kseg.shared.cli.client import add_client_parsers

    add_client_parsers(sub)
    try:
        from kseg.shared.cli.segment import add_segment_parser
    except ImportError:  # pragma: no cover - the core CLI ships with the core
        pass
    else:
        add_segment_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
