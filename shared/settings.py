"""Every setting of kseg, read from the environment in one place.

Unset, the embedded default is used: SQLite under ``instance/`` and kombu's filesystem
transport (a broker that needs no server). Set ``DATABASE_URL`` and ``CELERY_BROKER_URL`` to
run on PostgreSQL and Redis.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

TRUE = frozenset({"1", "true", "yes", "on"})  # how a setting, a form or a query says yes
T = TypeVar("T")


def _env(name: str, default: T, parse: Callable[[str], T], kind: str) -> T:
    """The setting ``name`` parsed, ``default`` when unset or blank; a bad value stops kseg
    with a message naming the setting."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw.strip())
    except ValueError as exc:
        raise SystemExit(f"kseg: setting {name}={raw!r} is not {kind}") from exc


def _int(name: str, default: int) -> int:
    return _env(name, default, int, "an integer")


def _float(name: str, default: float) -> float:
    return _env(name, default, float, "a number")


def _bool(name: str, default: bool) -> bool:
    return _env(name, default, lambda raw: raw.lower() in TRUE, "yes or no")


def _str(name: str, default: str) -> str:
    return _env(name, default, str, "text")


#: Seconds between the attempts of a webhook delivery that failed (a timeout or a non-2xx
#: answer): 9 attempts over ~24 h, the first retries within seconds. The one place this
#: schedule is written; ``KSEG_WEBHOOK_BACKOFF`` replaces it (tests shorten it).
WEBHOOK_BACKOFF: tuple[float, ...] = (5, 30, 120, 600, 3600, 3 * 3600, 6 * 3600, 12 * 3600)


@dataclass(frozen=True)
class Settings:
    """A snapshot of the environment; build one with :func:`get_settings`."""

    instance_dir: Path
    database_url: str
    broker_url: str
    embedded_broker: bool
    queue: str
    host: str
    port: int
    #: ``KSEG_URL``: where ``kseg submit`` and ``kseg fetch`` find the service, if not here
    #: (:meth:`service_url`).
    client_url: str | None
    api_token: str | None
    auth_disabled: bool
    secret_key: str
    max_upload_bytes: int
    max_image_pixels: int
    worker_concurrency: int
    worker_prefetch: int
    task_soft_time_limit: int
    task_time_limit: int
    visibility_timeout: int
    max_attempts: int
    broker_polling_interval: float
    heartbeat_interval: float
    heartbeat_stale_after: float
    sweep_interval: float
    queued_stale_after: float
    result_retention: int
    schedule_tick: float
    #: Threads of the web server that run the app (``kseg.web.serve``); requests reach them whole.
    web_threads: int = 8
    #: Connections the web server holds open at once (stalled ones included).
    web_connection_limit: int = 1000
    #: Seconds a connection may stay idle (a stalled upload included) before it is closed.
    web_channel_timeout: int = 60
    core_threads: int = 0
    #: Freed heap a computing process keeps for its next job (``shared.allocator``); 0: glibc's
    #: defaults.
    malloc_retain_bytes: int = 0
    #: ``KSEG_WINDOW_PER_PROCESS``: jobs of a class that may be in flight (published, not yet
    #: finished) per worker process taking that class (``shared.dispatch``); 0: no window.
    window_per_process: int = 2
    #: ``KSEG_WORKER_QUEUES``: the classes of work ``kseg worker`` takes.
    worker_queues: tuple[str, ...] = ("interactive", "batch")
    #: Rate limits (``limits`` notation, e.g. ``30/minute``; empty: none) and quotas (0: none);
    #: ``web.limits`` and ``shared.quotas`` apply them.
    rate_limit_failed_auth: str = "30/minute"
    rate_limit_submissions: str = "20/second;600/minute"
    quota_active_jobs: int = 100
    quota_stored_bytes: int = 10 * 1024**3
    #: Where the rate-limit counters live: the Redis broker's server when there is one (shared
    #: by every web process), else this process's memory.
    rate_limit_storage_url: str = "memory://"
    #: ``KSEG_ACCESS_LOG``: the web app logs a line per request (``web.access_log``).
    access_log: bool = True
    #: Where those lines go: a file (``KSEG_ACCESS_LOG=PATH``), or None for stdout.
    access_log_file: Path | None = None
    #: Whether ``KSEG_HOST`` or ``KSEG_PORT`` is set (then they, not ``instance/api_url``,
    #: say where the local service is).
    address_given: bool = False
    #: Webhooks (``shared.webhooks``, ``shared.store.webhooks``): ``KSEG_WEBHOOK_ALLOW_PRIVATE``
    #: lets URLs resolve to loopback/private/link-local addresses (local development, tests);
    #: the seconds between a delivery's attempts (``KSEG_WEBHOOK_BACKOFF``, comma-separated);
    #: the seconds a receiver has to answer; threads of ``kseg webhooks``; how often beat
    #: sends again deliveries whose wake-up was lost.
    webhook_allow_private: bool = False
    webhook_backoff: tuple[float, ...] = WEBHOOK_BACKOFF
    webhook_timeout: float = 10.0
    webhook_concurrency: int = 4
    webhook_sweep_interval: float = 10.0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def api_token_file(self) -> Path:
        """Where ``kseg up`` keeps the token it prints (when ``KSEG_API_TOKEN`` is unset)."""
        return self.instance_dir / "api_token"

    @property
    def api_url_file(self) -> Path:
        """Where ``kseg up`` keeps the URL it serves on, beside :attr:`api_token_file`, so that
        ``kseg submit`` run here finds it on any port."""
        return self.instance_dir / "api_url"

    def listen_url(self) -> str:
        """The web server ``KSEG_HOST``:``KSEG_PORT`` on this machine, as a URL (through
        loopback when it listens on every address)."""
        host = "127.0.0.1" if self.host in {"0.0.0.0", "::", "[::]", ""} else self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def saved_url(self) -> str | None:
        """The URL ``kseg up`` last served on from this folder (:attr:`api_url_file`), if any."""
        try:
            text = self.api_url_file.read_text().strip().rstrip("/")
        except OSError:
            return None
        return text if text.startswith(("http://", "https://")) else None

    def service_url(self) -> str:
        """Where ``kseg submit``, ``fetch`` and ``jobs`` find the service: ``KSEG_URL``; else
        ``KSEG_HOST``:``KSEG_PORT`` when either is set; else the URL the ``kseg up`` of this
        folder saved (:meth:`saved_url`, so a service on another port is found); else
        http://127.0.0.1:8000."""
        if self.client_url:
            return self.client_url
        if not self.address_given:
            saved = self.saved_url()
            if saved:
                return saved
        return self.listen_url()

    def threads_per_job(self, processes: int = 1) -> int:
        """Threads one segmentation may use when ``processes`` run side by side.

        ``KSEG_CORE_THREADS`` when set (> 0); else the CPUs shared out among the processes,
        at least 1 and at most 2 (the core's cap: see ``shared.cluster.MAX_THREADS``). A
        worker with as many processes as CPUs thus runs each job on one thread: more would
        only make the processes' threads wait on each other.
        """
        if self.core_threads > 0:
            return self.core_threads
        return max(1, min(2, (os.cpu_count() or 1) // max(1, processes)))


#: The classes of work (``shared.dispatch``), in the order a free worker process takes them:
#: jobs submitted one by one, then jobs of gallery runs.
QUEUE_CLASSES = ("interactive", "batch")


def _queues(name: str, default: str) -> tuple[str, ...]:
    try:
        return parse_queues(_str(name, default))
    except ValueError as exc:
        raise SystemExit(f"kseg: setting {name}: {exc}") from exc


def _instance_dir() -> Path:
    return Path(_str("KSEG_INSTANCE_DIR", str(Path.cwd() / "instance"))).resolve()


def load_settings() -> Settings:
    """Read every setting from the environment (no caching)."""
    instance = _instance_dir()
    default_db = f"sqlite:///{instance / 'kseg.db'}"
    database_url = _str("DATABASE_URL", default_db)
    broker_url = _str("CELERY_BROKER_URL", "filesystem://")
    hard = _int("KSEG_TASK_TIME_LIMIT", 600)
    return Settings(
        instance_dir=instance,
        database_url=database_url,
        broker_url=broker_url,
        embedded_broker=broker_url.startswith(("filesystem://", "sqla+", "sqlalchemy+")),
        queue=_str("KSEG_QUEUE", "kseg"),
        host=_str("KSEG_HOST", "127.0.0.1"),
        port=_int("KSEG_PORT", 8000),
        client_url=_str("KSEG_URL", "").rstrip("/") or None,
        address_given=bool(_str("KSEG_HOST", "") or _str("KSEG_PORT", "")),
        api_token=os.environ.get("KSEG_API_TOKEN") or None,
        auth_disabled=_bool("KSEG_AUTH_DISABLED", False),
        secret_key=_str("KSEG_SECRET_KEY", ""),
        max_upload_bytes=_int("KSEG_MAX_UPLOAD_BYTES", 50 * 1024 * 1024),
        max_image_pixels=_int("KSEG_MAX_IMAGE_PIXELS", 50_000_000),
        worker_concurrency=_int("KSEG_WORKER_CONCURRENCY", 2),
        worker_prefetch=_int("KSEG_WORKER_PREFETCH", 1),
        task_soft_time_limit=_int("KSEG_TASK_SOFT_TIME_LIMIT", max(hard - 30, 1)),
        task_time_limit=hard,
        # Redis redelivers an unacked message only after this; it must exceed the hard limit.
        visibility_timeout=_int("KSEG_VISIBILITY_TIMEOUT", hard + 300),
        max_attempts=_int("KSEG_MAX_ATTEMPTS", 3),
        broker_polling_interval=_float("KSEG_BROKER_POLLING_INTERVAL", 0.02),
        heartbeat_interval=_float("KSEG_HEARTBEAT_INTERVAL", 5.0),
        heartbeat_stale_after=_float("KSEG_HEARTBEAT_STALE_AFTER", 30.0),
        sweep_interval=_float("KSEG_SWEEP_INTERVAL", 60.0),
        queued_stale_after=_float("KSEG_QUEUED_STALE_AFTER", 60.0),
        result_retention=_int("KSEG_RESULT_RETENTION", 3),
        schedule_tick=_float("KSEG_SCHEDULE_TICK", 30.0),
        web_threads=max(1, _int("KSEG_WEB_THREADS", 8)),
        web_connection_limit=max(10, _int("KSEG_WEB_CONNECTION_LIMIT", 1000)),
        web_channel_timeout=max(1, _int("KSEG_WEB_CHANNEL_TIMEOUT", 60)),
        core_threads=_int("KSEG_CORE_THREADS", 0),
        malloc_retain_bytes=max(0, _int("KSEG_MALLOC_RETAIN_MB", 128)) * 1024 * 1024,
        window_per_process=max(0, _int("KSEG_WINDOW_PER_PROCESS", 2)),
        worker_queues=_queues("KSEG_WORKER_QUEUES", "interactive,batch"),
        rate_limit_failed_auth=_rate("KSEG_RATE_LIMIT_FAILED_AUTH", "30/minute"),
        rate_limit_submissions=_rate("KSEG_RATE_LIMIT_SUBMISSIONS", "20/second;600/minute"),
        quota_active_jobs=max(0, _int("KSEG_QUOTA_ACTIVE_JOBS", 100)),
        quota_stored_bytes=max(0, _int("KSEG_QUOTA_STORED_MB", 10 * 1024)) * 1024 * 1024,
        rate_limit_storage_url=_str(
            "KSEG_RATE_LIMIT_STORAGE_URL",
            broker_url if broker_url.startswith(("redis://", "rediss://")) else "memory://",
        ),
        access_log=access_log_setting(os.environ.get("KSEG_ACCESS_LOG")) is not False,
        access_log_file=_access_log_file(os.environ.get("KSEG_ACCESS_LOG")),
        webhook_allow_private=_bool("KSEG_WEBHOOK_ALLOW_PRIVATE", False),
        webhook_backoff=_backoff("KSEG_WEBHOOK_BACKOFF"),
        webhook_timeout=max(0.1, _float("KSEG_WEBHOOK_TIMEOUT", 10.0)),
        webhook_concurrency=max(1, _int("KSEG_WEBHOOK_CONCURRENCY", 4)),
        webhook_sweep_interval=max(0.1, _float("KSEG_WEBHOOK_SWEEP_INTERVAL", 10.0)),
    )


#: ``KSEG_ACCESS_LOG`` values that turn the access log off, and those that turn it on where
#: the command puts it by default (stdout for ``kseg web``, ``instance/access.log`` under
#: ``kseg up``); ``stdout`` is stdout wherever; anything else is the path of a file.
ACCESS_LOG_OFF = frozenset({"0", "false", "no", "off"})
ACCESS_LOG_ON = frozenset({"", "1", "true", "yes", "on"})


def access_log_setting(raw: str | None) -> bool | str | None:
    """What ``KSEG_ACCESS_LOG`` says: False (off), None (unset or on: the command's default
    place), ``"stdout"``, or a file's path."""
    text = (raw or "").strip()
    if text.lower() in ACCESS_LOG_OFF:
        return False
    if text.lower() in ACCESS_LOG_ON:
        return None
    if text.lower() == "stdout":
        return "stdout"
    return text


def _access_log_file(raw: str | None) -> Path | None:
    where = access_log_setting(raw)
    if not isinstance(where, str) or where == "stdout":
        return None
    return Path(where).expanduser().resolve()


def _backoff(name: str) -> tuple[float, ...]:
    """Seconds between a webhook delivery's attempts, e.g. ``5,30,120``; unset: the default
    schedule (``WEBHOOK_BACKOFF``)."""
    raw = _str(name, "")
    if not raw:
        return WEBHOOK_BACKOFF
    try:
        delays = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        delays = ()
    if not delays or any(d < 0 for d in delays):
        raise SystemExit(
            f"kseg: setting {name}={raw!r}: give the seconds between attempts, comma-separated "
            "(e.g. 5,30,120)"
        )
    return delays


def _rate(name: str, default: str) -> str:
    """A rate limit in the notation of the ``limits`` library (``30/minute``, ``5 per second``;
    several separated by ``;``), checked at start; empty, ``0`` or ``off``: no limit."""
    text = _str(name, default).strip()
    if text.lower() in {"", "0", "off", "none"}:
        return ""
    from limits import parse_many

    try:
        parse_many(text)
    except ValueError:
        raise SystemExit(
            f"kseg: setting {name}: {text!r} is not a rate limit; write it like 30/minute or "
            "10 per second (several separated by ';'), or off"
        ) from None
    return text


def parse_queues(text: str) -> tuple[str, ...]:
    """``interactive,batch`` → the classes of work named, in the order workers take them.

    Raises ``ValueError`` naming what is wrong, for the command line and the environment."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in QUEUE_CLASSES]
    if unknown or not names:
        raise ValueError(
            f"{unknown[0] if unknown else text!r} is not a class of work; "
            f"use one or both of {', '.join(QUEUE_CLASSES)} (comma-separated)"
        )
    return tuple(name for name in QUEUE_CLASSES if name in names)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
