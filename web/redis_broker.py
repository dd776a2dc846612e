"""kombu's Redis transport, with one Redis client per connection pool instead of one per call.

kombu builds a new ``redis.Redis`` object around its connection pool for every ack, every
delivery bookkeeping step and every publish; with redis-py 8 each costs ~75 µs (a table of
~170 response callbacks filled anew), ~20 % of a Celery worker's main process CPU per job,
measured. A client is only a handle on the pool (commands check a connection out of the pool
and back), safe to share between threads, so one is kept per pool; a pool kombu replaces
(after a connection error) gets a new client.

Registered under the ``redis://`` and ``rediss://`` URL schemes by :mod:`web.celery_init`.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES, redis


class Channel(redis.Channel):  # type: ignore[misc]
    _kept_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # made once per channel by kombu already (its BRPOP client)
            return super()._create_client(asynchronous=True)
        kept = self._kept_client
        if kept is None or kept.connection_pool is not self.pool:
            kept = self._kept_client = super()._create_client()
        return kept


class Transport(redis.Transport):  # type: ignore[misc]
    Channel = Channel


def register() -> None:
    """Make ``redis://`` and ``rediss://`` mean this transport in this process."""
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
