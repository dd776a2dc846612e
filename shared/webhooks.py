"""Webhook plumbing without a database: which URLs may be called (SSRF guard), the events,
the signature, and one bounded HTTP POST.

A URL is checked when it is given (the API answers 422 ``webhook_url_refused``) and again
before every attempt, since DNS may answer differently later: every address its host
resolves to must be a public one — not loopback, private, link-local (the cloud metadata
address 169.254.169.254 among them), shared, reserved, multicast or unspecified —
unless ``KSEG_WEBHOOK_ALLOW_PRIVATE=1`` (local development). The POST then connects to the
very address that was checked (no second lookup an attacker's DNS could answer
differently), with TLS verified against the URL's host name, no redirects followed, a
bounded timeout and at most ``MAX_RESPONSE_BYTES`` of the answer read.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

from kseg.shared.errors import KsegError

#: Every event type, in the contract's order; a job's and a run's.
EVENT_TYPES: tuple[str, ...] = ("job.succeeded", "job.failed", "job.canceled", "run.finished")
JOB_EVENTS: tuple[str, ...] = EVENT_TYPES[:3]
#: The final job status each job event tells of.
JOB_EVENT_OF_STATUS = {
    "succeeded": "job.succeeded",
    "failed": "job.failed",
    "canceled": "job.canceled",
}
#: Bytes of a receiver's answer read at most (the rest is not waited for).
MAX_RESPONSE_BYTES = 64 * 1024
MAX_URL_LENGTH = 2048
SIGNATURE_HEADER = "Kseg-Signature"
EVENT_ID_HEADER = "Kseg-Event-Id"
USER_AGENT = "kseg-webhooks/1"
#: urllib3 options of an attempt: no redirect followed (it could lead to an unchecked
#: address), no retry (the outbox retries), the answer streamed so its size stays bounded.
_ONE_SHOT = {
    "redirect": False,
    "retries": False,
    "preload_content": False,
    "assert_same_host": False,
}


class Hook(NamedTuple):
    """Where a job's, run's or schedule's events go, as stored: the checked URL (``None``:
    no webhook) and the canonical comma-separated events wanted (``None``: all of them)."""

    url: str | None = None
    events: str | None = None


NO_HOOK = Hook()


class WebhookUrlRefused(KsegError):
    """A webhook URL kseg will not call: malformed, or its host resolves to an address that
    is not public."""

    code = "webhook_url_refused"
    status = 422


def parse_events(raw: object) -> str | None:
    """``webhook_events`` (a list, or a comma-separated string) → the canonical
    comma-separated string; None or empty: all that apply."""
    from kseg.shared.errors import InvalidParameterError

    if raw is None:
        return None
    if isinstance(raw, str):
        names = [part.strip() for part in raw.split(",") if part.strip()]
    elif isinstance(raw, list | tuple):
        names = [str(part).strip() for part in raw]
    else:
        raise InvalidParameterError("webhook_events: give a list of event types")
    unknown = [name for name in names if name not in EVENT_TYPES]
    if unknown:
        raise InvalidParameterError(
            f"webhook_events: {unknown[0]!r} is not an event type; use one or more of "
            f"{', '.join(EVENT_TYPES)}"
        )
    if not names:
        return None
    return ",".join(name for name in EVENT_TYPES if name in names)


def wants(events: str | None, event_type: str) -> bool:
    """Whether a filter (canonical string, None: all) lets ``event_type`` through."""
    return events is None or event_type in events.split(",")


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``address``) and what to ask for."""

    scheme: str
    host: str
    port: int
    path: str
    address: str


def _split(url: str) -> tuple[str, str, int, str]:
    if not isinstance(url, str) or not url.strip():
        raise WebhookUrlRefused("webhook_url: give an http or https URL")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise WebhookUrlRefused(f"webhook_url: at most {MAX_URL_LENGTH} characters")
    if any(ord(ch) < 33 or ord(ch) == 127 for ch in url):
        raise WebhookUrlRefused("webhook_url: no spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlRefused(f"webhook_url: {url[:100]!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookUrlRefused(
            f"webhook_url: {url[:100]!r} is not an http or https URL with a host"
        )
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlRefused("webhook_url: no user name or password in the URL")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:  # an internationalised name, as DNS and the Host header want it
        host = parts.hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise WebhookUrlRefused(f"webhook_url: {parts.hostname!r} is not a host name") from None
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path


def refused_address(address: str) -> str | None:
    """Why ``address`` is not one a webhook may go to (None: it is public)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for what, flag in (
        ("loopback", ip.is_loopback),
        ("link-local (cloud metadata included)", ip.is_link_local),
        ("private", ip.is_private),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
        ("not globally routable", not ip.is_global),
    ):
        if flag:
            return what
    return None


def resolve(url: str, *, allow_private: bool) -> Target:
    """Check ``url`` and resolve its host: the first address to connect to. Raises
    :class:`WebhookUrlRefused` saying why it will not be called."""
    scheme, host, port, path = _split(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise WebhookUrlRefused(
            f"webhook_url: the host {host!r} does not resolve ({exc}); check the URL"
        ) from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise WebhookUrlRefused(f"webhook_url: the host {host!r} has no address")
    if not allow_private:
        for address in addresses:
            why = refused_address(address)
            if why is not None:
                raise WebhookUrlRefused(
                    f"webhook_url: {host!r} resolves to {address}, a {why} address; webhooks "
                    "go to public addresses only (an operator may set "
                    "KSEG_WEBHOOK_ALLOW_PRIVATE=1 for local development)"
                )
    return Target(scheme, host, port, path, addresses[0])


def check_url(url: str, *, allow_private: bool) -> str:
    """A webhook URL as given at submission, checked (and resolved: a host that is not
    public is refused now rather than at the first attempt); returns it trimmed."""
    resolve(url, allow_private=allow_private)
    return url.strip()


def new_secret() -> str:
    import secrets

    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Kseg-Signature`` header: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of
    "<t>.<body>">`` with the owner's secret (as Stripe signs: a receiver recomputes it and
    rejects old timestamps, so a captured request cannot be replayed later)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, body: bytes, header: str, *, tolerance: float = 300) -> bool:
    """What a receiver does: the signature matches and its timestamp is recent."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    fresh = abs(time.time() - timestamp) <= tolerance
    return fresh and hmac.compare_digest(expected, fields.get("v1", ""))


@dataclass(frozen=True)
class Outcome:
    """How one attempt went: ``ok`` for a 2xx; ``status`` the HTTP status (None: no answer);
    ``error`` what went wrong, for the deliveries listing."""

    ok: bool
    status: int | None
    error: str | None


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    allow_private: bool,
) -> Outcome:
    """POST ``body`` to ``url`` once: checked and resolved now, connected to the checked
    address, ``timeout`` s to connect and to answer, redirects not followed, at most
    ``MAX_RESPONSE_BYTES`` of the answer read."""
    import urllib3

    try:
        target = resolve(url, allow_private=allow_private)
    except WebhookUrlRefused as exc:
        return Outcome(False, None, exc.message)
    host = f"[{target.host}]" if ":" in target.host else target.host  # an IPv6 literal
    default_port = 443 if target.scheme == "https" else 80
    all_headers = {
        "Host": host if target.port == default_port else f"{host}:{target.port}",
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **headers,
    }
    limit = urllib3.Timeout(connect=timeout, read=timeout)
    pool: urllib3.HTTPConnectionPool
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            target.address,
            target.port,
            timeout=limit,
            maxsize=1,
            retries=False,
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
        )
    else:
        pool = urllib3.HTTPConnectionPool(
            target.address, target.port, timeout=limit, maxsize=1, retries=False
        )
    started = time.monotonic()
    try:
        response = pool.urlopen("POST", target.path, body=body, headers=all_headers, **_ONE_SHOT)
        try:
            response.read(MAX_RESPONSE_BYTES)  # bounded: never the whole of a huge answer
        finally:
            response.release_conn()
            response.close()
        status = int(response.status)
    except urllib3.exceptions.HTTPError as exc:
        reason = getattr(exc, "reason", None) or exc
        return Outcome(False, None, f"{type(exc).__name__}: {reason}"[:500])
    except OSError as exc:
        return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:500])
    finally:
        pool.close()
    if time.monotonic() - started > timeout * 2:
        return Outcome(False, status, f"answered after {time.monotonic() - started:.0f} s")
    if 200 <= status < 300:
        return Outcome(True, status, None)
    return Outcome(False, status, f"HTTP {status}")


__all__ = [
    "EVENT_TYPES",
    "JOB_EVENTS",
    "Outcome",
    "WebhookUrlRefused",
    "check_url",
    "new_secret",
    "parse_events",
    "post",
    "refused_address",
    "resolve",
    "sign",
    "verify",
    "wants",
]
