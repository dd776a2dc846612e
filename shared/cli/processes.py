"""The processes of the service (``kseg web``, ``worker``, ``webhooks``, ``beat``) as the
command lines that start them, the commands that exec them, and ``kseg migrate``; with the
two checks every service command makes first (:func:`fail`, :func:`require_migrated`).

They start their servers as child processes (waitress, celery), so this module imports
neither Flask nor Celery.
"""

from __future__ import annotations

import argparse
import os
import sys

from kseg.shared.settings import Settings, get_settings


def fail(message: str, code: int = 1) -> int:
    print(f"kseg: error: {message}", file=sys.stderr)
    return code


def require_migrated(settings: Settings) -> int | None:
    from kseg.shared.store.db import NotMigratedError, ensure_migrated

    try:
        ensure_migrated(settings.database_url)
    except NotMigratedError as exc:
        return fail(str(exc))
    except Exception as exc:  # database unreachable: say which and how to fix it
        return fail(
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
    if (code := require_migrated(settings)) is not None:
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
            return fail(f"--queues: {exc}", 2)
        os.environ["KSEG_WORKER_QUEUES"] = ",".join(queues)  # for the worker's heartbeat
    if (code := require_migrated(settings)) is not None:
        return code
    return _exec(worker_command(settings, queues))


def cmd_webhooks(_args: argparse.Namespace) -> int:
    settings = get_settings()
    if (code := require_migrated(settings)) is not None:
        return code
    return _exec(webhooks_command(settings))


def cmd_beat(_args: argparse.Namespace) -> int:
    settings = get_settings()
    if (code := require_migrated(settings)) is not None:
        return code
    return _exec(beat_command(settings))


def cmd_migrate(_args: argparse.Namespace) -> int:
    from kseg.shared.store.db import current_revision, get_engine, migrate

    settings = get_settings()
    try:
        migrate(settings.database_url)
    except Exception as exc:
        return fail(f"migration failed: {type(exc).__name__}: {exc}")
    revision = current_revision(get_engine(settings.database_url))
    print(f"kseg: database {safe_url(settings.database_url)} is at revision {revision}")
    return 0


def safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
