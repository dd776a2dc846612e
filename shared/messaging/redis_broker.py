"""kombu's Redis transport, with one Redis client per connection pool instead of one per call.

kombu builds a new ``redis.Redis`` object around its connection pool for every ack, every
delivery bookkeeping step and every publish; with redis-py 8 each costs ~75 µs (a table of
~170 response callbacks filled anew), ~20 % of a Celery worker's main process CPU per job,
measured. A client is only a handle on the pool (commands check a connection out of the pool
and back), safe to share between threads, so one is kept per pool; a pool kombu replaces
(after a connection error) gets a new client.

A consumer reads its queues in a fixed order, interactive work first
(:func:`shared.celery_config.queue_rank`): BRPOP takes from the first non-empty key it is
given, and kombu's default ``round_robin`` order would rotate batch work in front of waiting
interactive work every other time. (kombu's ``priority`` strategy keeps the order queues were
declared in; this one does not depend on that order.)

Registered under the ``redis://`` and ``rediss://`` URL schemes by :mod:`web.celery_init`.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES, redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from kseg.shared.messaging.broker import job_id_of
from kseg.shared.messaging.celery_config import queue_rank


class Channel(redis.Channel):  # type: ignore[misc]
    _kept_client: Any = None
    queue_order_strategy = "priority"  # never rotated: the order set below stays

    def _update_queue_cycle(self) -> None:
        self._queue_cycle.update(sorted(self.active_queues, key=queue_rank))

    def waiting_job_ids(self, queue: str) -> list[str]:
        """The job ids of the messages waiting in ``queue`` (for the sweeper)."""
        ids = []
        for raw in self.client.lrange(queue, 0, -1):  # kseg sends no message priorities
            job_id = job_id_of(loads(bytes_to_str(raw)))
            if job_id:
                ids.append(job_id)
        return ids

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
