"""Engine and sessions: one session per request or task, explicit transactions.

``DATABASE_URL`` picks the database (PostgreSQL in production, SQLite by default). SQLite is
put in WAL mode with a busy timeout, since web, worker and beat are separate processes writing
to the same file.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Select, bindparam, create_engine, event, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from kseg.shared.settings import get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


class NotMigratedError(RuntimeError):
    """The database schema is not at the code's revision."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; creates the directory of a SQLite file."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": 30})
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(url, **kwargs)
    _ping_when_idle(engine)
    return engine


#: Seconds a pooled connection may sit unused before it is pinged on its next checkout.
PING_IDLE_AFTER = 5.0


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before use only when it has been idle for a while.

    ``pool_pre_ping`` pings on every checkout: a round trip per transaction, several per job.
    A connection that was in use moments ago is as good as a ping; one that sat idle may have
    been dropped (a database restart, an idle timeout), and a failed ping makes the pool
    retry with a fresh connection. A connection that breaks between two close uses fails its
    statement instead, which invalidates the pool: the request answers 503, the task retries.
    """

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_IDLE_AFTER:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("a pooled connection failed its ping") from exc


def fetch_blob(session: Session, column: Any, **equal_to: Any) -> bytes | None:
    """The binary value of ``column`` in the row whose columns equal ``equal_to`` (by name),
    None if there is no such row; read efficiently.

    PostgreSQL sends ``bytea`` as hex text unless the cursor asks for binary results; for a
    1 MB value text costs ~10 ms of encoding and decoding against ~1 ms binary (measured
    here), so on PostgreSQL the statement runs on a binary-format psycopg cursor, within the
    session's transaction, compiled once per column and filter names (compiling it cost
    ~0.3 ms a call). Other databases run it as usual.

        fetch_blob(session, Image.data, id=image_id)
    """
    table = column.class_.__table__
    # Keyed by names: SQLAlchemy's attributes overload ==, so they make poor dict keys.
    key = (table.name, column.key, *sorted(equal_to))
    stmt = _blob_selects.get(key)
    if stmt is None:
        stmt = _blob_selects[key] = select(column).where(
            *(table.c[name] == bindparam(name) for name in key[2:])
        )
    if session.connection().dialect.name != "postgresql":
        return session.scalar(stmt, equal_to)
    row = binary_row(session, stmt, equal_to)
    return None if row is None else bytes(row[0])


def newest_first(*columns: Any, per: Any, by: tuple[Any, ...]) -> Select[Any]:
    """``SELECT columns, rank``: ``rank`` numbers the rows of each group ``per`` (a column or
    a tuple of columns) from 1, newest first: descending on ``by`` (a time, then an id that
    breaks ties). Wrap it in ``.subquery()`` and filter on ``rank`` for the newest N rows of
    every group in one query."""
    order = [column.desc() for column in by]
    rank = func.row_number().over(partition_by=per, order_by=order).label("rank")
    return select(*columns, rank)


def mark(session: Session, model: Any, ids: list[str], still: Any, **values: Any) -> set[str]:
    """Compare-and-set: write ``values`` on the rows of ``ids`` that still meet ``still``;
    the ids of those written. A row another process changed in between is left alone."""
    stmt = (
        update(model)
        .where(model.id.in_(ids), still)
        .values(**values)
        .returning(model.id)
        .execution_options(synchronize_session=False)
    )
    return set(session.scalars(stmt))


def binary_row(session: Session, stmt: Any, values: dict[str, Any]) -> Any:
    """The first row of ``stmt`` (a SELECT, or a DML statement with RETURNING) run on
    PostgreSQL on a binary-format psycopg cursor, in the session's transaction; None if none.

    For statements whose rows carry ``bytea`` (see :func:`fetch_blob`). ``values`` are bound
    as SQLAlchemy binds them (each parameter through its type's bind processing, so an aware
    datetime for a :class:`shared.models.UTCDateTime` column). The SQL and the processors are
    prepared once per statement object, so pass statements built once.
    """
    connection = session.connection()
    sql, params = _driver_params(connection, stmt, [values])
    driver = connection.connection.driver_connection
    with driver.cursor(binary=True) as cursor:  # type: ignore[union-attr]
        cursor.execute(sql, params[0])
        return cursor.fetchone()


def pipelined(
    session: Session, steps: list[tuple[Any, list[dict[str, Any]]]], *, count: int = -1
) -> int:
    """Run DML statements on PostgreSQL in one round trip, in the session's transaction, and
    return the row count of step ``count`` (default: the last one).

    Each step is ``(statement, rows)``: one execution per row (an ``executemany`` for
    several). Parameters are bound as in :func:`binary_row`; every row of a step has the same
    keys, which are the columns an INSERT names. The statements go out in a psycopg
    pipeline, so a completion's three statements cost one wait for the server instead of
    three. A failing statement raises SQLAlchemy's exception for it (``IntegrityError``, …)
    and leaves the transaction for the caller to roll back.
    """
    connection = session.connection()
    driver = connection.connection.driver_connection
    prepared = [_driver_params(connection, stmt, rows) for stmt, rows in steps]
    cursors = []
    try:
        with driver.pipeline():  # type: ignore[union-attr]
            for sql, params in prepared:
                cursor = driver.cursor()  # type: ignore[union-attr]
                cursors.append(cursor)
                if len(params) == 1:
                    cursor.execute(sql, params[0])
                else:
                    cursor.executemany(sql, params)
        return int(cursors[count].rowcount)
    except connection.dialect.loaded_dbapi.Error as exc:
        sql = ";\n".join(step[0] for step in prepared)
        raise DBAPIError.instance(
            sql, None, exc, connection.dialect.loaded_dbapi.Error, dialect=connection.dialect
        ) from exc
    finally:
        for cursor in cursors:
            cursor.close()


def _driver_params(
    connection: Any, stmt: Any, rows: list[dict[str, Any]]
) -> tuple[str, list[dict[str, Any]]]:
    """``(SQL, driver parameters per row)`` of a statement built once, prepared once per
    statement and set of parameter names."""
    key = (id(stmt), *sorted(rows[0]))
    prepared = _driver_prepared.get(key)
    if prepared is None:
        names = list(key[1:])
        # An INSERT of a bare table names only the columns it is given values for.
        columns = names if getattr(stmt, "is_insert", False) else None
        compiled = stmt.compile(dialect=connection.dialect, column_keys=columns)
        processors = {
            name: processor
            for bind, name in compiled.bind_names.items()
            if (
                processor := bind.type.dialect_impl(connection.dialect).bind_processor(
                    connection.dialect
                )
            )
            is not None
        }
        # The statement is kept with its SQL, so its id cannot be reused by another one.
        prepared = _driver_prepared[key] = (stmt, compiled, processors)
    _, compiled, processors = prepared
    out = []
    for values in rows:
        params = compiled.construct_params(values)
        for name, processor in processors.items():
            if name in params:
                params[name] = processor(params[name])
        out.append(params)
    return compiled.string, out


_blob_selects: dict[tuple[str, ...], Select[Any]] = {}
#: ``(id(statement), *parameter names) -> (statement, compiled, bind processors by name)``.
_driver_prepared: dict[tuple[Any, ...], tuple[Any, Any, dict[str, Any]]] = {}

_engines: dict[str, Engine] = {}
_sessionmakers: dict[str, sessionmaker[Session]] = {}


def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for ``url`` (default: the settings' ``DATABASE_URL``)."""
    url = url or get_settings().database_url
    return _engine(url, url)


def _engine(key: str, url: str, **engine_options: Any) -> Engine:
    """The process-wide engine cached under ``key``, made on first use."""
    engine = _engines.get(key)
    if engine is None:
        engine = _engines[key] = make_engine(url, **engine_options)
    return engine


def _maker(key: str, url: str, **engine_options: Any) -> sessionmaker[Session]:
    """The process-wide sessionmaker cached under ``key``, on the engine of that key."""
    maker = _sessionmakers.get(key)
    if maker is None:
        engine = _engine(key, url, **engine_options)
        maker = _sessionmakers[key] = sessionmaker(bind=engine, expire_on_commit=False)
    return maker


def _no_disk_wait(url: str) -> dict[str, Any]:
    """Engine options that make PostgreSQL commit without waiting for its WAL to reach disk
    (``synchronous_commit=off``, set once per connection; nothing on other databases)."""
    if make_url(url).get_backend_name() != "postgresql":
        return {}
    return {"connect_args": {"options": "-c synchronous_commit=off"}}


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    """Sessions whose commits are durable when they return: the web's (uploads, submissions,
    deletions, tokens are users' data) and the CLI's."""
    url = url or get_settings().database_url
    return _maker(url, url)  # on get_engine's engine: the same key


def get_worker_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    """Sessions for the worker's and sweeper's writes: claims, results, failures, re-queues.

    On PostgreSQL these commit without waiting for the disk (a commit's WAL reaches it within
    ~0.6 s, ``3 × wal_writer_delay``): everything they write can be derived again. If the
    database crashes and loses the last of them, a job is back to ``queued`` or to
    ``running`` without heart-beats, which the sweeper re-enqueues, and the core computes the
    same result again (results are reproducible for equal inputs and seed). What a user
    submitted is written through :func:`get_sessionmaker`, and waits. The wait saved is one
    WAL flush per transaction: ~3.5 ms per 1 MP job here, whose 1.5 MB of PNGs the flush
    otherwise writes out while the worker waits.
    """
    url = url or get_settings().database_url
    options = _no_disk_wait(url)
    # Elsewhere the same sessions as get_sessionmaker's (SQLite's commits do not wait for the
    # disk in WAL mode with synchronous=NORMAL anyway).
    return _maker(f"worker:{url}", url, **options) if options else get_sessionmaker(url)


def get_beat_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    """Sessions for progress and heartbeat writes and the worker's claims, on connections of
    their own.

    Each statement commits by itself (no BEGIN, no COMMIT: one round trip a write), and on
    PostgreSQL without waiting for the disk: losing the last beat in a crash costs nothing,
    and a lost claim leaves its job queued for the sweeper. For single statements that are
    atomic by themselves (compare-and-set updates), never for writes that must go together.
    """
    url = url or get_settings().database_url
    return _maker(
        f"beat:{url}", url, isolation_level="AUTOCOMMIT", pool_size=2, **_no_disk_wait(url)
    )


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error."""
    session = get_sessionmaker(url)()
    try:
        with session.begin():
            yield session
    finally:
        session.close()


def dispose_all() -> None:
    """Close every pooled connection and forget the engines (after fork; between tests)."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()
    _sessionmakers.clear()


def alembic_config(url: str | None = None) -> Any:
    from alembic.config import Config

    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", (url or get_settings().database_url).replace("%", "%%"))
    return cfg


def migrate(url: str | None = None, revision: str = "head") -> None:
    """Bring the database to ``revision`` (creates a SQLite file if needed)."""
    from alembic import command

    url = url or get_settings().database_url
    make_engine(url).dispose()  # creates the SQLite directory
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def ensure_migrated(url: str | None = None) -> None:
    """Refuse to run on a database that is not migrated, naming the command that fixes it."""
    engine = get_engine(url)
    current = current_revision(engine)
    head = head_revision()
    if current != head:
        where = make_url(str(engine.url)).render_as_string(hide_password=True)
        raise NotMigratedError(
            f"database {where} is at revision {current or 'none'}, the code needs {head}: "
            "run `kseg migrate` (or `make run`, which migrates first)"
        )
