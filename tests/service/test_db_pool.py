"""Pooled connections: pinged before use only after sitting idle, and replaced when dead."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from kseg.shared.store import db


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    made = db.make_engine(pg_url, pool_size=1, max_overflow=0)
    yield made
    made.dispose()


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(pg_admin_url: str, pid: int) -> None:
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
            # Wait until the server has really closed it (the call only signals the backend).
            for _ in range(200):
                alive = conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                ).scalar()
                if not alive:
                    return
                conn.execute(text("SELECT pg_sleep(0.01)"))
        raise AssertionError(f"backend {pid} did not end")
    finally:
        admin.dispose()


def test_an_idle_connection_is_pinged_and_a_dead_one_replaced(
    engine: Engine, pg_admin_url: str, monkeypatch: Any
) -> None:
    first = _backend_pid(engine)
    _terminate(pg_admin_url, first)
    monkeypatch.setattr(db, "PING_IDLE_AFTER", 0.0)  # every pooled connection counts as idle
    # The ping finds the pooled connection dead; the pool opens a new one for this checkout.
    assert _backend_pid(engine) != first


def test_a_recently_used_connection_is_not_pinged(engine: Engine, pg_admin_url: str) -> None:
    first = _backend_pid(engine)
    _terminate(pg_admin_url, first)
    # Used moments ago, so no ping: the statement meets the dead connection and fails ...
    with pytest.raises(OperationalError), engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    # ... which invalidates the pool: the next checkout connects afresh.
    assert _backend_pid(engine) != first


def test_only_derived_writes_skip_the_wait_for_the_disk(pg_url: str) -> None:
    """Users' data (web sessions) commits durably; the worker's and the beats' bookkeeping,
    which the sweeper and the core can redo, commits without waiting for the WAL flush."""

    def synchronous_commit(maker: Any) -> str:
        with maker() as session:
            return str(session.execute(text("SHOW synchronous_commit")).scalar_one())

    try:
        assert synchronous_commit(db.get_sessionmaker(pg_url)) == "on"
        assert synchronous_commit(db.get_worker_sessionmaker(pg_url)) == "off"
        assert synchronous_commit(db.get_beat_sessionmaker(pg_url)) == "off"
    finally:
        db.dispose_all()
