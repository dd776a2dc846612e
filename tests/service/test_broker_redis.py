"""kseg's Redis transport (``web.redis_broker``) against a real Redis: one client per pool."""

from __future__ import annotations

from typing import Any

import pytest
from kombu import Connection

from kseg.shared.messaging import redis_broker
from tests.conftest import RUN_ID


def _connection(redis_url: str) -> Any:
    redis_broker.register()
    return Connection(redis_url, transport_options={"max_retries": 0})


def test_redis_urls_use_kseg_transport_and_keep_one_client_per_pool(redis_url: str) -> None:
    with _connection(redis_url) as conn:
        channel = conn.default_channel
        assert isinstance(channel, redis_broker.Channel)
        first = channel._create_client()
        assert channel._create_client() is first
        assert first.ping()
        channel._disconnect_pools()  # what kombu does after a connection error
        fresh = channel._create_client()
        assert fresh is not first and fresh.connection_pool is channel.pool
        assert fresh.ping()


def test_messages_round_trip_through_the_kept_client(redis_url: str) -> None:
    queue_name = f"kseg-test-{RUN_ID}-redis-transport"
    with _connection(redis_url) as conn:
        queue = conn.SimpleQueue(queue_name)
        try:
            for i in range(5):
                queue.put({"n": i})
            got = []
            for _ in range(5):
                message = queue.get(timeout=5)
                got.append(message.payload["n"])
                message.ack()
            assert sorted(got) == list(range(5))
            with pytest.raises(queue.Empty):  # every message acked, none left
                queue.get(block=False)
        finally:
            queue.queue.delete()
            queue.close()
