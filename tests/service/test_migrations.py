"""Migrations: the schema they build is the models' schema, and they go down and up again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from kseg.shared.store import db
from kseg.shared.store.models import Base


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


def test_downgrade_from_shared_payloads_rebuilds_every_png(fresh_url: str) -> None:
    import hashlib

    import numpy as np
    from sqlalchemy import insert, select, text
    from sqlalchemy.orm import Session

    from kseg.shared.core import render
    from kseg.shared.core.params import parse_params
    from kseg.shared.store.auth import get_or_create_owner
    from kseg.shared.store.images import store_image
    from kseg.shared.store.jobs import submit_job
    from kseg.shared.store.models import Result, ResultOutput
    from kseg.shared.store.outputs import output_rows

    labels = np.arange(12, dtype=np.uint8).reshape(3, 4) % 3
    pngs = render.render_outputs(
        ["labels", "color", "recolor"],
        labels,
        np.full((3, 3), 9, np.uint8),
        np.zeros((3, 4, 3), np.uint8),
    )
    engine = db.make_engine(fresh_url)
    try:
        with Session(engine) as session, session.begin():
            owner = get_or_create_owner(session, "mig")
            image, _ = store_image(session, owner.id, render.encode_png(labels), "l.png")
            job = submit_job(session, owner.id, image, parse_params(k=2), reuse=False)
            session.execute(
                insert(Result).values(
                    id="r1",
                    job_id=job.id,
                    image_id=image.id,
                    params_key="p",
                    algorithm_version="v",
                    meta={},
                )
            )
            session.execute(insert(ResultOutput), output_rows("r1", pngs))
        with engine.connect() as conn:
            sharing = dict(conn.execute(text("SELECT name, payload_of FROM result_outputs")).all())
        assert sharing == {"labels": None, "color": "labels", "recolor": "labels"}
        command.downgrade(db.alembic_config(fresh_url), "0004")  # outputs get a SHA-256 again
        with engine.connect() as conn:
            hashes = dict(conn.execute(text("SELECT name, sha256 FROM result_outputs")).all())
        assert hashes == {name: hashlib.sha256(png).hexdigest() for name, png in pngs.items()}
        command.downgrade(db.alembic_config(fresh_url), "0003")
        with engine.connect() as conn:
            stored = dict(conn.execute(text("SELECT name, data FROM result_outputs")).all())
        assert {name: bytes(data) for name, data in stored.items()} == pngs
        command.upgrade(db.alembic_config(fresh_url), "head")
        with Session(engine) as session:
            assert (
                session.scalar(
                    select(ResultOutput.payload_of).where(ResultOutput.name == "recolor")
                )
                is None
            )  # whole again: nothing to share
    finally:
        engine.dispose()
