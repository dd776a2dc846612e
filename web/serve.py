"""The web server: waitress, which reads every request whole before a thread serves it.

A slow or stalled client (one that sends ``Content-Length: 10000000`` and then nothing) holds
only a socket in waitress's I/O loop and a buffer (spilled to a temporary file past 512 KB),
never one of the threads that run the app; an idle connection is closed after
``KSEG_WEB_CHANNEL_TIMEOUT`` seconds. Responses are written back by the same loop, so a slow
reader does not hold a thread either. gunicorn's sync and threaded workers read the body
inside the worker, which is why two stalled uploads used to take the service down.

What waitress refuses itself (a malformed request line, headers over its limit, a body over
``max_request_body_size``) is answered with the API's JSON error body, not text.

    python -m kseg.web.serve   # what ``kseg web`` runs
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from typing import Any

from waitress import create_server
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from kseg.shared.settings import Settings, get_settings

log = logging.getLogger("kseg.web")

#: waitress's refusals → the contract's error code, what was wrong, and what to do.
REFUSALS: dict[int, tuple[str, str, str]] = {
    400: ("bad_request", "The request is malformed", "check its syntax and headers"),
    413: ("upload_too_large", "The request body is over the server's limit", "send less"),
    431: (
        "headers_too_large",
        "The request line and headers are over the server's limit of 256 KB",
        "send less",
    ),
    500: ("internal_error", "The server failed", "try again, and report it if it persists"),
}


def refusal_body(status: int, detail: str = "") -> bytes:
    """The contract's JSON error body for a request the server refused before the app."""
    code, what, todo = REFUSALS.get(status, REFUSALS[400])
    detail = detail.strip().rstrip(".")
    if detail and status != 500:  # waitress's own words: what exactly was wrong
        what = f"{what} ({detail})"
    return json.dumps({"error": {"code": code, "message": f"{what}; {todo}."}}).encode()


class JsonErrorTask(ErrorTask):  # type: ignore[misc]
    """waitress's error response, with the contract's JSON body instead of plain text."""

    def execute(self) -> None:
        error = self.request.error
        body = refusal_body(error.code, str(getattr(error, "body", "") or ""))
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):  # type: ignore[misc]
    error_task_class = JsonErrorTask


def server_options(settings: Settings) -> dict[str, Any]:
    """waitress's adjustments from the settings."""
    return {
        "host": settings.host,
        "port": settings.port,
        "threads": settings.web_threads,
        "connection_limit": settings.web_connection_limit,
        "channel_timeout": settings.web_channel_timeout,
        # How often idle connections are looked for (waitress: every 30 s).
        "cleanup_interval": max(1, min(30, settings.web_channel_timeout // 2)),
        # Over the app's own limit (which answers a friendlier 413, and the pages' form an
        # HTML page): this one only stops bodies no form or client of kseg would send.
        "max_request_body_size": settings.max_upload_bytes + 16 * 1024 * 1024,
        "ident": "kseg",
        "expose_tracebacks": False,
    }


def make_server(app: Any, settings: Settings) -> Any:
    """A waitress server for ``app`` (not yet running: call ``.run()``)."""
    server = create_server(app, **server_options(settings))
    # The listening server makes a channel per connection from this class attribute.
    server.channel_class = JsonErrorChannel
    return server


def main() -> int:
    from kseg.shared.store.db import NotMigratedError, ensure_migrated
    from kseg.web import create_app

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        ensure_migrated()
    except NotMigratedError as exc:
        print(f"kseg: error: {exc}", file=sys.stderr)
        return 1
    settings = get_settings()
    server = make_server(create_app(), settings)

    def stop(_signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    log.info(
        "serving on http://%s:%d with %d threads (waitress; at most %d connections, idle ones "
        "closed after %d s)",
        settings.host,
        settings.port,
        settings.web_threads,
        settings.web_connection_limit,
        settings.web_channel_timeout,
    )
    try:
        server.run()
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
