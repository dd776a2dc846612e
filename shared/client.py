"""A small client of kseg's HTTP API, standard library only: what ``kseg submit`` and
``kseg fetch`` talk to a running service with.

Errors come as :class:`ApiError` (the service answered with the contract's error body) or
:class:`ServiceUnreachable` (no answer at all), each with a message that says what to do.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kseg.shared.statuses import FINAL_STATUSES

#: Job states after which a job changes no more.
#: Seconds between two polls of a job: the first soon (a small image takes ~0.05 s), then
#: growing to the last, so that a long job costs the service one request a second.
POLL_INTERVALS = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
#: Seconds of failed polls (no answer, or 502/503/504) a wait rides out before giving up.
OUTAGE_TOLERANCE = 30.0
#: A 429 whose ``Retry-After`` is at most this many seconds is waited out and the request
#: sent again (a rate limit, the active-jobs quota); a longer one (the stored-bytes quota,
#: which waiting does not cure) is raised.
MAX_RETRY_AFTER = 120.0


class ClientError(Exception):
    """Anything that kept a request from getting its answer; ``str()`` says what to do."""


class ServiceUnreachable(ClientError):
    """No HTTP answer: nothing listens at the URL, or the connection broke."""


class ApiError(ClientError):
    """The service answered with an error: HTTP ``status`` and the contract's ``code``;
    ``retry_after``: the seconds its ``Retry-After`` header asked for (None without one)."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after


class WaitTimeout(TimeoutError):
    """A job was not final when the wait's time was up; ``job`` is its last state."""

    def __init__(self, job: dict[str, Any], timeout: float) -> None:
        super().__init__(f"job {job['id']} is still {job['status']} after {timeout:g} s")
        self.job = job


def encode_multipart(
    fields: Iterable[tuple[str, str]], files: Iterable[tuple[str, str, bytes]]
) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body of text ``(name, value)`` fields and
    ``(name, filename, bytes)`` files; returns the body and its ``Content-Type``."""
    boundary = f"kseg-{uuid.uuid4().hex}"
    parts: list[bytes] = []
    for name, value in fields:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    for name, filename, data in files:
        kind = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        # Quotes and line breaks would end the header early; the name is only a label.
        safe = filename.replace('"', "'").replace("\r", " ").replace("\n", " ")
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{safe}"\r\nContent-Type: {kind}\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def form_fields(params: dict[str, Any]) -> list[tuple[str, str]]:
    """Segmentation parameters as the upload's form fields (``outputs`` comma-separated;
    ``None`` left out, so the service's default applies)."""
    fields = []
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        fields.append((name, str(value)))
    return fields


@dataclass
class Client:
    """The API at ``base_url`` (e.g. ``http://127.0.0.1:8000``) with a bearer ``token``."""

    base_url: str
    token: str | None = None
    timeout: float = 60.0
    #: Called before each wait for a 429's ``Retry-After`` (the error, the seconds).
    on_retry: Callable[[ApiError, float], None] | None = None

    def request(
        self, method: str, path: str, *, body: bytes | None = None, content_type: str | None = None
    ) -> bytes:
        """The response body of ``method path``; raises :class:`ClientError`. A 429 with a
        short ``Retry-After`` (≤ ``MAX_RETRY_AFTER`` s) is waited out and sent again."""
        while True:
            try:
                return self._request_once(method, path, body=body, content_type=content_type)
            except ApiError as exc:
                wait = exc.retry_after
                if exc.status != 429 or wait is None or wait > MAX_RETRY_AFTER:
                    raise
                if self.on_retry is not None:
                    self.on_retry(exc, wait)
                time.sleep(wait)

    def _request_once(
        self, method: str, path: str, *, body: bytes | None, content_type: str | None
    ) -> bytes:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type:
            headers["Content-Type"] = content_type
        url = self.base_url.rstrip("/") + path
        req = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                data: bytes = response.read()
                return data
        except urllib.error.HTTPError as exc:
            raise self._api_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceUnreachable(
                f"cannot reach kseg at {self.base_url} ({reason}); is the service running "
                "(`kseg up`)? Point --url or KSEG_URL at it"
            ) from None

    def _api_error(self, exc: urllib.error.HTTPError) -> ApiError:
        raw = exc.read()
        try:
            error = json.loads(raw)["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            code, message = "http_error", f"HTTP {exc.code} {exc.reason} from {exc.url}"
        if exc.code == 401:  # the service's message says how to get a token; this, where
            message += " Pass it with --token or KSEG_API_TOKEN."
        retry_after = None
        # Absent, or an HTTP date (kseg sends seconds): no wait to honour.
        with contextlib.suppress(TypeError, ValueError):
            retry_after = max(0.0, float(exc.headers.get("Retry-After", "")))
        return ApiError(exc.code, code, message, retry_after)

    def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        data = self.request(method, path, **kwargs)
        try:
            out: dict[str, Any] = json.loads(data)
        except ValueError:
            raise ClientError(
                f"{method} {path} did not answer JSON; is {self.base_url} a kseg service?"
            ) from None
        return out

    def submit(self, data: bytes, filename: str, params: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/v1/jobs`` with one image: the new job (``202``)."""
        body, kind = encode_multipart(form_fields(params), [("file", filename, data)])
        return self.json("POST", "/api/v1/jobs", body=body, content_type=kind)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.json("GET", f"/api/v1/jobs/{job_id}")

    def jobs(self, *, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The token owner's newest jobs (``status``: comma-separated states), one page."""
        query = urllib.parse.urlencode({"limit": limit, **({"status": status} if status else {})})
        items: list[dict[str, Any]] = self.json("GET", f"/api/v1/jobs?{query}")["items"]
        return items

    def download(self, path: str) -> bytes:
        """An output's bytes, by the path the job's result gives it."""
        return self.request("GET", path)

    def save(self, path: str, target: Path, chunk: int = 1 << 20) -> int:
        """Stream ``GET path`` into the file ``target`` (written whole or not at all: a
        partial download never lies there); returns the bytes written. For exports, which
        may be far larger than memory."""
        headers = {"Accept": "application/zip, application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base_url.rstrip("/") + path, headers=headers)
        partial = target.with_name(f".{target.name}.part")
        written = 0
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                target.parent.mkdir(parents=True, exist_ok=True)
                with partial.open("wb") as out:
                    while block := response.read(chunk):
                        out.write(block)
                        written += len(block)
            partial.replace(target)
        except urllib.error.HTTPError as exc:
            raise self._api_error(exc) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceUnreachable(
                f"cannot reach kseg at {self.base_url} ({reason}); is the service running "
                "(`kseg up`)? Point --url or KSEG_URL at it"
            ) from None
        finally:
            partial.unlink(missing_ok=True)
        return written

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        on_outage: Callable[[ClientError], None] | None = None,
        job: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Poll job ``job_id`` until it is final; returns it. ``on_update`` sees every poll's
        answer, ``on_outage`` the first failed poll of an outage it rides out (up to
        ``OUTAGE_TOLERANCE`` s). Raises :class:`WaitTimeout` after ``timeout`` s (``None``:
        no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        polls = 0
        failing_since: float | None = None
        job = job or self.job(job_id)
        while True:
            if on_update is not None:
                on_update(job)
            if job["status"] in FINAL_STATUSES:
                return job
            pause = POLL_INTERVALS[min(polls, len(POLL_INTERVALS) - 1)]
            if deadline is not None and time.monotonic() + pause > deadline:
                raise WaitTimeout(job, timeout)
            time.sleep(pause)
            polls += 1
            try:
                job = self.job(job_id)
                failing_since = None
            except (ServiceUnreachable, ApiError) as exc:
                # A restarting service or a database hiccup (503) need not end a long wait:
                # the job goes on meanwhile. Anything else, or a long outage, does.
                transient = isinstance(exc, ServiceUnreachable) or exc.status in {502, 503, 504}
                if not transient or (
                    failing_since is not None
                    and time.monotonic() - failing_since > OUTAGE_TOLERANCE
                ):
                    raise
                if failing_since is None:
                    failing_since = time.monotonic()
                    if on_outage is not None:
                        on_outage(exc)
