"""The embedded broker under concurrency: every message arrives exactly once, whole."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Queue


def _options(folder: Path) -> dict[str, object]:
    return {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(folder / "control"),
        "polling_interval": 0.01,
    }


def _produce(folder: str, start: int, count: int) -> None:
    from kseg.shared.messaging.broker import register

    register()
    with Connection("filesystem://", transport_options=_options(Path(folder))) as conn:
        queue = conn.SimpleQueue(Queue("q", routing_key="q"))
        for i in range(start, start + count):
            # Big bodies make a torn read likely if writes were not atomic.
            queue.put({"i": i, "pad": "x" * 200_000})
        queue.close()


def _consume(folder: str, out: mp.Queue, total: Any, stop_after: float) -> None:
    import time

    from kseg.shared.messaging.broker import register

    register()
    seen = []
    with Connection("filesystem://", transport_options=_options(Path(folder))) as conn:
        queue = conn.SimpleQueue(Queue("q", routing_key="q"))
        deadline = time.monotonic() + stop_after
        while time.monotonic() < deadline and total.value < 300:
            try:
                message = queue.get(timeout=0.2)
            except queue.Empty:
                continue
            assert len(message.payload["pad"]) == 200_000
            seen.append(message.payload["i"])
            message.ack()
            with total.get_lock():
                total.value += 1
        queue.close()
    out.put(seen)


def test_concurrent_producers_and_consumers_lose_nothing(tmp_path: Path) -> None:
    (tmp_path / "control").mkdir()
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()
    total = ctx.Value("i", 0)
    consumers = [
        ctx.Process(target=_consume, args=(str(tmp_path), out, total, 30.0)) for _ in range(3)
    ]
    producers = [ctx.Process(target=_produce, args=(str(tmp_path), n * 100, 100)) for n in range(3)]
    for proc in consumers + producers:
        proc.start()
    for proc in producers:
        proc.join(30)
    received = sorted(i for _ in consumers for i in out.get(timeout=30))
    for proc in consumers:
        proc.join(10)
    assert received == list(range(300)), "each message exactly once"
    assert not [p for p in tmp_path.iterdir() if p.is_file()], "no files left behind"


def test_an_ack_ends_the_wait_between_polls(tmp_path: Path) -> None:
    """With one message in hand (prefetch 1) and the next one waiting, acking the first lets
    the consumer take the next at once, not after sleeping out its polling interval."""
    import threading
    import time

    from kseg.shared.messaging.broker import register

    register()
    (tmp_path / "control").mkdir()
    options = {**_options(tmp_path), "polling_interval": 30.0}
    with Connection("filesystem://", transport_options=options) as conn:
        received: list[Any] = []
        with conn.Consumer(
            Queue("q", routing_key="q"),
            callbacks=[lambda _body, message: received.append(message)],
            prefetch_count=1,
        ):
            producer = conn.Producer()
            for i in range(2):
                producer.publish({"i": i}, routing_key="q")
            conn.drain_events(timeout=5)
            # One message in hand (either: two files named in the same millisecond sort by
            # their random part), the other left in the queue.
            assert len(received) == 1
            # The second message is not taken while the first is unacked; the consumer waits.
            acker = threading.Timer(0.3, received[0].ack)
            acker.start()
            started = time.monotonic()
            conn.drain_events(timeout=20)
            waited = time.monotonic() - started
            acker.join()
    assert sorted(m.payload["i"] for m in received) == [0, 1]
    assert waited < 10, f"the consumer slept out its polling interval ({waited:.1f} s)"


def test_a_worker_shutdown_ends_the_drain_at_once(tmp_path: Path, monkeypatch: Any) -> None:
    """Celery's loop looks for a shutdown request only between drains of up to 2 s (and
    drains once more after one): a pending warm shutdown ends the drain at the next poll."""
    import threading
    import time

    from celery.worker import state

    from kseg.shared.messaging.broker import register

    register()
    (tmp_path / "control").mkdir()
    with (
        Connection("filesystem://", transport_options=_options(tmp_path)) as conn,
        conn.Consumer(Queue("q", routing_key="q"), callbacks=[lambda *_: None]),
    ):
        # As Celery's SIGTERM handler does: the exit code, 0, which is falsy.
        stopper = threading.Timer(0.2, lambda: monkeypatch.setattr(state, "should_stop", 0))
        stopper.start()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=20)
        waited = time.monotonic() - started
        stopper.join()
    assert waited < 5, f"the drain went on for {waited:.1f} s after the shutdown request"
