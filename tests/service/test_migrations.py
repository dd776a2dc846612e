"""Migrations: the schema they build is the models' schema, and they go down and up again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shared import db
from shared.models import Base


@pytest.fixture(params=["postgres", "sqlite"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        make: Callable[[str], str] = request.getfixturevalue("pg_database")
        return make("mig")  # already migrated to head
    url = f"sqlite:///{tmp_path / 'm.db'}"
    db.migrate(url)
    return url


def test_migrations_match_models_and_round_trip(fresh_url: str) -> None:
    engine = db.make_engine(fresh_url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        cfg = db.alembic_config(fresh_url)
        command.downgrade(cfg, "base")
        assert db.current_revision(engine) is None
        command.upgrade(cfg, "head")
        assert db.current_revision(engine) == db.head_revision()
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()
