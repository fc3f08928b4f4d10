"""Database engine and sessions.

The same code runs on the embedded SQLite file and on PostgreSQL; only the URL differs. SQLite gets WAL mode
and a busy timeout so the API server and the local worker (separate processes) can write concurrently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["make_engine", "make_session_factory", "session_scope", "unit_of_work_retried"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# What a database that is down or restarting raises; the pool's pre-ping replaces the connections it broke.
UNREACHABLE = (OperationalError, InterfaceError)


def make_engine(database_url: str) -> Engine:
    if database_url.startswith("sqlite"):
        engine = create_engine(database_url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(database_url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error (which still propagates)."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def unit_of_work_retried(factory: sessionmaker[Session], work: Callable[[Session], T], *, what: str,
                         give_up_after: float = 300.0, pause: float = 1.0) -> T:
    """``work(session)`` in one committed unit of work, tried again every ``pause`` s while the database is
    unreachable (a restart, a failover), for up to ``give_up_after`` s; then the last error propagates. For a
    worker's writes that must not be lost to a database outage: the work must be safe to repeat (the
    worker's are conditional UPDATEs)."""
    deadline = time.monotonic() + give_up_after
    wait = threading.Event()  # never set: a pause that is no busy loop
    while True:
        try:
            with session_scope(factory) as session:
                return work(session)
        except UNREACHABLE as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("database unreachable while %s (%s); trying again in %g s", what,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__, pause)
            wait.wait(pause)
