"""Engine and session factory for SQLite (embedded) and PostgreSQL (services)."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from models.settings import get_settings


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            # WAL lets the API read while a worker writes; foreign keys are off by default.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # Up to 30 connections per process; 20 stay open, so that a busy API process (requests in
    # up to 40 worker threads) does not open and close PostgreSQL connections all the time.
    engine = create_engine(url, pool_size=20, max_overflow=10)
    ping_idle_connections(engine)
    return engine


# A pooled connection that sat idle this long is pinged before use (one round trip), so that one
# a database restart or a network cut killed is replaced instead of failing its request. One
# used more recently is handed out as is: under load that saves a round trip per request (what
# pool_pre_ping would cost); a connection lost within the last second fails its request (503),
# and SQLAlchemy then replaces every connection of the pool.
PING_AFTER_IDLE_SECONDS = 1.0


def ping_idle_connections(engine: Engine, after: float = PING_AFTER_IDLE_SECONDS) -> None:
    @event.listens_for(engine, "checkin")
    def _idle_since(_dbapi_connection, record):  # type: ignore[no-untyped-def]
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, _proxy):  # type: ignore[no-untyped-def]
        idle_since = record.info.get("idle_since")  # none: a new connection
        if idle_since is None or time.monotonic() - idle_since < after:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # the pool closes this connection and hands out another (a documented contract)
            raise DisconnectionError(f"idle connection lost: {exc}") from exc


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    if settings.database_url.startswith("sqlite"):
        settings.ensure_data_dir()
    return make_engine(settings.database_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with get_sessionmaker()() as session, session.begin():
        yield session
