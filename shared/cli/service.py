"""The ``kseg`` command: run the service (``up``, ``web``, ``worker``, ``beat``), manage it
(``migrate``, ``token create|list|revoke``), use a running one (``submit``, ``fetch``) and
segment one image without any service (``segment``).

The service commands start their servers as child processes (waitress, celery), so this
module imports neither Flask nor Celery.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from kseg.shared.cli.processes import (
    cmd_beat,
    cmd_migrate,
    cmd_web,
    cmd_webhooks,
    cmd_worker,
)
from kseg.shared.cli.tokens import (
    cmd_login_link,
    cmd_token_create,
    cmd_token_list,
    cmd_token_revoke,
)
from kseg.shared.cli.up import cmd_up

# ---------------------------------------------------------------- segment


def cmd_segment(args: argparse.Namespace) -> int:
    from kseg.shared.cli.segment import run_segment

    return int(run_segment(args))


class _Parser(argparse.ArgumentParser):
    """One line on stderr for a usage error, naming where help is (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        print(f"kseg: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def command(
    sub: Any, func: Callable[[argparse.Namespace], int], name: str, **options: Any
) -> argparse.ArgumentParser:
    """Add the sub-command ``name`` run by ``func`` (``options``: ``help``, ``description``)."""
    p: argparse.ArgumentParser = sub.add_parser(name, **options)
    p.set_defaults(func=func)
    return p


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

    p = command(
        sub,
        cmd_up,
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
    p = command(
        sub,
        cmd_login_link,
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
    p = command(sub, cmd_web, "web", help="run the web server (waitress)")
    p.add_argument("--dev", action="store_true", help="Flask's debug server instead")
    p = command(
        sub,
        cmd_worker,
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
    command(sub, cmd_beat, "beat", help="run Celery beat (the sweeper and schedules)")
    command(
        sub,
        cmd_webhooks,
        "webhooks",
        help="run the webhook sender (a worker of threads on the webhooks queue)",
        description="Send webhook deliveries: a Celery worker of KSEG_WEBHOOK_CONCURRENCY "
        "threads reading only the webhooks queue, so that segmentation workers never wait on "
        "a slow receiver. `kseg up` runs one.",
    )
    command(sub, cmd_migrate, "migrate", help="bring the database schema up to date")

    p = sub.add_parser("token", help="manage API tokens")
    token_sub = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    t = command(
        token_sub,
        cmd_token_create,
        "create",
        help="create an owner (if new) and a token for it; prints the token",
    )
    t.add_argument("name", metavar="NAME", help="owner name, e.g. alice")
    t.add_argument("--label", help="a label for the token (default: the owner name)")
    t = command(
        token_sub,
        cmd_token_list,
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
    t = command(
        token_sub,
        cmd_token_revoke,
        "revoke",
        help="revoke a token: requests bearing it answer 401 from now on",
        description="Revoke an API token or an unused sign-in link. Give the ID that "
        "`kseg token list` shows (or any unique prefix of at least 4 characters), or the "
        "token itself, e.g. one that leaked.",
    )
    t.add_argument("token", metavar="ID|TOKEN", help="token id (prefix) or the token itself")

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
