"""The web app's own access log: a line per request, with no secret in it.

WSGI middleware (``app.wsgi_app``), so it works the same under any WSGI server — waitress,
gunicorn, werkzeug's — and needs none of theirs. Each request ends with one line on the
``kseg.access`` logger (stdout, or the file ``KSEG_ACCESS_LOG`` names — ``kseg up`` names
``instance/access.log`` — unless logging is configured for it), in the common log format
plus the time taken::

    127.0.0.1 - - [23/Jan/2026:10:04:05 +0000] "GET /login/[redacted] HTTP/1.1" 302 189 4.1ms

Tokens never reach it: the segment after ``/login/`` (a one-time sign-in link's token) is
written ``[redacted]``, as are the values of the query parameters ``token``, ``access_token``
and ``api_key`` and anything shaped like a kseg token (``kseg_…``); no header is logged (so
neither ``Authorization`` nor the session cookie). Turned off by ``KSEG_ACCESS_LOG=0``.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from flask import Flask

LOGGER_NAME = "kseg.access"
log = logging.getLogger(LOGGER_NAME)

REDACTED = "[redacted]"
#: Query parameters whose values are never logged (compared case-insensitively).
SECRET_PARAMS = frozenset({"token", "access_token", "api_key"})
#: ``/login/<token>``: the whole segment after ``/login/``, whatever it holds.
_LOGIN_LINK_PATH = re.compile(r"(/login/)[^/]+", re.IGNORECASE)
#: The same inside a query string (say ``next=/login/…``), up to the next parameter.
_LOGIN_LINK_QUERY = re.compile(r"(/login/|%2Flogin%2F)[^/&]+", re.IGNORECASE)
#: The same inside a line of text (werkzeug's log), up to a space, quote, ``/`` or ``&``.
_LOGIN_LINK_IN_TEXT = re.compile(r"(/login/|%2Flogin%2F)[^/&\s\"]+", re.IGNORECASE)
#: Anything shaped like a kseg token (``shared.auth.new_token``), wherever it appears.
_TOKEN_LIKE = re.compile(r"kseg_[A-Za-z0-9_-]{8,}")
#: Characters that could forge or break a log line: controls, quotes, backslashes.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\]')
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is when a line is written (as logging's last-resort
    handler does for stderr), so a replaced stdout (a test's capture) is never a closed one."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logger(path: Path | None = None) -> None:
    """Lines on stdout, or appended to the file ``path`` (``KSEG_ACCESS_LOG=PATH``; ``kseg up``
    sends them to ``instance/access.log``), once per process; unless logging was configured
    for ``kseg.access`` (a handler of its own), which then decides where they go."""
    if log.handlers:
        return
    handler: logging.Handler
    if path is None:
        handler = _StdoutHandler()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Reopened when moved away (logrotate), as a long-running server's log should be.
        handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    # Not to the root logger too: a server that configures it (waitress calls basicConfig)
    # would print every line twice.
    log.propagate = False


def init_app(app: Flask, path: Path | None = None) -> None:
    """Log the requests of ``app`` (wraps its ``wsgi_app``), on stdout or into ``path``."""
    configure_logger(path)
    app.wsgi_app = AccessLog(app.wsgi_app)  # type: ignore[method-assign]


# ---------------------------------------------------------------- what a line says


def _text(value: str) -> str:
    """A WSGI string (bytes as latin-1) as readable, single-line text."""
    with contextlib.suppress(UnicodeEncodeError):  # not a WSGI string after all: as it is
        value = value.encode("latin-1").decode("utf-8", "backslashreplace")
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", value)


def redact_path(path: str) -> str:
    """``path`` with the token of a sign-in link (and anything token-shaped) redacted."""
    path = _LOGIN_LINK_PATH.sub(rf"\1{REDACTED}", path)
    return _TOKEN_LIKE.sub(f"kseg_{REDACTED}", path)


def redact_query(query: str) -> str:
    """``query`` (as sent, still percent-encoded) with the values of secret parameters, sign-in
    links and anything token-shaped redacted."""
    if not query:
        return query
    parts = []
    for part in query.split("&"):
        name, eq, _value = part.partition("=")
        if unquote_plus(name).strip().lower() in SECRET_PARAMS:
            part = f"{name}={REDACTED}" if eq else name
        parts.append(part)
    query = _LOGIN_LINK_QUERY.sub(rf"\1{REDACTED}", "&".join(parts))
    return _TOKEN_LIKE.sub(f"kseg_{REDACTED}", query)


class RedactTokens(logging.Filter):
    """For werkzeug's own request log (``kseg web --dev``, its test servers): the request line
    it writes, with sign-in links and token-shaped strings redacted as in ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _TOKEN_LIKE.sub(
            f"kseg_{REDACTED}", _LOGIN_LINK_IN_TEXT.sub(rf"\1{REDACTED}", message)
        )
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redact_werkzeug_log() -> None:
    """Install :class:`RedactTokens` on the ``werkzeug`` logger, once per process."""
    logger = logging.getLogger("werkzeug")
    if not any(isinstance(f, RedactTokens) for f in logger.filters):
        logger.addFilter(RedactTokens())


def request_target(environ: WSGIEnvironment) -> str:
    """The request's path and query as the log shows them: redacted, single-line."""
    path = redact_path(_text(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")))
    query = redact_query(_text(environ.get("QUERY_STRING", "")))
    return f"{path or '/'}?{query}" if query else path or "/"


def _clf_time(now: float) -> str:
    t = time.gmtime(now)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def format_line(
    environ: WSGIEnvironment, status: str, sent: int, duration_s: float, now: float
) -> str:
    remote = _text(str(environ.get("REMOTE_ADDR") or "-"))
    method = _text(str(environ.get("REQUEST_METHOD") or "-"))
    protocol = _text(str(environ.get("SERVER_PROTOCOL") or "-"))
    return (
        f'{remote} - - [{_clf_time(now)}] "{method} {request_target(environ)} {protocol}" '
        f"{status} {sent} {duration_s * 1000:.1f}ms"
    )


# ---------------------------------------------------------------- the middleware


class _Request:
    """What one request's line needs, filled in as the response goes out."""

    __slots__ = ("content_length", "done", "environ", "sent", "started", "status")

    def __init__(self, environ: WSGIEnvironment) -> None:
        self.environ = environ
        self.started = time.perf_counter()
        self.status = "-"
        self.sent = 0
        self.content_length: int | None = None
        self.done = False

    def finish(self, status: str | None = None) -> None:
        if self.done:
            return
        self.done = True
        if not log.isEnabledFor(logging.INFO):
            return
        try:
            line = format_line(
                self.environ,
                status or self.status,
                self.sent,
                time.perf_counter() - self.started,
                time.time(),
            )
        except Exception:  # a log line is never worth a failed response
            log.exception("could not format an access log line")
            return
        log.info(line)


class _LoggedBody:
    """The response body, passed through; counts its bytes and logs the line on ``close()``
    (which every WSGI server calls, PEP 3333), so the time includes sending the body."""

    def __init__(self, body: Iterable[bytes], request: _Request) -> None:
        self._body = body
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        request = self._request
        for chunk in self._body:
            request.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._request.finish()


class AccessLog:
    """WSGI middleware logging one line per request on ``kseg.access``."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = _Request(environ)

        def logged_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            request.status = status.split(" ", 1)[0]
            for name, value in headers:
                if name.lower() == "content-length":
                    with contextlib.suppress(ValueError):
                        request.content_length = int(value)
            write = start_response(status, headers, exc_info)

            def counted_write(data: bytes) -> object:
                request.sent += len(data)
                return write(data)

            return counted_write

        try:
            body = self.app(environ, logged_start_response)
        except BaseException:
            request.finish("500")
            raise
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
            # A file the server sends itself (sendfile): left unwrapped so it still can; the
            # line is written now, with the length the response declared.
            request.sent = request.content_length or 0
            request.finish()
            return body
        return _LoggedBody(body, request)
